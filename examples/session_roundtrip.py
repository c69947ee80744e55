"""A payer and a server doing the session intent by hand, on a throwaway Tempo-mode devnet.

Run: .venv/bin/python examples/session_roundtrip.py   (starts anvil, stops it at the end)
The README quotes the two halves: the payer signs, the server verifies and charges.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from mpp.chain.devnet import Devnet
from mpp.session.engine import SessionServer
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy
from mpp.session.terms import SessionTerms
from mpp.store import open_store

PATH_USD = "0x20c0000000000000000000000000000000000000"


def main() -> None:
    with Devnet.start() as devnet, tempfile.TemporaryDirectory() as tmp:
        payer_acct, payee_acct = devnet.new_accounts(2, 10_000_000)
        payer_key, payee_key = "0x" + payer_acct.key.hex(), "0x" + payee_acct.key.hex()
        terms = SessionTerms(
            amount=25,
            currency=PATH_USD,
            recipient=payee_acct.address.lower(),
            escrow_contract=devnet.escrow,
            chain_id=devnet.chain_id,
            suggested_deposit=100_000,
        )
        expires = devnet.chain().latest_timestamp() + 300

        # --- server side: verify vouchers, charge before serving -----------------------------
        store = open_store(str(Path(tmp) / "server.db"))
        server = SessionServer(store, devnet.chain(payee_key, fee_token=PATH_USD), terms)

        # --- payer side: open a channel, sign cumulative vouchers ----------------------------
        payer = Payer(
            payer_key,
            records_path=Path(tmp) / "payer.db",
            chain=devnet.chain(),
            policy=SpendingPolicy(max_amount_per_unit=100, max_deposit=1_000_000),
        )
        opened = server.handle(
            payer.open_payload(terms, 100_000, expires=expires),
            challenge_id="c1",
            challenge_expires=expires,
        )
        cid = opened.state.channel_id
        server.charge(cid, 25, challenge_id="c1")  # the unit the first voucher paid for
        for step in range(1, 4):
            voucher = payer.voucher_payload(cid, 25 + step * 1_000)
            result = server.handle(voucher, challenge_id="c1")  # verify + persist (SES-20)
            server.charge(cid, 1_000, challenge_id="c1")  # spent persisted before serving
            payer.record_receipt(
                server.receipt(server.store.get(cid) or result.state, challenge_id="c1")
            )

        close = server.handle(payer.close_payload(cid), challenge_id="c1")
        print(
            "spent",
            close.state.spent,
            "settled on chain",
            close.state.settled,
            "close tx",
            close.tx_hash,
        )
        store.close()


if __name__ == "__main__":
    main()
