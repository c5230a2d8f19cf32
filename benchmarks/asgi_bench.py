"""CacheMiddleware under load: real uvicorn servers, a load generator in another process.

    python benchmarks/asgi_bench.py [--seconds 5] [--workers 1,4] [--reps 3] [--json out.json]
        [--systems nostore-app,nostore-shardcache,...] [--baseline DIR]

For each worker count it starts uvicorn (uvloop, httptools) on 127.0.0.1 once per system,
measures with ``wrk -t2 -c64`` (or, without wrk, the asyncio load generator below, run as
a separate process) and prints requests/second, p99 and the same-run ratios PERF.md sets
targets for:

* ``bare``             a bare ASGI app returning a constant 2 KB (the ceiling)
* ``app``              a FastAPI endpoint that takes 50 ms and returns ~2 KB with
                       ``Cache-Control: public, max-age=60``, 100 hot URLs, no cache
* ``app-trivial``      the same app's endpoint without the 50 ms
* ``shardcache``       the ``app`` with ``app.add_middleware(CacheMiddleware, ...)``:
                       every request a HIT
* ``shardcache-wrapped``  the ``app`` wrapped, ``CacheMiddleware(app, ...)``: a HIT never
                       enters Starlette's own middleware stack
* ``fastapi-cache2``   the ``app`` endpoint with ``@cache(expire=60)``, InMemoryBackend
* ``fastapi-cache2-redis``  the same with its RedisBackend, on a throwaway redis-server
                       (127.0.0.1, ``--save '' --appendonly no``) started for the run
* ``nginx``            nginx ``proxy_cache`` (one worker process, ``proxy_cache_lock on``)
                       as a separate process in front of the uncached ``app``
                       (``asgi_nginx.py``): every request a HIT
* ``nostore-app`` / ``nostore-shardcache``  a trivial ``Cache-Control: no-store``
                       endpoint without and with the middleware (hit-for-pass at work)
* ``cold``             one never-seen URL hit by 200 concurrent requests: how many times
                       the endpoint body ran (across workers) and the wall time

``--systems`` runs only the labels given (a minute instead of ten); a ratio is printed when
both its systems ran. ``--baseline DIR`` compares two versions of shardcache in one run:
``DIR`` holds another copy of the package (``DIR/shardcache``, e.g. from ``git archive``),
and every shardcache system also runs on it, interleaved, as ``<label>@baseline``, with
its ratios printed beside the current ones.

The machine is noisy (the load generator shares the cores with the server): only ratios
inside one run mean anything. Every server binds 127.0.0.1 and is stopped; every wait is
bounded.

The same file is the ASGI application uvicorn imports (``make_app``, with ``--factory``):
``ASGI_BENCH_SYSTEM`` picks the system, ``ASGI_BENCH_COUNTER`` names a file every body run
appends one byte to, and each worker creates a file named after its pid in
``ASGI_BENCH_STARTED`` once its lifespan startup is complete: the load starts when every
worker is up, so that no worker's imports and cache opening are counted as serving.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# At module level: FastAPI resolves the endpoints' (postponed) annotations here.
from fastapi import Depends, FastAPI, Response

HERE = Path(__file__).resolve().parent
URLS = 100
DELAY = 0.05
PAYLOAD = {
    "items": [{"id": i, "name": f"item-{i:04d}", "tags": ["a", "b", "c"]} for i in range(45)]
}
BARE_BODY = json.dumps(PAYLOAD).encode()
PUBLIC = "public, max-age=60"


# -- the applications (imported by uvicorn in the server processes) ----------------------
def _counter() -> Any:
    path = os.environ.get("ASGI_BENCH_COUNTER")
    if not path:
        return lambda: None
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    return lambda: os.write(fd, b"x")


def _started() -> None:
    directory = os.environ.get("ASGI_BENCH_STARTED")
    if directory:
        Path(directory, str(os.getpid())).touch()


def make_app() -> Any:
    """The ASGI app of ``$ASGI_BENCH_SYSTEM`` (uvicorn ``--factory``)."""
    system = os.environ["ASGI_BENCH_SYSTEM"]
    if system == "bare":
        return _bare
    count = _counter()
    import contextlib as _contextlib

    from shardcache import AsyncCache
    from shardcache.asgi import CacheMiddleware, cache_for

    cache = AsyncCache(os.environ["SHARDCACHE_DIR"]) if system.startswith("shardcache") else None

    @_contextlib.asynccontextmanager
    async def lifespan(app: Any) -> Any:
        async with _contextlib.AsyncExitStack() as stack:
            if system == "fastapi-cache2":
                from fastapi_cache import FastAPICache
                from fastapi_cache.backends.inmemory import InMemoryBackend

                FastAPICache.init(InMemoryBackend(), prefix="bench")
            if system == "fastapi-cache2-redis":
                from fastapi_cache import FastAPICache
                from fastapi_cache.backends.redis import RedisBackend
                from redis.asyncio import from_url

                client = from_url(os.environ["ASGI_BENCH_REDIS"])
                stack.push_async_callback(client.aclose)
                FastAPICache.init(RedisBackend(client), prefix="bench")
            if cache is not None:
                await stack.enter_async_context(cache)
            _started()
            yield

    app = FastAPI(lifespan=lifespan)
    if system.startswith("fastapi-cache2"):
        decorate = _fastapi_cache_decorator()
    else:

        def decorate(f: Any) -> Any:
            return f

    @app.get("/items/{i}", dependencies=[Depends(cache_for(60))])
    @decorate
    async def item(i: int) -> dict[str, Any]:
        await asyncio.sleep(DELAY)
        count()
        return {"i": i, **PAYLOAD}

    @app.get("/cold/{i}", dependencies=[Depends(cache_for(60))])
    @decorate
    async def cold(i: int) -> dict[str, Any]:
        await asyncio.sleep(DELAY)
        count()
        return {"i": i, **PAYLOAD}

    @app.get("/trivial/{i}", dependencies=[Depends(cache_for(60))])
    async def trivial(i: int) -> dict[str, Any]:
        return {"i": i, **PAYLOAD}

    @app.get("/nostore/{i}")
    async def nostore(i: int, response: Response) -> dict[str, Any]:
        response.headers["cache-control"] = "no-store"
        return {"i": i, **PAYLOAD}

    @app.get("/nostore-slow/{i}")
    async def nostore_slow(i: int, response: Response) -> dict[str, Any]:
        await asyncio.sleep(DELAY)
        response.headers["cache-control"] = "no-store"
        return {"i": i, **PAYLOAD}

    @app.get("/ready")
    async def ready() -> dict[str, bool]:
        return {"ok": True}

    if system == "shardcache-wrapped":  # the whole app wrapped: a HIT never enters Starlette
        return CacheMiddleware(app, cache=cache)
    if cache is not None:
        app.add_middleware(CacheMiddleware, cache=cache)
    return app


async def _bare(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                _started()
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(BARE_BODY)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": BARE_BODY})


def _fastapi_cache_decorator() -> Any:
    try:
        import jinja2  # noqa: F401
    except ImportError:
        # fastapi-cache2 0.2.2 imports starlette.templating, which needs jinja2 on current
        # Starlette; the cached endpoints never render a template, so a stand-in will do.
        stub = types.ModuleType("starlette.templating")
        stub._TemplateResponse = type("_TemplateResponse", (), {})  # type: ignore[attr-defined]
        sys.modules.setdefault("starlette.templating", stub)
    from fastapi_cache.decorator import cache

    return cache(expire=60)


# -- servers and load ------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tree_cpu(root: int) -> float:
    """CPU seconds (user + system) used so far by ``root`` and its descendants (Linux)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    used: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        used[int(entry)] = (int(fields[11]) + int(fields[12])) / ticks
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += used.get(pid, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == pid)
    return total


