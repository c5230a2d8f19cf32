"""Freshness lifetime, age and stale windows (RFC 9111 §4.2, §5.1, §5.3; RFC 5861)."""

from __future__ import annotations

import math

import pytest
from http_factories import PRIVATE, SHARED, T0, hdrs, http_date, stored

from shardcache._http import (
    CachePolicy,
    age_header_value,
    current_age,
    freshness_lifetime,
    is_fresh,
    is_stale_usable,
    storage_ttl,
)

NO_CC = CachePolicy(shared=False, default_ttl=120, cache_control=False)


class TestFreshnessLifetimeRfc9111Section4_2_1:
    def test_s_maxage_wins_in_a_shared_cache(self) -> None:
        """RFC 9111 §4.2.1 / §5.2.2.10: s-maxage, then max-age."""
        entry = stored("Cache-Control: max-age=60, s-maxage=120")
        assert freshness_lifetime(entry, SHARED) == 120

    def test_a_private_cache_ignores_s_maxage(self) -> None:
        """RFC 9111 §5.2.2.10: s-maxage is for shared caches only."""
        assert freshness_lifetime(stored("Cache-Control: max-age=60, s-maxage=120"), PRIVATE) == 60
        assert freshness_lifetime(stored("Cache-Control: s-maxage=120"), PRIVATE) == 3600

    def test_max_age_wins_over_expires(self) -> None:
        """RFC 9111 §5.3: with max-age present, Expires is ignored."""
        entry = stored(
            f"Date: {http_date(T0)}", f"Expires: {http_date(T0 + 999)}", "Cache-Control: max-age=5"
        )
        assert freshness_lifetime(entry, SHARED) == 5

    def test_expires_minus_date(self) -> None:
        """RFC 9111 §4.2.1: Expires minus Date."""
        entry = stored(f"Date: {http_date(T0 - 100)}", f"Expires: {http_date(T0 + 200)}")
        assert freshness_lifetime(entry, SHARED) == 300

    def test_expires_without_date_uses_the_receipt_time(self) -> None:
        """RFC 9110 §6.6.1: a missing Date is the time the response was received."""
        entry = stored(f"Expires: {http_date(T0 + 200)}", response_time=T0)
        assert freshness_lifetime(entry, SHARED) == 200

    @pytest.mark.parametrize(
        "expires", [http_date(T0 - 3600), "0", "-1", "never", "Sun, 31 Feb 2024 00:00:00 GMT", ""]
    )
    def test_expires_in_the_past_or_invalid_is_stale(self, expires: str) -> None:
        """RFC 9111 §5.3: an invalid date (notably "0") means already expired."""
        entry = stored(f"Date: {http_date(T0)}", f"Expires: {expires}")
        assert freshness_lifetime(entry, SHARED) == 0
        assert not is_fresh(entry, SHARED, now=T0)

    def test_two_disagreeing_expires_are_stale(self) -> None:
        """RFC 9111 §4.2.1: several values: use the first, or consider it stale."""
        later = http_date(T0 + 300)
        assert (
            freshness_lifetime(stored(f"Expires: {later}", f"Expires: {http_date(T0 + 9)}"), SHARED)
            == 0
        )
        assert freshness_lifetime(stored(f"Expires: {later}", f"Expires: {later}"), SHARED) == 300

    def test_invalid_max_age_is_stale(self) -> None:
        """RFC 9111 §4.2.1: non-integer max-age is invalid freshness information: stale."""
        entry = stored("Cache-Control: max-age=soon", f"Expires: {http_date(T0 + 300)}")
        assert freshness_lifetime(entry, SHARED) == 0

    def test_no_explicit_freshness_uses_the_configured_ttl(self) -> None:
        """RFC 9111 §4.2.2: no heuristic beyond the driver's ttl (Last-Modified unused)."""
        entry = stored(f"Last-Modified: {http_date(T0 - 86400 * 365)}")
        assert freshness_lifetime(entry, SHARED) == 60
        assert freshness_lifetime(entry, CachePolicy(default_ttl=None)) is None
        assert freshness_lifetime(entry, CachePolicy()) == 0

    def test_cache_control_false_only_counts_the_ttl(self) -> None:
        """API §4: cache_control=False ignores Cache-Control and Expires."""
        for line in ("Cache-Control: max-age=0", "Cache-Control: s-maxage=9", "Expires: 0"):
            assert freshness_lifetime(stored(line), NO_CC) == 120


