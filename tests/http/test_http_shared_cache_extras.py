"""Rules the ASGI middleware needed beyond RFC 9111's letter, from plain values.

* ``CachePolicy.cookie_credentials``: a request's ``Cookie`` treated like
  ``Authorization`` (§3.5), relaxed for explicit freshness and ``Vary: Cookie``.
* ``request_has_credentials``: which requests those are, before any response is known.
* ``unconditional_headers``: the request a cache sends when it wants a storable response
  and evaluates the client's validators itself (§4.3.2).
"""

from __future__ import annotations

import pytest
from http_factories import T0, hdrs, http_date, stored

from shardcache._http import (
    CachePolicy,
    Reuse,
    cookie_shareable,
    decide_reuse,
    decide_store,
    not_modified,
    request_has_credentials,
    unconditional_headers,
)

COOKIES = CachePolicy(shared=True, default_ttl=60, cookie_credentials=True)
RFC_ONLY = CachePolicy(shared=True, default_ttl=60)
WITH_COOKIE = hdrs("Cookie: session=alice")


@pytest.mark.parametrize(
    ("lines", "allowed"),
    [
        ([], False),  # only the configured default_ttl would make it fresh
        (["Cache-Control: max-age=60"], True),
        (["Cache-Control: s-maxage=60"], True),
        (["Cache-Control: public"], True),
        (["Cache-Control: must-revalidate"], True),
        ([f"Expires: {http_date(T0 + 60)}"], True),
        (["Vary: Cookie"], True),
        (["Vary: Accept"], False),
    ],
)
def test_cookie_requests_need_an_explicitly_cacheable_response(
    lines: list[str], allowed: bool
) -> None:
    response = hdrs(*lines)
    assert decide_store("GET", WITH_COOKIE, 200, response, COOKIES).store is allowed
    assert decide_store("GET", [], 200, response, COOKIES).store  # no cookie: RFC rules
    assert decide_store("GET", WITH_COOKIE, 200, response, RFC_ONLY).store  # option off
    verdict = decide_reuse(stored(*lines, vary={"cookie": None}), "GET", WITH_COOKIE,
                           COOKIES, now=T0 + 1)  # fmt: skip
    if "Vary: Cookie" not in lines:
        assert (verdict.reuse is Reuse.FRESH) is allowed
    assert cookie_shareable(stored(*lines), COOKIES) is allowed


def test_vary_cookie_matches_only_the_same_cookie() -> None:
    entry = stored("Vary: Cookie", vary={"cookie": None})
    assert decide_reuse(entry, "GET", WITH_COOKIE, COOKIES, now=T0).reuse is Reuse.NO
    assert decide_reuse(entry, "GET", [], COOKIES, now=T0).reuse is Reuse.FRESH


def test_cookie_credentials_do_not_apply_to_a_private_cache() -> None:
    policy = CachePolicy(shared=False, default_ttl=60, cookie_credentials=True)
    assert decide_store("GET", WITH_COOKIE, 200, [], policy).store
    assert not request_has_credentials(WITH_COOKIE, policy)


@pytest.mark.parametrize(
    ("lines", "policy", "expected"),
    [
        (["Authorization: Bearer x"], RFC_ONLY, True),
        (["authorization: Basic eA=="], COOKIES, True),
        (["Cookie: a=1"], COOKIES, True),
        (["Cookie: a=1"], RFC_ONLY, False),
        (["Accept: */*"], COOKIES, False),
        (["Authorization: x"], CachePolicy(shared=False), False),
    ],
)
def test_request_has_credentials(lines: list[str], policy: CachePolicy, expected: bool) -> None:
    """RFC 9111 §3.5 (and ``cookie_credentials``): decided from the request alone."""
    assert request_has_credentials(hdrs(*lines), policy) is expected


def test_unconditional_headers_drop_only_the_cache_evaluated_validators() -> None:
    """RFC 9111 §4.3.2: the cache answers If-None-Match / If-Modified-Since itself."""
    request = hdrs(
        "Accept: a/b",
        'If-None-Match: "v1"',
        f"If-Modified-Since: {http_date(T0)}",
        'If-Match: "v1"',  # the origin's to evaluate: kept
        "accept: c/d",
    )
    assert unconditional_headers(request) == hdrs("Accept: a/b", 'If-Match: "v1"', "accept: c/d")
    entry = stored('ETag: "v1"')
    assert not_modified(request, entry)  # the cache still has the client's validators
    assert not not_modified(unconditional_headers(request), entry)
