"""Where a request's response lives, which rules apply to it, and how a HIT is answered
without re-reading the stored response's fields (for :class:`~shardcache.asgi.CacheMiddleware`).

* :class:`Routing` -- the primary key of a request (memoized per scheme, host, path and
  query: computing one normalizes the URL) and the :class:`~shardcache._http.CachePolicy`
  of its path (``rules``, first match wins; memoized per path). Both memos are bounded.
* :class:`HitPlan` -- a stored response's :class:`~shardcache._http.ReusePlan` and its HIT
  header template, kept per key (:class:`HitPlans`) while the entry read from the cache
  has the same status, header fields, exchange times and ``vary`` record: everything the
  plan depends on. The body is not kept here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

from ._asgi_exchange import Scope
from ._http import (
    CachePolicy,
    StoredResponse,
    asgi_url,
    first_header,
    invalidation_keys,
    primary_key_asgi,
    reuse_plan,
    serve_headers,
)

__all__ = ["HitPlan", "HitPlans", "KeyFunction", "Routing"]

logger = logging.getLogger("shardcache.asgi")

#: ``key(scope, default_key) -> key | None``: the primary key of a GET/HEAD request.
KeyFunction = Callable[[Scope, str], "str | None"]
MEMO_SIZE: Final = 4096  # entries per memo; a full memo is cleared (paths come from clients)


class Routing:
    """Primary keys and per-path policies; see the module docstring."""

    __slots__ = ("_key_function", "_keys", "_policies", "_policy", "_rules")

    def __init__(
        self,
        policy: CachePolicy,
        rules: Sequence[tuple[re.Pattern[str], CachePolicy | None]],
        key_function: KeyFunction | None,
    ) -> None:
        self._policy = policy
        self._rules = rules
        self._key_function = key_function
        self._keys: dict[tuple[str, bytes | str, bytes, bytes], str | None] = {}
        self._policies: dict[tuple[str, str], CachePolicy | None] = {}

    def policy(self, scope: Scope) -> CachePolicy | None:
        """The policy for the request's path; ``None``: a rule says never cache it.

        A rule is written against the app's own routes, and matches the path as the app
        routes it (without the ``root_path`` that uvicorn's ``--root-path`` and a
        Starlette ``Mount`` leave at its start) as well as the full path: a "never cache"
        rule must not stop working behind a proxy prefix."""
        if not self._rules:
            return self._policy
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        try:
            return self._policies[root, path]
        except KeyError:
            route = path[len(root) :] if root and path.startswith(root) else path
            policy: CachePolicy | None = self._policy
            for pattern, rule_policy in self._rules:
                if pattern.match(route) or pattern.match(path):
                    policy = rule_policy
                    break
            if len(self._policies) >= MEMO_SIZE:
                self._policies.clear()
            self._policies[root, path] = policy
            return policy

    def primary_key(self, scope: Scope) -> str | None:
        """``GET`` + scheme + host + path + query, or the key function's; ``None``: do not
        cache (the key function said so, or the host or path cannot be part of a URL)."""
        # The Host field's bytes as the memo's: decoding them is left to a memo miss (this
        # runs on every request, hit-for-pass ones included). Any other way to the host
        # gives a str, which never equals a bytes part of the memo key.
        host: bytes | str | None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
                break
        else:
            host = request_host(scope)
            if host is None:
                return None
        scheme: str = scope["scheme"]
        path = raw_path(scope)
        query: bytes = scope.get("query_string", b"")
        memo = (scheme, host, path, query)
        try:
            key = self._keys[memo]
        except KeyError:
            try:
                text = host if isinstance(host, str) else host.decode("latin-1")
                key = primary_key_asgi("GET", scheme, text, path, query)
            except ValueError:
                key = None
            if len(self._keys) >= MEMO_SIZE:
                self._keys.clear()
            self._keys[memo] = key
        if key is not None and self._key_function is not None:
            return self._custom_key(scope, key)
        return key

    def _custom_key(self, scope: Scope, key: str) -> str | None:
        """The key function's answer; a key function that raises passes the request to
        the app uncached (a cache failure never fails a request), logged."""
        assert self._key_function is not None
        try:
            return self._key_function(scope, key)
        except Exception:
            logger.exception("CacheMiddleware key function failed for %r: not cached", key)
            return None

    def invalidated(self, scope: Scope, method: str, status: int, headers: Any) -> list[str]:
        """The primary keys an unsafe request's response drops (RFC 9111 §4.4)."""
        host = request_host(scope)
        if host is None:
            return []
        try:
            url = asgi_url(scope["scheme"], host, raw_path(scope), scope.get("query_string", b""))
            found = invalidation_keys(method, status, url, list(headers), sort_query=False)
        except ValueError:
            return []  # not a URL anything could have been stored under
        keys = found if self._key_function is None else [self._custom_key(scope, k) for k in found]
        return [key for key in dict.fromkeys(keys) if key is not None]


