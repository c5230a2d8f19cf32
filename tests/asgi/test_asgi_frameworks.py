"""CacheMiddleware in Starlette and FastAPI apps: add_middleware, streaming responses,
per-route freshness (``cache_for``, a route's own Cache-Control) and the example app with
its lifespan."""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi import Depends, FastAPI, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route

from shardcache import AsyncCache
from shardcache.asgi import CacheMiddleware, cache_for

from .origin import client, lifespan

BEARER = Depends(HTTPBearer())

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi_app.py"


def starlette_app(cache: AsyncCache, **options: object) -> tuple[Starlette, dict[str, int]]:
    calls = {"text": 0, "stream": 0, "big": 0}

    async def text(request: Request) -> PlainTextResponse:
        calls["text"] += 1
        return PlainTextResponse("hi", headers={"Cache-Control": "public, max-age=60"})

    async def stream(request: Request) -> StreamingResponse:
        calls["stream"] += 1

        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"a", b"b", b"c"):
                yield part

        return StreamingResponse(chunks(), headers={"Cache-Control": "max-age=60"})

    async def big(request: Request) -> StreamingResponse:
        calls["big"] += 1

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b"x" * 1000

        return StreamingResponse(chunks(), headers={"Cache-Control": "max-age=60"})

    app = Starlette(routes=[Route("/text", text), Route("/stream", stream), Route("/big", big)])
    app.add_middleware(CacheMiddleware, cache=cache, **options)
    return app, calls


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_starlette_add_middleware(cache: AsyncCache) -> None:
    app, calls = starlette_app(cache, max_body_size=5000)
    async with client(app) as http:
        first, second = await http.get("/text"), await http.get("/text")
        head = await http.head("/text")
        streamed = [await http.get("/stream") for _ in range(2)]
        big = [await http.get("/big") for _ in range(2)]
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert head.headers["x-cache"] == "HIT" and head.headers["content-length"] == "2"
    assert [r.content for r in streamed] == [b"abc", b"abc"]
    assert streamed[1].headers["x-cache"] == "HIT"
    assert streamed[1].headers["content-length"] == "3"  # chunked from the app, sized here
    assert [len(r.content) for r in big] == [10_000, 10_000]
    assert calls == {"text": 1, "stream": 1, "big": 2}


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_wrapping_any_asgi_app(cache: AsyncCache) -> None:
    app, calls = starlette_app(cache)
    wrapped = CacheMiddleware(app, cache=cache)  # around the whole app, middleware included
    async with client(wrapped) as http:
        await http.get("/text")
        hit = await http.get("/text")
    # The inner layer (same cache) stepped aside; the outer one stored and served it.
    assert hit.headers.get_list("x-cache") == ["HIT"] and calls["text"] == 1


def fastapi_app(cache: AsyncCache) -> tuple[FastAPI, itertools.count[int]]:
    counter = itertools.count(1)
    app = FastAPI()

    @app.get("/ttl", dependencies=[Depends(cache_for(30))])
    async def with_ttl() -> dict[str, int]:
        return {"n": next(counter)}

    @app.get("/own", dependencies=[Depends(cache_for(30))])
    async def own(response: Response) -> dict[str, int]:
        response.headers["Cache-Control"] = "no-store"  # the route's own word wins
        return {"n": next(counter)}

    @app.get("/nothing")
    async def nothing() -> dict[str, int]:
        return {"n": next(counter)}

    app.add_middleware(CacheMiddleware, cache=cache)
    return app, counter


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_fastapi_cache_for_dependency(cache: AsyncCache) -> None:
    app, _ = fastapi_app(cache)
    async with client(app) as http:
        first, second = await http.get("/ttl"), await http.get("/ttl")
        own = [await http.get("/own") for _ in range(2)]
        nothing = [await http.get("/nothing") for _ in range(2)]
    assert first.headers["cache-control"] == "max-age=30"
    assert second.headers["x-cache"] == "HIT" and second.json() == first.json()
    assert [r.headers["cache-control"] for r in own] == ["no-store", "no-store"]
    assert own[0].json() != own[1].json()
    assert nothing[0].json() != nothing[1].json()  # ttl=0: only explicit freshness


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_cache_for_builds_the_header() -> None:
    app = FastAPI()

    @app.get("/", dependencies=[Depends(cache_for(90, stale_while_revalidate=10))])
    async def index() -> dict[str, str]:
        return {}

    @app.get("/public", dependencies=[Depends(cache_for(90, public=True))])
    async def public() -> dict[str, str]:
        return {}

    async with client(app) as http:
        reply = await http.get("/")
        shared = await http.get("/public")
    assert reply.headers["cache-control"] == "max-age=90, stale-while-revalidate=10"
    assert shared.headers["cache-control"] == "public, max-age=90"


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_cache_for_never_shares_a_page_behind_an_auth_dependency(
    cache: AsyncCache,
) -> None:
    """By default cache_for leaves out ``public``: the response to a request with
    Authorization is neither stored nor answered from the cache, so one user's page never
    reaches another user, nor an anonymous request that the dependency would refuse."""
    app = FastAPI()

    @app.get("/me", dependencies=[Depends(cache_for(60))])
    async def me(cred: HTTPAuthorizationCredentials = BEARER) -> dict[str, str]:
        return {"token": cred.credentials}

    app.add_middleware(CacheMiddleware, cache=cache)
    async with client(app) as http:
        alice = await http.get("/me", headers={"authorization": "Bearer alice"})
        bob = await http.get("/me", headers={"authorization": "Bearer bob"})
        anonymous = await http.get("/me")
    assert alice.json() == {"token": "alice"} and bob.json() == {"token": "bob"}
    assert bob.headers["x-cache"] == "MISS"
    assert anonymous.status_code in (401, 403) and "alice" not in anonymous.text


@pytest.fixture
def example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("SHARDCACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SLOW_SECONDS", "0.01")
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_the_example_app_with_its_lifespan(example: ModuleType) -> None:
    async with lifespan(example.app), client(example.app) as http:  # opens, then closes
        miss, hit = await http.get("/report/3"), await http.get("/report/3")
        assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
        assert hit.json() == miss.json() and miss.json()["square"] == 9
        assert (await http.post("/report/3")).status_code == 200
        assert (await http.get("/report/3")).headers["x-cache"] == "MISS"
        stats = [(await http.get("/admin/stats")).headers["x-cache"] for _ in range(2)]
        assert stats == ["MISS", "MISS"]
        clock = [await http.get("/clock") for _ in range(2)]
        assert clock[1].headers["x-cache"] == "HIT" and clock[0].json() == clock[1].json()
        alice = await http.get("/me", headers={"cookie": "s=alice"})
        bob = await http.get("/me", headers={"cookie": "s=bob"})
        assert (alice.json(), bob.json()) == ({"session": "alice"}, {"session": "bob"})
    assert example.cache._state == "closed"
