"""``Cache-Control`` directives, parsed tolerantly (RFC 9111 §5.2, RFC 5861).

One :class:`CacheControl` value holds both request directives (§5.2.1) and response
directives (§5.2.2); which ones matter depends on where the header came from. Parsing never
raises: a sender's mistakes are read in the most restrictive way that still makes sense.

* Names are case-insensitive; spaces around ``=`` and ``,`` are ignored; arguments may be
  tokens or quoted strings (§5.2: "both token and quoted-string syntax").
* Unknown directives are ignored (§5.2.3).
* An invalid delta-seconds argument (``max-age=abc``, ``max-age=-1``, ``max-age=1.5``, a
  missing argument) reads as ``0``: §4.2.1 encourages treating a response with invalid
  freshness information as stale. Values above 2**31 are clamped (§1.2.2).
* A directive given twice keeps its most restrictive value (§4.2.1: "the most restrictive
  directive should be honored"): the smallest ``max-age``, ``s-maxage``, ``max-stale``,
  ``stale-while-revalidate`` and ``stale-if-error``, the largest ``min-fresh``.
* ``no-cache`` and ``private`` with a field-name list (§5.2.2.4, §5.2.2.7) set
  ``no_cache_fields`` / ``private_fields`` instead of the unqualified flag; an empty list
  (``private=""``) counts as unqualified, and the unqualified form wins over a list.

>>> cc = parse_cache_control(b'Public, MAX-AGE = "60", private="Set-Cookie", foo=bar')
>>> cc.public, cc.max_age, cc.private, cc.private_fields
(True, 60, False, ('set-cookie',))
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any, Final

import msgspec

from ._headers import (
    RawHeaders,
    header_members,
    header_values,
    parse_delta_seconds,
    split_members,
)

__all__ = [
    "CacheControl",
    "parse_cache_control",
    "request_cache_control",
    "response_cache_control",
]


class CacheControl(msgspec.Struct, frozen=True, kw_only=True):
    """The directives of one ``Cache-Control`` field (all of its lines together).

    Delta-seconds directives are ``None`` when absent. ``max_stale`` without an argument
    (any staleness is acceptable, §5.2.1.2) is ``2**31``.

    >>> CacheControl.from_headers([(b"cache-control", b"no-store")]).no_store
    True
    """

    max_age: int | None = None  # §5.2.1.1 (request), §5.2.2.1 (response)
    s_maxage: int | None = None  # §5.2.2.10
    max_stale: int | None = None  # §5.2.1.2
    min_fresh: int | None = None  # §5.2.1.3
    stale_while_revalidate: int | None = None  # RFC 5861 §3
    stale_if_error: int | None = None  # RFC 5861 §4 (request and response)
    no_cache: bool = False  # §5.2.1.4, §5.2.2.4 (unqualified)
    no_cache_fields: tuple[str, ...] = ()  # §5.2.2.4 qualified form, lowercase names
    no_store: bool = False  # §5.2.1.5, §5.2.2.5
    no_transform: bool = False  # §5.2.1.6, §5.2.2.6
    only_if_cached: bool = False  # §5.2.1.7
    must_revalidate: bool = False  # §5.2.2.2
    must_understand: bool = False  # §5.2.2.3
    proxy_revalidate: bool = False  # §5.2.2.8
    public: bool = False  # §5.2.2.9
    private: bool = False  # §5.2.2.7 (unqualified)
    private_fields: tuple[str, ...] = ()  # §5.2.2.7 qualified form, lowercase names
    immutable: bool = False  # RFC 8246 (parsed, not acted upon)

    @classmethod
    def from_headers(cls, headers: RawHeaders) -> CacheControl:
        """Parse every ``Cache-Control`` line of ``headers`` as one field (RFC 9110 §5.3)."""
        return parse_cache_control(*header_values(headers, b"cache-control"))


_DELTA: Final[dict[str, tuple[str, Callable[[int, int], int]]]] = {
    # directive -> (field, how two occurrences combine: the most restrictive)
    "max-age": ("max_age", min),
    "s-maxage": ("s_maxage", min),
    "max-stale": ("max_stale", min),
    "min-fresh": ("min_fresh", max),
    "stale-while-revalidate": ("stale_while_revalidate", min),
    "stale-if-error": ("stale_if_error", min),
}
_FLAGS: Final = {
    "no-store": "no_store",
    "no-transform": "no_transform",
    "only-if-cached": "only_if_cached",
    "must-revalidate": "must_revalidate",
    "must-understand": "must_understand",
    "proxy-revalidate": "proxy_revalidate",
    "public": "public",
    "immutable": "immutable",
}
_QUALIFIED: Final = {"no-cache": "no_cache", "private": "private"}
_EMPTY: Final = CacheControl()
_NO_CACHE: Final = CacheControl(no_cache=True)


def _unquote(argument: str) -> str:
    """The content of a quoted-string (RFC 9110 §5.6.4), tolerating a missing end quote."""
    if not argument.startswith('"'):
        return argument
    chars: list[str] = []
    escaped = False
    for char in argument[1:]:
        if escaped:
            chars.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            break
        else:
            chars.append(char)
    return "".join(chars)


def _field_names(argument: str) -> list[str]:
    return [name.strip().lower() for name in argument.split(",") if name.strip()]


def parse_cache_control(*values: bytes | str) -> CacheControl:
    """Parse ``Cache-Control`` field values (one per field line) into a :class:`CacheControl`.

    Never raises; see the module docstring for how malformed input is read.

    >>> parse_cache_control(b"max-age=60", b"max-age=30, s-maxage=abc").max_age
    30
    >>> parse_cache_control(b"max-age=60, s-maxage=abc").s_maxage  # invalid: stale (§4.2.1)
    0
    """
    return _parse(values)


# Stored responses are read again and again with the same field values; CacheControl is
# frozen, so a bounded memo makes the repeated parses of one hit nearly free.
@functools.lru_cache(maxsize=1024)
def _parse(values: tuple[bytes | str, ...]) -> CacheControl:
    found: dict[str, Any] = {}
    qualified: dict[str, list[str]] = {}
    for value in values:
        raw = value if isinstance(value, bytes) else value.encode("latin-1", "replace")
        for member in split_members(raw):
            name, equals, argument = member.decode("latin-1").partition("=")
            name = name.strip().lower()
            argument = _unquote(argument.strip())
            if name in _DELTA:
                field, combine = _DELTA[name]
                seconds = parse_delta_seconds(argument)
                if seconds is None:
                    # §5.2.1.2: a bare max-stale accepts any staleness; any other invalid
                    # or missing argument reads as 0, the restrictive reading of §4.2.1.
                    seconds = 2**31 if name == "max-stale" and not equals else 0
                previous = found.get(field)
                found[field] = seconds if previous is None else combine(previous, seconds)
            elif name in _FLAGS:
                found[_FLAGS[name]] = True
            elif name in _QUALIFIED:
                names = _field_names(argument) if equals else []
                if names:
                    qualified.setdefault(name, []).extend(names)
                else:
                    found[_QUALIFIED[name]] = True
            # §5.2.3: "A cache MUST ignore unrecognized cache directives."
    for name, names in qualified.items():
        field = _QUALIFIED[name]
        if not found.get(field):  # the unqualified form is stricter and wins
            found[f"{field}_fields"] = tuple(dict.fromkeys(names))
    return CacheControl(**found) if found else _EMPTY


def request_cache_control(headers: RawHeaders) -> CacheControl:
    """The request directives of ``headers``, counting ``Pragma: no-cache`` as ``no-cache``.

    RFC 9111 §5.4 deprecates ``Pragma``; like RFC 7234 §5.4, it is honoured only when the
    request has no ``Cache-Control`` field (HTTP/1.0 clients send ``Pragma`` alone).

    >>> request_cache_control([(b"pragma", b"no-cache")]).no_cache
    True
    >>> request_cache_control([(b"cache-control", b'no-cache="x"')]).no_cache
    True
    """
    values = header_values(headers, b"cache-control")
    if values:
        parsed = parse_cache_control(*values)
        if parsed.no_cache_fields and not parsed.no_cache:
            # §5.2.1.4: a request's no-cache takes no argument. One given one anyway is
            # still a no-cache (the restrictive reading), not a response's field list.
            parsed = msgspec.structs.replace(parsed, no_cache=True, no_cache_fields=())
        return parsed
    if any(member.lower() == b"no-cache" for member in header_members(headers, b"pragma")):
        return _NO_CACHE
    return _EMPTY


# -- targeted fields (RFC 9213: CDN-Cache-Control) -------------------------------------------
# A targeted field is a Structured Field Dictionary (RFC 8941 §3.2): strict where
# Cache-Control is tolerant, since a field that does not parse is ignored as a whole and the
# response's Cache-Control and Expires apply instead (RFC 9213 §2.1).
_SF_KEY: Final = re.compile(rb"[a-z*][a-z0-9_.*-]*")
_SF_ITEM: Final = re.compile(
    rb'(?P<int>-?[0-9]{1,15})(?![0-9.])|-?[0-9]{1,12}\.[0-9]{1,3}|"(?P<str>(?:[^"\\]|\\["\\])*)"'
    rb"|[A-Za-z*][!#$%&'*+.^_`|~:/0-9A-Za-z-]*|:[A-Za-z0-9+/=]*:|\?[01]"
)
_OWS: Final = re.compile(rb"[ \t]*")


def _sf_item(data: bytes, at: int) -> tuple[Any, int] | None:
    """A bare item at ``at``: an int, a str (sf-string) or ``...`` (any other type)."""
    match = _SF_ITEM.match(data, at)
    if match is None:
        return None
    if match.group("int") is not None:
        return int(match.group("int")), match.end()
    text = match.group("str")
    if text is not None:
        return text.replace(b"\\\\", b"\\").replace(b'\\"', b'"').decode("ascii"), match.end()
    return ..., match.end()


def _sf_dictionary(data: bytes) -> dict[str, Any] | None:
    """Parse an RFC 8941 Dictionary (parameters read and dropped); ``None`` if invalid."""
    members: dict[str, Any] = {}
    at = _OWS.match(data).end()  # type: ignore[union-attr]
    if at == len(data):
        return None  # empty: not a value (RFC 9213 §2.1 wants a non-empty one)
    while True:
        key = _SF_KEY.match(data, at)
        if key is None:
            return None
        at = key.end()
        value: Any = True
        if data[at : at + 1] == b"=":
            item = _sf_item(data, at + 1)
            if item is None:
                return None
            value, at = item
        while data[at : at + 1] == b";":  # parameters: ;key[=item]
            at = _OWS.match(data, at + 1).end()  # type: ignore[union-attr]
            param = _SF_KEY.match(data, at)
            if param is None:
                return None
            at = param.end()
            if data[at : at + 1] == b"=":
                item = _sf_item(data, at + 1)
                if item is None:
                    return None
                at = item[1]
        members[key.group().decode("ascii")] = value
        at = _OWS.match(data, at).end()  # type: ignore[union-attr]
        if at == len(data):
            return members
        if data[at : at + 1] != b",":
            return None
        at = _OWS.match(data, at + 1).end()  # type: ignore[union-attr]
        if at == len(data):
            return None  # a trailing comma


@functools.lru_cache(maxsize=256)
def _targeted(values: tuple[bytes, ...]) -> CacheControl | None:
    members = _sf_dictionary(b", ".join(value.strip() for value in values))
    if members is None:
        return None
    found: dict[str, Any] = {}
    for name, value in members.items():
        # A directive whose value has the wrong type is ignored, not the field.
        if name in _DELTA:
            if type(value) is int and value >= 0:
                found[_DELTA[name][0]] = min(value, 2**31)
        elif name in _FLAGS:
            if value is True:
                found[_FLAGS[name]] = True
        elif name in _QUALIFIED:
            if value is True:
                found[_QUALIFIED[name]] = True
            elif type(value) is str and (names := _field_names(value)):
                found[f"{_QUALIFIED[name]}_fields"] = tuple(dict.fromkeys(names))
    return CacheControl(**found)


def response_cache_control(
    headers: RawHeaders, targeted: tuple[bytes, ...] = ()
) -> tuple[CacheControl, bool]:
    """The response directives a cache applies, and whether a targeted field gave them.

    ``targeted`` lists lowercase field names in order of preference (a CDN's list is
    ``(b"cdn-cache-control",)``, RFC 9213 §2.1): the first one with a valid, non-empty
    value replaces ``Cache-Control``, and then ``Expires`` is ignored too (the caller's
    part). Otherwise, ``Cache-Control``.

    >>> headers = [(b"cache-control", b"no-store"), (b"cdn-cache-control", b"max-age=60")]
    >>> directives, targeted = response_cache_control(headers, (b"cdn-cache-control",))
    >>> directives.max_age, directives.no_store, targeted
    (60, False, True)
    >>> response_cache_control(headers, ())[0].no_store
    True
    """
    for name in targeted:
        values = header_values(headers, name)
        if values and (directives := _targeted(tuple(values))) is not None:
            return directives, True
    return CacheControl.from_headers(headers), False
