"""Run the HTTP cache conformance suite (https://cache-tests.fyi) against CacheMiddleware.

The suite (github.com/http-tests/cache-tests, ``npm i`` done) tests a caching proxy; here it
is CacheMiddleware around an httpx reverse proxy, served by uvicorn in this process, all on
127.0.0.1: suite CLI ─▶ uvicorn (h11) ─▶ CacheMiddleware ─▶ proxy ─▶ suite origin server.
Results are classified by the suite's own ``results.mjs`` (see docs/asgi.md, "Conformance").

    python tests/conformance/cache_tests.py --suite ../cache-tests [--json out.json]
        [--id TEST_ID] [--middleware-option ttl=60 ...]
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import json
import os
import shlex
import socket
import sys
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import uvicorn.protocols.http.h11_impl as h11_impl

from shardcache import AsyncCache, ConfigurationError
from shardcache.asgi import ASGIApp, CacheMiddleware

Message = MutableMapping[str, Any]  # an ASGI scope or event
Process = asyncio.subprocess.Process

# Hop-by-hop fields (RFC 9110 §7.6.1) and the length, which the proxy handles itself. The
# origin's `Connection` field and the fields it names pass through: not storing those is
# the middleware's job (RFC 9111 §3.1), which the suite checks.
_HOP = frozenset(
    b"content-length keep-alive proxy-connection te trailer transfer-encoding upgrade".split()
)
# The origin answers 999 to a request the test did not expect; uvicorn knows only 100-599.
h11_impl.STATUS_PHRASES[999] = b"Unexpected Request"
# Preloaded into the origin (NODE_OPTIONS), whose server.listen(port) takes every interface.
_LOOPBACK_CJS = """const net = require('net'); const listen = net.Server.prototype.listen
net.Server.prototype.listen = function (port, ...rest) {
  return typeof port === 'object' ? listen.call(this, port, ...rest)
    : listen.call(this, port, '127.0.0.1', ...rest) }
"""
# Classifies our results and the published ones with the suite's own code.
_CLASSIFY_MJS = """import fs from 'fs'
import { pathToFileURL } from 'url'
const [suite, ours] = process.argv.slice(2)
const load = p => import(pathToFileURL(`${suite}/${p}`).href)
const read = p => JSON.parse(fs.readFileSync(p))
const tests = (await load('tests/index.mjs')).default
const { determineTestResult, resultTypes } = await load('test-engine/lib/results.mjs')
const kindOf = r => Object.keys(resultTypes).find(k => resultTypes[k] === r)
const classify = results => tests.flatMap(s => s.tests.filter(t => !t.browser_only).map(
  t => [t.id, kindOf(determineTestResult(tests, t.id, results)), results[t.id] ?? null]))
const dir = `${suite}/results`, peers = {}
for (const f of fs.existsSync(dir) ? fs.readdirSync(dir).filter(f => f.endsWith('.json')) : [])
  peers[f.slice(0, -5)] = classify(read(`${dir}/${f}`)).filter(([, k]) => k === 'fail').length
