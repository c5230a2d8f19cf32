"""Tests for shardcache._codec: type fidelity, errors, security, compression, signing."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import decimal
import enum
import lzma
import math
import os
import pathlib
import pickle
import socket
import sys
import threading
import uuid
import zlib
import zoneinfo
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec.msgpack import Ext

from shardcache import _codec
from shardcache._codec import (
    FMT_CUSTOM,
    FMT_CUSTOM_COMPRESSION,
    FMT_JSON,
    FMT_MSGPACK,
    FMT_PICKLE,
    FMT_SIGNED,
    FMT_ZLIB,
    FMT_ZSTD,
    Codec,
    InvalidSignature,
    TypeMismatch,
)
from shardcache._errors import ConfigurationError, SerializationError

KEY = b"\x01user:1"


class Color(enum.Enum):
    RED = "red"
    BLUE = (1, 2)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mode(str, enum.Enum):  # a StrEnum on every supported Python
    READ = "r"


class Perm(enum.Flag):
    R = 1
    W = 2


class Point(msgspec.Struct):
    x: int
    y: int


class Shape(msgspec.Struct):
    name: str
    corner: tuple[int, int]


@dataclasses.dataclass
class User:
    name: str
    age: int


Pair = collections.namedtuple("Pair", "a b")


def same_tz(a: dt.tzinfo | None, b: dt.tzinfo | None) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, zoneinfo.ZoneInfo) or isinstance(b, zoneinfo.ZoneInfo):
        return type(a) is type(b) and getattr(a, "key", 0) == getattr(b, "key", 1)
    return type(a) is type(b) and (a.utcoffset(None), a.tzname(None)) == (
        b.utcoffset(None),
        b.tzname(None),
    )


def same(a: Any, b: Any) -> bool:
    """Deep equality that also demands the exact same type at every level."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, decimal.Decimal):
        return repr(a) == repr(b)  # also tells NaN, sNaN and -0 apart
    if isinstance(a, enum.Enum):
        return a is b
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (set, frozenset)):
        return len(a) == len(b) and all(any(same(x, y) for y in b) for x in a)
    if isinstance(a, dict):  # same keys in the same order, msgpack keeps it
        pairs = zip(a.items(), b.items(), strict=False)
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb) for (ka, va), (kb, vb) in pairs
        )
    if isinstance(a, (dt.datetime, dt.time)):
        return (
            a.replace(tzinfo=None) == b.replace(tzinfo=None)
            and a.fold == b.fold
            and same_tz(a.tzinfo, b.tzinfo)
        )
    if type(a).__module__ == "numpy":
        return bool(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes())
    return bool(a == b)


def roundtrip(value: Any, codec: Codec | None = None) -> Any:
    codec = codec or Codec()
    blob, fmt = codec.encode(value, KEY)
    assert isinstance(blob, bytes)
    return codec.decode(blob, fmt, KEY)


def test_same_helper_can_fail() -> None:
    # the helper every round-trip test relies on must tell these apart
    assert not same((1, 2), [1, 2])
    assert not same({"a": (1,)}, {"a": [1]})
    assert not same(Level.LOW, 1)
    assert not same(1, True)
    assert not same(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc), dt.datetime(2020, 1, 1))
    assert not same(decimal.Decimal("1.0"), decimal.Decimal("1.00"))
    assert not same({1: "a", 2: "b"}, {2: "b", 1: "a"})
    assert not same(0.0, -0.0)
    assert not same({"a": 1}, {"a": 1, "b": 2})
    assert same({frozenset({1, 2}): 1}, {frozenset({2, 1}): 1})


BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
NEW_YORK = zoneinfo.ZoneInfo("America/New_York")

