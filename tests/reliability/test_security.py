"""Security: what a cache directory may safely be trusted with, and what it never does.

* No pickle unless ``serializer="pickle"`` is chosen: a pickle payload planted in a shard
  row or a value file (with plain ``sqlite3``, as anyone who can write the files could) is
  never executed by the default serializer, by any read path (get, get_many, pop, items,
  get_or_set, incr). Neither are the other ways planted MessagePack could call code.
* The directory is created 0700, every file 0600, whatever the umask.
* ``secret=`` signs entries: a byte flipped in SQLite or in a value file, an entry moved to
  another key, a flag cleared, an entry written without the secret or with another one:
  each reads as a miss.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shardcache import AsyncCache, CacheError

pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])

# The ``fmt`` column is part of the file format (see _codec's docstring): bits 0-3 say the
# serializer (0 MessagePack, 2 pickle), bit 8 that the blob ends with an HMAC-SHA256.
FMT_MSGPACK = 0
FMT_PICKLE = 2
FMT_SIGNED = 1 << 8
OPTIONS: dict[str, Any] = {"shards": 1, "min_file_size": 1024}


class Planted:
    """Unpickling this runs ``os.mkdir(marker)``: the marker's existence is the proof."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@contextlib.contextmanager
def rows(directory: Path) -> Iterator[sqlite3.Connection]:
    """Plain sqlite3 on the (only) shard, as an attacker with write access would use it."""
    conn = sqlite3.connect(directory / "shard-000.db", isolation_level=None)
    try:
        yield conn
    finally:
        conn.close()


def plant(directory: Path, blob: bytes, fmt: int, *, in_file: bool = False) -> None:
    """Replace the value of every row with ``blob``/``fmt``, in the row or its value file."""
    with rows(directory) as conn:
        if in_file:
            for (name,) in conn.execute("SELECT file FROM entries WHERE file IS NOT NULL"):
                (directory / "values" / name).write_bytes(blob)
            conn.execute("UPDATE entries SET fmt = ? WHERE file IS NOT NULL", (fmt,))
        else:
            conn.execute("UPDATE entries SET value = ?, fmt = ?, file = NULL", (blob, fmt))


async def every_read(cache: AsyncCache, key: str) -> list[Any]:
    """The value as each read path sees it (every one must read a planted entry as a miss)."""
    seen: list[Any] = [await cache.get(key, "miss")]
    seen.append((await cache.get_many([key])).get(key, "miss"))
    seen.append([v async for _k, v in cache.items()] or "miss")
    return seen


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
@pytest.mark.parametrize("where", ["row", "value file"])
@pytest.mark.parametrize("fmt", [FMT_PICKLE, FMT_MSGPACK, FMT_PICKLE | FMT_SIGNED])
async def test_planted_pickle_is_never_executed(
    tmp_path: Path, where: str, fmt: int, serializer: str
) -> None:
    directory = tmp_path / "cache"
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Planted(marker), protocol=5)
    big = where == "value file"
    async with AsyncCache(directory, **OPTIONS, serializer=serializer) as cache:
        await cache.set("victim", "v" * (4096 if big else 8))
    plant(directory, payload, fmt, in_file=big)
    async with AsyncCache(directory, **OPTIONS, serializer=serializer) as cache:
        assert await every_read(cache, "victim") == ["miss"] * 3
        with pytest.raises((CacheError, TypeError)):
            await cache.incr("victim")  # an int is needed: a clear error, no unpickling
        calls = []

        async def factory() -> str:
            calls.append(1)
            return "recomputed"

        assert await cache.get_or_set("victim", factory) == "recomputed"
        assert calls == [1]
        await cache.set("victim", "v" * (4096 if big else 8))
    plant(directory, payload, fmt, in_file=big)
    async with AsyncCache(directory, **OPTIONS, serializer=serializer) as cache:
        assert await cache.pop("victim", "miss") == "miss"
    assert not marker.exists(), "a planted pickle payload was executed"


async def test_pickle_only_when_chosen(tmp_path: Path) -> None:
    """The other side of the coin: with serializer="pickle", pickle is what runs. (And the
    serializer is fixed when the directory is created: a msgpack cache can never be
    reopened with serializer="pickle".)"""
    directory = tmp_path / "cache"
    marker = tmp_path / "chosen"
    async with AsyncCache(directory, **OPTIONS, serializer="pickle") as cache:
        await cache.set("victim", 1)
    plant(directory, pickle.dumps(Planted(marker)), FMT_PICKLE)
    async with AsyncCache(directory, **OPTIONS, serializer="pickle") as cache:
        await cache.get("victim")
    assert marker.exists(), "serializer='pickle' should unpickle (trusted directories only)"


