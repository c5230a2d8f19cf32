"""HTTP caching rules (RFC 9111) as plain functions: no I/O, no event loop, no framework.

The ASGI middleware (a shared cache in front of an application) and the aiohttp session (a
private cache for a scraper) are short I/O loops around these functions. Headers are raw
``(name, value)`` byte pairs end to end; times are Unix timestamps passed in as ``now``.

Modules, one concept each::

    _headers.py        field lookup, list members, delta-seconds, HTTP dates (RFC 9110 §5)
    _cache_control.py  Cache-Control directives (RFC 9111 §5.2, RFC 5861)
    _records.py        StoredResponse, CachePolicy and the decision values
    _keys.py           primary keys from URLs, Vary secondary keys (§4, §4.1)
    _freshness.py      lifetime, age, stale windows (§4.2, §5.1, §5.3)
    _validators.py     ETags, 304s, conditional requests, freshening (§4.3, RFC 9110 §13)
    _policy.py         request / store / reuse decisions (§3, §3.5, §4)
    _invalidation.py   keys to drop after unsafe requests (§4.4)

Exported names:

* values: :class:`StoredResponse`, :class:`CachePolicy`, :class:`CacheControl`,
  :class:`RequestDecision`, :class:`StoreDecision`, :class:`Reuse`,
  :class:`ReuseDecision`, ``HEURISTICALLY_CACHEABLE_STATUSES``, ``LOOKUP_METHODS``,
  ``SAFE_METHODS``, ``ORIGIN_ERROR_STATUSES``, ``RawHeaders``, ``HeaderList``
* decisions: :func:`decide_request`, :func:`decide_store`, :func:`decide_reuse`,
  :func:`build_stored_response`, :func:`storable_headers`, :func:`serve_headers`,
  :func:`invalidation_keys`, :func:`request_has_credentials`, :func:`cookie_shareable`,
  :func:`redirect_ttl`
* the hot path: :class:`ReusePlan`, :func:`reuse_plan`, :func:`plain_request`,
  ``REQUEST_RULE_FIELDS`` (a stored
  response's reuse worked out once: fresh for a request that carries none of the fields
  the rules read)
* keys: :func:`primary_key_asgi`, :func:`primary_key_url`, :func:`asgi_url`,
  :func:`normalize_url`, :func:`vary_names`, :func:`vary_values`, :func:`vary_matches`,
  :func:`variant_key`
* freshness: :func:`freshness_lifetime`, :func:`current_age`, :func:`is_fresh`,
  :func:`is_stale_usable`, :func:`storage_ttl`, :func:`age_header_value`
* validators: :func:`strong_etag`, :func:`with_etag`, :func:`etag_in`,
  :func:`not_modified`, :func:`origin_not_modified`, :func:`not_modified_headers`,
  :func:`conditional_headers`, :func:`freshen`, :func:`unconditional_headers`
* parsing: :func:`parse_cache_control`, :func:`request_cache_control`,
  :func:`parse_http_date`, :func:`format_http_date`, :func:`header_values`,
  :func:`first_header`

Storage layout the drivers share: at the primary key ``P`` the cache holds either the
:class:`StoredResponse` itself (the response had no ``Vary``) or the list of ``Vary`` names
(``list[str]``); each variant is stored at ``variant_key(P, vary_values(names, request))``
with ``tag=P``, so that invalidation is ``delete(P)`` plus ``evict(P)``. Reading is
``cache.get(P, type=StoredResponse | list[str])``, then, for a list, one more ``get``.

A request through the ASGI middleware (``policy = CachePolicy(shared=True,
default_ttl=ttl)``)::

    if method not in LOOKUP_METHODS:            # unsafe: pass through, then RFC 9111 §4.4
        response = await app(...)
        for key in invalidation_keys(method, status, asgi_url(...), headers, sort_query=False):
            await cache.delete(key); await cache.evict(key)
    request = decide_request(method, req_headers, policy)
    if request.lookup and (stored := <lookup as above>) is not None:
        verdict = decide_reuse(stored, method, req_headers, policy, now=now)
        if verdict.reuse in (Reuse.FRESH, Reuse.STALE_OK):   # STALE_OK: refresh in background
            if not_modified(req_headers, stored):
                send 304 with not_modified_headers(stored, now=now)
            else:
                send stored.status, serve_headers(stored, now=now) + X-Cache: HIT, stored.body
    send to the app (single-flight); t0/t1 = request and response times
    decision = decide_store(method, req_headers, status, headers, policy)
    if request.store and decision.store and len(body) <= max_body_size:
        stored = build_stored_response(request_headers=req_headers, status=status,
            headers=with_etag(headers, body), body=body, request_time=t0, response_time=t1,
            policy=policy)
        if (ttl := storage_ttl(stored, policy, now=t1, revalidate=False)) is None or ttl > 0:
            store it (layout above)

The aiohttp session (``CachePolicy(shared=False, default_ttl=ttl, cache_control=...,
stale_if_error=...)``, one policy per ``urls_ttl`` pattern) is the same loop with
``primary_key_url`` and, for ``Reuse.REVALIDATE``, a request with
``conditional_headers(stored)`` added: on ``304`` store ``freshen(...)`` (``None``: fetch
again unconditionally); on an origin failure or a 5xx, ``decide_reuse(..., error=True)``
says whether the stale entry may be served instead. It keeps entries with
``storage_ttl(..., revalidate=True)``.
"""

