"""Gas of the escrow operations on anvil (Tempo mode): default hardfork vs --hardfork T4.

Usage: .venv/bin/python scripts/bench_gas.py [--hardforks default,T4]
Prints a markdown table (gas used per operation). Opens are real 0x76 batches
(pathUSD.approve + escrow.open), self-paid and fee-sponsored (0x78 co-signature).
The exact-capture functions (ESC-16 settleCapture, ESC-17 closeCapture) are measured in the same
states as settle and close, on the self-paid channel: a first settle (settled 0 -> 100, here out
of a voucher for 200), then a close paying 400 more and refunding the rest (here capturing 500 of
a voucher for 900). On T4 an account's first transaction costs ~250,000 gas more (the nonce
is new state); `settle` is the payee's first, so on T4 compare settleCapture with settle only
after subtracting that, or on the default hardfork.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from mpp.chain import escrow as esc
from mpp.chain.devnet import DEV_KEY_0, Devnet
from mpp.chain.web3chain import PATH_USD, Web3Chain
from mpp.session.tempo_tx import (
    build_tempo_tx,
    cosign_as_fee_payer,
    open_calls,
    sign_tempo_tx,
)
from mpp.session.voucher import channel_id, sign_voucher

OPERATIONS = [
    "deploy escrow",
    "approve+open (self-paid)",
    "approve+open (sponsored)",
    "settle",
    "settleCapture",
    "approve+topUp",
    "close",
    "closeCapture (capture < voucher)",
]


def measure(hardfork: str | None) -> dict[str, int]:
    gas: dict[str, int] = {}
    with Devnet.start(hardfork=hardfork, deploy=False) as dn:
        deployer = dn.chain(DEV_KEY_0)
        dn.escrow = deployer.deploy_escrow()
        gas["deploy escrow"] = int(dn.rpc("eth_getBlockByNumber", ["latest", False])["gasUsed"], 16)
        payer, payee = dn.new_accounts(2)
        payer_chain = dn.chain(payer, fee_token=PATH_USD)
        payee_chain = dn.chain(payee, fee_token=PATH_USD)

        def open_tx(sponsored: bool) -> tuple[str, bytes]:
            salt = "0x" + os.urandom(32).hex()
            nonce = int(dn.rpc("eth_getTransactionCount", [payer.address, "pending"]), 16)
            calls = open_calls(
                escrow=dn.escrow, token=PATH_USD, payee=payee.address, deposit=10**6, salt=salt
            )
            tx = build_tempo_tx(
                calls,
                chain_id=dn.chain_id,
                gas_limit=5_000_000,
                max_fee_per_gas=2 * payer_chain.base_fee(),
                nonce=nonce,
                fee_token=PATH_USD,
                awaiting_fee_payer=sponsored,
            )
            raw = sign_tempo_tx(tx, payer)
            if sponsored:
                raw = cosign_as_fee_payer(raw, payee, fee_token=PATH_USD)
            cid = channel_id(
                payer.address, payee.address, PATH_USD, salt, "0x" + "00" * 20, dn.escrow,
                dn.chain_id,
            )  # fmt: skip
            return cid, raw

        def payee_send(data: bytes) -> int:
            receipt = payee_chain.send_call(dn.escrow, data)
            if receipt.status != 1:
                raise RuntimeError("escrow call reverted")
            return receipt.gas_used

        chain = Web3Chain(dn.rpc_url, chain_id=dn.chain_id)
        own_cid, raw = open_tx(False)
        gas["approve+open (self-paid)"] = chain.send_raw_transaction(raw).gas_used
        cid, raw = open_tx(True)
        gas["approve+open (sponsored)"] = chain.send_raw_transaction(raw).gas_used
        domain: dict[str, Any] = {"chain_id": dn.chain_id, "escrow": dn.escrow}
        settle = payee_chain.settle(dn.escrow, cid, 100, sign_voucher(payer, cid, 100, **domain))
        gas["settle"] = settle.gas_used
        data = esc.encode_settle_capture(
            own_cid, 200, 100, sign_voucher(payer, own_cid, 200, **domain)
        )
        gas["settleCapture"] = payee_send(data)
        gas["approve+topUp"] = payer_chain.top_up(dn.escrow, cid, 10**5, token=PATH_USD).gas_used
        close = payee_chain.close(dn.escrow, cid, 500, sign_voucher(payer, cid, 500, **domain))
        gas["close"] = close.gas_used
        data = esc.encode_close_capture(
            own_cid, 900, 500, sign_voucher(payer, own_cid, 900, **domain)
        )
        gas["closeCapture (capture < voucher)"] = payee_send(data)
    return gas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardforks", default="default,T4")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    forks = [f.strip() for f in args.hardforks.split(",") if f.strip()]
    results = {f: measure(None if f == "default" else f) for f in forks}
    print("| operation | " + " | ".join(f"{f} gas" for f in forks) + " |")
    print("|---|" + "---:|" * len(forks))
    for op in OPERATIONS:
        print(f"| {op} | " + " | ".join(f"{results[f][op]:,}" for f in forks) + " |")
    if args.json:
        args.json.write_text(json.dumps({"gas": results}, indent=2))


if __name__ == "__main__":
    main()
