"""May a stored response answer a request? (RFC 9111 §4)"""

from __future__ import annotations

import pytest
from http_factories import PRIVATE, SHARED, T0, hdrs, http_date, stored

from shardcache._http import CachePolicy, Reuse, StoredResponse, decide_reuse, serve_headers


def reuse(
    entry: StoredResponse,
    *lines: str,
    method: str = "GET",
    policy: CachePolicy = SHARED,
    now: float = T0,
    error: bool = False,
) -> Reuse:
    """The verdict for a request with these header lines."""
    return decide_reuse(entry, method, hdrs(*lines), policy, now=now, error=error).reuse


class TestConstructingResponsesRfc9111Section4:
    def test_fresh_then_revalidate(self) -> None:
        """RFC 9111 §4: fresh responses are served; stale ones go to the origin."""
        entry = stored("Cache-Control: max-age=60")
        assert reuse(entry, now=T0 + 59) is Reuse.FRESH
        assert reuse(entry, now=T0 + 61) is Reuse.REVALIDATE

    def test_head_uses_the_get_entry_and_unsafe_methods_do_not(self) -> None:
        """RFC 9111 §4: the method must allow the stored response to be used."""
        entry = stored("Cache-Control: max-age=60")
        assert reuse(entry, method="HEAD") is Reuse.FRESH
        assert reuse(entry, method="POST") is Reuse.NO

    def test_default_ttl_without_explicit_freshness(self) -> None:
        """RFC 9111 §4.2.2 replaced by the driver's ttl (API §3: ttl=60)."""
        assert reuse(stored(), now=T0 + 30) is Reuse.FRESH
        assert reuse(stored(), now=T0 + 90) is Reuse.REVALIDATE

    def test_expires_in_the_past_is_stale_at_once(self) -> None:
        """RFC 9111 §5.3."""
        entry = stored(f"Date: {http_date(T0)}", f"Expires: {http_date(T0 - 60)}")
        assert reuse(entry) is Reuse.REVALIDATE


class TestVaryRfc9111Section4_1:
    def test_matching_variant_with_other_casing_and_whitespace(self) -> None:
        """RFC 9111 §4.1: normalized fields match."""
        entry = stored("Vary: Accept-Language", vary={"accept-language": "en, fr"})
        assert reuse(entry, "ACCEPT-LANGUAGE: en,   fr") is Reuse.FRESH

    def test_other_variant(self) -> None:
        entry = stored("Vary: Accept-Language", vary={"accept-language": "en"})
        assert reuse(entry, "Accept-Language: de") is Reuse.NO
        assert reuse(entry) is Reuse.NO


class TestAuthorizationRfc9111Section3_5:
    @pytest.mark.parametrize(
        ("cache_control", "expected"),
        [
            ("max-age=60", Reuse.NO),
            ("public, max-age=60", Reuse.FRESH),
            ("s-maxage=60", Reuse.FRESH),
            ("must-revalidate, max-age=60", Reuse.FRESH),
        ],
    )
    def test_shared_cache(self, cache_control: str, expected: Reuse) -> None:
        """RFC 9111 §3.5: authenticated requests bypass unless the response allows sharing."""
        entry = stored(f"Cache-Control: {cache_control}")
        assert reuse(entry, "Authorization: Bearer x") is expected

    def test_private_cache(self) -> None:
        entry = stored("Cache-Control: max-age=60")
        assert reuse(entry, "Authorization: Bearer x", policy=PRIVATE) is Reuse.FRESH


class TestNoCacheRfc9111Sections5_2_2_4And5_2_1_4:
    def test_response_no_cache_always_revalidates(self) -> None:
        """RFC 9111 §5.2.2.4: stored, but never reused without validation, even on error."""
        entry = stored("Cache-Control: no-cache, max-age=600, stale-if-error=600")
        assert reuse(entry) is Reuse.REVALIDATE
        assert reuse(entry, error=True) is Reuse.REVALIDATE

    def test_qualified_no_cache_does_not(self) -> None:
        """RFC 9111 §5.2.2.4: the qualified form only concerns the listed fields."""
        assert reuse(stored('Cache-Control: no-cache="set-cookie", max-age=60')) is Reuse.FRESH

    def test_request_no_cache_revalidates(self) -> None:
        """RFC 9111 §5.2.1.4."""
        entry = stored("Cache-Control: max-age=600")
        assert reuse(entry, "Cache-Control: no-cache") is Reuse.REVALIDATE
        assert reuse(entry, "Pragma: no-cache") is Reuse.REVALIDATE

    def test_after_an_origin_failure_the_fresh_response_is_served(self) -> None:
        """RFC 9111 §4.2.4: a fresh response may always be served."""
        entry = stored("Cache-Control: max-age=600")
        assert reuse(entry, "Cache-Control: no-cache", error=True) is Reuse.FRESH
        assert reuse(entry, "Cache-Control: max-age=10", now=T0 + 20) is Reuse.REVALIDATE
        assert reuse(entry, "Cache-Control: max-age=10", now=T0 + 20, error=True) is Reuse.STALE_OK


class TestStaleRfc9111Section4_2_4:
    def test_stale_while_revalidate(self) -> None:
        """RFC 5861 §3."""
        entry = stored("Cache-Control: max-age=60, stale-while-revalidate=60")
        assert reuse(entry, now=T0 + 90) is Reuse.STALE_OK
        assert reuse(entry, now=T0 + 130) is Reuse.REVALIDATE

    def test_stale_if_error(self) -> None:
        """RFC 5861 §4."""
        entry = stored("Cache-Control: max-age=60, stale-if-error=60")
        assert reuse(entry, now=T0 + 90) is Reuse.REVALIDATE
        assert reuse(entry, now=T0 + 90, error=True) is Reuse.STALE_OK
        assert reuse(entry, now=T0 + 130, error=True) is Reuse.REVALIDATE

    @pytest.mark.parametrize("directive", ["must-revalidate", "proxy-revalidate"])
    def test_revalidate_directives_forbid_stale_even_on_error(self, directive: str) -> None:
        """RFC 9111 §5.2.2.2 and §5.2.2.8."""
        entry = stored(f"Cache-Control: max-age=60, {directive}, stale-if-error=600")
        assert reuse(entry, now=T0 + 90, error=True) is Reuse.REVALIDATE

    def test_max_stale_request(self) -> None:
        """RFC 9111 §5.2.1.2."""
        entry = stored("Cache-Control: max-age=60")
        assert reuse(entry, "Cache-Control: max-stale=60", now=T0 + 90) is Reuse.STALE_OK


class TestServeHeadersRfc9111Section5_1:
    def test_age_is_replaced_and_the_rest_kept_in_order(self) -> None:
        """RFC 9111 §5.1 / §4: the cache sends its own Age."""
        entry = stored("Content-Type: text/plain", "Age: 100", "Set-Cookie: a", "age: 1", "X: y")
        assert serve_headers(entry, now=T0 + 7) == hdrs(
            "Content-Type: text/plain", "age: 107", "Set-Cookie: a", "X: y"
        )

    def test_age_is_added(self) -> None:
        assert serve_headers(stored("X: y"), now=T0 + 3) == [(b"X", b"y"), (b"age", b"3")]
