"""The decisions: may a request use the cache, may a response be stored, may a stored
response answer a request (RFC 9111 §3, §3.1, §3.5, §4).

Each function reads plain values (a method, raw header pairs, a status, a
:class:`~shardcache._http.CachePolicy`) and returns a decision with a reason, so a driver
is a short I/O loop around :func:`decide_request`, :func:`decide_store` and
:func:`decide_reuse`.

>>> policy = CachePolicy(shared=True, default_ttl=60)
>>> decision = decide_store("GET", [], 200, [(b"cache-control", b"private")], policy)
>>> decision.store, decision.reason
(False, 'response Cache-Control: private, and this cache is shared (RFC 9111 §5.2.2.7)')
"""

from __future__ import annotations

from typing import Final

from ._cache_control import CacheControl, request_cache_control, response_cache_control
from ._freshness import age_header_value, is_fresh, is_stale_usable, storage_ttl
from ._headers import (
    HeaderList,
    RawHeaders,
    has_header,
    header_members,
    replace_header,
    without_headers,
)
from ._keys import vary_matches, vary_names, vary_values
from ._records import (
    CachePolicy,
    RequestDecision,
    Reuse,
    ReuseDecision,
    StoreDecision,
    StoredResponse,
)

__all__ = [
    "LOOKUP_METHODS",
    "build_stored_response",
    "cookie_shareable",
    "decide_request",
    "decide_reuse",
    "decide_store",
    "redirect_ttl",
    "request_has_credentials",
    "serve_headers",
    "storable_headers",
]

#: Methods a stored response can answer: GET, and HEAD from the GET entry (RFC 9110 §9.3.2).
LOOKUP_METHODS: Final = frozenset({"GET", "HEAD"})
# RFC 9111 §3.1: hop-by-hop fields are never stored (nor the fields Connection names).
_HOP_BY_HOP: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"transfer-encoding", b"upgrade"}
)
# RFC 9111 §4.3.2 / RFC 9110 §13.2.1: preconditions only the origin can evaluate.
_ORIGIN_PRECONDITIONS: Final = (b"if-match", b"if-unmodified-since", b"if-range")
_NO_DIRECTIVES: Final = CacheControl()


def _directives(headers: RawHeaders, policy: CachePolicy) -> CacheControl | None:
    """The response directives this cache applies (``None``: it ignores them)."""
    if not policy.cache_control:
        return None
    return response_cache_control(headers, policy.targeted)[0]


def _authorized_storage_allowed(response: CacheControl, policy: CachePolicy) -> bool:
    # RFC 9111 §3.5: a shared cache stores a response to a request with Authorization only
    # when it says public, s-maxage or must-revalidate.
    return policy.cache_control and (
        response.public or response.s_maxage is not None or response.must_revalidate
    )


def _cookie_storage_allowed(
    response: CacheControl, response_headers: RawHeaders, policy: CachePolicy
) -> bool:
    # ``policy.cookie_credentials``: the origin vouched for sharing with explicit freshness
    # (or public/must-revalidate, as §3.5), or made the cookie part of the key (§4.1).
    if "cookie" in vary_names(response_headers):
        return True
    return policy.cache_control and (
        response.public
        or response.s_maxage is not None
        or response.max_age is not None
        or response.must_revalidate
        or has_header(response_headers, b"expires")
    )


def _cookie_refused(
    request_headers: RawHeaders,
    response: CacheControl | None,
    response_headers: RawHeaders,
    policy: CachePolicy,
) -> bool:
    return (
        policy.shared
        and policy.cookie_credentials
        and has_header(request_headers, b"cookie")
        and not _cookie_storage_allowed(response or _NO_DIRECTIVES, response_headers, policy)
    )


def cookie_shareable(stored: StoredResponse, policy: CachePolicy) -> bool:
    """Whether ``stored`` may answer a request with ``Cookie`` under ``cookie_credentials``:
    it is explicitly cacheable or varies on ``Cookie`` (see :class:`CachePolicy`).

    >>> from ._records import StoredResponse
    >>> stored = StoredResponse(status=200, body=b"", request_time=0.0, response_time=0.0,
    ...     headers=[(b"cache-control", b"max-age=60")])
    >>> cookie_shareable(stored, CachePolicy(cookie_credentials=True))
    True
    """
    response = _directives(stored.headers, policy)
    return _cookie_storage_allowed(response or _NO_DIRECTIVES, stored.headers, policy)


