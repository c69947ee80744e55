"""The paying side of a tempo charge: check the request against the payer's policy, then sign.

`ChargePayer` wraps the session `Payer` (one key, one chain, one spending policy for both
intents). Before anything is signed (CHG-04, CHG-06, CHG-20): the amount is within
`max_amount` (the per-request cap), the currency, chain and every recipient (splits included)
are allowed, and the splits leave the primary recipient something (ChargeTerms refuses the
rest when it parses the request).

Payloads: `transaction` (pull, the default when allowed): one `transfer`/`transferWithMemo` call
per transfer, valid no later than the challenge expires, sponsored when the server offered
`feePayer`. `hash` (push): the payer broadcasts the same transaction itself (paying its own fees)
and sends the hash. `proof`: a zero-amount charge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pytempo import Call

from mpp.charge.attribution import attribution_memo
from mpp.charge.proof import proof_digest
from mpp.charge.terms import ChargeTerms
from mpp.core.errors import VerificationFailed
from mpp.session.escrow_abi import encode_transfer, encode_transfer_with_memo
from mpp.session.payer import Payer
from mpp.session.policy import PolicyViolation
from mpp.session.ports import TxReceipt
from mpp.session.tempo_tx import TIP20_TRANSFER_GAS

__all__ = ["ChargePayer"]


class ChargePayer:
    """`broadcast` (push mode): sends a raw transaction and waits for its receipt, e.g. a
    `Web3Chain.send_raw_transaction`; without it the payer only pulls."""

    def __init__(
        self,
        payer: Payer,
        *,
        max_amount: int | None = None,
        broadcast: Callable[[bytes], TxReceipt] | None = None,
    ) -> None:
        self.payer = payer
        self.max_amount = max_amount
        self._broadcast = broadcast

    def did(self, terms: ChargeTerms) -> str:
        return f"did:pkh:eip155:{terms.chain_id}:{self.payer.address}"

    def check(self, terms: ChargeTerms) -> None:
        """PolicyViolation for a charge this payer must not pay (nothing is signed)."""
        policy = self.payer.policy
        if self.max_amount is not None and terms.amount > self.max_amount:
            raise PolicyViolation(
                f"charge {terms.amount} exceeds the per-request maximum {self.max_amount}"
            )
        if policy.allowed_tokens is not None and terms.currency not in policy.allowed_tokens:
            raise PolicyViolation(f"currency {terms.currency} is not allowed")
        if policy.allowed_chain_ids is not None and terms.chain_id not in policy.allowed_chain_ids:
            raise PolicyViolation(f"chain id {terms.chain_id} is not allowed")
        if policy.allowed_recipients is not None:
            for transfer in terms.transfers():
                if transfer.recipient not in policy.allowed_recipients:
                    raise PolicyViolation(f"recipient {transfer.recipient} is not allowed")

    def payload(
        self,
        terms: ChargeTerms,
        *,
        challenge_id: str,
        expires: int | None,
        realm: str,
        mode: str = "pull",
    ) -> dict[str, Any]:
        """The credential payload that pays `terms` (after `check`) for the challenge
        `challenge_id` of `realm`. A request without a memo gets that challenge's attribution
        memo on its primary transfer (mpp.charge.attribution), as servers require."""
        self.check(terms)
        if terms.amount == 0:
            digest = proof_digest(challenge_id, terms.chain_id, realm)
            return {"type": "proof", "signature": self.payer.sign_digest(digest)}
        if not terms.allows(mode):
            mode = "push" if mode == "pull" else "pull"
            if not terms.allows(mode):
                raise PolicyViolation("the challenge offers no submission mode we support")
        if mode == "push" and terms.fee_payer:
            raise PolicyViolation("a sponsored charge cannot be pushed (CHG-08)")
        if terms.memo is None:
            terms = dataclasses.replace(terms, memo=attribution_memo(challenge_id, realm))
        raw = self.payer.signed_tx(
            self._calls(terms),
            terms.chain_id,
            TIP20_TRANSFER_GAS * len(terms.transfers()),
            terms.currency,
            terms.fee_payer,
            expires,
        )
        if mode == "pull":
            return {"type": "transaction", "signature": raw}
        if self._broadcast is None:
            raise PolicyViolation("pushing a charge needs a chain to broadcast on")
        receipt = self._broadcast(bytes.fromhex(raw[2:]))
        if receipt.status != 1:
            raise VerificationFailed("our payment transaction reverted")
        return {"type": "hash", "hash": receipt.tx_hash}

    @staticmethod
    def _calls(terms: ChargeTerms) -> tuple[Call, ...]:
        calls = []
        for t in terms.transfers():
            if t.memo is None:
                data = encode_transfer(t.recipient, t.amount)
            else:
                data = encode_transfer_with_memo(t.recipient, t.amount, t.memo)
            calls.append(Call.create(to=terms.currency, data=data))
        return tuple(calls)
