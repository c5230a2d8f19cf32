"""Cache keys: the primary key from the request target (RFC 9111 §2, §4) and the ``Vary``
secondary key (RFC 9111 §4.1).

A primary key is ``"<method> <normalized absolute URL>"``, a readable string that is the
same in every process and run (no ``hash()``): ``HEAD`` shares ``GET``'s key because a
``GET`` response can answer a ``HEAD`` (RFC 9110 §9.3.2). URL normalization follows
RFC 3986 §6.2.2 and §6.2.3: scheme and host lowercased, the default port and the fragment
dropped, an empty path made ``/``, percent-encodings of unreserved characters decoded and
the others upper-cased, characters that need it percent-encoded. The aiohttp key also sorts
the query (stable by parameter name, so repeated parameters keep their order); the ASGI key
keeps the query order, as the application sees it.

>>> primary_key_url("HEAD", "HTTPS://Example.com:443/a%7eb?b=2&a=1#top")
'GET https://example.com/a~b?a=1&b=2'
>>> primary_key_asgi("GET", "http", "example.com:80", b"/a", b"b=2&a=1")
'GET http://example.com/a?b=2&a=1'
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Final
from urllib.parse import urlsplit

import msgspec

from ._headers import RawHeaders, header_values, split_members
from ._records import StoredResponse

__all__ = [
    "asgi_url",
    "normalize_url",
    "primary_key_asgi",
    "primary_key_url",
    "variant_key",
    "vary_matches",
    "vary_names",
    "vary_values",
]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_UNRESERVED: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
)
_PATH_SAFE: Final = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/")  # RFC 3986 §3.3 pchar + "/"
_QUERY_SAFE: Final = _PATH_SAFE | frozenset(b"?")  # RFC 3986 §3.4
_HEXDIGITS: Final = frozenset(b"0123456789abcdefABCDEF")
_SCHEME: Final = re.compile(r"[a-z][a-z0-9+.-]*")
# A host is a registered name or an IP literal, then an optional port. Anything else (a
# space, a "/", an "@") is refused: a Host header such as "example.com/a" would otherwise
# alias the key of another path (cache poisoning).
_HOST_PORT: Final = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9._~-]+)(?::([0-9]*))?")
# Request fields whose values are credentials: kept in StoredResponse.vary as digests.
_SECRET_FIELDS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _normalize_component(raw: bytes, safe: frozenset[int]) -> str:
    """Percent-encoding normalized per RFC 3986 §6.2.2.1 and §6.2.2.2."""
    out = bytearray()
    index, size = 0, len(raw)
    while index < size:
        byte = raw[index]
        pair = raw[index + 1 : index + 3]
        if byte == 0x25 and len(pair) == 2 and pair[0] in _HEXDIGITS and pair[1] in _HEXDIGITS:
            decoded = int(pair, 16)
            out += bytes((decoded,)) if decoded in _UNRESERVED else b"%" + pair.upper()
            index += 3
            continue
        out += bytes((byte,)) if byte in safe else b"%%%02X" % byte
        index += 1
    return out.decode("ascii")


def _normalize_query(raw: bytes, *, sort: bool) -> str:
    query = _normalize_component(raw, _QUERY_SAFE)
    if not sort:
        return query
    params = [param for param in query.split("&") if param]
    params.sort(key=lambda param: param.partition("=")[0])  # stable: repeats keep order
    return "&".join(params)


def _authority(scheme: str, host_port: str) -> str:
    match = _HOST_PORT.fullmatch(host_port.strip().lower())
    if match is None:
        raise ValueError(f"invalid host {host_port!r}")
    host, port = match.groups()
    if not port:  # RFC 3986 §6.2.3: an empty port is the default port
        return host
    number = int(port)
    if number > 65535:
        raise ValueError(f"invalid port in {host_port!r}")
    return host if number == _DEFAULT_PORTS.get(scheme) else f"{host}:{number}"


def _scheme(scheme: str) -> str:
    scheme = scheme.lower()
    if not _SCHEME.fullmatch(scheme):
        raise ValueError(f"invalid scheme {scheme!r}")
    return scheme


def _url(scheme: str, authority: str, path: str, query: str) -> str:
    return f"{scheme}://{authority}{path}" + (f"?{query}" if query else "")


def asgi_url(
    scheme: str,
    host: str,
    path: str | bytes,
    query_string: bytes | str = b"",
    *,
    sort_query: bool = False,
) -> str:
    """The normalized absolute URL of an ASGI request.

    Pass ``scope["raw_path"]`` when the server gives it: the decoded ``scope["path"]``
    cannot tell ``/a%2Fb`` from ``/a/b``. ``host`` is the ``Host`` header (or the server
    address) and may carry a port. Raises ``ValueError`` for a host or path that cannot be
    part of a URL; the driver then bypasses the cache.

    >>> asgi_url("https", "Example.com", "/caf\u00e9", b"q=1")
    'https://example.com/caf%C3%A9?q=1'
    """
    scheme = _scheme(scheme)
    raw_path = path.encode("utf-8") if isinstance(path, str) else path
    if not raw_path:
        raw_path = b"/"
    if not raw_path.startswith(b"/"):
        raise ValueError(f"invalid request path {path!r}: it must start with '/'")
    raw_query = query_string.encode("utf-8") if isinstance(query_string, str) else query_string
    return _url(
        scheme,
        _authority(scheme, host),
        _normalize_component(raw_path, _PATH_SAFE),
        _normalize_query(raw_query, sort=sort_query),
    )


def normalize_url(url: str, *, sort_query: bool = True) -> str:
    """An absolute URL in the normalized form used by the keys.

    User information, when present, is replaced by a digest, so that credentials are not
    written into the cache while two users still get two keys. Raises ``ValueError`` for
    a URL that is not absolute or has an invalid host or port.

    >>> normalize_url("http://EXAMPLE.com:8080?b=1&a=2&b=0")
    'http://example.com:8080/?a=2&b=1&b=0'
    """
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        raise ValueError(f"not an absolute URL: {url!r}")
    scheme = _scheme(parts.scheme)
    userinfo, at, host_port = parts.netloc.rpartition("@")
    authority = _authority(scheme, host_port)
    if at:
        authority = f"{_digest(userinfo.encode('utf-8'))}@{authority}"
    return _url(
        scheme,
        authority,
        _normalize_component(parts.path.encode("utf-8") or b"/", _PATH_SAFE),
        _normalize_query(parts.query.encode("utf-8"), sort=sort_query),
    )


def _key_method(method: str) -> str:
    # RFC 9110 §9.3.2: a stored GET response can satisfy HEAD; one entry serves both.
    return "GET" if method == "HEAD" else method


def primary_key_url(method: str, url: str, *, sort_query: bool = True) -> str:
    """The primary cache key of a request to an absolute URL (the aiohttp session's key).

    >>> primary_key_url("GET", "http://example.com/?b=1&a=2")
    'GET http://example.com/?a=2&b=1'
    """
    return f"{_key_method(method)} {normalize_url(url, sort_query=sort_query)}"


def primary_key_asgi(
    method: str,
    scheme: str,
    host: str,
    path: str | bytes,
    query_string: bytes | str = b"",
    *,
    sort_query: bool = False,
) -> str:
    """The primary cache key of an ASGI request: method + scheme + host + path + query.

    Equal to ``primary_key_url(method, asgi_url(...), sort_query=...)``, so a URL read from
    a ``Location`` header maps to the key its request would have.

    >>> primary_key_asgi("HEAD", "http", "example.com", b"/a b", b"")
    'GET http://example.com/a%20b'
    """
    url = asgi_url(scheme, host, path, query_string, sort_query=sort_query)
    return f"{_key_method(method)} {url}"


def vary_names(headers: RawHeaders) -> tuple[str, ...]:
    """The request field names a response's ``Vary`` lists: lowercase, sorted, unique.

    ``"*"`` is kept: such a response never matches a later request (RFC 9111 §4.1).

    >>> vary_names([(b"Vary", b"Accept-Encoding, accept"), (b"vary", b"ACCEPT")])
    ('accept', 'accept-encoding')
    """
    lines = header_values(headers, b"vary")
    if not lines:  # the common case, on every hit: no set, no sort
        return ()
    names = {member.decode("latin-1").lower() for line in lines for member in split_members(line)}
    return tuple(sorted(names))


def vary_values(names: Sequence[str], request_headers: RawHeaders) -> dict[str, str | None]:
    """The request's values for the ``Vary`` names, normalized (RFC 9111 §4.1).

    §4.1 lets a cache match two requests whose fields differ only by whitespace or by
    being split over several lines: each value becomes its list members, inner whitespace
    collapsed, joined by ``", "``. A missing field is ``None`` (it only matches a missing
    field). Credentials (``Authorization``, ``Proxy-Authorization``, ``Cookie``) are kept
    as a digest, so that they are never written into the cache in clear.

    >>> vary_values(["accept", "x"], [(b"Accept", b"text/html ,  a/b"), (b"ACCEPT", b"c/d")])
    {'accept': 'text/html, a/b, c/d', 'x': None}
    """
    values: dict[str, str | None] = {}
    for name in names:
        if name == "*":
            continue
        lines = header_values(request_headers, name.encode("latin-1"))
        if not lines:
            values[name] = None
            continue
        members = [b" ".join(member.split()) for line in lines for member in split_members(line)]
        value = b", ".join(members)
        values[name] = (
            f"blake2b:{_digest(value)}" if name in _SECRET_FIELDS else value.decode("latin-1")
        )
    return values


def vary_matches(stored: StoredResponse, request_headers: RawHeaders) -> bool:
    """True when a request presents the same ``Vary`` fields as the stored one (§4.1).

    The stored response's own ``Vary`` is the authority on which fields count; a field the
    stored request lacked only matches a request that lacks it too. ``Vary: *`` never
    matches.
    """
    names = vary_names(stored.headers)
    if "*" in names:
        return False
    presented = vary_values(names, request_headers)
    return all(value == stored.vary.get(name) for name, value in presented.items())


def variant_key(primary_key: str, vary: Mapping[str, str | None]) -> str:
    """The key of one ``Vary`` variant of a resource: the primary key when ``vary`` is empty.

    The suffix is a digest of the normalized values, stable across processes and runs.

    >>> variant_key("GET http://x/", {}) == "GET http://x/"
    True
    >>> variant_key("GET http://x/", {"accept": "a/b"}).startswith("GET http://x/ vary=")
    True
    """
    if not vary:
        return primary_key
    # A normalized URL holds no space, so " vary=" cannot collide with another primary key.
    return f"{primary_key} vary={_digest(msgspec.json.encode(sorted(vary.items())))}"
