"""CachedSession options: checked once, before anything opens; urls_ttl patterns; the
ImportError that names the extra."""

from __future__ import annotations

import gc
import importlib
import math
import sys
from typing import Any

import pytest

from shardcache import AsyncCache, ConfigurationError
from shardcache._aiohttp_options import UrlRules
from shardcache._http import CachePolicy
from shardcache.aiohttp import DO_NOT_CACHE, CachedSession


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("ttl", -1),
        ("ttl", math.nan),
        ("ttl", "60"),
        ("urls_ttl", {"example.com": -5}),
        ("urls_ttl", {"": 5}),
        ("urls_ttl", [("example.com", 5)]),
        ("methods", ("GET", "POST")),
        ("methods", "GET"),
        ("statuses", (200, 206)),
        ("statuses", (304,)),
        ("statuses", (99,)),
        ("cache_control", "yes"),
        ("allow_set_cookie", 1),
        ("stale_if_error", -1),
        ("max_body_size", -1),
        ("max_body_size", 1.5),
        ("lock_timeout", 0),
    ],
)
@pytest.mark.asyncio(loop_factories=["asyncio"])  # CachedSession needs a running loop
async def test_a_bad_option_names_itself(
    cache: AsyncCache, option: str, value: Any, recwarn: pytest.WarningsRecorder
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        CachedSession(cache=cache, **{option: value})
    assert option in str(caught.value)
    gc.collect()  # nothing was opened: no "Unclosed client session"
    assert not [w for w in recwarn if "Unclosed" in str(w.message)]


@pytest.mark.asyncio(loop_factories=["asyncio"])
async def test_cache_must_be_a_backend() -> None:
    with pytest.raises(TypeError, match="cache="):
        CachedSession(cache=object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://a.example.com/api/v1?x=1", 60.0),
        ("https://A.Example.COM:443/api/v1", 60.0),  # normalized: host case, default port
        ("https://example.com/about", None),  # "example.com" = the whole host, 0 = no cache
        ("http://localhost:8080/static/app.js", 5.0),
        ("http://localhost:8081/static/app.js", 1.0),  # no pattern: ttl
        ("https://a.example.com:8443/api/v1", 60.0),  # a pattern without a port: any port
        ("https://docs.example.org:8443/x", 7.0),
        ("https://shop.example.net/x", 3.0),  # "shop.example.net:443/*": the default port
        ("http://shop.example.net/x", 1.0),  # port 80: not that pattern
        ("http://[::1]:8080/x", 4.0),  # an IPv6 literal's brackets are not a glob class
        ("http://[::1]:8081/x", 1.0),
        ("https://mirror.example.org:8443/proxy/http://a/b", 6.0),  # a URL in the path
        ("https://docs.example.org/x", 7.0),
        ("http://docs.example.org/x", 1.0),  # the pattern names https only
    ],
)
def test_urls_ttl_patterns(url: str, expected: float | None) -> None:
    def make(ttl: float | None) -> CachePolicy | None:
        return None if ttl == DO_NOT_CACHE else CachePolicy(shared=False, default_ttl=ttl)

    rules = UrlRules(
        {
            "*.example.com/api/*": 60,
            "example.com": 0,
            "localhost:8080/static/*": 5,
            "https://docs.example.org/*": 7,
            "shop.example.net:443/*": 3,
            "[::1]:8080/*": 4,
            "mirror.example.org/proxy/*": 6,
            "*.example.com/*": 9,  # later: never reached for /api/ URLs
        },
        make,
        make(1.0),
    )
    policy = rules.policy_for(url)
    assert (None if policy is None else policy.default_ttl) == expected


def test_importing_without_aiohttp_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in sys.modules if name.startswith("shardcache.")]:
        if "aiohttp" in name:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # what a missing package looks like
    with pytest.raises(ImportError, match=r"shardcache\[aiohttp\]"):
        importlib.import_module("shardcache.aiohttp")


def test_the_real_aiohttp_is_imported() -> None:
    """The module is named shardcache/aiohttp.py; its ``import aiohttp`` is absolute."""
    import shardcache.aiohttp as module

    assert module.aiohttp.__name__ == "aiohttp"
    assert module.CachedSession.__mro__[1] is module.aiohttp.ClientSession
