"""The app the real-server tests run under uvicorn (``--app-dir tests/asgi``).

``/compute/{n}`` takes ``$SLOW_SECONDS``, appends one byte to ``$BODY_RUNS`` (so the test
counts how many times the body ran, across processes) and says which process computed it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI

from shardcache import AsyncCache
from shardcache.asgi import CacheMiddleware, cache_for

cache = AsyncCache(os.environ["SHARDCACHE_DIR"], shards=2)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with cache:
        yield


app = FastAPI(lifespan=lifespan)
app.add_middleware(CacheMiddleware, cache=cache)


@app.get("/compute/{n}", dependencies=[Depends(cache_for(60))])
async def compute(n: int) -> dict[str, Any]:
    await asyncio.sleep(float(os.environ.get("SLOW_SECONDS", "0.3")))
    fd = os.open(os.environ["BODY_RUNS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    return {"n": n, "pid": os.getpid()}


@app.get("/ready")
async def ready() -> dict[str, int]:
    return {"pid": os.getpid()}
