"""The options of :class:`~shardcache.aiohttp.CachedSession`, checked once, and the
``urls_ttl`` patterns turned into one :class:`~shardcache._http.CachePolicy` each.

A pattern is a glob (``fnmatch``: ``*`` also matches ``/``) on ``host[:port]/path`` of the
normalized URL: host lowercase, default port dropped, no query. A pattern without ``/``
names a whole host (``"example.com"`` is ``"example.com/*"``); a pattern with ``://``
matches ``scheme://host[:port]/path``. The first matching pattern, in the mapping's
order, wins; a URL no pattern matches uses ``ttl``.

>>> def policy(ttl):
...     return None if ttl == DO_NOT_CACHE else CachePolicy(shared=False, default_ttl=ttl)
>>> rules = UrlRules({"*.example.com/api/*": 60, "example.com": 0}, policy)
>>> rules.policy_for("https://a.example.com/api/v1?x=1").default_ttl
60.0
>>> rules.policy_for("https://example.com/about") is None  # 0: do not cache
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from fnmatch import fnmatchcase
from typing import Any, Final

from ._errors import ConfigurationError
from ._http import LOOKUP_METHODS, CachePolicy, normalize_url
from ._options import check_lock_timeout, check_ttl

__all__ = [
    "DO_NOT_CACHE",
    "UrlRules",
    "check_flag",
    "check_lock_timeout",
    "check_max_body_size",
    "check_methods",
    "check_stale_if_error",
    "check_statuses",
]

#: A ``ttl``/``urls_ttl`` value meaning: neither look up nor store these URLs.
DO_NOT_CACHE: Final = 0


def check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name}={value!r}: expected True or False")
    return value


def check_methods(value: Any) -> frozenset[str]:
    allowed = ", ".join(sorted(LOOKUP_METHODS))
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"methods={value!r}: expected a collection of {allowed}")
    methods = frozenset(str(method).upper() for method in value)
    if not methods <= LOOKUP_METHODS:
        raise ConfigurationError(
            f"methods={value!r}: only {allowed} responses can be cached (RFC 9111 §2); "
            "other methods always go to the origin, and unsafe ones invalidate the URL"
        )
    return methods


def check_statuses(value: Any) -> frozenset[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigurationError(f"statuses={value!r}: expected a collection of status codes")
    statuses = frozenset(value)
    bad = sorted(
        repr(code)
        for code in statuses
        if isinstance(code, bool)
        or not isinstance(code, int)
        or not 200 <= code <= 599
        or code in (206, 304)
    )
    if bad:
        raise ConfigurationError(
            f"statuses: {', '.join(bad)} cannot be cached: expected final status codes "
            "200-599 except 206 (partial content) and 304 (it refreshes a stored response)"
        )
    return statuses


def check_stale_if_error(value: Any) -> float:
    if value is True:
        return math.inf
    if value is False:
        return 0.0
    if not isinstance(value, (int, float)) or not value >= 0:  # catches NaN too
        raise ConfigurationError(
            f"stale_if_error={value!r}: expected True (any age), False, or seconds >= 0"
        )
    return float(value)


def check_max_body_size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"max_body_size={value!r}: expected bytes as an int >= 0, or None")
    return value


def _target(url: str, *, with_scheme: bool) -> str:
    # normalize_url gives scheme://[userinfo-digest@]host[:port]/path[?query]
    scheme, _, rest = normalize_url(url).partition("://")
    rest = rest.partition("?")[0]
    authority, slash, path = rest.partition("/")
    target = authority.rpartition("@")[2] + slash + path
    return f"{scheme}://{target}" if with_scheme else target


def _split_scheme(text: str) -> tuple[str, str]:
    """``("https://", "host/path")`` for a text with a scheme, ``("", text)`` without one:
    a ``://`` later in the path (a proxied URL) is part of the path."""
    head, sep, rest = text.partition("://")
    if sep and "/" not in head:
        return head + sep, rest
    return "", text


def _without_port(target: str) -> str:
    """``host[:port]/path`` (or with a scheme) without the port."""
    prefix, rest = _split_scheme(target)
    authority, slash, path = rest.partition("/")
    bracket = authority.rfind("]")  # an IPv6 literal has colons of its own
    colon = authority.rfind(":")
    if colon > bracket:
        authority = authority[:colon]
    return f"{prefix}{authority}{slash}{path}"


def _with_port(target: str) -> str:
    """``scheme://host[:port]/path`` with the port always written: the normalized URL drops
    a default one, which a pattern naming ``:80`` or ``:443`` must still match."""
    prefix, rest = _split_scheme(target)
    authority, slash, path = rest.partition("/")
    if authority.rfind(":") <= authority.rfind("]"):  # no port (an IPv6 literal has colons)
        authority += {"http://": ":80", "https://": ":443"}.get(prefix, "")
    return f"{prefix}{authority}{slash}{path}"


def _names_port(glob: str) -> bool:
    authority = _split_scheme(glob)[1].partition("/")[0]
    return ":" in authority[authority.rfind("]") + 1 :]


def _pattern(pattern: Any) -> str:
    if not isinstance(pattern, str) or not pattern.strip():
        raise ConfigurationError(f"urls_ttl: pattern {pattern!r} must be a non-empty str")
    prefix, rest = _split_scheme(pattern.strip())
    host, slash, path = rest.partition("/")
    if not slash:
        slash, path = "/", "*"
    # An IPv6 literal's brackets are literal here, not a glob's character class.
    host = "".join({"[": "[[]", "]": "[]]"}.get(c, c) for c in host.lower())
    return f"{prefix.lower()}{host}{slash}{path}"


class UrlRules:
    """``urls_ttl`` compiled: the policy for a URL, ``None`` when it must not be cached."""

    __slots__ = ("_default", "_rules")

    def __init__(
        self,
        urls_ttl: Mapping[str, float | None],
        make_policy: Callable[[float | None], CachePolicy | None],
        default: CachePolicy | None = None,
    ) -> None:
        if not isinstance(urls_ttl, Mapping):
            raise ConfigurationError(f"urls_ttl={urls_ttl!r}: expected a mapping of pattern -> ttl")
        self._rules: list[tuple[str, bool, bool, CachePolicy | None]] = []
        for pattern, ttl in urls_ttl.items():
            glob = _pattern(pattern)
            seconds = check_ttl(ttl, f"urls_ttl[{pattern!r}]")
            with_scheme = bool(_split_scheme(glob)[0])
            self._rules.append((glob, with_scheme, _names_port(glob), make_policy(seconds)))
        self._default = default

    def policy_for(self, url: str) -> CachePolicy | None:
        """The policy of the first pattern matching ``url`` (absolute), else the default.

        Raises ``ValueError`` for a URL that cannot be normalized.
        """
        if not self._rules:
            return self._default
        full = _target(url, with_scheme=True)
        # A pattern that names no port matches the URL on any port ("example.com/api/*"
        # also covers example.com:8443); one that names a port, only that port (the
        # default one included: "example.com:443/*" matches https://example.com/).
        ported = _with_port(full)
        targets = {
            (True, True): ported,
            (True, False): _without_port(full),
            (False, True): ported.partition("://")[2],
            (False, False): _without_port(full).partition("://")[2],
        }
        for glob, with_scheme, with_port, policy in self._rules:
            if fnmatchcase(targets[with_scheme, with_port], glob):
                return policy
        return self._default
