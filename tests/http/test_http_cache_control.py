"""Cache-Control parsing (RFC 9111 §5.2, RFC 5861): tolerant, never raising."""

from __future__ import annotations

import msgspec
import pytest
from http_factories import hdrs, stored
from hypothesis import given
from hypothesis import strategies as st

from shardcache._http import (
    CacheControl,
    CachePolicy,
    freshness_lifetime,
    parse_cache_control,
    request_cache_control,
)
from shardcache._http._cache_control import response_cache_control


class TestSyntaxRfc9111Section5_2:
    def test_names_case_insensitive_and_spacing_tolerated(self) -> None:
        """RFC 9111 §5.2: directive names compare case-insensitively; OWS is ignored."""
        assert parse_cache_control(b"  Max-Age = 60 ,NO-STORE,\tPublic ") == CacheControl(
            max_age=60, no_store=True, public=True
        )

    def test_quoted_and_token_arguments_are_equal(self) -> None:
        """RFC 9111 §5.2: arguments may use token or quoted-string syntax."""
        assert parse_cache_control(b'max-age="60"') == parse_cache_control(b"max-age=60")
        assert parse_cache_control('s-maxage="5"').s_maxage == 5

    def test_unknown_directives_are_ignored(self) -> None:
        """RFC 9111 §5.2.3: caches ignore unrecognized directives (with or without value)."""
        parsed = parse_cache_control(b'foo, bar=baz, ext="a, max-age=1", max-age=5, x-y')
        assert parsed == CacheControl(max_age=5)

    def test_empty_and_missing_fields(self) -> None:
        assert parse_cache_control() == CacheControl()
        assert parse_cache_control(b"", b" , ,") == CacheControl()
        assert CacheControl.from_headers(hdrs("Content-Type: text/html")) == CacheControl()

    def test_several_lines_form_one_field(self) -> None:
        """RFC 9110 §5.3: Cache-Control split over lines is one list."""
        parsed = CacheControl.from_headers(
            hdrs("Cache-Control: public", "X: y", "cache-control: max-age=9")
        )
        assert parsed == CacheControl(public=True, max_age=9)

    @pytest.mark.parametrize(
        ("directive", "field"),
        [
            ("no-store", "no_store"),
            ("no-transform", "no_transform"),
            ("only-if-cached", "only_if_cached"),
            ("must-revalidate", "must_revalidate"),
            ("must-understand", "must_understand"),
            ("proxy-revalidate", "proxy_revalidate"),
            ("public", "public"),
            ("immutable", "immutable"),
            ("no-cache", "no_cache"),
            ("private", "private"),
        ],
    )
    def test_flag_directives(self, directive: str, field: str) -> None:
        """RFC 9111 §5.2.1 and §5.2.2: each flag directive sets its field, and only it."""
        parsed = parse_cache_control(directive.upper())
        assert getattr(parsed, field) is True
        assert parsed == msgspec.convert({field: True}, CacheControl)

    def test_stale_extensions(self) -> None:
        """RFC 5861 §3 and §4: stale-while-revalidate and stale-if-error take seconds."""
        parsed = parse_cache_control(b"max-age=1, stale-while-revalidate=30, stale-if-error=600")
        assert (parsed.stale_while_revalidate, parsed.stale_if_error) == (30, 600)


class TestDeltaArgumentsRfc9111Section4_2_1:
    @pytest.mark.parametrize(
        "raw",
        [b"max-age=abc", b"max-age=-1", b"max-age=1.5", b"max-age=", b"max-age", b"max-age=''"],
    )
    def test_invalid_max_age_reads_as_stale(self, raw: bytes) -> None:
        """RFC 9111 §4.2.1: invalid freshness information (non-integer max-age) = stale."""
        assert parse_cache_control(raw).max_age == 0

    def test_huge_max_age_is_clamped(self) -> None:
        """RFC 9111 §1.2.2: an overflowing delta-seconds counts as 2**31."""
        assert parse_cache_control(b"max-age=123456789012345678901234567890").max_age == 2**31

    def test_duplicates_keep_the_most_restrictive_value(self) -> None:
        """RFC 9111 §4.2.1: with repeated directives the most restrictive is honoured."""
        parsed = parse_cache_control(b"max-age=60, s-maxage=10", b"max-age=30, s-maxage=20")
        assert (parsed.max_age, parsed.s_maxage) == (30, 10)
        # min-fresh restricts more when larger.
        assert parse_cache_control(b"min-fresh=5, min-fresh=50").min_fresh == 50
        # A garbage duplicate makes it stale rather than being skipped.
        assert parse_cache_control(b"max-age=60, max-age=oops").max_age == 0

    def test_bare_max_stale_accepts_any_staleness(self) -> None:
        """RFC 9111 §5.2.1.2: max-stale without a value means any stale response is fine."""
        assert parse_cache_control(b"max-stale").max_stale == 2**31
        assert parse_cache_control(b"max-stale=30").max_stale == 30
        assert parse_cache_control(b"max-stale=junk").max_stale == 0


