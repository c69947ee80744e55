"""The server side of a tempo charge: verify the credential and take the payment, exactly once.

`ChargeServer.verify` runs after the HTTP layer checked the challenge's binding, route and
expiry (CORE-17/20, CHG-02). It then checks the payload by its type and takes the payment:

- `transaction` (pull, CHG-07): a signed 0x76 transaction whose calls are exactly the
  request's transfers on `currency`, on the request's chain, valid no later than the challenge
  expires. The server co-signs as fee payer when it offered `feePayer` (CHG-10), only within its
  sponsor policy (`_check_sponsorable`), broadcasts, and requires a successful receipt.
- `hash` (push, CHG-08): a transaction the payer already broadcast; refused with `feePayer`.
  Its successful receipt must carry the request's transfers as logs emitted by `currency`.
- `proof` (CHG-09): only for a zero amount; the payer signs the challenge id.

Replay (CHG-03, CHG-18): a challenge id pays once and a transaction pays once, across
challenges. Both are claimed in the store before any chain work (first writer wins, so of two
concurrent duplicates exactly one goes on), and a claim is given back when the payment did not
happen, so the payer may try again with a corrected credential.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol, runtime_checkable

from mpp.charge.effects import check_effects, transfers_in_calls, transfers_in_logs
from mpp.charge.proof import check_proof
from mpp.charge.terms import ChargeTerms
from mpp.core.credential import Credential
from mpp.core.errors import (
    InvalidChallenge,
    MalformedCredential,
    PaymentError,
    TransactionReverted,
    VerificationFailed,
)
from mpp.core.rfc3339 import format_rfc3339
from mpp.session.ports import Store, TxReceipt
from mpp.session.tempo_tx import (
    EXPIRING_NONCE_KEY,
    DecodedTempoTx,
    TempoTxError,
    cosign_as_fee_payer,
    decode_tempo_tx,
)

__all__ = ["ChargeChain", "ChargeServer", "Charged"]

log = logging.getLogger(__name__)

CHALLENGES: Final = "charge-challenge"  # store scopes of the consumed ids
TRANSACTIONS: Final = "charge-tx"
_PENDING: Final = b"pending"
_HASH_LENGTH: Final = 66
MAX_SPONSORED_GAS: Final = 2_000_000  # a charge's transfers with room; what we co-sign at most
MAX_SPONSORED_VALIDITY: Final = 300  # seconds: the live network's expiring-nonce window


@runtime_checkable
class ChargeChain(Protocol):
    """What a charge needs from the chain."""

    def send_raw_transaction(self, raw: bytes, *, timeout: float | None = None) -> TxReceipt: ...

    def transaction_receipt(self, tx_hash: str) -> TxReceipt | None: ...


@dataclass(frozen=True)
class Charged:
    """A payment taken: the receipt fields (CHG-11) and who paid, when known."""

    receipt: dict[str, Any]
    payer: str | None


class ChargeServer:
    def __init__(
        self,
        store: Store,
        chain: ChargeChain,
        *,
        fee_payer_key: str | bytes | None = None,
        fee_token: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.chain = chain
        self._fee_payer_key = fee_payer_key
        self._fee_token = fee_token
        self._clock = clock

    @property
    def sponsors(self) -> bool:
        """Whether this server co-signs as fee payer (its challenges say `feePayer: true`)."""
        return self._fee_payer_key is not None

    def verify(
        self, credential: Credential, terms: ChargeTerms, *, expires: int | None = None
    ) -> Charged:
        """Take the payment the credential carries for `terms`; PaymentError otherwise (with
        nothing taken, and the challenge free for another try)."""
        payload = credential.payload
        kind = payload.get("type")
        if terms.amount == 0 and kind != "proof":
            raise MalformedCredential("a zero-amount charge is paid with a proof")  # CHG-09
        if kind not in ("transaction", "hash", "proof"):
            raise MalformedCredential("payload type must be transaction, hash or proof")
        if kind == "proof" and terms.amount != 0:
            raise MalformedCredential("a proof only pays a zero-amount charge")
        if kind == "hash" and terms.fee_payer:
            raise VerificationFailed("a hash credential cannot be used with feePayer")  # CHG-08
        if kind != "proof" and not terms.allows("pull" if kind == "transaction" else "push"):
            raise VerificationFailed(f"this challenge does not accept {kind} credentials")
        challenge_id = credential.challenge.id
        bound = (challenge_id, credential.challenge.realm)  # the attribution memo to require
        self._claim(CHALLENGES, challenge_id, "the challenge was already used")  # CHG-03
        try:
            if kind == "proof":
                charged = self._proof(credential, terms)
            elif kind == "transaction":
                charged = self._transaction(payload, terms, expires, bound)
            else:
                charged = self._hash(payload, terms, bound)
        except BaseException:
            self._release(CHALLENGES, challenge_id)
            raise
        reference = str(charged.receipt["reference"])
        self.store.replace_idempotent(CHALLENGES, challenge_id, reference.encode())
        if kind != "proof":  # the transaction stays consumed, naming what it paid for
            self.store.replace_idempotent(TRANSACTIONS, reference, challenge_id.encode())
        charged.receipt["challengeId"] = challenge_id
        return charged

    # --- by payload type ------------------------------------------------------------------------

    def _transaction(
        self,
        payload: dict[str, Any],
        terms: ChargeTerms,
        expires: int | None,
        bound: tuple[str, str],
    ) -> Charged:
        raw = payload.get("signature")
        if not isinstance(raw, str):
            raise MalformedCredential("a transaction payload needs its signed transaction")
        try:
            tx = decode_tempo_tx(raw)
        except TempoTxError as exc:
            raise MalformedCredential(f"not a signed Tempo transaction: {exc}") from None
        if tx.chain_id != terms.chain_id:
            raise VerificationFailed("the transaction is for another chain")
        if expires is not None and (tx.valid_before is None or tx.valid_before > expires):
            raise VerificationFailed("the transaction stays valid after the challenge expires")
        calls = transfers_in_calls(tx.calls, terms.currency)
        check_effects(terms.transfers(bound), calls, exact=True)
        if terms.fee_payer:
            if not tx.awaiting_fee_payer or self._fee_payer_key is None:
                raise VerificationFailed("the transaction must be signed for our fee payer")
            self._check_sponsorable(tx)
            fee_token = self._fee_token or terms.currency
            final = cosign_as_fee_payer(tx, self._fee_payer_key, fee_token=fee_token)
        elif tx.sponsored:
            raise VerificationFailed("the payer pays its own fees here (feePayer is false)")
        else:
            final = tx.raw
        tx_hash = decode_tempo_tx(final).tx_hash
        self._claim(TRANSACTIONS, tx_hash, "the transaction was already used")
        try:
            receipt = self.chain.send_raw_transaction(final)
        except TransactionReverted as exc:  # refused by the node, or dropped
            self._release(TRANSACTIONS, tx_hash)  # not on chain: the payer may try again
            raise VerificationFailed(f"the payment transaction was refused: {exc}") from None
        except PaymentError:
            self._release(TRANSACTIONS, tx_hash)
            raise
        if receipt.status != 1:
            raise VerificationFailed("the payment transaction reverted")
        return Charged(self._receipt(receipt.tx_hash, terms), tx.sender)

    def _check_sponsorable(self, tx: DecodedTempoTx) -> None:
        """What we co-sign as fee payer must cost us no more than a payment needs (the public
        conformance suite's sponsor policy): an expiring nonce, a short validity window, a gas
        limit within MAX_SPONSORED_GAS, no access list, and the fee token left to us."""
        if tx.fee_token is not None:
            raise VerificationFailed("a sponsored transaction must not include fee_token")
        if tx.nonce_key != EXPIRING_NONCE_KEY:
            raise VerificationFailed("a sponsored transaction must use expiring nonce key")
        if tx.gas_limit > MAX_SPONSORED_GAS:
            raise VerificationFailed("gas limit exceeds sponsor policy")
        now = int(self._clock())
        if tx.valid_before is None or tx.valid_before > now + MAX_SPONSORED_VALIDITY:
            raise VerificationFailed("validity window exceeds sponsor policy")
        if tx.fields[5]:
            raise VerificationFailed("access list is not allowed in a sponsored transaction")

    def _hash(self, payload: dict[str, Any], terms: ChargeTerms, bound: tuple[str, str]) -> Charged:
        tx_hash = payload.get("hash")
        if not isinstance(tx_hash, str) or len(tx_hash) != _HASH_LENGTH:
            raise MalformedCredential("a hash payload needs a 0x-prefixed 32-byte hash")
        try:
            bytes.fromhex(tx_hash[2:])
        except ValueError:
            raise MalformedCredential("the hash is not hex") from None
        tx_hash = tx_hash.lower()
        self._claim(TRANSACTIONS, tx_hash, "the transaction was already used")  # CHG-17
        try:
            receipt = self.chain.transaction_receipt(tx_hash)
            if receipt is None:
                raise VerificationFailed("no receipt for this transaction (yet)")
            if receipt.status != 1:
                raise VerificationFailed("the payment transaction reverted")
            found = transfers_in_logs(receipt.logs, terms.currency)
            check_effects(terms.transfers(bound), found, exact=False)
        except PaymentError:
            self._release(TRANSACTIONS, tx_hash)  # a later try may find it landed
            raise
        return Charged(self._receipt(tx_hash, terms), None)

    def _proof(self, credential: Credential, terms: ChargeTerms) -> Charged:
        signature = credential.payload.get("signature")
        if not isinstance(signature, str):
            raise MalformedCredential("a proof payload needs its signature")
        cid = credential.challenge.id
        realm = credential.challenge.realm
        signer = check_proof(signature, cid, terms.chain_id, credential.source, realm)
        return Charged(self._receipt(cid, terms), signer)

    # --- bookkeeping ----------------------------------------------------------------------------

    def _receipt(self, reference: str, terms: ChargeTerms) -> dict[str, Any]:
        """CHG-11: method, reference (the transaction hash; the challenge id for a proof), and
        `cost`, what was paid (base units; beyond CHG-11, which clients ignore, CORE-41)."""
        receipt: dict[str, Any] = {
            "method": "tempo",
            "intent": "charge",
            "status": "success",
            "reference": reference,
            "timestamp": format_rfc3339(datetime.fromtimestamp(self._clock(), UTC)),
            "cost": str(terms.amount),
        }
        if terms.external_id is not None:
            receipt["externalId"] = terms.external_id
        return receipt

    def _claim(self, scope: str, key: str, refusal: str) -> None:
        if not self.store.put_idempotent(scope, key, _PENDING):
            if scope == CHALLENGES:
                raise InvalidChallenge(refusal)
            raise VerificationFailed(refusal)

    def _release(self, scope: str, key: str) -> None:
        if not self.store.delete_idempotent(scope, key, _PENDING):
            log.warning("charge claim %s/%s was not pending when released", scope, key)
