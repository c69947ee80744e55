"""`mpp deploy`: deploy the committed escrow artifact (TempoStreamChannel v1 ABI) from a key.

Shape: {"escrowContract", "chainId", "deployer", "domainName", "closeGracePeriod"}.
"""

from __future__ import annotations

import argparse
from typing import Any

from mpp.cli._common import (
    add_chain_flags,
    add_key_flags,
    add_output_flags,
    connect,
    emit,
    load_key,
    step,
)

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "deploy",
        help="deploy the escrow contract",
        description="Deploy the escrow (committed artifact, no compiler needed); fees are paid "
        "in the deployer's fee token. The key comes from MPP_DEPLOYER_KEY or --keystore.",
    )
    add_output_flags(parser)
    add_chain_flags(parser, escrow=False)
    add_key_flags(parser, "deployer")
    parser.add_argument(
        "--name", default="Tempo Stream Channel", help="EIP-712 domain name of the escrow"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    chain = connect(args, load_key(args))
    with step(args, "deploying escrow"):
        escrow = chain.deploy_escrow(args.name)
    data = {
        "escrowContract": escrow,
        "chainId": chain.chain_id,
        "deployer": chain.address,
        "domainName": args.name,
        "closeGracePeriod": chain.close_grace_period(escrow),
    }
    emit(
        args,
        data,
        lambda: (
            f"Escrow deployed at {escrow} on chain {chain.chain_id}\n  export MPP_ESCROW={escrow}"
        ),
    )
    return 0
