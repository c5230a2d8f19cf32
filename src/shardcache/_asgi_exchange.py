"""One trip to the application on behalf of :class:`~shardcache.asgi.CacheMiddleware`.

An :class:`Exchange` wraps the app's ``send``. When the response may be stored (the
request allows it and :func:`~shardcache._http.decide_store` accepts the status and
headers) it holds the response start and buffers the body; everything else streams
through untouched, with ``X-Cache: MISS`` added::

    http.response.start ──decide_store──▶ storable ──▶ BUFFER ──last chunk──▶ store, answer
                              │                          │ > max_body_size
                              └── not storable ─────────▶ PASS (forward as it comes)

A complete storable body becomes a :class:`~shardcache._http.StoredResponse` (with a
``Content-Length`` and, for a 2xx, a strong ``ETag`` when the app gave none). It is
written to the cache first, then the client gets it (a ``304`` when its
``If-None-Match`` matches): a client that got a MISS and asks another worker next gets a
HIT, and the stampede lease is released only once the entry can be read.

A stale entry with a validator (``ETag``, ``Last-Modified``) is revalidated: the app gets
the request with ``conditional_headers(stale)`` in place of the client's own preconditions,
and a ``304`` from it freshens the stored response (RFC 9111 §4.3.3-4.3.4) instead of
reaching the client: the client gets the stored body (or its own ``304``), and the app
skipped rendering it. A ``304`` that names another representation makes the middleware
ask again without preconditions (``refetch``).

When the response is not storable for a reason that lies in the response itself
(``no-store``, ``private``, ``Set-Cookie``, a status, a body too large...), the exchange
records it (``pass_reason``): the middleware then remembers the URL as "pass" for a
while (Varnish's hit-for-pass), so that later requests go straight to the app instead of
queueing behind a lease for a response nobody can share.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final

from ._http import (
    CachePolicy,
    StoredResponse,
    build_stored_response,
    conditional_headers,
    decide_store,
    first_header,
    freshen,
    not_modified,
    not_modified_headers,
    origin_not_modified,
    storage_ttl,
    unconditional_headers,
    with_etag,
)

if TYPE_CHECKING:
    from .asgi import CacheMiddleware

__all__ = ["LAYER", "PASS_PREFIX", "TOO_LARGE", "Exchange", "Message", "Receive", "Scope", "Send"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The scope key of a request a CacheMiddleware is already handling (value: its cache).
LAYER: Final = "shardcache.asgi"
START: Final = "http.response.start"
BODY: Final = "http.response.body"
#: Every hit-for-pass marker starts with this; the rest says why (``shardcache get`` shows it).
PASS_PREFIX: Final = "pass: "
#: The marker after a body larger than ``max_body_size``: later requests are not buffered.
TOO_LARGE: Final = PASS_PREFIX + "the body is larger than max_body_size"
# Statuses whose "not storable" comes from the request (Range, preconditions), not the URL.
_REQUEST_DETERMINED: Final = frozenset({206, 304})
# Statuses that carry no content, hence no Content-Length (RFC 9110 §8.6).
_NO_CONTENT: Final = frozenset({204, 304})
# Seconds a stale entry stays readable past its storage lifetime: not to serve it (the
# rules decide that), but so that a request arriving just after expiry still knows the
# URL's response is shareable and waits for the one refresh instead of stampeding.
KEEP_STALE: Final = 30.0

_WAIT, _BUFFER, _PASS, _REVALIDATED, _DROP = 0, 1, 2, 3, 4
# Content fields a 304 made from a complete response leaves out (RFC 9110 §15.4.5).
_CONTENT_FIELDS: Final = frozenset(
    {
        b"content-length",
        b"content-type",
        b"content-encoding",
        b"content-range",
        b"transfer-encoding",
    }
)


class Exchange:
    """Run the app for one request; buffer and store its response when it may be stored.

    After :meth:`run`, ``stored`` is the :class:`StoredResponse` that was stored (and may
    be handed to other requests waiting for the same key), or ``None``; ``pass_reason``
    says why the URL's response is not storable, when the response itself decided it.
    """

    __slots__ = (
        "chunks",
        "client_conditional",
        "headers",
        "incomplete",
        "key",
        "method",
        "middleware",
        "on_pass",
        "pass_reason",
        "policy",
        "refetch",
        "request_headers",
        "request_time",
        "response_time",
        "scope",
        "send_downstream",
        "size",
        "stale",
        "start",
        "state",
        "status",
        "store",
        "stored",
    )

    def __init__(
        self,
        middleware: CacheMiddleware,
        scope: Scope,
        send: Send,
        *,
        key: str,
        policy: CachePolicy,
        store: bool,
        stale: StoredResponse | None = None,
        on_pass: Callable[[str | None], None] | None = None,
    ) -> None:
        self.middleware = middleware
        # Told (with pass_reason) as soon as the response is known not to be stored,
        # before its body streams: the requests waiting for it need not wait for its end.
        self.on_pass = on_pass
        self.scope = scope
        self.send_downstream = send
        self.key = key
        self.policy = policy
        self.store = store
        self.method: str = scope["method"]
        self.request_headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.state = _WAIT
        self.stored: StoredResponse | None = None
        self.pass_reason: str | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.start: Message = {}
        self.request_time = 0.0
        self.response_time = 0.0
        # The stale entry this request validates with the app, when it has a validator.
        self.stale = stale if stale is not None and conditional_headers(stale) else None
        self.refetch = False  # the app's 304 named another representation: ask again
        self.incomplete = False  # the app returned mid-body (its client went away...)
        # The client's preconditions were taken off to ask the app for a complete
        # response: a response that is then not stored still answers them (_forward_start).
        self.client_conditional = False

    async def run(self, receive: Receive) -> None:
        """Call the app; on return the response has been sent (and stored, if it may be)."""
        # A second CacheMiddleware on the same cache further in (add_middleware inside,
        # a wrapper outside) sees this mark and stays out of the way: it would wait on
        # this request's own lease. The scope is this request's own: marked in place.
        scope = self.scope
        scope[LAYER] = self.middleware.cache
        if self.stale is not None:
            # The cache's validators replace the client's: the app's 304 then answers for
            # the stored copy, which the client gets in full or as its own 304. A copy of
            # the scope: a refetch after a contradicting 304 starts from the client's.
            scope = self.scope = {**scope}
            self.client_conditional = _has_validators(self.request_headers)
            scope["headers"] = [
                *unconditional_headers(self.request_headers),
                *conditional_headers(self.stale),
            ]
        elif self.store and _has_validators(self.request_headers):
            # The client's validators describe its own copy: ask for a complete response
            # and evaluate If-None-Match here (RFC 9111 §4.3.2). self.request_headers
            # keeps the client's fields for that.
            scope["headers"] = unconditional_headers(self.request_headers)
            self.client_conditional = True
        self.request_time = time.time()
        await self.middleware.app(scope, receive, self.send)
        if self.state == _BUFFER:
            # The app returned mid-body (a streaming response whose client went away, or
            # one that broke off): hand on what it sent, as if we were not here. That says
            # nothing about the URL: no "pass" verdict, and a request waiting for this one
            # takes over (CacheMiddleware._coalesced).
            self.incomplete = True
            self.on_pass = None
            await self._flush(more_body=True)
        elif self.state == _REVALIDATED:
            await self._revalidated()  # the app returned without ending its 304's body

    # -- the app's send --------------------------------------------------------------
    async def send(self, message: Message) -> None:
        state = self.state
        if state == _PASS:
            await self.send_downstream(message)
        elif state == _DROP:
            pass  # the body of a response the client got as a 304
        elif state == _REVALIDATED:
            if message["type"] == BODY and not message.get("more_body", False):
                await self._revalidated()
        elif state == _BUFFER:
            if message["type"] != BODY:  # a zero-copy send, trailers...: not cached
                await self._flush(more_body=True)
                await self.send_downstream(message)
                return
            body = message.get("body", b"")
            if body:
                self.chunks.append(body)
                self.size += len(body)
            more_body = message.get("more_body", False)
            if self.size > self.middleware.max_body_size:
                self._not_storable(TOO_LARGE)
                await self._flush(more_body=more_body)
            elif not more_body:
                await self._complete()
        elif message["type"] == START:
            await self._start(message)
        else:
            await self.send_downstream(message)

    async def _start(self, message: Message) -> None:
        self.response_time = time.time()
        self.start = message
        self.status = status = message["status"]
        self.headers = headers = [(name, value) for name, value in message.get("headers", ())]
        if status == 304 and self.stale is not None:
            self.state = _REVALIDATED  # the stored body answers; this 304 has none
            return
        if self.store and not message.get("trailers", False):
            # The response alone first: request fields only ever add refusals (no-store,
            # Authorization, Cookie), so a refusal here is the URL's, not this request's,
            # and an uncacheable endpoint pays for one decision per request, not two.
            decision = decide_store(self.method, (), status, headers, self.policy)
            if not decision.store:
                self._not_storable(PASS_PREFIX + decision.reason)
            elif decide_store(
                self.method, self.request_headers, status, headers, self.policy
            ).store:
                length = first_header(headers, b"content-length")
                if length is not None and _exceeds(length, self.middleware.max_body_size):
                    self._not_storable(TOO_LARGE)
                elif self._stale_on_arrival(status, headers):
                    # Decided now, not after the body: a stream that will not be stored
                    # (no-cache, max-age=0, no freshness with ttl=0: an SSE endpoint)
                    # reaches its client as it comes, not at its end.
                    self._not_storable(PASS_PREFIX + "the response is stale on arrival")
                else:
                    self.state = _BUFFER
                    return
        if self.on_pass is not None:
            self.on_pass(self.pass_reason)
        await self._forward_start(more_body=True)

    def _stale_on_arrival(self, status: int, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether the response would be stale once stored: its freshness depends on the
        status and header fields only, never on the body."""
        probe = build_stored_response(
            request_headers=self.request_headers,
            status=status,
            headers=headers,
            body=b"",
            request_time=self.request_time,
            response_time=self.response_time,
            policy=self.policy,
        )
        ttl = storage_ttl(probe, self.policy, now=self.response_time, revalidate=False)
        return ttl is not None and ttl <= 0

    async def _flush(self, *, more_body: bool) -> None:
        """Give up buffering: forward the held start and the body so far."""
        if self.on_pass is not None:
            self.on_pass(self.pass_reason)
        body = b"".join(self.chunks)
        self.chunks = []
        if await self._forward_start(more_body=more_body) and (body or not more_body):
            await self.send_downstream({"type": BODY, "body": body, "more_body": more_body})

    async def _forward_start(self, *, more_body: bool) -> bool:
        """Send the app's response start on (state PASS), or, when the client's own
        preconditions hold for this response that is not stored, a ``304`` in its place
        (state DROP: the app's body is dropped). Whether the body is to follow."""
        middleware = self.middleware
        if self.client_conditional and origin_not_modified(
            self.request_headers, self.status, self.headers
        ):
            self.state = _DROP
            headers = [(n, v) for n, v in self.headers if n.lower() not in _CONTENT_FIELDS]
            await self.send_downstream(middleware.tag_miss({"type": START, "status": 304}, headers))
            await self.send_downstream({"type": BODY, "body": b"", "more_body": False})
            return False
        self.state = _PASS
        await self.send_downstream(middleware.tag_miss(self.start, self.headers))
        return True

    async def _complete(self) -> None:
        """The whole body is here: answer the client, then store the response."""
        middleware = self.middleware
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        status = self.status
        headers = self.headers
        declared = first_header(headers, b"content-length")
        if declared is not None and status not in _NO_CONTENT and not _matches(declared, body):
            # Not a complete response (RFC 9111 §3.3): it reaches this client as the app
            # sent it, and is not stored (replayed, it would fail every later client).
            await self._pass_whole(body, "the body does not match its Content-Length")
            return
        if middleware.cache_header_name is not None:
            # Our own annotation (from a cache layer further in) describes another hop.
            name = middleware.cache_header_name
            headers = [(field, value) for field, value in headers if field.lower() != name]
        if status not in _NO_CONTENT and first_header(headers, b"content-length") is None:
            headers = [*headers, (b"content-length", str(len(body)).encode("ascii"))]
        if 200 <= status < 300:
            headers = with_etag(headers, body)  # validators for If-None-Match (RFC 9110 §8.8.3)
        stored = build_stored_response(
            request_headers=self.request_headers,
            status=status,
            headers=headers,
            body=body,
            request_time=self.request_time,
            response_time=self.response_time,
            policy=self.policy,
        )
        ttl = storage_ttl(stored, self.policy, now=self.response_time, revalidate=False)
        self.state = _PASS
        if ttl is not None and ttl <= 0:
            # Already stale (max-age=0, no-cache, ttl=0 without freshness): not worth storing.
            await self._pass_whole(body, "the response is stale on arrival")
            return
        # Committed before the client sees a byte: a client that got this MISS and asks
        # another worker next gets the HIT (and the stampede lease outlives no write).
        self.stored = stored
        await middleware.store(self.key, stored, None if ttl is None else ttl + KEEP_STALE)
        if not_modified(self.request_headers, stored):
            await self.send_downstream(
                {
                    "type": START,
                    "status": 304,
                    "headers": [
                        *not_modified_headers(stored, now=self.response_time),
                        *middleware.miss_header,
                    ],
                }
            )
            await self.send_downstream({"type": BODY, "body": b""})
        else:
            await self.send_downstream(
                {"type": START, "status": status, "headers": [*headers, *middleware.miss_header]}
            )
            await self.send_downstream({"type": BODY, "body": body})

    async def _pass_whole(self, body: bytes, reason: str) -> None:
        """Answer with the buffered response as the app sent it, and store nothing."""
        self._not_storable(PASS_PREFIX + reason)
        if await self._forward_start(more_body=False):
            await self.send_downstream({"type": BODY, "body": body})

    async def _revalidated(self) -> None:
        """The app answered the cache's validators with a 304: freshen, store, answer."""
        self.state = _PASS
        stale = self.stale
        assert stale is not None
        middleware = self.middleware
        fresh = freshen(
            stale,
            self.headers,
            request_time=self.request_time,
            response_time=self.response_time,
            policy=self.policy,
        )
        if fresh is None:
            self.refetch = True  # the middleware asks again, without preconditions
            return
        ttl = storage_ttl(fresh, self.policy, now=self.response_time, revalidate=False)
        # The entry is a GET response, whichever method validated it (a HEAD may, §4.3.5).
        decision = decide_store(
            "GET", self.request_headers, fresh.status, fresh.headers, self.policy
        )
        if decision.store and (ttl is None or ttl > 0):
            self.stored = fresh
            await middleware.store(self.key, fresh, None if ttl is None else ttl + KEEP_STALE)
        await middleware.serve(
            self.send_downstream,
            fresh,
            self.method,
            self.request_headers,
            self.response_time,
            middleware.miss_header,
        )

    def _not_storable(self, reason: str) -> None:
        if self.status not in _REQUEST_DETERMINED:
            self.pass_reason = reason


def _has_validators(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, _ in headers:
        if name[:3] in (b"if-", b"If-", b"IF-"):
            return True
    return False


def _matches(content_length: bytes, body: bytes) -> bool:
    """Whether a ``Content-Length`` field value states the body's length."""
    try:
        return int(content_length) == len(body)
    except ValueError:  # an invalid Content-Length: not a complete response either
        return False


def _exceeds(content_length: bytes, limit: int) -> bool:
    try:
        return int(content_length) > limit
    except ValueError:  # an invalid Content-Length: let the body count decide
        return False