class TestAgeRfc9111Section4_2_3:
    def test_resident_time(self) -> None:
        assert current_age(stored(), now=T0 + 10) == 10

    def test_age_header_and_response_delay_add_up(self) -> None:
        """RFC 9111 §4.2.3: corrected_age_value = age_value + response_delay."""
        entry = stored("Age: 30", request_time=T0 - 2, response_time=T0)
        assert current_age(entry, now=T0 + 5) == 30 + 2 + 5

    def test_apparent_age_from_date(self) -> None:
        """RFC 9111 §4.2.3: apparent_age = response_time - date_value, when larger."""
        entry = stored(f"Date: {http_date(T0 - 100)}", "Age: 10")
        assert current_age(entry, now=T0) == 100

    def test_date_is_compared_to_the_second(self) -> None:
        """Date has whole seconds: a response stamped in the second it arrived in (here
        0.9 s into it) is not 0.9 s old, or a 1 s ttl would expire almost at once."""
        whole = math.floor(T0)
        entry = stored(
            f"Date: {http_date(whole)}", request_time=whole + 0.85, response_time=whole + 0.9
        )
        assert current_age(entry, now=whole + 0.9) == pytest.approx(0.05, abs=1e-3)  # the delay
        entry = stored(
            f"Date: {http_date(whole)}", request_time=whole + 2.8, response_time=whole + 2.9
        )
        assert current_age(entry, now=whole + 2.9) == 2  # two whole seconds late: apparent age

    def test_missing_date_gives_no_apparent_age(self) -> None:
        """RFC 9110 §6.6.1: the receipt time stands in for a missing Date."""
        assert current_age(stored("Age: 3"), now=T0) == 3

    def test_a_date_in_the_future_is_not_negative_age(self) -> None:
        """RFC 9111 §4.2.3: apparent_age = max(0, ...)."""
        assert current_age(stored(f"Date: {http_date(T0 + 500)}"), now=T0 + 1) == 1

    @pytest.mark.parametrize(("age", "expected"), [("5, 100", 5), ("abc", 0), ("-4", 0), ("", 0)])
    def test_age_field_list_and_invalid(self, age: str, expected: int) -> None:
        """RFC 9111 §5.1: use the first member; ignore an invalid Age."""
        assert current_age(stored(f"Age: {age}"), now=T0) == expected

    def test_age_header_value_is_whole_seconds(self) -> None:
        """RFC 9111 §5.1: Age is delta-seconds."""
        assert age_header_value(stored(), now=T0 + 59.99) == b"59"
        assert age_header_value(stored("Age: 4294967296"), now=T0) == b"2147483648"


