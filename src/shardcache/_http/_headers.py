"""Header fields as raw byte pairs: lookup, list members, delta-seconds and HTTP dates.

Headers travel as ``(name, value)`` byte pairs end to end, exactly as ASGI servers
(``scope["headers"]``) and aiohttp (``response.raw_headers``) hand them over: names are
compared case-insensitively, and multi-valued fields keep every line in its order. Nothing
here decodes a whole header block into a dict, because a dict loses repeated fields
(``Set-Cookie``, ``Vary``, ``Cache-Control`` split over several lines).

>>> headers = [(b"Cache-Control", b"public"), (b"cache-control", b'max-age=60, private="a, b"')]
>>> header_members(headers, b"cache-control")
[b'public', b'max-age=60', b'private="a, b"']
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from email.utils import formatdate
from typing import Final

__all__ = [
    "DELTA_SECONDS_MAX",
    "HeaderList",
    "RawHeaders",
    "first_header",
    "format_http_date",
    "has_header",
    "header_members",
    "header_values",
    "parse_delta_seconds",
    "parse_http_date",
    "replace_header",
    "split_members",
    "without_headers",
]

#: Headers as a driver receives them: an ASGI ``list`` or aiohttp's ``raw_headers`` tuple.
RawHeaders = Sequence[tuple[bytes, bytes]]
#: Headers as this package returns them.
HeaderList = list[tuple[bytes, bytes]]

#: RFC 9111 §1.2.2: a delta-seconds value too large to represent counts as 2**31.
DELTA_SECONDS_MAX: Final = 2**31

_QUOTE: Final = 0x22
_BACKSLASH: Final = 0x5C
_COMMA: Final = 0x2C


def header_values(headers: RawHeaders, name: bytes) -> list[bytes]:
    """Every field line value named ``name`` (case-insensitive), in their order.

    >>> header_values([(b"Vary", b"Accept"), (b"vary", b"Cookie")], b"VARY")
    [b'Accept', b'Cookie']
    """
    name = name.lower()
    size = len(name)  # measured: comparing lengths first skips most lower() calls
    return [value for field, value in headers if len(field) == size and field.lower() == name]


def first_header(headers: RawHeaders, name: bytes) -> bytes | None:
    """The first field line value named ``name``, or ``None`` when the field is absent."""
    name = name.lower()
    size = len(name)
    for field, value in headers:
        if len(field) == size and field.lower() == name:
            return value
    return None


def has_header(headers: RawHeaders, name: bytes) -> bool:
    """True when at least one field line is named ``name`` (case-insensitive)."""
    return first_header(headers, name) is not None


def split_members(value: bytes) -> list[bytes]:
    """Split one comma-separated field value into its members (RFC 9110 §5.6.1).

    Commas inside quoted strings do not split (``private="a, b"``, ``W/"x,y"``); each member
    is stripped of surrounding whitespace and empty members are dropped, as §5.6.1 requires
    recipients to accept ``a, , b``.

    >>> split_members(b' a ,, "b, c" ,d')
    [b'a', b'"b, c"', b'd']
    """
    if b'"' not in value:
        parts = value.split(b",")
    else:
        parts = []
        start = 0
        in_quotes = False
        escaped = False
        for index, byte in enumerate(value):
            if escaped:
                escaped = False
            elif in_quotes:
                if byte == _BACKSLASH:
                    escaped = True  # RFC 9110 §5.6.4 quoted-pair
                elif byte == _QUOTE:
                    in_quotes = False
            elif byte == _QUOTE:
                in_quotes = True
            elif byte == _COMMA:
                parts.append(value[start:index])
                start = index + 1
        parts.append(value[start:])
    return [member for member in (part.strip() for part in parts) if member]


def header_members(headers: RawHeaders, name: bytes) -> list[bytes]:
    """The list members of every ``name`` field line, as if the lines were combined.

    RFC 9110 §5.3: several field lines of a list-based field are equivalent to one line
    with the values joined by commas.
    """
    return [member for value in header_values(headers, name) for member in split_members(value)]


def without_headers(headers: RawHeaders, names: Collection[bytes]) -> HeaderList:
    """A copy of ``headers`` without the fields in ``names`` (lowercase), order kept."""
    return [(field, value) for field, value in headers if field.lower() not in names]


def replace_header(headers: RawHeaders, name: bytes, value: bytes) -> HeaderList:
    """A copy of ``headers`` where ``name`` has the single value ``value``.

    The new line takes the place of the first existing ``name`` line (other lines of that
    name are dropped), or is appended when the field was absent.

    >>> replace_header([(b"age", b"1"), (b"x", b"y"), (b"Age", b"2")], b"age", b"9")
    [(b'age', b'9'), (b'x', b'y')]
    """
    lowered = name.lower()
    result: HeaderList = []
    placed = False
    for field, old in headers:
        if field.lower() != lowered:
            result.append((field, old))
        elif not placed:
            result.append((name, value))
            placed = True
    if not placed:
        result.append((name, value))
    return result


def parse_delta_seconds(value: bytes | str) -> int | None:
    """A non-negative integer number of seconds (RFC 9111 §1.2.2), or ``None`` if invalid.

    Values above 2**31 are clamped to 2**31, as §1.2.2 requires. Signs, decimals and empty
    strings are invalid.

    >>> parse_delta_seconds(b"60"), parse_delta_seconds("-1"), parse_delta_seconds(b"1.5")
    (60, None, None)
    """
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    if not text.isascii() or not text.isdigit():
        return None
    return min(int(text), DELTA_SECONDS_MAX)


_MONTHS: Final = {
    month: number
    for number, month in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
# RFC 9110 §5.6.7's grammar, exactly: single spaces, two-digit time fields, "GMT", a
# four-digit year in IMF-fixdate. Only the case is relaxed (cache-tests accepts "gMT" and
# "AUG"). Anything else is not a date: RFC 9111 §5.3 makes an invalid Expires mean "already
# expired", so reading "UTC" or "18-Aug-2050" leniently would serve what should be stale.
_TIME: Final = r"(\d{2}):(\d{2}):(\d{2})"
# IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT").
_IMF_FIXDATE: Final = re.compile(rf"[a-z]{{3}}, (\d{{2}}) ([a-z]{{3}}) (\d{{4}}) {_TIME} gmt", re.I)
# Obsolete RFC 850 form ("Sunday, 06-Nov-94 08:49:37 GMT").
_RFC850: Final = re.compile(rf"[a-z]{{6,9}}, (\d{{2}})-([a-z]{{3}})-(\d{{2}}) {_TIME} gmt", re.I)
# Obsolete asctime form ("Sun Nov  6 08:49:37 1994").
_ASCTIME: Final = re.compile(rf"[a-z]{{3}} ([a-z]{{3}}) ( \d|\d{{2}}) {_TIME} (\d{{4}})", re.I)


def parse_http_date(value: bytes | str, *, now: float | None = None) -> float | None:
    """An HTTP-date as a Unix timestamp, or ``None`` when it is not a valid date.

    RFC 9110 §5.6.7: recipients accept IMF-fixdate and the two obsolete forms (RFC 850 and
    asctime). A two-digit RFC 850 year that would be more than 50 years after ``now``
    (default: the current time) is read as the most recent past year with those digits.

    >>> parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT")
    784111777.0
    >>> parse_http_date(b"0") is None  # RFC 9111 §5.3: such an Expires means "already expired"
    True
    """
    return _parse_date(value.decode("latin-1") if isinstance(value, bytes) else value, now)


@functools.lru_cache(maxsize=1024)  # the Date of a stored response is read on every hit
def _parse_date(text: str, now: float | None) -> float | None:
    text = text.strip()
    if match := _IMF_FIXDATE.fullmatch(text):
        day, month, year, hour, minute, second = match.groups()
        full_year = int(year)
    elif match := _RFC850.fullmatch(text):
        day, month, year, hour, minute, second = match.groups()
        current = time.gmtime(time.time() if now is None else now).tm_year
        full_year = current - current % 100 + int(year)
        if full_year > current + 50:
            full_year -= 100
    elif match := _ASCTIME.fullmatch(text):
        month, day, hour, minute, second, year = match.groups()
        full_year = int(year)
    else:
        return None
    month_number = _MONTHS.get(month.lower())
    if month_number is None:
        return None
    try:
        moment = datetime(
            full_year,
            month_number,
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),  # a leap second (60) is kept inside the minute
            tzinfo=timezone.utc,
        )
    except ValueError:  # 31 Feb, hour 25, ...
        return None
    return moment.timestamp()


def format_http_date(timestamp: float) -> bytes:
    """A Unix timestamp as an IMF-fixdate (RFC 9110 §5.6.7), the form senders must use.

    >>> format_http_date(784111777)
    b'Sun, 06 Nov 1994 08:49:37 GMT'
    """
    return formatdate(timestamp, usegmt=True).encode("ascii")
