"""What a payer signs mid-stream (mpp.session.ahead): the need-voucher plan and the prepay-ahead
estimate are pure, so their bounds are checked here over arbitrary inputs (SES-31, CORE-39)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpp.session.ahead import MAX_IN_FLIGHT, Ahead, plan_need
from mpp.session.budget import ServerOverreach, StreamBudget
from mpp.session.receipts import NeedVoucher

CID = "0x" + "ab" * 32
amounts = st.integers(min_value=0, max_value=10**12)


def test_ses_31_need_voucher_parses_ascii_decimals_only() -> None:
    data = {"channelId": CID.upper(), "requiredCumulative": "30", "acceptedCumulative": "20",
            "deposit": "1000"}  # fmt: skip
    need = NeedVoucher.parse(data)
    assert need == NeedVoucher(CID.lower(), 30, 20, 1000)
    assert NeedVoucher.parse(need.to_json()) == need
    for bad in ("\uff13\uff10", "\u00b2", "-1", "1e3", "", None, 30):
        with pytest.raises(ValueError):
            NeedVoucher.parse({**data, "requiredCumulative": bad})
    with pytest.raises(ValueError):
        NeedVoucher.parse({**data, "channelId": ""})


def test_ses_31_need_voucher_for_another_channel_is_refused() -> None:
    budget = StreamBudget(unit_price=1, base=0, window=100)
    need = NeedVoucher("0x" + "cd" * 32, 10, 0, 1000)
    with pytest.raises(ServerOverreach):
        plan_need(need, channel_id=CID, budget=budget, lead=10, deposit=1000)


@given(
    base=amounts, delivered=st.integers(0, 10_000), window=st.integers(0, 10**6),
    price=st.integers(1, 10**6), required=amounts, lead=st.integers(0, 10**7),
    deposit=amounts, claimed=amounts, topup_amount=st.none() | amounts,
)  # fmt: skip
def test_ses_31_plan_never_exceeds_the_budget_and_tops_up_only_past_the_deposit(
    base: int, delivered: int, window: int, price: int, required: int, lead: int,
    deposit: int, claimed: int, topup_amount: int | None,
) -> None:  # fmt: skip
    budget = StreamBudget(unit_price=price, base=base, window=window)
    budget.delivered(delivered)
    need = NeedVoucher(CID, required, 0, claimed)
    try:
        plan = plan_need(
            need, channel_id=CID, budget=budget, lead=lead, deposit=deposit,
            topup_amount=topup_amount,
        )  # fmt: skip
    except ServerOverreach:
        assert required > budget.limit
        return
    known = max(deposit, claimed)
    assert required <= plan.target <= budget.limit  # CORE-39: never beyond the allowance
    assert (plan.topup > 0) == (required > known)  # SES-31: top up first, only then
    assert plan.target <= known + plan.topup
    assert budget.signed >= plan.target


@given(
    price=st.integers(1, 1_000), lead=st.integers(1, 500), deposit=st.integers(1, 10**7),
    chunks=st.lists(st.integers(0, 50), max_size=60), answers=st.lists(st.booleans()),
)  # fmt: skip
def test_prepay_ahead_stays_within_budget_deposit_and_in_flight_cap(
    price: int, lead: int, deposit: int, chunks: list[int], answers: list[bool]
) -> None:
    budget = StreamBudget(unit_price=price, base=0, window=0, max_window=2 * lead * price)
    ahead = Ahead(price, budget, fixed_lead=lead, deposit=deposit)
    ahead.start(accepted=price, spent=0)
    sent: list[int] = []  # on the wire
    signed: list[int] = []
    replies = iter(answers)
    for events in chunks:
        budget.delivered(events)
        nxt = ahead.seen(events, 0.0)
        if nxt is not None:
            sent.append(nxt)
            signed.append(nxt)
            assert nxt <= budget.limit and nxt <= deposit
        assert 0 <= ahead.in_flight <= MAX_IN_FLIGHT
        if sent and next(replies, True):
            ahead.done(sent.pop(0), True, 0.01)
    assert all(a < b for a, b in itertools.pairwise(signed))  # each voucher signs more