ROUND_TRIP = {
    "none": None,
    "true": True,
    "false": False,
    "int": 42,
    "int64 min": -(2**63),
    "uint64 max": 2**64 - 1,
    "int above uint64": 2**64,
    "int below int64": -(2**63) - 1,
    "huge int": 10**100,
    "huge negative int": -(10**100),
    "float": 1.25,
    "negative zero": -0.0,
    "nan": float("nan"),
    "inf": float("inf"),
    "-inf": float("-inf"),
    "str": "héllo \x00 ☃",
    "empty str": "",
    "bytes": b"\x00\xff",
    "bytearray": bytearray(b"abc"),
    "list": [1, "a", None],
    "empty list": [],
    "tuple": (1, "a"),
    "empty tuple": (),
    "tuple in tuple": ((1, 2), (3,)),
    "set": {1, "a", (2, 3)},
    "empty set": set(),
    "frozenset": frozenset({1, frozenset({2})}),
    "dict": {"a": 1, "b": [1.5, None]},
    "empty dict": {},
    "dict int/float/bytes/None/bool keys": {1: "i", 2.5: "f", b"k": "b", None: "n", False: "f"},
    "dict tuple keys": {(1, 2): "t", ("a", (3,)): "nested"},
    "dict frozenset key": {frozenset({1, 2}): 1},
    "dict huge int key": {2**70: "big"},
    "dict date key": {dt.date(2020, 1, 1): 1},
    "dict enum key": {Mode.READ: 1, Level.LOW: 2},
    "naive datetime": dt.datetime(2021, 3, 4, 5, 6, 7, 890123),
    "utc datetime": dt.datetime(2021, 3, 4, 5, 6, tzinfo=dt.timezone.utc),
    "fixed offset datetime": dt.datetime(2021, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=5.5))),
    "named offset datetime": dt.datetime(
        2021, 3, 4, tzinfo=dt.timezone(-dt.timedelta(hours=3), "X")
    ),
    "zoneinfo datetime": dt.datetime(2021, 7, 1, 12, tzinfo=BERLIN),
    "ambiguous datetime fold=1": dt.datetime(2021, 11, 7, 1, 30, tzinfo=NEW_YORK, fold=1),
    "date": dt.date(1999, 12, 31),
    "date min": dt.date.min,
    "time": dt.time(23, 59, 59, 999999),
    "aware time": dt.time(8, tzinfo=dt.timezone(dt.timedelta(minutes=-90))),
    "zoneinfo time": dt.time(8, tzinfo=BERLIN),
    "timedelta": dt.timedelta(days=-3, seconds=5, microseconds=7),
    "timedelta max": dt.timedelta.max,
    "decimal": decimal.Decimal("1.10"),
    "decimal nan": decimal.Decimal("NaN"),
    "decimal -inf": decimal.Decimal("-Infinity"),
    "decimal -0": decimal.Decimal("-0"),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "enum": Color.RED,
    "enum tuple value": Color.BLUE,
    "intenum": Level.HIGH,
    "str enum": Mode.READ,
    "flag composite": Perm.R | Perm.W,
    "complex": complex(1.5, -2),
    "deep nesting": {
        "a": [({1, 2}, dt.date(2020, 2, 2)), {"b": (decimal.Decimal("3"), [Level.LOW])}],
        "c": {(1, frozenset({"x"})): [uuid.UUID(int=5), b"raw"]},
    },
    "big int deep inside a plain dict": {"a": [1, {"b": 2**80}]},
}


