"""Keys and values through the cache: what goes in comes back, with its type (API.md §1)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import math
import uuid
import zoneinfo
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from shardcache import AsyncCache


# -- keys -----------------------------------------------------------------------------------
async def test_one_one_point_oh_str_and_bytes_are_four_keys(cache: AsyncCache) -> None:
    keys = [1, 1.0, "1", b"1"]
    for i, key in enumerate(keys):
        await cache.set(key, i)
    assert [await cache.get(key) for key in keys] == [0, 1, 2, 3]
    assert await cache.count() == 4
    listed = [(type(k), k) async for k in cache.keys()]
    assert sorted(listed, key=repr) == sorted(((type(k), k) for k in keys), key=repr)
    await cache.delete(1.0)
    assert await cache.get_many(keys) == {1: 0, "1": 2, b"1": 3}
    assert [type(k) for k in await cache.get_many(keys)] == [int, str, bytes]


KEYS: list[Any] = [
    "",
    "ünïcødé ✓",
    "x" * 10_000,
    b"",
    b"\x00\xff",
    0,
    -1,
    2**63 - 1,
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**40,
    -(10**40),
    0.5,
    -1e300,
    math.inf,
    (),
    (1,),
    (1, "1", b"1", 1.0),
    ((1, 2), ("nested", (3,))),
    (10**40, -(10**40)),
]


async def test_every_key_kind_is_its_own_key(cache: AsyncCache) -> None:
    for i, key in enumerate(KEYS):
        await cache.set(key, i)
    assert await cache.count() == len(KEYS)
    for i, key in enumerate(KEYS):
        assert await cache.get(key) == i, key
    # Iteration gives back each key with its type (tuples as tuples).
    listed = [k async for k in cache.keys()]
    assert sorted(map(repr, listed)) == sorted(map(repr, KEYS))


async def test_tuple_and_scalar_keys_differ(cache: AsyncCache) -> None:
    await cache.set((1,), "tuple")
    await cache.set(1, "int")
    await cache.set(("1",), "tuple of str")
    assert await cache.get_many([(1,), 1, ("1",)]) == {
        (1,): "tuple",
        1: "int",
        ("1",): "tuple of str",
    }


# -- None is a value --------------------------------------------------------------------
async def test_none_is_a_value(cache: AsyncCache) -> None:
    await cache.set("k", None)
    assert await cache.get("k", "default") is None
    assert await cache.has("k")
    assert await cache.get_many(["k", "missing"]) == {"k": None}
    assert [kv async for kv in cache.items()] == [("k", None)]
    assert await cache.ttl("k") is None
    assert await cache.add("k", 1) is False
    assert await cache.pop("k", "default") is None
    assert await cache.get("k", "default") == "default"


# -- the value table ----------------------------------------------------------------------
class Color(enum.Enum):
    RED = "red"
    BLUE = 2


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 10


class Point(msgspec.Struct):
    x: int
    y: int


class Point3(msgspec.Struct):
    x: int
    y: int
    z: int


@dataclasses.dataclass
class Pair:
    left: str
    right: list[int]


def _zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except zoneinfo.ZoneInfoNotFoundError:  # pragma: no cover - no tz database
        pytest.skip("no time zone database", allow_module_level=True)


PARIS = _zone("Europe/Paris")
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))

# (id, value, what get() returns without type=); None: the value itself.
TABLE: list[tuple[str, Any, Any]] = [
    ("none", None, None),
    ("true", True, None),
    ("false", False, None),
    ("zero", 0, None),
    ("negative", -17, None),
    ("int64-max", 2**63 - 1, None),
    ("uint64-max", 2**64 - 1, None),
    ("int-beyond-64-bits", 2**64, None),
    ("int-below-int64", -(2**63) - 1, None),
    ("huge-int", 7**300, None),
    ("huge-negative-int", -(7**300), None),
    ("float", 1.5, None),
    ("negative-zero", -0.0, None),
    ("infinity", math.inf, None),
    ("nan", math.nan, None),
    ("str", "ünïcødé ✓", None),
    ("empty-str", "", None),
    ("long-str", "abc" * 50_000, None),
    ("bytes", b"\x00\xffbytes", None),
    ("empty-bytes", b"", None),
    ("long-bytes", bytes(range(256)) * 1000, None),
    ("bytearray", bytearray(b"\x00mutable"), None),
    ("list", [1, "a", None, [2.5, [b"x"]]], None),
    ("empty-list", [], None),
    ("dict", {"a": 1, "b": {"c": [1, 2]}}, None),
    ("empty-dict", {}, None),
    ("dict-int-keys", {1: "one", -2: "minus two"}, None),
    ("dict-mixed-keys", {1: "int", "1": "str", b"1": "bytes", 1.5: "float"}, None),
    ("dict-tuple-keys", {(1, 2): "pair", ("a",): "single"}, None),
    ("dict-frozenset-key", {frozenset({1, 2}): "fs"}, None),
    ("tuple", (1, "a", None), None),
    ("empty-tuple", (), None),
    ("nested-tuples", ((1, 2), [3, (4,)], {"t": (5,)}), None),
    ("set", {1, 2, 3}, None),
    ("empty-set", set(), None),
    ("frozenset", frozenset({"a", "b"}), None),
    ("set-of-tuples", {(1, 2), (3, 4)}, None),
    ("datetime-naive", dt.datetime(2024, 2, 29, 23, 59, 59, 999_999), None),
    ("datetime-utc", dt.datetime(2024, 1, 1, 12, 0, tzinfo=dt.timezone.utc), None),
    ("datetime-fixed-offset", dt.datetime(2024, 1, 1, 12, 0, tzinfo=IST), None),
    ("datetime-zoneinfo", dt.datetime(2024, 7, 1, 12, 0, tzinfo=PARIS), None),
    ("datetime-fold", dt.datetime(2024, 10, 27, 2, 30, tzinfo=PARIS, fold=1), None),
    ("datetime-min", dt.datetime.min, None),
    ("date", dt.date(1999, 12, 31), None),
    ("time", dt.time(23, 59, 1, 5), None),
    ("time-tz", dt.time(8, 30, tzinfo=IST), None),
    ("timedelta", dt.timedelta(days=-3, seconds=5, microseconds=7), None),
    ("decimal", decimal.Decimal("1.10"), None),
    ("decimal-big", decimal.Decimal("-12345678901234567890.123456789e-5"), None),
    ("decimal-nan", decimal.Decimal("NaN"), None),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678"), None),
    ("enum", Color.RED, None),
    ("enum-int-value", Color.BLUE, None),
    ("int-enum", Level.HIGH, None),
    ("struct", Point(1, 2), {"x": 1, "y": 2}),
    ("list-of-structs", [Point(1, 2), Point(3, 4)], [{"x": 1, "y": 2}, {"x": 3, "y": 4}]),
    ("dataclass", Pair("l", [1, 2]), {"left": "l", "right": [1, 2]}),
    ("everything-nested", {"when": [dt.date(2020, 1, 1), {uuid.UUID(int=1)}], "n": (1,)}, None),
]
NUMPY: list[tuple[str, Any]] = [
    ("int32-2d", np.arange(12, dtype=np.int32).reshape(3, 4)),
    ("float32", np.array([1.5, -2.25, np.inf], dtype=np.float32)),
    ("float64-3d", np.linspace(0, 1, 24).reshape(2, 3, 4)),
    ("bool", np.array([True, False, True])),
    ("complex", np.array([1 + 2j, -3j])),
    ("big-endian", np.array([1, 256], dtype=">i4")),
    ("unicode", np.array(["a", "bcd"], dtype="<U3")),
    ("bytes", np.array([b"ab", b"c"], dtype="S2")),
    ("datetime64", np.array(["2024-01-01", "2024-02-29"], dtype="datetime64[D]")),
    ("structured", np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i4"), ("b", "<f8")])),
    ("zero-d", np.array(7, dtype=np.int16)),
    ("empty", np.zeros((2, 0), dtype=np.float64)),
    ("fortran-order", np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3))),
    ("non-contiguous", np.arange(20, dtype=np.uint8)[::3]),
]


def mismatch(got: Any, want: Any, path: str = "value") -> str | None:
    """Why ``got`` is not ``want`` with the same types all the way down, or None."""
    if type(got) is not type(want):
        return f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, np.ndarray):
        if got.dtype != want.dtype or got.shape != want.shape:
            return f"{path}: {got.dtype}{got.shape} != {want.dtype}{want.shape}"
        return None if np.array_equal(got, want) else f"{path}: {got!r} != {want!r}"
    if isinstance(want, float) and math.isnan(want):
        return None if math.isnan(got) else f"{path}: {got!r} is not nan"
    if isinstance(want, float) and want == 0:
        same_sign = math.copysign(1, got) == math.copysign(1, want)
        return None if got == 0 and same_sign else f"{path}: {got!r} != {want!r}"
    if isinstance(want, decimal.Decimal) and want.is_nan():
        return None if got.is_nan() else f"{path}: {got!r} is not NaN"
    if isinstance(want, (dt.datetime, dt.time)):
        if got != want or got.fold != want.fold or got.tzinfo != want.tzinfo:
            return f"{path}: {got!r} != {want!r}"
        return None
    if isinstance(want, (list, tuple)):
        if len(got) != len(want):
            return f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            if (why := mismatch(g, w, f"{path}[{i}]")) is not None:
                return why
        return None
    if isinstance(want, dict):
        if sorted(map(repr, got)) != sorted(map(repr, want)):
            return f"{path}: keys {list(got)!r} != {list(want)!r}"
        for k, w in want.items():
            if (why := mismatch(got[k], w, f"{path}[{k!r}]")) is not None:
                return why
        return None
    if isinstance(want, (set, frozenset)):
        return (
            None
            if got == want and sorted(map(repr, got)) == sorted(map(repr, want))
            else (f"{path}: {got!r} != {want!r}")
        )
    return None if got == want else f"{path}: {got!r} != {want!r}"


CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "zlib": {"compression": "zlib", "compress_min_size": 0},
    "zstd": {"compression": "zstd", "compress_min_size": 0},
    "signed": {"secret": "s3cret"},
    "own-files": {"min_file_size": 1},
    "pickle": {"serializer": "pickle"},
}


@pytest.mark.parametrize("options", CONFIGS.values(), ids=CONFIGS.keys())
async def test_value_round_trip_table(make_cache, options: dict[str, Any]) -> None:
    cache: AsyncCache = make_cache(**options)
    rows = [(name, value, expected) for name, value, expected in TABLE] + [
        (f"numpy-{name}", value, None) for name, value in NUMPY
    ]
    for name, value, _ in rows:
        await cache.set(name, value)
    problems = []
    for read in ("get", "get_many", "reopened"):
        if read == "reopened":
            await cache.aclose()
            cache = make_cache(**options)
        many = await cache.get_many([name for name, _, _ in rows]) if read == "get_many" else {}
        for name, value, expected in rows:
            if options.get("serializer") == "pickle" or expected is None:
                expected = value  # pickle keeps Structs and dataclasses as they are
            got = await cache.get(name, "MISSING") if read != "get_many" else many[name]
            if (why := mismatch(got, expected)) is not None:
                problems.append(f"{read} {name}: {why}")
    assert problems == []


async def test_zoneinfo_key_is_kept(cache: AsyncCache) -> None:
    when = dt.datetime(2024, 1, 15, 9, 0, tzinfo=PARIS)
    await cache.set("k", when)
    got = await cache.get("k")
    assert isinstance(got.tzinfo, zoneinfo.ZoneInfo)
    assert got.tzinfo.key == "Europe/Paris"
    # The zone, not only the offset: arithmetic across DST keeps Paris rules.
    assert (got + dt.timedelta(days=180)).utcoffset() == dt.timedelta(hours=2)


async def test_numpy_array_comes_back_writable(cache: AsyncCache) -> None:
    await cache.set("a", np.arange(4))
    got = await cache.get("a")
    got[0] = 100
    assert (await cache.get("a"))[0] == 0


async def test_json_serializer_round_trips_json_values(make_cache) -> None:
    cache = make_cache(serializer="json")
    value = {"a": [1, 2.5, "s", None, True, {"b": []}]}
    await cache.set("k", value)
    assert await cache.get("k") == value
    await cache.set("p", Point(1, 2))
    assert await cache.get("p") == {"x": 1, "y": 2}
    assert await cache.get("p", type=Point) == Point(1, 2)


class Utf8:
    """A custom Serializer (API.md: ``serializer=`` accepts one)."""

    def dumps(self, value: str) -> bytes:
        return value.encode()

    def loads(self, data: bytes) -> str:
        return data.decode()


async def test_custom_serializer(make_cache) -> None:
    cache = make_cache(serializer=Utf8())
    await cache.set("k", "text ✓")
    assert await cache.get("k") == "text ✓"


async def test_custom_compressor(make_cache) -> None:
    import lzma

    cache = make_cache(compression=lzma, compress_min_size=10)  # a module is a Compressor
    value = "compressible " * 1000
    await cache.set("k", value)
    assert await cache.volume() < len(value)
    assert await cache.get("k") == value


# -- get(type=...) ------------------------------------------------------------------------
async def test_get_with_type_struct_dataclass_and_list(cache: AsyncCache) -> None:
    await cache.set("point", Point(1, 2))
    await cache.set("pair", Pair("l", [1]))
    await cache.set("points", [Point(1, 2), Point(3, 4)])
    await cache.set("plain", {"x": 5, "y": 6})
    await cache.set("tuple", (1, 2))
    assert await cache.get("point", type=Point) == Point(1, 2)
    assert await cache.get("pair", type=Pair) == Pair("l", [1])
    assert await cache.get("points", type=list[Point]) == [Point(1, 2), Point(3, 4)]
    assert await cache.get("plain", type=Point) == Point(5, 6)
    assert await cache.get("tuple", type=tuple[int, int]) == (1, 2)
    assert await cache.get("missing", "default", type=Point) == "default"


@pytest.mark.parametrize("options", [{}, {"serializer": "pickle"}], ids=["msgpack", "pickle"])
async def test_schema_changed_value_is_a_miss_and_is_deleted(
    make_cache, options: dict[str, Any]
) -> None:
    cache = make_cache(**options)
    await cache.set("point", Point(1, 2))
    await cache.set("text", "not a number")
    await cache.set("other", Point(7, 8))
    assert await cache.get("point", "default", type=Point3) == "default"
    assert await cache.get("text", -1, type=int) == -1
    stats = await cache.stats()
    assert stats.misses == 2 and stats.hits == 0
    await cache.aclose()  # lets the deletions it started finish
    reopened = make_cache(**options)
    assert not await reopened.has("point")
    assert not await reopened.has("text")
    assert await reopened.get("other", type=Point) == Point(7, 8)


@pytest.mark.parametrize("size", [10, 100_000], ids=["inline", "value-file"])
async def test_schema_changed_value_is_gone_for_plain_gets_too(make_cache, size: int) -> None:
    """API.md: a misfit "counts as a miss, is deleted": by the time get(type=) returns, in
    this process and in a fresh one."""
    cache = make_cache(min_file_size=1024)
    await cache.set("point", {"x": 1, "y": 2, "pad": "p" * size})
    assert (await cache.get("point"))["x"] == 1  # in the near cache now
    assert await cache.get("point", "default", type=Point3) == "default"
    assert not await cache.has("point")
    assert await cache.get("point", "default") == "default"
    other = make_cache(min_file_size=1024)
    assert not await other.has("point")


@pytest.mark.parametrize("size", [10, 100_000], ids=["inline", "value-file"])
async def test_a_set_right_after_a_misfit_get_is_not_deleted(make_cache, size: int) -> None:
    """The misfit's deletion runs later, in the background: it must not take the value a
    ``set`` stored meanwhile (it deletes the row only while it still holds the misfit)."""
    cache = make_cache(min_file_size=1024)
    await cache.set("k", "x" * size)
    assert await cache.get("k", -1, type=int) == -1
    await cache.set("k", 42)
    await cache.aclose()  # lets the deletion it started finish
    reopened = make_cache(min_file_size=1024)
    assert await reopened.get("k") == 42


async def test_get_with_type_does_not_change_plain_reads(tmp_path: Path) -> None:
    async with AsyncCache(tmp_path / "c") as cache:
        await cache.set("point", Point(1, 2))
        assert await cache.get("point", type=Point) == Point(1, 2)
        assert await cache.get("point") == {"x": 1, "y": 2}
