"""``@acached`` across real processes: one computation per cache directory, a killed leader,
keys stable across interpreter runs and hash seeds, and the process-wide default cache.

The children run this very file (``python test_acached_multiprocess.py CMD ...``), so every
process decorates the same function (``__main__._body``) and agrees on its keys. They talk
to the test through stdin/stdout, one line at a time; every wait on a child is bounded, and
a child that outlives its test is killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardcache import AsyncCache, acached

HERE = Path(__file__).resolve()
BOUND = 60.0  # seconds: the bound of every wait on a child (a failure, never a hang)


# -- the child side ---------------------------------------------------------------------------
_mode = "normal"
_runs_file = Path(os.devnull)


def _say(*parts: Any) -> None:
    print(*parts, flush=True)


async def _body(x: int) -> dict[str, Any]:
    """The cached computation: counts itself in a file shared by every process."""
    started = time.time()
    with open(_runs_file, "a") as fh:  # one short append per run: atomic across processes
        fh.write(f"{os.getpid()} {started}\n")
    if _mode == "hang":
        _say("computing", started)
        await asyncio.sleep(BOUND)  # killed long before this ends
    else:
        await asyncio.sleep(0.5)  # long enough for every process to come asking meanwhile
    return {"pid": os.getpid(), "x": x, "started": started}


@acached  # the default cache: $SHARDCACHE_DIR, opened at the first call only
async def default_cached(items: frozenset[str], options: dict[str, int], name: str) -> str:
    with open(_runs_file, "a") as fh:
        fh.write(f"{os.getpid()}\n")
    return f"{name}:{sorted(items)}:{sorted(options.items())}"


async def _child_stampede(directory: str, callers: int) -> None:
    async with AsyncCache(directory) as cache:
        compute = acached(cache, ttl=60, lock_timeout=20)(_body)
        await cache.open()
        _say("ready")
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "go"
        results = await asyncio.gather(*(compute(1) for _ in range(callers)))
        stats = await cache.stats()
        _say(json.dumps({"results": results, "stampede_waits": stats.stampede_waits}))


async def _child_lease(directory: str, lock_timeout: float) -> None:
    async with AsyncCache(directory) as cache:
        compute = acached(cache, ttl=60, lock_timeout=lock_timeout)(_body)
        _say("calling")
        result = await compute(1)
        _say(json.dumps(result))


async def _child_default() -> None:
    calls = [
        (frozenset({"alpha", "beta", "gamma", "delta"}), {"b": 2, "a": 1, "c": 3}, "one"),
        (frozenset({"x"}), {}, "two"),
    ]
    keys = [default_cached.cache_key(*call) for call in calls]
    values = [await default_cached(*call) for call in calls]
    _say(json.dumps({"keys": keys, "values": values, "hash": hash("shardcache")}))


async def _child_disk_full(directory: str) -> None:
    import resource
    import signal

    async with AsyncCache(directory, min_file_size=1024) as cache:

        @acached(cache)
        async def big(x: int) -> bytes:
            return bytes([x]) * 200_000  # its own value file, beyond the size limit below

        await cache.set("warm", 1)  # the shard files exist and have their first pages
        # From now on no file of this process may grow past 64 KiB: the value file write
        # fails as on a full disk (EFBIG instead of SIGXFSZ killing the process).
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
        sizes = [len(await big(7)), len(await big(7))]
        stored = await cache.get(big.cache_key(7), "absent")
        _say(json.dumps({"sizes": sizes, "stored": stored}))


def _child_main(argv: list[str]) -> None:
    global _mode, _runs_file
    command = argv[0]
    if command == "stampede":
        _runs_file = Path(argv[2])
        asyncio.run(_child_stampede(argv[1], int(argv[3])))
    elif command == "lease":
        _runs_file, _mode = Path(argv[2]), argv[4]
        asyncio.run(_child_lease(argv[1], float(argv[3])))
    elif command == "disk-full":
        asyncio.run(_child_disk_full(argv[1]))
    elif command == "default":
        _runs_file = Path(argv[1])
        asyncio.run(_child_default())  # the default cache is never closed by hand
    else:
        raise SystemExit(f"unknown command {command!r}")


# -- the test side ----------------------------------------------------------------------------
class Child:
    """A child process running this file, read line by line with a bounded wait."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-W", "always::ResourceWarning", str(HERE), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._errors: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self._stderr_pump = threading.Thread(target=self._pump_stderr, daemon=True)
        self._stderr_pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._errors.extend(self.proc.stderr)

    @property
    def stderr(self) -> str:
        return "".join(self._errors)

    def line(self) -> str:
        try:
            line = self._lines.get(timeout=BOUND)
        except queue.Empty:
            raise AssertionError(f"no output from the child in {BOUND}s") from None
        if line is None:
            self.proc.wait(BOUND)
            raise AssertionError(f"child exited ({self.proc.returncode}):\n{self.stderr}")
        return line

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def finish(self) -> str:
        """Wait for a clean exit; return what the child wrote to stderr."""
        returncode = self.proc.wait(BOUND)
        self._stderr_pump.join(BOUND)  # stderr is complete once the pipe closed
        assert returncode == 0, self.stderr
        return self.stderr


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        if child.proc.poll() is None:
            child.proc.kill()
        child.proc.wait(BOUND)


