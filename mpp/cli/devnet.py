"""`mpp devnet`: anvil in Tempo mode + the escrow + funded payer accounts, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mpp.chain.devnet import DEFAULT_FUNDING, Devnet
from mpp.cli._common import step, until_stopped

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "devnet",
        help="run a local Tempo devnet (anvil) with the escrow deployed",
        description="Start anvil --network tempo, deploy the escrow, fund fresh payer accounts "
        "with pathUSD, print the connection details and run until interrupted.",
    )
    parser.add_argument("--accounts", type=int, default=2, help="fresh funded accounts (2)")
    parser.add_argument(
        "--amount", type=int, default=DEFAULT_FUNDING, help="pathUSD base units per account"
    )
    parser.add_argument("--hardfork", default="T4", help="anvil hardfork (T4); 'default' = none")
    parser.add_argument("--port", type=int, default=None, help="RPC port (a free one)")
    parser.add_argument("--escrow-name", default="Tempo Stream Channel", help="EIP-712 name")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--show-keys", action="store_true", help="also print private keys")
    parser.set_defaults(handler=run)


def _describe(devnet: Devnet, show_keys: bool) -> dict[str, Any]:
    accounts: list[dict[str, str]] = []
    for account in devnet.funded:
        entry: dict[str, str] = {"address": str(account.address)}
        if show_keys:
            entry["privateKey"] = "0x" + bytes(account.key).hex()
        accounts.append(entry)
    return {
        "rpcUrl": devnet.rpc_url,
        "chainId": devnet.chain_id,
        "hardfork": devnet.hardfork or "default",
        "escrowContract": devnet.escrow,
        "currency": devnet.token,
        "accounts": accounts,
    }


def _print(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(info, separators=(",", ":")), flush=True)
        return
    lines = [
        f"RPC URL:          {info['rpcUrl']}",
        f"Chain id:         {info['chainId']}",
        f"Hardfork:         {info['hardfork']}",
        f"Escrow contract:  {info['escrowContract']}",
        f"Currency:         {info['currency']} (pathUSD, 6 decimals)",
        "Funded accounts:",
    ]
    for entry in info["accounts"]:
        key = f"  key {entry['privateKey']}" if "privateKey" in entry else ""
        lines.append(f"  {entry['address']}{key}")
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


def run(args: argparse.Namespace) -> int:
    if args.accounts < 0:
        raise ValueError("--accounts must be >= 0")
    hardfork = None if args.hardfork in ("", "default") else args.hardfork
    with until_stopped() as stop:
        with step(args, "starting anvil, deploying the escrow"):
            devnet = Devnet.start(hardfork=hardfork, escrow_name=args.escrow_name, port=args.port)
        with devnet:
            with step(args, "funding the accounts"):
                devnet.new_accounts(args.accounts, args.amount)
            _print(_describe(devnet, args.show_keys), args.json)
            while not stop.event.wait(0.2):
                if not devnet.running:
                    print("mpp: error: anvil exited unexpectedly", file=sys.stderr)
                    return 1
    return stop.exit_code  # 130 after Ctrl-C, 0 after SIGTERM
