"""`mpp channel ...`: open, top up, inspect, settle, close, request-close and withdraw channels.

Roles: `open`, `topup`, `request-close` and `withdraw` act as the payer (key from MPP_PAYER_KEY
or --keystore) and keep the payer's local records file (--records, MPP_PAYER_RECORDS, default
~/.mpp/payer.db) in step, so `mpp chat` reuses a channel opened here; `settle` and `close` act
as the payee (MPP_PAYEE_KEY), see mpp.cli._channel_payee; `status` and `list` only read
(mpp.cli._channel_view).

Shapes of the payer commands (amounts are decimal strings of base units):
- open {"channelId", "txHash", "escrowContract", "chainId", "payer", "payee", "token",
  "deposit", "salt", "fee"}
- topup {"channelId", "txHash", "added", "deposit", "fee"}
- request-close {"channelId", "txHash", "closeRequestedAt", "withdrawableAt", "fee"}
- withdraw {"channelId", "txHash", "refund", "fee"}
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from typing import Any

from mpp.chain.web3chain import PATH_USD, Web3Chain
from mpp.cli._channel_payee import _fee, run_close, run_settle
from mpp.cli._channel_view import open_records, read_existing, run_list, run_status
from mpp.cli._common import (
    CliError,
    add_chain_flags,
    add_key_flags,
    add_output_flags,
    address_arg,
    amount_arg,
    channel_id_arg,
    connect,
    emit,
    escrow_of,
    format_amount,
    iso,
    load_key,
    step,
    usage_error,
)
from mpp.session.payer_model import PayerChannel
from mpp.session.ports import OnChainChannel
from mpp.session.tempo_tx import ZERO_ADDRESS

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "channel", help="open, top up, inspect, settle and close payment channels"
    )
    sub = parser.add_subparsers(dest="channel_command", metavar="ACTION", required=True)

    def add(name: str, help: str, handler: Any, role: str | None) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
        add_output_flags(p)
        add_chain_flags(p)
        if role is not None:
            add_key_flags(p, role)
        p.set_defaults(handler=handler)
        return p

    def records_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--records", help="payer records file (MPP_PAYER_RECORDS)")

    p = add("open", "open a channel as the payer (approve + open, self-paid)", run_open, "payer")
    p.add_argument("--payee", required=True, help="payee (recipient) address")
    p.add_argument("--deposit", required=True, help="base units, or e.g. 5usd")
    p.add_argument("--token", default=PATH_USD, help="TIP-20 token (pathUSD)")
    records_flag(p)

    p = add("topup", "add to a channel's deposit as the payer", run_topup, "payer")
    p.add_argument("channel_id")
    p.add_argument("amount", help="base units, or e.g. 5usd")
    records_flag(p)

    p = add("status", "show a channel as the chain (and a store) has it", run_status, None)
    p.add_argument("channel_id")
    p.add_argument("--store", help="server store DSN (adds the server's accounting)")
    records_flag(p)

    p = add("list", "list channels of a server store or of the payer's records", run_list, None)
    p.add_argument("--store", help="server store DSN (else the payer's records)")
    records_flag(p)

    for name, handler, what in (
        ("settle", run_settle, "settle the highest voucher as the payee"),
        ("close", run_close, "close cooperatively as the payee (captures spent, refunds rest)"),
    ):
        p = add(name, what, handler, "payee")
        p.add_argument("channel_id")
        p.add_argument("--store", help="server store DSN: use its highest voucher")
        p.add_argument("--amount", help="explicit voucher amount (base units)")
        p.add_argument("--signature", help="explicit voucher signature (0x...)")

    p = add("request-close", "start a forced close as the payer", run_request_close, "payer")
    p.add_argument("channel_id")
    records_flag(p)
    p = add("withdraw", "withdraw the rest after the grace period", run_withdraw, "payer")
    p.add_argument("channel_id")
    records_flag(p)


# --- payer side -----------------------------------------------------------------------------


def _payer_chain(args: argparse.Namespace) -> tuple[Web3Chain, str]:
    chain = connect(args, load_key(args))
    return chain, escrow_of(args, chain)


def _require_funds(chain: Web3Chain, token: str, amount: int) -> None:
    assert chain.address is not None
    balance = chain.balance_of(token, chain.address)
    if balance < amount:
        raise CliError(
            f"insufficient balance: {chain.address} holds {format_amount(balance, token)}, "
            f"needs {format_amount(amount, token)}"
        )


def _own_channel(
    chain: Web3Chain, escrow: str, cid: str, args: argparse.Namespace | None = None
) -> OnChainChannel:
    onchain = read_existing(chain, escrow, cid)
    if onchain.payer != chain.address:
        raise usage_error(f"this key is not the payer of channel {cid} ({onchain.payer})")
    if onchain.finalized:
        if args is not None:
            _update_record(args, cid, status="closed", settled=onchain.settled)
        # Our escrow keeps the record of a closed channel: say where the money went.
        refund = onchain.deposit - onchain.settled
        raise CliError(
            f"channel {cid} is already closed: {format_amount(onchain.settled)} went to the "
            f"payee and {format_amount(refund)} back to the payer"
        )
    return onchain


def _update_record(args: argparse.Namespace, cid: str, **changes: Any) -> None:
    records = open_records(args, create=False)
    if records is None:
        return
    try:
        if records.get(cid) is not None:
            records.update(cid, lambda r: dataclasses.replace(r, **changes))
    finally:
        records.close()


def run_open(args: argparse.Namespace) -> int:
    payee = address_arg(args.payee, "--payee")
    token = address_arg(args.token, "--token")
    deposit = amount_arg(args.deposit, "--deposit")
    if deposit <= 0:
        raise usage_error("--deposit must be positive")
    chain, escrow = _payer_chain(args)
    assert chain.address is not None
    if payee == chain.address:
        raise usage_error("--payee is the payer's own address")
    _require_funds(chain, token, deposit)
    records = open_records(args)
    assert records is not None
    salt = "0x" + os.urandom(32).hex()
    try:
        with step(args, "opening channel"):
            cid, receipt = chain.open_channel(
                escrow, token=token, payee=payee, deposit=deposit, salt=salt
            )
        records.put(
            PayerChannel(
                channel_id=cid,
                payer=chain.address,
                payee=payee,
                token=token,
                escrow=escrow,
                chain_id=chain.chain_id,
                authorized_signer=ZERO_ADDRESS,
                salt=salt,
                deposit=deposit,
                cumulative=0,
                signature=None,
                updated_at=int(time.time()),
            )
        )
    finally:
        records.close()
    data = {
        "channelId": cid,
        "txHash": receipt.tx_hash,
        "escrowContract": escrow,
        "chainId": chain.chain_id,
        "payer": chain.address,
        "payee": payee,
        "token": token,
        "deposit": str(deposit),
        "salt": salt,
        "fee": _fee(receipt),
    }
    emit(
        args,
        data,
        lambda: (
            f"Opened {cid}\n  deposit {format_amount(deposit, token)} to {payee}\n"
            f"  tx {receipt.tx_hash}"
        ),
    )
    return 0


def run_topup(args: argparse.Namespace) -> int:
    cid = channel_id_arg(args.channel_id)
    amount = amount_arg(args.amount, "amount")
    if amount <= 0:
        raise usage_error("amount must be positive")
    chain, escrow = _payer_chain(args)
    onchain = _own_channel(chain, escrow, cid)
    _require_funds(chain, onchain.token, amount)
    with step(args, "topping up"):
        receipt = chain.top_up(escrow, cid, amount, token=onchain.token)
    deposit = chain.read_channel(escrow, cid).deposit
    _update_record(args, cid, deposit=deposit)
    data = {
        "channelId": cid,
        "txHash": receipt.tx_hash,
        "added": str(amount),
        "deposit": str(deposit),
        "fee": _fee(receipt),
    }
    emit(
        args,
        data,
        lambda: (
            f"Topped up {cid} by {format_amount(amount)}: deposit "
            f"{format_amount(deposit)}\n  tx {receipt.tx_hash}"
        ),
    )
    return 0


def run_request_close(args: argparse.Namespace) -> int:
    cid = channel_id_arg(args.channel_id)
    chain, escrow = _payer_chain(args)
    onchain = _own_channel(chain, escrow, cid, args)
    if onchain.close_requested_at:
        raise CliError(f"close already requested at {iso(onchain.close_requested_at)}")
    with step(args, "requesting close"):
        receipt = chain.request_close(escrow, cid)
    requested = chain.read_channel(escrow, cid).close_requested_at
    ready = requested + chain.close_grace_period(escrow)
    _update_record(args, cid, status="closing")
    data = {
        "channelId": cid,
        "txHash": receipt.tx_hash,
        "closeRequestedAt": requested,
        "withdrawableAt": ready,
        "fee": _fee(receipt),
    }
    emit(
        args,
        data,
        lambda: f"Close requested for {cid}; withdraw from {iso(ready)}\n  tx {receipt.tx_hash}",
    )
    return 0


def run_withdraw(args: argparse.Namespace) -> int:
    cid = channel_id_arg(args.channel_id)
    chain, escrow = _payer_chain(args)
    onchain = _own_channel(chain, escrow, cid, args)
    if not onchain.close_requested_at:
        raise CliError("no close request on this channel: run `mpp channel request-close` first")
    ready = onchain.close_requested_at + chain.close_grace_period(escrow)
    now = chain.latest_timestamp()
    if now < ready:
        raise CliError(f"grace period not over: withdraw from {iso(ready)} ({ready - now} s left)")
    with step(args, "withdrawing"):
        receipt = chain.withdraw(escrow, cid)
    refund = onchain.deposit - onchain.settled
    _update_record(args, cid, status="closed")
    data = {
        "channelId": cid,
        "txHash": receipt.tx_hash,
        "refund": str(refund),
        "fee": _fee(receipt),
    }
    emit(
        args,
        data,
        lambda: f"Withdrew {format_amount(refund)} from {cid}\n  tx {receipt.tx_hash}",
    )
    return 0
