"""The payer's mid-stream allowance (mpp.session.budget): CORE-39 applied to need-voucher events.

Whatever a server asks, a stream never makes the payer sign more than what was delivered since
the response began (at the unit price) plus the lookahead window plus one unit, and a server
that keeps asking without delivering is refused.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpp.session.budget import ServerOverreach, StreamBudget
from mpp.session.policy import PolicyViolation


def test_core_39_whole_deposit_after_two_tokens_is_refused() -> None:
    budget = StreamBudget(unit_price=10, base=1_000, window=160)
    budget.delivered(2)
    assert budget.limit == 1_000 + 3 * 10 + 160
    budget.asked(1_030)  # the next unit: fine
    with pytest.raises(ServerOverreach):
        budget.asked(100_000)  # the whole deposit
    assert issubclass(ServerOverreach, PolicyViolation)


def test_ses_31_early_ask_beyond_a_carried_lead_is_skipped_not_refused() -> None:
    """A response starts with 400 we signed earlier but a window of 100: at half of it the
    server asks early for the next unit. Nothing is signed and the stream goes on; once the
    server has delivered what we signed, an ask beyond the allowance ends the stream."""
    budget = StreamBudget(unit_price=1, base=1_000, window=100, signed=1_400)
    budget.delivered(200)
    assert budget.lead_left == 200
    assert budget.asked(1_401) is False  # an early ask beyond our window: not answered
    assert budget.asked(1_250) is True  # within the allowance: answered
    with pytest.raises(ServerOverreach):
        budget.asked(1_400 + 100 + 1)  # more than one window past what we signed
    budget.delivered(1)
    budget.delivered(199)
    assert budget.lead_left == 0
    with pytest.raises(ServerOverreach):
        budget.asked(1_000 + 401 + 100 + 1)  # dry and beyond delivered + window + one unit
    budget = StreamBudget(unit_price=1, base=1_000, window=100, signed=1_400)
    budget.signing(1_300)
    assert budget.signed == 1_400  # the highest signed, never lowered


def test_core_39_asks_without_content_are_capped() -> None:
    budget = StreamBudget(unit_price=10, base=0, window=0, max_empty_asks=3)
    for _ in range(3):
        budget.asked(10)
    with pytest.raises(ServerOverreach, match="without sending"):
        budget.asked(10)
    budget = StreamBudget(unit_price=10, base=0, window=0, max_empty_asks=3)
    for n in range(1, 300):  # a need-voucher after every delivered unit is legitimate
        budget.delivered(1)
        budget.asked((n + 1) * 10)


def test_own_prepay_is_capped_and_units_per_event() -> None:
    budget = StreamBudget(unit_price=5, base=100, window=50, units_per_event=2)
    budget.delivered(3)
    assert budget.limit == 100 + 7 * 5 + 50
    assert budget.cap(10_000) == budget.limit
    assert budget.cap(120) == 120


@given(
    st.integers(1, 10**6),
    st.integers(0, 10**9),
    st.integers(0, 10**6),
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10**10)), max_size=50),
)
def test_core_39_never_signs_beyond_delivered_plus_window(
    price: int, base: int, window: int, steps: list[tuple[int, int]]
) -> None:
    budget = StreamBudget(unit_price=price, base=base, window=window, max_empty_asks=10**6)
    delivered = 0
    for events, required in steps:
        budget.delivered(events)
        delivered += events
        try:
            budget.asked(required)
        except ServerOverreach:
            assert required > base + (delivered + 1) * price + window
        else:
            assert required <= base + (delivered + 1) * price + window


@given(
    widths=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=20),
    max_window=st.one_of(st.none(), st.integers(min_value=0, max_value=10**9)),
)
def test_core_39_widen_only_grows_and_never_passes_max_lead(
    widths: list[int], max_window: int | None
) -> None:
    """The window follows the payer's own measurement upward, never beyond the policy's
    `max_lead`, and never shrinks within a response (a smaller estimate does not revoke
    what the payer already allowed)."""
    budget = StreamBudget(unit_price=7, base=0, window=0, max_window=max_window)
    previous = 0
    for w in widths:
        budget.widen(w)
        assert budget.window >= previous
        assert max_window is None or budget.window <= max_window
        assert budget.window == max(previous, w if max_window is None else min(w, max_window))
        previous = budget.window


def test_core_39_a_widened_window_allows_its_lead_and_no_more() -> None:
    budget = StreamBudget(unit_price=10, base=500, window=0, max_window=400)
    budget.widen(1_000)  # capped at max_lead
    assert budget.window == 400 and budget.limit == 500 + 10 + 400
    budget.asked(910)
    with pytest.raises(ServerOverreach):
        budget.asked(911)
