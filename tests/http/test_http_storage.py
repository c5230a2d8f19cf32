"""Whether to look up and whether to store (RFC 9111 §3, §3.1, §3.5, §5.2)."""

from __future__ import annotations

import math

import pytest
from http_factories import PRIVATE, SHARED, T0, hdrs

from shardcache._errors import ConfigurationError
from shardcache._http import (
    HEURISTICALLY_CACHEABLE_STATUSES,
    CachePolicy,
    build_stored_response,
    decide_request,
    decide_store,
    storable_headers,
)

NO_CC = CachePolicy(shared=False, default_ttl=60, cache_control=False)


class TestRequestRfc9111Sections3And5_2_1:
    def test_get_is_looked_up_and_stored(self) -> None:
        decision = decide_request("GET", [], SHARED)
        assert (decision.lookup, decision.store) == (True, True)

    def test_head_is_answered_from_get_but_not_stored(self) -> None:
        """RFC 9110 §9.3.2: HEAD can use the GET entry; its own response has no content."""
        decision = decide_request("HEAD", [], SHARED)
        assert (decision.lookup, decision.store) == (True, False)

    @pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "get"])
    def test_other_methods_bypass(self, method: str) -> None:
        """RFC 9111 §3: the cache only stores what it understands (GET here)."""
        decision = decide_request(method, [], SHARED)
        assert (decision.lookup, decision.store) == (False, False)

    def test_no_store_request_bypasses_entirely(self) -> None:
        """RFC 9111 §5.2.1.5: nothing of the request or its response is stored."""
        decision = decide_request("GET", hdrs("Cache-Control: no-store"), SHARED)
        assert (decision.lookup, decision.store) == (False, False)
        assert "5.2.1.5" in decision.reason

    @pytest.mark.parametrize(
        "line", ["Cache-Control: no-cache", "Cache-Control: max-age=0", "Pragma: no-cache"]
    )
    def test_no_cache_request_skips_lookup_but_refreshes(self, line: str) -> None:
        """RFC 9111 §5.2.1.4, §5.2.1.1, §5.4: do not reuse; the new response may be stored."""
        decision = decide_request("GET", hdrs(line), SHARED)
        assert (decision.lookup, decision.store) == (False, True)

    def test_pragma_is_ignored_next_to_cache_control(self) -> None:
        """RFC 9111 §5.4: Pragma only counts when Cache-Control is absent."""
        decision = decide_request(
            "GET", hdrs("Pragma: no-cache", "Cache-Control: max-age=9"), SHARED
        )
        assert decision.lookup is True

    def test_request_max_age_above_zero_is_decided_at_reuse(self) -> None:
        assert decide_request("GET", hdrs("Cache-Control: max-age=5"), SHARED).lookup is True

    @pytest.mark.parametrize(
        "line",
        [
            "Range: bytes=0-99",
            'If-Match: "a"',
            "If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
            'If-Range: "a"',
        ],
    )
    def test_range_and_origin_preconditions_skip_lookup(self, line: str) -> None:
        """RFC 9111 §3.3 (no partial content) and §4.3.2 (origin-only preconditions)."""
        decision = decide_request("GET", hdrs(line), SHARED)
        assert (decision.lookup, decision.store) == (False, True)

    def test_only_if_cached_is_reported(self) -> None:
        """RFC 9111 §5.2.1.7: the driver answers 504 rather than contacting the origin."""
        assert decide_request("GET", hdrs("Cache-Control: only-if-cached"), SHARED).only_if_cached
        assert not decide_request("GET", [], SHARED).only_if_cached

    def test_cache_control_false_ignores_request_directives(self) -> None:
        decision = decide_request("GET", hdrs("Cache-Control: no-store, no-cache"), NO_CC)
        assert (decision.lookup, decision.store) == (True, True)


