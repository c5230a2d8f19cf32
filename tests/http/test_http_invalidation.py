"""Invalidation after unsafe requests (RFC 9111 §4.4)."""

from __future__ import annotations

import pytest
from http_factories import hdrs

from shardcache._http import asgi_url, invalidation_keys, primary_key_asgi, primary_key_url

TARGET = "https://example.com/items?b=2&a=1"


class TestInvalidationRfc9111Section4_4:
    @pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "PURGE"])
    def test_unsafe_methods_invalidate_the_target(self, method: str) -> None:
        """RFC 9111 §4.4: unsafe (or unknown) methods invalidate the target URI."""
        assert invalidation_keys(method, 200, TARGET, [], sort_query=True) == [
            primary_key_url("GET", TARGET)
        ]

    @pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "TRACE"])
    def test_safe_methods_do_not(self, method: str) -> None:
        """RFC 9110 §9.2.1: safe methods."""
        assert invalidation_keys(method, 200, TARGET, [], sort_query=True) == []

    @pytest.mark.parametrize(
        ("status", "invalidates"),
        [(200, True), (204, True), (303, True), (400, False), (404, False), (500, False)],
    )
    def test_only_non_error_statuses(self, status: int, invalidates: bool) -> None:
        """RFC 9111 §4.4: "when it receives a non-error status code"."""
        assert bool(invalidation_keys("POST", status, TARGET, [], sort_query=True)) is invalidates

    def test_same_origin_location_and_content_location(self) -> None:
        """RFC 9111 §4.4: Location and Content-Location, when on the same origin."""
        headers = hdrs("Location: /items/7", "Content-Location: https://EXAMPLE.com:443/items/7/v")
        assert invalidation_keys("POST", 201, TARGET, headers, sort_query=True) == [
            primary_key_url("GET", TARGET),
            "GET https://example.com/items/7",
            "GET https://example.com/items/7/v",
        ]

    @pytest.mark.parametrize(
        "location",
        [
            "https://other.example/items/7",
            "http://example.com/items/7",  # another scheme is another origin
            "https://example.com:8443/items/7",  # and another port
            "http://[::1",  # not a URL
            "https://exa mple.com/",
        ],
    )
    def test_other_origins_and_garbage_are_skipped(self, location: str) -> None:
        """RFC 9111 §4.4: a different origin is not invalidated (no cross-site eviction)."""
        keys = invalidation_keys(
            "POST", 201, TARGET, hdrs(f"Location: {location}"), sort_query=True
        )
        assert keys == [primary_key_url("GET", TARGET)]

    def test_relative_references_resolve_against_the_target(self) -> None:
        """RFC 3986 §5: "7" relative to /items/ is /items/7."""
        keys = invalidation_keys(
            "PUT", 200, "http://h/items/", hdrs("Location: 7?x=1"), sort_query=True
        )
        assert keys == ["GET http://h/items/", "GET http://h/items/7?x=1"]

    def test_duplicates_collapse(self) -> None:
        keys = invalidation_keys(
            "PUT", 200, TARGET, hdrs("Content-Location: /items?a=1&b=2"), sort_query=True
        )
        assert keys == [primary_key_url("GET", TARGET)]

    def test_asgi_keys_match_the_middleware_keys(self) -> None:
        """API §3: the middleware's keys keep the query order; invalidation must too."""
        url = asgi_url("http", "example.com", b"/items", b"b=2&a=1")
        keys = invalidation_keys("DELETE", 204, url, hdrs("Location: /items/1"), sort_query=False)
        assert keys == [
            primary_key_asgi("GET", "http", "example.com", b"/items", b"b=2&a=1"),
            primary_key_asgi("GET", "http", "example.com", b"/items/1", b""),
        ]
