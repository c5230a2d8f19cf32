"""The value codec: Python values to ``(blob, fmt)`` and back.

``fmt`` is stored with every entry and says how its blob was made, so changing the
serializer, the compression or the secret later keeps old entries readable::

    bits 0-3   serializer    FMT_MSGPACK | FMT_JSON | FMT_PICKLE | FMT_CUSTOM
    bits 4-7   compression   0 (raw) | FMT_ZLIB | FMT_ZSTD | FMT_CUSTOM_COMPRESSION
    bit  8     FMT_SIGNED    the blob ends with an HMAC-SHA256 of (key, fmt, payload)

Encoding is ``serialize -> compress (if it pays) -> sign``; decoding verifies the MAC
*first*, so an unsigned or tampered entry is never decompressed nor deserialized.

The default serializer is msgspec's MessagePack made type-faithful: msgspec would encode a
tuple, a set, a datetime, a Decimal, an Enum... as something that decodes as a list or a str,
so these are stored as MessagePack extension types, whose codes below are part of the file
format and must never change. A row written by pickle is only unpickled by a codec whose
serializer is pickle: the default codec never executes a planted pickle payload.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import hmac
import importlib
import math
import pickle
import struct
import sys
import threading
import uuid
import weakref
import zlib
import zoneinfo
from collections.abc import Callable
from typing import Any, Final, Protocol, runtime_checkable

import msgspec
from msgspec.msgpack import Ext

from ._errors import ConfigurationError, SerializationError

FMT_MSGPACK: Final = 0
FMT_JSON: Final = 1
FMT_PICKLE: Final = 2
FMT_CUSTOM: Final = 3
FMT_ZLIB: Final = 1 << 4
FMT_ZSTD: Final = 2 << 4
FMT_CUSTOM_COMPRESSION: Final = 3 << 4
FMT_SIGNED: Final = 1 << 8
_SER_MASK: Final = 0x0F
_COMP_MASK: Final = 0xF0
_MAC_SIZE: Final = 32
_MAC_HEAD: Final = struct.Struct(">QI")  # len(key), fmt: both authenticated with the payload


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back; pass one as ``AsyncCache(serializer=...)``.

    Example::

        class Utf8:
            def dumps(self, value: str) -> bytes: return value.encode()
            def loads(self, data: bytes) -> str: return data.decode()
    """

    def dumps(self, value: Any) -> bytes:
        """Encode a value to bytes (raise on what it cannot encode)."""
        ...

    def loads(self, data: bytes) -> Any:
        """Decode bytes written by ``dumps``."""
        ...


@runtime_checkable
class Compressor(Protocol):
    """Compresses serialized values; pass one as ``AsyncCache(compression=...)``.

    Example: the ``lzma`` module is one: ``AsyncCache(compression=lzma)``.
    """

    def compress(self, data: bytes) -> bytes:
        """Compress bytes."""
        ...

    def decompress(self, data: bytes) -> bytes:
        """Undo ``compress``."""
        ...


class InvalidSignature(Exception):
    """An entry whose HMAC is missing or does not verify (the cache treats it as a miss)."""


class TypeMismatch(Exception):
    """A stored value that does not fit the ``type=`` asked for (a miss; the entry is deleted)."""


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


# --- encoding: the fast check, then the walk that makes lossy types extensions -------------
def _plain_list(v: list[Any]) -> bool:
    for x in v:
        t = type(x)
        if t in _PLAIN or (t is list and _plain_list(x)) or (t is dict and _plain_dict(x)):
            continue
        return False
    return True


def _plain_dict(d: dict[Any, Any]) -> bool:
    # Measured: one Python loop over items() beats set.issuperset(map(type, ...)) twice,
    # because the common value holds a short list and would fail the C-level check anyway.
    for k, v in d.items():
        if type(v) in _PLAIN and type(k) in _PLAIN:
            continue
        t = type(v)
        if type(k) not in _PLAIN or not (
            (t is list and _plain_list(v)) or (t is dict and _plain_dict(v))
        ):
            return False
    return True


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


