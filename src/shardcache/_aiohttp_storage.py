"""Where the aiohttp session keeps responses in a :class:`~shardcache.CacheBackend`.

The layout is the one ``shardcache._http`` describes for every driver, plus redirect
aliases. At a primary key ``P`` (``primary_key_url``) the cache holds one of:

* a :class:`StoredResponse` -- the response had no ``Vary``;
* a ``list[str]`` of ``Vary`` names -- each variant lives at
  ``variant_key(P, vary_values(names, request))``, tagged ``P``;
* a ``str`` -- a redirect alias: the primary key of the final response that following
  the redirects from ``P`` led to. It is followed once, and only by requests that follow
  redirects (``allow_redirects=True``); an alias whose target is gone is a miss.

``P`` is a GET key (``"GET <url>"``; ``primary_key_url`` gives HEAD the same key, since a
GET response answers a HEAD). HEAD responses, which have no body and so must never answer
a GET, live at their own key ``head_key(P)`` (``"HEAD <url>"``) with the same layout; their
aliases point at HEAD keys.

Invalidation of ``P`` is ``delete(P)`` plus ``evict(P)``, for ``P`` and ``head_key(P)``
(a HEAD key alone can be invalidated too). Every function raises the backend's
:class:`~shardcache.CacheError`; the session decides to fail open.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from ._http import RawHeaders, StoredResponse, variant_key, vary_names, vary_values
from ._types import CacheBackend

__all__ = ["Found", "head_key", "invalidate", "lookup", "redirects", "store"]

_ANY_ENTRY: Final = StoredResponse | list[str] | str
_TARGET_ENTRY: Final = StoredResponse | list[str]
_GET_PREFIX: Final = "GET "
_HEAD_PREFIX: Final = "HEAD "


def head_key(primary: str) -> str:
    """Where the HEAD responses of the resource at the GET key ``primary`` are stored.

    >>> head_key("GET http://example.com/")
    'HEAD http://example.com/'
    """
    if not primary.startswith(_GET_PREFIX):
        raise ValueError(f"not a GET primary key: {primary!r}")
    return _HEAD_PREFIX + primary[len(_GET_PREFIX) :]


class Found(NamedTuple):
    """A stored response, the primary key it lives under, and whether an alias led there."""

    stored: StoredResponse
    primary: str
    via_alias: bool


async def lookup(
    cache: CacheBackend,
    primary: str,
    request_headers: RawHeaders,
    *,
    follow_alias: bool,
    aliases: bool = True,
) -> Found | None:
    """The stored response for a request, or ``None``. At most three reads.

    ``follow_alias``: the request follows redirects (a stored redirect does not answer
    it); ``aliases=False`` leaves redirect aliases out all the same (a request with its
    own ``max_redirects``: the alias does not record how many hops it stands for)."""
    value = await cache.get(primary, None, type=_ANY_ENTRY)
    where, via_alias = primary, False
    if isinstance(value, str):
        # An alias leads to a key of its own method: a GET alias never reaches a HEAD entry.
        method = primary[: primary.index(" ") + 1]
        if not (follow_alias and aliases) or not value.startswith(method):
            return None
        where, via_alias = value, True
        value = await cache.get(where, None, type=_TARGET_ENTRY)
    if isinstance(value, list):
        key = variant_key(where, vary_values(value, request_headers))
        value = await cache.get(key, None, type=StoredResponse)
    if not isinstance(value, StoredResponse):
        return None
    if follow_alias and redirects(value):
        return None  # stored for a request that did not follow it; this one does
    return Found(value, where, via_alias)


_REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


def redirects(stored: StoredResponse) -> bool:
    """Whether aiohttp would follow this response (a redirect with a ``Location``)."""
    return stored.status in _REDIRECTS and any(
        name.lower() == b"location" for name, _ in stored.headers
    )


async def store(
    cache: CacheBackend,
    primary: str,
    stored: StoredResponse,
    *,
    ttl: float | None,
    aliases: Iterable[str] = (),
    alias_ttl: float | None = None,
) -> None:
    """Store ``stored`` at ``primary`` (with its ``Vary`` layout) and point ``aliases`` at it.

    ``ttl`` is how long the cache keeps the entry (``storage_ttl``), not its freshness;
    ``alias_ttl`` how long the aliases last (the redirects' own, ``redirect_ttl``).
    """
    names = vary_names(stored.headers)
    if names:
        # The names outlive any one variant: a variant that expires is simply a miss.
        await cache.set(primary, list(names), ttl=None)
        await cache.set(variant_key(primary, stored.vary), stored, ttl=ttl, tag=primary)
    else:
        await cache.set(primary, stored, ttl=ttl)
    for alias in aliases:
        if alias != primary:
            await cache.set(alias, primary, ttl=alias_ttl)


async def invalidate(cache: CacheBackend, primaries: Iterable[str]) -> None:
    """Drop what is stored at each key: the entry or alias, and its variants. A GET key
    takes its :func:`head_key` with it (a change to the resource voids both)."""
    for primary in primaries:
        keys = [primary]
        if primary.startswith(_GET_PREFIX):
            keys.append(head_key(primary))
        for key in keys:
            await cache.delete(key)
            await cache.evict(key)