def request_host(scope: Scope) -> str | None:
    """The ``Host`` header (ASGI names are lowercase; others are looked up too), else the
    server address."""
    headers = scope["headers"]
    for name, value in headers:
        if name == b"host":
            return value.decode("latin-1")  # type: ignore[no-any-return]
    value = first_header(headers, b"host")
    if value is not None:
        return value.decode("latin-1")
    server = scope.get("server")
    if not server:
        return None
    host, port = server
    return host if port is None else f"{host}:{port}"


def raw_path(scope: Scope) -> bytes:
    """The path as sent (``raw_path`` tells ``/a%2Fb`` from ``/a/b``), without a query."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        path: str = scope["path"]
        return path.encode("utf-8")
    return raw.partition(b"?")[0]


class HitPlan:
    """A stored response's ReusePlan and HIT header template; see the module docstring."""

    __slots__ = (
        "age_index",
        "fields",
        "headers",
        "policy",
        "request_time",
        "response_time",
        "reuse",
        "status",
        "vary",
    )

    def __init__(
        self, stored: StoredResponse, policy: CachePolicy, hit: tuple[tuple[bytes, bytes], ...]
    ) -> None:
        self.response_time = stored.response_time
        self.request_time = stored.request_time
        self.status = stored.status
        self.fields = stored.headers
        self.vary = stored.vary
        self.policy = policy
        self.reuse = reuse_plan(stored, policy)
        #: The served fields (Age in its place, RFC 9111 §5.1) and the HIT header.
        self.headers = serve_headers(stored, now=stored.response_time) + list(hit)
        self.age_index = next(i for i, (name, _) in enumerate(self.headers) if name == b"age")

    def serves(self, stored: StoredResponse, policy: CachePolicy) -> bool:
        """True when this plan was made from this entry (read again) under this policy."""
        return (
            stored.response_time == self.response_time
            and stored.request_time == self.request_time
            and stored.status == self.status
            and policy is self.policy
            and stored.headers == self.fields
            and stored.vary == self.vary
        )

    def response_headers(self, now: float) -> list[tuple[bytes, bytes]]:
        """The HIT's header fields at ``now``."""
        headers = self.headers.copy()
        headers[self.age_index] = (b"age", self.reuse.age_header(now))
        return headers


class HitPlans:
    """The :class:`HitPlan` of each key recently served (bounded)."""

    __slots__ = ("_hit", "_plans")

    def __init__(self, hit: tuple[tuple[bytes, bytes], ...]) -> None:
        self._hit = hit
        self._plans: dict[str, HitPlan] = {}

    def get(self, key: str, stored: StoredResponse, policy: CachePolicy) -> HitPlan:
        plan = self._plans.get(key)
        if plan is None or not plan.serves(stored, policy):
            plan = HitPlan(stored, policy, self._hit)
            if len(self._plans) >= MEMO_SIZE:
                self._plans.clear()
            self._plans[key] = plan
        return plan