console.log(JSON.stringify({ tests: classify(read(ours)), peers }))
"""


class HarnessError(Exception):
    """The run could not complete: a process did not start, failed, or timed out."""


def make_proxy(client: httpx.AsyncClient, origin: str) -> ASGIApp:
    """An ASGI app forwarding each HTTP request to ``origin``, bodies buffered."""

    async def proxy(
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":  # the middleware stops its refreshes at shutdown
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        drop = _HOP | {b"connection", b"host"}
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in drop]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope["query_string"]:
            target += b"?" + scope["query_string"]
        url = origin + target.decode("latin-1")
        request = client.build_request(scope["method"], url, headers=headers, content=bytes(body))
        try:
            response = await client.send(request, stream=True)
            async with contextlib.aclosing(response):  # raw: Content-Encoding is the origin's
                content = b"".join([chunk async for chunk in response.aiter_raw()])
        except httpx.HTTPError as exc:  # e.g. a Transfer-Encoding httpx cannot decode
            status, out, content = 502, [], f"{type(exc).__name__}: {exc}".encode()
        else:
            status = response.status_code
            out = [(k.lower(), v) for k, v in response.headers.raw if k.lower() not in _HOP]
        out.append((b"content-length", b"%d" % len(content)))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": content})

    return proxy


def middleware_option(pair: str) -> tuple[str, Any]:
    """``ttl=60``, ``statuses=(200, 404)``, ``cookies=ignore``: a Python literal, else text."""
    name, sep, text = pair.partition("=")
    if not sep:
        raise ValueError(pair)
    try:
        return name, ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return name, text


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # Ctrl-C cancels the run, clean-up included, instead of stopping uvicorn alone


async def spawn(suite: Path, script: str, env: dict[str, str], piped: bool) -> Process:
    """A package.json script as ``npm run`` runs it, minus npm (so one pid to stop)."""
    package = json.loads((suite / "package.json").read_text())
    config = {f"npm_package_config_{k}": str(v) for k, v in package["config"].items()}
    command = shlex.split(package["scripts"][script])
    stdout = asyncio.subprocess.PIPE if piped else None
    env = {**os.environ, **config, **env}
    return await asyncio.create_subprocess_exec(*command, cwd=suite, env=env, stdout=stdout)


async def stop(proc: Process) -> None:
    """Terminates a child this script started, by its pid; kills it if it lingers."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def finish(starting: Awaitable[Process], what: str, timeout: float) -> bytes:
    """Waits at most ``timeout`` seconds for a process to succeed; its stdout, if piped."""
    proc = await starting
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        raise HarnessError(f"{what} gave no result in {timeout:.0f} s") from None
    finally:
        await stop(proc)
    if proc.returncode:
        raise HarnessError(f"{what} exited with status {proc.returncode}")
    return out or b""


async def watch_origin(origin: Process, ready: asyncio.Event, echo: bool) -> None:
    """Reads the origin's log: ``ready`` once it listens (or exits); echoed with ``--id``."""
    assert origin.stdout is not None
    try:
        async for line in origin.stdout:
            if line.startswith(b"Listening on"):
                ready.set()
            elif echo:
                sys.stdout.buffer.write(line)
                sys.stdout.buffer.flush()
    finally:
        ready.set()


async def conformance(args: argparse.Namespace, tmp: Path) -> bytes:
    """Starts the origin, then the middleware's proxy, and runs the suite's CLI."""
    with socket.socket() as probe:  # a free port for the origin (it takes no port 0)
        probe.bind(("127.0.0.1", 0))
        origin_port = probe.getsockname()[1]
    # No keep-alive to the origin: a connection it closed when idle would fail a request.
    limits = httpx.Limits(max_keepalive_connections=0)
    async with (
        AsyncCache(tmp / "cache") as cache,
        httpx.AsyncClient(timeout=30, limits=limits) as client,
    ):
        client.headers.clear()  # no User-Agent, Accept-Encoding... the suite did not send
        proxy = make_proxy(client, f"http://127.0.0.1:{origin_port}")
        app = CacheMiddleware(proxy, cache=cache, **dict(args.options))
        (tmp / "loopback.cjs").write_text(_LOOPBACK_CJS)
        env = {"npm_config_port": str(origin_port), "npm_config_pidfile": str(tmp / "pid")}
        env["NODE_OPTIONS"] = f"--require {tmp / 'loopback.cjs'}"
        origin = await spawn(args.suite, "server", env, piped=True)
        ready = asyncio.Event()
        watching = asyncio.create_task(watch_origin(origin, ready, echo=bool(args.id)))
        try:
            try:
                await asyncio.wait_for(ready.wait(), 30)
            except TimeoutError:
                raise HarnessError("the suite's origin server did not listen in 30 s") from None
            if watching.done():
                raise HarnessError(f"the suite's origin server exited ({origin.returncode})")
            return await serve_and_run(args, app)
        finally:
            await stop(origin)
            await watching  # ends with the origin's stdout