from __future__ import annotations

from ._cache_control import CacheControl, parse_cache_control, request_cache_control
from ._freshness import (
    ORIGIN_ERROR_STATUSES,
    age_header_value,
    current_age,
    freshness_lifetime,
    is_fresh,
    is_stale_usable,
    storage_ttl,
)
from ._headers import (
    HeaderList,
    RawHeaders,
    first_header,
    format_http_date,
    header_values,
    parse_http_date,
)
from ._invalidation import SAFE_METHODS, invalidation_keys
from ._keys import (
    asgi_url,
    normalize_url,
    primary_key_asgi,
    primary_key_url,
    variant_key,
    vary_matches,
    vary_names,
    vary_values,
)
from ._plan import REQUEST_RULE_FIELDS, ReusePlan, plain_request, reuse_plan
from ._policy import (
    LOOKUP_METHODS,
    build_stored_response,
    cookie_shareable,
    decide_request,
    decide_reuse,
    decide_store,
    redirect_ttl,
    request_has_credentials,
    serve_headers,
    storable_headers,
)
from ._records import (
    HEURISTICALLY_CACHEABLE_STATUSES,
    CachePolicy,
    RequestDecision,
    Reuse,
    ReuseDecision,
    StoreDecision,
    StoredResponse,
)
from ._validators import (
    conditional_headers,
    etag_in,
    freshen,
    not_modified,
    not_modified_headers,
    origin_not_modified,
    strong_etag,
    unconditional_headers,
    with_etag,
)

__all__ = [
    "HEURISTICALLY_CACHEABLE_STATUSES",
    "LOOKUP_METHODS",
    "ORIGIN_ERROR_STATUSES",
    "REQUEST_RULE_FIELDS",
    "SAFE_METHODS",
    "CacheControl",
    "CachePolicy",
    "HeaderList",
    "RawHeaders",
    "RequestDecision",
    "Reuse",
    "ReuseDecision",
    "ReusePlan",
    "StoreDecision",
    "StoredResponse",
    "age_header_value",
    "asgi_url",
    "build_stored_response",
    "conditional_headers",
    "cookie_shareable",
    "current_age",
    "decide_request",
    "decide_reuse",
    "decide_store",
    "etag_in",
    "first_header",
    "format_http_date",
    "freshen",
    "freshness_lifetime",
    "header_values",
    "invalidation_keys",
    "is_fresh",
    "is_stale_usable",
    "normalize_url",
    "not_modified",
    "not_modified_headers",
    "origin_not_modified",
    "parse_cache_control",
    "parse_http_date",
    "plain_request",
    "primary_key_asgi",
    "primary_key_url",
    "redirect_ttl",
    "request_cache_control",
    "request_has_credentials",
    "reuse_plan",
    "serve_headers",
    "storable_headers",
    "storage_ttl",
    "strong_etag",
    "unconditional_headers",
    "variant_key",
    "vary_matches",
    "vary_names",
    "vary_values",
    "with_etag",
]