def request_has_credentials(request_headers: RawHeaders, policy: CachePolicy) -> bool:
    """True when a shared cache may store or reuse a response to this request only if the
    response allows it explicitly: it carries ``Authorization`` (RFC 9111 §3.5) or, with
    ``policy.cookie_credentials``, ``Cookie``. False for a private cache.

    A driver uses it before any response is known, e.g. to keep such requests from
    waiting on another request's response that they may well be unable to use.

    >>> request_has_credentials([(b"authorization", b"Bearer x")], CachePolicy())
    True
    >>> request_has_credentials([(b"cookie", b"id=1")], CachePolicy())
    False
    """
    if not policy.shared:
        return False
    return has_header(request_headers, b"authorization") or (
        policy.cookie_credentials and has_header(request_headers, b"cookie")
    )


def decide_request(
    method: str, request_headers: RawHeaders, policy: CachePolicy
) -> RequestDecision:
    """Whether a request may be answered from the cache, and whether its response may be
    stored (RFC 9111 §3, §4, §5.2.1).

    * Only GET and HEAD are looked up; only GET responses are stored (a HEAD response has
      no content; HEAD is answered from the GET entry).
    * ``no-store`` (§5.2.1.5): neither. ``no-cache`` (§5.2.1.4), ``Pragma: no-cache``
      without ``Cache-Control`` (§5.4) and ``max-age=0`` (§5.2.1.1): no lookup, but the
      fresh response refreshes the cache.
    * ``Range`` (§3.3: partial content is not stored or assembled here) and preconditions
      only an origin can evaluate (``If-Match``, ``If-Unmodified-Since``, ``If-Range``,
      §4.3.2): no lookup.
    * ``Authorization`` is not decided here: :func:`decide_store` and :func:`decide_reuse`
      apply §3.5 once the response is known.

    >>> decision = decide_request("GET", [(b"cache-control", b"no-cache")], CachePolicy())
    >>> decision.lookup, decision.store
    (False, True)
    """
    if method not in LOOKUP_METHODS:
        return RequestDecision(False, False, f"method {method} is not cached (RFC 9111 §3)")
    directives = request_cache_control(request_headers) if policy.cache_control else _NO_DIRECTIVES
    only = directives.only_if_cached  # §5.2.1.7
    if directives.no_store:
        return RequestDecision(
            False, False, "request Cache-Control: no-store (RFC 9111 §5.2.1.5)", only
        )
    if directives.no_cache:
        return RequestDecision(
            False, True, "request Cache-Control: no-cache (RFC 9111 §5.2.1.4)", only
        )
    if directives.max_age == 0:
        return RequestDecision(False, True, "request max-age=0 (RFC 9111 §5.2.1.1)", only)
    if has_header(request_headers, b"range"):
        return RequestDecision(
            False, True, "range request: partial content is not served (RFC 9111 §3.3)", only
        )
    for name in _ORIGIN_PRECONDITIONS:
        if has_header(request_headers, name):
            reason = f"{name.decode()} is evaluated by the origin only (RFC 9111 §4.3.2)"
            return RequestDecision(False, True, reason, only)
    if method == "HEAD":
        return RequestDecision(True, False, "HEAD: answered from the GET entry, not stored", only)
    return RequestDecision(True, True, "cacheable", only)


def storable_headers(headers: RawHeaders, policy: CachePolicy) -> HeaderList:
    """The response fields a cache keeps (RFC 9111 §3.1, §5.2.2.4, §5.2.2.7).

    Drops hop-by-hop fields and the fields ``Connection`` names (§3.1), the fields listed
    by a qualified ``no-cache="..."`` (§5.2.2.4: they may not be reused without
    revalidation) and, in a shared cache without ``cache_private``, by ``private="..."``.
    """
    drop = set(_HOP_BY_HOP)
    drop.update(member.lower() for member in header_members(headers, b"connection"))
    if policy.cache_control:
        directives = response_cache_control(headers, policy.targeted)[0]
        drop.update(name.encode("latin-1") for name in directives.no_cache_fields)
        if policy.shared and not policy.cache_private:
            drop.update(name.encode("latin-1") for name in directives.private_fields)
    return without_headers(headers, drop)


