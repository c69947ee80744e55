"""Full session lifecycles on anvil (Tempo mode): money accounted to the base unit.

Row IDs: SES-13..18 (open, topUp; sponsored and self-paid), SES-20/27 (vouchers, charges),
SES-33 (receipts), SES-35 (settle), SES-36 + AMB-02 (cooperative close captures exactly spent),
SES-21/38 (forced close: vouchers refused at once, the server closes within the grace period).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet
from mpp.core.errors import ChannelFinalized
from mpp.session.settlement import SettlementPolicy
from tests.session._workers import TOKEN, Env, fee_of

GRACE = 900


@pytest.fixture
def env(devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount, tmp_path: Path) -> Env:
    """The shared devnet (reverted after the test) with its funded payer and payee."""
    return Env(devnet_clean, "0x" + payer.key.hex(), "0x" + payee.key.hex(), tmp_path)


@pytest.mark.parametrize("sponsored", [False, True], ids=["self-paid", "sponsored"])
def test_ses_full_lifecycle_balances_exact(env: Env, sponsored: bool) -> None:
    server = env.server(fee_payer_key=env.payee_key if sponsored else None)
    route = server.terms
    payer = env.client()
    payer_before, payee_before = env.balance(env.payer), env.balance(env.payee)
    txs: list[str] = []

    opened = server.handle(
        payer.open_payload(route, 2_000, expires=env.expires()),
        challenge_id="ch-open",
        challenge_expires=env.expires(),
    )
    cid = opened.state.channel_id
    txs.append(str(opened.tx_hash))
    payer.record_receipt(opened.receipt)
    assert opened.receipt["acceptedCumulative"] == "25" and opened.receipt["spent"] == "0"

    spent = 0
    for i in range(1, 31):  # 30 metered requests of 50 units each, one voucher ahead
        v = server.handle(payer.voucher_payload(cid, 50 * i), challenge_id=f"ch-{i}")
        payer.record_receipt(v.receipt)
        state = server.charge(cid, 50, challenge_id=f"ch-{i}")
        spent += 50
        payer.record_receipt(server.receipt(state, challenge_id=f"ch-{i}", units=50))
    assert state.spent == spent == 1_500

    topped = server.handle(
        payer.topup_payload(cid, 3_000, expires=env.expires(), fee_sponsored=sponsored),
        challenge_id="ch-top",
        challenge_expires=env.expires(),
    )
    txs.append(str(topped.tx_hash))
    payer.confirm_topup(cid, 3_000)
    assert topped.state.deposit == 5_000

    settle_tx = server.settle(cid)  # the highest voucher (1500) goes on chain
    assert settle_tx is not None
    txs.append(settle_tx)
    for i in range(31, 71):  # beyond the initial deposit
        server.handle(payer.voucher_payload(cid, 50 * i), challenge_id=f"ch-{i}")
        state = server.charge(cid, 45, challenge_id=f"ch-{i}")
        spent += 45
    payer.record_receipt(server.receipt(state, challenge_id="ch-last"))
    assert (state.spent, state.accepted_cumulative, state.settled) == (spent, 3_500, 1_500)

    closed = server.handle(payer.close_payload(cid), challenge_id="ch-close")
    txs.append(str(closed.tx_hash))
    payer.mark_closed(cid)
    onchain = env.devnet.chain().read_channel(env.devnet.escrow, cid)
    assert onchain.finalized and onchain.settled == spent == 3_300
    assert closed.receipt["spent"] == str(spent) and closed.receipt["txHash"] == closed.tx_hash

    payer_fees = sum(fee_of(env.devnet, tx, env.payer) for tx in txs)
    payee_fees = sum(fee_of(env.devnet, tx, env.payee) for tx in txs)
    if sponsored:
        assert payer_fees == 0 and payee_fees > 0
    assert env.balance(env.payee) - payee_before == spent - payee_fees
    assert payer_before - env.balance(env.payer) == spent + payer_fees
    assert env.balance(env.devnet.escrow) == 0  # conservation: the escrow holds nothing back


def test_ses_21_38_forced_close_server_closes_within_grace(env: Env) -> None:
    """The payer requests a close: vouchers are refused at once (SES-21, 410) and the server
    closes the channel within the grace period, capturing exactly `spent` (not the prepaid
    voucher) and refunding the rest; the payer's withdraw then finds nothing left (SES-38)."""
    server = env.server(settlement=SettlementPolicy(threshold=10**9))
    payer = env.client()
    opened = server.handle(
        payer.open_payload(server.terms, 4_000, expires=env.expires()),
        challenge_id="c",
        challenge_expires=env.expires(),
    )
    cid = opened.state.channel_id
    for i in range(1, 11):
        server.handle(payer.voucher_payload(cid, 200 * i), challenge_id="c")
        server.charge(cid, 150)
    assert server.maybe_settle() == {}  # nothing due under this policy yet

    payer_chain = env.devnet.chain(env.payer_key, fee_token=TOKEN)
    payer_chain.request_close(env.devnet.escrow, cid)
    server.refresh(cid)  # what the chain watcher does on CloseRequested
    with pytest.raises(ChannelFinalized, match="close requested") as err:
        server.handle(payer.voucher_payload(cid, 2_200), challenge_id="c")
    assert err.value.status == 410

    env.devnet.increase_time(GRACE - 60)  # still inside the grace period
    payer_before = env.balance(env.payer)
    closed = server.maybe_settle()
    assert list(closed) == [cid]
    onchain = env.devnet.chain().read_channel(env.devnet.escrow, cid)
    assert onchain.finalized and onchain.settled == 1_500
    assert env.balance(env.payer) - payer_before == 4_000 - 1_500  # refunded at once

    env.devnet.increase_time(60)
    with pytest.raises(ChannelFinalized):
        payer_chain.withdraw(env.devnet.escrow, cid)
    final = server.refresh(cid)
    assert final.finalized and final.settled == 1_500
