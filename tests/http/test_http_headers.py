"""Raw header fields, list members, delta-seconds and HTTP dates (RFC 9110 §5, RFC 9111 §1.2.2)."""

from __future__ import annotations

import pytest
from http_factories import hdrs
from hypothesis import given
from hypothesis import strategies as st

from shardcache._http import format_http_date, parse_http_date
from shardcache._http._headers import (
    DELTA_SECONDS_MAX,
    first_header,
    has_header,
    header_members,
    header_values,
    parse_delta_seconds,
    replace_header,
    split_members,
    without_headers,
)

RFC_EXAMPLE = 784111777.0  # Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110 §5.6.7's example


class TestFieldLookupRfc9110Section5:
    def test_names_are_case_insensitive_and_lines_keep_their_order(self) -> None:
        """RFC 9110 §5.1: field names are case-insensitive; repeated lines keep their order."""
        headers = hdrs("Set-Cookie: a=1", "content-type: text/plain", "SET-COOKIE: b=2")
        assert header_values(headers, b"set-cookie") == [b"a=1", b"b=2"]
        assert first_header(headers, b"Content-Type") == b"text/plain"
        assert first_header(headers, b"etag") is None
        assert has_header(headers, b"SET-cookie")
        assert not has_header(headers, b"vary")

    def test_lines_combine_into_one_list(self) -> None:
        """RFC 9110 §5.3: several lines of a list field equal one comma-joined line."""
        split = hdrs("Cache-Control: public", "cache-control: max-age=5, no-transform")
        joined = hdrs("Cache-Control: public, max-age=5, no-transform")
        assert header_members(split, b"cache-control") == header_members(joined, b"cache-control")

    def test_commas_inside_quoted_strings_do_not_split(self) -> None:
        """RFC 9110 §5.6.1 and §5.6.4: a quoted string (with quoted-pairs) is one member."""
        assert split_members(b'private="a, b", W/"x,y", "q\\",r"') == [
            b'private="a, b"',
            b'W/"x,y"',
            b'"q\\",r"',
        ]

    def test_empty_list_elements_are_dropped(self) -> None:
        """RFC 9110 §5.6.1: recipients accept and ignore empty list elements."""
        assert split_members(b" ,a,, b ,\t, ") == [b"a", b"b"]
        assert split_members(b"") == []

    def test_replace_header_takes_the_first_place_and_drops_the_rest(self) -> None:
        headers = hdrs("Age: 1", "X: y", "age: 2", "Z: z")
        assert replace_header(headers, b"age", b"9") == [
            (b"age", b"9"),
            (b"X", b"y"),
            (b"Z", b"z"),
        ]
        assert replace_header(hdrs("X: y"), b"age", b"0") == [(b"X", b"y"), (b"age", b"0")]

    def test_without_headers_keeps_everything_else_in_order(self) -> None:
        headers = hdrs("A: 1", "Connection: close", "B: 2", "a: 3")
        assert without_headers(headers, {b"connection"}) == hdrs("A: 1", "B: 2", "a: 3")


class TestDeltaSecondsRfc9111Section1_2_2:
    @pytest.mark.parametrize(("raw", "seconds"), [(b"0", 0), (b"60", 60), (b" 7 ", 7), ("42", 42)])
    def test_valid_values(self, raw: bytes | str, seconds: int) -> None:
        """RFC 9111 §1.2.2: delta-seconds is a non-negative decimal integer."""
        assert parse_delta_seconds(raw) == seconds

    @pytest.mark.parametrize("raw", [b"", b"-1", b"+1", b"1.5", b"1e3", b"abc", b"6 0", "١٢"])
    def test_invalid_values(self, raw: bytes | str) -> None:
        """RFC 9111 §1.2.2: anything but ASCII digits is not delta-seconds."""
        assert parse_delta_seconds(raw) is None

    def test_huge_values_are_clamped_to_2_pow_31(self) -> None:
        """RFC 9111 §1.2.2: an unrepresentable value is taken as 2147483648."""
        assert parse_delta_seconds(b"99999999999999999999") == DELTA_SECONDS_MAX == 2**31