def decide_store(
    method: str,
    request_headers: RawHeaders,
    status: int,
    response_headers: RawHeaders,
    policy: CachePolicy,
) -> StoreDecision:
    """Whether a response may be stored, and why not (RFC 9111 §3).

    Refused: a method other than GET; a status outside ``policy.cacheable_statuses`` (206
    never: §3.3); ``Vary: *`` (§4.1); ``no-store`` in the request (§5.2.1.5) or response
    (§5.2.2.5, unless ``must-understand`` with a status this cache implements, §5.2.2.3);
    ``private`` in a shared cache without ``cache_private`` (§5.2.2.7); in a shared cache,
    a request with ``Authorization`` unless the response says ``public``, ``s-maxage`` or
    ``must-revalidate`` (§3.5); with ``cookie_credentials``, a request with ``Cookie``
    unless the response is explicitly cacheable or varies on ``Cookie``; a ``Set-Cookie``
    the cache would keep, unless ``allow_set_cookie`` (a shared cache would hand one
    user's cookie to everyone).
    The body size limit and incomplete bodies (§3.3) are the driver's to check.

    >>> decide_store("GET", [], 200, [(b"set-cookie", b"id=1")], CachePolicy()).store
    False
    """
    if method != "GET":
        return StoreDecision(False, f"only GET responses are stored, not {method}")
    if status == 206:
        return StoreDecision(False, "206 partial content is never stored (RFC 9111 §3.3)")
    if status not in policy.cacheable_statuses:
        return StoreDecision(False, f"status {status} is not in cacheable_statuses (RFC 9111 §3)")
    if "*" in vary_names(response_headers):
        return StoreDecision(False, "Vary: * never matches a later request (RFC 9111 §4.1)")
    response = _directives(response_headers, policy)
    if response is not None:
        if request_cache_control(request_headers).no_store:
            return StoreDecision(False, "request Cache-Control: no-store (RFC 9111 §5.2.1.5)")
        # §5.2.2.3: a cache that implements the status code ignores no-store when
        # must-understand is present; every status it stores is one it implements.
        if response.no_store and not response.must_understand:
            return StoreDecision(False, "response Cache-Control: no-store (RFC 9111 §5.2.2.5)")
        if policy.shared and response.private and not policy.cache_private:
            return StoreDecision(
                False,
                "response Cache-Control: private, and this cache is shared (RFC 9111 §5.2.2.7)",
            )
    if (
        policy.shared
        and has_header(request_headers, b"authorization")
        and not _authorized_storage_allowed(response or _NO_DIRECTIVES, policy)
    ):
        return StoreDecision(
            False,
            "request has Authorization and the response is not public, s-maxage or "
            "must-revalidate (RFC 9111 §3.5)",
        )
    if _cookie_refused(request_headers, response, response_headers, policy):
        return StoreDecision(
            False,
            "request has Cookie and the response is neither explicitly cacheable nor "
            "varies on Cookie (cookie_credentials)",
        )
    if not policy.allow_set_cookie and has_header(
        storable_headers(response_headers, policy), b"set-cookie"
    ):
        return StoreDecision(False, "response has Set-Cookie (allow_set_cookie=False)")
    return StoreDecision(True, "storable")


def build_stored_response(
    *,
    request_headers: RawHeaders,
    status: int,
    headers: RawHeaders,
    body: bytes,
    request_time: float,
    response_time: float,
    policy: CachePolicy,
) -> StoredResponse:
    """The :class:`StoredResponse` to store for an exchange :func:`decide_store` accepted.

    Keeps the :func:`storable_headers` and records the request's values of the fields the
    response's ``Vary`` names (RFC 9111 §4.1). ``request_time``/``response_time`` are the
    Unix times the request was sent and the response head received (§4.2.3).
    """
    return StoredResponse(
        status=status,
        headers=storable_headers(headers, policy),
        body=body,
        request_time=request_time,
        response_time=response_time,
        vary=vary_values(vary_names(headers), request_headers),
    )


