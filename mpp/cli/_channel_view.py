"""`mpp channel status` and `mpp channel list`: the JSON shapes and their human renderings.

Shapes (amounts are decimal strings of base units, chain ids and unix times are numbers):

- status: {"channelId", "escrowContract", "chainId", "finalized", "payer", "payee", "token",
  "authorizedSigner", "deposit", "settled", "refundable", "closeRequestedAt",
  "closeGracePeriod", "withdrawableAt" (null until a close request), "store" (null or
  {"acceptedCumulative", "spent", "settled", "deposit", "unsettled", "finalized",
  "hasVoucher", "updatedAt"}), "local" (null or {"cumulative", "spent", "accepted", "status"})}
- list: {"source": "store" | "records", "channels": [row, ...]} with store rows
  {"channelId", "escrowContract", "chainId", "payer", "payee", "token", "deposit", "settled",
  "acceptedCumulative", "spent", "unsettled", "finalized", "closeRequestedAt", "updatedAt"}
  and payer-record rows {"channelId", "escrowContract", "chainId", "payer", "payee", "token",
  "deposit", "cumulative", "spent", "accepted", "settled", "status", "updatedAt"}.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mpp.chain.web3chain import Web3Chain
from mpp.cli._common import (
    EXIT_CHAIN,
    EXIT_USAGE,
    CliError,
    channel_id_arg,
    connect,
    emit,
    env_or,
    escrow_of,
    format_amount,
    iso,
    table,
    usage_error,
)
from mpp.core.errors import ChainUnavailable
from mpp.session.payer import follow_chain
from mpp.session.payer_model import PayerChannel
from mpp.session.ports import ChannelState, OnChainChannel, Store
from mpp.session.settlement import earned
from mpp.store.open import open_store, sqlite_path
from mpp.store.payer_records import PayerRecords

__all__ = ["open_records", "open_server_store", "read_existing", "run_list", "run_status"]


def records_path(args: argparse.Namespace) -> Path:
    value = env_or(getattr(args, "records", None), "MPP_PAYER_RECORDS")
    return Path(value) if value else Path.home() / ".mpp" / "payer.db"


def open_records(args: argparse.Namespace, *, create: bool = True) -> PayerRecords | None:
    """The payer's local channel records (None when the file does not exist and not `create`)."""
    path = records_path(args)
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return PayerRecords(path)
    except Exception as exc:  # sqlite3 errors: not a database, permissions
        raise CliError(f"cannot open payer records {path}: {exc}", EXIT_USAGE) from None


def open_server_store(dsn: str, *, create: bool = False) -> Store:
    """The server's store. Only `mpp serve` creates one (`create`): the channel commands read
    an existing store, and a typo in their --store must not leave an empty database behind."""
    if not create and dsn not in ("memory:", "memory://") and "postgres" not in dsn.split(":")[0]:
        try:
            path = Path(sqlite_path(dsn))
        except ValueError as exc:
            raise usage_error(f"bad store DSN: {exc}") from None
        if not path.exists():
            raise usage_error(f"no store at {path} (mpp serve creates it on its first start)")
    try:
        return open_store(dsn)
    except ValueError as exc:
        raise usage_error(f"bad store DSN: {exc}") from None
    except Exception as exc:  # driver errors: unreachable PostgreSQL, unreadable file
        # The driver's own message may quote the DSN (and its password): say what kind of
        # failure it is instead.
        kind = type(exc).__name__
        reason = {
            "OperationalError": "cannot connect or open it (is the server up, the DSN right?)",
            "DatabaseError": "not a database",
            "ProgrammingError": "it is not a store of this toolkit",
        }.get(kind, "the database driver refused it")
        raise CliError(f"cannot open store: {reason}", EXIT_USAGE) from None


def read_existing(chain: Web3Chain, escrow: str, channel_id: str) -> OnChainChannel:
    channel = chain.read_channel(escrow, channel_id)
    if not channel.exists:
        raise usage_error(f"unknown channel {channel_id} on escrow {escrow}")
    return channel


def _store_view(state: ChannelState) -> dict[str, Any]:
    return {
        "acceptedCumulative": str(state.accepted_cumulative),
        "spent": str(state.spent),
        "settled": str(state.settled),
        "deposit": str(state.deposit),
        "unsettled": str(earned(state) - state.settled),  # delivered, not yet on chain
        "finalized": state.finalized,
        "hasVoucher": bool(state.voucher_signature),
        "updatedAt": state.updated_at,
    }


def _local_view(rec: PayerChannel) -> dict[str, Any]:
    return {
        "cumulative": str(rec.cumulative),
        "spent": str(rec.spent),
        "accepted": str(rec.accepted),
        "status": rec.status,
    }


def run_status(args: argparse.Namespace) -> int:
    cid = channel_id_arg(args.channel_id)
    store = open_server_store(args.store) if args.store else None
    records = open_records(args, create=False)
    try:
        state = store.get(cid) if store is not None else None
        rec = records.get(cid) if records is not None else None
        chain = connect(args)
        fallback = state.escrow if state else (rec.escrow if rec else None)
        escrow = escrow_of(args, chain, fallback)
        onchain = read_existing(chain, escrow, cid)
        grace = chain.close_grace_period(escrow)
    finally:
        if store is not None:
            store.close()
        if records is not None:
            records.close()
    requested = onchain.close_requested_at
    data: dict[str, Any] = {
        "channelId": cid,
        "escrowContract": escrow,
        "chainId": chain.chain_id,
        "finalized": onchain.finalized,
        "payer": onchain.payer,
        "payee": onchain.payee,
        "token": onchain.token,
        "authorizedSigner": onchain.authorized_signer,
        "deposit": str(onchain.deposit),
        "settled": str(onchain.settled),
        "refundable": str(0 if onchain.finalized else onchain.deposit - onchain.settled),
        "closeRequestedAt": requested,
        "closeGracePeriod": grace,
        "withdrawableAt": requested + grace if requested else None,
        "store": _store_view(state) if state is not None else None,
        "local": _local_view(rec) if rec is not None else None,
    }
    emit(args, data, lambda: _status_text(data))
    return 0


