"""A failing cache is skipped for a moment: the HTTP integrations' circuit breaker.

A shard locked by another process (a long ``vacuum()``, a stuck writer) makes every cache
call wait its bound (``lock_timeout``) before it fails open. Without memory of that, every
request to the middleware or the session would pay the wait again. After a failure the
integrations go straight to the app or the network for :data:`COOL_OFF` seconds; the first
request after that tries the cache again.
"""

from __future__ import annotations

import time
from typing import Final

__all__ = ["COOL_OFF", "Breaker"]

COOL_OFF: Final = 2.0  # seconds a failed cache is skipped


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
