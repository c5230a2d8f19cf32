"""Compression through the cache (issue #3): ``compression="zlib"|"zstd"|a Compressor`` above
``compress_min_size``, only when it saves space, recorded per entry so that any later
setting still reads what was written before.

Whether an entry was compressed is observed the way a user sees it: ``volume()`` (the
accounted bytes) and the value files on disk, compared with a cache that does not compress.
The codec itself is unit-tested in ``test_codec.py``.
"""

from __future__ import annotations

import lzma
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shardcache import AsyncCache, ConfigurationError

CODECS = ("zlib", "zstd")
TEXT = "the quick brown fox jumps over the lazy dog. " * 200  # ~9 KB, very compressible

MakeCache = Callable[..., AsyncCache]


def noise(n: int, seed: int = 0) -> bytes:
    """Incompressible bytes."""
    return random.Random(seed).randbytes(n)


def value_files(directory: Path) -> list[Path]:
    values = directory / "values"
    return sorted(values.iterdir()) if values.exists() else []


VALUES: dict[str, Any] = {
    "text": TEXT,
    "bytes": TEXT.encode(),
    "bytearray": bytearray(TEXT.encode()),
    "list": [TEXT[:100]] * 100,
    "dict": {f"k{i}": TEXT[:200] for i in range(50)},
    "tuple": (TEXT, 1, 2.5, None),
    "set": {TEXT[i : i + 300] for i in range(0, 3000, 100)},
    "small": "tiny",
    "none": None,
    "noise": noise(5000),
}


async def volume_of(make_cache: MakeCache, where: Path, data: dict[Any, Any], **opts: Any) -> int:
    cache = make_cache(where, shards=1, **opts)
    await cache.set_many(data)
    volume = await cache.volume()
    await cache.aclose()
    return volume


# -- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("near_cache", [0, 2**20])
@pytest.mark.parametrize("compression", CODECS)
async def test_values_round_trip(make_cache: MakeCache, compression: str, near_cache: int) -> None:
    cache = make_cache(shards=2, compression=compression, near_cache=near_cache)
    await cache.set_many(VALUES)
    for name, value in VALUES.items():
        got = await cache.get(name)
        assert type(got) is type(value) and got == value, name
        assert await cache.get(name) == value, name  # a second time: near cache, if on
    assert await cache.get_many(VALUES) == VALUES
    assert dict([item async for item in cache.items()]) == VALUES
    assert await cache.pop("text") == TEXT
    assert await cache.incr("n", 5) == 5  # counters next to compressed values


@pytest.mark.parametrize("compression", CODECS)
async def test_compressible_values_take_less_space(
    make_cache: MakeCache, tmp_path: Path, compression: str
) -> None:
    data = {("doc", i): TEXT + str(i) for i in range(100)}
    plain = await volume_of(make_cache, tmp_path / "plain", data)
    packed = await volume_of(make_cache, tmp_path / "packed", data, compression=compression)
    assert packed * 5 < plain, (packed, plain)


@pytest.mark.parametrize("compression", CODECS)
async def test_incompressible_values_are_stored_as_they_are(
    make_cache: MakeCache, tmp_path: Path, compression: str
) -> None:
    data = {("noise", i): noise(3000, i) for i in range(50)}
    plain = await volume_of(make_cache, tmp_path / "plain", data)
    packed = await volume_of(make_cache, tmp_path / "packed", data, compression=compression)
    assert packed == plain  # compressing would not have saved space: not one byte more
    cache = make_cache(tmp_path / "packed", shards=1, compression=compression)
    assert await cache.get_many(data) == data


@pytest.mark.parametrize("compression", CODECS)
async def test_values_below_compress_min_size_are_not_compressed(
    make_cache: MakeCache, tmp_path: Path, compression: str
) -> None:
    data = {("short", i): TEXT[:700] + str(i) for i in range(50)}  # ~700 B: below 1 KiB
    plain = await volume_of(make_cache, tmp_path / "plain", data)
    default = await volume_of(make_cache, tmp_path / "default", data, compression=compression)
    assert default == plain
    lowered = await volume_of(
        make_cache, tmp_path / "lowered", data, compression=compression, compress_min_size=100
    )
    assert lowered * 3 < plain
    cache = make_cache(tmp_path / "lowered", shards=1, compression=compression)
    assert await cache.get_many(data) == data