def _msgpack_dumps(value: Any) -> bytes:
    t = type(value)
    try:
        if (t is dict and _plain_dict(value)) or t in _PLAIN or (t is list and _plain_list(value)):
            return _pack(value)
    except (OverflowError, RecursionError, UnicodeEncodeError):
        # An int beyond 64 bits, deep nesting, a str that is not valid Unicode (a lone
        # surrogate): the walk below handles or reports it as a SerializationError.
        pass
    try:
        return _pack(_prep(value))
    except _Unencodable as exc:
        raise exc.error() from None
    except Exception as exc:  # msgspec's TypeError/OverflowError, RecursionError, user code
        raise SerializationError(f"cannot encode {_type_name(value)}: {exc}") from exc


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
_json_pack: Callable[[Any], bytes] = msgspec.json.Encoder().encode
_json_unpack: Callable[[Any], Any] = msgspec.json.Decoder().decode
_TYPED: dict[tuple[int, Any], Callable[[bytes], Any]] = {}


def _typed_decoder(ser: int, tp: Any) -> Callable[[bytes], Any]:
    try:
        return _TYPED[ser, tp]
    except KeyError:
        pass
    try:
        if ser == FMT_MSGPACK:
            dec = msgspec.msgpack.Decoder(tp, ext_hook=_ext_hook).decode
        else:
            dec = msgspec.json.Decoder(tp).decode
    except TypeError as exc:
        raise TypeError(f"type={tp!r} is not a type msgspec can decode into: {exc}") from None
    if len(_TYPED) >= 1024:  # types are few in practice; this only bounds a pathological caller
        _TYPED.clear()
    _TYPED[ser, tp] = dec
    return dec


def _convert(obj: Any, tp: Any) -> Any:
    if type(obj) is tp:  # an Enum member, a pickled Struct: msgspec.convert rejects these
        return obj
    try:
        return msgspec.convert(obj, tp)
    except msgspec.ValidationError as exc:
        raise TypeMismatch(str(exc)) from exc


# --- zstandard, imported on first use ------------------------------------------------------
_zstd_local = threading.local()  # zstandard (de)compressor objects are not thread-safe


def _zstd() -> Any:
    try:
        return importlib.import_module("zstandard")
    except ImportError:
        raise ConfigurationError(
            "compression='zstd' needs the zstandard package: pip install shardcache[zstd]"
        ) from None


def _zstd_compress(data: bytes) -> bytes:
    c = getattr(_zstd_local, "c", None) or _zstd().ZstdCompressor(level=3)
    _zstd_local.c = c
    out: bytes = c.compress(data)
    return out


def _zstd_decompress(data: bytes) -> bytes:
    d = getattr(_zstd_local, "d", None) or _zstd().ZstdDecompressor()
    _zstd_local.d = d
    out: bytes = d.decompress(data)
    return out


def _wrap(fn: Callable[[Any], Any], what: str) -> Callable[[Any], Any]:
    """Make any failure of a pickle/JSON/custom step a SerializationError naming it."""

    def call(arg: Any) -> Any:
        try:
            return fn(arg)
        except SerializationError:
            raise
        except Exception as exc:
            raise SerializationError(f"{what} failed on {type(arg).__qualname__}: {exc}") from exc

    return call