class TestIsFreshRfc9111Section4_2:
    def test_fresh_while_age_is_below_lifetime(self) -> None:
        """RFC 9111 §4.2: response_is_fresh = (freshness_lifetime > current_age)."""
        entry = stored("Cache-Control: max-age=60")
        assert is_fresh(entry, SHARED, now=T0 + 59.9)
        assert not is_fresh(entry, SHARED, now=T0 + 60)

    def test_never_stale_without_a_ttl(self) -> None:
        assert is_fresh(stored(), CachePolicy(default_ttl=None), now=T0 + 10**9)

    def test_request_max_age(self) -> None:
        """RFC 9111 §5.2.1.1: the client wants a response no older than max-age."""
        entry = stored("Cache-Control: max-age=600")
        assert not is_fresh(
            entry, SHARED, now=T0 + 30, request_headers=hdrs("Cache-Control: max-age=20")
        )
        assert is_fresh(
            entry, SHARED, now=T0 + 30, request_headers=hdrs("Cache-Control: max-age=40")
        )

    def test_request_min_fresh(self) -> None:
        """RFC 9111 §5.2.1.3: it must stay fresh at least min-fresh longer."""
        entry = stored("Cache-Control: max-age=60")
        assert not is_fresh(
            entry, SHARED, now=T0 + 50, request_headers=hdrs("Cache-Control: min-fresh=20")
        )
        assert is_fresh(
            entry, SHARED, now=T0 + 50, request_headers=hdrs("Cache-Control: min-fresh=5")
        )

    def test_cache_control_false_ignores_request_limits(self) -> None:
        limits = hdrs("Cache-Control: max-age=0")
        assert is_fresh(stored(), NO_CC, now=T0 + 30, request_headers=limits)


class TestServingStaleRfc9111Section4_2_4AndRfc5861:
    def test_stale_while_revalidate(self) -> None:
        """RFC 5861 §3: serve stale for up to N seconds while revalidating."""
        entry = stored("Cache-Control: max-age=60, stale-while-revalidate=30")
        assert not is_stale_usable(entry, SHARED, now=T0 + 30)  # fresh, not stale
        assert is_stale_usable(entry, SHARED, now=T0 + 80)
        assert is_stale_usable(entry, SHARED, now=T0 + 90)
        assert not is_stale_usable(entry, SHARED, now=T0 + 95)

    def test_stale_if_error_only_on_errors(self) -> None:
        """RFC 5861 §4: stale-if-error applies when the origin fails."""
        entry = stored("Cache-Control: max-age=60, stale-if-error=300")
        assert not is_stale_usable(entry, SHARED, now=T0 + 260)
        assert is_stale_usable(entry, SHARED, now=T0 + 260, error=True)
        assert not is_stale_usable(entry, SHARED, now=T0 + 400, error=True)

    def test_request_stale_if_error(self) -> None:
        """RFC 5861 §4: the request directive works the same way."""
        entry = stored("Cache-Control: max-age=60")
        request = hdrs("Cache-Control: stale-if-error=100")
        assert is_stale_usable(entry, SHARED, now=T0 + 150, request_headers=request, error=True)
        assert not is_stale_usable(entry, SHARED, now=T0 + 150, error=True)

    def test_configured_stale_if_error(self) -> None:
        """RFC 9111 §4.2.4: serving stale by configuration (API §4 stale_if_error)."""
        entry = stored("Cache-Control: max-age=60")
        seconds = CachePolicy(shared=False, stale_if_error=100)
        forever = CachePolicy(shared=False, stale_if_error=math.inf)
        assert is_stale_usable(entry, seconds, now=T0 + 150, error=True)
        assert not is_stale_usable(entry, seconds, now=T0 + 170, error=True)
        assert is_stale_usable(entry, forever, now=T0 + 10**8, error=True)
        assert not is_stale_usable(entry, forever, now=T0 + 150)

    @pytest.mark.parametrize(
        "directive", ["must-revalidate", "no-cache", "proxy-revalidate", "s-maxage=60"]
    )
    def test_directives_that_forbid_stale_in_a_shared_cache(self, directive: str) -> None:
        """RFC 9111 §4.2.4, §5.2.2.2, §5.2.2.4, §5.2.2.8, §5.2.2.10 (implies proxy-revalidate)."""
        entry = stored(
            f"Cache-Control: max-age=60, {directive}, stale-while-revalidate=99, stale-if-error=99"
        )
        policy = CachePolicy(shared=True, stale_if_error=math.inf)
        assert not is_stale_usable(entry, policy, now=T0 + 90)
        assert not is_stale_usable(entry, policy, now=T0 + 90, error=True)

    @pytest.mark.parametrize("directive", ["proxy-revalidate", "s-maxage=60"])
    def test_shared_only_directives_do_not_bind_a_private_cache(self, directive: str) -> None:
        """RFC 9111 §5.2.2.8 and §5.2.2.10 apply to shared caches only."""
        entry = stored(f"Cache-Control: max-age=60, {directive}, stale-while-revalidate=99")
        assert is_stale_usable(entry, PRIVATE, now=T0 + 90)

    def test_request_max_stale(self) -> None:
        """RFC 9111 §5.2.1.2: the client accepts a response stale by up to max-stale."""
        entry = stored("Cache-Control: max-age=60")
        assert is_stale_usable(
            entry, SHARED, now=T0 + 70, request_headers=hdrs("Cache-Control: max-stale=20")
        )
        assert not is_stale_usable(
            entry, SHARED, now=T0 + 70, request_headers=hdrs("Cache-Control: max-stale=5")
        )
        assert is_stale_usable(
            entry, SHARED, now=T0 + 10**6, request_headers=hdrs("Cache-Control: max-stale")
        )

    def test_a_request_that_wants_fresh_gets_no_stale(self) -> None:
        """RFC 9111 §5.2.1.1/§5.2.1.3/§5.2.1.4: no stale response unless max-stale too."""
        entry = stored("Cache-Control: max-age=60, stale-while-revalidate=60")
        for limit in ("max-age=100", "min-fresh=1", "no-cache"):
            request = hdrs(f"Cache-Control: {limit}")
            assert not is_stale_usable(entry, SHARED, now=T0 + 70, request_headers=request)
        request = hdrs("Cache-Control: max-age=100, max-stale=30")
        assert is_stale_usable(entry, SHARED, now=T0 + 70, request_headers=request)

    def test_cache_control_false_uses_only_the_policy(self) -> None:
        entry = stored("Cache-Control: must-revalidate, stale-while-revalidate=999")
        assert not is_stale_usable(entry, NO_CC, now=T0 + 130)
        policy = CachePolicy(shared=False, default_ttl=120, cache_control=False, stale_if_error=60)
        assert is_stale_usable(entry, policy, now=T0 + 130, error=True)


