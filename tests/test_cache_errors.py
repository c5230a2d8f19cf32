"""Bad input and failure, each one: the error raised, and that nothing was written."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import decimal
import enum
import json
import math
import os
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _helpers import Child
from shardcache import (
    AsyncCache,
    CacheCorruptError,
    CacheError,
    ConfigurationError,
    SerializationError,
)

BOUND = 2.0  # seconds: a write on a tiny shard that takes longer than this is hung
HUNG = 1.0  # seconds: the wait of the tests that show a hang (they time out by design)

# -- keys -----------------------------------------------------------------------------------
BAD_KEYS: list[Any] = [
    None,
    [1],
    {"a": 1},
    {1},
    frozenset({1}),
    bytearray(b"1"),
    object(),
    dt.date(2024, 1, 1),
    decimal.Decimal(1),
    (1, [2]),
    (1, None),
    ("ok", ("nested", {"no": 1})),
]


async def _writes_with_key(cache: AsyncCache, key: Any) -> None:
    calls = [
        lambda: cache.set(key, 1),
        lambda: cache.add(key, 1),
        lambda: cache.incr(key),
        lambda: cache.set_many({"good": 1, key: 2}) if _hashable(key) else cache.set(key, 2),
        lambda: cache.touch(key, ttl=1),
        lambda: cache.get_or_set(key, _one),
    ]
    for call in calls:
        with pytest.raises(TypeError):
            await call()


async def _one() -> int:
    return 1


def _hashable(key: Any) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


@pytest.mark.parametrize("key", BAD_KEYS, ids=[repr(k)[:24] for k in BAD_KEYS])
async def test_unsupported_key_type_raises_type_error_and_writes_nothing(
    cache: AsyncCache, key: Any
) -> None:
    await _writes_with_key(cache, key)
    for read in (
        lambda: cache.get(key),
        lambda: cache.has(key),
        lambda: cache.delete(key),
        lambda: cache.pop(key),
        lambda: cache.ttl(key),
        lambda: cache.get_many(["good", key]),
        lambda: cache.delete_many(["good", key]),
    ):
        with pytest.raises(TypeError):
            await read()
    assert await cache.count() == 0
    assert not await cache.has("good")


async def test_bad_input_to_an_unopened_cache_creates_nothing(tmp_path: Path) -> None:
    """Bad input raises before anything is written: not even the (lazily created) cache
    directory and its shard files."""
    directory = tmp_path / "never"
    cache = AsyncCache(directory)
    key: Any = [1]
    for call in (
        lambda: cache.get(key),
        lambda: cache.has(key),
        lambda: cache.get_entry(key),
        lambda: cache.ttl(key),
        lambda: cache.delete(key),
        lambda: cache.pop(key),
        lambda: cache.touch(key, ttl=1),
        lambda: cache.touch("k", ttl=-1),
        lambda: cache.incr(key),
        lambda: cache.get_many(["good", key]),
        lambda: cache.delete_many(["good", key]),
        lambda: cache.set(key, 1),
        lambda: cache.set("k", object()),
        lambda: cache.set("k", 1, ttl=-1),
        lambda: cache.add(key, 1),
        lambda: cache.set_many({"good": 1, "bad": object()}),
        lambda: cache.acquire_lease(key, "me", 1.0),
    ):
        with pytest.raises((TypeError, ConfigurationError)):  # a bad ttl: ConfigurationError
            await call()
        assert not directory.exists()
    await cache.aclose()


class Colour(enum.StrEnum):
    RED = "red"


class Tagged(str):
    pass


async def test_str_subclasses_and_enum_members_key_as_their_value(cache: AsyncCache) -> None:
    """A StrEnum member or a str subclass is a str key (like IntEnum is an int key); bool
    stays its own key, as True is not 1 on the wire."""
    await cache.set(Colour.RED, 1)
    await cache.set(Tagged("t"), 2)
    await cache.set(("p", Colour.RED), 3)
    await cache.set(True, "bool")
    await cache.set(1, "int")
    assert await cache.get("red") == 1 and await cache.get("t") == 2
    assert await cache.get(("p", "red")) == 3
    assert await cache.get(True) == "bool" and await cache.get(1) == "int"
    assert sorted(map(repr, [k async for k in cache.keys()])) == sorted(
        map(repr, ["red", "t", ("p", "red"), True, 1])
    )


async def test_a_str_that_is_not_valid_unicode_is_still_a_key(cache: AsyncCache) -> None:
    """os.fsdecode() turns undecodable file names into lone surrogates: such a str is a
    key like any other, distinct from its neighbours, and comes back from keys() intact."""
    keys = ["\ud800", "a\udcff", ("dir", "\udcfe"), "\ufffd"]
    for index, key in enumerate(keys):
        await cache.set(key, index)
    assert [await cache.get(key) for key in keys] == [0, 1, 2, 3]
    assert await cache.get_many(keys) == dict(zip(keys, range(4), strict=True))
    assert sorted(map(repr, [k async for k in cache.keys()])) == sorted(map(repr, keys))
    assert await cache.delete("\ud800") and not await cache.has("\ud800")


@pytest.mark.parametrize("items", [[("a", 1)], (("a", 1),), "ab", None])
async def test_set_many_takes_a_mapping(cache: AsyncCache, items: Any) -> None:
    with pytest.raises(TypeError, match="set_many\\(\\) takes a mapping"):
        await cache.set_many(items)
    assert await cache.count() == 0


# -- values ---------------------------------------------------------------------------------
def _local_enum() -> enum.Enum:
    class Local(enum.Enum):  # not importable by module and qualname
        A = 1

    return Local.A


class Opaque:
    pass


BAD_VALUES: dict[str, Any] = {
    "object": object(),
    "instance": Opaque(),
    "function": lambda: 1,
    "generator": (i for i in range(3)),
    "nested": {"a": [1, 2, {"b": Opaque()}]},
    "in-a-set": {1, Opaque()},
    "in-a-tuple": (1, Opaque()),
    "dict-key": {Opaque(): 1},
    "local-enum": _local_enum(),
    "numpy-object-dtype": np.array([object()], dtype=object),
    "module": sys,
    # Not valid Unicode: MessagePack (and JSON) strings are UTF-8.
    "lone-surrogate": "bad\ud800",
    "surrogate-in-a-dict": {"a": ["\udcff"]},
}


@pytest.mark.parametrize("value", BAD_VALUES.values(), ids=BAD_VALUES.keys())
async def test_unencodable_value_raises_and_keeps_the_old_value(make_cache, value: Any) -> None:
    cache = make_cache(min_file_size=1024)
    await cache.set("k", "old")
    await cache.set("big", b"old" * 1000)  # the old value lives in its own file
    for key in ("k", "big"):
        with pytest.raises(SerializationError) as info:
            await cache.set(key, value)
        assert isinstance(info.value, TypeError)
    with pytest.raises(SerializationError):
        await cache.add("new", value)
    with pytest.raises(SerializationError):
        await cache.set_many({"fine": 1, "k": value})  # all or nothing
    assert await cache.get("k") == "old"
    assert await cache.get("big") == b"old" * 1000
    assert await cache.count() == 2
    assert (await cache.check()).ok


async def test_serialization_error_names_where_the_value_failed(cache: AsyncCache) -> None:
    with pytest.raises(SerializationError, match=r"Opaque.*\['a'\]\[2\]\['b'\]"):
        await cache.set("k", {"a": [1, 2, {"b": Opaque()}]})


@pytest.mark.parametrize(
    ("serializer", "value"),
    [("json", 1 + 2j), ("json", Opaque()), ("pickle", lambda: 1), ("pickle", Opaque)],
    ids=["json-complex", "json-object", "pickle-lambda", "pickle-local-class"],
)
async def test_unencodable_for_other_serializers(make_cache, serializer: str, value: Any) -> None:
    if serializer == "pickle" and value is Opaque:

        class Local:
            pass

        value = Local()
    cache = make_cache(serializer=serializer)
    await cache.set("k", "old")
    with pytest.raises(SerializationError):
        await cache.set("k", value)
    assert await cache.get("k") == "old"


async def test_get_or_set_with_unencodable_result_keeps_nothing(cache: AsyncCache) -> None:
    async def factory() -> object:
        return Opaque()

    with pytest.raises(SerializationError):
        await cache.get_or_set("k", factory)
    assert not await cache.has("k")


# -- options and ttl ------------------------------------------------------------------------
BAD_OPTIONS: list[tuple[str, Any]] = [
    ("shards", 0),
    ("shards", -1),
    ("shards", 1.5),
    ("shards", "8"),
    ("shards", 100_000),
    ("size_limit", 0),
    ("size_limit", -1),
    ("size_limit", "1GB"),
    ("eviction", "lru"),
    ("eviction", None),
    ("default_ttl", -1),
    ("default_ttl", math.nan),
    ("default_ttl", "60"),
    ("serializer", "yaml"),
    ("serializer", 42),
    ("compression", "lz4"),
    ("compression", 42),
    ("compress_min_size", -1),
    ("min_file_size", 0),
    ("min_file_size", -5),
    ("durability", "fast"),
    ("near_cache", -1),
    ("near_cache", 1.5),
    ("on_corrupt", "ignore"),
    ("secret", b""),
    ("secret", 42),
]
OPTION_IDS = [f"{option}={value!r}" for option, value in BAD_OPTIONS]


@pytest.mark.parametrize(("option", "value"), BAD_OPTIONS, ids=OPTION_IDS)
def test_bad_option_raises_configuration_error(cache_dir: Path, option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option) as info:
        AsyncCache(cache_dir, **{option: value})
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, CacheError)
    assert not cache_dir.exists()


def test_bad_directory_type_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="directory"):
        AsyncCache(42)  # type: ignore[arg-type]


BAD_TTLS: list[Any] = [-1, -0.001, math.nan, -math.inf, "10", b"1", [1]]


@pytest.mark.parametrize("ttl", BAD_TTLS, ids=map(repr, BAD_TTLS))
async def test_bad_ttl_raises_configuration_error_and_writes_nothing(
    cache: AsyncCache, ttl: Any
) -> None:
    await cache.set("k", "old")
    for call in (
        lambda: cache.set("k", "new", ttl=ttl),
        lambda: cache.set("fresh", "new", ttl=ttl),
        lambda: cache.add("fresh", "new", ttl=ttl),
        lambda: cache.set_many({"fresh": 1, "k": 2}, ttl=ttl),
        lambda: cache.set_many({}, ttl=ttl),  # nothing to write: still a bad argument
        lambda: cache.touch("k", ttl=ttl),
        lambda: cache.set("k", "new", stale_ttl=ttl),
    ):
        with pytest.raises(ConfigurationError, match="ttl") as info:
            await call()
        assert isinstance(info.value, ValueError)
    assert await cache.get("k") == "old"
    assert await cache.ttl("k") is None
    assert not await cache.has("fresh")


@pytest.mark.parametrize("bad", [5, "str", object()], ids=["int", "str", "object"])
async def test_a_bad_type_argument_raises_and_keeps_the_entry(cache: AsyncCache, bad: Any) -> None:
    await cache.set("k", 1)
    for call in (
        lambda: cache.get("k", "default", type=bad),  # a hit
        lambda: cache.get("missing", "default", type=bad),  # a miss
        lambda: cache.get_entry("k", type=bad),
    ):
        with pytest.raises(TypeError, match="not a type msgspec can decode into"):
            await call()
    assert await cache.get("k") == 1


@pytest.mark.parametrize("one", ["abc", b"abc"])
async def test_one_str_or_bytes_key_where_many_go_raises(cache: AsyncCache, one: Any) -> None:
    await cache.set_many({"a": 1, "b": 2, 97: 3})  # what "abc" and b"abc" would iterate to
    with pytest.raises(TypeError, match="iterable of keys"):
        await cache.get_many(one)
    with pytest.raises(TypeError, match="iterable of keys"):
        await cache.delete_many(one)
    assert await cache.get_many(["a", "b", 97]) == {"a": 1, "b": 2, 97: 3}


async def test_get_or_set_bad_ttl_raises_configuration_error(cache: AsyncCache) -> None:
    with pytest.raises(ConfigurationError):
        await cache.get_or_set("k", _one, ttl=-1)
    assert not await cache.has("k")


# -- the directory -------------------------------------------------------------------------
async def test_file_where_the_directory_should_be(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("precious")
    cache = AsyncCache(path)
    with pytest.raises(CacheError, match=str(path)):
        await cache.set("k", 1)
    await cache.aclose()
    assert path.read_text() == "precious"


async def test_file_where_the_values_directory_should_be(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    directory.mkdir()
    values = directory / "values"
    values.write_text("precious")
    cache = AsyncCache(directory)
    with pytest.raises(CacheError) as info:
        await cache.set("k", 1)
    assert f"{values} exists and is not a directory" in str(info.value)  # the path in the way
    await cache.aclose()
    assert values.read_text() == "precious"


async def test_file_where_a_parent_directory_should_be(tmp_path: Path) -> None:
    parent = tmp_path / "file"
    parent.write_text("precious")
    cache = AsyncCache(parent / "cache")
    with pytest.raises(CacheError, match=str(parent)):
        await cache.open()
    await cache.aclose()
    assert parent.read_text() == "precious"


def _as_nobody() -> list[str]:
    """A command prefix that runs a child without root's right to write anywhere."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: every directory is writable")
    return [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_directory_not_writable() -> None:
    prefix = _as_nobody()
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        read_only = base / "read-only"
        read_only.mkdir()
        read_only.chmod(0o555 if not prefix else 0o755)  # not the child's either way
        for directory in (read_only, read_only / "sub"):
            with Child("open", str(directory), prefix=prefix) as child:
                answer = json.loads(child.line())
                child.finish()
            assert answer is not None, f"{directory} was opened for writing"
            name, message = answer
            assert name == "CacheError"
            assert str(directory) in message
        assert list(read_only.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- foreign and corrupt shard files ------------------------------------------------------
async def _make(directory: Path, **options: Any) -> None:
    async with AsyncCache(directory, **options) as cache:
        await cache.set_many({i: "v" * 500 for i in range(2000)})


def _drop_wal(shard: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{shard}{suffix}").unlink(missing_ok=True)


async def _expect_corrupt(cache: AsyncCache, shard: Path) -> None:
    for _ in range(2):  # no crash loop: the same clear error, every time
        with pytest.raises(CacheCorruptError) as info:
            await cache.set(0, "new")
        assert str(shard) in str(info.value)
        assert info.value.path == str(shard)


async def test_garbage_shard_file_raises_corrupt_error(cache_dir: Path) -> None:
    await _make(cache_dir, shards=2)
    shard = cache_dir / "shard-001.db"
    _drop_wal(shard)
    garbage = os.urandom(8192)
    shard.write_bytes(garbage)
    cache = AsyncCache(cache_dir, shards=2)
    await _expect_corrupt(cache, shard)
    await cache.aclose()
    assert shard.read_bytes() == garbage  # never silently overwritten


@pytest.mark.parametrize(
    "schema",
    [
        "CREATE TABLE users (name TEXT)",
        # A table named like ours, even with our columns, does not make the file a shard.
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value); CREATE TABLE users (name TEXT)",
        "CREATE TABLE settings (a, b, c); CREATE TABLE users (name TEXT)",
    ],
)
async def test_foreign_sqlite_database_raises_corrupt_error_and_stays_as_it_was(
    cache_dir: Path, schema: str
) -> None:
    cache_dir.mkdir()
    shard = cache_dir / "shard-000.db"
    conn = sqlite3.connect(shard)
    conn.executescript(schema)
    conn.execute("INSERT INTO users VALUES ('ada')")
    conn.commit()
    conn.close()
    before = shard.read_bytes()
    cache = AsyncCache(cache_dir, shards=1)
    await _expect_corrupt(cache, shard)
    await cache.aclose()
    # Not a byte changed: not even the journal mode in the header (bytes 18-19).
    assert shard.read_bytes() == before
    conn = sqlite3.connect(shard)
    assert conn.execute("SELECT name FROM users").fetchall() == [("ada",)]
    conn.close()


async def test_shard_of_another_index_raises_corrupt_error(cache_dir: Path) -> None:
    await _make(cache_dir, shards=2)
    a, b = cache_dir / "shard-000.db", cache_dir / "shard-001.db"
    _drop_wal(a)
    _drop_wal(b)
    tmp = cache_dir / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    cache = AsyncCache(cache_dir, shards=2)
    with pytest.raises(CacheCorruptError, match="shard-00"):
        await cache.open()
    await cache.aclose()


def _corrupt_table(directory: Path, table: str) -> Path:
    """Overwrite the root page of ``table`` in shard 0 (checkpointed first) with 0xFF bytes.

    0xFF is no valid b-tree page type, so SQLite reports the page as malformed the first
    time it reads it; every other page stays intact.
    """
    shard = directory / "shard-000.db"
    conn = sqlite3.connect(shard)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    conn.close()
    _drop_wal(shard)
    with open(shard, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xff" * page_size)
    return shard


async def test_vacuum_of_a_damaged_shard_raises_corrupt_error(cache_dir: Path) -> None:
    await _make(cache_dir, shards=1)
    shard = _corrupt_table(cache_dir, "entries")
    async with AsyncCache(cache_dir, shards=1) as cache:
        with pytest.raises(CacheCorruptError) as info:
            await cache.vacuum()
        assert info.value.path == str(shard)


async def test_corrupt_entries_found_on_read_raise_corrupt_error(cache_dir: Path) -> None:
    await _make(cache_dir, shards=1)
    shard = _corrupt_table(cache_dir, "entries")
    async with AsyncCache(cache_dir, shards=1) as cache:
        for _ in range(2):
            with pytest.raises(CacheCorruptError) as info:
                await cache.get(5)
            assert info.value.path == str(shard) and str(shard) in str(info.value)
        with pytest.raises(CacheCorruptError, match=str(shard)):
            await asyncio.wait_for(cache.set(5, "new"), BOUND)
        report = await cache.check()
        assert not report.ok
        assert any(str(shard) in problem for problem in report.problems)


async def test_corrupt_change_log_found_at_open_raises_corrupt_error(cache_dir: Path) -> None:
    await _make(cache_dir, shards=1)
    shard = _corrupt_table(cache_dir, "changes")
    cache = AsyncCache(cache_dir, shards=1)
    try:
        await _expect_corrupt(cache, shard)
    finally:
        await cache.aclose()


async def test_reset_rebuilds_a_shard_whose_change_log_is_corrupt(cache_dir: Path) -> None:
    await _make(cache_dir, shards=1)
    _corrupt_table(cache_dir, "changes")
    async with AsyncCache(cache_dir, shards=1, on_corrupt="reset") as cache:
        await cache.set("k", 1)
        assert await cache.get("k") == 1


async def test_reset_rebuilds_a_shard_whose_entries_are_corrupt(cache_dir: Path) -> None:
    await _make(cache_dir, shards=1)
    _corrupt_table(cache_dir, "entries")
    async with AsyncCache(cache_dir, shards=1, on_corrupt="reset") as cache:
        with contextlib.suppress(CacheCorruptError):
            await asyncio.wait_for(cache.set("k", 1), BOUND)  # may be what notices it
        await asyncio.wait_for(cache.set("k", 1), BOUND)
        assert await cache.get("k") == 1


async def _close_bounded(cache: AsyncCache) -> None:
    # aclose() queues a flush that meets the same corrupt page: bound it, or it hangs too.
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(cache.aclose(), HUNG)


@pytest.mark.asyncio(loop_factories=["asyncio"])  # waits out HUNG: once is enough
async def test_corrupt_trash_fails_a_direct_delete_instead_of_hanging(cache_dir: Path) -> None:
    await _make(cache_dir, shards=1)
    shard = _corrupt_table(cache_dir, "trash")
    cache = AsyncCache(cache_dir, shards=1)
    try:
        try:  # the delete committed; the cleanup after it met the corrupt page
            await asyncio.wait_for(cache.delete(5), HUNG)
        except CacheCorruptError as exc:  # reporting it is as good as logging it
            assert exc.path == str(shard)
        await asyncio.wait_for(cache.set("k", 1), HUNG)
    finally:
        await _close_bounded(cache)


@pytest.mark.asyncio(loop_factories=["asyncio"])  # waits out HUNG: once is enough
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_corrupt_trash_does_not_kill_the_writer_thread(cache_dir: Path) -> None:
    await _make(cache_dir, shards=1)
    _corrupt_table(cache_dir, "trash")
    cache = AsyncCache(cache_dir, shards=1)
    try:
        # More than a handful of writes at once: a batch for the writer thread.
        with contextlib.suppress(CacheCorruptError):
            await asyncio.wait_for(cache.delete_many(range(20)), HUNG)
        assert await cache.get(100) == "v" * 500  # reads still work
        await asyncio.wait_for(cache.set_many({i: i for i in range(20)}), HUNG)
    finally:
        await _close_bounded(cache)


async def test_reset_rebuilds_a_garbage_shard_and_keeps_the_others(cache_dir: Path) -> None:
    await _make(cache_dir, shards=2)
    shard = cache_dir / "shard-001.db"
    _drop_wal(shard)
    shard.write_bytes(os.urandom(8192))
    async with AsyncCache(cache_dir, shards=2, on_corrupt="reset") as cache:
        survivors = await cache.get_many(range(2000))
        assert 0 < len(survivors) < 2000  # shard 0's entries survived, shard 1's are gone
        assert all(v == "v" * 500 for v in survivors.values())
        await cache.set_many({i: "new" for i in range(2000)})
        assert await cache.count() == 2000
        assert (await cache.check()).ok
    conn = sqlite3.connect(shard)
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()


async def test_reset_rebuilds_a_zeroed_shard(cache_dir: Path) -> None:
    await _make(cache_dir, shards=1)
    shard = cache_dir / "shard-000.db"
    _drop_wal(shard)
    shard.write_bytes(b"\x00" * 4096 * 3)
    async with AsyncCache(cache_dir, shards=1, on_corrupt="reset") as cache:
        assert await cache.count() == 0
        await cache.set("k", 1)
        assert await cache.get("k") == 1


# -- the shard count ------------------------------------------------------------------------
@pytest.mark.parametrize("other", [1, 2, 3, 8])
async def test_reopening_with_another_shard_count_fails(cache_dir: Path, other: int) -> None:
    async with AsyncCache(cache_dir, shards=4) as cache:
        await cache.set_many({i: i for i in range(100)})
    before = sorted(p.name for p in cache_dir.iterdir())
    wrong = AsyncCache(cache_dir, shards=other)
    with pytest.raises(CacheError, match="shard") as info:
        await wrong.get(1)
    assert isinstance(info.value, ConfigurationError)
    await wrong.aclose()
    assert sorted(p.name for p in cache_dir.iterdir()) == before
    async with AsyncCache(cache_dir, shards=4) as cache:
        assert await cache.get_many(range(100)) == {i: i for i in range(100)}


async def test_any_shard_count_in_an_empty_directory(cache_dir: Path) -> None:
    cache_dir.mkdir()
    async with AsyncCache(cache_dir, shards=3) as cache:
        await cache.set("k", 1)
    assert sorted(p.name for p in cache_dir.glob("*.db")) == [
        "shard-000.db",
        "shard-001.db",
        "shard-002.db",
    ]
