"""Engine paths that touch the chain, on real anvil (Tempo mode) with our escrow.

Row IDs: SES-03 (feePayer honesty), SES-13..18 (open/topUp checks), SES-21 (pending close seen
through the TTL refresh), SES-36 + AMB-02 (close captures spent), SES-43 (unknown channel → 410),
AMB-09 (initial voucher "0"), AMB-11.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet
from mpp.core.errors import (
    ChannelFinalized,
    ChannelNotFound,
    InvalidSignature,
    VerificationFailed,
)
from mpp.session.tempo_tx import decode_tempo_tx
from mpp.session.voucher import sign_voucher
from tests.session._workers import Env, key, voucher


@pytest.fixture
def env(devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount, tmp_path: Path) -> Env:
    """The shared devnet (reverted after the test) with its funded payer and payee."""
    return Env(devnet_clean, "0x" + payer.key.hex(), "0x" + payee.key.hex(), tmp_path)


def _on_chain(env: Env, cid: str) -> bool:
    return bool(env.devnet.chain().read_channel(env.devnet.escrow, cid).exists)


def test_ses_16_amb_09_open_with_zero_initial_voucher(env: Env) -> None:
    server, payer = env.server(), env.client()
    payload = payer.open_payload(env.terms(), 10_000, expires=env.expires())
    cid = payload["channelId"]
    payload["cumulativeAmount"] = "0"
    payload["signature"] = sign_voucher(
        env.payer_key, cid, 0, chain_id=env.devnet.chain_id, escrow=env.devnet.escrow
    )
    result = server.handle(payload, challenge_id="c", challenge_expires=env.expires())
    assert (result.state.accepted_cumulative, result.state.deposit) == (0, 10_000)
    assert result.receipt["txHash"] == result.tx_hash
    # a retried open is a voucher on the stored channel: no second broadcast
    again = server.handle(payload, challenge_id="c2")
    assert again.tx_hash is None and again.state.accepted_cumulative == 0


@pytest.mark.parametrize("flaw", ["payee", "channel-id", "voucher", "expiry", "sponsor"])
def test_ses_14_open_rejected_before_broadcast(env: Env, flaw: str) -> None:
    server, payer = env.server(), env.client()
    expires = env.expires()
    route = env.terms()
    if flaw == "payee":
        route = env.terms(recipient=env.payer)
    payload = payer.open_payload(route, 10_000, expires=expires, fee_sponsored=None)
    if flaw == "channel-id":
        payload["channelId"] = "0x" + "12" * 32
    if flaw == "voucher":
        payload["signature"] = sign_voucher(
            key("mallory"),
            payload["channelId"],
            25,
            chain_id=env.devnet.chain_id,
            escrow=env.devnet.escrow,
        )
    if flaw == "expiry":
        valid_before = decode_tempo_tx(payload["transaction"]).valid_before
        assert valid_before is not None
        # the transaction outlives the challenge by more than the 5 s of clock skew tolerated
        expires = valid_before - 7
    if flaw == "sponsor":
        sponsored = env.client("other.db").open_payload(env.terms(fee_payer=True), 10_000)
        payload = sponsored  # a server with feePayer false does not co-sign (SES-03)
    error = InvalidSignature if flaw == "voucher" else VerificationFailed
    with pytest.raises(error):
        server.handle(payload, challenge_id="c", challenge_expires=expires)
    assert not _on_chain(env, payload["channelId"])
    assert server.store.get(payload["channelId"]) is None


def test_ses_43_unknown_channel_is_410_and_adopts_a_channel_opened_elsewhere(env: Env) -> None:
    server = env.server()
    with pytest.raises(ChannelNotFound) as err:
        server.handle(voucher(10, cid="0x" + "77" * 32), challenge_id="c")
    assert err.value.status == 410
    # a channel opened on chain without us (or by another server process) is read once
    payer_chain = env.devnet.chain(
        env.payer_key, fee_token="0x20c0000000000000000000000000000000000000"
    )
    cid, _ = payer_chain.open_channel(
        env.devnet.escrow, token=env.terms().currency, payee=env.payee, deposit=5_000
    )
    payload = voucher(
        100, k=env.payer_key, cid=cid, escrow=env.devnet.escrow, chain_id=env.devnet.chain_id
    )
    assert server.handle(payload, challenge_id="c").state.accepted_cumulative == 100


def test_ses_18_21_pending_close_then_topup_cancels_it(env: Env) -> None:
    server, payer = env.server(refresh_ttl=15), env.client()
    opened = server.handle(
        payer.open_payload(env.terms(), 1_000, expires=env.expires()), challenge_id="c"
    )
    cid = opened.state.channel_id
    payer.record_receipt(opened.receipt)
    env.devnet.chain(env.payer_key, fee_token=env.terms().currency).request_close(
        env.devnet.escrow, cid
    )
    # within the TTL the server has not looked; once it has, vouchers are refused (AMB-11)
    assert (
        server.handle(payer.voucher_payload(cid, 50), challenge_id="c").state.accepted_cumulative
        == 50
    )
    env.clock[0] += 16
    with pytest.raises(ChannelFinalized, match="close requested"):
        server.handle(payer.voucher_payload(cid, 75), challenge_id="c")
    with pytest.raises(VerificationFailed):  # topUp must match additionalDeposit exactly
        bad = payer.topup_payload(cid, 500, expires=env.expires())
        bad["additionalDeposit"] = "499"
        server.handle(bad, challenge_id="c", challenge_expires=env.expires())
    topped = server.handle(
        payer.topup_payload(cid, 500, expires=env.expires()),
        challenge_id="c",
        challenge_expires=env.expires(),
    )
    assert (topped.state.deposit, topped.state.close_requested_at) == (1_500, 0)
    assert topped.state.available == 50  # AMB-08: the deposit is only the voucher ceiling
    payer.confirm_topup(cid, 500)
    assert (
        server.handle(payer.voucher_payload(cid, 1_200), challenge_id="c").state.accepted_cumulative
        == 1_200
    )


def test_amb_02_short_close_captures_exactly_spent(env: Env) -> None:
    """A close below `spent` (the client missed the last receipt; the TypeScript client's early
    stop) still closes the channel: the payee captures exactly `spent` with the stored highest
    voucher and the payer gets the rest (our decision on AMB-02)."""
    server, payer = env.server(), env.client()
    opened = server.handle(
        payer.open_payload(env.terms(), 10_000, expires=env.expires()), challenge_id="c"
    )
    cid = opened.state.channel_id
    server.handle(payer.voucher_payload(cid, 4_000), challenge_id="c")
    server.charge(cid, 1_234)
    payer_before = env.balance(env.payer)
    closed = server.handle(payer.close_payload(cid, spent=1_000), challenge_id="c")
    onchain = env.devnet.chain().read_channel(env.devnet.escrow, cid)
    assert onchain.finalized and onchain.settled == 1_234
    assert env.balance(env.payer) - payer_before == 10_000 - 1_234
    assert closed.receipt["txHash"] == closed.tx_hash and closed.state.finalized
    assert closed.receipt["spent"] == "1234"
    late = voucher(
        4_001, k=env.payer_key, cid=cid, escrow=env.devnet.escrow, chain_id=env.devnet.chain_id
    )
    with pytest.raises(ChannelFinalized):  # SES-37: terminal
        server.handle(late, challenge_id="c")


def test_ses_36_close_above_spent_captures_exactly_spent(env: Env) -> None:
    server, payer = env.server(), env.client()
    cid = server.handle(
        payer.open_payload(env.terms(), 10_000, expires=env.expires()), challenge_id="c"
    ).state.channel_id
    server.handle(payer.voucher_payload(cid, 600), challenge_id="c")
    server.charge(cid, 600)
    server.handle(payer.voucher_payload(cid, 900), challenge_id="c")
    # the client closes at acceptedCumulative (what the TypeScript client may do)
    close = payer.close_payload(cid, spent=900)
    server.handle(close, challenge_id="c")
    assert env.devnet.chain().read_channel(env.devnet.escrow, cid).settled == 600


def test_ses_35_close_reverting_on_chain_surfaces_a_typed_error(env: Env) -> None:
    """The payer withdrew after the grace period while the server's TTL had not expired: the
    close's simulation reverts ChannelFinalized (410, not a raw selector) and the row ends up
    finalized from the chain's word."""
    server, payer = env.server(refresh_ttl=10**6), env.client()
    cid = server.handle(
        payer.open_payload(env.terms(), 10_000, expires=env.expires()), challenge_id="c"
    ).state.channel_id
    server.handle(payer.voucher_payload(cid, 500), challenge_id="c")
    server.charge(cid, 300)
    payer_chain = env.devnet.chain(env.payer_key, fee_token=env.terms().currency)
    payer_chain.request_close(env.devnet.escrow, cid)
    env.devnet.increase_time(900)
    payer_chain.withdraw(env.devnet.escrow, cid)
    with pytest.raises(ChannelFinalized) as err:
        server.handle(payer.close_payload(cid, spent=300), challenge_id="c")
    assert err.value.status == 410
    state = server.store.get(cid)
    assert state is not None and state.finalized and state.settled == 0