@contextlib.contextmanager
def server(
    system: str,
    workers: int,
    directory: str,
    counter: str,
    extra_env: dict[str, str] | None = None,
    package: str | None = None,
) -> Iterator[tuple[str, int]]:
    """A uvicorn server for ``system``; yields its base URL and stops it afterwards.
    ``package``: a directory whose ``shardcache`` is imported instead of the installed one."""
    port = _free_port()
    path = [str(HERE), *([package] if package else []), os.environ.get("PYTHONPATH", "")]
    started = tempfile.mkdtemp(prefix="asgi-bench-started-")
    env = {
        **os.environ,
        **(extra_env or {}),
        "ASGI_BENCH_SYSTEM": system,
        "ASGI_BENCH_COUNTER": counter,
        "ASGI_BENCH_STARTED": started,
        "SHARDCACHE_DIR": directory,
        "PYTHONPATH": os.pathsep.join(path),
    }
    command = [
        sys.executable, "-m", "uvicorn", "asgi_bench:make_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(command, env=env, cwd=HERE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, timeout=30.0)
        _wait_started(started, workers, proc, timeout=30.0)
        yield base, proc.pid
    finally:
        shutil.rmtree(started, ignore_errors=True)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@contextlib.contextmanager
def serve(
    system: str, workers: int, directory: str, counter: str, package: str | None = None
) -> Iterator[tuple[str, list[int]]]:
    """``server`` plus the peers that are not in-process: yields the base URL to load and the
    pids whose process trees do the serving (for the CPU figure)."""
    if system == "nginx":
        from asgi_nginx import nginx_proxy

        with server("app", workers, directory, counter) as (upstream, app_pid):
            with nginx_proxy(upstream.removeprefix("http://"), directory + "-nginx") as (
                base,
                nginx_pid,
            ):
                yield base, [nginx_pid, app_pid]
    elif system == "fastapi-cache2-redis":
        from redis_server import RedisServer

        os.makedirs(directory, exist_ok=True)
        with RedisServer(directory) as redis:
            if redis.url is None:
                raise RuntimeError(redis.note)
            assert redis._proc is not None
            env = {"ASGI_BENCH_REDIS": redis.url}
            with server(system, workers, directory, counter, env) as (base, pid):
                yield base, [pid, redis._proc.pid]
    else:
        with server(system, workers, directory, counter, package=package) as (base, pid):
            yield base, [pid]


def _wait_ready(base: str, proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{base}/ready", timeout=1) as response:
                response.read()
                return
        time.sleep(0.1)
    raise RuntimeError(f"{base} not ready after {timeout}s")


def _wait_started(
    directory: str, workers: int, proc: subprocess.Popen[bytes], *, timeout: float
) -> None:
    """Until every worker has finished its lifespan startup: with 4 workers the first one
    answers while the others still import and open their caches, on the same 2 cores."""
    deadline = time.monotonic() + timeout
    while len(os.listdir(directory)) < workers:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(os.listdir(directory))} of {workers} workers started")
        time.sleep(0.05)


_LUA = """
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "%s" .. (counter %% %d))
end
"""


def load(base: str, prefix: str, seconds: float, connections: int) -> tuple[float, float, int]:
    """(requests/second, p99 ms, requests) of ``GET {prefix}{0..99}`` from another process."""
    if shutil.which("wrk"):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(_LUA % (prefix, URLS))
        try:
            out = subprocess.run(
                ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "-s", script.name, base],
                capture_output=True, text=True, timeout=seconds + 30, check=True,
            ).stdout  # fmt: skip
        finally:
            os.unlink(script.name)
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if errors:  # a benchmark of error pages measures nothing
            raise RuntimeError(f"{base}{prefix}*: {errors.group(1)} non-2xx responses")
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
        p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
        assert p99 is not None, out
        scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[p99.group(2)]
        count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
        return rps, float(p99.group(1)) * scale, count
    out = subprocess.run(
        [sys.executable, __file__, "--_load", base, prefix, str(seconds), str(connections)],
        capture_output=True, text=True, timeout=seconds + 30, check=True,
    ).stdout  # fmt: skip
    rps, p99, count = json.loads(out)
    return float(rps), float(p99), int(count)


