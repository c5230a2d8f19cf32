"""A throwaway redis-server on 127.0.0.1, started for one benchmark run and stopped by pid."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from types import TracebackType


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """``with RedisServer(workdir) as server: server.url`` (None, with ``note``, when absent).

    No persistence (``--save '' --appendonly no``): the peer is measured as the in-memory
    network cache it is usually deployed as.
    """

    def __init__(self, workdir: str, *, start_timeout: float = 10.0) -> None:
        self._workdir = workdir
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.url: str | None = None
        self.note = ""

    def __enter__(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            self.note = "redis-server not on PATH (apt-get install redis-server)"
            return self
        port = _free_port()
        args = [binary, "--port", str(port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", self._workdir]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if _pong(port):
                self.url = f"redis://127.0.0.1:{port}/0"
                return self
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.note = f"redis-server did not answer on port {port}"
        self.stop()
        return self

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
