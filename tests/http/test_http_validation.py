"""Validators both ways: 304s for clients, revalidation with the origin.

RFC 9110 §8.8.3, §13.1, §13.2, §15.4.5; RFC 9111 §4.3.
"""

from __future__ import annotations

import pytest
from http_factories import PRIVATE, SHARED, T0, hdrs, http_date, stored

from shardcache._http import (
    CachePolicy,
    conditional_headers,
    etag_in,
    freshen,
    is_fresh,
    not_modified,
    not_modified_headers,
    strong_etag,
    with_etag,
)
from shardcache._http._validators import parse_entity_tag


class TestEntityTagsRfc9110Section8_8_3:
    def test_generated_tag_is_strong_quoted_and_deterministic(self) -> None:
        """RFC 9110 §8.8.3: entity-tag = [ W/ ] DQUOTE *etagc DQUOTE."""
        tag = strong_etag(b"body")
        assert tag.startswith(b'"') and tag.endswith(b'"') and len(tag) == 34
        assert tag == strong_etag(b"body") != strong_etag(b"body!")
        assert parse_entity_tag(tag) == (False, tag)

    def test_with_etag_adds_only_when_missing(self) -> None:
        """API §3: a strong ETag is generated when the app gave none."""
        assert with_etag(hdrs("X: y"), b"b") == [*hdrs("X: y"), (b"etag", strong_etag(b"b"))]
        assert with_etag(hdrs('ETag: W/"app"'), b"b") == hdrs('ETag: W/"app"')

    def test_weak_comparison(self) -> None:
        """RFC 9110 §8.8.3.2: weak comparison ignores W/; strong needs both strong."""
        assert etag_in(b'W/"1"', b'"1"')
        assert etag_in(b'"1"', b'W/"1"')
        assert not etag_in(b'W/"1"', b'"1"', weak=False)
        assert etag_in(b'"1"', b'"1"', weak=False)
        assert not etag_in(b'"1"', b'"2"')

    def test_lists_star_and_commas_inside_tags(self) -> None:
        """RFC 9110 §13.1.2: If-None-Match is "*" or a list of entity tags."""
        assert etag_in(b'"a", W/"b" ,"c"', b'"b"')
        assert etag_in(b"*", b'"anything"')
        assert etag_in(b'"x,y"', b'"x,y"')
        assert not etag_in(b'"x,y"', b'"x"')

    def test_tolerated_spellings(self) -> None:
        assert parse_entity_tag(b'w/"a"') == (True, b'"a"')
        assert parse_entity_tag(b"abc") == (False, b'"abc"')
        assert parse_entity_tag(b"*") is None and parse_entity_tag(b"") is None