@pytest.mark.parametrize("value", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_msgpack_round_trip_keeps_value_and_type(value: Any) -> None:
    assert same(roundtrip(value), value)


@pytest.mark.parametrize("value", ROUND_TRIP.values(), ids=ROUND_TRIP.keys())
def test_round_trip_is_the_same_through_compression_and_signing(value: Any) -> None:
    codec = Codec(compression="zlib", compress_min_size=0, secret="s3cret")
    assert same(roundtrip(value, codec), value)


@pytest.mark.parametrize("value", [{"a": 1, "b": "x"}, [1, 2.5], "s", 7, (1, 2), {(1,): 2}])
def test_msgpack_decode_is_the_bound_decoder_and_reads_fmt_0_rows(value: Any) -> None:
    codec = Codec()
    assert codec.fast
    decode = codec.msgpack_decode
    assert isinstance(getattr(decode, "__self__", None), msgspec.msgpack.Decoder)
    blob, fmt = codec.encode(value, KEY)
    assert fmt == 0
    assert same(decode(blob), value)


def test_plain_values_are_stored_as_plain_msgpack() -> None:
    # the fast path must not change the bytes: other tools can read plain entries
    value = {"id": 1, "name": "n", "tags": ["a", "b"], "ok": True, "x": None, "f": 0.5}
    assert Codec().encode(value, KEY) == (msgspec.msgpack.encode(value), FMT_MSGPACK)


class Name(str):
    pass


class Stamp(dt.datetime):
    pass


def test_subclasses_of_builtin_types_come_back_as_the_builtin() -> None:
    stamp = Stamp(2020, 1, 2, 3, tzinfo=BERLIN)
    value = [Pair(1, 2), collections.OrderedDict(a=1), Name("n"), stamp, {Name("k"): 1}]
    expected = [(1, 2), {"a": 1}, "n", dt.datetime(2020, 1, 2, 3, tzinfo=BERLIN), {"k": 1}]
    assert same(roundtrip(value), expected)


def test_struct_and_dataclass_decode_as_dicts_without_type() -> None:
    value = [Point(1, 2), User("ann", 3)]
    assert same(roundtrip(value), [{"x": 1, "y": 2}, {"name": "ann", "age": 3}])


# --- numpy ---------------------------------------------------------------------------------
try:
    import numpy as np
except ImportError:  # numpy is optional: its tests skip, the others still run
    np = None
needs_numpy = pytest.mark.skipif(np is None, reason="numpy is not installed")

ARRAYS = (
    {}
    if np is None
    else {
        "float64": np.linspace(0, 1, 7),
        "big-endian int16 2d": np.arange(12, dtype=">i2").reshape(3, 4),
        "bool": np.array([True, False]),
        "complex": np.array([1 + 2j, np.nan]),
        "unicode": np.array(["a", "héllo"]),
        "bytes": np.array([b"ab", b"c"]),
        "datetime64": np.array(["2020-01-01", "NaT"], dtype="M8[ns]"),
        "structured": np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
        "0-d": np.array(3.5),
        "empty 2d": np.zeros((0, 3), dtype="u1"),
        "fortran order": np.asfortranarray(np.arange(6).reshape(2, 3)),
        "non-contiguous": np.arange(10)[::3],
        "float64 scalar": np.float64(2.5),
        "int8 scalar": np.int8(-3),
        "datetime64 scalar": np.datetime64("2020-01-01T00:00"),
    }
)


@needs_numpy
@pytest.mark.parametrize("value", ARRAYS.values(), ids=ARRAYS.keys())
def test_numpy_round_trip_keeps_dtype_and_shape(value: Any) -> None:
    out = roundtrip({"arr": value})["arr"]
    assert same(out, value)
    if isinstance(value, np.ndarray):
        assert out.flags.writeable


@needs_numpy
def test_numpy_inside_a_struct_field() -> None:
    class Holder(msgspec.Struct):
        data: Any

    out = roundtrip(Holder(np.arange(3)))
    assert same(out["data"], np.arange(3))


# --- what cannot be encoded ----------------------------------------------------------------
def _local_enum() -> enum.Enum:
    class Local(enum.Enum):
        A = 1

    return Local.A


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: object(), "object"),
        (lambda: lambda: 1, "function"),
        (lambda: {"a": [1, object()]}, "['a'][1]"),
        (lambda: ({"k": object()},), "[0]['k']"),
        (lambda: {(1, 2): object()}, "[(1, 2)]"),
        (lambda: _local_enum(), "not reachable"),
        (lambda: dt.datetime, "type"),
        (lambda: Point(1, object()), "type object is unsupported"),  # type: ignore[arg-type]
    ],
)
def test_unencodable_values_raise_serialization_error(make: Any, expected: str) -> None:
    with pytest.raises(SerializationError) as info:
        Codec().encode(make(), KEY)
    assert isinstance(info.value, TypeError)
    assert expected in str(info.value)


