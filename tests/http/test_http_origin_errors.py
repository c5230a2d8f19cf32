"""What counts as an origin failure for stale-if-error (RFC 5861 §4)."""

from __future__ import annotations

import math

import pytest
from http_factories import T0, stored

from shardcache._http import ORIGIN_ERROR_STATUSES, CachePolicy, Reuse, decide_reuse


def test_the_error_statuses_are_those_of_rfc5861() -> None:
    """RFC 5861 §4: "An error is any situation that would result in a 500, 502, 503, or
    504 HTTP response status code being returned." Other 5xx (501, 505) are answers."""
    assert frozenset({500, 502, 503, 504}) == ORIGIN_ERROR_STATUSES
    assert 501 not in ORIGIN_ERROR_STATUSES


@pytest.mark.parametrize(
    ("window", "staleness", "expected"),
    [(math.inf, 10_000, Reuse.STALE_OK), (30.0, 29, Reuse.STALE_OK), (30.0, 31, Reuse.REVALIDATE)],
)
def test_policy_window_applies_only_after_an_error(
    window: float, staleness: float, expected: Reuse
) -> None:
    """The driver's stale_if_error option widens the window only when the origin failed."""
    policy = CachePolicy(shared=False, default_ttl=None, stale_if_error=window)
    entry = stored("Cache-Control: max-age=60")
    now = T0 + 60 + staleness
    assert decide_reuse(entry, "GET", [], policy, now=now).reuse is Reuse.REVALIDATE
    assert decide_reuse(entry, "GET", [], policy, now=now, error=True).reuse is expected


def test_must_revalidate_wins_over_the_policy_window() -> None:
    """RFC 9111 §5.2.2.2: a must-revalidate response is never served stale, even on error."""
    policy = CachePolicy(shared=False, stale_if_error=math.inf)
    entry = stored("Cache-Control: max-age=60, must-revalidate")
    verdict = decide_reuse(entry, "GET", [], policy, now=T0 + 120, error=True)
    assert verdict.reuse is Reuse.REVALIDATE
