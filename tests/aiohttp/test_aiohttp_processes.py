"""Cross-process claims, with real processes on one cache directory (API.md §4): a hit
survives a new process, and concurrent requests from several processes reach the origin
once. The children run ``aiohttp_child.py``; every wait on them is bounded."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp_origin import WAIT, Origin, counting, fetch

from shardcache import AsyncCache
from shardcache.aiohttp import CachedSession

CHILD = Path(__file__).with_name("aiohttp_child.py")
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio"])  # the claim is about processes


class Child:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def ready(self) -> None:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), WAIT)
        assert line.strip() == b"ready", line

    async def run(self) -> list[tuple[bool, str]]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(b"go\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), WAIT)
        await asyncio.wait_for(self.process.wait(), WAIT)
        assert self.process.returncode == 0, line
        return [(bool(hit), body) for hit, body in json.loads(line)]


@pytest.fixture
async def spawn(cache_dir: Path) -> AsyncIterator[Callable[[str, int], Awaitable[Child]]]:
    children: list[Child] = []

    async def start(url: str, count: int) -> Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            str(cache_dir),
            url,
            str(count),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        child = Child(process)
        children.append(child)
        return child

    yield start
    for child in children:
        if child.process.returncode is None:
            child.process.kill()
            await asyncio.wait_for(child.process.wait(), WAIT)


async def test_a_hit_survives_a_new_process(
    origin: Origin,
    make_session: Callable[..., CachedSession],
    cache: AsyncCache,
    spawn: Callable[[str, int], Awaitable[Child]],
) -> None:
    counting(origin, "/page")
    session = make_session()
    await fetch(session, origin.url("/page"))
    await cache.aclose()  # committed; the child opens the directory on its own
    child = await spawn(origin.url("/page"), 1)
    await child.ready()
    assert await child.run() == [(True, "v1")]
    assert origin.hits["/page"] == 1


async def test_concurrent_processes_reach_the_origin_once(
    origin: Origin, spawn: Callable[[str, int], Awaitable[Child]], cache_dir: Path
) -> None:
    @origin.route("/slow")
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(0.5)  # a slow origin: every unprotected request would get here
        return web.Response(text="payload")

    # The shards exist before the children start: creating one directory from three
    # processes at the same instant is the engine's own test (it can fail with "database
    # is locked" from PRAGMA journal_mode=WAL); this one is about the requests.
    async with AsyncCache(cache_dir):
        pass
    children = [await spawn(origin.url("/slow"), 10) for _ in range(3)]
    await asyncio.gather(*(child.ready() for child in children))
    results = await asyncio.gather(*(child.run() for child in children))
    assert origin.hits["/slow"] == 1
    flat = [result for batch in results for result in batch]
    assert {body for _, body in flat} == {"payload"}
    assert sum(not hit for hit, _ in flat) == 1  # only the request that fetched it


async def test_the_scraper_example_runs_and_its_second_run_is_all_hits(tmp_path: Path) -> None:
    example = Path(__file__).parents[2] / "examples" / "scraper.py"
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(example), str(tmp_path / "cache"), stdout=asyncio.subprocess.PIPE
    )
    output, _ = await asyncio.wait_for(process.communicate(), WAIT * 3)
    assert process.returncode == 0
    lines = output.decode().splitlines()
    assert "0 from the cache, 40 requests reached the site" in lines[0]
    assert "40 from the cache,  0 requests reached the site" in lines[1]