@needs_numpy
def test_object_dtype_arrays_are_unencodable() -> None:
    with pytest.raises(SerializationError, match="dtype object") as info:
        Codec().encode(np.array([1, "x"], dtype=object), KEY)
    assert isinstance(info.value, TypeError)
    with pytest.raises(SerializationError, match=r"at value\[1\]"):
        Codec().encode([1, np.array([None], dtype=object)], KEY)


def test_socket_is_unencodable() -> None:
    with socket.socket() as sock, pytest.raises(SerializationError, match="socket"):
        Codec().encode({"conn": sock}, KEY)


def test_recursive_value_raises_serialization_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SerializationError):
        Codec().encode(loop, KEY)


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_other_serializers_raise_serialization_error(serializer: str) -> None:
    with pytest.raises(SerializationError):
        Codec(serializer).encode({"f": lambda: 1}, KEY)


def test_custom_serializer_failure_is_serialization_error() -> None:
    class Broken:
        def dumps(self, value: Any) -> bytes:
            raise RuntimeError("boom")

        def loads(self, data: bytes) -> Any:
            raise RuntimeError("boom")

    codec = Codec(Broken())
    with pytest.raises(SerializationError, match="boom"):
        codec.encode(1, KEY)
    with pytest.raises(SerializationError, match="boom"):
        codec.decode(b"x", FMT_CUSTOM, KEY)


# --- undecodable rows ----------------------------------------------------------------------
def _ext(code: int, payload: Any) -> bytes:
    return msgspec.msgpack.encode(Ext(code, msgspec.msgpack.encode(payload)))


GARBAGE = {
    "invalid opcode": (b"\xc1", FMT_MSGPACK),
    "truncated array": (b"\x93\x01", FMT_MSGPACK),
    "trailing bytes": (b"\x01\x02", FMT_MSGPACK),
    "unknown ext code": (msgspec.msgpack.encode(Ext(99, b"")), FMT_MSGPACK),
    "corrupt tuple ext": (msgspec.msgpack.encode(Ext(2, b"\xc1")), FMT_MSGPACK),
    "short uuid ext": (msgspec.msgpack.encode(Ext(12, b"abc")), FMT_MSGPACK),
    "bad decimal ext": (msgspec.msgpack.encode(Ext(11, b"\xff")), FMT_MSGPACK),
    "odd pairs ext": (_ext(5, [1, 2, 3]), FMT_MSGPACK),
    "bad datetime ext": (_ext(7, [2020, 13, 1, 0, 0, 0, 0, 0, None]), FMT_MSGPACK),
    "unknown zone": (_ext(7, [2020, 1, 1, 0, 0, 0, 0, 0, "Nowhere/Atlantis"]), FMT_MSGPACK),
    "object numpy dtype": (_ext(15, ["|O", [1], b"\x00" * 8]), FMT_MSGPACK),
    "numpy size mismatch": (_ext(15, ["<f8", [2], b"\x00" * 8]), FMT_MSGPACK),
    "enum of unloaded module": (_ext(13, ["no_such_module_xyz", "Color", 1]), FMT_MSGPACK),
    "enum name not an enum": (_ext(13, ["os", "getcwd", 1]), FMT_MSGPACK),
    "enum bad value": (_ext(13, [__name__, "Level", 99]), FMT_MSGPACK),
    "json garbage": (b"{nope", FMT_JSON),
    "zlib garbage": (b"not zlib", FMT_ZLIB),
    "zstd garbage": (b"not zstd", FMT_ZSTD),
    "unknown serializer bits": (b"\x01", 7),
    "unknown flag bits": (b"\x01", 1 << 12),
    "custom compression, none configured": (b"\x01", FMT_CUSTOM_COMPRESSION),
    "custom serializer row": (b"\x01", FMT_CUSTOM),
    "signed row too short": (b"\x01", FMT_SIGNED),
}


