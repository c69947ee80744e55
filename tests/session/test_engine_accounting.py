"""Pure accounting decisions, challenge terms and close planning (no store, no chain).

Row IDs: SES-01/02/05/46 (terms), SES-15/16 (open checks), SES-26 (invariant), AMB-02 (close
bounds), AMB-08 (topUp raises only the deposit), AMB-09 (initial voucher bound).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpp.core.errors import (
    AmountExceedsDeposit,
    ChannelFinalized,
    ChannelNotFound,
    InsufficientBalance,
    PaymentError,
    VerificationFailed,
)
from mpp.session import accounting as acc
from mpp.session.ports import ChannelState, OnChainChannel, VoucherRecord
from mpp.session.settlement import SettlementPolicy, choose_close_voucher, settlement_due
from mpp.session.terms import SessionTerms, TermsError
from tests.session._workers import CID, ESCROW, NOW, PAYEE, PAYER, TOKEN, ZERO, state, terms

RULES = acc.VoucherRules()


def onchain(**kw: Any) -> OnChainChannel:
    base = OnChainChannel(CID, False, 0, PAYER, PAYEE, TOKEN, ZERO, 1_000_000, 0)
    return dataclasses.replace(base, **kw)


# --- terms (SES-01/02/05/46) -------------------------------------------------------------------


def test_ses_05_terms_round_trip_and_wire_types() -> None:
    t = terms(min_voucher_delta=10, channel_id=CID.upper().replace("0X", "0x"))
    req = t.to_request()
    assert req["amount"] == "25" and req["suggestedDeposit"] == "1000000"
    details = req["methodDetails"]
    assert details["chainId"] == 31337 and isinstance(details["chainId"], int)
    assert details["sessionProtocol"] == "v1" and details["minVoucherDelta"] == "10"
    assert details["channelId"] == CID  # lowercase on the wire
    assert SessionTerms.from_request(req) == t


def test_ses_01_mixed_case_addresses_compare_as_bytes() -> None:
    req = terms().to_request()
    req["recipient"] = "0x" + PAYEE[2:].upper()
    assert SessionTerms.from_request(req).recipient == PAYEE


def test_ses_02_defaults_and_unknown_fields() -> None:
    req: dict[str, Any] = {
        "amount": "1",
        "currency": TOKEN,
        "recipient": PAYEE,
        "methodDetails": {"escrowContract": ESCROW, "future": 1},
        "extra": "ignored",
    }
    t = SessionTerms.from_request(req)
    assert (t.chain_id, t.fee_payer, t.min_voucher_delta, t.session_protocol) == (
        4217,
        False,
        0,
        "v1",
    )


@pytest.mark.parametrize(
    "patch",
    [
        {"methodDetails": {"escrowContract": ESCROW, "sessionProtocol": "v2"}},  # SES-46
        {"amount": 25},
        {"amount": "01"},
        {"currency": "0x1234"},
        {"methodDetails": {"escrowContract": ESCROW, "chainId": "31337"}},
        {"methodDetails": {"escrowContract": ESCROW, "feePayer": "true"}},
        {"methodDetails": {}},
    ],
)
def test_ses_46_and_malformed_requests_rejected(patch: dict[str, Any]) -> None:
    req = {**terms().to_request(), **patch}
    with pytest.raises(TermsError):
        SessionTerms.from_request(req)


# --- open (SES-15/16, AMB-09) ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"payer": ZERO}, ChannelNotFound),
        ({"finalized": True}, ChannelFinalized),
        ({"payee": PAYER}, VerificationFailed),
        ({"token": ESCROW}, VerificationFailed),
        ({"close_requested_at": 5}, ChannelFinalized),
        ({"deposit": 24}, AmountExceedsDeposit),
    ],
)
def test_ses_15_open_state_checks(kw: dict[str, Any], error: type[PaymentError]) -> None:
    with pytest.raises(error):
        acc.check_open_channel(onchain(**kw), payee=PAYEE, token=TOKEN, amount=25)
    acc.check_open_channel(onchain(), payee=PAYEE, token=TOKEN, amount=25)


@pytest.mark.parametrize("first", [0, 25])  # spec "0" and the TS client's one unit (AMB-09)
def test_ses_16_amb_09_initial_voucher_bounds(first: int) -> None:
    fresh = acc.state_from_chain(onchain(), escrow=ESCROW, chain_id=31337, now=NOW)
    m = acc.apply_open(
        None,
        fresh,
        cum=first,
        signature="0xs",
        signer=PAYER,
        challenge_id="c",
        now=NOW,
        rules=RULES,
    )
    assert m.state is not None
    assert (m.state.accepted_cumulative, m.state.spent) == (first, 0)
    with pytest.raises(AmountExceedsDeposit):
        acc.apply_open(
            None,
            fresh,
            cum=10**6 + 1,
            signature="0xs",
            signer=PAYER,
            challenge_id="c",
            now=NOW,
            rules=RULES,
        )


# --- refresh / topUp (AMB-08) ------------------------------------------------------------------


def test_amb_08_topup_raises_deposit_not_available() -> None:
    cur = state(accepted_cumulative=500, spent=400)
    m = acc.apply_refresh(cur, onchain(deposit=2_000_000, close_requested_at=0), now=NOW + 1)
    assert m.state is not None
    assert (m.state.deposit, m.state.available) == (2_000_000, 100)


def test_refresh_merges_close_request_and_unseen_settle() -> None:
    cur = state(accepted_cumulative=500, spent=400, voucher_signature="0xsig")
    m = acc.apply_refresh(cur, onchain(settled=600, close_requested_at=77), now=NOW)
    assert m.state is not None
    s = m.state
    # the payer keeps its unspent credit: spent is not raised to settled
    assert (s.settled, s.spent, s.accepted_cumulative, s.close_requested_at) == (600, 400, 600, 77)
    assert s.voucher_signature is None
    with pytest.raises(ChannelNotFound):  # SES-43: the open was reorged away
        acc.apply_refresh(cur, onchain(payer=ZERO), now=NOW)


# --- close (AMB-02, SES-36) --------------------------------------------------------------------


def _close(cur: ChannelState, cum: int) -> ChannelState:
    m = acc.apply_close(cur, cum=cum, signature="0xs", signer=PAYER, challenge_id="c", now=NOW)
    assert m.state is not None and m.state.finalized
    return m.state


def test_amb_02_close_bounds() -> None:
    cur = state(deposit=1000, accepted_cumulative=300, spent=100, settled=50)
    assert acc.close_bounds(cur) == (100, 300)
    for ok in (100, 200, 300):
        _close(cur, ok)
    with pytest.raises(VerificationFailed) as below:
        _close(cur, 99)
    assert below.value.extensions["spent"] == "100"  # the client re-signs at spent
    with pytest.raises(VerificationFailed):
        _close(cur, 301)
    with pytest.raises(AmountExceedsDeposit):
        _close(state(deposit=1000, accepted_cumulative=1000), 1001)
    untouched = state()  # cum == settled == spent == 0 (mpp-rs #291)
    assert _close(untouched, 0).finalized
    with pytest.raises(ChannelFinalized):
        _close(state(finalized=True), 0)


def test_amb_02_close_captures_exactly_spent_when_possible() -> None:
    cur = state(accepted_cumulative=300, spent=100, settled=0, finalized=True)
    history = [
        VoucherRecord(CID, 100, "0xat100", "c", 1),
        VoucherRecord(CID, 300, "0xat300", "c", 2),
    ]
    assert choose_close_voucher(cur, 100, "0xclient", history) == (100, "0xclient")
    assert choose_close_voucher(cur, 300, "0xat300", history) == (100, "0xat100")
    assert choose_close_voucher(cur, 300, "0xat300", history[1:]) == (300, "0xat300")
    settled = state(accepted_cumulative=300, spent=100, settled=100)
    assert choose_close_voucher(settled, 300, "0xat300", []) == (100, None)  # no signature needed
    assert choose_close_voucher(state(), 0, "0xzero", []) == (0, None)


def test_settlement_policy() -> None:
    policy = SettlementPolicy(every_amount=100, every_seconds=60)
    live = state(accepted_cumulative=150, settled=60, voucher_signature="0xs")
    assert not settlement_due(live, policy, now=NOW, last_settled_at=NOW)
    assert settlement_due(
        dataclasses.replace(live, settled=50), policy, now=NOW, last_settled_at=NOW
    )
    assert settlement_due(live, policy, now=NOW + 60, last_settled_at=NOW)
    closing = dataclasses.replace(live, close_requested_at=NOW)  # SES-38: settle within the grace
    assert settlement_due(closing, SettlementPolicy(), now=NOW, last_settled_at=NOW)
    assert not settlement_due(
        dataclasses.replace(live, finalized=True), policy, now=NOW + 99, last_settled_at=0
    )


# --- invariant (SES-26), property-based --------------------------------------------------------


ops = st.lists(
    st.tuples(st.sampled_from(["voucher", "charge", "refresh"]), st.integers(0, 400)), max_size=60
)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_ses_26_invariant_holds_under_any_sequence(seq: list[tuple[str, int]]) -> None:
    cur = state(deposit=5000)
    deposit, settled = 5000, 0
    for kind, n in seq:
        try:
            if kind == "voucher":
                m = acc.apply_voucher(
                    cur,
                    cum=cur.accepted_cumulative + n,
                    signature="0xs",
                    signer=PAYER,
                    challenge_id="c",
                    now=NOW,
                    rules=acc.VoucherRules(min_voucher_delta=3),
                )
            elif kind == "charge":
                m = acc.apply_charge(cur, n, now=NOW)
            else:
                deposit += n
                settled = min(max(settled, cur.accepted_cumulative - n), cur.accepted_cumulative)
                m = acc.apply_refresh(cur, onchain(deposit=deposit, settled=settled), now=NOW)
        except PaymentError as exc:
            assert isinstance(
                exc, InsufficientBalance | AmountExceedsDeposit
            ) or exc.problem.endswith("delta-too-small")
            continue
        if m.state is not None:
            assert m.state.accepted_cumulative >= cur.accepted_cumulative  # monotonic
            cur = m.state
        assert cur.spent <= cur.accepted_cumulative <= cur.deposit
        assert cur.settled <= cur.accepted_cumulative