class TestQualifiedFormsRfc9111Sections5_2_2_4And5_2_2_7:
    def test_field_lists_are_lowercased_and_split(self) -> None:
        """RFC 9111 §5.2.2.4 / §5.2.2.7: the qualified form lists field names."""
        parsed = parse_cache_control(b'no-cache="Set-Cookie, X-Foo", private=Authorization')
        assert parsed.no_cache is False and parsed.private is False
        assert parsed.no_cache_fields == ("set-cookie", "x-foo")
        assert parsed.private_fields == ("authorization",)

    def test_unqualified_form_wins(self) -> None:
        """RFC 9111 §4.2.1: conflicting directives, the most restrictive is honoured."""
        parsed = parse_cache_control(b'private="x-a", private, no-cache, no-cache="x-b"')
        assert parsed.private is True and parsed.private_fields == ()
        assert parsed.no_cache is True and parsed.no_cache_fields == ()

    def test_empty_list_counts_as_unqualified(self) -> None:
        assert parse_cache_control(b'private=""').private is True
        assert parse_cache_control(b'no-cache=" , "').no_cache is True


class TestRequestNoCacheRfc9111Section5_2_1_4:
    @pytest.mark.parametrize("value", ['no-cache="x"', "no-cache=1", "no-cache=a, max-age=5"])
    def test_a_request_no_cache_with_an_argument_is_still_no_cache(self, value: str) -> None:
        """§5.2.1.4 gives a request's no-cache no argument: one sent anyway is read the
        restrictive way (revalidate), not as a response's field list (ignored)."""
        parsed = request_cache_control(hdrs(f"Cache-Control: {value}"))
        assert parsed.no_cache is True and parsed.no_cache_fields == ()


class TestRequestPragmaRfc9111Section5_4:
    def test_pragma_no_cache_alone_means_no_cache(self) -> None:
        """RFC 9111 §5.4 (RFC 7234 §5.4): Pragma: no-cache without Cache-Control."""
        assert request_cache_control(hdrs("Pragma: No-Cache")).no_cache is True

    def test_pragma_is_ignored_when_cache_control_is_present(self) -> None:
        """RFC 9111 §5.4: Cache-Control is understood, so Pragma is not consulted."""
        parsed = request_cache_control(hdrs("Pragma: no-cache", "Cache-Control: max-age=10"))
        assert parsed == CacheControl(max_age=10)

    def test_other_pragmas_mean_nothing(self) -> None:
        assert request_cache_control(hdrs("Pragma: foo")) == CacheControl()


@given(st.lists(st.binary(max_size=40), max_size=3))
def test_parsing_never_raises(values: list[bytes]) -> None:
    """RFC 9111 §5.2: whatever a sender writes, the cache reads a CacheControl."""
    assert isinstance(parse_cache_control(*values), CacheControl)


CDN = (b"cdn-cache-control",)


class TestTargetedFieldsRfc9213:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            (b"max-age=60", CacheControl(max_age=60)),
            (b"foobar, max-age=60;p=1", CacheControl(max_age=60)),  # unknown, parameters
            (b"private", CacheControl(private=True)),
            (b"no-store", CacheControl(no_store=True)),
            (b'no-cache="set-cookie"', CacheControl(no_cache_fields=("set-cookie",))),
            (b"max-age=99999999999", CacheControl(max_age=2**31)),
            (b'max-age="60"', CacheControl()),  # a wrong type: the directive, not the field
        ],
    )
    def test_a_valid_targeted_field_replaces_cache_control(
        self, value: bytes, expected: CacheControl
    ) -> None:
        """RFC 9213 §2.1: the first targeted field with a valid value is used instead."""
        headers = [*hdrs("Cache-Control: no-store, max-age=5"), (b"CDN-Cache-Control", value)]
        assert response_cache_control(headers, CDN) == (expected, True)

    @pytest.mark.parametrize(
        "value",
        [b"", b"max-age =60", b"max-age= 60", b"MaX-aGe=60", b"max-age=60, &&&", b"max-age=60,"],
    )
    def test_an_invalid_targeted_field_is_ignored(self, value: bytes) -> None:
        """RFC 9213 §2.1 / RFC 8941: a value that is not a valid Dictionary is ignored as a
        whole; Cache-Control applies."""
        headers = [*hdrs("Cache-Control: no-store"), (b"cdn-cache-control", value)]
        assert response_cache_control(headers, CDN) == (CacheControl(no_store=True), False)

    def test_without_a_target_list_the_field_means_nothing(self) -> None:
        headers = hdrs("Cache-Control: no-store", "CDN-Cache-Control: max-age=60")
        assert response_cache_control(headers, ()) == (CacheControl(no_store=True), False)

    def test_expires_is_ignored_when_a_targeted_field_applies(self) -> None:
        """RFC 9213 §2.1: Cache-Control *and* Expires give way to the targeted field."""
        policy = CachePolicy(shared=True, default_ttl=0.0, targeted=CDN)
        entry = stored("Expires: 0", "CDN-Cache-Control: max-age=100")
        assert freshness_lifetime(entry, policy) == 100
        entry = stored("Expires: Thu, 01 Jan 2099 00:00:00 GMT", "CDN-Cache-Control: public")
        assert freshness_lifetime(entry, policy) == 0.0  # the policy's ttl, not Expires
        assert freshness_lifetime(entry, CachePolicy(shared=True)) > 10**8
