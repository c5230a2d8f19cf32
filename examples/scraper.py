"""A scraper crawls a slow site twice through CachedSession: the second run is instant.

Run with ``python examples/scraper.py`` (no network needed: the "site" is an aiohttp
server this script starts on 127.0.0.1 and stops at the end). Each page takes 0.2 s to
render and links to a few others. Both crawls share one cache directory: a temporary one,
removed when the script ends, or the directory given as the first argument, kept. The site
listens on a new port each time the script runs, and a URL is a cache key, so a second
invocation on the same directory starts cold again. The first crawl fetches every page, the
second, with a new cache object and a new session as a new run of the scraper
would have, answers every page from the cache and never touches the site.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import time
from collections import Counter

from aiohttp import web

from shardcache import AsyncCache
from shardcache.aiohttp import CachedSession

PAGES = 40
RENDER_TIME = 0.2  # seconds per page: a slow site
CONCURRENCY = 10
LINK = re.compile(r'href="(/page/\d+)"')


def make_site(hits: Counter[str]) -> web.Application:
    async def page(request: web.Request) -> web.Response:
        number = int(request.match_info["number"])
        hits[request.path] += 1
        await asyncio.sleep(RENDER_TIME)
        links = "".join(f'<a href="/page/{(number * 7 + k) % PAGES}">next</a>' for k in (1, 2, 3))
        html = f"<html><h1>Page {number}</h1>{links}</html>"
        # An ETag lets a stale page be revalidated with a 304 instead of refetched.
        return web.Response(text=html, content_type="text/html", headers={"ETag": f'"{number}"'})

    app = web.Application()
    app.router.add_get("/page/{number:\\d+}", page)
    return app


async def crawl(session: CachedSession, start: str) -> tuple[int, int]:
    """Breadth-first crawl from ``start``; returns (pages, pages served from the cache)."""
    seen = {start}
    frontier = [start]
    limit = asyncio.Semaphore(CONCURRENCY)
    from_cache = 0

    async def fetch(url: str) -> list[str]:
        nonlocal from_cache
        async with limit, session.get(url) as resp:
            resp.raise_for_status()
            from_cache += resp.from_cache
            return [
                str(resp.url.join(resp.url.with_path(p))) for p in LINK.findall(await resp.text())
            ]

    while frontier:
        found = await asyncio.gather(*(fetch(url) for url in frontier))
        frontier = list(dict.fromkeys(url for links in found for url in links if url not in seen))
        seen.update(frontier)
    return len(seen), from_cache


async def main(directory: str) -> None:
    hits: Counter[str] = Counter()
    runner = web.AppRunner(make_site(hits))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)  # an ephemeral port on the loopback only
    await site.start()
    host, port = runner.addresses[0][:2]
    start = f"http://{host}:{port}/page/0"
    try:
        for run in (1, 2):
            before = sum(hits.values())
            began = time.perf_counter()
            async with (
                AsyncCache(directory) as cache,
                CachedSession(cache=cache, ttl=3600) as session,
            ):
                pages, cached = await crawl(session, start)
            elapsed = time.perf_counter() - began
            requests = sum(hits.values()) - before
            print(
                f"run {run}: {pages} pages in {elapsed * 1e3:7.1f} ms, "
                f"{cached:2d} from the cache, {requests:2d} requests reached the site"
            )
    finally:
        await runner.cleanup()
    print(f"cache directory: {directory}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(tmp))