async def serve_and_run(args: argparse.Namespace, app: CacheMiddleware) -> bytes:
    """Serves ``app`` on a free 127.0.0.1 port while the suite's CLI runs against it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)  # the CLI's connections queue until uvicorn accepts them
        config = uvicorn.Config(
            app, http="h11", lifespan="on", log_level="warning",
            date_header=False, server_header=False,  # the origin's own Date, not a second one
        )  # fmt: skip
        server = _Server(config)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        env = {"npm_config_base": f"http://127.0.0.1:{listener.getsockname()[1]}"}
        env |= {"npm_config_id": args.id} if args.id else {}
        starting = spawn(args.suite, "cli", env, piped=not args.id)
        cli = asyncio.create_task(finish(starting, "the suite's CLI", args.timeout))
        try:
            await asyncio.wait({serving, cli}, return_when=asyncio.FIRST_COMPLETED)
            if not cli.done():
                raise HarnessError(f"uvicorn stopped during the run: {serving.exception()!r}")
            return await cli
        finally:
            server.should_exit = True
            cli.cancel()  # its finally stops the CLI's process
            await asyncio.wait({serving, cli})


async def summarize(suite: Path, results_file: Path, tmp: Path) -> None:
    (tmp / "classify.mjs").write_text(_CLASSIFY_MJS)
    starting = asyncio.create_subprocess_exec(
        "node", tmp / "classify.mjs", suite, results_file, stdout=asyncio.subprocess.PIPE
    )
    tests = json.loads(await finish(starting, "classify.mjs", 60))
    counts = Counter(kind for _, kind, _ in tests["tests"])
    version = json.loads((suite / "package.json").read_text())["version"]
    print(f"cache-tests {version}: " + ", ".join(f"{k} {n}" for k, n in counts.items()), end="")
    for listed in ("fail", "optional_fail", "setup_fail", "harness_fail", "retry"):
        failing = [(test_id, r) for test_id, kind, r in tests["tests"] if kind == listed]
        print(f"\n\n{listed} ({len(failing)}):" if failing else "", end="")
        for test_id, result in failing:
            detail = ": ".join(map(str, result)) if isinstance(result, list) else result
            print(f"\n  {test_id:48} {detail}", end="")
    peers = ", ".join(f"{name} {n}" for name, n in sorted(tests["peers"].items()))
    print(f"\n\nrequired failures in the published results/: {peers or 'none found'}")


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="cache-tests-") as name:
        tmp = Path(name)
        out = await conformance(args, tmp)
        if not args.id:  # the CLI's JSON, same shape as the published results/*.json
            results_file = (args.json or tmp / "results.json").resolve()
            results_file.write_bytes(out)
            await summarize(args.suite, results_file, tmp)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", type=Path, required=True, help="cache-tests checkout")
    parser.add_argument("--json", type=Path, help="write the suite's raw results here")
    parser.add_argument("--id", help="run this one test and print its exchanges")
    parser.add_argument(
        "--middleware-option", dest="options", action="append", default=[],
        type=middleware_option, metavar="NAME=VALUE", help="a CacheMiddleware keyword argument",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the suite's CLI")
    args = parser.parse_args()
    if args.id and args.json:
        parser.error("--id prints one test's exchanges; it writes no --json")
    if not (args.suite / "test-engine" / "cli.mjs").is_file():
        parser.error(f"--suite {args.suite}: not a cache-tests checkout")
    args.suite = args.suite.resolve()
    try:
        asyncio.run(main(args))
    except (HarnessError, ConfigurationError) as exc:
        sys.exit(f"cache_tests.py: {exc}")
    except KeyboardInterrupt:
        sys.exit(130)
