"""Options of :class:`AsyncCache`, checked once at construction.

Every bad value raises :class:`ConfigurationError` naming the option, the value and what is
allowed, so a typo fails at start-up instead of at the first write.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from ._errors import ConfigurationError
from ._types import DEFAULT

__all__ = [
    "Durability",
    "Eviction",
    "OnCorrupt",
    "Options",
    "check_compute",
    "check_lock_timeout",
    "check_ttl",
    "default_directory",
    "expire_at",
]

Eviction = Literal["least-recently-stored", "least-recently-used", "least-frequently-used", "none"]
Durability = Literal["normal", "full", "off"]
OnCorrupt = Literal["raise", "reset"]


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigurationError(
            f"{name}={value!r} is not allowed; choose one of: {', '.join(map(repr, allowed))}"
        )


def _size(name: str, value: Any, *, allow_none: bool = False, minimum: int = 0) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        extra = " or None" if allow_none else ""
        raise ConfigurationError(f"{name}={value!r}: expected an int >= {minimum}{extra}")
    return value


def _writer_threads(value: Any) -> int:
    """``None`` picks what benchmarks/ measured best on 2 cores: one writer thread for all
    shards (threads per shard fight over the GIL). With ``durability="full"`` too: the
    executor fsyncs the shards of a round in parallel itself."""
    if value is None:
        return 1
    return _size("writer_threads", value, minimum=1) or 1


def check_ttl(ttl: Any, name: str = "ttl") -> float | None:
    """Validate a ttl in seconds: ``None`` (never expires) or a finite or infinite float >= 0."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise ConfigurationError(f"{name}={ttl!r}: expected seconds as a number, or None")
    try:
        ttl = float(ttl)
    except OverflowError:
        return None  # an int beyond float range: as good as never expiring
    if math.isnan(ttl) or ttl < 0:
        raise ConfigurationError(f"{name}={ttl!r}: expected seconds >= 0 (or None for no expiry)")
    return None if math.isinf(ttl) else ttl


def check_lock_timeout(value: Any) -> float:
    """Validate ``lock_timeout`` (``@acached``, ``get_or_set``, the middleware, the session):
    a finite number of seconds > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigurationError(f"lock_timeout={value!r}: expected a finite number of seconds > 0")
    return float(value)


def check_compute(ttl: Any, tag: Any, stale_ttl: Any, lock_timeout: Any) -> float:
    """Validate what ``@acached`` and ``get_or_set`` store with, before anything runs (a
    factory with side effects must not run for a write that would then be refused);
    returns ``lock_timeout`` as a float."""
    if ttl is not DEFAULT:
        check_ttl(ttl)
    if check_ttl(stale_ttl, "stale_ttl") is None:
        raise ConfigurationError(
            f"stale_ttl={stale_ttl!r}: expected a finite number of seconds >= 0"
        )
    if tag is not None and type(tag) is not str:
        raise TypeError(f"tag must be a str or None, not {type(tag).__name__}")
    return check_lock_timeout(lock_timeout)


def expire_at(ttl: Any, default_ttl: float | None, now: float) -> float | None:
    """The Unix time a write with ``ttl`` expires (``None``: never); ``DEFAULT`` -> default."""
    if ttl is DEFAULT:
        return None if default_ttl is None else now + default_ttl
    kind = type(ttl)
    if (kind is int or kind is float) and 0 <= ttl < 1e300:
        plain: float = ttl  # the common case: no check_ttl calls (NaN, inf, bool fail here)
        return now + plain
    seconds = check_ttl(ttl)
    return None if seconds is None else now + seconds


def default_directory() -> Path:
    """``$SHARDCACHE_DIR``, else the platform's user cache directory + ``shardcache/default``."""
    env = os.environ.get("SHARDCACHE_DIR")
    if env:
        return Path(env)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "shardcache" / "default"


@dataclass(frozen=True)
class Options:
    """The validated options of one cache (see :class:`AsyncCache` for their meaning)."""

    directory: Path
    shards: int
    size_limit: int | None
    eviction: Eviction
    default_ttl: float | None
    compress_min_size: int
    min_file_size: int
    durability: Durability
    near_cache: int
    on_corrupt: OnCorrupt
    writer_threads: int

    @classmethod
    def build(
        cls,
        directory: str | os.PathLike[str] | None,
        *,
        shards: Any,
        size_limit: Any,
        eviction: Any,
        default_ttl: Any,
        compress_min_size: Any,
        min_file_size: Any,
        durability: Any,
        near_cache: Any,
        on_corrupt: Any,
        writer_threads: Any,
    ) -> Options:
        if directory is None:
            path = default_directory()
        elif isinstance(directory, (str, os.PathLike)):
            path = Path(directory)
        else:
            raise ConfigurationError(f"directory={directory!r}: expected a path or None")
        _choice("eviction", eviction, get_args(Eviction))
        _choice("durability", durability, get_args(Durability))
        _choice("on_corrupt", on_corrupt, get_args(OnCorrupt))
        shard_count = _size("shards", shards, minimum=1)
        if shard_count is not None and shard_count > 256:
            raise ConfigurationError(f"shards={shards!r}: expected 1 to 256")
        return cls(
            directory=path.expanduser(),
            shards=shards,
            size_limit=_size("size_limit", size_limit, allow_none=True, minimum=1),
            eviction=eviction,
            default_ttl=check_ttl(default_ttl, "default_ttl"),
            compress_min_size=_size("compress_min_size", compress_min_size) or 0,
            min_file_size=_size("min_file_size", min_file_size, minimum=1) or 1,
            durability=durability,
            near_cache=_size("near_cache", near_cache) or 0,
            on_corrupt=on_corrupt,
            writer_threads=_writer_threads(writer_threads),
        )
