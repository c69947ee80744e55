"""Pure accounting decisions, challenge terms and close planning (no store, no chain).

Row IDs: SES-01/02/05/46 (terms), SES-15/16 (open checks), SES-26 (invariant), AMB-02 (close
acceptance), SES-35/36/38/44 (capture and settlement), AMB-08 (topUp raises only the deposit),
AMB-09 (initial voucher bound).
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
from mpp.session.ports import ChannelState, OnChainChannel
from mpp.session.settlement import (
    Capture,
    SettlementPolicy,
    close_due,
    earned,
    plan_close,
    plan_settle,
    settlement_due,
)
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


def test_amb_02_close_acceptance() -> None:
    """SES-36/37: any signed close up to the accepted voucher is the payer's request to end
    the channel; a short one (below spent, the TypeScript client's early stop) too: what is
    captured never depends on it (plan_close)."""
    cur = state(deposit=1000, accepted_cumulative=300, spent=100, settled=50)
    for ok in (0, 49, 99, 100, 200, 300):
        _close(cur, ok)
    with pytest.raises(VerificationFailed) as above:
        _close(cur, 301)
    assert above.value.extensions["acceptedCumulative"] == "300"
    with pytest.raises(AmountExceedsDeposit):
        _close(state(deposit=1000, accepted_cumulative=1000), 1001)
    untouched = state()  # cum == settled == spent == 0 (mpp-rs #291)
    assert _close(untouched, 0).finalized
    with pytest.raises(ChannelFinalized):
        _close(state(finalized=True), 0)


def test_ses_36_close_captures_exactly_what_was_delivered() -> None:
    """SES-36: never more than consumed, never less, whatever voucher the client closed with."""
    cur = state(accepted_cumulative=300, spent=100, settled=0, voucher_signature="0xat300")
    assert plan_close(cur, 0, 100, "0xclient") == Capture(100, "0xclient", 100)
    assert plan_close(cur, 0, 300, "0xclient") == Capture(300, "0xclient", 100)  # prepaid ahead
    assert plan_close(cur, 0, 40, "0xshort") == Capture(300, "0xat300", 100)  # short close
    assert plan_close(cur, 30, 300, "0xclient") == Capture(300, "0xclient", 70)  # 30 undelivered
    settled = state(accepted_cumulative=300, spent=100, settled=100, voucher_signature="0xs")
    assert plan_close(settled, 0, 300, "0xat300") == Capture(100, None, 100)  # nothing new
    assert plan_close(state(), 0, 0, "0xzero") == Capture(0, None, 0)
    # settled above spent (an older settle of the whole voucher): it cannot move back
    legacy = state(accepted_cumulative=300, spent=100, settled=300, voucher_signature="0xs")
    assert plan_close(legacy, 0) == Capture(300, None, 300)


def test_ses_35_settle_captures_exactly_what_was_delivered() -> None:
    cur = state(accepted_cumulative=300, spent=120, settled=20, voucher_signature="0xat300")
    assert plan_settle(cur) == Capture(300, "0xat300", 120)
    assert plan_settle(cur, held=20) == Capture(300, "0xat300", 100)  # reserved, undelivered
    assert plan_settle(cur, held=100) is None  # nothing delivered beyond settled
    assert plan_settle(dataclasses.replace(cur, finalized=True)) is None
    assert plan_settle(dataclasses.replace(cur, voucher_signature=None)) is None
    assert earned(cur, held=500) == 20  # never below settled


def test_settlement_policy() -> None:
    policy = SettlementPolicy(threshold=100, interval=60, idle_close=3600)
    live = state(accepted_cumulative=150, spent=150, settled=60, voucher_signature="0xs")
    assert not settlement_due(live, policy, now=NOW, last_settled_at=NOW)  # 90 < 100
    assert settlement_due(
        dataclasses.replace(live, settled=50), policy, now=NOW, last_settled_at=NOW
    )
    assert settlement_due(live, policy, now=NOW + 60, last_settled_at=NOW)
    assert not settlement_due(live, policy, now=NOW, last_settled_at=NOW, held=90)  # undelivered
    assert not settlement_due(
        dataclasses.replace(live, finalized=True), policy, now=NOW + 99, last_settled_at=0
    )
    off = SettlementPolicy.off()
    assert not off.enabled and SettlementPolicy().enabled
    assert not settlement_due(live, off, now=NOW + 10**6, last_settled_at=0)
    with pytest.raises(ValueError):
        SettlementPolicy(threshold=0)


def test_ses_38_and_ses_44_close_due() -> None:
    """A payer's close request is answered by a close at once, whatever the policy (SES-38);
    idle channels are closed after `idle_close` unless a stream holds units on them (SES-44)."""
    policy = SettlementPolicy(idle_close=3600)
    live = state(updated_at=NOW)
    assert not close_due(live, policy, now=NOW + 3599, held=0)
    assert close_due(live, policy, now=NOW + 3600, held=0)
    assert not close_due(live, policy, now=NOW + 3600, held=1)
    assert not close_due(live, SettlementPolicy.off(), now=NOW + 10**6, held=0)
    closing = dataclasses.replace(live, close_requested_at=NOW)
    assert close_due(closing, SettlementPolicy.off(), now=NOW, held=5)
    assert not close_due(dataclasses.replace(closing, finalized=True), policy, now=NOW, held=0)


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
