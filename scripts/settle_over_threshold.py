"""Settle every channel whose unsettled amount exceeds a threshold (server side, SES-35).

    MPP_PAYEE_KEY=0x... python scripts/settle_over_threshold.py \
        --store sqlite:///var/lib/mpp/server.db --rpc-url http://127.0.0.1:8545 \
        --threshold 1000000 [--dry-run] [--json]

"Unsettled" is what was delivered but the chain has not paid yet: `spent - settled` in the
server's store. Each settlement presents the channel's highest voucher and captures exactly
`spent` with the server's own settlement component (mpp.session.settlement.Settler), recording
the new settled amount in the store, as the running server does (`mpp serve` settles on its own
by default; this script is for operators who turned that off).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, dataclass

from mpp.chain.web3chain import Web3Chain
from mpp.cli._channel_payee import settler_for
from mpp.session.ports import Store
from mpp.session.settlement import earned
from mpp.store.open import open_store


@dataclass(frozen=True)
class Settlement:
    channel_id: str
    unsettled: int
    tx_hash: str | None  # None on a dry run


def settle_over_threshold(
    store: Store, chain: Web3Chain, threshold: int, *, dry_run: bool = False
) -> list[Settlement]:
    settler = settler_for(store, chain)
    done = []
    for state in store.channels():
        unsettled = earned(state) - state.settled
        if state.finalized or unsettled <= threshold or not state.voucher_signature:
            continue
        tx_hash = None if dry_run else settler.settle(state.channel_id)
        done.append(Settlement(state.channel_id, unsettled, tx_hash))
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="server store DSN")
    parser.add_argument("--rpc-url", default=os.environ.get("MPP_RPC_URL"))
    parser.add_argument("--threshold", type=int, required=True, help="base units")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    key = os.environ.get("MPP_PAYEE_KEY")
    if not key or not args.rpc_url:
        print("set MPP_PAYEE_KEY and --rpc-url (or MPP_RPC_URL)", file=sys.stderr)
        return 2
    store = open_store(args.store)
    try:
        done = settle_over_threshold(
            store, Web3Chain(args.rpc_url, account=key), args.threshold, dry_run=args.dry_run
        )
    finally:
        store.close()
    if args.json:
        print(json.dumps([{**asdict(s), "unsettled": str(s.unsettled)} for s in done]))
    else:
        for s in done:
            print(f"{s.channel_id}  unsettled {s.unsettled}  tx {s.tx_hash or '(dry run)'}")
        print(f"{len(done)} channel(s) over {args.threshold}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
