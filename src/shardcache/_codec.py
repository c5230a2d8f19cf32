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
so these are stored as MessagePack extension types (``_codec_ext``), whose codes are part of
the file format and must never change. A row written by pickle is only unpickled by a codec whose
serializer is pickle: the default codec never executes a planted pickle payload.
"""

from __future__ import annotations

import functools
import hmac
import importlib
import pickle
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Any, Final, Protocol, runtime_checkable

import msgspec

from ._codec_ext import (
    _INT_MAX,
    _INT_MIN,
    _PLAIN,
    _ext_hook,
    _pack,
    _prep,
    _type_name,
    _Unencodable,
    _unpack,
)
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


# --- encoding: the fast check, then the walk (_codec_ext) that makes lossy types extensions
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


_json_pack: Callable[[Any], bytes] = msgspec.json.Encoder().encode
_json_unpack: Callable[[Any], Any] = msgspec.json.Decoder().decode
_TYPED: dict[tuple[int, Any], Callable[[bytes], Any]] = {}


def check_type(tp: Any) -> None:
    """Raise TypeError unless ``tp`` is a type msgspec can decode into (``get(type=)``)."""
    _typed_decoder(FMT_MSGPACK, tp)


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
            # Outside the try: a bad type= is the caller's error, not an undecodable entry.
            typed = None if tp is None else _typed_decoder(ser, tp)
            try:
                if typed is None:
                    return loads(data)
                try:
                    return typed(data)
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
