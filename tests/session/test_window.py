"""The bandwidth × delay lookahead window (mpp.session.window): pure, property-tested."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from mpp.session.policy import SpendingPolicy
from mpp.session.window import (
    IDLE_SECONDS,
    INITIAL_UNITS,
    UNMEASURED_MAX_UNITS,
    LeadWindow,
)


def _stream(window: LeadWindow, rate: float, seconds: float, start: float = 0.0) -> float:
    """Deliver one unit every 1/rate seconds for `seconds`; returns the end time."""
    now, step = start, 1.0 / rate
    while now < start + seconds:
        window.delivered(1, now)
        now += step
    return now


def test_starts_at_the_initial_window() -> None:
    assert LeadWindow().units() == INITIAL_UNITS


def test_lead_covers_twice_rate_times_rtt() -> None:
    """100 units/s over a 50 ms round trip: at least 2 × 100 × 0.05 = 10 units (and the floor);
    20,000 units/s over 50 ms: at least 2,000."""
    slow = LeadWindow()
    _stream(slow, 100, 1.0)
    slow.round_trip(0.05)
    assert slow.units() >= max(INITIAL_UNITS, 10)
    fast = LeadWindow()
    _stream(fast, 20_000, 0.5)
    fast.round_trip(0.05)
    assert fast.units() >= 2_000


def test_policy_caps_the_lead_in_value_and_seconds() -> None:
    by_value = LeadWindow(max_units=50)
    _stream(by_value, 20_000, 0.5)
    by_value.round_trip(0.05)
    assert by_value.units() == 50
    by_seconds = LeadWindow(max_seconds=0.01)
    _stream(by_seconds, 20_000, 0.5)
    by_seconds.round_trip(0.05)
    assert by_seconds.units() == max(INITIAL_UNITS, math.ceil(by_seconds.rate * 0.01))


def test_pauses_double_the_floor_but_not_past_the_unmeasured_cap() -> None:
    """A server cannot grow an unmeasured window without bound by asking for vouchers."""
    window = LeadWindow()
    for _ in range(40):
        window.paused()
    assert window.units() == UNMEASURED_MAX_UNITS
    assert window.pauses == 40


def test_idle_shrinks_the_window() -> None:
    window = LeadWindow()
    end = _stream(window, 5_000, 0.5)
    window.round_trip(0.05)
    for _ in range(4):
        window.paused()
    busy = window.units()
    window.resume(end + 4 * IDLE_SECONDS)
    assert window.units() < busy
    window.resume(end + 400 * IDLE_SECONDS)
    assert window.units() == INITIAL_UNITS


def test_bad_round_trip_samples_are_ignored() -> None:
    window = LeadWindow()
    window.round_trip(-1.0)
    window.round_trip(float("nan"))
    window.round_trip(float("inf"))
    assert window.rtt == 0.0


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["deliver", "rtt", "pause", "resume"]),
            st.integers(0, 10_000),
            st.floats(0, 20, allow_nan=False),
        ),
        max_size=60,
    ),
    max_units=st.one_of(st.none(), st.integers(0, 5_000)),
    max_seconds=st.one_of(st.none(), st.floats(0.001, 10)),
)
def test_lead_always_within_policy_and_positive(
    steps: list[tuple[str, int, float]], max_units: int | None, max_seconds: float | None
) -> None:
    window = LeadWindow(max_units=max_units, max_seconds=max_seconds)
    now = 0.0
    for kind, units, dt in steps:
        now += dt
        if kind == "deliver":
            window.delivered(units, now)
        elif kind == "rtt":
            window.round_trip(dt)
        elif kind == "pause":
            window.paused()
        else:
            window.resume(now)
        lead = window.units()
        assert lead >= 1
        if max_units is not None:
            assert lead <= max(1, max_units)
        if window.rate <= 0:
            assert lead <= UNMEASURED_MAX_UNITS
        elif max_seconds is not None:
            assert lead <= max(INITIAL_UNITS, math.ceil(window.rate * max_seconds))


def test_policy_lead_units_cap_halves_max_lead_per_unit() -> None:
    """Vouchers are signed up to twice the window ahead (mpp.session.ahead): a window of
    `max_lead // (2 × price)` units keeps everything signed ahead within `max_lead`."""
    assert SpendingPolicy(max_lead=1_000).lead_units_cap(10) == 50
    assert SpendingPolicy(max_lead=19).lead_units_cap(10) == 0
    assert SpendingPolicy(max_lead=1_000).lead_units_cap(0) == 1_000  # free units: no division by 0
    assert SpendingPolicy().lead_units_cap(10) is None
