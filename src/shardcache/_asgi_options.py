"""The options of :class:`~shardcache.asgi.CacheMiddleware`, checked once at construction.

Every bad value raises :class:`~shardcache.ConfigurationError` naming the option as the
caller spelled it, so a typo in an ``add_middleware`` call fails at start-up instead of
on the first request. What comes out is the middleware's routing: the default
:class:`~shardcache._http.CachePolicy`, one per ``rules`` pattern (``None``: never cache),
and the key function.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ._asgi_lookup import Routing
from ._errors import ConfigurationError
from ._http import LOOKUP_METHODS, CachePolicy
from ._options import check_lock_timeout

__all__ = ["UNSET", "MiddlewareOptions", "Unset", "check_options"]

_HEADER_NAME: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 §5.6.2 token
_NEVER: Final = frozenset({"no-cache", "no-store"})  # rules values meaning "never cache"


class Unset:
    """``header``/``cache_header`` not given (``None`` means "no header")."""


UNSET: Final = Unset()


@dataclass(frozen=True)
class MiddlewareOptions:
    """What :func:`check_options` returns: the options in the form the middleware uses."""

    methods: frozenset[str]
    max_body_size: int
    header: bytes | None  # lowercase, latin-1; None: no HIT/MISS header
    pass_ttl: float
    lock_timeout: float
    routing: Routing


def _iterable(values: Any) -> bool:
    """Whether ``values`` is a collection (one str is not a collection of names)."""
    return isinstance(values, Iterable) and not isinstance(values, (str, bytes))


def check_options(
    *,
    ttl: Any,
    methods: Any,
    statuses: Any,
    max_body_size: Any,
    key: Any,
    header: Any,
    cache_private: Any,
    cookies: Any,
    targeted_fields: Any,
    rules: Any,
    pass_ttl: Any,
    lock_timeout: Any,
    cache_header: Any,
) -> MiddlewareOptions:
    """Check every option of the middleware; see :class:`~shardcache.asgi.CacheMiddleware`."""
    name = _header(header, cache_header)
    if key is not None and not callable(key):
        raise ConfigurationError(f"key={key!r}: expected a callable(scope, key) or None")
    if type(cache_private) is not bool:
        raise ConfigurationError(f"cache_private={cache_private!r}: expected True or False")
    checked_methods = _methods(methods)
    if type(max_body_size) is not int or max_body_size < 0:
        raise ConfigurationError(f"max_body_size={max_body_size!r}: expected an int >= 0")
    if cookies not in ("explicit", "ignore"):
        raise ConfigurationError(f"cookies={cookies!r}: expected 'explicit' or 'ignore'")
    targeted = _targeted(targeted_fields)
    if type(pass_ttl) not in (int, float) or not (pass_ttl >= 0 and math.isfinite(pass_ttl)):
        raise ConfigurationError(f"pass_ttl={pass_ttl!r}: expected seconds >= 0")
    timeout = check_lock_timeout(lock_timeout)
    statuses = tuple(statuses) if _iterable(statuses) else statuses  # read once per policy

    def policy(rule_ttl: Any) -> CachePolicy:
        return _policy(rule_ttl, statuses, cache_private, cookies, targeted)

    default = policy(ttl)
    if rules is not None and not isinstance(rules, Mapping):
        raise ConfigurationError(f"rules={rules!r}: expected a mapping {{path glob: ttl}}")
    rule_policies = []
    for pattern, rule_ttl in (rules or {}).items():
        if not isinstance(pattern, str):
            raise ConfigurationError(f"rules: {pattern!r} is not a path glob (a str)")
        never = rule_ttl in _NEVER if isinstance(rule_ttl, str) else rule_ttl == 0
        try:
            rule_policy = None if never else policy(rule_ttl)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"rules[{pattern!r}]={rule_ttl!r}: expected seconds >= 0, None (forever), "
                f"0, 'no-cache' or 'no-store' (never cached) ({exc})"
            ) from None
        rule_policies.append((re.compile(fnmatch.translate(pattern)), rule_policy))
    return MiddlewareOptions(
        methods=checked_methods,
        max_body_size=max_body_size,
        header=None if name is None else name.lower().encode("latin-1"),
        pass_ttl=pass_ttl,
        lock_timeout=timeout,
        routing=Routing(default, rule_policies, key),
    )


def _header(header: Any, cache_header: Any) -> str | None:
    """The HIT/MISS header's name from ``header=`` or its other name ``cache_header=``."""
    given = "header"
    if not isinstance(cache_header, Unset):
        if not isinstance(header, Unset) and header != cache_header:
            raise ConfigurationError("header= and cache_header= name the same option")
        header, given = cache_header, "cache_header"
    if isinstance(header, Unset):
        return "X-Cache"
    if header is not None and not (isinstance(header, str) and _HEADER_NAME.fullmatch(header)):
        raise ConfigurationError(f"{given}={header!r}: not a header name (or None)")
    return header


def _methods(methods: Any) -> frozenset[str]:
    methods = tuple(methods) if _iterable(methods) else methods
    if not _iterable(methods) or not all(isinstance(m, str) for m in methods):
        raise ConfigurationError(f"methods={methods!r}: expected a sequence of method names")
    checked = frozenset(method.upper() for method in methods)
    if not checked <= LOOKUP_METHODS:
        raise ConfigurationError(
            f"methods={sorted(checked)!r}: only GET and HEAD can be answered from a cache"
        )
    return checked


def _targeted(targeted_fields: Any) -> tuple[bytes, ...]:
    try:
        fields: tuple[Any, ...] = () if isinstance(targeted_fields, str) else tuple(targeted_fields)
    except TypeError:
        fields = (None,)  # not iterable: reported below
    if isinstance(targeted_fields, str) or not all(
        isinstance(field, str) and _HEADER_NAME.fullmatch(field) for field in fields
    ):
        raise ConfigurationError(
            f"targeted_fields={targeted_fields!r}: expected a sequence of header names"
        )
    return tuple(field.lower().encode("latin-1") for field in fields)


def _policy(
    ttl: Any,
    statuses: Any,
    cache_private: bool,
    cookies: str,
    targeted: tuple[bytes, ...],
) -> CachePolicy:
    if ttl is not None and (type(ttl) not in (int, float) or not (ttl >= 0 and math.isfinite(ttl))):
        raise ConfigurationError(f"ttl={ttl!r}: expected seconds >= 0, or None (forever)")
    if not _iterable(statuses):
        raise ConfigurationError(f"statuses={statuses!r}: expected HTTP status codes (ints)")
    codes = list(statuses)
    if not all(type(s) is int and 100 <= s <= 599 for s in codes):
        raise ConfigurationError(f"statuses={codes!r}: expected HTTP status codes (ints)")
    try:
        return CachePolicy(
            shared=True,
            default_ttl=None if ttl is None else float(ttl),
            cacheable_statuses=frozenset(codes),
            cache_private=cache_private,
            cookie_credentials=cookies == "explicit",
            targeted=targeted,
        )
    except ValueError as exc:  # the policy's own checks (206, 304 are never stored)
        raise ConfigurationError(f"statuses={sorted(codes)!r}: {exc}") from None
