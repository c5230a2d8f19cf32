"""Crash durability: a writer killed with SIGKILL at random moments loses nothing it acknowledged.

One directory lives through every kill. Each round starts a writer process (``_worker.py
crash``) with four concurrent tasks that set, overwrite, ``set_many``, delete and ``incr``,
logging a *begun* line before each ``await`` and an *acknowledged* line after it. The test
kills it with SIGKILL at a random moment (a few rounds while it is still starting or
opening the files), then a new process opens the directory, as a restarted worker would,
and the test checks what it found, cumulatively for every round so far:

* every acknowledged write is there with exactly its value (a deletion: the key is gone);
* a write in flight at the kill is either wholly there or not at all (never partial);
* the counter is at least its highest acknowledged value and at most the increments begun;
* ``check()`` finds SQLite intact and the size accounting right;
* the cache keeps working: it takes and returns a new write.

SIGKILL kills the process, not the machine, so what the OS already has counts as written:
this holds for every ``durability``, which the rounds rotate through. Power loss is another
matter (docs/guarantees.md).
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from shardcache import AsyncCache, CacheError

from . import _worker as w
from .conftest import CHILD_TIMEOUT, Children, Figures

DURABILITIES = ("normal", "full", "off")


@dataclass
class KeyState:
    """What the ack log says about one key."""

    acked: Any = None  # the last acknowledged version; None: absent (never set, or deleted)
    pending: list[Any] = field(default_factory=list)  # begun, not acknowledged


@dataclass
class Ledger:
    """Everything every killed writer acknowledged, replayed from the ack logs."""

    keys: dict[str, KeyState] = field(default_factory=dict)
    incr_begun: int = 0
    incr_acked: list[int] = field(default_factory=list)
    acked_ops: int = 0
    settled: int = 0  # writes in flight at a kill, found whole or absent (and kept so)
    orphans: int = 0  # value files left by killed writers, as check() last reported

    def replay(self, path: Path) -> None:
        data = path.read_bytes() if path.exists() else b""
        lines = data.split(b"\n")[:-1]  # a partial last line was never acknowledged
        for raw in lines:
            kind, op, key, *rest = raw.decode().split(" ")
            if op == "incr":
                if kind == "B":
                    self.incr_begun += 1
                else:
                    self.incr_acked.append(int(rest[0]))
                    self.acked_ops += 1
                continue
            state = self.keys.setdefault(key, KeyState())
            outcome = int(rest[0]) if op == "set" else None
            if kind == "B":
                state.pending.append(outcome)
            else:
                state.acked = outcome
                state.pending.remove(outcome)
                self.acked_ops += 1
        # Whatever is still pending was in flight at the kill: it may or may not have landed.


def _wait_for_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return b""
    return proc.stdout.readline()


def verify(spawn: Children, tmp_path: Path, directory: Path, ledger: Ledger, round_: int) -> None:
    """A new process opens the directory, as a restarted worker would, and reports."""
    names = sorted(ledger.keys)
    keys_file = tmp_path / "keys.msgpack"
    keys_file.write_bytes(msgspec.msgpack.encode(names))
    out = tmp_path / f"inspect-{round_}.msgpack"
    proc = spawn("inspect", str(directory), str(round_), str(keys_file), str(out))
    try:
        _, stderr = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"round {round_}: opening the directory after the kill hung")
    assert proc.returncode == 0, f"round {round_}: the survivor failed:\n{stderr.decode()}"
    report = msgspec.msgpack.decode(out.read_bytes())
    found = report["found"]
    for key in names:
        state = ledger.keys[key]
        got = found.get(key, w.MISS)
        allowed = {state.acked, *state.pending}
        if got == w.MISS:
            assert None in allowed, (
                f"round {round_}: {key} (acknowledged version {state.acked}) is lost"
            )
            seen = None
        else:
            assert w.value_ok(got, key), f"round {round_}: {key} holds a partial value"
            assert got["version"] in allowed, (
                f"round {round_}: {key} holds version {got['version']}; "
                f"acknowledged {state.acked}, in flight {state.pending}"
            )
            seen = got["version"]
        if state.pending:
            # Nobody writes this key again: what the kill left must stay, whole.
            state.acked, state.pending = seen, []
            ledger.settled += 1
    counter = report["counter"]
    if ledger.incr_acked:
        assert len(set(ledger.incr_acked)) == len(ledger.incr_acked), "incr answered twice"
        assert counter >= max(ledger.incr_acked), (counter, max(ledger.incr_acked))
    assert counter <= ledger.incr_begun, (counter, ledger.incr_begun)
    _ok, problems = report["check"]
    # A writer killed between writing a value file and committing its row leaves the file
    # behind: garbage that check() reports (and fix=True removes), never damage.
    damage = [p for p in problems if not p.endswith(": orphan value file")]
    assert not damage, f"round {round_}: {damage}"
    ledger.orphans = len(problems) - len(damage)
    assert report["works"], f"round {round_}: the survivor cannot write"


def run_kills(spawn: Children, tmp_path: Path, rounds: int, seed: int) -> tuple[Ledger, int]:
    rng = random.Random(seed)
    directory = tmp_path / "cache"
    ledger = Ledger()
    during_open = 0
    for round_ in range(rounds):
        acks = tmp_path / f"acks-{round_}.log"
        proc = spawn(
            "crash",
            str(directory),
            f"r{round_}",
            DURABILITIES[round_ % len(DURABILITIES)],
            str(acks),
            stdout=subprocess.PIPE,
        )
        if round_ % 6 == 5:
            # While the interpreter starts, imports, or opens (and on round 5, creates) files.
            time.sleep(rng.uniform(0.0, 0.25))
            during_open += 1
        else:
            line = _wait_for_line(proc, CHILD_TIMEOUT)
            if line != b"open\n":
                proc.kill()
                _, stderr = proc.communicate(timeout=CHILD_TIMEOUT)
                pytest.fail(f"round {round_}: the writer did not open: {stderr.decode()}")
            time.sleep(rng.uniform(0.02, 0.4))
        if proc.poll() is not None:
            _, stderr = proc.communicate(timeout=CHILD_TIMEOUT)
            pytest.fail(f"round {round_}: the writer died before the kill: {stderr.decode()}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(CHILD_TIMEOUT)
        assert proc.returncode == -signal.SIGKILL
        ledger.replay(acks)
        verify(spawn, tmp_path, directory, ledger, round_)
    return ledger, during_open


def test_sigkill_loses_no_acknowledged_write(
    spawn: Children, tmp_path: Path, figures: Figures
) -> None:
    rounds = 24
    ledger, during_open = run_kills(spawn, tmp_path, rounds, seed=8)
    assert ledger.acked_ops > rounds * 20, "the writers acknowledged too little to prove much"
    figures.add(
        f"{rounds} SIGKILLs survived ({during_open} while starting/opening), "
        f"{ledger.acked_ops} acknowledged writes all found, {len(ledger.keys)} keys checked "
        f"after every kill, {ledger.settled} in-flight writes whole or absent, counter "
        f"{max(ledger.incr_acked, default=0)}..{ledger.incr_begun}"
    )


@pytest.mark.slow
@pytest.mark.timeout(1800)  # minutes by design: beyond the suite's 300 s
def test_sigkill_soak(spawn: Children, tmp_path: Path, figures: Figures) -> None:
    rounds = 150
    ledger, during_open = run_kills(spawn, tmp_path, rounds, seed=80)
    figures.add(
        f"soak: {rounds} SIGKILLs survived ({during_open} while opening), "
        f"{ledger.acked_ops} acknowledged writes all found, {ledger.settled} in-flight writes "
        f"whole or absent, {ledger.orphans} orphan value files left by the kills"
    )


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_full_durability_syncs_value_files_and_their_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A power loss cannot be staged here; what durability="full" must do before a commit
    # can be watched: fsync the file *and* the directory entry the rename created.
    synced: list[os.stat_result] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.fstat(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    directory = tmp_path / "cache"
    async with AsyncCache(directory, shards=1, min_file_size=1024, durability="full") as cache:
        await cache.set("big", b"b" * 5000)
        (value_file,) = (directory / "values").glob("*.val")
        inodes = {(s.st_dev, s.st_ino) for s in synced}
        values_dir = (directory / "values").stat()
        assert (value_file.stat().st_dev, value_file.stat().st_ino) in inodes, "file not synced"
        assert (values_dir.st_dev, values_dir.st_ino) in inodes, "directory entry not synced"


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_full_durability_flushes_every_touched_wal_before_answering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer commits at NORMAL and flushes each WAL a round touched before any caller
    # of the round is answered: every shard's WAL, at its size after the commit.
    flushed: dict[tuple[int, int], int] = {}
    real_fdatasync = os.fdatasync

    def spy(fd: int) -> None:
        real_fdatasync(fd)
        st = os.fstat(fd)
        flushed[(st.st_dev, st.st_ino)] = st.st_size

    monkeypatch.setattr(os, "fdatasync", spy)
    directory = tmp_path / "cache"
    async with AsyncCache(directory, shards=4, durability="full") as cache:
        await cache.set_many({("k", i): i for i in range(64)})
        for wal in sorted(directory.glob("shard-*.db-wal")):
            st = wal.stat()
            assert flushed.get((st.st_dev, st.st_ino)) == st.st_size, f"{wal.name} not flushed"
        flushed.clear()
        await cache.set(("k", 1), "again")
        assert len(flushed) == 1  # one shard touched, one flush


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_full_durability_reports_a_failed_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fdatasync = os.fdatasync
    failing = True

    def broken(fd: int) -> None:
        if failing:
            raise OSError(5, "Input/output error")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", broken)
    async with AsyncCache(tmp_path / "cache", shards=2, durability="full") as cache:
        with pytest.raises(CacheError, match="durable"):
            await cache.set("k", 1)
        failing = False
        await cache.set("k", 2)  # the writer is not wedged by the failure
        assert await cache.get("k") == 2