class Codec:
    """Encodes cache values to ``(blob, fmt)`` and back; one per cache, used on the loop.

    ``serializer``: ``"msgpack"`` (default, type-faithful, see the module docstring),
    ``"json"`` (msgspec.json, *not* type-faithful: values come back as JSON types unless
    ``type=`` is given to :meth:`decode`), ``"pickle"`` (protocol 5; trusted data only) or a
    :class:`Serializer`. ``compression`` applies to payloads of at least
    ``compress_min_size`` bytes, and only when it makes them smaller. ``secret`` signs
    entries with HMAC-SHA256.

    Attributes: ``serializer_name`` (recorded in the cache's settings: ``"msgpack"``,
    ``"json"``, ``"pickle"`` or ``"custom:<module>.<qualname>"``); ``fast``, True when every
    entry this codec writes has ``fmt == 0`` (msgpack, no compression, no secret);
    ``msgpack_decode``, the bound ``Decoder.decode`` that reads ``fmt == 0`` rows at full
    msgspec speed (it raises ``msgspec.DecodeError`` or :class:`SerializationError` on bad
    bytes, where :meth:`decode` raises only the latter).

    Example::

        codec = Codec(compression="zlib", secret=b"k")
        blob, fmt = codec.encode({"a": (1, 2)}, b"key")
        assert codec.decode(blob, fmt, b"key") == {"a": (1, 2)}
    """

    serializer_name: str
    fast: bool
    msgpack_decode: Callable[[bytes], Any]

    def __init__(
        self,
        serializer: str | Serializer = "msgpack",
        *,
        compression: str | Compressor | None = None,
        compress_min_size: int = 1024,
        secret: bytes | str | None = None,
    ) -> None:
        self._custom: Serializer | None = None
        self._compressor: Compressor | None = None
        if isinstance(serializer, str):
            fmt = {"msgpack": FMT_MSGPACK, "json": FMT_JSON, "pickle": FMT_PICKLE}.get(serializer)
            if fmt is None:
                raise _bad("serializer", serializer, "'msgpack', 'json', 'pickle' or a Serializer")
            self.serializer_name = serializer
        elif callable(getattr(serializer, "dumps", None)) and callable(
            getattr(serializer, "loads", None)
        ):
            fmt, self._custom = FMT_CUSTOM, serializer
            cls = type(serializer)
            self.serializer_name = f"custom:{cls.__module__}.{cls.__qualname__}"
        else:
            raise _bad("serializer", serializer, "'msgpack', 'json', 'pickle' or a Serializer")
        self._ser_fmt = fmt

        self._compress: Callable[[bytes], bytes] | None = None
        self._comp_fmt = 0
        if compression == "zlib":
            self._compress, self._comp_fmt = functools.partial(zlib.compress, level=6), FMT_ZLIB
        elif compression == "zstd":
            _zstd()  # fail now, naming the extra to install, not on the first big value
            self._compress, self._comp_fmt = _zstd_compress, FMT_ZSTD
        elif compression is not None and not isinstance(compression, str):
            if not (
                callable(getattr(compression, "compress", None))
                and callable(getattr(compression, "decompress", None))
            ):
                raise _bad("compression", compression, "None, 'zlib', 'zstd' or a Compressor")
            self._compressor = compression
            self._compress = _wrap(compression.compress, "compressor")
            self._comp_fmt = FMT_CUSTOM_COMPRESSION
        elif compression is not None:
            raise _bad("compression", compression, "None, 'zlib', 'zstd' or a Compressor")

        if type(compress_min_size) is not int or compress_min_size < 0:
            raise _bad("compress_min_size", compress_min_size, "an int >= 0")
        self._min_size = compress_min_size

        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None and (not isinstance(secret, bytes) or not secret):
            raise _bad("secret", secret, "None or a non-empty bytes or str")
        self._secret: bytes | None = secret

        self._loads: Callable[[bytes], Any] | None = None  # pickle/custom only
        if fmt == FMT_MSGPACK:
            self._dumps: Callable[[Any], bytes] = _msgpack_dumps
        elif fmt == FMT_JSON:
            self._dumps = _wrap(_json_pack, "JSON encoding")
        elif fmt == FMT_PICKLE:
            self._dumps = _wrap(lambda v: pickle.dumps(v, protocol=5), "pickle")
            self._loads = _wrap(pickle.loads, "unpickling")
        else:
            custom: Any = self._custom
            self._dumps = _wrap(lambda v: bytes(custom.dumps(v)), self.serializer_name)
            self._loads = _wrap(custom.loads, self.serializer_name)
        self.fast = fmt == FMT_MSGPACK and self._compress is None and secret is None
        #: True when entries are signed (``secret=``): a row must verify to count as present.
        self.signed = secret is not None
        self.msgpack_decode = _unpack

    def encode(self, value: Any, key: bytes) -> tuple[bytes, int]:
        """Return ``(blob, fmt)`` for ``value``; ``key`` (encoded key bytes) feeds the MAC.

        Raises :class:`SerializationError` (naming the type and where it sits) for a value
        the serializer cannot store, and nothing else.
        """
        if self.fast:
            return _msgpack_dumps(value), FMT_MSGPACK
        payload = self._dumps(value)
        fmt = self._ser_fmt
        if self._compress is not None and len(payload) >= self._min_size:
            packed = self._compress(payload)
            if len(packed) < len(payload):
                payload, fmt = packed, fmt | self._comp_fmt
        if self._secret is not None:
            fmt |= FMT_SIGNED
            payload += self._mac(payload, fmt, key)
        return payload, fmt

    def encode_int(self, value: int, key: bytes | None = None) -> tuple[bytes, int]:
        """Encode an int exactly as :meth:`encode` would (the ``incr`` fast path).

        ``key`` is needed only when the codec has a secret, to sign the entry.
        """
        if self.fast and type(value) is int and _INT_MIN <= value <= _INT_MAX:
            return _pack(value), FMT_MSGPACK
        if key is None and self._secret is not None:
            raise TypeError("encode_int() needs key= when the codec signs entries")
        return self.encode(value, key or b"")

    def decode(self, blob: bytes, fmt: int, key: bytes, type: Any = None) -> Any:
        """Return the value stored as ``(blob, fmt)`` under ``key``.

        With ``type=``, decode into that type (a Struct, a dataclass, ``list[Struct]``...).
        Raises :class:`InvalidSignature` when the codec has a secret and the entry is unsigned
        or tampered, :class:`TypeMismatch` when the value does not fit ``type``, and
        :class:`SerializationError` for undecodable bytes or a pickle row read by a codec
        whose serializer is not pickle (never unpickled).
        """
        if fmt == FMT_MSGPACK and type is None and self._secret is None:
            try:
                return _unpack(blob)
            except (
                msgspec.DecodeError,
                RecursionError,
                UnicodeDecodeError,
                TypeError,
                ValueError,
            ) as exc:
                raise SerializationError(f"undecodable MessagePack entry: {exc}") from exc
        if fmt & FMT_SIGNED:
            if len(blob) < _MAC_SIZE:
                raise (InvalidSignature if self._secret else SerializationError)(
                    "signed entry is too short to hold its MAC"
                )
            blob, mac = blob[:-_MAC_SIZE], blob[-_MAC_SIZE:]
            # Without a secret the MAC cannot be checked; the entry is then trusted like
            # every unsigned entry of a cache that has no secret.
            if self._secret is not None and not hmac.compare_digest(mac, self._mac(blob, fmt, key)):
                raise InvalidSignature("entry MAC does not verify")
        elif self._secret is not None:
            raise InvalidSignature("entry is not signed, but the cache has a secret")
        if fmt >> 9:
            raise SerializationError(f"unknown format flags {fmt:#x}")
        comp = fmt & _COMP_MASK
        if comp:
            blob = self._decompress(blob, comp)
        return self._deserialize(blob, fmt & _SER_MASK, type)

    def _mac(self, payload: bytes, fmt: int, key: bytes) -> bytes:
        assert self._secret is not None
        msg = b"".join((_MAC_HEAD.pack(len(key), fmt), key, payload))
        return hmac.digest(self._secret, msg, "sha256")

    def _decompress(self, data: bytes, comp: int) -> bytes:
        if comp == FMT_ZLIB:
            decompress: Callable[[bytes], bytes] = zlib.decompress
        elif comp == FMT_ZSTD:
            decompress = _zstd_decompress
        elif comp == FMT_CUSTOM_COMPRESSION and self._compressor is not None:
            decompress = self._compressor.decompress
        else:
            raise SerializationError(f"entry uses compression {comp:#x}, not configured here")
        try:
            return decompress(data)
        except ConfigurationError as exc:  # zstd row, zstandard missing: not a bad option
            raise SerializationError(str(exc)) from None
        except Exception as exc:
            raise SerializationError(f"entry does not decompress: {exc}") from exc

    def _deserialize(self, data: bytes, ser: int, tp: Any) -> Any:
        if ser == FMT_MSGPACK or ser == FMT_JSON:
            loads = _unpack if ser == FMT_MSGPACK else _json_unpack
            try:
                if tp is None:
                    return loads(data)
                try:
                    return _typed_decoder(ser, tp)(data)
                except msgspec.ValidationError:
                    # A tuple/set/... stored as an extension, or plain values into a Struct:
                    # decode faithfully, then let msgspec convert.
                    return _convert(loads(data), tp)
            except (
                msgspec.DecodeError,
                RecursionError,
                UnicodeDecodeError,
                TypeError,
                ValueError,
            ) as exc:
                raise SerializationError(f"undecodable entry: {exc}") from exc
        # Never unpickle unless pickle is the configured serializer: unpickling runs code.
        if ser != self._ser_fmt or self._loads is None:
            raise SerializationError(
                f"entry was written by serializer {ser} and cannot be read with "
                f"serializer={self.serializer_name!r}"
            )
        obj = self._loads(data)
        return obj if tp is None else _convert(obj, tp)


def _bad(option: str, value: Any, allowed: str) -> ConfigurationError:
    return ConfigurationError(f"{option}={value!r} is not valid; expected {allowed}")