class TestStatusRfc9111Section3:
    @pytest.mark.parametrize("status", sorted(HEURISTICALLY_CACHEABLE_STATUSES))
    def test_heuristically_cacheable_statuses_are_stored(self, status: int) -> None:
        """RFC 9110 §15.1 / RFC 9111 §4.2.2: statuses cacheable by default."""
        assert decide_store("GET", [], status, [], SHARED).store

    @pytest.mark.parametrize("status", [201, 202, 302, 303, 307, 400, 401, 403, 500, 502, 503])
    def test_other_statuses_are_not(self, status: int) -> None:
        """RFC 9111 §3: only configured statuses are stored."""
        decision = decide_store("GET", hdrs("Cache-Control: max-age=60"), status, [], SHARED)
        assert not decision.store and str(status) in decision.reason

    def test_partial_content_is_never_stored(self) -> None:
        """RFC 9111 §3.3: a 206 is incomplete; this cache does not store it."""
        decision = decide_store("GET", [], 206, hdrs("Cache-Control: public, max-age=60"), SHARED)
        assert not decision.store and "206" in decision.reason

    def test_configured_statuses(self) -> None:
        policy = CachePolicy(cacheable_statuses=frozenset({200, 302}))
        assert decide_store("GET", [], 302, [], policy).store
        assert not decide_store("GET", [], 404, [], policy).store

    @pytest.mark.parametrize("method", ["HEAD", "POST"])
    def test_only_get_responses_are_stored(self, method: str) -> None:
        assert not decide_store(method, [], 200, [], SHARED).store


class TestResponseDirectivesRfc9111Section5_2_2:
    def test_no_store(self) -> None:
        """RFC 9111 §5.2.2.5."""
        decision = decide_store("GET", [], 200, hdrs("Cache-Control: max-age=60, no-store"), SHARED)
        assert not decision.store and "no-store" in decision.reason

    def test_must_understand_overrides_no_store(self) -> None:
        """RFC 9111 §5.2.2.3: a cache implementing the status ignores no-store."""
        line = "Cache-Control: must-understand, no-store, max-age=60"
        assert decide_store("GET", [], 200, hdrs(line), SHARED).store
        assert not decide_store("GET", [], 500, hdrs(line), SHARED).store

    def test_request_no_store(self) -> None:
        """RFC 9111 §5.2.1.5."""
        assert not decide_store("GET", hdrs("Cache-Control: no-store"), 200, [], SHARED).store

    def test_private_is_refused_by_a_shared_cache(self) -> None:
        """RFC 9111 §5.2.2.7: a shared cache must not store a private response."""
        assert not decide_store("GET", [], 200, hdrs("Cache-Control: private"), SHARED).store

    def test_private_with_cache_private(self) -> None:
        policy = CachePolicy(shared=True, cache_private=True)
        assert decide_store("GET", [], 200, hdrs("Cache-Control: private"), policy).store

    def test_private_in_a_private_cache(self) -> None:
        """RFC 9111 §5.2.2.7: a private cache may store it."""
        assert decide_store("GET", [], 200, hdrs("Cache-Control: private"), PRIVATE).store

    def test_vary_star(self) -> None:
        """RFC 9111 §4.1: Vary: * never matches, so it is not worth storing."""
        for line in ("Vary: *", "Vary: Accept, *"):
            decision = decide_store("GET", [], 200, hdrs(line), SHARED)
            assert not decision.store and "Vary" in decision.reason


class TestAuthorizationRfc9111Section3_5:
    @pytest.mark.parametrize(
        ("cache_control", "stored"),
        [
            ("", False),
            ("max-age=60", False),
            ("no-cache", False),
            ("public", True),
            ("s-maxage=60", True),
            ("must-revalidate", True),
            ("public, private", False),
        ],
    )
    def test_shared_cache(self, cache_control: str, stored: bool) -> None:
        """RFC 9111 §3.5: only public, s-maxage or must-revalidate allow storing."""
        response = hdrs(f"Cache-Control: {cache_control}") if cache_control else []
        request = hdrs("Authorization: Bearer t")
        assert decide_store("GET", request, 200, response, SHARED).store is stored

    def test_private_cache_is_not_restricted(self) -> None:
        """RFC 9111 §3.5 is about shared caches."""
        assert decide_store("GET", hdrs("Authorization: Bearer t"), 200, [], PRIVATE).store

    def test_shared_cache_without_cache_control_cannot_be_told_public(self) -> None:
        policy = CachePolicy(shared=True, cache_control=False)
        response = hdrs("Cache-Control: public")
        assert not decide_store("GET", hdrs("Authorization: x"), 200, response, policy).store


