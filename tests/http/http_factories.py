"""Plain-value builders for the RFC 9111 tests: header lines as text, fixed times."""

from __future__ import annotations

from shardcache._http import CachePolicy, StoredResponse, format_http_date

#: A fixed "now" (2023-11-14T22:13:20Z); every test computes times from it.
T0 = 1_700_000_000.0

SHARED = CachePolicy(shared=True, default_ttl=60)
PRIVATE = CachePolicy(shared=False, default_ttl=3600)


def hdrs(*lines: str) -> list[tuple[bytes, bytes]]:
    """``hdrs("Cache-Control: max-age=60", "Vary: Accept")`` as raw byte pairs, in order."""
    pairs = []
    for line in lines:
        name, colon, value = line.partition(":")
        assert colon, f"not a header line: {line!r}"
        pairs.append((name.strip().encode("latin-1"), value.strip().encode("latin-1")))
    return pairs


def http_date(timestamp: float) -> str:
    """An IMF-fixdate for a header line."""
    return format_http_date(timestamp).decode("ascii")


def stored(
    *lines: str,
    status: int = 200,
    body: bytes = b"hello",
    request_time: float = T0,
    response_time: float = T0,
    vary: dict[str, str | None] | None = None,
) -> StoredResponse:
    """A response received at ``response_time`` (default: ``T0``) with these header lines."""
    return StoredResponse(
        status=status,
        headers=hdrs(*lines),
        body=body,
        request_time=request_time,
        response_time=response_time,
        vary=vary or {},
    )
