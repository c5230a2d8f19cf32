"""Invalidation after unsafe requests (RFC 9111 §4.4).

A ``POST``, ``PUT``, ``PATCH``, ``DELETE`` (any method not known to be safe) that succeeds
may have changed the resource, so the stored responses for its URL are dropped, and those
for the ``Location`` and ``Content-Location`` it names when they are on the same origin
(a different origin could otherwise be used to evict another site's entries).

>>> invalidation_keys("POST", 201, "https://example.com/items",
...     [(b"location", b"/items/7")], sort_query=True)
['GET https://example.com/items', 'GET https://example.com/items/7']
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urljoin, urlsplit

from ._headers import RawHeaders, first_header
from ._keys import normalize_url, primary_key_url

__all__ = ["SAFE_METHODS", "invalidation_keys"]

#: RFC 9110 §9.2.1: the safe methods; every other method, known or not, invalidates.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def _origin(url: str) -> tuple[str, str]:
    # RFC 6454 §4: scheme, host and port; user information is not part of an origin.
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.rpartition("@")[2]


def invalidation_keys(
    method: str,
    status: int,
    target_url: str,
    response_headers: RawHeaders,
    *,
    sort_query: bool,
) -> list[str]:
    """The primary keys to delete after a response to an unsafe request (RFC 9111 §4.4).

    Empty for a safe method or an error status (§4.4 applies to "a non-error status code",
    here 2xx and 3xx). Otherwise the target URI's key, then the ``Location`` and
    ``Content-Location`` keys when they resolve (relative references against the target,
    RFC 3986 §5) to the same origin; unparseable values are skipped. Use the same
    ``sort_query`` as the driver's keys. ``target_url`` is absolute; an ASGI driver builds
    it with :func:`asgi_url`. Delete each key and, when the driver stores ``Vary``
    variants under their own keys, the variants too (tag them with the primary key).
    """
    if method in SAFE_METHODS or not 200 <= status < 400:
        return []
    base = normalize_url(target_url, sort_query=sort_query)
    keys = [primary_key_url("GET", base, sort_query=sort_query)]
    for name in (b"location", b"content-location"):
        raw = first_header(response_headers, name)
        if raw is None:
            continue
        try:
            url = normalize_url(urljoin(base, raw.decode("latin-1").strip()), sort_query=sort_query)
        except ValueError:  # not a URL we could have stored anything under
            continue
        # §4.4: only when the URI's origin is the same as the target's.
        if _origin(url) == _origin(base):
            keys.append(primary_key_url("GET", url, sort_query=sort_query))
    return list(dict.fromkeys(keys))
