"""A scriptable raw ASGI origin for the middleware tests, and a client around it.

:class:`Origin` answers each path with the :class:`Reply` the test set for it (or a
callable building one from the scope), counts the calls per path, keeps the scopes it saw
and tracks how many requests are inside it at once. No framework: the middleware's core
is pure ASGI, so the origin is too.

:class:`BackendProxy` is a :class:`~shardcache.CacheBackend` passing every operation to a
real cache through one method, for backends that count, fail or hold operations.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

from shardcache.asgi import CacheMiddleware

Scope = dict[str, Any]


@dataclasses.dataclass
class Reply:
    """A response: status, header lines (``"Name: value"``, order kept) and body chunks."""

    status: int = 200
    headers: list[str] = dataclasses.field(default_factory=list)
    chunks: list[bytes] = dataclasses.field(default_factory=lambda: [b"hello"])
    delay: float = 0.0
    error: BaseException | None = None

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        pairs = []
        for line in self.headers:
            name, _, value = line.partition(":")
            pairs.append((name.strip().encode("latin-1"), value.strip().encode("latin-1")))
        return pairs


class Origin:
    """The application behind the cache."""

    def __init__(self, default: Reply | None = None) -> None:
        self.routes: dict[str, Reply | Callable[[Scope], Reply]] = {}
        self.default = default or Reply(headers=["Cache-Control: max-age=60"])
        self.calls: collections.Counter[str] = collections.Counter()
        self.scopes: list[Scope] = []
        self.inside = 0
        self.most_inside = 0
        self._called = asyncio.Event()

    def route(self, path: str, reply: Reply | Callable[[Scope], Reply]) -> None:
        self.routes[path] = reply

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message["type"].rpartition(".")[2]
                await send({"type": f"lifespan.{kind}.complete"})
                if kind == "shutdown":
                    return
        path = scope["path"]
        self.calls[path] += 1
        self.scopes.append(scope)
        self._called.set()
        reply = self.routes.get(path, self.default)
        if callable(reply):
            reply = reply(scope)
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.error is not None:
                raise reply.error
            await send(
                {
                    "type": "http.response.start",
                    "status": reply.status,
                    "headers": reply.raw_headers(),
                }
            )
            for index, chunk in enumerate(reply.chunks):
                more = index < len(reply.chunks) - 1
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if not reply.chunks:
                await send({"type": "http.response.body", "body": b""})
        finally:
            self.inside -= 1

    async def wait_calls(self, path: str, count: int, timeout: float = 5.0) -> None:
        """Wait (bounded) until ``path`` was called ``count`` times."""
        deadline = time.monotonic() + timeout
        while self.calls[path] < count:
            self._called.clear()
            left = deadline - time.monotonic()
            assert left > 0, f"{path} called {self.calls[path]} times, wanted {count}"
            try:
                await asyncio.wait_for(self._called.wait(), left)
            except asyncio.TimeoutError:
                pass


def client(app: Any, **kwargs: Any) -> httpx.AsyncClient:
    """An httpx client talking to ``app`` in-process (``httpx.ASGITransport``)."""
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", **kwargs)


def cached(origin: Origin, cache: Any, **options: Any) -> tuple[CacheMiddleware, httpx.AsyncClient]:
    """The middleware around ``origin`` and a client for it."""
    middleware = CacheMiddleware(origin, cache=cache, **options)
    return middleware, client(middleware)


def http_date(offset: float = 0.0) -> str:
    """An IMF-fixdate ``offset`` seconds from now (negative: in the past)."""
    from email.utils import formatdate

    return formatdate(time.time() + offset, usegmt=True)


@contextlib.asynccontextmanager
async def lifespan(app: Any, timeout: float = 10.0) -> AsyncIterator[None]:
    """Run ``app``'s ASGI lifespan around the block (startup before, shutdown after)."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.ensure_future(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    await inbox.put({"type": "lifespan.startup"})
    assert (await asyncio.wait_for(outbox.get(), timeout))["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        message = await asyncio.wait_for(outbox.get(), timeout)
        assert message["type"] == "lifespan.shutdown.complete", message
        await asyncio.wait_for(task, timeout)


class BackendProxy:
    """A CacheBackend forwarding each Protocol operation to ``inner`` through :meth:`call`;
    subclasses override ``call`` to count, fail or hold operations."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return await getattr(self.inner, name)(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # what is not an operation: the inner cache's
        return getattr(self.inner, name)

    # The Protocol's methods, so that isinstance(..., CacheBackend) holds.
    async def get(self, *a: Any, **k: Any) -> Any:
        return await self.call("get", *a, **k)

    async def set(self, *a: Any, **k: Any) -> Any:
        return await self.call("set", *a, **k)

    async def add(self, *a: Any, **k: Any) -> Any:
        return await self.call("add", *a, **k)

    async def delete(self, *a: Any, **k: Any) -> Any:
        return await self.call("delete", *a, **k)

    async def evict(self, *a: Any, **k: Any) -> Any:
        return await self.call("evict", *a, **k)

    async def get_or_set(self, *a: Any, **k: Any) -> Any:
        return await self.call("get_or_set", *a, **k)

    async def get_entry(self, *a: Any, **k: Any) -> Any:
        return await self.call("get_entry", *a, **k)

    async def acquire_lease(self, *a: Any, **k: Any) -> Any:
        return await self.call("acquire_lease", *a, **k)

    async def release_lease(self, *a: Any, **k: Any) -> Any:
        return await self.call("release_lease", *a, **k)

    async def aclose(self) -> None:
        await self.inner.aclose()
