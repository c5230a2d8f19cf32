"""Where the aiohttp session keeps responses in a :class:`~shardcache.CacheBackend`.

The layout is the one ``shardcache._http`` describes for every driver, plus redirect
aliases. At a primary key ``P`` (``primary_key_url``) the cache holds one of:

* a :class:`StoredResponse` -- the response had no ``Vary``;
* a ``list[str]`` of ``Vary`` names -- each variant lives at
  ``variant_key(P, vary_values(names, request))``, tagged ``P``;
* a ``str`` -- a redirect alias: the primary key of the final response that following
  the redirects from ``P`` led to. It is followed once, and only by requests that follow
  redirects (``allow_redirects=True``); an alias whose target is gone is a miss.

Invalidation of ``P`` is ``delete(P)`` plus ``evict(P)``. Every function raises the
backend's :class:`~shardcache.CacheError`; the session decides to fail open.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, NamedTuple

from ._http import RawHeaders, StoredResponse, variant_key, vary_names, vary_values
from ._types import CacheBackend

__all__ = ["Found", "invalidate", "lookup", "store"]

_ANY_ENTRY: Final = StoredResponse | list[str] | str
_TARGET_ENTRY: Final = StoredResponse | list[str]
_ALIAS_PREFIX: Final = "GET "


class Found(NamedTuple):
    """A stored response, the primary key it lives under, and whether an alias led there."""

    stored: StoredResponse
    primary: str
    via_alias: bool


async def lookup(
    cache: CacheBackend, primary: str, request_headers: RawHeaders, *, follow_alias: bool
) -> Found | None:
    """The stored response for a request, or ``None``. At most three reads."""
    value = await cache.get(primary, None, type=_ANY_ENTRY)
    where, via_alias = primary, False
    if isinstance(value, str):
        if not follow_alias or not value.startswith(_ALIAS_PREFIX):
            return None
        where, via_alias = value, True
        value = await cache.get(where, None, type=_TARGET_ENTRY)
    if isinstance(value, list):
        key = variant_key(where, vary_values(value, request_headers))
        value = await cache.get(key, None, type=StoredResponse)
    if not isinstance(value, StoredResponse):
        return None
    return Found(value, where, via_alias)


async def store(
    cache: CacheBackend,
    primary: str,
    stored: StoredResponse,
    *,
    ttl: float | None,
    aliases: Iterable[str] = (),
) -> None:
    """Store ``stored`` at ``primary`` (with its ``Vary`` layout) and point ``aliases`` at it.

    ``ttl`` is how long the cache keeps the entry (``storage_ttl``), not its freshness.
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
            await cache.set(alias, primary, ttl=ttl)


async def invalidate(cache: CacheBackend, primaries: Iterable[str]) -> None:
    """Drop what is stored at each primary key: the entry or alias, and its variants."""
    for primary in primaries:
        await cache.delete(primary)
        await cache.evict(primary)