class TestNotModifiedRfc9110Section13:
    def test_if_none_match(self) -> None:
        """RFC 9110 §13.1.2: a matching tag means 304 for GET/HEAD."""
        entry = stored('ETag: "v1"')
        assert not_modified(hdrs('If-None-Match: "v1"'), entry)
        assert not not_modified(hdrs('If-None-Match: "v2"'), entry)

    def test_if_none_match_list_over_lines_and_weak_tags(self) -> None:
        """RFC 9110 §13.1.2: weak comparison, any member matching."""
        entry = stored('ETag: "v3"')
        assert not_modified(hdrs('If-None-Match: "v1", W/"v2"', 'If-None-Match: W/"v3"'), entry)
        weak_entry = stored('ETag: W/"v1"')
        assert not_modified(hdrs('If-None-Match: "v1"'), weak_entry)

    def test_star_matches_any_stored_representation(self) -> None:
        """RFC 9110 §13.1.2: "*" is false only if no current representation exists."""
        assert not_modified(hdrs("If-None-Match: *"), stored())

    def test_no_etag_stored(self) -> None:
        assert not not_modified(hdrs('If-None-Match: "v1"'), stored())

    def test_if_modified_since_is_ignored_next_to_if_none_match(self) -> None:
        """RFC 9110 §13.1.3: a recipient MUST ignore IMS when INM is present."""
        entry = stored('ETag: "v1"', f"Last-Modified: {http_date(T0 - 3600)}")
        request = hdrs('If-None-Match: "v2"', f"If-Modified-Since: {http_date(T0)}")
        assert not not_modified(request, entry)

    def test_if_modified_since(self) -> None:
        """RFC 9110 §13.1.3: not modified when Last-Modified <= the date given."""
        entry = stored(f"Last-Modified: {http_date(T0 - 3600)}")
        assert not_modified(hdrs(f"If-Modified-Since: {http_date(T0 - 3600)}"), entry)
        assert not_modified(hdrs(f"If-Modified-Since: {http_date(T0)}"), entry)
        assert not not_modified(hdrs(f"If-Modified-Since: {http_date(T0 - 7200)}"), entry)

    @pytest.mark.parametrize("value", ["yesterday", f"{http_date(T0)}, {http_date(T0)}", "0"])
    def test_invalid_if_modified_since_is_ignored(self, value: str) -> None:
        """RFC 9110 §13.1.3: invalid date or more than one member: ignore the field."""
        entry = stored(f"Last-Modified: {http_date(T0 - 3600)}")
        assert not not_modified(hdrs(f"If-Modified-Since: {value}"), entry)

    def test_if_modified_since_without_last_modified(self) -> None:
        """RFC 9111 §4.3.2: use the stored Date, else the time it was received."""
        dated = stored(f"Date: {http_date(T0 - 100)}")
        assert not_modified(hdrs(f"If-Modified-Since: {http_date(T0 - 50)}"), dated)
        assert not not_modified(hdrs(f"If-Modified-Since: {http_date(T0 - 150)}"), dated)
        undated = stored(response_time=T0)
        assert not_modified(hdrs(f"If-Modified-Since: {http_date(T0)}"), undated)
        assert not not_modified(hdrs(f"If-Modified-Since: {http_date(T0 - 1)}"), undated)

    @pytest.mark.parametrize("status", [404, 301, 410])
    def test_preconditions_only_apply_to_2xx(self, status: int) -> None:
        """RFC 9110 §13.2.1: ignore preconditions when the response would not be 2xx."""
        entry = stored('ETag: "v1"', status=status)
        assert not not_modified(hdrs('If-None-Match: "v1"'), entry)
        assert not not_modified(hdrs("If-None-Match: *"), entry)

    def test_304_fields(self) -> None:
        """RFC 9110 §15.4.5: the listed fields, no content fields; RFC 9111 §5.1: Age."""
        entry = stored(
            f"Date: {http_date(T0)}",
            "Content-Type: text/html",
            "Content-Length: 5",
            "Cache-Control: max-age=60",
            'ETag: "v1"',
            f"Last-Modified: {http_date(T0 - 9)}",
            "Vary: Accept",
            "Content-Location: /doc.html",
            f"Expires: {http_date(T0 + 60)}",
            "Set-Cookie: a=1",
            "Content-Encoding: gzip",
        )
        assert not_modified_headers(entry, now=T0 + 5) == hdrs(
            f"Date: {http_date(T0)}",
            "Cache-Control: max-age=60",
            'ETag: "v1"',
            "Vary: Accept",
            "Content-Location: /doc.html",
            f"Expires: {http_date(T0 + 60)}",
            "age: 5",
        )

    def test_304_carries_last_modified_only_without_etag(self) -> None:
        """RFC 9110 §15.4.5: Last-Modified helps when there is no ETag."""
        entry = stored(f"Last-Modified: {http_date(T0 - 9)}", "Content-Type: text/html")
        assert not_modified_headers(entry, now=T0) == hdrs(
            f"Last-Modified: {http_date(T0 - 9)}", "age: 0"
        )


class TestConditionalRequestsRfc9111Section4_3_1:
    def test_both_validators(self) -> None:
        """RFC 9111 §4.3.1: If-None-Match from ETag, If-Modified-Since from Last-Modified."""
        entry = stored('ETag: W/"v1"', f"Last-Modified: {http_date(T0 - 60)}")
        assert conditional_headers(entry) == [
            (b"if-none-match", b'W/"v1"'),
            (b"if-modified-since", http_date(T0 - 60).encode()),
        ]

    def test_no_validator(self) -> None:
        assert conditional_headers(stored("Cache-Control: max-age=1")) == []

    def test_invalid_validators_are_not_sent(self) -> None:
        assert conditional_headers(stored("Last-Modified: soon", "ETag: *")) == []


