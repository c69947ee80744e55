#!/usr/bin/env python3
"""Money safety, measured: how fast the payee reacts to a force-close, and fault runs.

    .venv/bin/python scripts/bench_money.py [--closes 5] [--lifecycles 3] [--json out.json]

1. Force-close reaction (`--closes` channels): a real `mpp serve` on its default settings (chain
   watcher polling every second, settlement on) serves one paid completion per channel; the
   payer then calls `requestClose` on the escrow. Measured: wall time from the requestClose
   receipt to the server's settling transaction being on chain (the channel finalized with
   `settled == spent`). The grace period it has to beat is 15 minutes.
2. Lifecycle fault runs (`--lifecycles` rounds of `--clients` channels): SIGKILLs while channels
   open, while vouchers stream, while the server settles and while it closes (the short form is
   tests/faults/test_faults_short.py, the long form scripts/fault_run.py). Reported: kills per
   phase, channels, Σ delivered and Σ captured (base units), the largest excess of captured over
   delivered for one channel, and one lookahead window for scale.

Starts its own anvil (Tempo mode) with our escrow; every process stops through its handle.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpp.chain.devnet import Devnet  # noqa: E402
from mpp.chain.web3chain import PATH_USD  # noqa: E402
from mpp.inference.client import ChatClient  # noqa: E402
from mpp.session.payer import Payer  # noqa: E402
from mpp.session.policy import SpendingPolicy  # noqa: E402
from tests.cli.serve_process import MppServe  # noqa: E402
from tests.faults.test_faults_short import run_lifecycle_with_crashes  # noqa: E402

DEPOSIT = 2_000


def close_reaction(devnet: Devnet, tmp: Path, closes: int) -> list[float]:
    payee, *payers = devnet.new_accounts(1 + closes, amount=10**8)
    seconds = []
    with MppServe(
        tmp,
        rpc_url=devnet.rpc_url,
        escrow=devnet.escrow,
        payee_key="0x" + bytes(payee.key).hex(),
        settlement="",  # the defaults
    ) as server:
        server.start()
        for i, account in enumerate(payers):
            key = "0x" + bytes(account.key).hex()
            payer = Payer(
                key, records_path=tmp / f"payer-{i}.db", chain=devnet.chain(),
                policy=SpendingPolicy(max_deposit=DEPOSIT),
            )  # fmt: skip
            with ChatClient(server.url, payer=payer, allow_insecure=True, deposit=DEPOSIT) as chat:
                stream = chat.complete("Tell me a story.", max_tokens=20)
            cid = str(stream.receipts[-1]["channelId"])
            spent = int(stream.receipts[-1]["spent"])
            devnet.chain(key, fee_token=PATH_USD).request_close(devnet.escrow, cid)
            requested = time.monotonic()
            view = devnet.chain()
            while not (onchain := view.read_channel(devnet.escrow, cid)).finalized:
                if time.monotonic() - requested > 120:
                    raise SystemExit("the server did not settle within 120 s")
                time.sleep(0.02)
            seconds.append(time.monotonic() - requested)
            if onchain.settled != spent:
                raise SystemExit(f"captured {onchain.settled}, spent {spent}")
            print(f"close {i + 1}/{closes}: settled {spent} in {seconds[-1]:.2f} s", flush=True)
    return seconds


def lifecycles(devnet: Devnet, tmp: Path, rounds: int, clients: int, seed: int) -> dict[str, Any]:
    kills: dict[str, int] = {}
    total = {"channels": 0, "delivered": 0, "captured": 0, "largest_excess": 0, "window": 0}
    for i in range(rounds):
        (payee,) = devnet.new_accounts(1)
        run = run_lifecycle_with_crashes(
            devnet, payee, tmp / f"lifecycle-{i}.db", clients_n=clients, tokens=40,
            stream_kills=3, seed=seed + i,
        )  # fmt: skip
        for phase, n in run.kills.items():
            kills[phase] = kills.get(phase, 0) + n
        total["channels"] += run.channels
        total["delivered"] += run.delivered
        total["captured"] += run.captured
        total["largest_excess"] = max(total["largest_excess"], run.largest_excess)
        total["window"] = run.window
        print(f"lifecycle {i + 1}/{rounds}: kills {run.kills}, checks held", flush=True)
    return {"kills": kills, **total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--closes", type=int, default=5)
    parser.add_argument("--lifecycles", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mpp-bench-money-") as tmp_dir, Devnet.start() as dev:
        tmp = Path(tmp_dir)
        (tmp / "closes").mkdir()
        seconds = close_reaction(dev, tmp / "closes", args.closes)
        faults = lifecycles(dev, tmp, args.lifecycles, args.clients, args.seed)
    result = {
        "close_reaction_s": {
            "median": statistics.median(seconds),
            "max": max(seconds),
            "n": len(seconds),
        },
        "faults": faults,
    }
    r, f = result["close_reaction_s"], faults
    print("| measure | value |\n|---|---|")
    print(f"| requestClose → settling tx on chain (median of {r['n']}) | {r['median']:.2f} s |")
    print(f"| requestClose → settling tx on chain (max) | {r['max']:.2f} s |")
    print(f"| fault runs: kills per phase | {f['kills']} |")
    print(f"| fault runs: channels | {f['channels']} |")
    print(f"| fault runs: Σ delivered / Σ captured | {f['delivered']:,} / {f['captured']:,} |")
    print(
        f"| fault runs: largest excess per channel | {f['largest_excess']} base units "
        f"(one window = {f['window']}) |"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
