"""MessagePack made type-faithful: the extension types of the default serializer.

msgspec would encode a tuple, a set, a datetime, a Decimal, an Enum... as something that
decodes as a list or a str. Here such values become MessagePack extension types on the way
in (``_prep``, one converter per type in ``_CONVERT``) and are rebuilt on the way out
(``_ext_hook``, one decoder per code in ``_EXT_DECODE``, behind ``_unpack``). The extension
codes are part of the file format and must never change; decoding stored bytes never
imports a module nor runs code (an Enum comes only from a module already imported, a numpy
dtype only from its ``.npy`` description).

It is a module of its own because it is one self-contained concept, the vocabulary of the
default serializer's bytes, and the bulk of the codec's code: ``_codec`` composes a
serializer, compression and signing into ``(blob, fmt)`` on top of the encoder and decoder
defined here (``_pack`` with ``_prep``, ``_unpack`` with ``_ext_hook``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import importlib
import math
import struct
import sys
import uuid
import weakref
import zoneinfo
from collections.abc import Callable
from typing import Any, Final

import msgspec
from msgspec.msgpack import Ext

from ._errors import SerializationError

# --- MessagePack extension codes: persisted, never renumber -------------------------------
_X_BIGINT, _X_TUPLE, _X_SET, _X_FROZENSET, _X_PAIRS, _X_BYTEARRAY = 1, 2, 3, 4, 5, 6
_X_DATETIME, _X_DATE, _X_TIME, _X_TIMEDELTA, _X_DECIMAL, _X_UUID = 7, 8, 9, 10, 11, 12
_X_ENUM, _X_COMPLEX, _X_NUMPY = 13, 14, 15

_INT_MIN: Final = -(2**63)  # msgpack's native int range; msgspec raises OverflowError beyond
_INT_MAX: Final = 2**64 - 1
#: Exact types msgspec round-trips losslessly, as values and as map keys.
_PLAIN: Final = frozenset({str, int, float, bool, type(None), bytes})
_COMPLEX: Final = struct.Struct(">dd")
_US: Final = dt.timedelta(microseconds=1)
# Kinds whose raw bytes are the whole array; "O"/"T" hold pointers, which only pickle stores.
_NUMPY_KINDS: Final = frozenset("biufcmMSUV")


class _Unencodable(Exception):
    """Internal: carries the offending object and the path to it up the walk."""

    def __init__(self, obj: Any, reason: str = "") -> None:
        super().__init__(obj)
        self.obj, self.reason = obj, reason
        self.path: list[Any] = []  # built innermost first, on the way up

    def error(self) -> SerializationError:
        path = "".join(f"[{p!r}]" for p in reversed(self.path))
        why = f": {self.reason}" if self.reason else ""
        return SerializationError(f"cannot encode {_type_name(self.obj)} at value{path}{why}")


def _enc_hook(obj: Any) -> Any:
    # Reached only from inside Structs/dataclasses, which msgspec encodes natively.
    if type(obj) is complex or type(obj).__module__ == "numpy":
        return _prep(obj)
    raise TypeError(f"Encoding objects of type {_type_name(obj)} is unsupported")


def _type_name(obj: Any) -> str:
    t = type(obj)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


_pack: Callable[[Any], bytes] = msgspec.msgpack.Encoder(enc_hook=_enc_hook).encode


# --- encoding: the walk that makes lossy types extensions -------------------------------
def _prep(v: Any) -> Any:
    """Return ``v`` with every value msgspec would not round-trip turned into an Ext."""
    t = type(v)
    if t in _PLAIN:
        if t is int and not _INT_MIN <= v <= _INT_MAX:
            return Ext(_X_BIGINT, v.to_bytes(v.bit_length() // 8 + 1, "big", signed=True))
        return v
    conv = _CONVERT.get(t)
    return conv(v) if conv is not None else _prep_other(v)


def _prep_list(v: Any) -> list[Any]:
    out: list[Any] = []
    try:
        for x in v:
            out.append(_prep(x))  # noqa: PERF401 - len(out) is the failing index below
    except _Unencodable as exc:
        exc.path.append(len(out))
        raise
    return out


def _prep_dict(d: dict[Any, Any]) -> Any:
    out = {}
    k: Any = None
    try:
        for k, v in d.items():
            kt = type(k)
            if kt not in _PLAIN or (kt is int and not _INT_MIN <= k <= _INT_MAX):
                return _prep_pairs(d)
            out[k] = _prep(v)
    except _Unencodable as exc:
        exc.path.append(k)
        raise
    return out


def _prep_pairs(d: dict[Any, Any]) -> Ext:
    # An Ext is unhashable, so a dict with a tuple/frozenset/... key is stored as pairs.
    flat: list[Any] = []
    k: Any = None
    try:
        for k, v in d.items():
            flat += (_prep(k), _prep(v))
    except _Unencodable as exc:
        exc.path.append(k)
        raise
    return Ext(_X_PAIRS, _pack(flat))


def _tz_spec(tz: dt.tzinfo | None, when: dt.datetime | None) -> Any:
    if tz is None:
        return None
    if type(tz) is dt.timezone:
        fixed = tz.utcoffset(None)
        name = tz.tzname(None)
        # Keep a custom name ("CET") only when it differs from the default ("UTC+01:00").
        return fixed // _US if name == dt.timezone(fixed).tzname(None) else [fixed // _US, name]
    # A named zone is stored by name (ZoneInfo .key, pytz .zone), anything else by offset.
    key = tz.key if isinstance(tz, zoneinfo.ZoneInfo) else getattr(tz, "zone", None)
    if isinstance(key, str):
        return key
    off = tz.utcoffset(when)
    if off is None:
        raise _Unencodable(tz, "its UTC offset is unknown")
    return off // _US


def _prep_datetime(v: dt.datetime) -> Ext:
    tz = _tz_spec(v.tzinfo, v)
    fields = (v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, v.fold, tz)
    return Ext(_X_DATETIME, _pack(fields))


def _prep_time(v: dt.time) -> Ext:
    tz = _tz_spec(v.tzinfo, None)
    return Ext(_X_TIME, _pack((v.hour, v.minute, v.second, v.microsecond, v.fold, tz)))


_ENUM_IMPORTABLE: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _prep_enum(v: enum.Enum) -> Ext:
    cls = type(v)
    ok = _ENUM_IMPORTABLE.get(cls)
    if ok is None:
        try:
            ok = _ENUM_IMPORTABLE[cls] = _resolve_enum(cls.__module__, cls.__qualname__) is cls
        except SerializationError:
            ok = _ENUM_IMPORTABLE[cls] = False
    if not ok:
        raise _Unencodable(v, "its Enum class is not reachable by module and qualname")
    return Ext(_X_ENUM, _pack((cls.__module__, cls.__qualname__, _prep(v.value))))


def _prep_numpy(v: Any) -> Ext:
    np: Any = sys.modules["numpy"]  # the value is a numpy object, so numpy is imported
    if not (type(v) is np.ndarray or isinstance(v, np.generic)):
        raise _Unencodable(v)
    if v.dtype.hasobject or v.dtype.kind not in _NUMPY_KINDS:
        raise _Unencodable(v, f"dtype {v.dtype} holds Python objects (only pickle stores it)")
    descr = _prep(np.lib.format.dtype_to_descr(v.dtype))  # the .npy header form: no pickle
    shape = list(v.shape) if type(v) is np.ndarray else None  # None: a numpy scalar
    return Ext(_X_NUMPY, _pack((descr, shape, v.tobytes())))


def _prep_other(v: Any) -> Any:
    if isinstance(v, enum.Enum):  # before int/str: IntEnum and StrEnum-likes subclass them
        return _prep_enum(v)
    t = type(v)
    if t.__module__ == "numpy":
        return _prep_numpy(v)
    if isinstance(v, msgspec.Struct) or hasattr(t, "__attrs_attrs__"):
        return v  # msgspec stores these natively; get(type=...) rebuilds them
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return v
    if isinstance(v, memoryview):
        return v.tobytes()
    for base in t.__mro__[1:]:  # a namedtuple stores as a tuple, an OrderedDict as a dict
        if base in _PLAIN:
            return _prep(base(v))
        if base in _CONVERT:
            return _CONVERT[base](v)
    raise _Unencodable(v)


_CONVERT: dict[type, Callable[[Any], Any]] = {
    list: _prep_list,
    dict: _prep_dict,
    tuple: lambda v: Ext(_X_TUPLE, _pack(_prep_list(v))),
    set: lambda v: Ext(_X_SET, _pack(_prep_list(v))),
    frozenset: lambda v: Ext(_X_FROZENSET, _pack(_prep_list(v))),
    bytearray: lambda v: Ext(_X_BYTEARRAY, bytes(v)),
    dt.datetime: _prep_datetime,
    dt.date: lambda v: Ext(_X_DATE, _pack(v.toordinal())),
    dt.time: _prep_time,
    dt.timedelta: lambda v: Ext(_X_TIMEDELTA, _pack((v.days, v.seconds, v.microseconds))),
    decimal.Decimal: lambda v: Ext(_X_DECIMAL, str(v).encode()),
    uuid.UUID: lambda v: Ext(_X_UUID, v.bytes),
    complex: lambda v: Ext(_X_COMPLEX, _COMPLEX.pack(v.real, v.imag)),
}


# --- decoding ------------------------------------------------------------------------------
def _resolve_enum(module: str, qualname: str) -> type[enum.Enum]:
    # Only modules already imported: stored data must never make us import (run) a module,
    # and only an Enum class may come out: calling any other object would run arbitrary code.
    obj: Any = sys.modules.get(module)
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, enum.Enum)):
        raise SerializationError(f"{module}.{qualname} is not an Enum of an imported module")
    return obj


def _tz_from(spec: Any) -> dt.tzinfo | None:
    if spec is None:
        return None
    if type(spec) is str:
        return zoneinfo.ZoneInfo(spec)
    if type(spec) is int:
        return dt.timezone(spec * _US)
    us, name = spec
    return dt.timezone(us * _US, name)


def _x_datetime(data: memoryview) -> dt.datetime:
    y, mo, d, h, mi, s, us, fold, tz = _unpack(data)
    return dt.datetime(y, mo, d, h, mi, s, us, _tz_from(tz), fold=fold)


def _x_time(data: memoryview) -> dt.time:
    h, mi, s, us, fold, tz = _unpack(data)
    return dt.time(h, mi, s, us, _tz_from(tz), fold=fold)


def _x_enum(data: memoryview) -> enum.Enum:
    module, qualname, value = _unpack(data)
    return _resolve_enum(module, qualname)(value)


def _x_pairs(data: memoryview) -> dict[Any, Any]:
    it = iter(_unpack(data))
    return dict(zip(it, it, strict=True))


def _x_numpy(data: memoryview) -> Any:
    try:
        np: Any = importlib.import_module("numpy")
    except ImportError:
        raise SerializationError("a stored numpy array needs numpy installed") from None
    descr, shape, raw = _unpack(data)
    dtype = np.lib.format.descr_to_dtype(descr)
    if dtype.hasobject or dtype.kind not in _NUMPY_KINDS:
        raise SerializationError(f"refusing numpy dtype {dtype}")
    if len(raw) != math.prod(shape or ()) * dtype.itemsize:
        raise SerializationError("numpy data does not match its shape and dtype")
    if shape is None:
        return np.frombuffer(raw, dtype)[0]
    if dtype.itemsize == 0:
        return np.empty(shape, dtype)
    return np.frombuffer(bytearray(raw), dtype).reshape(shape)  # bytearray: writable array


_EXT_DECODE: dict[int, Callable[[memoryview], Any]] = {
    _X_BIGINT: lambda b: int.from_bytes(b, "big", signed=True),
    _X_TUPLE: lambda b: tuple(_unpack(b)),
    _X_SET: lambda b: set(_unpack(b)),
    _X_FROZENSET: lambda b: frozenset(_unpack(b)),
    _X_PAIRS: _x_pairs,
    _X_BYTEARRAY: bytearray,
    _X_DATETIME: _x_datetime,
    _X_DATE: lambda b: dt.date.fromordinal(_unpack(b)),
    _X_TIME: _x_time,
    _X_TIMEDELTA: lambda b: dt.timedelta(*_unpack(b)),
    _X_DECIMAL: lambda b: decimal.Decimal(str(b, "ascii")),
    _X_UUID: lambda b: uuid.UUID(bytes=bytes(b)),
    _X_ENUM: _x_enum,
    _X_COMPLEX: lambda b: complex(*_COMPLEX.unpack(b)),
    _X_NUMPY: _x_numpy,
}


def _ext_hook(code: int, data: memoryview) -> Any:
    decode = _EXT_DECODE.get(code)
    if decode is None:
        raise SerializationError(f"unknown MessagePack extension type {code}")
    try:
        return decode(data)
    except SerializationError:
        raise
    except Exception as exc:  # any failure on stored bytes is "undecodable", by contract
        raise SerializationError(f"corrupt extension value (type {code}): {exc}") from exc


_unpack: Callable[[Any], Any] = msgspec.msgpack.Decoder(ext_hook=_ext_hook).decode
