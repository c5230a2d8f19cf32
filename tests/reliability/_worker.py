"""The child side of the reliability suite: ``python _worker.py COMMAND ARGS``.

Each command is one real process on a shared cache directory. It never imports the test
package, and it reports through files, so that the test can check what the child saw even
when it was killed with SIGKILL.

* ``load DIR INDEX SEED START_AT SECONDS MAX_OPS OUT``: from ``START_AT`` (a Unix time, so
  every process opens a fresh directory at the same moment) run a mixed workload for at most
  ``SECONDS`` and ``MAX_OPS`` operations with :data:`TASKS` concurrent tasks, checking every
  answer on the way, then write a MessagePack report to ``OUT``.
* ``set DIR KEY VERSION``: store ``make_value(KEY, VERSION, big=True)`` and exit: another
  process's acknowledged write, at a moment the test chooses.
* ``inspect DIR ROUND KEYS OUT``: open the directory (after a crash: as a restarted worker
  would), read every key listed in the MessagePack file ``KEYS``, the counter and
  ``check()``, prove the cache still takes a write, and report it all to ``OUT``.
* ``crash DIR SEED DURABILITY ACKS``: write until killed. Every operation appends a ``B``
  (begun) line to ``ACKS`` before its ``await`` and an ``A`` (acknowledged) line after it,
  each with one unbuffered ``os.write``: what a SIGKILL cannot undo is on file.

The values are built by :func:`make_value` and checked by :func:`value_ok`: a value carries
the SHA-256 of its payload, so a partial or mixed-up value can never pass for a good one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sys
import time
import traceback
from typing import Any

import msgspec

SHARDS = 4
MIN_FILE_SIZE = 2048  # small, so that some values live in their own file
TASKS = 4  # concurrent tasks per process: their writes combine into batches
OWN_KEYS = 48  # per task
# Own keys below this index only ever hold small (inline) values (0: any key may hold a
# value file). Other processes read every key, value files included, while their owner
# replaces them: the race test_multiprocess.py::test_reader_never_deletes_a_replaced_value_
# file pins down deterministically.
SMALL_ONLY = 0
COUNTERS = 4
ONCE_KEYS = 400
RACE_KEYS = 16
MISS = "<miss>"  # a default no value equals (values are dicts)


def make_value(owner: Any, version: int, *, big: bool) -> dict[str, Any]:
    """A self-checking value for the key ``owner`` at ``version``; ``big`` ones go to a file."""
    seed = hashlib.sha256(repr((owner, version)).encode()).digest()
    blob = seed * (160 if big else 2)  # 5120 or 64 bytes
    return {
        "owner": list(owner) if isinstance(owner, tuple) else owner,
        "version": version,
        "blob": blob,
        "sha": hashlib.sha256(blob).hexdigest(),
    }


def value_ok(value: Any, owner: Any) -> bool:
    """True if ``value`` is a whole value that :func:`make_value` made for ``owner``."""
    if not isinstance(value, dict) or set(value) != {"owner", "version", "blob", "sha"}:
        return False
    expected = list(owner) if isinstance(owner, tuple) else owner
    return (
        value["owner"] == expected
        and hashlib.sha256(value["blob"]).hexdigest() == value["sha"]
        and value == make_value(owner, value["version"], big=len(value["blob"]) > 1000)
    )


def _qualname(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__qualname__}"


# -- load -----------------------------------------------------------------------------------
class _Task:
    """One task's view: its own keys (only it writes them), so it knows their values."""

    def __init__(self, index: int, task: int, rng: random.Random) -> None:
        self.index = index
        self.task = task
        self.rng = rng
        self.model: dict[int, dict[str, Any]] = {}
        self.versions = 0
        self.uncertain: set[int] = set()  # a write failed: old or new value, both fine

    def key(self, i: int) -> tuple[str, int, int, int]:
        return ("own", self.index, self.task, i)

    def new_value(self, i: int) -> dict[str, Any]:
        self.versions += 1
        big = i >= SMALL_ONLY and self.rng.random() < 0.2
        return make_value(self.key(i), self.versions, big=big)