def _status_text(d: dict[str, Any]) -> str:
    state = "finalized" if d["finalized"] else "open"
    if d["closeRequestedAt"] and not d["finalized"]:
        state = f"close requested at {iso(d['closeRequestedAt'])}, "
        state += f"withdrawable from {iso(d['withdrawableAt'])}"
    token = d["token"]
    lines = [
        f"Channel   {d['channelId']}",
        f"Escrow    {d['escrowContract']} (chain {d['chainId']})",
        f"State     {state}",
        f"Payer     {d['payer']}",
        f"Payee     {d['payee']}",
        f"Deposit   {format_amount(int(d['deposit']), token)}",
        f"Settled   {format_amount(int(d['settled']), token)}",
    ]
    if d["store"] is not None:
        s = d["store"]
        lines.append(
            f"Server    accepted {format_amount(int(s['acceptedCumulative']), token)}, "
            f"spent {format_amount(int(s['spent']), token)}, "
            f"unsettled {format_amount(int(s['unsettled']), token)}"
        )
    if d["local"] is not None:
        loc = d["local"]
        lines.append(
            f"Payer rec signed {format_amount(int(loc['cumulative']), token)}, "
            f"spent {format_amount(int(loc['spent']), token)}, status {loc['status']}"
        )
    return "\n".join(lines)


def _store_row(s: ChannelState) -> dict[str, Any]:
    return {
        "channelId": s.channel_id,
        "escrowContract": s.escrow,
        "chainId": s.chain_id,
        "payer": s.payer,
        "payee": s.payee,
        "token": s.token,
        "deposit": str(s.deposit),
        "settled": str(s.settled),
        "acceptedCumulative": str(s.accepted_cumulative),
        "spent": str(s.spent),
        "unsettled": str(earned(s) - s.settled),
        "finalized": s.finalized,
        "closeRequestedAt": s.close_requested_at,
        "updatedAt": s.updated_at,
    }


def _record_row(r: PayerChannel) -> dict[str, Any]:
    return {
        "channelId": r.channel_id,
        "escrowContract": r.escrow,
        "chainId": r.chain_id,
        "payer": r.payer,
        "payee": r.payee,
        "token": r.token,
        "deposit": str(r.deposit),
        "cumulative": str(r.cumulative),
        "spent": str(r.spent),
        "accepted": str(r.accepted),
        "settled": str(r.settled),
        "status": r.status,
        "updatedAt": r.updated_at,
    }


def _short(cid: str) -> str:
    return cid[:10] + "…" + cid[-4:]


def run_list(args: argparse.Namespace) -> int:
    if args.store:
        store = open_server_store(args.store)
        try:
            rows = [_store_row(s) for s in sorted(store.channels(), key=lambda s: s.channel_id)]
        finally:
            store.close()
        data: dict[str, Any] = {"source": "store", "channels": rows}
        headers = ["CHANNEL", "PAYER", "DEPOSIT", "ACCEPTED", "SPENT", "SETTLED", "STATE"]
        cells = [
            [_short(r["channelId"]), r["payer"], r["deposit"], r["acceptedCumulative"],
             r["spent"], r["settled"], "finalized" if r["finalized"] else "open"]
            for r in rows
        ]  # fmt: skip
    else:
        records = open_records(args, create=False)
        try:
            found = records.all() if records is not None else []
            if records is not None and found:
                found = _follow_chain(args, records, found)
        finally:
            if records is not None:
                records.close()
        rows = [_record_row(r) for r in found]
        data = {"source": "records", "channels": rows}
        headers = ["CHANNEL", "PAYEE", "DEPOSIT", "SIGNED", "SPENT", "SETTLED", "STATUS"]
        cells = [
            [_short(r["channelId"]), r["payee"], r["deposit"], r["cumulative"], r["spent"],
             r["settled"], r["status"]]
            for r in rows
        ]  # fmt: skip
    where = _where(args.store) if args.store else str(records_path(args))
    title = f"{len(rows)} channel(s) in {where} (amounts in base units)"
    emit(args, data, lambda: title + "\n" + table(headers, cells))
    return 0


def _follow_chain(
    args: argparse.Namespace, records: PayerRecords, found: list[PayerChannel]
) -> list[PayerChannel]:
    """With an RPC URL, the records follow their channels on chain first (settled, closing,
    closed by the payee or by our withdraw); without one they are shown as last known."""
    if not env_or(getattr(args, "rpc_url", None), "MPP_RPC_URL"):
        return found
    chain = connect(args)
    synced = []
    for rec in found:
        if rec.status in ("closed", "stale"):
            synced.append(rec)
            continue
        try:
            synced.append(follow_chain(records, chain, rec.channel_id))
        except ChainUnavailable:
            raise CliError("RPC endpoint unreachable while reading channels", EXIT_CHAIN) from None
    return synced


def _where(dsn: str) -> str:
    # A PostgreSQL DSN may carry a password: show its scheme only.
    return dsn.split("://")[0] + "://…" if dsn.startswith("postgres") else dsn
