"""Background refreshes of stale entries that were just served (stale-while-revalidate,
RFC 5861 §3), for :class:`~shardcache.asgi.CacheMiddleware`.

One refresh per key at a time in a process, and one across processes (the refresh goes
through the same single flight as a miss). Each is bounded by ``lock_timeout`` and owned:
the middleware cancels the ones still running when the app's lifespan shuts down, before
the app closes its cache.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ._asgi_exchange import Message, Receive, Scope
from ._http import CachePolicy, StoredResponse
from ._stampede import single_flight

if TYPE_CHECKING:
    from .asgi import CacheMiddleware

__all__ = ["Refresher"]

logger = logging.getLogger("shardcache.asgi")


class Refresher:
    """The middleware's background refreshes; see the module docstring."""

    def __init__(self, middleware: CacheMiddleware, lock_timeout: float) -> None:
        self._middleware = middleware
        self._lock_timeout = lock_timeout
        self._running: dict[str, asyncio.Task[None]] = {}

    def start(
        self, scope: Scope, key: str, flight_key: str, policy: CachePolicy, stale: StoredResponse
    ) -> None:
        """Refresh ``flight_key`` in the background, unless that is already under way; the
        app is asked with ``stale``'s validators, so a 304 is enough."""
        if flight_key in self._running:
            return
        task = asyncio.get_running_loop().create_task(
            self._refresh(dict(scope), key, flight_key, policy, stale)
        )
        self._running[flight_key] = task
        task.add_done_callback(lambda _: self._running.pop(flight_key, None))

    async def _refresh(
        self,
        scope: Scope,
        key: str,
        flight_key: str,
        policy: CachePolicy,
        stale: StoredResponse,
    ) -> None:
        middleware = self._middleware
        requested = False

        async def receive() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # never disconnects; bounded by the timeout below
            raise AssertionError("unreachable")

        async def discard(message: Message) -> None:
            pass

        def lookup() -> Awaitable[Any]:  # another process may have refreshed it already
            return middleware.lookup_usable(key, "GET", scope["headers"], policy)

        async def produce() -> tuple[Any, bool]:
            exchange = await middleware.fetch(
                scope, receive, discard, key, policy, store=True, stale=stale
            )
            return exchange.stored, exchange.stored is not None

        try:
            await asyncio.wait_for(
                single_flight(
                    middleware.cache, flight_key, lookup, produce, lock_timeout=self._lock_timeout
                ),
                self._lock_timeout,
            )
        except Exception as exc:  # the app's or the cache's: the stale entry stays
            logger.warning("shardcache background refresh of %s failed: %r", key, exc)

    def lifespan_receive(self, receive: Receive) -> Receive:
        """``receive`` for the app's lifespan: stops the refreshes before shutdown."""

        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await self.stop()
            return message

        return wrapped

    async def stop(self) -> None:
        """Cancel the refreshes under way and wait for them (bounded)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self._lock_timeout)
