"""The exact-capture functions on anvil (Tempo mode, T4) through Web3Chain and real 0x76 txs.

ESC-16 `settleCapture` and ESC-17 `closeCapture` take a voucher for `cumulativeAmount` and
capture only `captureAmount` of it: with prepay-ahead the payee holds a voucher above what it
delivered, and SES-36 forbids capturing more than was consumed. Balances are checked to the base
unit, fees included: the fresh accounts hold only pathUSD, so they pay fees in pathUSD, and each
fee is read from the receipt (`fee_paid`).
"""

from __future__ import annotations

from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from pytempo import Call

from mpp.chain import escrow as esc
from mpp.chain.devnet import Devnet
from mpp.chain.web3chain import PATH_USD
from mpp.core import errors
from mpp.session.ports import TxReceipt
from mpp.session.voucher import sign_voucher
from tests.chain.test_escrow_onchain import DEPOSIT, balance, chain_of, fee, salt


def events(devnet: Devnet, receipt: TxReceipt) -> list[esc.EscrowEvent]:
    decoded = (esc.decode_event(log) for log in receipt.logs if log["address"] == devnet.escrow)
    return [e for e in decoded if e is not None]


def nonce(devnet: Devnet, who: LocalAccount) -> int:
    return int(devnet.rpc("eth_getTransactionCount", [who.address, "pending"]), 16)


class Parties:
    """A fresh channel of DEPOSIT from `payer` to `payee`, and the balances before it opened."""

    def __init__(self, dn: Devnet, payer: LocalAccount, payee: LocalAccount) -> None:
        self.dn, self.payer, self.payee = dn, payer, payee
        self.payer_chain, self.payee_chain = chain_of(dn, payer), chain_of(dn, payee)
        self.start = {who: balance(dn, who) for who in (payer.address, payee.address, dn.escrow)}
        self.cid, r_open = self.payer_chain.open_channel(
            dn.escrow, token=PATH_USD, payee=payee.address, deposit=DEPOSIT, salt=salt()
        )
        self.payer_fees, self.payee_fees = fee(r_open, payer), 0

    def voucher(self, amount: int) -> str:
        return sign_voucher(
            self.payer, self.cid, amount, chain_id=self.dn.chain_id, escrow=self.dn.escrow
        )

    def settle_capture(self, cumulative: int, capture: int) -> TxReceipt:
        data = esc.encode_settle_capture(self.cid, cumulative, capture, self.voucher(cumulative))
        return self.payee_send(data)

    def close_capture(self, cumulative: int, capture: int, signature: str | None) -> TxReceipt:
        data = esc.encode_close_capture(self.cid, cumulative, capture, signature)
        return self.payee_send(data)

    def payee_send(self, data: bytes) -> TxReceipt:
        receipt = self.payee_chain.send_call(self.dn.escrow, data)
        assert receipt.status == 1
        self.payee_fees += fee(receipt, self.payee)
        return receipt

    def assert_balances(self, *, to_payee: int, refunded: int) -> None:
        """The payer is down DEPOSIT - refunded plus its fees; the payee up to_payee minus its."""
        dn = self.dn
        assert balance(dn, self.payer) == (
            self.start[self.payer.address] - DEPOSIT + refunded - self.payer_fees
        )
        assert (
            balance(dn, self.payee) == self.start[self.payee.address] + to_payee - self.payee_fees
        )
        assert balance(dn, dn.escrow) == self.start[dn.escrow] + DEPOSIT - to_payee - refunded


# --- ESC-16 settleCapture ------------------------------------------------------------------------


