"""A throwaway nginx ``proxy_cache`` on 127.0.0.1 in front of an upstream, stopped by pid.

    with nginx_proxy("127.0.0.1:8000", workdir) as (base, pid): ...

The configuration, the cache, the temp files, the pid file and the error log all live in
``workdir``; nginx runs in the foreground (``daemon off``) with one worker process, caches
what the upstream's ``Cache-Control`` allows (no ``proxy_cache_valid``) and, with
``proxy_cache_lock on``, lets one request per cold URL through to the upstream.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

_CONFIG = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    proxy_cache_path {dir}/cache levels=1:2 keys_zone=bench:10m max_size=256m inactive=10m
                     use_temp_path=off;

    upstream app {{
        server {upstream};
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_cache bench;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 10s;
            proxy_cache_lock_age 10s;
            add_header X-Cache $upstream_cache_status;
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nginx_config(upstream: str, port: int, workdir: str) -> str:
    # As root the workers would drop to "nobody", which cannot write the cache in workdir.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    return _CONFIG.format(user=user, dir=workdir, upstream=upstream, port=port)


@contextlib.contextmanager
def nginx_proxy(upstream: str, workdir: str, *, timeout: float = 10.0) -> Iterator[tuple[str, int]]:
    """nginx caching ``upstream`` (``host:port``); yields its base URL and master pid."""
    binary = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None
    )
    if binary is None:
        raise RuntimeError("nginx not found (apt-get install -y nginx)")
    os.makedirs(workdir, exist_ok=True)
    port = _free_port()
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(nginx_config(upstream, port, workdir))
    log = os.path.join(workdir, "error.log")
    command = [binary, "-p", workdir, "-e", log, "-c", conf]
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                with contextlib.suppress(OSError), open(log) as errors:
                    tail = errors.read()[-2000:]
                raise RuntimeError(f"nginx exited with {proc.returncode}: {tail}")
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx not listening on 127.0.0.1:{port} after {timeout}s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)  # fast shutdown of the master and its worker
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