class TestSetCookie:
    def test_refused_by_default(self) -> None:
        """A shared cache would hand one user's cookie to every user."""
        decision = decide_store("GET", [], 200, hdrs("Set-Cookie: sid=1"), SHARED)
        assert not decision.store and "Set-Cookie" in decision.reason
        assert not decide_store("GET", [], 200, hdrs("set-cookie: sid=1"), PRIVATE).store

    def test_allowed_by_option_and_kept(self) -> None:
        policy = CachePolicy(shared=False, allow_set_cookie=True)
        response = hdrs("Set-Cookie: a=1", "Set-Cookie: b=2")
        assert decide_store("GET", [], 200, response, policy).store
        assert storable_headers(response, policy) == response

    def test_stored_when_the_origin_excludes_the_field(self) -> None:
        """RFC 9111 §5.2.2.7 / §5.2.2.4: private="Set-Cookie" stores the rest of it."""
        for directive in ('private="Set-Cookie"', "no-cache=set-cookie"):
            response = hdrs(f"Cache-Control: {directive}", "Set-Cookie: a=1", "X: y")
            assert decide_store("GET", [], 200, response, SHARED).store
            assert storable_headers(response, SHARED) == hdrs(f"Cache-Control: {directive}", "X: y")


class TestStorableHeadersRfc9111Section3_1:
    def test_hop_by_hop_fields_are_dropped(self) -> None:
        """RFC 9111 §3.1: Connection, the fields it names, and the hop-by-hop fields."""
        response = hdrs(
            "Content-Type: text/plain",
            "Connection: close, X-Hop",
            "X-Hop: 1",
            "Keep-Alive: timeout=5",
            "Transfer-Encoding: chunked",
            "TE: trailers",
            "Upgrade: h2c",
            "Proxy-Connection: keep-alive",
            "Link: <a>",
            "link: <b>",
        )
        assert storable_headers(response, SHARED) == hdrs(
            "Content-Type: text/plain", "Link: <a>", "link: <b>"
        )

    def test_private_fields_are_kept_by_a_private_cache(self) -> None:
        response = hdrs('Cache-Control: private="x-user"', "X-User: 7")
        assert storable_headers(response, PRIVATE) == response
        assert storable_headers(response, SHARED) == response[:1]

    def test_build_stored_response_records_vary_and_times(self) -> None:
        """RFC 9111 §4.1 and §4.2.3: the nominated request fields and the exchange times."""
        entry = build_stored_response(
            request_headers=hdrs("Accept:  text/html", "Cookie: a"),
            status=200,
            headers=hdrs("Vary: accept, Accept-Language", "Connection: close", 'ETag: "1"'),
            body=b"<p>",
            request_time=T0 - 1,
            response_time=T0,
            policy=SHARED,
        )
        assert entry.vary == {"accept": "text/html", "accept-language": None}
        assert entry.headers == hdrs("Vary: accept, Accept-Language", 'ETag: "1"')
        assert (entry.status, entry.body, entry.request_time, entry.response_time) == (
            200,
            b"<p>",
            T0 - 1,
            T0,
        )


class TestCacheControlFalse:
    def test_directives_are_ignored_but_safety_rules_are_not(self) -> None:
        """API §4 cache_control=False: store per ttl whatever the server says."""
        for line in ("Cache-Control: no-store", "Cache-Control: private", "Expires: 0"):
            assert decide_store(
                "GET", hdrs("Cache-Control: no-store"), 200, hdrs(line), NO_CC
            ).store
        assert not decide_store("GET", [], 200, hdrs("Vary: *"), NO_CC).store
        assert not decide_store("GET", [], 200, hdrs("Set-Cookie: a=1"), NO_CC).store


class TestPolicyOptions:
    @pytest.mark.parametrize(
        "options",
        [
            {"default_ttl": -1},
            {"default_ttl": math.nan},
            {"stale_if_error": -0.5},
            {"stale_if_error": math.nan},
            {"cacheable_statuses": frozenset({200, 206})},
            {"cacheable_statuses": frozenset({304})},
            {"cacheable_statuses": frozenset({100, 200})},
            {"cacheable_statuses": frozenset({600})},
        ],
    )
    def test_bad_options_raise_configuration_error(self, options: dict[str, object]) -> None:
        with pytest.raises(ConfigurationError) as raised:
            CachePolicy(**options)  # type: ignore[arg-type]
        assert isinstance(raised.value, ValueError)
        assert next(iter(options)) in str(raised.value)

    def test_good_options(self) -> None:
        assert CachePolicy(default_ttl=None, stale_if_error=math.inf).default_ttl is None
