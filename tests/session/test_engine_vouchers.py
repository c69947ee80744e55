"""Voucher, charge, receipt and need-voucher paths of the engine on a memory store, no chain.

The chain is a guard that fails on any call: within the refresh TTL a voucher costs no RPC.
Row IDs: SES-08/10/11/12/20..24/27/31/33/41/42, AMB-01/03/04/05/11/13.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mpp.core.errors import (
    AmountExceedsDeposit,
    ChallengeNotFound,
    ChannelFinalized,
    DeltaTooSmall,
    InsufficientBalance,
    InvalidSignature,
    MalformedCredential,
    PaymentError,
    SignerMismatch,
    VerificationFailed,
)
from mpp.session import engine as engine_mod
from mpp.session.engine import SessionServer
from mpp.session.ports import Mutation
from mpp.session.voucher import SECP256K1_N
from mpp.store.memory import MemoryStore
from tests.session._workers import (
    CHAIN_ID,
    CID,
    DELEGATE,
    DELEGATE_KEY,
    ESCROW,
    NOW,
    PAYER_KEY,
    NoChain,
    key,
    state,
    terms,
    voucher,
)


def server_with(store_state: Any = None, **kw: Any) -> SessionServer:
    store = MemoryStore()
    if store_state is not None:
        store.update(CID, lambda _cur: Mutation(store_state))
    opts: dict[str, Any] = {"now": lambda: NOW}
    opts.update(kw)
    route = opts.pop("terms", terms())
    return SessionServer(store, NoChain(), route, **opts)


def problem(exc: PaymentError) -> tuple[str, int]:
    body = exc.to_problem()
    return body["type"].rsplit("problems/", 1)[1], body["status"]


# --- acceptance and signer rules ---------------------------------------------------------------


def test_ses_20_voucher_accepted_persisted_with_challenge() -> None:
    server = server_with(state())
    result = server.handle(voucher(100), challenge_id="ch-1")
    assert result.action == "voucher"
    assert result.state.accepted_cumulative == 100
    assert server.store.get(CID) == result.state
    (row,) = server.store.vouchers(CID)
    assert (row.cumulative_amount, row.challenge_id) == (100, "ch-1")  # SES-25 audit


def test_ses_12_forged_signer_is_invalid_signature() -> None:
    server = server_with(state())
    with pytest.raises(InvalidSignature) as err:
        server.handle(voucher(100, k=key("mallory")), challenge_id="c")
    assert problem(err.value) == ("session/invalid-signature", 402)


def test_ses_12_payer_signed_voucher_rejected_when_delegate_set() -> None:
    server = server_with(state(authorized_signer=DELEGATE))
    with pytest.raises(SignerMismatch) as err:
        server.handle(voucher(100, k=PAYER_KEY), challenge_id="c")
    assert problem(err.value) == ("session/signer-mismatch", 402)
    assert (
        server.handle(voucher(100, k=DELEGATE_KEY), challenge_id="c").state.accepted_cumulative
        == 100
    )


@pytest.mark.parametrize(
    "domain",
    [
        {"escrow": "0x" + "ef" * 20},  # cross-contract replay
        {"chain_id": CHAIN_ID + 1},  # cross-chain replay
        {"name": "EVM Payment Channel"},  # another method's domain (SES-08)
    ],
    ids=["other-escrow", "other-chain", "other-domain-name"],
)
def test_ses_08_voucher_for_another_domain_rejected(domain: dict[str, Any]) -> None:
    server = server_with(state())
    with pytest.raises(InvalidSignature):
        server.handle(voucher(100, **domain), challenge_id="c")
    assert server.store.get(CID).accepted_cumulative == 0  # type: ignore[union-attr]


def _malleate(sig: str) -> str:
    raw = bytes.fromhex(sig[2:])
    s = int.from_bytes(raw[32:64], "big")
    return (
        "0x"
        + raw[:32].hex()
        + (SECP256K1_N - s).to_bytes(32, "big").hex()
        + format(55 - raw[64], "02x")
    )


def test_ses_11_high_s_twin_rejected() -> None:
    server = server_with(state())
    payload = voucher(100)
    payload["signature"] = _malleate(payload["signature"])
    with pytest.raises(InvalidSignature):
        server.handle(payload, challenge_id="c")


def test_ses_10_bad_v_rejected_and_compact_signature_normalized() -> None:
    server = server_with(state())
    payload = voucher(100)
    bad_v = payload["signature"][:-2] + "01"
    with pytest.raises(InvalidSignature):
        server.handle({**payload, "signature": bad_v}, challenge_id="c")
    raw = bytes.fromhex(payload["signature"][2:])
    vs = int.from_bytes(raw[32:64], "big") | ((raw[64] - 27) << 255)
    compact = "0x" + raw[:32].hex() + vs.to_bytes(32, "big").hex()
    result = server.handle({**payload, "signature": compact}, challenge_id="c")
    assert result.state.voucher_signature == payload["signature"]  # AMB-07: stored as 65 bytes


# --- monotonicity, delta, caps (SES-22..24, AMB-03) --------------------------------------------


def test_ses_22_equal_voucher_is_idempotent_without_state_change() -> None:
    server = server_with(state())
    first = server.handle(voucher(100), challenge_id="a").state
    again = server.handle(voucher(100), challenge_id="b").state
    assert again == first
    assert len(server.store.vouchers(CID)) == 1


def test_ses_22_lower_voucher_rejected_for_tempo() -> None:
    server = server_with(state())
    server.handle(voucher(100), challenge_id="a")
    with pytest.raises(VerificationFailed) as err:
        server.handle(voucher(99), challenge_id="b")
    assert problem(err.value) == ("verification-failed", 402)
    assert err.value.extensions["acceptedCumulative"] == "100"


def test_amb_03_lower_voucher_is_a_noop_with_the_evm_flag_but_signature_still_checked() -> None:
    server = server_with(state(), reject_lower_vouchers=False)
    server.handle(voucher(100), challenge_id="a")
    assert server.handle(voucher(50), challenge_id="b").state.accepted_cumulative == 100
    with pytest.raises(InvalidSignature):  # SES-20 evm: signature before any idempotent 200
        server.handle(voucher(50, k=key("mallory")), challenge_id="b")


def test_ses_24_voucher_over_deposit_rejected() -> None:
    server = server_with(state(deposit=1000))
    assert server.handle(voucher(1000), challenge_id="a").state.accepted_cumulative == 1000
    server2 = server_with(state(deposit=1000))
    with pytest.raises(AmountExceedsDeposit) as err:
        server2.handle(voucher(1001), challenge_id="a")
    assert problem(err.value) == ("session/amount-exceeds-deposit", 402)


def test_ses_24_cumulative_above_uint128_is_malformed() -> None:
    server = server_with(state())
    payload = voucher(100)
    payload["cumulativeAmount"] = str(2**128)
    with pytest.raises(MalformedCredential) as err:
        server.handle(payload, challenge_id="a")
    assert problem(err.value) == ("malformed-credential", 402)


def test_ses_23_min_voucher_delta() -> None:
    server = server_with(state(accepted_cumulative=100), terms=terms(min_voucher_delta=50))
    with pytest.raises(DeltaTooSmall) as err:
        server.handle(voucher(149), challenge_id="a")
    assert problem(err.value) == ("session/delta-too-small", 402)
    assert server.handle(voucher(150), challenge_id="a").state.accepted_cumulative == 150


@pytest.mark.parametrize(
    ("kw", "detail"),
    [({"close_requested_at": NOW - 5}, "close requested"), ({"finalized": True}, "finalized")],
)
def test_ses_21_amb_11_pending_close_or_finalized_is_410(kw: dict[str, Any], detail: str) -> None:
    server = server_with(state(**kw))
    with pytest.raises(ChannelFinalized) as err:
        server.handle(voucher(100), challenge_id="a")
    assert problem(err.value) == ("session/channel-finalized", 410)
    assert detail in err.value.detail
    with pytest.raises(ChannelFinalized):
        server.charge(CID, 1)


# --- schema errors (SES-41/42, AMB-04) ---------------------------------------------------------


def _bad(field: str, value: Any) -> dict[str, Any]:
    payload: dict[str, Any] = dict(voucher(100))
    if value is ...:
        del payload[field]
    else:
        payload[field] = value
    return payload


@pytest.mark.parametrize(
    "payload",
    [
        _bad("action", "foo"),  # SES-41
        _bad("action", ...),
        _bad("channelId", "0x1234"),
        _bad("channelId", CID[2:]),
        _bad("channelId", ...),
        _bad("cumulativeAmount", 100),  # numbers are not decimal strings (SES-05)
        _bad("cumulativeAmount", "0100"),
        _bad("cumulativeAmount", "-1"),
        _bad("cumulativeAmount", "1e3"),
        _bad("signature", "0x" + "zz" * 65),
        _bad("signature", "0x" + "11" * 63),
        _bad("signature", ...),
        {"action": "open", "type": "hash", "channelId": CID},
        {"action": "topUp", "type": "transaction", "channelId": CID, "transaction": "0x76"},
    ],
)
def test_ses_41_42_amb_04_malformed_payloads(payload: dict[str, Any], monkeypatch: Any) -> None:
    calls: list[object] = []
    monkeypatch.setattr(engine_mod, "recover_voucher_signer", lambda *a, **k: calls.append(a))
    server = server_with(state())
    with pytest.raises(MalformedCredential) as err:
        server.handle(payload, challenge_id="a")
    assert problem(err.value) == ("malformed-credential", 402)
    assert calls == []  # SES-42: format checks happen before any ECDSA


def test_amb_05_expired_challenge_is_challenge_not_found() -> None:
    server = server_with(state())
    with pytest.raises(ChallengeNotFound) as err:
        server.handle(voucher(100), challenge_id="a", challenge_expires=NOW - 1)
    assert problem(err.value) == ("session/challenge-not-found", 402)


# --- charging, need-voucher, receipts ----------------------------------------------------------


def test_ses_27_insufficient_balance_carries_required_top_up() -> None:
    server = server_with(state(accepted_cumulative=100, spent=90))
    with pytest.raises(InsufficientBalance) as err:
        server.charge(CID, 25)
    assert problem(err.value) == ("session/insufficient-balance", 402)
    assert err.value.extensions["requiredTopUp"] == "15"
    assert server.charge(CID, 10).spent == 100  # exactly the available amount
    assert server.store.get(CID).spent == 100  # type: ignore[union-attr]  # persisted (SES-28)


def test_ses_31_need_voucher_event() -> None:
    server = server_with()
    s = state(accepted_cumulative=250_000, spent=250_000, deposit=1_000_000)
    assert server.need_voucher_event(s, 25).to_json() == {
        "channelId": CID,
        "requiredCumulative": "250025",
        "acceptedCumulative": "250000",
        "deposit": "1000000",
    }
    delta = server_with(terms=terms(min_voucher_delta=1000))
    assert delta.need_voucher_event(s, 25).required_cumulative == 251_000  # SES-23


def test_ses_33_amb_13_receipt_fields() -> None:
    server = server_with(state())
    result = server.handle(voucher(500), challenge_id="ch-7")
    after = server.charge(CID, 75)
    after = server.charge(CID, 25)
    receipt = server.receipt(after, challenge_id="ch-7", units=1)
    assert receipt == {
        "method": "tempo",
        "intent": "session",
        "status": "success",
        "timestamp": "2027-01-15T08:00:00.000Z",
        "reference": CID,
        "challengeId": "ch-7",
        "channelId": CID,
        "acceptedCumulative": "500",
        "spent": "100",  # cumulative, not this request's 25 (AMB-13)
        "units": 1,
        "balance": "999900",  # beyond SES-33 (CORE-41): deposit − spent, for people
    }
    assert result.receipt["spent"] == "0" and "txHash" not in result.receipt
    # `cost` is this request's, when the caller knows it (the meter does).
    priced = server.receipt(after, challenge_id="ch-7", units=1, cost=25)
    assert priced["cost"] == "25" and priced["spent"] == "100"


def test_amb_01_new_challenge_on_same_channel_continues_the_counter() -> None:
    server = server_with(state())
    server.handle(voucher(100), challenge_id="first")
    server.charge(CID, 60, challenge_id="first")
    s = server.handle(voucher(150), challenge_id="second").state
    assert (s.accepted_cumulative, s.spent, s.available) == (150, 60, 90)
    assert [v.challenge_id for v in server.store.vouchers(CID)] == ["first", "second"]


def test_ses_26_charge_never_exceeds_accepted() -> None:
    server = server_with(state())
    server.handle(voucher(30), challenge_id="a")
    served = 0
    for _ in range(10):
        try:
            server.charge(CID, 7)
            served += 7
        except InsufficientBalance:
            break
    s = server.store.get(CID)
    assert s is not None and s.spent == served == 28 and s.spent <= s.accepted_cumulative


def test_refresh_ttl_no_rpc_within_ttl_but_one_after() -> None:
    clock = [NOW]
    server = server_with(state(), now=lambda: clock[0], refresh_ttl=15)
    clock[0] = NOW + 14
    server.handle(voucher(10), challenge_id="a")  # NoChain would raise on any RPC
    clock[0] = NOW + 16
    with pytest.raises(AssertionError, match="unexpected RPC"):
        server.handle(voucher(20), challenge_id="a")


def test_route_mismatch_channel_of_other_escrow_is_not_found() -> None:
    from mpp.core.errors import ChannelNotFound

    server = server_with(dataclasses.replace(state(), escrow="0x" + "ef" * 20))
    with pytest.raises(ChannelNotFound):
        server.handle(voucher(10, escrow="0x" + "ef" * 20), challenge_id="a")
    assert ESCROW != "0x" + "ef" * 20
