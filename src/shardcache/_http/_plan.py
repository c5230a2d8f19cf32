"""A stored response's reuse decision, worked out once for a driver's hot path.

:func:`decide_request`, :func:`decide_reuse` and :func:`not_modified` re-read a stored
response's header fields on every call. A shared cache answers the same stored response
thousands of times a second, almost always to requests that carry none of the fields
those rules read. A :class:`ReusePlan` holds what the rules need from the stored response
(its freshness lifetime and initial age, RFC 9111 §4.2.1 and §4.2.3) and the request
fields that could change the answer. :meth:`ReusePlan.fresh_for` then settles a request
by looking at its field names and the clock. It returns ``True`` only when the full
rules would say: look it up (``decide_request``), serve it as it is (``decide_reuse``
gives ``FRESH``) and not as a ``304`` (``not_modified`` is false). ``False`` means "ask
the full rules", never "do not serve".

A plan depends only on the stored response's status, header fields, exchange times and
``vary`` record, and on the policy; a driver may keep one per entry and reuse it while
those are unchanged.

>>> from ._records import CachePolicy, StoredResponse
>>> stored = StoredResponse(status=200, body=b"", request_time=100.0, response_time=100.0,
...     headers=[(b"cache-control", b"max-age=60")])
>>> plan = reuse_plan(stored, CachePolicy())
>>> plan.fresh_for("GET", [(b"host", b"a")], now=159.0), plan.age_header(now=130.5)
(True, b'30')
>>> plan.fresh_for("GET", [(b"cache-control", b"no-cache")], now=110.0)  # ask the rules
False
"""

from __future__ import annotations

from typing import Final

import msgspec

from ._cache_control import response_cache_control
from ._freshness import current_age, freshness_lifetime
from ._headers import DELTA_SECONDS_MAX, RawHeaders
from ._keys import vary_names
from ._policy import LOOKUP_METHODS, cookie_shareable
from ._records import CachePolicy, StoredResponse

__all__ = ["REQUEST_RULE_FIELDS", "ReusePlan", "plain_request", "reuse_plan"]

#: Request fields read by decide_request, decide_reuse or not_modified (besides Cookie,
#: with ``cookie_credentials``, and the fields a stored response's ``Vary`` names).
REQUEST_RULE_FIELDS: Final = frozenset(
    {
        b"cache-control",  # §5.2.1
        b"pragma",  # §5.4
        b"authorization",  # §3.5
        b"range",  # §3.3
        b"if-match",  # §4.3.2: the origin's to evaluate
        b"if-unmodified-since",
        b"if-range",
        b"if-none-match",  # §4.3.2: answered with a 304
        b"if-modified-since",
    }
)
_WITH_COOKIE: Final = REQUEST_RULE_FIELDS | {b"cookie"}
_NEVER: Final = -1.0  # a fresh_until no clock reaches: always ask the rules


class ReusePlan(msgspec.Struct, frozen=True):
    """What answering requests from one stored response needs; see the module docstring."""

    response_time: float
    initial_age: float  # RFC 9111 §4.2.3 corrected_initial_age
    lifetime: float | None  # RFC 9111 §4.2.1; None: never stale
    fields: frozenset[bytes]  # request fields that send the request to the full rules

    def current_age(self, now: float) -> float:
        """RFC 9111 §4.2.3: the corrected initial age plus the resident time."""
        return self.initial_age + max(0.0, now - self.response_time)

    def age_header(self, now: float) -> bytes:
        """The ``Age`` value at ``now`` (RFC 9111 §5.1), as :func:`age_header_value`."""
        return str(min(int(self.current_age(now)), DELTA_SECONDS_MAX)).encode("ascii")

    def fresh_for(self, method: str, request_headers: RawHeaders, *, now: float) -> bool:
        """True when the request may be answered with the stored response as it is, now.

        Reads only the request's field names (lowercase, as ASGI servers give them; other
        names are lowercased) and the clock. False: apply the full rules.
        """
        lifetime = self.lifetime
        if lifetime is not None and not lifetime > self.current_age(now):  # §4.2
            return False
        if method not in LOOKUP_METHODS:
            return False
        fields = self.fields
        for name, _ in request_headers:
            if name in fields or (not name.islower() and name.lower() in fields):
                return False
        return True


def plain_request(request_headers: RawHeaders) -> bool:
    """True when the request carries none of :data:`REQUEST_RULE_FIELDS`.

    :func:`decide_request` then decides from the method alone: look it up (GET, HEAD),
    store the response (GET), not ``only-if-cached``.

    >>> plain_request([(b"host", b"a"), (b"accept", b"*/*")])
    True
    >>> plain_request([(b"host", b"a"), (b"Range", b"bytes=0-1")])
    False
    """
    fields = REQUEST_RULE_FIELDS
    for name, _ in request_headers:
        if name in fields or (not name.islower() and name.lower() in fields):
            return False
    return True


def reuse_plan(stored: StoredResponse, policy: CachePolicy) -> ReusePlan:
    """The :class:`ReusePlan` of ``stored`` under ``policy``.

    A response that varies (§4.1) or has ``no-cache`` (§5.2.2.4) gets a plan that always
    defers to the full rules, as does one with no freshness to speak of.
    """
    lifetime = freshness_lifetime(stored, policy)
    initial_age = current_age(stored, now=stored.response_time)
    directives = (
        response_cache_control(stored.headers, policy.targeted)[0] if policy.cache_control else None
    )
    if vary_names(stored.headers) or (directives is not None and directives.no_cache):
        lifetime = _NEVER
    fields = REQUEST_RULE_FIELDS
    if policy.shared and policy.cookie_credentials and not cookie_shareable(stored, policy):
        fields = _WITH_COOKIE
    return ReusePlan(stored.response_time, initial_age, lifetime, fields)