class _Load:
    def __init__(self, cache: Any, index: int, seed: int, deadline: float, max_ops: int) -> None:
        self.cache = cache
        self.index = index
        self.deadline = deadline
        self.budget = max_ops
        self.ops: dict[str, int] = {}
        self.errors: list[list[str]] = []
        self.violations: list[str] = []
        self.sums = [0] * COUNTERS
        self.seen = [0] * COUNTERS  # highest counter value this process has observed
        self.net = 0
        self.once_tried: set[int] = set()
        self.once_won: list[int] = []
        self.race: list[list[Any]] = []
        self.tasks = [_Task(index, t, random.Random(seed * 1000 + t)) for t in range(TASKS)]

    def violation(self, text: str) -> None:
        if len(self.violations) < 50:
            self.violations.append(text)

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(t) for t in self.tasks))

    async def _loop(self, t: _Task) -> None:
        ops = [
            (self._get_own, 20),
            (self._set_own, 15),
            (self._delete_own, 5),
            (self._add_own, 5),
            (self._pop_own, 3),
            (self._set_many_own, 4),
            (self._get_many_own, 4),
            (self._incr, 12),
            (self._get_counter, 6),
            (self._net, 6),
            (self._add_once, 4),
            (self._set_race, 4),
            (self._get_foreign, 10),
        ]
        funcs = [f for f, _ in ops]
        weights = [w for _, w in ops]
        while self.budget > 0 and time.time() < self.deadline:
            self.budget -= 1
            op = t.rng.choices(funcs, weights)[0]
            name = op.__name__.lstrip("_")
            self.ops[name] = self.ops.get(name, 0) + 1
            try:
                await op(t)
            except Exception as exc:
                self.errors.append([_qualname(exc), str(exc)[:300], name])

    async def _guard(self, t: _Task, keys: list[int], write: Any) -> Any:
        try:
            return await write
        except Exception:
            t.uncertain.update(keys)
            raise

    async def _get_own(self, t: _Task) -> None:
        i = t.rng.randrange(OWN_KEYS)
        got = await self.cache.get(t.key(i), MISS)
        if i not in t.uncertain and got != t.model.get(i, MISS):
            self.violation(f"get {t.key(i)}: {_brief(got)} != {_brief(t.model.get(i, MISS))}")

    async def _set_own(self, t: _Task) -> None:
        i = t.rng.randrange(OWN_KEYS)
        value = t.new_value(i)
        await self._guard(t, [i], self.cache.set(t.key(i), value))
        t.model[i] = value

    async def _delete_own(self, t: _Task) -> None:
        i = t.rng.randrange(OWN_KEYS)
        deleted = await self._guard(t, [i], self.cache.delete(t.key(i)))
        if i not in t.uncertain and deleted != (i in t.model):
            self.violation(f"delete {t.key(i)} returned {deleted}")
        t.model.pop(i, None)

    async def _add_own(self, t: _Task) -> None:
        i = t.rng.randrange(OWN_KEYS)
        value = t.new_value(i)
        added = await self._guard(t, [i], self.cache.add(t.key(i), value))
        if i not in t.uncertain and added != (i not in t.model):
            self.violation(f"add {t.key(i)} returned {added}")
        if added:
            t.model[i] = value

    async def _pop_own(self, t: _Task) -> None:
        i = t.rng.randrange(OWN_KEYS)
        got = await self._guard(t, [i], self.cache.pop(t.key(i), MISS))
        if i not in t.uncertain and got != t.model.get(i, MISS):
            self.violation(f"pop {t.key(i)}: {_brief(got)} != {_brief(t.model.get(i, MISS))}")
        t.model.pop(i, None)

    async def _set_many_own(self, t: _Task) -> None:
        picked = t.rng.sample(range(OWN_KEYS), 3)
        values = {i: t.new_value(i) for i in picked}
        await self._guard(t, picked, self.cache.set_many({t.key(i): v for i, v in values.items()}))
        t.model.update(values)

    async def _get_many_own(self, t: _Task) -> None:
        picked = [i for i in t.rng.sample(range(OWN_KEYS), 4) if i not in t.uncertain]
        got = await self.cache.get_many([t.key(i) for i in picked])
        expected = {t.key(i): t.model[i] for i in picked if i in t.model}
        if got != expected:
            self.violation(f"get_many {picked}: {sorted(got)} != {sorted(expected)}")

    async def _incr(self, t: _Task) -> None:
        c = t.rng.randrange(COUNTERS)
        delta = t.rng.randint(1, 3)
        before = self.seen[c]
        value = await self.cache.incr(("ctr", c), delta)
        self.sums[c] += delta
        # Every process only adds, so our answer includes our delta on top of what we saw.
        if value < before + delta:
            self.violation(f"incr ctr {c}: {value} < {before} + {delta}")
        self.seen[c] = max(self.seen[c], value)

    async def _get_counter(self, t: _Task) -> None:
        c = t.rng.randrange(COUNTERS)
        before = self.seen[c]
        value = await self.cache.get(("ctr", c), 0)
        # Never older than what this process already saw (the near cache is never stale).
        if value < before:
            self.violation(f"get ctr {c}: {value} < {before} seen before")
        self.seen[c] = max(self.seen[c], value)

    async def _net(self, t: _Task) -> None:
        delta = t.rng.randint(-3, 3)
        if delta >= 0:
            await self.cache.incr(("net",), delta)
        else:
            await self.cache.decr(("net",), -delta)
        self.net += delta

    async def _add_once(self, t: _Task) -> None:
        j = t.rng.randrange(ONCE_KEYS)
        self.once_tried.add(j)
        if await self.cache.add(("once", j), [self.index, t.task]):
            self.once_won.append(j)

    async def _set_race(self, t: _Task) -> None:
        j = t.rng.randrange(RACE_KEYS)
        t.versions += 1
        value = [self.index, t.task, t.versions]
        await self.cache.set(("race", j), value)
        self.race.append([j, value])

    async def _get_foreign(self, t: _Task) -> None:
        i = t.rng.randrange(SMALL_ONLY or OWN_KEYS)
        key = ("own", t.rng.randrange(8), t.rng.randrange(TASKS), i)
        got = await self.cache.get(key, MISS)
        if got != MISS and not value_ok(got, key):
            self.violation(f"get {key}: not a whole value of that key: {_brief(got)}")

    def report(self, opened: float) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": os.getpid(),
            "ops": self.ops,
            "errors": self.errors,
            "violations": self.violations,
            "sums": self.sums,
            "net": self.net,
            "once_tried": sorted(self.once_tried),
            "once_won": self.once_won,
            "race": self.race,
            "open_seconds": opened,
            "own": [
                {
                    "task": t.task,
                    "model": {str(i): v for i, v in t.model.items()},
                    "uncertain": sorted(t.uncertain),
                }
                for t in self.tasks
            ],
        }