def test_esc_16_ses_36_settle_capture_takes_only_the_capture(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    """ESC-16, SES-36: a voucher for 600_000 (prepaid ahead), 250_000 delivered: only 250_000
    moves; the same voucher later captures more, and a v1 settle (ESC-07) pays the difference."""
    p = Parties(devnet_clean, payer, payee)
    receipt = p.settle_capture(600_000, 250_000)
    (settled,) = events(devnet_clean, receipt)
    assert settled.name == "Settled" and settled.channel_id == p.cid.lower()
    assert (settled.payer, settled.payee) == (payer.address.lower(), payee.address.lower())
    assert settled.args == {
        "cumulativeAmount": 600_000,
        "deltaPaid": 250_000,
        "newSettled": 250_000,
    }
    channel = p.payee_chain.read_channel(devnet_clean.escrow, p.cid)
    assert (channel.settled, channel.deposit, channel.finalized) == (250_000, DEPOSIT, False)
    p.assert_balances(to_payee=250_000, refunded=0)

    receipt = p.settle_capture(600_000, 400_000)  # the same voucher, more delivered
    assert events(devnet_clean, receipt)[0].args["deltaPaid"] == 150_000
    receipt = p.payee_send(esc.encode_settle(p.cid, 700_000, p.voucher(700_000)))
    assert events(devnet_clean, receipt)[0].args == {
        "cumulativeAmount": 700_000,
        "deltaPaid": 300_000,
        "newSettled": 700_000,
    }
    assert p.payee_chain.read_channel(devnet_clean.escrow, p.cid).settled == 700_000
    p.assert_balances(to_payee=700_000, refunded=0)


# --- ESC-17 closeCapture -------------------------------------------------------------------------


def test_esc_17_ses_36_close_capture_refunds_deposit_minus_capture(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    """ESC-17, SES-36: settled 200_000, a close voucher for 900_000, 350_000 delivered: the payee
    gets 150_000 more, the payer gets DEPOSIT - 350_000 back at once, the channel is final."""
    p = Parties(devnet_clean, payer, payee)
    p.settle_capture(300_000, 200_000)
    receipt = p.close_capture(900_000, 350_000, p.voucher(900_000))
    (closed,) = events(devnet_clean, receipt)
    assert closed.name == "ChannelClosed"
    assert closed.args == {"settledToPayee": 350_000, "refundedToPayer": DEPOSIT - 350_000}
    channel = p.payee_chain.read_channel(devnet_clean.escrow, p.cid)
    assert (channel.finalized, channel.settled, channel.deposit) == (True, 350_000, DEPOSIT)
    p.assert_balances(to_payee=350_000, refunded=DEPOSIT - 350_000)
    with pytest.raises(errors.ChannelFinalized):  # ESC-12: mapped like every finalized revert
        p.payee_chain.send_call(
            devnet_clean.escrow, esc.encode_settle_capture(p.cid, 900_000, 400_000, "0x")
        )


def test_esc_17_close_capture_at_settled_needs_no_signature(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    """ESC-17: capture == settled pays nothing new and the escrow checks no signature (None is
    encoded as empty bytes), like v1 close (ESC-10); refund = deposit - settled."""
    p = Parties(devnet_clean, payer, payee)
    p.settle_capture(500_000, 120_000)
    receipt = p.close_capture(0, 120_000, None)
    assert events(devnet_clean, receipt)[0].args == {
        "settledToPayee": 120_000,
        "refundedToPayer": DEPOSIT - 120_000,
    }
    p.assert_balances(to_payee=120_000, refunded=DEPOSIT - 120_000)


def test_esc_10_v1_close_below_a_capture_closes_at_settled(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    """ESC-10 unchanged by the capture functions: v1 close with an amount below settled (a
    partial capture) pays nothing new and refunds the rest, where closeCapture would revert."""
    p = Parties(devnet_clean, payer, payee)
    p.settle_capture(500_000, 300_000)
    receipt = p.payee_send(esc.encode_close(p.cid, 100_000, None))
    assert events(devnet_clean, receipt)[0].args == {
        "settledToPayee": 300_000,
        "refundedToPayer": DEPOSIT - 300_000,
    }
    p.assert_balances(to_payee=300_000, refunded=DEPOSIT - 300_000)


# --- InvalidCaptureAmount through Web3Chain (SES-40 mapping) ------------------------------------


def test_esc_16_17_invalid_capture_amount_reverts_before_sending(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    """InvalidCaptureAmount is not one of the mapped escrow errors: Web3Chain raises the generic
    TransactionReverted with the name as reason, from the simulation, so no fee is spent. Mined
    anyway, the same call reverts on chain (status 0)."""
    dn = devnet_clean
    p = Parties(dn, payer, payee)
    p.settle_capture(500_000, 300_000)
    cases = {
        "settleCapture above the voucher": esc.encode_settle_capture(
            p.cid, 500_000, 500_001, p.voucher(500_000)
        ),
        "closeCapture above the voucher": esc.encode_close_capture(
            p.cid, 500_000, 500_001, p.voucher(500_000)
        ),
        "closeCapture below settled": esc.encode_close_capture(
            p.cid, 500_000, 299_999, p.voucher(500_000)
        ),
    }
    for what, data in cases.items():
        payee_before, nonce_before = balance(dn, payee), nonce(dn, payee)
        with pytest.raises(errors.TransactionReverted) as info:
            p.payee_chain.send_call(dn.escrow, data)
        assert type(info.value) is errors.TransactionReverted, what
        assert info.value.extensions["reason"] == "InvalidCaptureAmount", what
        assert (balance(dn, payee), nonce(dn, payee)) == (payee_before, nonce_before), what

    mined = p.payee_chain.send_calls(
        (Call.create(to=dn.escrow, data=cases["closeCapture below settled"]),),
        gas_limit=1_000_000,
    )
    assert mined.status == 0
    p.payee_fees += fee(mined, payee)
    channel = p.payee_chain.read_channel(dn.escrow, p.cid)
    assert (channel.settled, channel.finalized) == (300_000, False)
    p.assert_balances(to_payee=300_000, refunded=0)


def test_esc_16_other_reverts_keep_their_mapping(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    """The v1 errors raised by the capture functions map as for settle/close (SES-40)."""
    dn = devnet_clean
    p = Parties(dn, payer, payee)
    domain: dict[str, Any] = {"chain_id": dn.chain_id, "escrow": dn.escrow}
    over = sign_voucher(payer, p.cid, DEPOSIT + 1, **domain)
    with pytest.raises(errors.AmountExceedsDeposit):
        p.payee_chain.send_call(dn.escrow, esc.encode_settle_capture(p.cid, DEPOSIT + 1, 1, over))
    wrong = sign_voucher(payer, p.cid, 300_000, **domain)  # signs the capture, not the voucher
    with pytest.raises(errors.InvalidSignature):
        p.payee_chain.send_call(dn.escrow, esc.encode_close_capture(p.cid, 500_000, 300_000, wrong))
    with pytest.raises(errors.TransactionReverted) as info:  # the payer cannot capture
        p.payer_chain.send_call(
            dn.escrow, esc.encode_settle_capture(p.cid, 500_000, 1, p.voucher(500_000))
        )
    assert info.value.extensions["reason"] == "NotPayee"
