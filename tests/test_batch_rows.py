"""Consecutive plain sets of one batch go to SQLite as multi-row statements (chunks of
``_sql.UPSERT_CHUNKS``): the outcome must be exactly that of one statement per write."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from shardcache import AsyncCache

MakeCache = Callable[..., AsyncCache]


async def test_one_batch_of_mixed_writes_ends_as_if_written_one_by_one(
    make_cache: MakeCache,
) -> None:
    cache = make_cache(shards=1, min_file_size=1024)
    await cache.set("counter", 10)
    expected: dict[str, object] = {}
    lasting: dict[str, bool] = {}  # key -> written last with a ttl
    writes = []
    # 70 writes in one loop iteration, so one batch of one shard: runs of plain sets that
    # span several chunk sizes, the same key twice in a run, a value file and an incr
    # breaking the runs, a ttl and a tag on some.
    for i in range(70):
        key = f"k{i % 50}"  # k0..k19 written twice, the later value must win
        if i == 23:
            writes.append(cache.set("big", b"B" * 5000))  # a value file: not in a run
            expected["big"] = b"B" * 5000
        if i == 41:
            writes.append(cache.incr("counter", 5))
            expected["counter"] = 15
        value = {"i": i, "pad": "x" * (i % 7)}
        writes.append(cache.set(key, value, ttl=3600 if i % 3 else None, tag=f"t{i % 2}"))
        expected[key] = value
        lasting[key] = bool(i % 3)
    results = await asyncio.gather(*writes)
    assert results.count(15) == 1 and results.count(None) == len(results) - 1
    assert await cache.get_many(list(expected)) == expected
    assert {key: await cache.ttl(key) is not None for key in lasting} == lasting
    report = await cache.check()
    assert report.ok, report  # the byte accounting the triggers keep matches the rows
    other = make_cache(shards=1, min_file_size=1024)  # the change log told the others
    assert await other.get_many(list(expected)) == expected
    assert await cache.evict("t1") == 25  # tags written by the multi-row statements
