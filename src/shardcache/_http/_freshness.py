"""Freshness and age: how long a stored response may be served, and for how long past that
it may still be served stale (RFC 9111 §4.2, §5.1, §5.3; RFC 5861).

Every function takes ``now`` (Unix time) explicitly, so the rules are tested with plain
numbers and never read a clock.

>>> stored = StoredResponse(status=200, body=b"", request_time=100.0, response_time=100.0,
...     headers=[(b"cache-control", b"max-age=60")])
>>> policy = CachePolicy()
>>> is_fresh(stored, policy, now=159.0), is_fresh(stored, policy, now=160.0)
(True, False)
"""

from __future__ import annotations

import math
from typing import Final

from ._cache_control import CacheControl, request_cache_control, response_cache_control
from ._headers import (
    DELTA_SECONDS_MAX,
    RawHeaders,
    first_header,
    has_header,
    header_members,
    header_values,
    parse_delta_seconds,
    parse_http_date,
)
from ._records import CachePolicy, StoredResponse

__all__ = [
    "ORIGIN_ERROR_STATUSES",
    "age_header_value",
    "current_age",
    "date_value",
    "freshness_lifetime",
    "is_fresh",
    "is_stale_usable",
    "stale_forbidden",
    "storage_ttl",
]

_NO_DIRECTIVES: Final = CacheControl()

#: RFC 5861 §4: the statuses that count as an origin "error" for ``stale-if-error``, as an
#: exception (no response at all) does: pass ``error=True`` to :func:`is_stale_usable` and
#: ``decide_reuse`` after one of them.
ORIGIN_ERROR_STATUSES: Final = frozenset({500, 502, 503, 504})


def _response_directives(stored: StoredResponse, policy: CachePolicy) -> CacheControl:
    if not policy.cache_control:
        return _NO_DIRECTIVES
    return response_cache_control(stored.headers, policy.targeted)[0]


def _request_directives(request_headers: RawHeaders, policy: CachePolicy) -> CacheControl:
    return request_cache_control(request_headers) if policy.cache_control else _NO_DIRECTIVES


def date_value(stored: StoredResponse) -> float:
    """The response's ``Date`` as a timestamp; the receipt time when it is missing or invalid.

    RFC 9110 §6.6.1: a recipient "MAY replace that value with the time that response was
    received" when ``Date`` is absent or invalid.
    """
    raw = first_header(stored.headers, b"date")
    parsed = None if raw is None else parse_http_date(raw)
    return stored.response_time if parsed is None else parsed


def _age_value(stored: StoredResponse) -> int:
    # RFC 9111 §5.1: use the first member of a list-valued Age; ignore an invalid one.
    members = header_members(stored.headers, b"age")
    seconds = parse_delta_seconds(members[0]) if members else None
    return 0 if seconds is None else seconds


def current_age(stored: StoredResponse, *, now: float) -> float:
    """The current age of a stored response in seconds (RFC 9111 §4.2.3).

    >>> stored = StoredResponse(status=200, body=b"", request_time=98.0, response_time=100.0,
    ...     headers=[(b"age", b"10")])
    >>> current_age(stored, now=105.0)  # Age 10 + response delay 2 + resident time 5
    17.0
    """
    # RFC 9111 §4.2.3, step by step. Date has whole seconds: compared with the receipt time
    # to the second, or a response stamped at 12:00:00 and received at 12:00:00.9 would be
    # born 0.9 s old, and a short ttl (1 s) would expire almost at once, at random.
    apparent_age = max(0.0, math.floor(stored.response_time) - date_value(stored))
    response_delay = max(0.0, stored.response_time - stored.request_time)
    corrected_age_value = _age_value(stored) + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = max(0.0, now - stored.response_time)
    return corrected_initial_age + resident_time


def freshness_lifetime(stored: StoredResponse, policy: CachePolicy) -> float | None:
    """How long the response stays fresh, in seconds; ``None`` when it never goes stale.

    RFC 9111 §4.2.1, first match wins: ``s-maxage`` (shared cache only), ``max-age``,
    ``Expires`` minus ``Date``, then the policy's ``default_ttl`` in place of heuristic
    freshness (§4.2.2). An invalid ``Expires`` (or two that disagree) makes the response
    stale (§5.3, §4.2.1). With ``policy.cache_control=False`` only ``default_ttl`` counts.
    """
    if not policy.cache_control:
        return policy.default_ttl
    directives, targeted = response_cache_control(stored.headers, policy.targeted)
    # §5.2.2.10: s-maxage overrides max-age and Expires in a shared cache only.
    if policy.shared and directives.s_maxage is not None:
        return float(directives.s_maxage)
    if directives.max_age is not None:  # §5.2.2.1; §5.3: max-age wins over Expires
        return float(directives.max_age)
    # RFC 9213 §2.1: a targeted field replaces Expires as well as Cache-Control.
    expires = () if targeted else header_values(stored.headers, b"expires")
    if expires:
        # §4.2.1: several values "should" use the first or be stale; disagreeing ones are
        # stale here. §5.3: an invalid date (e.g. "0") means "already expired".
        moment = parse_http_date(expires[0]) if len(set(expires)) == 1 else None
        if moment is None:
            return 0.0
        return max(0.0, moment - date_value(stored))
    return policy.default_ttl