class TestStorageTtl:
    def test_remaining_freshness_plus_the_longest_stale_window(self) -> None:
        entry = stored("Cache-Control: max-age=60, stale-while-revalidate=30, stale-if-error=10")
        assert storage_ttl(entry, SHARED, now=T0 + 20, revalidate=False) == 70

    def test_forbidden_stale_adds_nothing(self) -> None:
        entry = stored("Cache-Control: max-age=60, must-revalidate, stale-if-error=100")
        assert storage_ttl(entry, SHARED, now=T0, revalidate=False) == 60

    def test_validators_keep_an_entry_for_a_revalidating_driver(self) -> None:
        """RFC 9111 §4.3.1: a stale entry with a validator is worth a conditional request."""
        for line in ('ETag: "v1"', f"Last-Modified: {http_date(T0 - 60)}"):
            entry = stored("Cache-Control: max-age=60", line)
            assert storage_ttl(entry, PRIVATE, now=T0, revalidate=True) is None
            assert storage_ttl(entry, PRIVATE, now=T0, revalidate=False) == 60

    def test_no_cache_without_validator_is_not_worth_storing(self) -> None:
        """RFC 9111 §5.2.2.4: it could never be reused without a full request."""
        assert storage_ttl(stored("Cache-Control: no-cache"), PRIVATE, now=T0, revalidate=True) == 0

    def test_unbounded(self) -> None:
        assert (
            storage_ttl(stored(), CachePolicy(default_ttl=None), now=T0, revalidate=False) is None
        )
        forever = CachePolicy(stale_if_error=math.inf)
        assert (
            storage_ttl(stored("Cache-Control: max-age=1"), forever, now=T0, revalidate=False)
            is None
        )

    def test_already_useless(self) -> None:
        assert (
            storage_ttl(stored("Cache-Control: max-age=0"), SHARED, now=T0, revalidate=False) == 0
        )
