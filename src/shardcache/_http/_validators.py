"""Validators: entity tags, conditional requests and ``304 Not Modified``, both ways.

Towards the client (the ASGI middleware answers conditional requests itself): a strong
``ETag`` for a body, ``If-None-Match`` / ``If-Modified-Since`` evaluation (RFC 9110 §13.1.1
to §13.2.2, RFC 9111 §4.3.2) and the header fields of a ``304`` (RFC 9110 §15.4.5).

Towards the origin (the aiohttp session revalidates stale entries): the precondition fields
for a stored response (RFC 9111 §4.3.1) and freshening it with a ``304`` (RFC 9111 §4.3.4).

>>> tag = strong_etag(b"hello")
>>> etag_in(b'W/"nope", ' + tag, tag)
True
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

from ._freshness import age_header_value, date_value
from ._headers import (
    HeaderList,
    RawHeaders,
    first_header,
    format_http_date,
    has_header,
    header_members,
    header_values,
    parse_http_date,
    split_members,
    without_headers,
)
from ._records import CachePolicy, StoredResponse

__all__ = [
    "conditional_headers",
    "etag_in",
    "freshen",
    "not_modified",
    "not_modified_headers",
    "origin_not_modified",
    "parse_entity_tag",
    "strong_etag",
    "unconditional_headers",
    "with_etag",
]

# RFC 9110 §15.4.5: the fields a 304 carries when a 200 would have carried them.
_NOT_MODIFIED_FIELDS: Final = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)
# RFC 9111 §3.2 / §4.3.4: fields a 304 never overwrites in a stored response. Hop-by-hop
# fields (§3.1) and Content-Length are listed by §3.2; the content fields describe the
# stored body, which the 304 does not replace (§3.2 lets a cache keep them "to assure
# integrity of the stored response"; servers do send a stray Content-Type on 304s).
_NOT_UPDATED_FIELDS: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"content-encoding",
        b"content-range",
        b"content-type",
    }
)


def strong_etag(body: bytes) -> bytes:
    """A strong entity tag for ``body``: a quoted 128-bit BLAKE2b hex digest (RFC 9110 §8.8.3).

    The same bytes always give the same tag, in every process.

    >>> strong_etag(b"")
    b'"cae66941d9efbd404e4d88758ea67670"'
    """
    return b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode("ascii") + b'"'


def with_etag(headers: RawHeaders, body: bytes) -> HeaderList:
    """``headers`` plus a strong ``ETag`` for ``body`` when they have none (the middleware)."""
    if has_header(headers, b"etag"):
        return list(headers)
    return [*headers, (b"etag", strong_etag(body))]


def parse_entity_tag(value: bytes) -> tuple[bool, bytes] | None:
    """``(weak, opaque-tag)`` for an entity tag (RFC 9110 §8.8.3), ``None`` for ``*``/empty.

    Tolerant: ``w/`` is read as ``W/``, and an unquoted tag as if it were quoted.

    >>> parse_entity_tag(b'W/"abc"'), parse_entity_tag(b"abc")
    ((True, b'"abc"'), (False, b'"abc"'))
    """
    value = value.strip()
    weak = value[:2] in (b"W/", b"w/")
    if weak:
        value = value[2:].strip()
    if not value or value == b"*":
        return None
    if not (len(value) >= 2 and value.startswith(b'"') and value.endswith(b'"')):
        value = b'"' + value.strip(b'"') + b'"'
    return weak, value


def etag_in(field_value: bytes, etag: bytes, *, weak: bool = True) -> bool:
    """True when the entity-tag list ``field_value`` names ``etag``.

    Weak comparison by default (RFC 9110 §8.8.3.2: the opaque tags are equal, ``W/``
    ignored), as ``If-None-Match`` requires (§13.1.2). ``weak=False`` is the strong
    comparison: both tags strong and equal. ``*`` matches any tag.
    """
    stored = parse_entity_tag(etag)
    if stored is None:
        return False
    for member in split_members(field_value):
        if member == b"*":
            return True
        tag = parse_entity_tag(member)
        if tag is None or tag[1] != stored[1]:
            continue
        if weak or not (tag[0] or stored[0]):
            return True
    return False


def not_modified(request_headers: RawHeaders, stored: StoredResponse) -> bool:
    """True when a GET/HEAD request's preconditions let the cache answer ``304``.

    Call it only with a stored response that the cache would otherwise serve.

    * Preconditions are ignored unless the stored status is 2xx (RFC 9110 §13.2.1).
    * ``If-None-Match`` (§13.1.2): weak comparison against the stored ``ETag``, ``*``
      matching any stored representation; a list is matched member by member.
    * ``If-Modified-Since`` (§13.1.3) only when there is no ``If-None-Match``, only when it
      is one valid date; compared with ``Last-Modified``, else the stored ``Date``, else
      the time the response was received (RFC 9111 §4.3.2).
    """
    verdict = _preconditions(request_headers, stored.status, stored.headers)
    if isinstance(verdict, bool):
        return verdict
    # RFC 9111 §4.3.2: without a Last-Modified, a cache compares with the stored Date,
    # else the time the response was received.
    return date_value(stored) <= verdict


def origin_not_modified(request_headers: RawHeaders, status: int, headers: RawHeaders) -> bool:
    """True when an origin would have answered a GET/HEAD request's preconditions with
    ``304``, judged from the complete response it sent instead.

    For a response the cache does not store, after it took the client's preconditions
    off to ask for a complete one: the client still gets the ``304`` it would have had
    with no cache in between. The rules of :func:`not_modified`, except that an
    ``If-Modified-Since`` needs the response's own ``Last-Modified`` (an origin with no
    modification date ignores the field, §13.1.3).
    """
    return _preconditions(request_headers, status, headers) is True


def _preconditions(request_headers: RawHeaders, status: int, headers: RawHeaders) -> bool | float:
    """Whether the preconditions say "not modified" for a response with these fields; the
    ``If-Modified-Since`` time instead when deciding needs a ``Last-Modified`` they lack."""
    if not 200 <= status < 300:
        return False
    inm = header_values(request_headers, b"if-none-match")
    if inm:
        members = [member for value in inm for member in split_members(value)]
        if b"*" in members:
            return True
        etag = first_header(headers, b"etag")
        return etag is not None and etag_in(b", ".join(members), etag)
    ims = header_members(request_headers, b"if-modified-since")
    # §13.1.3: ignore a field with more than one member or an invalid date. An HTTP-date
    # contains a comma, so the members are re-joined before parsing.
    since = parse_http_date(b", ".join(ims)) if ims else None
    if since is None:
        return False
    raw = first_header(headers, b"last-modified")
    modified = None if raw is None else parse_http_date(raw)
    return since if modified is None else modified <= since


def not_modified_headers(stored: StoredResponse, *, now: float) -> HeaderList:
    """The header fields of a ``304`` answering from ``stored`` (RFC 9110 §15.4.5).

    ``Cache-Control``, ``Content-Location``, ``Date``, ``ETag``, ``Expires`` and ``Vary`` as
    stored, ``Last-Modified`` only when there is no ``ETag`` (§15.4.5 allows metadata that
    guides cache updates), and ``Age`` (RFC 9111 §5.1). No content fields: a 304 has none.
    """
    keep = set(_NOT_MODIFIED_FIELDS)
    if not has_header(stored.headers, b"etag"):
        keep.add(b"last-modified")
    headers = [(name, value) for name, value in stored.headers if name.lower() in keep]
    headers.append((b"age", age_header_value(stored, now=now)))
    return headers


def conditional_headers(stored: StoredResponse) -> HeaderList:
    """The precondition fields that validate ``stored`` with the origin (RFC 9111 §4.3.1).

    ``If-None-Match`` with the stored ``ETag`` and ``If-Modified-Since`` with the stored
    ``Last-Modified``; empty when the response has no validator, in which case a stale
    entry can only be replaced by an unconditional request. Do not add them to a request
    that already carries its own preconditions: a ``304`` would then answer the client's
    copy, not the cache's.

    >>> stored = StoredResponse(status=200, body=b"", request_time=0.0, response_time=0.0,
    ...     headers=[(b"ETag", b'"v1"')])
    >>> conditional_headers(stored)
    [(b'if-none-match', b'"v1"')]
    """
    headers: HeaderList = []
    etag = first_header(stored.headers, b"etag")
    if etag is not None and parse_entity_tag(etag) is not None:
        headers.append((b"if-none-match", etag.strip()))
    modified = first_header(stored.headers, b"last-modified")
    if modified is not None and parse_http_date(modified) is not None:
        headers.append((b"if-modified-since", modified.strip()))
    return headers


def _same_representation(stored: StoredResponse, headers: RawHeaders) -> bool:
    """Whether a 304 selects ``stored`` for update (RFC 9111 §4.3.4).

    A 304 with an ``ETag`` selects the stored response with the same tag (strong
    comparison when the 304's tag is strong, weak when it is weak); with only a
    ``Last-Modified``, the stored response with that date; with neither, the one stored
    response the request was made for. Only a clear contradiction refuses the update.
    """
    new_etag = first_header(headers, b"etag")
    if new_etag is not None and (parsed := parse_entity_tag(new_etag)) is not None:
        old_etag = first_header(stored.headers, b"etag")
        return old_etag is not None and etag_in(old_etag, new_etag, weak=parsed[0])
    new_modified = first_header(headers, b"last-modified")
    old_modified = first_header(stored.headers, b"last-modified")
    if new_modified is not None and old_modified is not None:
        return parse_http_date(new_modified) == parse_http_date(old_modified)
    return True


def freshen(
    stored: StoredResponse,
    not_modified_response_headers: RawHeaders,
    *,
    request_time: float,
    response_time: float,
    policy: CachePolicy,
) -> StoredResponse | None:
    """``stored`` updated by a ``304`` from the origin, keeping its body (RFC 9111 §4.3.4).

    Each field of the 304 replaces the stored lines of that name (§3.2), except hop-by-hop
    and content fields (see ``_NOT_UPDATED_FIELDS``) and, unless the policy allows it,
    ``Set-Cookie``. The exchange times become the revalidation's, so the age restarts from
    the 304 (§4.2.3). Returns ``None`` when the 304 describes another representation
    (its validator contradicts the stored one): fetch again without preconditions.
    Before storing the result, check it with :func:`decide_store`: the 304 may have
    brought ``no-store``.
    """
    if not _same_representation(stored, not_modified_response_headers):
        return None
    skip = set(_NOT_UPDATED_FIELDS)
    if not policy.allow_set_cookie:
        skip.add(b"set-cookie")
    updates: dict[bytes, HeaderList] = {}
    for name, value in without_headers(not_modified_response_headers, skip):
        updates.setdefault(name.lower(), []).append((name, value))
    # The stored Date and Age describe the first exchange; kept with the new exchange times
    # they would age the entry twice. RFC 9110 §6.6.1 lets a recipient use the receipt
    # time for a missing Date; a missing Age means the 304 came straight from the origin.
    updates.setdefault(b"date", [(b"date", format_http_date(response_time))])
    updates.setdefault(b"age", [])
    replaced = set(updates)
    headers: HeaderList = []
    for name, value in stored.headers:
        lowered = name.lower()
        if lowered not in replaced:
            headers.append((name, value))
        elif lowered in updates:  # the new lines take the place of the first old one
            headers.extend(updates.pop(lowered))
    for lines in updates.values():
        headers.extend(lines)
    return msgspec.structs.replace(
        stored,
        headers=headers,
        request_time=request_time,
        response_time=response_time,
    )


# The preconditions a cache evaluates itself against a stored response (RFC 9111 §4.3.2).
_CACHE_PRECONDITIONS: Final = frozenset({b"if-none-match", b"if-modified-since"})


def unconditional_headers(request_headers: RawHeaders) -> HeaderList:
    """The request fields to send to the origin when the response is wanted for storing.

    Drops ``If-None-Match`` and ``If-Modified-Since``: the client's validators describe
    the client's copy, and the origin would answer them with a ``304`` that cannot be
    stored. With a complete response in hand the cache evaluates the preconditions
    itself (:func:`not_modified`, RFC 9111 §4.3.2). Other fields keep their order.

    >>> unconditional_headers([(b"accept", b"*/*"), (b"If-None-Match", b'"v1"')])
    [(b'accept', b'*/*')]
    """
    return without_headers(request_headers, _CACHE_PRECONDITIONS)