@pytest.mark.parametrize(("blob", "fmt"), GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_raises_serialization_error(blob: bytes, fmt: int) -> None:
    with pytest.raises(SerializationError):
        Codec().decode(blob, fmt, KEY)


def test_garbage_raises_serialization_error_with_type_too() -> None:
    with pytest.raises(SerializationError):
        Codec().decode(b"\xc1", FMT_MSGPACK, KEY, type=Point)


def test_enum_decoding_never_imports_a_module() -> None:
    assert "this" not in sys.modules  # importing `this` prints the Zen of Python
    with pytest.raises(SerializationError):
        Codec().decode(_ext(13, ["this", "X", 1]), FMT_MSGPACK, KEY)
    assert "this" not in sys.modules


def test_enum_decoding_never_calls_a_non_enum(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    monkeypatch.setattr("os.system", calls.append)
    with pytest.raises(SerializationError):
        Codec().decode(_ext(13, ["os", "system", "echo owned"]), FMT_MSGPACK, KEY)
    assert calls == []


class Planted:
    """Unpickling this creates the file: the attack the default codec must not run."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (pathlib.Path.touch, (self.path,))


@pytest.mark.parametrize("reader", ["msgpack", "json"])
@pytest.mark.parametrize("fmt", [FMT_PICKLE, FMT_MSGPACK, FMT_JSON, FMT_PICKLE | FMT_ZLIB])
def test_planted_pickle_is_never_executed(tmp_path: pathlib.Path, reader: str, fmt: int) -> None:
    target = tmp_path / "pwned"
    blob = pickle.dumps(Planted(target), protocol=5)
    if fmt & FMT_ZLIB:
        blob = zlib.compress(blob)
    with pytest.raises(SerializationError):
        Codec(reader).decode(blob, fmt, KEY)
    assert not target.exists()


def test_planted_pickle_would_run_under_the_pickle_serializer(tmp_path: pathlib.Path) -> None:
    # proves the payload above is live, so the test before it can fail
    target = tmp_path / "pwned"
    Codec("pickle").decode(pickle.dumps(Planted(target), protocol=5), FMT_PICKLE, KEY)
    assert target.exists()


def test_planted_pickle_is_refused_under_a_secret_without_a_mac(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "pwned"
    blob = pickle.dumps(Planted(target), protocol=5)
    with pytest.raises(InvalidSignature):
        Codec("pickle", secret=b"k").decode(blob, FMT_PICKLE, KEY)
    assert not target.exists()


# --- signing -------------------------------------------------------------------------------
SIGNED = Codec(secret=b"secret")


def test_signed_round_trip_sets_the_flag() -> None:
    blob, fmt = SIGNED.encode({"a": (1, 2)}, KEY)
    assert fmt & FMT_SIGNED
    assert same(SIGNED.decode(blob, fmt, KEY), {"a": (1, 2)})
    assert not SIGNED.fast


def test_str_and_bytes_secrets_are_the_same_key() -> None:
    blob, fmt = Codec(secret="secret").encode("v", KEY)
    assert SIGNED.decode(blob, fmt, KEY) == "v"


@pytest.mark.parametrize("index", [0, 1, -1, -32, -33])
def test_tampered_blob_is_invalid_signature(index: int) -> None:
    blob, fmt = SIGNED.encode({"a": "value"}, KEY)
    tampered = bytearray(blob)
    tampered[index] ^= 0x01
    with pytest.raises(InvalidSignature):
        SIGNED.decode(bytes(tampered), fmt, KEY)


def test_truncated_and_extended_blobs_are_invalid_signature() -> None:
    blob, fmt = SIGNED.encode("value", KEY)
    for bad in (blob[:-1], blob[1:], blob + b"\x00", blob[:10]):
        with pytest.raises(InvalidSignature):
            SIGNED.decode(bad, fmt, KEY)


def test_entry_moved_to_another_key_is_invalid_signature() -> None:
    blob, fmt = SIGNED.encode("value", KEY)
    with pytest.raises(InvalidSignature):
        SIGNED.decode(blob, fmt, b"\x01user:2")


def test_key_length_is_authenticated() -> None:
    # without len(key) in the MAC, moving bytes between key and payload would verify
    blob, fmt = SIGNED.encode("value", b"ab")
    with pytest.raises(InvalidSignature):
        SIGNED.decode(blob[1:], fmt, b"ab" + blob[:1])


def test_other_secret_is_invalid_signature() -> None:
    blob, fmt = Codec(secret=b"other").encode("value", KEY)
    with pytest.raises(InvalidSignature):
        SIGNED.decode(blob, fmt, KEY)


def test_unsigned_entry_under_a_secret_is_invalid_signature() -> None:
    blob, fmt = Codec().encode("value", KEY)
    with pytest.raises(InvalidSignature):
        SIGNED.decode(blob, fmt, KEY)


@pytest.mark.parametrize("flip", [FMT_ZLIB, FMT_JSON, FMT_PICKLE])
def test_fmt_is_authenticated(flip: int) -> None:
    codec = Codec("pickle", secret=b"secret")
    blob, fmt = codec.encode("value", KEY)
    with pytest.raises(InvalidSignature):
        codec.decode(blob, fmt ^ flip, KEY)


def test_signed_entry_reads_without_a_secret() -> None:
    # dropping the secret from the configuration keeps existing entries readable
    blob, fmt = SIGNED.encode({"a": 1}, KEY)
    assert Codec().decode(blob, fmt, KEY) == {"a": 1}


# --- type= ---------------------------------------------------------------------------------
def test_type_decodes_into_struct_dataclass_and_list_of_struct() -> None:
    codec = Codec()
    for value, tp in [
        (Point(1, 2), Point),
        (User("ann", 3), User),
        ([Point(1, 2), Point(3, 4)], list[Point]),
        (Shape("sq", (1, 2)), Shape),
    ]:
        blob, fmt = codec.encode(value, KEY)
        assert codec.decode(blob, fmt, KEY, type=tp) == value


def test_type_converts_plain_values_and_extensions() -> None:
    codec = Codec()
    blob, fmt = codec.encode({"name": "sq", "corner": (1, 2)}, KEY)  # tuple stored as an ext
    assert codec.decode(blob, fmt, KEY, type=Shape) == Shape("sq", (1, 2))
    blob, fmt = codec.encode((1, 2), KEY)
    assert codec.decode(blob, fmt, KEY, type=tuple[int, int]) == (1, 2)
    blob, fmt = codec.encode(Mode.READ, KEY)
    assert codec.decode(blob, fmt, KEY, type=Mode) is Mode.READ


@pytest.mark.parametrize(
    ("value", "tp"),
    [
        ({"x": "one", "y": 2}, Point),
        (Point(1, 2), User),
        ("abc", int),
        (True, int),
        ([Point(1, 2), {"x": 1}], list[Point]),
        ((1, 2, 3), tuple[int, int]),
        (Color.RED, Level),
    ],
)
def test_type_mismatch(value: Any, tp: Any) -> None:
    codec = Codec()
    blob, fmt = codec.encode(value, KEY)
    with pytest.raises(TypeMismatch):
        codec.decode(blob, fmt, KEY, type=tp)


def test_schema_change_is_type_mismatch() -> None:
    class V2(msgspec.Struct):
        x: int
        y: int
        z: int  # new required field

    blob, fmt = Codec().encode(Point(1, 2), KEY)
    with pytest.raises(TypeMismatch):
        Codec().decode(blob, fmt, KEY, type=V2)


@pytest.mark.parametrize("serializer", ["json", "pickle"])
def test_type_with_other_serializers(serializer: str) -> None:
    codec = Codec(serializer)
    blob, fmt = codec.encode(Point(1, 2), KEY)
    assert codec.decode(blob, fmt, KEY, type=Point) == Point(1, 2)
    with pytest.raises(TypeMismatch):
        codec.decode(blob, fmt, KEY, type=User)


def test_typed_decoders_are_cached() -> None:
    assert _codec._typed_decoder(FMT_MSGPACK, list[Point]) is _codec._typed_decoder(
        FMT_MSGPACK, list[Point]
    )


def test_invalid_type_is_type_error() -> None:
    blob, fmt = Codec().encode(1, KEY)
    with pytest.raises(TypeError, match="type="):
        Codec().decode(blob, fmt, KEY, type=object())


# --- compression ---------------------------------------------------------------------------
COMPRESSIBLE = {"text": "shardcache " * 1000, "rows": [{"a": i % 3} for i in range(300)]}


@pytest.mark.parametrize(("compression", "flag"), [("zlib", FMT_ZLIB), ("zstd", FMT_ZSTD)])
def test_compression_shrinks_and_round_trips(compression: str, flag: int) -> None:
    codec = Codec(compression=compression)
    raw, _ = Codec().encode(COMPRESSIBLE, KEY)
    blob, fmt = codec.encode(COMPRESSIBLE, KEY)
    assert fmt == flag
    assert len(blob) < len(raw) // 10
    assert same(codec.decode(blob, fmt, KEY), COMPRESSIBLE)


@pytest.mark.parametrize("compression", ["zlib", "zstd"])
def test_incompressible_and_short_payloads_are_stored_raw(compression: str) -> None:
    codec = Codec(compression=compression, compress_min_size=100)
    noise = os.urandom(4096)
    for value in (noise, "x" * 50):
        blob, fmt = codec.encode(value, KEY)
        assert fmt == FMT_MSGPACK
        assert blob == msgspec.msgpack.encode(value)


def test_compress_min_size_is_inclusive() -> None:
    raw = msgspec.msgpack.encode("a" * 200)
    codec = Codec(compression="zlib", compress_min_size=len(raw))
    assert codec.encode("a" * 200, KEY)[1] == FMT_ZLIB
    assert codec.encode("a" * 199, KEY)[1] == FMT_MSGPACK


@pytest.mark.parametrize("writer", ["zlib", "zstd", lzma])
@pytest.mark.parametrize("reader", [None, "zlib", "zstd"])
def test_rows_decode_whatever_compression_is_configured_now(writer: Any, reader: Any) -> None:
    blob, fmt = Codec(compression=writer).encode(COMPRESSIBLE, KEY)
    assert fmt & 0xF0
    if writer is lzma:
        assert fmt == FMT_CUSTOM_COMPRESSION
        with pytest.raises(SerializationError):
            Codec(compression=reader).decode(blob, fmt, KEY)
    else:
        assert same(Codec(compression=reader).decode(blob, fmt, KEY), COMPRESSIBLE)


def test_custom_compressor_round_trips() -> None:
    codec = Codec(compression=lzma)
    blob, fmt = codec.encode(COMPRESSIBLE, KEY)
    assert fmt == FMT_CUSTOM_COMPRESSION
    assert lzma.decompress(blob) == msgspec.msgpack.encode(COMPRESSIBLE)
    assert same(codec.decode(blob, fmt, KEY), COMPRESSIBLE)


def test_compressed_and_signed_row() -> None:
    codec = Codec(compression="zstd", secret=b"k")
    blob, fmt = codec.encode(COMPRESSIBLE, KEY)
    assert fmt == FMT_ZSTD | FMT_SIGNED
    assert same(codec.decode(blob, fmt, KEY), COMPRESSIBLE)


def test_zstd_is_thread_safe() -> None:
    codec = Codec(compression="zstd")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for i in range(50):
                value = {"i": i, "text": "t" * 3000}
                assert same(codec.decode(*codec.encode(value, KEY), KEY), value)
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_zstd_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    blob, fmt = Codec(compression="zstd").encode(COMPRESSIBLE, KEY)
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail
    monkeypatch.setattr(_codec, "_zstd_local", threading.local())
    with pytest.raises(ConfigurationError, match=r"pip install shardcache\[zstd\]"):
        Codec(compression="zstd")
    with pytest.raises(SerializationError, match=r"shardcache\[zstd\]"):
        Codec().decode(blob, fmt, KEY)


# --- serializers ---------------------------------------------------------------------------
def test_serializer_names_and_fast_flag() -> None:
    class Mine:
        def dumps(self, value: Any) -> bytes:
            return repr(value).encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    assert (Codec().serializer_name, Codec().fast) == ("msgpack", True)
    assert (Codec("json").serializer_name, Codec("json").fast) == ("json", False)
    assert Codec("pickle").serializer_name == "pickle"
    assert Codec(Mine()).serializer_name == f"custom:{__name__}.{Mine.__qualname__}"
    assert not Codec(compression="zlib").fast


def test_json_is_not_type_faithful() -> None:
    codec = Codec("json")
    blob, fmt = codec.encode({"t": (1, 2), "d": dt.date(2020, 1, 2)}, KEY)
    assert fmt == FMT_JSON
    assert codec.decode(blob, fmt, KEY) == {"t": [1, 2], "d": "2020-01-02"}


def test_pickle_round_trip_and_cross_reads() -> None:
    blob, fmt = Codec("pickle").encode(Pair(1, 2), KEY)
    assert fmt == FMT_PICKLE
    assert same(Codec("pickle").decode(blob, fmt, KEY), Pair(1, 2))
    assert pickle.loads(blob) == Pair(1, 2)
    assert blob[:2] == b"\x80\x05"  # protocol 5
    # msgpack and json rows stay readable after switching serializer
    mp_blob, mp_fmt = Codec().encode((1, 2), KEY)
    assert same(Codec("pickle").decode(mp_blob, mp_fmt, KEY), (1, 2))
    js_blob, js_fmt = Codec("json").encode([1], KEY)
    assert Codec().decode(js_blob, js_fmt, KEY) == [1]


def test_custom_serializer_rows() -> None:
    class Upper:
        def dumps(self, value: Any) -> bytes:
            return str(value).upper().encode()

        def loads(self, data: bytes) -> Any:
            return data.decode()

    blob, fmt = Codec(Upper()).encode("abc", KEY)
    assert (blob, fmt) == (b"ABC", FMT_CUSTOM)
    assert Codec(Upper()).decode(blob, fmt, KEY) == "ABC"
    with pytest.raises(SerializationError):
        Codec().decode(blob, fmt, KEY)


@pytest.mark.parametrize("value", [0, -5, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30])
@pytest.mark.parametrize(
    "options", [{}, {"serializer": "json"}, {"compression": "zlib", "compress_min_size": 0}]
)
def test_encode_int_matches_encode(value: int, options: dict[str, Any]) -> None:
    codec = Codec(**options)
    assert codec.encode_int(value) == codec.encode(value, KEY)
    blob, fmt = codec.encode_int(value)
    assert same(codec.decode(blob, fmt, KEY), value)


def test_encode_int_signs_with_the_key() -> None:
    with pytest.raises(TypeError, match="key"):
        SIGNED.encode_int(1)
    blob, fmt = SIGNED.encode_int(7, KEY)
    assert SIGNED.decode(blob, fmt, KEY) == 7


# --- configuration -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"serializer": "yaml"}, ["serializer", "'yaml'", "'msgpack'"]),
        ({"serializer": object()}, ["serializer", "Serializer"]),
        ({"compression": "lz4"}, ["compression", "'lz4'", "'zstd'"]),
        ({"compression": 9}, ["compression", "9"]),
        ({"compress_min_size": -1}, ["compress_min_size", "-1"]),
        ({"compress_min_size": "10"}, ["compress_min_size", "'10'"]),
        ({"compress_min_size": True}, ["compress_min_size", "True"]),
        ({"secret": b""}, ["secret", "non-empty"]),
        ({"secret": 123}, ["secret", "123"]),
    ],
)
def test_bad_options_raise_configuration_error(options: dict[str, Any], words: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        Codec(**options)
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)


# --- property ------------------------------------------------------------------------------
_hashable_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
    | st.dates()
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.complex_numbers()
    | st.sampled_from([*Color, *Level, *Mode, Perm.R | Perm.W])
)
_leaves = (
    _hashable_leaves
    | st.floats()
    | st.decimals(allow_nan=True)
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.times(timezones=st.none() | st.timezones())
    | st.timedeltas()
    | st.builds(bytearray, st.binary(max_size=8))
)
_hashables = st.recursive(
    _hashable_leaves,
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=4,
)
_values = st.recursive(
    _leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.sets(_hashables, max_size=4)
        | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        | st.dictionaries(_hashables, inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_property_round_trip(value: Any) -> None:
    assert same(roundtrip(value), value)
    assert same(roundtrip(value, SIGNED), value)
