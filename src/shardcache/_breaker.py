"""A failing cache is skipped for a moment: the HTTP integrations' circuit breaker.

A shard locked by another process (a long ``vacuum()``, a stuck writer) makes every cache
call wait its bound (``lock_timeout``) before it fails open. Without memory of that, every
request to the middleware or the session would pay the wait again. After a failure the
integrations go straight to the app or the network for :data:`COOL_OFF` seconds; the first
request after that tries the cache again.

A cache that is not open yet may wait for a shard another process is creating (up to 30 s);
the integrations and ``@acached`` wait for that open no longer than their own
``lock_timeout`` (:func:`open_within`), and fail open after it.
"""

from __future__ import annotations

import time
from typing import Any, Final

__all__ = ["COOL_OFF", "Breaker", "open_within", "opened"]

COOL_OFF: Final = 2.0  # seconds a failed cache is skipped


def opened(cache: Any) -> bool:
    """False for an ``AsyncCache`` that is not open yet (any other backend: True)."""
    return getattr(cache, "_ready", True) is not False


async def open_within(cache: Any, limit: float) -> None:
    """Open ``cache`` (an ``AsyncCache`` not open yet), waiting ``limit`` seconds at most.

    Raises ``CacheTimeoutError`` after that; the open goes on for the next callers.
    """
    ensure_open = getattr(cache, "_ensure_open", None)
    if ensure_open is not None:
        await ensure_open(limit)


class Breaker:
    """Remembers a cache failure for ``cool_off`` seconds."""

    __slots__ = ("_cool_off", "_until")

    def __init__(self, cool_off: float | None = None) -> None:
        self._cool_off = COOL_OFF if cool_off is None else cool_off
        self._until = 0.0

    def tripped(self) -> bool:
        """True while the last failure is younger than ``cool_off``: skip the cache."""
        return self._until != 0.0 and time.monotonic() < self._until

    def trip(self) -> None:
        """A cache call failed."""
        self._until = time.monotonic() + self._cool_off