def _brief(value: Any) -> str:
    if isinstance(value, dict) and "version" in value:
        return f"<value {value.get('owner')} v{value.get('version')}>"
    return repr(value)[:80]


async def _load(argv: list[str]) -> None:
    from shardcache import AsyncCache

    directory, index, seed, start_at, seconds, max_ops, out = argv
    await asyncio.sleep(max(0.0, float(start_at) - time.time()))
    started = time.monotonic()
    cache = AsyncCache(directory, shards=SHARDS, min_file_size=MIN_FILE_SIZE)
    load = _Load(cache, int(index), int(seed), time.time() + float(seconds), int(max_ops))
    try:
        await cache.open()  # every process opens the fresh directory at the same moment
        opened = time.monotonic() - started
        await load.run()
    except Exception as exc:
        load.errors.append([_qualname(exc), str(exc)[:300], "open"])
        opened = -1.0
    finally:
        await cache.aclose()
    tmp = f"{out}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(msgspec.msgpack.encode(load.report(opened)))
    os.replace(tmp, out)


# -- crash ----------------------------------------------------------------------------------
async def _crash(argv: list[str]) -> None:
    from shardcache import AsyncCache

    directory, seed, durability, acks = argv
    fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def note(*parts: Any) -> None:
        os.write(fd, (" ".join(map(str, parts)) + "\n").encode())  # one write(2) per line

    cache = AsyncCache(directory, shards=SHARDS, min_file_size=MIN_FILE_SIZE, durability=durability)
    await cache.open()
    sys.stdout.write("open\n")
    sys.stdout.flush()

    async def task(t: int) -> None:
        rng = random.Random(f"{seed}-{t}")
        live: dict[str, int] = {}  # key -> version, acknowledged
        n = 0
        while True:  # until SIGKILL
            roll = rng.random()
            if roll < 0.15:
                note("B", "incr", "ctr")
                value = await cache.incr("ctr")
                note("A", "incr", "ctr", value)
            elif roll < 0.25 and live:
                key = rng.choice(sorted(live))
                note("B", "del", key)
                await cache.delete(key)
                note("A", "del", key)
                del live[key]
            elif roll < 0.35 and live:
                key = rng.choice(sorted(live))  # overwrite: a new version of a stored key
                version = live[key] + 1
                note("B", "set", key, version)
                await cache.set(key, make_value(key, version, big=rng.random() < 0.3))
                note("A", "set", key, version)
                live[key] = version
            elif roll < 0.45:
                keys = [f"{seed}:{t}:{n + j}" for j in range(3)]
                n += 3
                for key in keys:
                    note("B", "set", key, 1)
                await cache.set_many({k: make_value(k, 1, big=False) for k in keys})
                for key in keys:
                    note("A", "set", key, 1)
                    live[key] = 1
            else:
                key = f"{seed}:{t}:{n}"
                n += 1
                note("B", "set", key, 1)
                await cache.set(key, make_value(key, 1, big=rng.random() < 0.2))
                note("A", "set", key, 1)
                live[key] = 1

    await asyncio.gather(*(task(t) for t in range(TASKS)))