async def test_compression_applies_before_the_file_threshold(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    """``min_file_size`` is compared with the stored (compressed) size."""
    cache = make_cache(shards=1, compression="zlib", min_file_size=8192)
    await cache.set("compressible", TEXT * 50)  # ~450 KB of text, a few KB compressed
    assert value_files(cache_dir) == []
    mixed = noise(20_000) + bytes(200_000)  # ~20 KB once compressed: still a file
    await cache.set("mixed", mixed)
    (path,) = value_files(cache_dir)
    assert 20_000 <= path.stat().st_size < 30_000
    await cache.aclose()
    reopened = make_cache(shards=1, compression=None)
    assert await reopened.get("compressible") == TEXT * 50
    assert await reopened.get("mixed") == mixed


# -- the setting can change ----------------------------------------------------------------
OLD: dict[Any, Any] = {
    "text": TEXT,
    "small": "tiny",
    "noise": noise(2000),
    "large": noise(20_000) + bytes(200_000),  # compressed, in a value file
    ("doc", 1): {"body": TEXT, "n": 1},
}


@pytest.mark.parametrize("written_with", ["zstd", "zlib", None])
async def test_entries_stay_readable_after_the_setting_changes(
    make_cache: MakeCache, written_with: str | None
) -> None:
    first = make_cache(shards=2, compression=written_with, min_file_size=8192)
    await first.set_many(OLD)
    await first.aclose()
    written: dict[Any, Any] = dict(OLD)
    for setting in (None, "zlib", "zstd", None):
        cache = make_cache(shards=2, compression=setting, min_file_size=8192)
        assert await cache.get_many(written) == written, f"reopened with {setting!r}"
        for key, value in written.items():
            assert await cache.get(key) == value, (setting, key)
        new_key = ("written with", str(setting), len(written))
        await cache.set(new_key, TEXT + str(setting))
        written[new_key] = TEXT + str(setting)
        await cache.aclose()


async def test_a_custom_compressor(make_cache: MakeCache, tmp_path: Path) -> None:
    data = {("doc", i): TEXT + str(i) for i in range(20)}
    plain = await volume_of(make_cache, tmp_path / "plain", data)
    packed = await volume_of(make_cache, tmp_path / "lzma", data, compression=lzma)
    assert packed * 5 < plain
    cache = make_cache(tmp_path / "lzma", shards=1, compression=lzma)
    assert await cache.get_many(data) == data


async def test_an_entry_of_a_compressor_no_longer_configured_reads_as_a_miss(
    make_cache: MakeCache,
) -> None:
    """Nothing records which custom Compressor wrote an entry: without it the entry is a
    miss (logged), never an exception and never deleted; with it again, it reads."""
    first = make_cache(shards=1, compression=lzma)
    await first.set("doc", TEXT)
    await first.aclose()
    without = make_cache(shards=1)
    assert await without.get("doc", "default") == "default"
    assert await without.count() == 1
    await without.aclose()
    again = make_cache(shards=1, compression=lzma)
    assert await again.get("doc") == TEXT


async def test_compression_with_signed_entries(make_cache: MakeCache, tmp_path: Path) -> None:
    data = {("doc", i): TEXT + str(i) for i in range(20)}
    plain = await volume_of(make_cache, tmp_path / "plain", data, secret=b"s")
    packed = await volume_of(make_cache, tmp_path / "both", data, secret=b"s", compression="zstd")
    assert packed * 5 < plain
    cache = make_cache(tmp_path / "both", shards=1, secret=b"s")  # compression off now
    assert await cache.get_many(data) == data


@pytest.mark.parametrize(
    ("option", "value"),
    [("compression", "gzip"), ("compression", 3), ("compress_min_size", -1)],
)
def test_bad_compression_options_are_rejected(tmp_path: Path, option: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=option):
        AsyncCache(tmp_path, **{option: value})
    assert not os.listdir(tmp_path)
