"""Fixtures of the reliability suite: child processes, a small filesystem, and figures.

* ``spawn`` starts ``_worker.py`` children; each is killed and reaped after the test, and
  every wait on one is bounded by :data:`CHILD_TIMEOUT`.
* ``small_fs`` mounts a 2 MiB tmpfs (we run as root in CI); the test is skipped, saying why,
  only where neither tmpfs nor a loop device can be mounted.
* ``figures`` records what a test held (processes x operations, kills survived, fuzz
  examples); the session prints them at the end, so every run states its own evidence.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("_worker.py")
CHILD_TIMEOUT = 60.0  # seconds: the bound of every wait on a child; a failure, never a hang

_FIGURES: dict[str, list[str]] = {}
_LOCK = threading.Lock()


class Figures:
    """What the tests of this session proved, by test id, printed in the terminal summary."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid

    def add(self, text: str) -> None:
        with _LOCK:
            _FIGURES.setdefault(self.nodeid, []).append(text)
        print(text)  # also in the test's own captured output


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.nodeid)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The soak is opt-in: it runs only when the -m expression names it ("-m slow").
    if "slow" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="soak test: opt in with -m slow")
    here = Path(__file__).parent
    for item in items:
        if item.get_closest_marker("slow") and here in Path(str(item.path)).parents:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("reliability figures")
    for nodeid, lines in _FIGURES.items():
        for line in lines:
            terminalreporter.write_line(f"{nodeid.split('::', 1)[-1]}: {line}")


def unique_dir(parent: Path) -> Path:
    """A cache directory whose name no other test uses: the engine names its threads after
    it (``shardcache-<name>-writer-0``), so a test can tell its own threads from others'."""
    return parent / f"cache-{uuid.uuid4().hex[:10]}"


def cache_threads(directory: Path) -> list[str]:
    """The engine's threads still alive for the cache in ``directory``."""
    prefix = f"shardcache-{directory.name}-"
    return [t.name for t in threading.enumerate() if t.name.startswith(prefix)]


class Children:
    """The ``_worker.py`` processes a test started; all are killed and reaped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def __call__(
        self, *args: str, stdout: int | None = subprocess.DEVNULL
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            cwd=tempfile.gettempdir(),
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(CHILD_TIMEOUT)
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()


@pytest.fixture
def spawn() -> Iterator[Children]:
    children = Children()
    try:
        yield children
    finally:
        children.close()


def _mount_tmpfs(target: Path) -> str | None:
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(target)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return None if result.returncode == 0 else (result.stderr.strip() or "mount failed")


def _mount_loop(target: Path, image: Path) -> str | None:
    mkfs = shutil.which("mkfs.ext4") or "/sbin/mkfs.ext4"
    commands = [
        ["truncate", "-s", "4M", str(image)],
        [mkfs, "-q", "-F", str(image)],
        ["mount", "-o", "loop", str(image), str(target)],
    ]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        if result.returncode != 0:
            return result.stderr.strip() or f"{command[0]} failed"
    return None


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A mounted filesystem of a few MiB, unmounted after the test."""
    target = tmp_path / "small"
    target.mkdir()
    why_tmpfs = _mount_tmpfs(target)
    why_loop = None
    if why_tmpfs is not None:
        why_loop = _mount_loop(target, tmp_path / "small.img")
        if why_loop is not None:
            pytest.skip(
                f"cannot mount a small filesystem: tmpfs: {why_tmpfs}; loop device: {why_loop}"
            )
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True, timeout=30, check=False)


def fill_up(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` with one file; return it (delete it to free)."""
    filler = directory / "filler"
    chunk = b"\0" * 4096
    with open(filler, "wb", buffering=0) as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(chunk)
    # The last blocks: whatever a 4 KiB write could not take.
    with open(filler, "ab", buffering=0) as fh:
        with contextlib.suppress(OSError):
            while True:
                fh.write(b"\0")
    return filler


@pytest.fixture
def free_space() -> Callable[[Path], int]:
    def free(directory: Path) -> int:
        st = os.statvfs(directory)
        return st.f_bavail * st.f_frsize

    return free
