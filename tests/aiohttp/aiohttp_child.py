"""A child process of the cross-process CachedSession tests.

``python aiohttp_child.py DIR URL N``: open the cache at ``DIR`` and a CachedSession, print
``ready``, wait for a line on stdin, then GET ``URL`` ``N`` times concurrently and print one
JSON line: ``[[from_cache, body], ...]``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from shardcache import AsyncCache
from shardcache.aiohttp import CachedSession


async def main(directory: str, url: str, count: int) -> None:
    # Open with the shard count the parent created the directory with.
    shards = len(list(Path(directory).glob("shard-*.db"))) or 8
    async with AsyncCache(directory, shards=shards) as cache, CachedSession(cache=cache) as session:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def one() -> tuple[bool, str]:
            async with session.get(url) as resp:
                return resp.from_cache, await resp.text()

        results = await asyncio.gather(*(one() for _ in range(count)))
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
