"""A FastAPI app behind CacheMiddleware: a slow endpoint computed once, then served from
the cache by every worker process.

Run it from the repository's root with four workers sharing one cache directory::

    SHARDCACHE_DIR=/tmp/shardcache-demo uvicorn fastapi_app:app --app-dir examples --workers 4

then::

    curl -i localhost:8000/report/42              # X-Cache: MISS, about one second
    curl -i localhost:8000/report/42              # X-Cache: HIT, Age: ..., instant
    curl -i -X POST localhost:8000/report/42      # invalidate: the next GET recomputes
    curl -i localhost:8000/clock                  # cached for 5 s (the route says so)
    curl -i localhost:8000/me -H 'Cookie: s=1'    # private: never cached, never shared

Three ways to give a route its freshness lifetime, from the most local:

* the route sets ``Cache-Control`` itself (``/clock``), which always wins;
* the ``cache_for(seconds)`` dependency (``/report/{n}``);
* ``rules={"/path/glob*": seconds}`` on the middleware (``0``: never cache those paths),
  then the middleware's ``ttl`` for responses that say nothing (0 here: not cached).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request, Response

from shardcache import AsyncCache
from shardcache.asgi import CacheMiddleware, cache_for

SLOW_SECONDS = float(os.environ.get("SLOW_SECONDS", "1.0"))

# $SHARDCACHE_DIR, else the platform's user cache directory. Every worker process opens the
# same directory: a response computed by one worker is a HIT in all the others.
cache = AsyncCache()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with cache:  # opened with the app; pending writes flushed and closed at shutdown
        yield


app = FastAPI(lifespan=lifespan)
app.add_middleware(CacheMiddleware, cache=cache, ttl=0, rules={"/admin/*": 0})


@app.get("/report/{n}", dependencies=[Depends(cache_for(60, stale_while_revalidate=30))])
async def report(n: int) -> dict[str, Any]:
    """The slow endpoint: concurrent requests for one n run it once, in all workers."""
    await asyncio.sleep(SLOW_SECONDS)  # a slow query, a call to another service...
    return {"n": n, "square": n * n, "computed_by": os.getpid(), "at": time.time()}


@app.post("/report/{n}")
async def recompute(n: int) -> dict[str, Any]:
    """A successful POST drops the stored GET /report/{n} (RFC 9111 §4.4)."""
    return {"n": n, "invalidated": True}


@app.get("/clock")
async def clock(response: Response) -> dict[str, float]:
    response.headers["Cache-Control"] = "public, max-age=5"
    return {"now": time.time()}


@app.get("/me")
async def me(request: Request, response: Response) -> dict[str, Any]:
    """Built from the session cookie: private, so a shared cache never keeps it."""
    response.headers["Cache-Control"] = "private, max-age=60"
    return {"session": request.cookies.get("s")}


@app.get("/admin/stats")
async def stats() -> dict[str, Any]:
    """Under the rule ``/admin/*: 0``: never cached, whatever it says."""
    return {"cache": repr(await cache.stats())}