async def _set(argv: list[str]) -> None:
    from shardcache import AsyncCache

    directory, key, version = argv
    async with AsyncCache(directory, shards=SHARDS, min_file_size=MIN_FILE_SIZE) as cache:
        await cache.set(key, make_value(key, int(version), big=True))


async def _inspect(argv: list[str]) -> None:
    from shardcache import AsyncCache

    directory, round_, keys_path, out = argv
    with open(keys_path, "rb") as fh:
        keys: list[str] = msgspec.msgpack.decode(fh.read())
    report: dict[str, Any] = {}
    async with AsyncCache(directory, shards=SHARDS, min_file_size=MIN_FILE_SIZE) as cache:
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 256):
            found.update(await cache.get_many(keys[start : start + 256]))
        report["found"] = found
        report["counter"] = await cache.get("ctr", 0)
        check = await cache.check()
        report["check"] = [check.ok, check.problems]
        await cache.set(("after-kill", int(round_)), round_)
        report["works"] = await cache.get(("after-kill", int(round_))) == round_
    with open(out, "wb") as fh:
        fh.write(msgspec.msgpack.encode(report))


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    try:
        if command == "load":
            asyncio.run(_load(args))
        elif command == "crash":
            asyncio.run(_crash(args))
        elif command == "set":
            asyncio.run(_set(args))
        elif command == "inspect":
            asyncio.run(_inspect(args))
        else:
            raise SystemExit(f"unknown command {command!r}")
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
