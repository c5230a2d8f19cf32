"""Key validation, stable encoding and shard routing.

A key is encoded with MessagePack, which keeps its type: ``1``, ``1.0``, ``"1"`` and ``b"1"``
encode to four different byte strings, and a tuple to an array of its encoded items. The
encoding (not Python's randomized ``hash()``) is what SQLite stores and what picks the shard,
so every process and every run agrees on where a key lives.
"""

from __future__ import annotations

import zlib
from typing import Any

import msgspec

__all__ = ["decode_key", "encode_key", "shard_of"]

_BIGINT_EXT = 1
# A str that is not valid Unicode (a lone surrogate, as os.fsdecode makes of undecodable
# file names) has no MessagePack str encoding: it is stored as its surrogatepass UTF-8.
_SURROGATE_EXT = 2
_encode = msgspec.msgpack.Encoder().encode


def _ext_hook(code: int, data: memoryview) -> Any:
    if code == _BIGINT_EXT:
        return int(bytes(data))
    if code == _SURROGATE_EXT:
        return bytes(data).decode("utf-8", "surrogatepass")
    raise TypeError(f"unknown key extension {code}")


_decode = msgspec.msgpack.Decoder(ext_hook=_ext_hook).decode
_SCALARS = (str, bytes, int, float)


def _check(key: Any, depth: int = 0) -> None:
    kind = type(key)
    if kind is tuple:
        if depth > 32:
            raise TypeError("cache key tuples may nest at most 32 levels deep")
        for item in key:
            _check(item, depth + 1)
    elif not isinstance(key, _SCALARS):
        raise TypeError(
            f"unsupported cache key type {kind.__name__!r}: keys are str, bytes, int, float "
            "or tuples of these"
        )


def encode_key(key: Any) -> bytes:
    """Return the stable byte encoding of ``key``; ``TypeError`` for an unsupported type."""
    kind = type(key)
    try:
        # Fast path: the four scalar types by identity (subclasses such as IntEnum, StrEnum
        # or bool take the checked path below, so they are validated and normalized).
        if kind is str or kind is bytes or kind is float:
            return _encode(key)
        _check(key)
        return _encode(_widen(key)) if kind is tuple else _encode_scalar(key)
    except UnicodeEncodeError:
        return _encode(_widen(key, surrogates=True))


def _encode_scalar(key: Any) -> bytes:
    try:
        return _encode(_plain(key))
    except OverflowError:
        # Past 64 bits MessagePack has no int: a private ext keeps huge ints distinct keys.
        return _encode(_bigint(key))


def _plain(key: Any) -> Any:
    """A subclass of str, bytes or float as its base type (an enum member keys as its
    value, as msgspec encodes it); ints keep theirs: ``True`` is not the key ``1``."""
    if isinstance(key, str) and type(key) is not str:
        return str.__str__(key)
    if isinstance(key, bytes) and type(key) is not bytes:
        return bytes(key)
    if isinstance(key, float) and type(key) is not float:
        return float(key)
    return key


def _bigint(key: int) -> msgspec.msgpack.Ext:
    return msgspec.msgpack.Ext(_BIGINT_EXT, str(int(key)).encode())


def _widen(key: Any, *, surrogates: bool = False) -> Any:
    if type(key) is tuple:
        return [_widen(item, surrogates=surrogates) for item in key]
    if isinstance(key, int) and not -(2**63) <= key < 2**64:
        return _bigint(key)
    key = _plain(key)
    if surrogates and type(key) is str:
        try:
            key.encode()
        except UnicodeEncodeError:
            return msgspec.msgpack.Ext(_SURROGATE_EXT, key.encode("utf-8", "surrogatepass"))
    return key


def _tuplify(value: Any) -> Any:
    if type(value) is list:
        return tuple(_tuplify(item) for item in value)
    return value


def decode_key(data: bytes) -> Any:
    """Inverse of :func:`encode_key` (arrays come back as tuples)."""
    return _tuplify(_decode(data))


def shard_of(encoded: bytes, shards: int) -> int:
    """The shard index of an encoded key: CRC-32, stable across processes and runs."""
    return zlib.crc32(encoded) % shards