def redirect_ttl(
    status: int,
    headers: RawHeaders,
    request_headers: RawHeaders,
    policy: CachePolicy,
    *,
    now: float,
) -> float | None:
    """Seconds a followed redirect may stand in for its target: ``None`` = until evicted,
    ``<= 0`` = not at all. A client that stores the final response under the requested URL
    reuses the redirect too, so the redirect must be storable itself (RFC 9111 §3: not
    ``no-store``, no ``Set-Cookie`` the cache would keep, a status in
    ``cacheable_statuses``, so a 302 or 307 is never reused by default) and it lasts only
    as long as its own freshness (§4.2; it has no body to revalidate).

    >>> private = CachePolicy(shared=False, default_ttl=None)  # the aiohttp session's
    >>> redirect_ttl(301, [(b"location", b"/b")], [], private, now=0.0) is None
    True
    >>> redirect_ttl(302, [(b"location", b"/b")], [], private, now=0.0)
    0.0
    """
    if not decide_store("GET", request_headers, status, headers, policy).store:
        return 0.0
    stored = build_stored_response(
        request_headers=request_headers,
        status=status,
        headers=headers,
        body=b"",
        request_time=now,
        response_time=now,
        policy=policy,
    )
    return storage_ttl(stored, policy, now=now, revalidate=False)


def decide_reuse(
    stored: StoredResponse,
    method: str,
    request_headers: RawHeaders,
    policy: CachePolicy,
    *,
    now: float,
    error: bool = False,
) -> ReuseDecision:
    """May ``stored`` answer this request now? (RFC 9111 §4)

    ``NO`` for a method it cannot answer, a ``Vary`` mismatch (§4.1) or, in a shared cache,
    a request with ``Authorization`` when the stored response is not ``public``,
    ``s-maxage`` or ``must-revalidate`` (§3.5) -- and, with ``cookie_credentials``, a
    request with ``Cookie`` when the response is not explicitly cacheable and does not
    vary on ``Cookie``. ``REVALIDATE`` when the response has
    ``no-cache`` (§5.2.2.4), the request has ``no-cache`` (§5.2.1.4), or it is stale and
    may not be served stale. ``FRESH`` when fresh for this request (§4.2, with the
    request's ``max-age``/``min-fresh``). ``STALE_OK`` when stale but allowed (§4.2.4,
    RFC 5861). Pass ``error=True`` after the origin failed (an exception, or 500, 502, 503,
    504): a response the request's own limits rejected is then served if still fresh,
    and ``stale-if-error`` windows count.
    """
    if method not in LOOKUP_METHODS:
        return ReuseDecision(Reuse.NO, f"a stored GET response cannot answer {method}")
    if not vary_matches(stored, request_headers):
        return ReuseDecision(Reuse.NO, "Vary: the request's fields differ (RFC 9111 §4.1)")
    response = _directives(stored.headers, policy)
    if (
        policy.shared
        and has_header(request_headers, b"authorization")
        and not _authorized_storage_allowed(response or _NO_DIRECTIVES, policy)
    ):
        return ReuseDecision(
            Reuse.NO, "request has Authorization; the response is not public (RFC 9111 §3.5)"
        )
    if _cookie_refused(request_headers, response, stored.headers, policy):
        return ReuseDecision(
            Reuse.NO, "request has Cookie; the response is not explicitly cacheable"
        )
    if response is not None:
        if response.no_cache:
            return ReuseDecision(
                Reuse.REVALIDATE, "response Cache-Control: no-cache (RFC 9111 §5.2.2.4)"
            )
        if not error and request_cache_control(request_headers).no_cache:
            return ReuseDecision(
                Reuse.REVALIDATE, "request Cache-Control: no-cache (RFC 9111 §5.2.1.4)"
            )
    if is_fresh(stored, policy, now=now, request_headers=request_headers):
        return ReuseDecision(Reuse.FRESH, "fresh (RFC 9111 §4.2)")
    if error and is_fresh(stored, policy, now=now):
        return ReuseDecision(Reuse.STALE_OK, "the origin failed; the response is still fresh")
    if is_stale_usable(stored, policy, now=now, request_headers=request_headers, error=error):
        return ReuseDecision(Reuse.STALE_OK, "stale, and allowed (RFC 9111 §4.2.4, RFC 5861)")
    return ReuseDecision(Reuse.REVALIDATE, "stale (RFC 9111 §4.2.4)")


def serve_headers(stored: StoredResponse, *, now: float) -> HeaderList:
    """The stored header fields with an ``Age`` for serving them at ``now`` (RFC 9111 §4, §5.1).

    The driver adds its own fields (``X-Cache``) and drops the body for a HEAD request.
    """
    return replace_header(stored.headers, b"age", age_header_value(stored, now=now))
