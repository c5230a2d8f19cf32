"""SET c64 with the writer in another process: is the GIL what holds SET c64 back?

``set_budget.py`` shows the engine's writer thread and its event loop taking turns: a round
of 64 writes is committed while the loop idles, then answered while the writer idles, and
the process uses ~1.1 of the 2 cores. The obvious way out is a writer with no GIL to share.
This probe builds the transport of one, in the simplest form that could be fast, and
measures it beside the engine in the same run:

* the loop side is a lean copy of the engine's (key and value encoded with msgspec, one
  future per write, writes queued per shard, everything queued in one loop iteration sent
  at once), and it *pipelines*: each shard's batch is answered on its own, so the loop
  answers and re-queues one shard's callers while the writer commits the next shard;
* ``writer processes`` (1 or 2, each owning a share of the 8 shards) read length-prefixed
  msgpack batches from a pipe and commit each as the engine does (the shard schema with its
  triggers, the multi-row upsert, the change-log row, a PASSIVE checkpoint every 16
  batches of a shard), then answer with one message per batch;
* the loop wakes on the answer pipes (``add_reader``): no polling, no threads.

What it leaves out (it is not an engine): expiry, size accounting reads, eviction, value
files, errors, and the crash story of a writer that dies. So it is an upper bound for the
design, and a close one: the engine's writer does little beyond this per write.

Printed: writes/s for the engine, each probe, and diskcache via ``to_thread``, interleaved
per repetition; CPU seconds per write of the loop process and of each writer process; the
share of wall time the writers sat idle waiting for a batch.
Run: ``python benchmarks/set_process.py [--writes 200000] [--reps 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

import msgspec

from set_budget import KEYS, TASKS, _diskcache, _engine
from shardcache import _sql
from shardcache._keys import encode_key, shard_of
from workloads import TTL, key, value

SHARDS = 8
_CHECKPOINT_EVERY = 16  # batches per shard between PASSIVE checkpoints, as the engine
_HEADER = struct.Struct("<I")
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder().decode


def _frame(message: Any) -> bytes:
    body = _encode(message)
    return _HEADER.pack(len(body)) + body


def _frames(buffer: bytearray) -> list[Any]:
    """Pop every complete message off the front of ``buffer``."""
    out = []
    start = 0
    while len(buffer) - start >= 4:
        (size,) = _HEADER.unpack_from(buffer, start)
        if len(buffer) - start - 4 < size:
            break
        out.append(_decode(bytes(buffer[start + 4 : start + 4 + size])))
        start += 4 + size
    del buffer[:start]
    return out


# -- the writer process -----------------------------------------------------------------------
def _commit(conn: sqlite3.Connection, rows: list[list[bytes]]) -> None:
    """One shard batch, as the engine commits it: chunked multi-row upserts + change log."""
    now = time.time()
    params: list[Any] = []
    for k, v in rows:
        params += (k, v, None, 1, len(k) + len(v) + 64, now, now + TTL, now + TTL, now, None)
    conn.execute("BEGIN IMMEDIATE")
    done = 0
    for size in _sql.UPSERT_CHUNKS:
        while len(rows) - done >= size:
            conn.execute(_sql.UPSERT_ROWS[size], params[done * 10 : (done + size) * 10])
            done += size
    if done < len(rows):
        conn.execute(_sql.UPSERT, params[done * 10 :])
    conn.execute(_sql.APPEND_CHANGE, (b"".join(k for k, _ in rows),))
    conn.execute("COMMIT")


def _writer(directory: str, owned: list[int]) -> None:
    conns = {}
    for index in owned:
        conn = sqlite3.connect(os.path.join(directory, f"{index}.db"), isolation_level=None)
        for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "wal_autocheckpoint = 0"):
            conn.execute(f"PRAGMA {pragma}")
        conn.executescript(_sql.SCHEMA)
        conns[index] = conn
    batches = dict.fromkeys(owned, 0)
    buffer = bytearray()
    idle = 0.0
    base = os.times()
    clock = time.perf_counter
    while True:
        waited = clock()
        data = os.read(0, 1 << 20)
        idle += clock() - waited
        if not data:
            break
        buffer += data
        answers = []
        for index, rows in _frames(buffer):
            if index < 0:  # the timed run starts: count from here
                idle, base = 0.0, os.times()
                continue
            _commit(conns[index], rows)
            batches[index] += 1
            if batches[index] % _CHECKPOINT_EVERY == 0:
                conns[index].execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            answers.append(_frame([index, len(rows)]))
        os.write(1, b"".join(answers))
    cpu = os.times()
    os.write(1, _frame(["done", cpu.user + cpu.system - base.user - base.system, idle]))


# -- the loop side ----------------------------------------------------------------------------
class _Writers:
    """Per-shard queues on the loop; each shard has one batch in flight in its process."""

    def __init__(self, directory: str, processes: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, list[tuple[bytes, bytes, asyncio.Future[None]]]] = {}
        self.inflight: dict[int, list[asyncio.Future[None]]] = {}
        self.scheduled = False
        self.children = []
        self.route = [i % processes for i in range(SHARDS)]
        self.buffers = [bytearray() for _ in range(processes)]
        for n in range(processes):
            owned = ",".join(str(i) for i in range(SHARDS) if i % processes == n)
            child = subprocess.Popen(
                [sys.executable, __file__, "--child", directory, owned],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=0,
            )
            assert child.stdout is not None
            os.set_blocking(child.stdout.fileno(), False)
            self.loop.add_reader(child.stdout.fileno(), self._answered, n)
            self.children.append(child)

    def set(self, k: str, v: Any) -> asyncio.Future[None]:
        kb = encode_key(k)
        future: asyncio.Future[None] = self.loop.create_future()
        self.pending.setdefault(shard_of(kb, SHARDS), []).append((kb, _encode(v), future))
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self.scheduled = False
        out: list[list[bytes]] = [[] for _ in self.children]
        for index in [i for i in self.pending if i not in self.inflight]:
            ops = self.pending.pop(index)
            self.inflight[index] = [f for _, _, f in ops]
            out[self.route[index]].append(_frame([index, [[k, v] for k, v, _ in ops]]))
        for child, frames in zip(self.children, out, strict=True):
            if frames:
                assert child.stdin is not None
                child.stdin.write(b"".join(frames))

    def mark(self) -> None:
        """Tell the writers the timed run starts (they count CPU and idle time from here)."""
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write(_frame([-1, []]))

    def _answered(self, n: int) -> None:
        child = self.children[n]
        assert child.stdout is not None
        data = os.read(child.stdout.fileno(), 1 << 20)
        if not data:
            self.loop.remove_reader(child.stdout.fileno())
            return
        self.buffers[n] += data
        for index, _ in _frames(self.buffers[n]):
            for future in self.inflight.pop(index):
                future.set_result(None)
            if index in self.pending and not self.scheduled:
                self.scheduled = True
                self.loop.call_soon(self._flush)

    async def close(self) -> list[tuple[float, float]]:
        stats = []
        for child in self.children:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.close()
        for n, child in enumerate(self.children):
            assert child.stdout is not None
            self.loop.remove_reader(child.stdout.fileno())
            os.set_blocking(child.stdout.fileno(), True)
            rest = self.buffers[n] + child.stdout.read()
            stats += [(cpu, idle) for tag, cpu, idle in _frames(rest) if tag == "done"]
            child.wait()
        return stats


async def _probe(directory: str, writes: int, processes: int) -> tuple[float, float, float, float]:
    """writes/s; CPU us/write of the loop process and of the writers; the writers' idle
    share of the timed run."""
    writers = _Writers(directory, processes)
    keys = [key(i) for i in range(KEYS)]
    values = [value(i) for i in range(KEYS)]
    await asyncio.gather(*(writers.set(keys[i], values[i]) for i in range(KEYS)))
    per_task = writes // TASKS

    async def task(n: int, seed: int) -> None:
        rng = random.Random(seed * 1000 + n)
        for i in [rng.randrange(KEYS) for _ in range(per_task)]:
            await writers.set(keys[i], values[i])

    await asyncio.gather(*(task(n, 1) for n in range(TASKS)))  # warm-up
    writers.mark()
    cpu, started = os.times(), time.perf_counter()
    await asyncio.gather(*(task(n, 2) for n in range(TASKS)))
    elapsed = time.perf_counter() - started
    after = os.times()
    stats = await writers.close()
    done = per_task * TASKS
    loop_us = (after.user + after.system - cpu.user - cpu.system) / done * 1e6
    writer_us = sum(c for c, _ in stats) / done * 1e6
    idle = statistics.fmean(idle for _, idle in stats) / elapsed
    return done / elapsed, loop_us, writer_us, idle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=200_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("DIR", "SHARDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _writer(args.child[0], [int(i) for i in args.child[1].split(",")])
        return 0
    rates: dict[str, list[float]] = {}
    extra: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="shardcache-process-") as root:
        for rep in range(args.reps):
            runs: dict[str, Any] = {
                "engine (writer thread)": lambda d: asyncio.run(_engine(d, args.writes, False)),
                "1 writer process": lambda d: asyncio.run(_probe(d, args.writes, 1)),
                "2 writer processes": lambda d: asyncio.run(_probe(d, args.writes, 2)),
                "diskcache-to_thread": lambda d: asyncio.run(_diskcache(d, 20_000)),
            }
            for name, run in runs.items():
                result = run(tempfile.mkdtemp(dir=root))
                if result is None:
                    continue
                rate = result[0] if isinstance(result, tuple) else result
                rates.setdefault(name, []).append(rate)
                if isinstance(result, tuple):
                    extra.setdefault(name, []).append(result[1:])
                print(f"rep {rep + 1} {name:24s} {rate:10,.0f} writes/s", file=sys.stderr)
    print(f"\nmedians of {args.reps} (SET c64, 10k keys, 8 shards, ~200-byte values, ttl):")
    peer = statistics.median(rates["diskcache-to_thread"]) if "diskcache-to_thread" in rates else 0
    for name, values in rates.items():
        rate = statistics.median(values)
        line = f"  {name:24s} {rate:10,.0f} writes/s"
        if peer and name != "diskcache-to_thread":
            line += f"  {rate / peer:5.2f}x diskcache"
        if name in extra:
            loop_us, writer_us, idle = (
                statistics.median(e[i] for e in extra[name]) for i in range(3)
            )
            line += f"; CPU us/write: loop {loop_us:4.2f}, writers {writer_us:5.2f};"
            line += f" writers idle {idle:4.0%}"
        print(line)
    if peer:
        print(f"  10x diskcache-to_thread needs {10 * peer:10,.0f} writes/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