class TestHttpDatesRfc9110Section5_6_7:
    @pytest.mark.parametrize(
        "raw",
        [
            b"Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
            b"Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
            b"Sun Nov  6 08:49:37 1994",  # obsolete asctime
            b"  sun, 06 nov 1994 08:49:37 gmt ",  # any case; surrounding space is not the value's
            b"SUN, 06 NOV 1994 08:49:37 gMT",
        ],
    )
    def test_the_three_formats(self, raw: bytes) -> None:
        """RFC 9110 §5.6.7: recipients parse all three HTTP-date formats."""
        assert parse_http_date(raw, now=RFC_EXAMPLE) == RFC_EXAMPLE

    def test_rfc850_two_digit_year_fifty_year_rule(self) -> None:
        """RFC 9110 §5.6.7: a 2-digit year more than 50 years ahead is in the past century."""
        now = parse_http_date(b"Mon, 01 Jan 2024 00:00:00 GMT")
        assert now is not None
        in_2030 = parse_http_date(b"Tuesday, 01-Jan-30 00:00:00 GMT", now=now)
        in_1980 = parse_http_date(b"Tuesday, 01-Jan-80 00:00:00 GMT", now=now)
        assert in_2030 == parse_http_date(b"Tue, 01 Jan 2030 00:00:00 GMT")
        assert in_1980 == parse_http_date(b"Tue, 01 Jan 1980 00:00:00 GMT")

    @pytest.mark.parametrize(
        "raw",
        [
            b"0",
            b"",
            b"-1",
            b"tomorrow",
            b"Sat, 31 Feb 2024 00:00:00 GMT",
            b"Sun, 06 Nov 1994 25:00:00 GMT",
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08:49:37 PST",
            b"Sun, 06 Nov 1994 08:49:37 +0200",
            b"1700000000",
            # Near misses of the grammar (cache-tests' invalid Expires values): each would
            # make a response fresh for decades if read leniently.
            b"Sun, 06 Nov 1994 08:49:37 UTC",
            b"Sun, 06 Nov 1994 08:49:37 AEST",
            b"06 Nov 1994 08:49:37 GMT",
            b"Sun 06 Nov 1994 08:49:37 GMT",
            b"Sun, 06  Nov  1994 08:49:37 GMT",
            b"Sun, 06-Nov-1994 08:49:37 GMT",
            b"Sun, 06 Nov 94 08:49:37 GMT",
            b"Sun, 06 Nov 1994 08.49.37 GMT",
            b"Sun, 06 Nov 1994 8:49:37 GMT",
            b"Sun, 6 Nov 1994 08:49:37 GMT",
        ],
    )
    def test_invalid_dates(self, raw: bytes) -> None:
        """RFC 9110 §5.6.7 / RFC 9111 §5.3: anything else is not a date (Expires: 0 is past),
        including near misses of the grammar; only the letters' case is free."""
        assert parse_http_date(raw) is None

    def test_a_leap_second_stays_in_its_minute(self) -> None:
        assert parse_http_date(b"Sat, 31 Dec 2016 23:59:60 GMT") == parse_http_date(
            b"Sat, 31 Dec 2016 23:59:59 GMT"
        )

    def test_format_is_imf_fixdate(self) -> None:
        """RFC 9110 §5.6.7: senders generate IMF-fixdate."""
        assert format_http_date(RFC_EXAMPLE) == b"Sun, 06 Nov 1994 08:49:37 GMT"

    @given(st.integers(min_value=0, max_value=253402300799))
    def test_format_then_parse_round_trips(self, timestamp: int) -> None:
        """RFC 9110 §5.6.7: what we send, we read back to the second."""
        assert parse_http_date(format_http_date(timestamp)) == timestamp

    @given(st.binary(max_size=64))
    def test_parsing_never_raises(self, raw: bytes) -> None:
        result = parse_http_date(raw)
        assert result is None or isinstance(result, float)