async def _python_load(base: str, prefix: str, seconds: float, connections: int) -> None:
    """The fallback load generator (closed loop, keep-alive), printing [rps, p99 ms]."""
    import aiohttp

    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def client(index: int, session: aiohttp.ClientSession) -> None:
        n = index
        while time.perf_counter() < stop:
            start = time.perf_counter()
            async with session.get(f"{base}{prefix}{n % URLS}") as response:
                await response.read()
                if response.status >= 400:
                    raise RuntimeError(f"{response.url}: {response.status}")
            latencies.append(time.perf_counter() - start)
            n += connections

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        began = time.perf_counter()
        await asyncio.gather(*(client(i, session) for i in range(connections)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1e3 if latencies else 0.0
    print(json.dumps([len(latencies) / elapsed, p99, len(latencies)]))


async def _burst(base: str, path: str, n: int) -> tuple[float, set[str]]:
    """``n`` concurrent GETs of one URL: (wall seconds, X-Cache values seen)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=n)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> str:
            async with session.get(base + path) as response:
                await response.read()
                assert response.status == 200, response.status
                return response.headers.get("x-cache", "-")

        start = time.perf_counter()
        seen = await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - start, set(seen)


# -- the run ---------------------------------------------------------------------------
RUNS = [  # (label, system, URL prefix)
    ("bare", "bare", "/"),
    ("app", "app", "/items/"),
    ("app-trivial", "app", "/trivial/"),
    ("shardcache", "shardcache", "/items/"),
    ("shardcache-wrapped", "shardcache-wrapped", "/items/"),
    ("fastapi-cache2", "fastapi-cache2", "/items/"),
    ("fastapi-cache2-redis", "fastapi-cache2-redis", "/items/"),
    ("nginx", "nginx", "/items/"),
    ("nostore-app", "app", "/nostore/"),
    ("nostore-shardcache", "shardcache", "/nostore/"),
    ("nostore-50ms-app", "app", "/nostore-slow/"),
    ("nostore-50ms-shardcache", "shardcache", "/nostore-slow/"),
]
COLD = [
    ("cold-shardcache", "shardcache"),
    ("cold-fastapi-cache2", "fastapi-cache2"),
    ("cold-fastapi-cache2-redis", "fastapi-cache2-redis"),
    ("cold-nginx", "nginx"),
]
# (name, numerator, denominator, field, target text)
RATIOS = [
    ("HIT / bare ceiling", "shardcache", "bare", "rps", ">= 0.6"),
    ("HIT (wrapped app) / bare", "shardcache-wrapped", "bare", "rps", ">= 0.6"),
    ("HIT / app trivial endpoint", "shardcache", "app-trivial", "rps", ">= 1.5"),
    ("HIT / fastapi-cache2 memory", "shardcache", "fastapi-cache2", "rps", ">= 6"),
    ("HIT / fastapi-cache2 Redis", "shardcache", "fastapi-cache2-redis", "rps", ">= 8"),
    ("HIT / nginx proxy_cache", "shardcache", "nginx", "rps", ">= 0.25"),
    ("HIT / uncached 50 ms app", "shardcache", "app", "rps", ""),
    ("HIT p99 / bare p99", "shardcache", "bare", "p99_ms", "<= 2"),
    ("HIT (wrapped) p99 / bare p99", "shardcache-wrapped", "bare", "p99_ms", "<= 2"),
    ("no-store: middleware / app", "nostore-shardcache", "nostore-app", "rps", ">= 0.85"),
    ("no-store p99: middleware / app", "nostore-shardcache", "nostore-app", "p99_ms", "<= 2"),
    (
        "no-store 50 ms: middleware / app",
        "nostore-50ms-shardcache",
        "nostore-50ms-app",
        "rps",
        ">= 0.85",
    ),
    ("no-store 50 ms p99", "nostore-50ms-shardcache", "nostore-50ms-app", "p99_ms", "<= 2"),
    ("cold URL wall: shardcache / nginx", "cold-shardcache", "cold-nginx", "wall_ms", "<= 0.3"),
    # Server CPU per request, inverted (capacity): noise from other tenants moves it less.
    ("CPU: HIT capacity / bare", "bare", "shardcache", "cpu_us", ""),
    ("CPU: HIT (wrapped) capacity / bare", "bare", "shardcache-wrapped", "cpu_us", ""),
    ("CPU: no-store capacity / app", "nostore-app", "nostore-shardcache", "cpu_us", ""),
]


Run = tuple[str, str, str, "str | None"]  # (label, system, URL prefix, package directory)
Cold = tuple[str, str, "str | None"]  # (label, system, package directory)
BASELINE = "@baseline"


def plan(systems: str | None, baseline: str | None) -> tuple[list[Run], list[Cold]]:
    """The runs and cold-URL tests chosen by ``--systems`` (all by default), each shardcache
    one twice with ``--baseline`` (the second on the baseline package)."""
    chosen = None if systems is None else set(systems.split(","))
    known = {label for label, _, _ in RUNS} | {label for label, _ in COLD}
    if chosen is not None and not chosen <= known:
        raise SystemExit(f"--systems: unknown {sorted(chosen - known)}; known: {sorted(known)}")
    runs: list[Run] = []
    for label, system, prefix in RUNS:
        if chosen is None or label in chosen:
            runs.append((label, system, prefix, None))
            if baseline and system.startswith("shardcache"):
                runs.append((label + BASELINE, system, prefix, baseline))
    cold: list[Cold] = []
    for label, system in COLD:
        if chosen is None or label in chosen:
            cold.append((label, system, None))
            if baseline and system.startswith("shardcache"):
                cold.append((label + BASELINE, system, baseline))
    return runs, cold


def measure(
    workers: int, seconds: float, connections: int, reps: int, runs: list[Run], cold: list[Cold]
) -> dict[str, Any]:
    """Every system ``reps`` times, interleaved, so that a slow spell hits all of them."""
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="asgi-bench-") as tmp:
        for rep in range(reps):
            results: dict[str, Any] = {}
            for label, system, prefix, package in runs:
                directory = os.path.join(tmp, f"cache-{label}-{rep}")
                counter = os.path.join(tmp, f"count-{label}-{rep}")
                with serve(system, workers, directory, counter, package) as (base, pids):
                    # Every system gets one second of the same load first: the HIT systems
                    # fill their caches, a no-store URL becomes known as "pass" in every
                    # worker (PERF.md's target is about requests once it is known; the
                    # first ones are what ``cold`` measures), and every worker is warm.
                    load(base, prefix, 1, connections)
                    cpu = sum(_tree_cpu(pid) for pid in pids)
                    rps, p99, count = load(base, prefix, seconds, connections)
                    cpu_us = (sum(_tree_cpu(pid) for pid in pids) - cpu) / max(count, 1) * 1e6
                results[label] = {"rps": rps, "p99_ms": p99, "cpu_us": cpu_us}
                print(
                    f"  workers={workers} rep={rep} {label:<33} {rps:>9.0f} req/s  p99 {p99:7.1f} ms"
                    f"  server CPU {cpu_us:6.1f} us/req",
                    file=sys.stderr,
                )
            for label, system, package in cold:
                directory = os.path.join(tmp, f"cache-{label}-{rep}")
                counter = os.path.join(tmp, f"count-{label}-{rep}")
                with serve(system, workers, directory, counter, package) as (base, _):
                    wall, seen = asyncio.run(_burst(base, "/cold/1", 200))
                body_runs = os.path.getsize(counter) if os.path.exists(counter) else 0
                results[label] = {
                    "body_runs": body_runs,
                    "wall_ms": wall * 1e3,
                    "x_cache": sorted(seen),
                }
                print(
                    f"  workers={workers} rep={rep} {label:<33} body ran {body_runs} times,"
                    f" {wall * 1e3:.0f} ms",
                    file=sys.stderr,
                )
            rounds.append(results)
    return {"rounds": rounds}


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def _ratios(labels: set[str]) -> list[tuple[str, str, str, str, str]]:
    """The RATIOS whose systems ran, each also on the baseline package when it ran."""
    chosen = []
    for name, num, den, field, target in RATIOS:
        if num in labels and den in labels:
            chosen.append((name, num, den, field, target))
            base_num = num + BASELINE if num + BASELINE in labels else num
            base_den = den + BASELINE if den + BASELINE in labels else den
            if (base_num, base_den) != (num, den):
                chosen.append((name + " [baseline]", base_num, base_den, field, target))
    return chosen


def report(all_results: dict[int, dict[str, Any]], runs: list[Run], cold: list[Cold]) -> None:
    reps = len(next(iter(all_results.values()))["rounds"])
    print(
        f"\nCacheMiddleware under load: wrk -t2 -c64 on 127.0.0.1, medians of {reps} interleaved rounds\n"
    )
    columns = "".join(
        f"{f'req/s {w}w':>12}{f'p99 ms {w}w':>12}{f'CPU us {w}w':>12}" for w in all_results
    )
    print(f"{'system':<35}{columns}")
    for label, _, _, _ in runs:
        row = f"{label:<35}"
        for results in all_results.values():
            rounds = results["rounds"]
            row += f"{_median([r[label]['rps'] for r in rounds]):>12.0f}"
            row += f"{_median([r[label]['p99_ms'] for r in rounds]):>12.1f}"
            row += f"{_median([r[label]['cpu_us'] for r in rounds]):>12.1f}"
        print(row)
    print("(CPU us: server CPU time per request, every worker process counted)")
    print("\nratios (each taken inside one round, then the median):")
    print(f"{'':<49}" + "".join(f"{f'{w} worker(s)':>14}" for w in all_results) + "   target")
    labels = {label for label, _, _, _ in runs} | {label for label, _, _ in cold}
    for name, num, den, field, target in _ratios(labels):
        row = f"  {name:<47}"
        for results in all_results.values():
            ratio = _median([r[num][field] / r[den][field] for r in results["rounds"]])
            row += f"{ratio:>13.2f}x"
        print(row + f"   {target}")
    print()
    for workers, results in all_results.items():
        for label, _, _ in cold:
            body_runs = [r[label]["body_runs"] for r in results["rounds"]]
            wall = _median([r[label]["wall_ms"] for r in results["rounds"]])
            print(
                f"  {workers} worker(s) {label:<35} 200 concurrent requests to one cold URL: "
                f"body ran {body_runs} time(s), median wall {wall:.0f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", default="1,4")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--systems", help="comma-separated labels to run (default: all)")
    parser.add_argument(
        "--baseline", help="a directory holding another shardcache package, run side by side"
    )
    parser.add_argument("--_load", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._load:
        base, prefix, seconds, connections = args._load
        asyncio.run(_python_load(base, prefix, float(seconds), int(connections)))
        return
    baseline = None
    if args.baseline:
        baseline = str(Path(args.baseline).resolve())
        if not (Path(baseline) / "shardcache" / "__init__.py").is_file():
            raise SystemExit(f"--baseline {args.baseline}: no shardcache package in it")
    runs, cold = plan(args.systems, baseline)
    if not shutil.which("wrk"):
        print("wrk not found: using the asyncio load generator (slower than wrk)", file=sys.stderr)
    all_results = {
        int(w): measure(int(w), args.seconds, args.connections, args.reps, runs, cold)
        for w in args.workers.split(",")
    }
    report(all_results, runs, cold)
    if args.json:
        Path(args.json).write_text(json.dumps(all_results, indent=2))


if __name__ == "__main__":
    main()
