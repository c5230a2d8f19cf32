"""The plain values the HTTP policy reads and returns: a stored response, the options, and
the decisions handed to the drivers.

They are msgspec Structs so that the cache can store :class:`StoredResponse` with its own
serializer and read it back with ``cache.get(key, type=StoredResponse)``.
"""

from __future__ import annotations

import enum
from typing import Final

import msgspec

from .._errors import ConfigurationError

__all__ = [
    "HEURISTICALLY_CACHEABLE_STATUSES",
    "CachePolicy",
    "RequestDecision",
    "Reuse",
    "ReuseDecision",
    "StoreDecision",
    "StoredResponse",
]

#: RFC 9110 §15.1: the status codes "heuristically cacheable" (storable without explicit
#: freshness information), minus 206. A 206 carries part of a representation; this cache
#: stores only complete responses (RFC 9111 §3.3 and §3.4 allow, but do not require,
#: storing and combining partial content), so 206 is never stored and is refused in
#: ``cacheable_statuses``.
HEURISTICALLY_CACHEABLE_STATUSES: Final = frozenset(
    {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501}
)


class StoredResponse(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A response as the cache keeps it, with what the freshness rules need.

    ``headers`` are the storable fields (hop-by-hop fields and ``no-cache``/``private``
    listed fields removed, RFC 9111 §3.1) as raw byte pairs; ``request_time`` and
    ``response_time`` are the Unix times the request was sent and the response received
    (RFC 9111 §4.2.3); ``vary`` maps each request header named by the response's ``Vary``
    (lowercase) to the request's normalized value, ``None`` when the request lacked it
    (RFC 9111 §4.1); ``reason`` an unusual reason phrase. Build one with
    :func:`build_stored_response`.

    >>> r = StoredResponse(status=200, headers=[], body=b"hi", request_time=0.0, response_time=0.5)
    >>> r.vary, r.reason
    ({}, None)
    """

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    request_time: float
    response_time: float
    vary: dict[str, str | None] = msgspec.field(default_factory=dict)
    #: The origin's reason phrase when it is not the status's usual one ("Totally Fine"),
    #: for clients that show it; ``None``: the usual phrase.
    reason: str | None = None


class CachePolicy(msgspec.Struct, frozen=True, kw_only=True):
    """How a driver's cache applies RFC 9111: one value, built once, passed to each call.

    * ``shared`` -- a shared cache (the ASGI middleware) honours ``s-maxage``,
      ``proxy-revalidate``, ``private`` and the ``Authorization`` rule (§3.5); a private
      cache (the aiohttp session) does not.
    * ``default_ttl`` -- the freshness lifetime, in seconds, of a response that gives none
      (no ``s-maxage``/``max-age``/``Expires``); ``None`` means it never goes stale. No
      other heuristic freshness (§4.2.2) is applied.
    * ``cache_control`` -- ``False`` ignores ``Cache-Control``, ``Pragma`` and ``Expires``
      (request and response): every storable response is fresh for ``default_ttl``.
      ``Vary``, ``Set-Cookie`` and the §3.5 ``Authorization`` rule still apply.
    * ``cacheable_statuses`` -- the statuses that may be stored (206 and 304 are refused).
    * ``cache_private`` -- a shared cache stores ``Cache-Control: private`` responses too.
    * ``allow_set_cookie`` -- store responses that carry ``Set-Cookie`` (with it).
    * ``cookie_credentials`` -- a shared cache treats a request's ``Cookie`` as a credential,
      as §3.5 treats ``Authorization``: its response is stored, and a stored response
      answers it, only when the response is explicitly cacheable (``public``,
      ``s-maxage``, ``max-age``, ``must-revalidate`` or ``Expires``) or varies on
      ``Cookie``; ``default_ttl`` never makes such a response cacheable. A page built from
      a session cookie without ``Cache-Control: private`` is then never shared.
    * ``stale_if_error`` -- seconds past staleness during which an entry may be served when
      the origin fails, on top of the response's own ``stale-if-error``; ``math.inf`` for
      "any age". Directives that forbid stale responses (``must-revalidate``, ...) win.
    * ``targeted`` -- lowercase names of targeted cache-control fields (RFC 9213), in order
      of preference, e.g. ``(b"cdn-cache-control",)``: the first one a response carries
      with a valid value replaces its ``Cache-Control`` and ``Expires`` for this cache.

    >>> CachePolicy(shared=False, default_ttl=3600).shared
    False
    """

    shared: bool = True
    default_ttl: float | None = 0.0
    cache_control: bool = True
    cacheable_statuses: frozenset[int] = HEURISTICALLY_CACHEABLE_STATUSES
    cache_private: bool = False
    allow_set_cookie: bool = False
    stale_if_error: float = 0.0
    cookie_credentials: bool = False
    targeted: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.default_ttl is not None and not self.default_ttl >= 0:  # catches NaN too
            raise ConfigurationError(
                f"default_ttl must be None or a number of seconds >= 0, got {self.default_ttl!r}"
            )
        if not self.stale_if_error >= 0:
            raise ConfigurationError(
                "stale_if_error must be a number of seconds >= 0 (math.inf for any age), "
                f"got {self.stale_if_error!r}"
            )
        if 206 in self.cacheable_statuses:
            raise ConfigurationError(
                "cacheable_statuses may not contain 206: partial content is never stored"
            )
        if 304 in self.cacheable_statuses:
            raise ConfigurationError(
                "cacheable_statuses may not contain 304: a 304 freshens a stored response "
                "(RFC 9111 §4.3.4), it is never stored as one"
            )
        bad = sorted(code for code in self.cacheable_statuses if not 200 <= code <= 599)
        if bad:
            raise ConfigurationError(
                f"cacheable_statuses must be final status codes (200-599), got {bad}"
            )


class RequestDecision(msgspec.Struct, frozen=True):
    """What the cache may do with a request, before any lookup.

    ``lookup`` -- a stored response may answer it; ``store`` -- its response may be
    stored (still subject to :func:`decide_store`); ``only_if_cached`` -- the client asked
    for a stored response or nothing: answer ``504`` instead of contacting the origin
    (RFC 9111 §5.2.1.7). ``reason`` says why, for logs and tests.
    """

    lookup: bool
    store: bool
    reason: str
    only_if_cached: bool = False


class StoreDecision(msgspec.Struct, frozen=True):
    """Whether a response may be stored, and why (RFC 9111 §3)."""

    store: bool
    reason: str


class Reuse(enum.Enum):
    """How a stored response may answer a request (RFC 9111 §4).

    * ``FRESH`` -- serve it as it is.
    * ``STALE_OK`` -- serve it now although it is stale (``stale-while-revalidate``, the
      client's ``max-stale``, or ``stale-if-error`` after an origin failure); when the
      origin did not fail, refresh it in the background.
    * ``REVALIDATE`` -- it may not be served before the origin is asked: send the request,
      conditional when :func:`conditional_headers` gives validators, then apply
      :func:`freshen` to a ``304``. If the origin fails, ask again with ``error=True``.
    * ``NO`` -- it cannot answer this request at all (method, ``Vary`` mismatch,
      ``Authorization``): treat the request as a miss.
    """

    FRESH = "fresh"
    STALE_OK = "stale-ok"
    REVALIDATE = "revalidate"
    NO = "no"


class ReuseDecision(msgspec.Struct, frozen=True):
    """The :class:`Reuse` verdict for one stored response and one request, and why."""

    reuse: Reuse
    reason: str
