"""`mpp channel settle` and `mpp channel close`: the payee puts a voucher on chain (SES-35/36).

With `--store DSN` the server's highest voucher is presented and exactly what the store says was
delivered (`spent`) is captured, the way the running server does it (mpp.session.settlement:
ESC-16/17 capture calls, SES-36); a close refunds the rest. Units a running server has reserved
for a stream in flight count as delivered here: prefer letting the server settle. Without a
store, `--amount/--signature` give the voucher explicitly and the whole amount is captured; a
close without one captures what is already settled and refunds the rest (ESC-10).

Shapes: settle {"channelId", "txHash" (null: nothing to settle), "settledBefore", "settled",
"fee"}; close {"channelId", "txHash", "captured", "refund", "fee"}. Amounts are decimal strings.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from mpp.chain.web3chain import Web3Chain, fee_paid
from mpp.cli._channel_view import open_server_store, read_existing
from mpp.cli._common import (
    EXIT_USAGE,
    CliError,
    amount_arg,
    channel_id_arg,
    connect,
    emit,
    escrow_of,
    format_amount,
    load_key,
    step,
    usage_error,
)
from mpp.session.ports import ChannelState, OnChainChannel, Store, TxReceipt
from mpp.session.settlement import SettlementPolicy, Settler

__all__ = ["close_from_store", "run_close", "run_settle", "settler_for"]


def _explicit_voucher(args: argparse.Namespace) -> tuple[int, str] | None:
    if (args.amount is None) != (args.signature is None):
        raise usage_error("--amount and --signature go together")
    if args.amount is None:
        return None
    signature = str(args.signature).lower()
    if not signature.startswith("0x") or len(signature) not in (130, 132):
        raise usage_error("bad --signature (65- or 64-byte hex expected)")
    return amount_arg(args.amount, "--amount"), signature


def _payee_chain(
    args: argparse.Namespace, cid: str, store: Store | None
) -> tuple[Web3Chain, str, OnChainChannel, ChannelState | None]:
    state = store.get(cid) if store is not None else None
    if store is not None and state is None:
        raise usage_error(f"unknown channel {cid} in the store")
    chain = connect(args, load_key(args))
    escrow = escrow_of(args, chain, state.escrow if state else None)
    onchain = read_existing(chain, escrow, cid)
    if onchain.finalized:
        raise CliError(f"channel {cid} is already finalized")
    if onchain.payee != chain.address:
        raise usage_error(f"this key is not the payee of channel {cid} ({onchain.payee})")
    return chain, escrow, onchain, state


def _fee(receipt: TxReceipt) -> str | None:
    fee = fee_paid(receipt)
    return None if fee is None else str(fee.amount)


def settler_for(store: Store, chain: Web3Chain) -> Settler:
    """The server's settlement component, driven by hand (no policy)."""
    return Settler(store, chain, SettlementPolicy(), now=lambda: int(time.time()), tx_timeout=30)


def run_settle(args: argparse.Namespace) -> int:
    cid = channel_id_arg(args.channel_id)
    explicit = _explicit_voucher(args)
    if (explicit is None) == (args.store is None):
        raise usage_error("give either --store DSN or --amount and --signature")
    store = open_server_store(args.store) if args.store else None
    try:
        chain, escrow, onchain, _ = _payee_chain(args, cid, store)
        tx_hash, fee = None, None
        with step(args, "settling"):
            if store is not None:
                tx_hash = settler_for(store, chain).settle(cid)
            else:
                assert explicit is not None
                amount, signature = explicit
                if amount > onchain.settled:
                    receipt = chain.settle(escrow, cid, amount, signature)
                    tx_hash, fee = receipt.tx_hash, _fee(receipt)
        after = chain.read_channel(escrow, cid)
    finally:
        if store is not None:
            store.close()
    data: dict[str, Any] = {
        "channelId": cid,
        "txHash": tx_hash,
        "settledBefore": str(onchain.settled),
        "settled": str(after.settled),
        "fee": fee,
    }

    def human() -> str:
        if tx_hash is None:
            return f"Nothing to settle on {cid} (settled {format_amount(after.settled)})."
        gained = after.settled - onchain.settled
        return f"Settled {format_amount(gained)} on {cid}\n  tx {tx_hash}"

    emit(args, data, human)
    return 0


def close_from_store(store: Store, chain: Web3Chain, channel_id: str) -> tuple[str, int]:
    """Payee-initiated close with the store's vouchers; returns (tx hash, captured amount)."""
    if store.get(channel_id) is None:
        raise CliError(f"unknown channel {channel_id} in the store", EXIT_USAGE)
    final, tx_hash = settler_for(store, chain).close_stored(channel_id)
    return tx_hash, final.settled


def run_close(args: argparse.Namespace) -> int:
    cid = channel_id_arg(args.channel_id)
    explicit = _explicit_voucher(args)
    if explicit is not None and args.store is not None:
        raise usage_error("give --store DSN or --amount/--signature, not both")
    store = open_server_store(args.store) if args.store else None
    try:
        chain, escrow, onchain, _ = _payee_chain(args, cid, store)
        with step(args, "closing"):
            if store is not None:
                tx_hash, _ = close_from_store(store, chain, cid)
                receipt = None
            else:
                amount, signature = explicit or (onchain.settled, "0x")
                receipt = chain.close(escrow, cid, amount, signature)
                tx_hash = receipt.tx_hash
        after = chain.read_channel(escrow, cid)
    finally:
        if store is not None:
            store.close()
    captured = after.settled
    data: dict[str, Any] = {
        "channelId": cid,
        "txHash": tx_hash,
        "captured": str(captured),
        "refund": str(onchain.deposit - captured),
        "fee": None if receipt is None else _fee(receipt),
    }
    emit(
        args,
        data,
        lambda: (
            f"Closed {cid}: captured {format_amount(captured)}, "
            f"refunded {format_amount(onchain.deposit - captured)}\n  tx {tx_hash}"
        ),
    )
    return 0
