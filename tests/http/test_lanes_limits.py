"""The pure parts of the payment path's protection: the failure token bucket's peek and the
known-channel set that routes vouchers to the paying lane (mpp.http.server.ratelimit, lanes)."""

from __future__ import annotations

import pytest

import mpp.http.server.lanes as lanes
from mpp.http.server.lanes import WorkLanes
from mpp.http.server.ratelimit import RateLimiter


def test_ses_42_waiting_peeks_without_taking() -> None:
    now = [0.0]
    limiter = RateLimiter(10.0, burst=2, clock=lambda: now[0])
    assert limiter.waiting("peer") == 0.0
    assert limiter.acquire("peer") == 0.0 and limiter.acquire("peer") == 0.0
    assert limiter.waiting("peer") == limiter.waiting("peer") > 0  # peeking takes nothing
    assert limiter.waiting("other") == 0.0  # keyed by peer
    now[0] += 0.1  # one token back
    assert limiter.waiting("peer") == 0.0 and limiter.acquire("peer") == 0.0


def test_known_channels_are_bounded_and_forget_the_least_recent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(lanes, "MAX_KNOWN", 3)
    known = WorkLanes()
    for cid in ("a", "b", "c"):
        known.learn(cid)
    assert known.knows("a")  # a is now the most recent
    known.learn("d")
    assert not known.knows("b") and all(known.knows(c) for c in ("a", "c", "d"))
