"""The exceptions shardcache raises.

Every error is a :class:`CacheError`; where a builtin fits, the error also subclasses it so
that generic handlers (``except TypeError``, ``except TimeoutError``) keep working::

    CacheError
     ├── CacheClosedError                      the cache was closed with aclose()
     ├── CacheCorruptError                     a shard or value file is not readable as ours
     ├── SerializationError (+ TypeError)      a value the serializer cannot encode
     ├── ConfigurationError (+ ValueError)     a bad option or argument value
     └── CacheTimeoutError (+ TimeoutError)    a bounded wait ran out

SQLite's own exceptions never reach a caller bare: they are wrapped and kept as ``__cause__``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "CacheClosedError",
    "CacheCorruptError",
    "CacheError",
    "CacheTimeoutError",
    "ConfigurationError",
    "SerializationError",
    "observed",
]


class CacheError(Exception):
    """Base class of every error raised by shardcache."""


class CacheClosedError(CacheError):
    """The cache was used after :meth:`AsyncCache.aclose`."""


class CacheCorruptError(CacheError):
    """A file of the cache is corrupt or is not a shardcache file.

    ``path`` names the file, so an operator can inspect, move or delete it.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class SerializationError(CacheError, TypeError):
    """A value could not be encoded (nothing was written) or decoded."""


class ConfigurationError(CacheError, ValueError):
    """A bad option or argument value: the message names it and the allowed values."""


class CacheTimeoutError(CacheError, TimeoutError):
    """A bounded wait (a lock, a lease, a busy database) ran out."""


def observed(future: asyncio.Future[Any]) -> None:
    """A done-callback marking a future's exception as retrieved: whoever awaited it has
    reported it, and one nobody awaits (all gave up, or it runs on in the background)
    logs no "exception was never retrieved"."""
    if not future.cancelled():
        future.exception()