async def test_pickle_with_secret_runs_only_signed_payloads(tmp_path: Path) -> None:
    """serializer="pickle" with secret=: the MAC is checked before unpickling, so a planted
    payload without a valid MAC never runs."""
    directory = tmp_path / "cache"
    marker = tmp_path / "pwned"
    async with AsyncCache(directory, **OPTIONS, serializer="pickle", secret=SECRET) as cache:
        await cache.set("victim", 1)
    payload = pickle.dumps(Planted(marker))
    for fmt, blob in [
        (FMT_PICKLE, payload),
        (FMT_PICKLE | FMT_SIGNED, payload + bytes(32)),  # a made-up MAC
    ]:
        plant(directory, blob, fmt)
        async with AsyncCache(directory, **OPTIONS, serializer="pickle", secret=SECRET) as cache:
            assert await every_read(cache, "victim") == ["miss"] * 3
    assert not marker.exists(), "an unsigned pickle payload was executed"


async def test_a_directory_keeps_its_serializer(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set("k", 1)
    with pytest.raises(ValueError, match="serializer"):
        async with AsyncCache(directory, **OPTIONS, serializer="pickle"):
            pass


def _ext(code: int, *fields: Any) -> bytes:
    return msgspec.msgpack.encode(msgspec.msgpack.Ext(code, msgspec.msgpack.encode(fields)))


@pytest.mark.parametrize(
    "planted",
    [
        # An "Enum" that is really os.system / builtins.exec / an importable module path.
        pytest.param(lambda m: _ext(13, "os", "system", f"mkdir {m}"), id="enum-os.system"),
        pytest.param(
            lambda m: _ext(13, "builtins", "exec", f"import os; os.mkdir({str(m)!r})"),
            id="enum-exec",
        ),
        pytest.param(lambda m: _ext(13, "subprocess", "getoutput", f"mkdir {m}"), id="enum-import"),
        # A numpy array of Python objects: only pickle could build it.
        pytest.param(lambda m: _ext(15, "|O", [1], pickle.dumps(Planted(m))), id="numpy-object"),
        pytest.param(lambda m: _ext(99, "anything"), id="unknown-extension"),
    ],
)
async def test_planted_messagepack_runs_no_code(tmp_path: Path, planted: Any) -> None:
    directory = tmp_path / "cache"
    marker = tmp_path / "pwned"
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set("victim", 1)
    plant(directory, planted(marker), FMT_MSGPACK)
    async with AsyncCache(directory, **OPTIONS) as cache:
        assert await every_read(cache, "victim") == ["miss"] * 3
    assert not marker.exists(), "planted MessagePack ran code"


# -- file modes -----------------------------------------------------------------------------
@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_directory_0700_files_0600(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "cache"
    with umask(0):  # the most permissive umask: the modes must come from shardcache itself
        cache = AsyncCache(directory, shards=2, min_file_size=1024)
        async with cache:
            await cache.set("small", 1)
            await cache.set("big", b"b" * 5000)
            files = sorted(p for p in directory.rglob("*") if p.is_file())
            names = {p.name for p in files}
            assert {"shard-000.db", "shard-000.db-wal", "shard-000.db-shm"} <= names, names
            assert any(p.parent.name == "values" for p in files)
            modes_open = {str(p.relative_to(directory)): _mode(p) for p in files}
        modes_closed = {
            str(p.relative_to(directory)): _mode(p) for p in directory.rglob("*") if p.is_file()
        }
    assert _mode(directory) == 0o700
    assert _mode(directory / "values") == 0o700
    loose = {n: oct(m) for n, m in {**modes_open, **modes_closed}.items() if m != 0o600}
    assert not loose, f"files readable by others: {loose}"


# -- secret= --------------------------------------------------------------------------------
SECRET = b"correct horse battery staple"


def _flip(blob: bytes, at: int) -> bytes:
    flipped = bytearray(blob)
    flipped[at] ^= 0x01
    return bytes(flipped)


def flip_row_byte(directory: Path, at: int) -> None:
    with rows(directory) as conn:
        (blob,) = conn.execute("SELECT value FROM entries").fetchone()
        conn.execute("UPDATE entries SET value = ?", (_flip(blob, at % len(blob)),))


def flip_file_byte(directory: Path, at: int) -> None:
    (path,) = (directory / "values").iterdir()
    blob = path.read_bytes()
    path.write_bytes(_flip(blob, at % len(blob)))


def clear_signed_flag(directory: Path) -> None:
    with rows(directory) as conn:
        conn.execute("UPDATE entries SET fmt = fmt & ~?", (FMT_SIGNED,))


def set_compression_bits(directory: Path) -> None:
    with rows(directory) as conn:
        conn.execute("UPDATE entries SET fmt = fmt | ?", (1 << 4,))  # "zlib"


TAMPER = {
    "first payload byte": lambda d: flip_row_byte(d, 0),
    "middle payload byte": lambda d: flip_row_byte(d, 20),
    "last MAC byte": lambda d: flip_row_byte(d, -1),
    "signed flag cleared": clear_signed_flag,
    "format bits changed": set_compression_bits,
}


@pytest.mark.parametrize("tamper", TAMPER)
async def test_tampered_signed_entry_is_a_miss(tmp_path: Path, tamper: str) -> None:
    directory = tmp_path / "cache"
    value = {"user": 1, "role": "reader", "pad": "p" * 40}
    async with AsyncCache(directory, **OPTIONS, secret=SECRET) as cache:
        await cache.set("k", value)
        assert await cache.get("k") == value
    TAMPER[tamper](directory)
    async with AsyncCache(directory, **OPTIONS, secret=SECRET) as cache:
        assert await every_read(cache, "k") == ["miss"] * 3
        assert await cache.pop("k", "miss") == "miss"


async def test_tampered_signed_value_file_is_a_miss(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    async with AsyncCache(directory, **OPTIONS, secret=SECRET) as cache:
        await cache.set("k", b"B" * 5000)
    flip_file_byte(directory, 2500)
    async with AsyncCache(directory, **OPTIONS, secret=SECRET) as cache:
        assert await every_read(cache, "k") == ["miss"] * 3


async def test_signed_entry_moved_to_another_key_is_a_miss(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    async with AsyncCache(directory, **OPTIONS, secret=SECRET) as cache:
        await cache.set("role:alice", "admin")
        await cache.set("role:mallory", "reader")
    with rows(directory) as conn:  # copy alice's signed entry over mallory's
        entries = conn.execute("SELECT key, value, fmt FROM entries").fetchall()
        (blob, fmt) = next((v, f) for _k, v, f in entries if b"admin" in v)
        (mallory,) = [k for k, v, _f in entries if b"admin" not in v]
        conn.execute("UPDATE entries SET value = ?, fmt = ? WHERE key = ?", (blob, fmt, mallory))
    async with AsyncCache(directory, **OPTIONS, secret=SECRET) as cache:
        assert await cache.get("role:alice") == "admin"
        assert await cache.get("role:mallory", "miss") == "miss"


@pytest.mark.parametrize("written_with", [None, b"another secret"])
async def test_entry_not_signed_with_our_secret_is_a_miss(
    tmp_path: Path, written_with: bytes | None
) -> None:
    directory = tmp_path / "cache"
    async with AsyncCache(directory, **OPTIONS, secret=written_with) as cache:
        await cache.set("small", "planted")
        await cache.set("big", b"p" * 5000)
    async with AsyncCache(directory, **OPTIONS, secret=SECRET) as cache:
        assert await cache.get("small", "miss") == "miss"
        assert await cache.get("big", "miss") == "miss"
        assert await cache.get_many(["small", "big"]) == {}
        assert [k async for k, _v in cache.items()] == []
        await cache.set("small", "ours")
        assert await cache.get("small") == "ours"


async def test_add_treats_an_unverifiable_entry_as_missing(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set("lock", "planted")
    async with AsyncCache(directory, **OPTIONS, secret=SECRET) as cache:
        assert await cache.get("lock", "miss") == "miss"
        assert await cache.add("lock", "ours"), "add() refused a key that reads as missing"
        assert await cache.get("lock") == "ours"


async def test_incr_treats_an_unverifiable_entry_as_missing(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set("n", 1000)  # unsigned: planted, as far as a signed cache knows
    async with AsyncCache(directory, **OPTIONS, secret=SECRET) as cache:
        assert await cache.get("n", "miss") == "miss"
        assert await cache.incr("n") == 1


@pytest.mark.parametrize("how", ["absolute", "relative"])
async def test_planted_file_name_never_leaves_the_cache_directory(tmp_path: Path, how: str) -> None:
    directory = tmp_path / "cache"
    canary = tmp_path / "canary"  # outside the cache: say, another service's file
    canary.write_bytes(msgspec.msgpack.encode("private contents"))
    name = str(canary) if how == "absolute" else "../../canary"
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set("k", b"v" * 4096)
    with rows(directory) as conn:
        conn.execute("UPDATE entries SET file = ?", (name,))
    problems = []
    async with AsyncCache(directory, **OPTIONS) as cache:
        if await cache.get("k", "miss") != "miss":
            problems.append("get() returned the contents of a file outside the cache")
        await cache.set("k", "replaced")  # the old row's file goes to the trash
        await cache.delete("k")
    if not canary.exists():
        problems.append("an overwrite deleted a file outside the cache directory")
    assert not problems, problems


async def test_a_symlinked_value_file_is_not_followed(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    canary = tmp_path / "canary"  # outside the cache, readable by the cache's user
    canary.write_bytes(msgspec.msgpack.encode({"db_password": "hunter2"}))
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set("k", b"v" * 4096)
    with rows(directory) as conn:
        ((name,),) = conn.execute("SELECT file FROM entries").fetchall()
    link = directory / "values" / name  # a valid name, pointing out of the cache
    link.unlink()
    link.symlink_to(canary)
    async with AsyncCache(directory, **OPTIONS) as cache:
        assert await cache.get("k", "miss") == "miss"
        assert await cache.get_many(["k"]) == {}
        await cache.set("k", "replaced")
        await cache.delete("k")
    assert canary.read_bytes() == msgspec.msgpack.encode({"db_password": "hunter2"})


async def test_a_symlinked_values_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "000-0123456789abcdef0123456789abcdef.val"
    victim.write_bytes(b"someone else's")
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set("k", 1)
    (directory / "values").rmdir()
    (directory / "values").symlink_to(elsewhere)
    with pytest.raises(CacheError, match="symbolic link"):
        async with AsyncCache(directory, **OPTIONS, on_corrupt="reset") as cache:
            await cache.get("k")
    assert victim.read_bytes() == b"someone else's"


async def test_a_row_naming_another_shards_file_does_not_destroy_it(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    options = {**OPTIONS, "shards": 2}
    async with AsyncCache(directory, **options) as cache:
        big = {key: key.encode() * 2000 for key in ("a", "b", "c", "d", "e", "f")}
        await cache.set_many(big)
    files: dict[int, list[tuple[bytes, str]]] = {}
    for index in (0, 1):
        db = sqlite3.connect(directory / f"shard-{index:03d}.db", isolation_level=None)
        files[index] = db.execute("SELECT key, file FROM entries").fetchall()
        db.close()
    assert files[0] and files[1], "the keys did not spread over both shards"
    with rows(directory) as conn:  # shard 0's first row now names a file of shard 1
        conn.execute("UPDATE entries SET file = ? WHERE key = ?", (files[1][0][1], files[0][0][0]))
    async with AsyncCache(directory, **options) as cache:
        victim = msgspec.msgpack.decode(files[1][0][0])
        planted = msgspec.msgpack.decode(files[0][0][0])
        assert await cache.get(planted, "miss") == "miss"
        await cache.delete(planted)
        assert await cache.get(victim) == big[victim]


async def test_an_unreadable_value_file_is_a_cache_error(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set("k", b"v" * 4096)
    with rows(directory) as conn:
        ((name,),) = conn.execute("SELECT file FROM entries").fetchall()
    path = directory / "values" / name
    path.unlink()
    path.mkdir()  # in the way: reading it fails with EISDIR, not "gone"
    async with AsyncCache(directory, **OPTIONS) as cache:
        with pytest.raises(CacheError, match="cannot read value file"):
            await cache.get("k")
        with pytest.raises(CacheError, match="cannot read value file"):
            await cache.get_many(["k"])


async def test_planted_endless_nesting_reads_as_a_miss(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    async with AsyncCache(directory, **OPTIONS) as cache:
        await cache.set("k", 1)
    plant(directory, b"\x91" * 200_000 + b"\xc0", FMT_MSGPACK)  # arrays nested 200k deep
    async with AsyncCache(directory, **OPTIONS) as cache:
        assert await every_read(cache, "k") == ["miss"] * 3
        assert await cache.pop("k", "miss") == "miss"
