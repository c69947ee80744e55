"""The escrow on anvil (Tempo mode, T4) driven through Web3Chain and real 0x76 transactions.

Balances are checked to the base unit, fees included: our fresh accounts hold only pathUSD,
so they pay fees in pathUSD, and each fee is read from the `Transfer(payer -> 0xfeEC...)` log.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from pytempo import Call

from mpp.chain import escrow as esc
from mpp.chain.devnet import Devnet
from mpp.chain.web3chain import PATH_USD, FeePayment, Web3Chain, fee_paid
from mpp.core import errors
from mpp.session.ports import TxReceipt
from mpp.session.tempo_tx import (
    EXPIRING_NONCE_KEY,
    ZERO_ADDRESS,
    build_tempo_tx,
    check_open_tx,
    check_topup_tx,
    cosign_as_fee_payer,
    decode_tempo_tx,
    fee_payer_of,
    open_calls,
    sign_tempo_tx,
    topup_calls,
)
from mpp.session.voucher import SECP256K1_N, channel_id, sign_voucher, voucher_digest

DEPOSIT = 1_000_000  # 1 pathUSD


def salt() -> str:
    return "0x" + os.urandom(32).hex()


def fee(receipt: TxReceipt, who: LocalAccount) -> int:
    paid = fee_paid(receipt)
    assert isinstance(paid, FeePayment)
    assert paid.payer == who.address.lower() and paid.token == PATH_USD
    return paid.amount


def balance(devnet: Devnet, who: LocalAccount | str) -> int:
    address = who if isinstance(who, str) else who.address
    return devnet.chain().balance_of(PATH_USD, address)


def chain_of(devnet: Devnet, who: LocalAccount) -> Web3Chain:
    return devnet.chain(who, fee_token=PATH_USD)


def open_raw(
    devnet: Devnet, payer: LocalAccount, payee: LocalAccount, *, sponsored: bool, s: str
) -> bytes:
    """What the official client sends: expiring nonce, valid_before ~25 s, feeToken = currency."""
    calls = open_calls(
        escrow=devnet.escrow, token=PATH_USD, payee=payee.address, deposit=DEPOSIT, salt=s
    )
    tx = build_tempo_tx(
        calls,
        chain_id=devnet.chain_id,
        gas_limit=3_000_000,
        max_fee_per_gas=2 * devnet.chain().base_fee(),
        nonce_key=EXPIRING_NONCE_KEY,
        nonce=0,
        valid_before=devnet.mine() + 25,
        fee_token=PATH_USD,
        awaiting_fee_payer=sponsored,
    )
    return sign_tempo_tx(tx, payer)


def malleate(signature: str) -> str:
    raw = bytes.fromhex(signature[2:])
    s = SECP256K1_N - int.from_bytes(raw[32:64], "big")
    return "0x" + (raw[:32] + s.to_bytes(32, "big") + bytes((55 - raw[64],))).hex()


# --- views (SES-06, SES-09) ----------------------------------------------------------------------


def test_ses_06_channel_id_matches_compute_channel_id(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    chain = chain_of(devnet_clean, payer)
    for signer in (ZERO_ADDRESS, payer.address.lower(), "0x" + "ab" * 20):
        s = salt()
        ours = channel_id(payer.address, payee.address, PATH_USD, s, signer, devnet_clean.escrow,
                          devnet_clean.chain_id)  # fmt: skip
        theirs = chain.compute_channel_id(devnet_clean.escrow, payer.address, payee.address,
                                          PATH_USD, s, signer)  # fmt: skip
        assert ours == theirs


def test_ses_09_voucher_digest_matches_get_voucher_digest(devnet_clean: Devnet) -> None:
    chain = devnet_clean.chain()
    for amount in (0, 1, 10**6, 2**128 - 1):
        cid = salt()
        ours = voucher_digest(
            cid, amount, chain_id=devnet_clean.chain_id, escrow=devnet_clean.escrow
        )
        assert chain.voucher_digest(devnet_clean.escrow, cid, amount) == ours


def test_esc_01_grace_period_and_unknown_channel(devnet_clean: Devnet) -> None:
    chain = devnet_clean.chain()
    assert chain.close_grace_period(devnet_clean.escrow) == 900
    unknown = chain.read_channel(devnet_clean.escrow, salt())
    assert not unknown.exists and unknown.deposit == 0


# --- opens as real 0x76 batches (SES-14) ---------------------------------------------------------


def test_ses_14_self_paid_open_batch(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    dn, s = devnet_clean, salt()
    raw = open_raw(dn, payer, payee, sponsored=False, s=s)
    opened = check_open_tx(decode_tempo_tx(raw), escrow=dn.escrow, token=PATH_USD,
                           payee=payee.address, chain_id=dn.chain_id)  # fmt: skip
    payer_before, escrow_before = balance(dn, payer), balance(dn, dn.escrow)
    receipt = dn.chain().send_raw_transaction(raw)
    assert receipt.status == 1
    assert balance(dn, payer) == payer_before - DEPOSIT - fee(receipt, payer)
    assert balance(dn, dn.escrow) == escrow_before + DEPOSIT
    channel = dn.chain().read_channel(dn.escrow, opened.channel_id)
    assert (channel.payer, channel.payee, channel.deposit) == (
        payer.address.lower(),
        payee.address.lower(),
        DEPOSIT,
    )
    events = [esc.decode_event(log) for log in receipt.logs if log["address"] == dn.escrow]
    assert [e.name for e in events if e] == ["ChannelOpened"]
    assert events[0] is not None and events[0].args["salt"] == s


def test_ses_03_14_open_sponsored_by_payee(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    """The payer signs awaiting a fee payer; the payee co-signs (0x78) and pays the fee."""
    dn = devnet_clean
    raw = open_raw(dn, payer, payee, sponsored=True, s=salt())
    decoded = decode_tempo_tx(raw)
    opened = check_open_tx(decoded, escrow=dn.escrow, token=PATH_USD, payee=payee.address,
                           chain_id=dn.chain_id, max_valid_before=decoded.valid_before)  # fmt: skip
    cosigned = cosign_as_fee_payer(decoded, payee, fee_token=PATH_USD)
    assert fee_payer_of(decode_tempo_tx(cosigned)) == payee.address.lower()
    payer_before, payee_before = balance(dn, payer), balance(dn, payee)
    receipt = dn.chain().send_raw_transaction(cosigned)
    assert receipt.status == 1
    assert balance(dn, payer) == payer_before - DEPOSIT  # not a unit of fee
    assert balance(dn, payee) == payee_before - fee(receipt, payee)
    assert dn.chain().read_channel(dn.escrow, opened.channel_id).deposit == DEPOSIT


def test_ses_14_unsponsored_placeholder_alone_is_refused_by_the_node(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    raw = open_raw(devnet_clean, payer, payee, sponsored=True, s=salt())
    with pytest.raises(errors.TransactionReverted):
        devnet_clean.chain().send_raw_transaction(raw, timeout=1.0)


# --- settle / topUp / close with balances (issue 2 item 7) ---------------------------------------


def test_esc_07_08_10_settle_topup_close_balances(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    dn = devnet_clean
    payer_chain, payee_chain = chain_of(dn, payer), chain_of(dn, payee)
    start = {who: balance(dn, who) for who in (payer.address, payee.address, dn.escrow)}
    cid, r_open = payer_chain.open_channel(dn.escrow, token=PATH_USD, payee=payee.address,
                                           deposit=DEPOSIT)  # fmt: skip
    domain: dict[str, Any] = {"chain_id": dn.chain_id, "escrow": dn.escrow}
    r_settle = payee_chain.settle(
        dn.escrow, cid, 300_000, sign_voucher(payer, cid, 300_000, **domain)
    )
    # SES-18: a topUp tx checked like the server does, then sent; it also cancels a pending close.
    r_request = payer_chain.request_close(dn.escrow, cid)
    calls = topup_calls(
        escrow=dn.escrow, token=PATH_USD, channel_id=cid, additional_deposit=500_000
    )
    raw = sign_tempo_tx(
        build_tempo_tx(calls, chain_id=dn.chain_id, gas_limit=3_000_000,
                       max_fee_per_gas=2 * dn.chain().base_fee(), nonce_key=EXPIRING_NONCE_KEY,
                       valid_before=dn.mine() + 25, fee_token=PATH_USD),
        payer,
    )  # fmt: skip
    check_topup_tx(decode_tempo_tx(raw), escrow=dn.escrow, token=PATH_USD, channel_id=cid,
                   additional_deposit=500_000, chain_id=dn.chain_id)  # fmt: skip
    r_topup = dn.chain().send_raw_transaction(raw)
    names = [e.name for e in map(esc.decode_event, r_topup.logs) if e]
    assert sorted(names) == ["CloseRequestCancelled", "TopUp"]
    channel = payee_chain.read_channel(dn.escrow, cid)
    assert (channel.deposit, channel.settled, channel.close_requested_at) == (1_500_000, 300_000, 0)
    r_close = payee_chain.close(
        dn.escrow, cid, 700_000, sign_voucher(payer, cid, 700_000, **domain)
    )
    closed = [e for e in map(esc.decode_event, r_close.logs) if e and e.name == "ChannelClosed"]
    assert closed[0].args == {"settledToPayee": 700_000, "refundedToPayer": 800_000}
    assert payee_chain.read_channel(dn.escrow, cid).finalized
    payer_fees = fee(r_open, payer) + fee(r_request, payer) + fee(r_topup, payer)
    payee_fees = fee(r_settle, payee) + fee(r_close, payee)
    # deposit 1.0 + topUp 0.5 in, refund 0.8 back: the payer is down 0.7 plus its fees.
    assert balance(dn, payer) == start[payer.address] - 700_000 - payer_fees
    assert balance(dn, payee) == start[payee.address] + 700_000 - payee_fees
    assert balance(dn, dn.escrow) == start[dn.escrow]


def test_ses_38_withdraw_refused_at_899_allowed_at_900(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    dn = devnet_clean
    payer_chain, payee_chain = chain_of(dn, payer), chain_of(dn, payee)
    cid, _ = payer_chain.open_channel(
        dn.escrow, token=PATH_USD, payee=payee.address, deposit=DEPOSIT
    )
    sig = sign_voucher(payer, cid, 200_000, chain_id=dn.chain_id, escrow=dn.escrow)
    payee_chain.settle(dn.escrow, cid, 200_000, sig)
    payer_chain.request_close(dn.escrow, cid)
    requested_at = payer_chain.read_channel(dn.escrow, cid).close_requested_at
    assert requested_at > 0
    withdraw = (Call.create(to=dn.escrow, data=esc.encode_withdraw(cid)),)
    # At +899 s the escrow refuses, both in simulation and mined.
    dn.set_next_block_timestamp(requested_at + 899)
    dn.mine()
    with pytest.raises(errors.TransactionReverted) as info:
        payer_chain.withdraw(dn.escrow, cid)
    assert info.value.extensions["reason"] == "CloseNotReady"
    dn.set_next_block_timestamp(requested_at + 899)
    assert payer_chain.send_calls(withdraw, gas_limit=1_000_000).status == 0
    # The payee may still settle during the grace period (ESC-10).
    sig = sign_voucher(payer, cid, 250_000, chain_id=dn.chain_id, escrow=dn.escrow)
    dn.set_next_block_timestamp(requested_at + 899)
    payee_chain.settle(dn.escrow, cid, 250_000, sig)
    # Exactly at +900 s it is allowed.
    before = balance(dn, payer)
    dn.set_next_block_timestamp(requested_at + 900)
    receipt = payer_chain.send_calls(withdraw, gas_limit=1_000_000)
    assert receipt.status == 1
    assert balance(dn, payer) == before + DEPOSIT - 250_000 - fee(receipt, payer)
    names = [e.name for e in map(esc.decode_event, receipt.logs) if e]
    assert names == ["ChannelExpired", "ChannelClosed"]
    assert payer_chain.read_channel(dn.escrow, cid).finalized


def test_ses_38_increase_time_helper_reaches_the_grace_end(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    dn = devnet_clean
    payer_chain = chain_of(dn, payer)
    cid, _ = payer_chain.open_channel(dn.escrow, token=PATH_USD, payee=payee.address, deposit=10)
    payer_chain.request_close(dn.escrow, cid)
    requested_at = payer_chain.read_channel(dn.escrow, cid).close_requested_at
    assert dn.increase_time(900) >= requested_at + 900
    assert payer_chain.withdraw(dn.escrow, cid).status == 1


# --- signatures on chain (SES-11, SES-08, A-4) ---------------------------------------------------


def test_ses_11_high_s_twin_reverts_invalid_signature_on_chain(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    dn = devnet_clean
    payer_chain, payee_chain = chain_of(dn, payer), chain_of(dn, payee)
    cid, _ = payer_chain.open_channel(
        dn.escrow, token=PATH_USD, payee=payee.address, deposit=DEPOSIT
    )
    good = sign_voucher(payer, cid, 100, chain_id=dn.chain_id, escrow=dn.escrow)
    twin = malleate(good)
    with pytest.raises(errors.InvalidSignature):
        payee_chain.settle(dn.escrow, cid, 100, twin)
    mined = payee_chain.send_calls(
        (Call.create(to=dn.escrow, data=esc.encode_settle(cid, 100, twin)),), gas_limit=1_000_000
    )
    assert mined.status == 0
    bad_v = good[:-2] + "01"
    with pytest.raises(errors.InvalidSignature):
        payee_chain.settle(dn.escrow, cid, 100, bad_v)
    assert payee_chain.settle(dn.escrow, cid, 100, good).status == 1


def test_ses_08_voucher_for_another_escrow_or_domain_reverts(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    dn = devnet_clean
    payer_chain, payee_chain = chain_of(dn, payer), chain_of(dn, payee)
    cid, _ = payer_chain.open_channel(
        dn.escrow, token=PATH_USD, payee=payee.address, deposit=DEPOSIT
    )
    other = dn.deploy_escrow()
    assert other != dn.escrow
    replayed = sign_voucher(payer, cid, 100, chain_id=dn.chain_id, escrow=other)
    with pytest.raises(errors.InvalidSignature):
        payee_chain.settle(dn.escrow, cid, 100, replayed)
    wrong_name = sign_voucher(payer, cid, 100, chain_id=dn.chain_id, escrow=dn.escrow,
                              name="EVM Payment Channel")  # fmt: skip
    with pytest.raises(errors.InvalidSignature):
        payee_chain.settle(dn.escrow, cid, 100, wrong_name)
    wrong_chain = sign_voucher(payer, cid, 100, chain_id=dn.chain_id + 1, escrow=dn.escrow)
    with pytest.raises(errors.InvalidSignature):
        payee_chain.settle(dn.escrow, cid, 100, wrong_chain)


def test_ses_40_revert_mapping_on_chain(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount
) -> None:
    dn = devnet_clean
    payer_chain, payee_chain = chain_of(dn, payer), chain_of(dn, payee)
    domain: dict[str, Any] = {"chain_id": dn.chain_id, "escrow": dn.escrow}
    with pytest.raises(errors.ChannelNotFound):
        payee_chain.settle(dn.escrow, salt(), 1, "0x" + "11" * 65)
    cid, _ = payer_chain.open_channel(dn.escrow, token=PATH_USD, payee=payee.address, deposit=1_000)
    with pytest.raises(errors.AmountExceedsDeposit):
        payee_chain.settle(dn.escrow, cid, 1_001, sign_voucher(payer, cid, 1_001, **domain))
    with pytest.raises(errors.TransactionReverted) as info:  # NotPayee -> generic (SES-40)
        payer_chain.settle(dn.escrow, cid, 10, sign_voucher(payer, cid, 10, **domain))
    assert info.value.extensions["reason"] == "NotPayee"
    payee_chain.close(dn.escrow, cid, 10, sign_voucher(payer, cid, 10, **domain))
    with pytest.raises(errors.ChannelFinalized):
        payee_chain.settle(dn.escrow, cid, 20, sign_voucher(payer, cid, 20, **domain))
    with pytest.raises(errors.ChannelFinalized):
        payer_chain.request_close(dn.escrow, cid)


# --- the Chain port's failure modes --------------------------------------------------------------


def test_chain_unavailable_on_closed_port() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(errors.ChainUnavailable):
        Web3Chain(f"http://127.0.0.1:{port}")
    chain = Web3Chain(f"http://127.0.0.1:{port}", chain_id=31337)
    with pytest.raises(errors.ChainUnavailable):
        chain.read_channel("0x" + "11" * 20, salt())
    with pytest.raises(errors.ChainUnavailable):
        chain.send_raw_transaction(b"\x76\xc0")


def test_stale_nonce_is_dropped_or_refused_never_hangs(
    devnet_clean: Devnet, payer: LocalAccount
) -> None:
    dn = devnet_clean
    chain = chain_of(dn, payer)
    chain.transfer(PATH_USD, dn.escrow, 1)  # uses protocol nonce 0
    call = Call.create(to=PATH_USD, data=esc.encode_transfer(dn.escrow, 1))
    fee_cap = 2 * chain.base_fee()
    tx = build_tempo_tx((call,), chain_id=dn.chain_id, gas_limit=1_000_000,
                        max_fee_per_gas=fee_cap, nonce=0, fee_token=PATH_USD)  # fmt: skip
    with pytest.raises(errors.TransactionReverted):
        chain.send_raw_transaction(sign_tempo_tx(tx, payer), timeout=1.0)