class TestFreshenRfc9111Section4_3_4:
    def test_headers_are_updated_and_the_body_kept(self) -> None:
        """RFC 9111 §4.3.4 and §3.2: the 304's fields replace the stored ones."""
        original = stored(
            f"Date: {http_date(T0)}",
            "Content-Type: application/json",
            "Cache-Control: max-age=60",
            'ETag: "v1"',
            "Age: 20",
            "X-Old: kept",
            "Content-Length: 5",
        )
        later = T0 + 1000
        update = hdrs(
            f"Date: {http_date(later)}",
            "Cache-Control: max-age=120",
            "cache-control: must-revalidate",
            'ETag: "v1"',
            "Content-Type: text/html",
            "Content-Length: 0",
            "Content-Encoding: gzip",
            "Connection: close",
            "X-New: added",
        )
        fresh = freshen(
            original, update, request_time=later - 1, response_time=later, policy=PRIVATE
        )
        assert fresh is not None
        assert fresh.headers == hdrs(
            f"Date: {http_date(later)}",
            "Content-Type: application/json",
            "Cache-Control: max-age=120",
            "cache-control: must-revalidate",
            'ETag: "v1"',
            "X-Old: kept",
            "Content-Length: 5",
            "X-New: added",
        )
        assert (fresh.body, fresh.status) == (original.body, original.status)
        assert (fresh.request_time, fresh.response_time) == (later - 1, later)
        assert is_fresh(fresh, PRIVATE, now=later + 100)
        assert not is_fresh(original, PRIVATE, now=later + 100)

    def test_a_304_without_date_or_age_restarts_the_age(self) -> None:
        """RFC 9111 §4.2.3 / RFC 9110 §6.6.1: the old Date and Age must not age it again."""
        original = stored(f"Date: {http_date(T0)}", "Age: 50", "Cache-Control: max-age=60")
        later = T0 + 3600
        fresh = freshen(original, [], request_time=later, response_time=later, policy=PRIVATE)
        assert fresh is not None
        assert fresh.headers == hdrs(f"date: {http_date(later)}", "Cache-Control: max-age=60")
        assert is_fresh(fresh, PRIVATE, now=later + 30)

    def test_set_cookie_from_a_304_follows_the_policy(self) -> None:
        original = stored('ETag: "v1"')
        update = hdrs('ETag: "v1"', "Set-Cookie: sid=2", f"Date: {http_date(T0)}")
        refused = freshen(original, update, request_time=T0, response_time=T0, policy=SHARED)
        allowed = freshen(
            original,
            update,
            request_time=T0,
            response_time=T0,
            policy=CachePolicy(allow_set_cookie=True),
        )
        assert refused is not None and allowed is not None
        assert (b"Set-Cookie", b"sid=2") not in refused.headers
        assert (b"Set-Cookie", b"sid=2") in allowed.headers

    @pytest.mark.parametrize(
        ("stored_line", "update_line", "selected"),
        [
            ('ETag: "v1"', 'ETag: "v2"', False),  # another representation
            ('ETag: W/"v1"', 'ETag: "v1"', False),  # strong needs strong comparison
            ('ETag: "v1"', 'ETag: W/"v1"', True),  # weak: weak comparison
            ("X: no validator", 'ETag: "v1"', False),
            (f"Last-Modified: {http_date(T0)}", f"Last-Modified: {http_date(T0 + 1)}", False),
            (f"Last-Modified: {http_date(T0)}", f"Last-Modified: {http_date(T0)}", True),
            ('ETag: "v1"', "X: no validator", True),  # the one stored response
        ],
    )
    def test_selection(self, stored_line: str, update_line: str, selected: bool) -> None:
        """RFC 9111 §4.3.4: the 304's validator selects the stored response to update."""
        result = freshen(
            stored(stored_line),
            hdrs(update_line),
            request_time=T0,
            response_time=T0,
            policy=PRIVATE,
        )
        assert (result is not None) is selected