def run_lines(runs_file: Path) -> list[str]:
    return runs_file.read_text().splitlines() if runs_file.exists() else []


def test_four_processes_run_the_body_once(tmp_path: Path, children: list[Child]) -> None:
    directory, runs = tmp_path / "cache", tmp_path / "runs"
    for _ in range(4):
        children.append(Child("stampede", str(directory), str(runs), "25"))
    for child in children:
        assert child.line() == "ready"
    for child in children:
        child.send("go")
    reports = [json.loads(child.line()) for child in children]
    for child in children:
        child.finish()
    assert len(run_lines(runs)) == 1  # 100 callers in 4 processes, one computation
    values = {json.dumps(r, sort_keys=True) for report in reports for r in report["results"]}
    assert len(values) == 1 and sum(len(report["results"]) for report in reports) == 100
    # The callers did contend: at least the leader's 24 other tasks joined its flight (the
    # others' flights waited on its lease, unless a process came late enough to find a hit).
    assert sum(report["stampede_waits"] for report in reports) >= 24


def test_killed_leader_process_another_computes_after_its_lease(
    tmp_path: Path, children: list[Child]
) -> None:
    directory, runs = tmp_path / "cache", tmp_path / "runs"
    lock_timeout = 2.0
    leader = Child("lease", str(directory), str(runs), str(lock_timeout), "hang")
    children.append(leader)
    assert leader.line() == "calling"
    word, leader_started = leader.line().split()
    assert word == "computing"  # it holds the lease and is mid-compute
    follower = Child("lease", str(directory), str(runs), str(lock_timeout), "normal")
    children.append(follower)
    assert follower.line() == "calling"
    leader.proc.kill()  # crashed: its lease is never released
    leader.proc.wait(BOUND)
    result = json.loads(follower.line())
    follower.finish()
    assert result["pid"] == follower.proc.pid
    assert [line.split()[0] for line in run_lines(runs)] == [
        str(leader.proc.pid),
        str(follower.proc.pid),
    ]
    # It computed only once the dead leader's lease had expired (a lower bound, with slack
    # for the time between taking the lease and starting the body).
    assert result["started"] >= float(leader_started) + lock_timeout - 0.5


def run_default(tmp_path: Path, seed: str, directory: Path) -> tuple[dict[str, Any], str]:
    env = dict(os.environ, PYTHONHASHSEED=seed, SHARDCACHE_DIR=str(directory))
    child = Child("default", str(tmp_path / "runs"), env=env)
    report = json.loads(child.line())
    return report, child.finish()


def test_default_cache_and_keys_across_runs_and_hash_seeds(tmp_path: Path) -> None:
    directory = tmp_path / "default-cache"
    first, stderr1 = run_default(tmp_path, "1", directory)
    second, stderr2 = run_default(tmp_path, "2", directory)
    assert first["hash"] != second["hash"]  # the seeds did change str hashing
    assert first["keys"] == second["keys"]  # ... and not the keys
    assert first["values"] == second["values"]
    # The first run stored both results in $SHARDCACHE_DIR and closed the default cache at
    # exit without losing them: the second run computed nothing.
    assert len(run_lines(tmp_path / "runs")) == 2
    assert (directory / "shard-000.db").exists()
    # Closed properly at exit: no "never closed" ResourceWarning, no error output.
    assert "ResourceWarning" not in stderr1 + stderr2
    assert stderr1 == stderr2 == ""


def test_default_cache_unusable_directory_fails_open(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("occupied")
    report, stderr = run_default(tmp_path, "0", not_a_directory)
    assert (
        report["values"][0]
        == "one:['alpha', 'beta', 'delta', 'gamma']:[('a', 1), ('b', 2), ('c', 3)]"
    )
    assert "fail open" in stderr and "not a directory" in stderr
    assert stderr.count("fail open") == 1  # one warning, whatever the number of calls
    assert len(run_lines(tmp_path / "runs")) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_fail_open_when_the_disk_is_full(tmp_path: Path) -> None:
    child = Child("disk-full", str(tmp_path / "cache"))
    report = json.loads(child.line())
    stderr = child.finish()
    assert report == {"sizes": [200_000, 200_000], "stored": "absent"}
    assert stderr.count("fail open") == 1, stderr  # one warning for two failed writes


if __name__ == "__main__":
    _child_main(sys.argv[1:])
