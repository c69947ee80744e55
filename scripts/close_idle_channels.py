"""Close every channel idle for longer than N minutes (server side, SES-44 in miniature).

    MPP_PAYEE_KEY=0x... python scripts/close_idle_channels.py \
        --store sqlite:///var/lib/mpp/server.db --rpc-url http://127.0.0.1:8545 \
        --idle-minutes 60 [--dry-run] [--json]

"Idle" means the server's store has not changed the channel (no voucher, no charge, no refresh)
for that long. Each close is the payee's cooperative close with the store's highest voucher
through the escrow's closeCapture: it captures exactly what was spent, whatever the voucher
covers, and refunds the rest of the deposit to the payer in the same transaction. (`mpp serve`
does this by itself with its idle_close setting; this script is the by-hand form.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass

from mpp.chain.web3chain import Web3Chain
from mpp.cli._channel_payee import close_from_store
from mpp.session.ports import Store
from mpp.store.open import open_store


@dataclass(frozen=True)
class Closed:
    channel_id: str
    idle_seconds: int
    tx_hash: str | None  # None on a dry run
    captured: int | None


def close_idle_channels(
    store: Store,
    chain: Web3Chain,
    idle_minutes: float,
    *,
    now: int | None = None,
    dry_run: bool = False,
) -> list[Closed]:
    now = int(time.time()) if now is None else now
    done = []
    for state in store.channels():
        idle = now - state.updated_at
        if state.finalized or idle <= idle_minutes * 60:
            continue
        if dry_run:
            done.append(Closed(state.channel_id, idle, None, None))
            continue
        tx_hash, captured = close_from_store(store, chain, state.channel_id)
        done.append(Closed(state.channel_id, idle, tx_hash, captured))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="server store DSN")
    parser.add_argument("--rpc-url", default=os.environ.get("MPP_RPC_URL"))
    parser.add_argument("--idle-minutes", type=float, required=True)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    key = os.environ.get("MPP_PAYEE_KEY")
    if not key or not args.rpc_url:
        print("set MPP_PAYEE_KEY and --rpc-url (or MPP_RPC_URL)", file=sys.stderr)
        return 2
    store = open_store(args.store)
    try:
        chain = Web3Chain(args.rpc_url, account=key)
        done = close_idle_channels(store, chain, args.idle_minutes, dry_run=args.dry_run)
    finally:
        store.close()
    if args.json:
        print(
            json.dumps(
                [
                    {**asdict(c), "captured": None if c.captured is None else str(c.captured)}
                    for c in done
                ]
            )
        )
    else:
        for c in done:
            print(f"{c.channel_id}  idle {c.idle_seconds} s  tx {c.tx_hash or '(dry run)'}")
        print(f"{len(done)} channel(s) idle for more than {args.idle_minutes} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