def is_fresh(
    stored: StoredResponse,
    policy: CachePolicy,
    *,
    now: float,
    request_headers: RawHeaders = (),
) -> bool:
    """True while the response's age is below its freshness lifetime (RFC 9111 §4.2).

    The request's own limits narrow it: ``max-age`` (§5.2.1.1, the age must not exceed it)
    and ``min-fresh`` (§5.2.1.3, it must stay fresh that much longer).
    """
    lifetime = freshness_lifetime(stored, policy)
    age = current_age(stored, now=now)
    request = _request_directives(request_headers, policy)
    if request.max_age is not None and age > request.max_age:  # §5.2.1.1
        return False
    if lifetime is None:
        return True
    # §4.2: response_is_fresh = (freshness_lifetime > current_age)
    return lifetime - (request.min_fresh or 0) > age


def stale_forbidden(directives: CacheControl, policy: CachePolicy) -> bool:
    """True when response directives forbid serving the response stale (RFC 9111 §4.2.4).

    ``no-cache`` (§5.2.2.4), ``must-revalidate`` (§5.2.2.2) and, in a shared cache,
    ``proxy-revalidate`` (§5.2.2.8) or ``s-maxage`` (§5.2.2.10, which implies it).
    """
    return (
        directives.no_cache
        or directives.must_revalidate
        or (policy.shared and (directives.proxy_revalidate or directives.s_maxage is not None))
    )


def is_stale_usable(
    stored: StoredResponse,
    policy: CachePolicy,
    *,
    now: float,
    request_headers: RawHeaders = (),
    error: bool = False,
) -> bool:
    """True when a *stale* response may be served anyway (RFC 9111 §4.2.4, RFC 5861).

    Without ``error``, within the response's ``stale-while-revalidate`` (RFC 5861 §3) or
    the request's ``max-stale`` (§5.2.1.2); a request with ``no-cache``, ``max-age`` or
    ``min-fresh`` (and no ``max-stale``) does not want a stale response (§5.2.1). With
    ``error=True`` (the origin failed or answered 500, 502, 503 or 504), also within the
    response's or request's ``stale-if-error`` (RFC 5861 §4) or ``policy.stale_if_error``.
    Never when :func:`stale_forbidden`. False for a fresh response.
    """
    lifetime = freshness_lifetime(stored, policy)
    if lifetime is None:
        return False
    staleness = current_age(stored, now=now) - lifetime
    if staleness < 0:
        return False
    window = policy.stale_if_error if error else 0.0
    if policy.cache_control:
        response = _response_directives(stored, policy)
        request = request_cache_control(request_headers)
        if stale_forbidden(response, policy):
            return False
        wants_fresh = request.no_cache or (
            request.max_stale is None
            and (request.max_age is not None or request.min_fresh is not None)
        )
        if wants_fresh and not error:
            return False
        window = max(window, response.stale_while_revalidate or 0, request.max_stale or 0)
        if error:
            window = max(window, response.stale_if_error or 0, request.stale_if_error or 0)
    return window > 0 and staleness <= window


def storage_ttl(
    stored: StoredResponse, policy: CachePolicy, *, now: float, revalidate: bool
) -> float | None:
    """Seconds the cache should keep ``stored``: ``None`` = until evicted, ``<= 0`` = don't.

    That is its remaining freshness plus the longest stale window it may be served in
    (``stale-while-revalidate``, ``stale-if-error``, ``policy.stale_if_error``). A driver
    that revalidates (``revalidate=True``, the aiohttp session) keeps a response with a
    validator (``ETag`` or ``Last-Modified``) until it is evicted: once stale it is still
    worth a conditional request (RFC 9111 §4.3.1).
    """
    if revalidate and (
        has_header(stored.headers, b"etag") or has_header(stored.headers, b"last-modified")
    ):
        return None
    lifetime = freshness_lifetime(stored, policy)
    if lifetime is None:
        return None
    directives = _response_directives(stored, policy)
    if directives.no_cache:
        return 0.0  # §5.2.2.4: never reusable without validation, and it has no validator
    window = policy.stale_if_error
    if policy.cache_control:
        if stale_forbidden(directives, policy):
            window = 0.0
        else:
            window = max(
                window, directives.stale_while_revalidate or 0, directives.stale_if_error or 0
            )
    if math.isinf(window):
        return None
    return lifetime - current_age(stored, now=now) + window


def age_header_value(stored: StoredResponse, *, now: float) -> bytes:
    """The ``Age`` field value for serving ``stored`` at ``now`` (RFC 9111 §5.1, §4).

    A whole number of seconds, capped at 2**31 (§1.2.2).

    >>> stored = StoredResponse(status=200, headers=[], body=b"", request_time=0.0,
    ...     response_time=0.0)
    >>> age_header_value(stored, now=59.9)
    b'59'
    """
    return str(min(int(current_age(stored, now=now)), DELTA_SECONDS_MAX)).encode("ascii")
