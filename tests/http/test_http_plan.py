"""ReusePlan: the hot-path shortcut never disagrees with the full rules.

``plan.fresh_for(...)`` True must mean: ``decide_request`` looks it up,
``decide_reuse`` says FRESH and ``not_modified`` is false. For requests that carry none of
the fields the rules read, and a stored response without ``Vary`` or ``no-cache``, it must
also be True whenever ``decide_reuse`` says FRESH (otherwise the shortcut is useless).
"""

from __future__ import annotations

import pytest
from http_factories import T0, hdrs, http_date, stored
from hypothesis import given, settings
from hypothesis import strategies as st

from shardcache._http import (
    REQUEST_RULE_FIELDS,
    CachePolicy,
    Reuse,
    age_header_value,
    decide_request,
    decide_reuse,
    not_modified,
    plain_request,
    reuse_plan,
)

RESPONSE_LINES = [
    "Cache-Control: max-age=60",
    "Cache-Control: s-maxage=5",
    "Cache-Control: public",
    "Cache-Control: private",
    "Cache-Control: no-cache",
    "Cache-Control: must-revalidate",
    "Cache-Control: stale-while-revalidate=30",
    f"Expires: {http_date(T0 + 30)}",
    "Expires: 0",
    f"Date: {http_date(T0 - 20)}",
    "Age: 7",
    "Vary: Accept",
    "Vary: Cookie",
    'ETag: "v1"',
    f"Last-Modified: {http_date(T0 - 100)}",
    "Content-Type: text/plain",
]
REQUEST_LINES = [
    "Accept: text/html",
    "User-Agent: test",
    "Cookie: id=1",
    "Authorization: Bearer x",
    "Cache-Control: no-cache",
    "Cache-Control: max-age=10",
    "Cache-Control: min-fresh=10",
    "Cache-Control: max-stale",
    "Pragma: no-cache",
    "Range: bytes=0-1",
    'If-None-Match: "v1"',
    f"If-Modified-Since: {http_date(T0)}",
    'If-Match: "v1"',
    "X-Other: 1",
]
POLICIES = [
    CachePolicy(shared=True, default_ttl=60),
    CachePolicy(shared=True, default_ttl=0, cookie_credentials=True),
    CachePolicy(shared=True, default_ttl=None, cookie_credentials=True, cache_private=True),
    CachePolicy(shared=False, default_ttl=30),
    CachePolicy(shared=True, default_ttl=10, cache_control=False),
]


@settings(max_examples=600, deadline=None)
@given(
    response=st.lists(st.sampled_from(RESPONSE_LINES), max_size=5),
    request=st.lists(st.sampled_from(REQUEST_LINES), max_size=4),
    vary_accept=st.sampled_from([None, "text/html"]),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    policy=st.sampled_from(POLICIES),
    elapsed=st.floats(min_value=-5, max_value=200),
)
def test_fresh_for_agrees_with_the_rules(
    response: list[str],
    request: list[str],
    vary_accept: str | None,
    method: str,
    policy: CachePolicy,
    elapsed: float,
) -> None:
    entry = stored(*response, vary={"accept": vary_accept} if "Vary: Accept" in response else {})
    request_headers = [(name.lower(), value) for name, value in hdrs(*request)]
    now = T0 + elapsed
    plan = reuse_plan(entry, policy)
    assert plan.age_header(now) == age_header_value(entry, now=now)
    verdict = decide_reuse(entry, method, request_headers, policy, now=now).reuse
    full = (
        decide_request(method, request_headers, policy).lookup
        and verdict is Reuse.FRESH
        and not not_modified(request_headers, entry)
    )
    fast = plan.fresh_for(method, request_headers, now=now)
    assert not fast or full  # the shortcut never serves what the rules would not
    plain = not any(name in REQUEST_RULE_FIELDS or name == b"cookie" for name, _ in request_headers)
    varies = any(line.startswith(("Vary", "Cache-Control: no-cache")) for line in response)
    if plain and not varies and method != "POST":
        assert fast == (verdict is Reuse.FRESH)


@settings(max_examples=300, deadline=None)
@given(
    request=st.lists(st.sampled_from(REQUEST_LINES), max_size=4),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    policy=st.sampled_from(POLICIES),
)
def test_a_plain_request_is_decided_by_its_method(
    request: list[str], method: str, policy: CachePolicy
) -> None:
    request_headers = hdrs(*request)  # mixed case, as some servers send them
    if plain_request(request_headers):
        decision = decide_request(method, request_headers, policy)
        assert decision.lookup == (method in ("GET", "HEAD"))
        assert decision.store == (method == "GET")
        assert not decision.only_if_cached


def test_uppercase_request_names_are_read_too() -> None:
    plan = reuse_plan(stored("Cache-Control: max-age=60"), CachePolicy())
    assert plan.fresh_for("GET", [(b"Host", b"a")], now=T0)
    assert not plan.fresh_for("GET", [(b"Cache-Control", b"no-cache")], now=T0)


@pytest.mark.parametrize(
    ("lines", "cookie_ok"),
    [(["Cache-Control: max-age=60"], True), ([], False), (["Vary: Cookie"], True)],
)
def test_cookie_requests_take_the_shortcut_only_for_shareable_responses(
    lines: list[str], cookie_ok: bool
) -> None:
    policy = CachePolicy(default_ttl=60, cookie_credentials=True)
    plan = reuse_plan(stored(*lines), policy)
    fresh = plan.fresh_for("GET", [(b"cookie", b"id=1")], now=T0 + 1)
    assert fresh == (cookie_ok and "Vary: Cookie" not in lines)
