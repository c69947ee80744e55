"""The payer (client) side of the tempo v1 session: open, voucher, topUp and close payloads.

Rules kept here: the spending policy is checked before anything is signed (CORE-39); the highest
cumulative amount ever signed is persisted before a voucher leaves (so a restarted client resumes
it) and a voucher never goes below it nor above the deposit; receipts are validated like the
official client does (acceptedCumulative ≤ our cumulative, spent ≤ acceptedCumulative); the close
voucher is signed at exactly max(spent, settled) (AMB-02). The open transaction mirrors the
TypeScript client: a 0x76 batch [approve, open] with an expiring nonce (nonce key 2^256−1,
nonce 0, valid_before ≈ now + 25 s) and a first voucher for one unit (AMB-09).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from eth_account import Account

from mpp.session.payer_model import (
    DepositExhausted,
    PayerChain,
    PayerChannel,
    PayerError,
    PayerRecordStore,
    ReceiptRejected,
)
from mpp.session.policy import PolicyViolation, SpendingPolicy
from mpp.session.tempo_tx import (
    EXPIRING_NONCE_KEY,
    build_tempo_tx,
    open_calls,
    sign_tempo_tx,
    topup_calls,
)
from mpp.session.terms import SessionTerms, parse_amount
from mpp.session.voucher import channel_id as derive_channel_id
from mpp.session.voucher import private_key_bytes, sign_digest, sign_voucher

__all__ = [
    "DepositExhausted",
    "Payer",
    "PayerChain",
    "PayerChannel",
    "PayerError",
    "PayerRecordStore",
    "ReceiptRejected",
    "follow_chain",
]

ZERO_ADDRESS = "0x" + "00" * 20
OPEN_GAS = 3_000_000  # approve+open ~1.6 M on T4; only used gas is charged (docs/development.md)
TOPUP_GAS = 1_000_000  # approve+topUp ~250 k on T4
DEFAULT_MAX_FEE = 40_000_000_000  # used when no chain is given to read the base fee from
_MIN_VALIDITY = 4  # a node refuses valid_before within 3 s of its block time


def _address_of(key: str | bytes) -> str:
    return str(Account.from_key(private_key_bytes(key)).address).lower()


def follow_chain(records: PayerRecordStore, chain: PayerChain, channel_id: str) -> PayerChannel:
    """Make a payer record follow its channel on chain: deposit, settled, and the status
    ("closing" once a close was requested, "closed" once finalized by anyone: a payee's close,
    or our own withdraw)."""
    rec = records.get(channel_id)
    if rec is None:
        raise PayerError(f"unknown channel {channel_id}")
    onchain = chain.read_channel(rec.escrow, rec.channel_id)

    def merge(r: PayerChannel) -> PayerChannel:
        status = r.status
        if onchain.finalized:
            status = "closed"
        elif onchain.close_requested_at != 0 and status in ("open", "pending"):
            status = "closing"
        elif onchain.exists and status == "pending":
            status = "open"  # the open landed although its receipt never reached us
        deposit = onchain.deposit if onchain.exists else r.deposit
        new = dataclasses.replace(
            r, deposit=deposit, settled=max(r.settled, onchain.settled), status=status
        )
        return r if new == r else new

    return records.update(channel_id, merge)


class Payer:
    """Signs session payloads for one payer key; channel records live in a SQLite file."""

    def __init__(
        self,
        key: str | bytes,
        *,
        records_path: str | os.PathLike[str] | None = None,
        records: PayerRecordStore | None = None,
        policy: SpendingPolicy | None = None,
        chain: PayerChain | None = None,
        voucher_key: str | bytes | None = None,
        max_fee_per_gas: int | None = None,
        now: Callable[[], float] = time.time,
        tx_valid_for: int = 25,
        sync_ttl: float = 10.0,
    ) -> None:
        if (records is None) == (records_path is None):
            raise ValueError("give exactly one of records_path or records")
        self._key = private_key_bytes(key)
        self._voucher_key = private_key_bytes(voucher_key) if voucher_key is not None else None
        self.address = _address_of(self._key)
        self.voucher_signer = (
            _address_of(self._voucher_key) if self._voucher_key is not None else self.address
        )
        if records is None:
            from mpp.store.payer_records import PayerRecords  # the default adapter

            records = PayerRecords(records_path or "")
        self.records: PayerRecordStore = records
        self.policy = policy or SpendingPolicy()
        self.chain = chain
        self._max_fee = max_fee_per_gas
        self._now = now
        self.tx_valid_for = tx_valid_for
        # find_reusable_channel re-reads a channel from chain at most once per `sync_ttl`
        # seconds (an RPC round trip per paid request otherwise); a payee-side close within
        # that window costs one 410 answer, after which the client syncs and moves on.
        self.sync_ttl = sync_ttl
        self._synced: dict[str, float] = {}

    def __repr__(self) -> str:  # never show keys
        return f"Payer(address={self.address!r})"

    # --- helpers --------------------------------------------------------------------------------

    def _sign(self, rec: PayerChannel, amount: int) -> str:
        return sign_voucher(
            self._voucher_key or self._key,
            rec.channel_id,
            amount,
            chain_id=rec.chain_id,
            escrow=rec.escrow,
        )

    def _tx_params(self, expires: int | None) -> tuple[int, int]:
        """(max_fee_per_gas, valid_before) for an expiring-nonce transaction."""
        if self._max_fee is not None:
            max_fee = self._max_fee
        elif self.chain is not None:
            max_fee = 2 * max(self.chain.base_fee(), 1)  # docs/development.md: 2 × latest baseFee
        else:
            max_fee = DEFAULT_MAX_FEE
        # Expiring nonces are only accepted within ~30 s of the chain's own clock, which may run
        # ahead of ours (docs/development.md): anchor valid_before to the chain's latest block
        # when we can read it, and keep it within the challenge's remaining lifetime (SES-14)
        # measured on our clock, since `expires` is the server's wall-clock time.
        now = int(self._now())
        base = self.chain.latest_timestamp() if self.chain is not None else now
        valid_for = self.tx_valid_for
        if expires is not None:
            valid_for = max(_MIN_VALIDITY, min(valid_for, expires - now))
        valid_before = base + valid_for
        return max_fee, valid_before

    def sign_digest(self, digest: bytes) -> str:
        """Sign a 32-byte EIP-712 digest with the account key (a charge proof, CHG-09)."""
        return sign_digest(self._key, digest)

    def signed_tx(
        self,
        calls: Any,
        rec_chain: int,
        gas: int,
        currency: str,
        sponsored: bool,
        expires: int | None,
    ) -> str:
        """A signed 0x76 transaction of `calls` (hex): on an expiring nonce, valid until shortly
        after now and never past `expires`; sponsored (awaiting the server's fee payer
        signature) or paying its own fees in `currency`."""
        max_fee, valid_before = self._tx_params(expires)
        tx = build_tempo_tx(
            calls,
            chain_id=rec_chain,
            gas_limit=gas,
            max_fee_per_gas=max_fee,
            nonce_key=EXPIRING_NONCE_KEY,
            nonce=0,
            valid_before=valid_before,
            fee_token=None if sponsored else currency,
            awaiting_fee_payer=sponsored,
        )
        return "0x" + sign_tempo_tx(tx, self._key).hex()

    def _record(self, channel_id: str) -> PayerChannel:
        rec = self.records.get(channel_id)
        if rec is None:
            raise PayerError(f"unknown channel {channel_id}")
        return rec

    def channel(self, channel_id: str) -> PayerChannel | None:
        return self.records.get(channel_id)

    # --- open -----------------------------------------------------------------------------------

    def open_payload(
        self,
        terms: SessionTerms,
        deposit: int | None = None,
        *,
        expires: int | None = None,
        fee_sponsored: bool | None = None,
        authorized_signer: str | None = None,
        salt: str | None = None,
        initial: int | None = None,
    ) -> dict[str, Any]:
        """A new channel: the signed approve+open 0x76 batch and a first voucher for one unit
        (or `initial`, e.g. one unit plus a prepay window, capped by the deposit)."""
        self.policy.check_terms(terms)
        if deposit is None:
            deposit = self.policy.default_deposit(terms)
        self.policy.check_deposit(deposit)
        if deposit < terms.amount:
            raise PolicyViolation("deposit does not cover one unit")
        sponsored = terms.fee_payer if fee_sponsored is None else fee_sponsored
        if sponsored and not terms.fee_payer:
            raise PolicyViolation("the server does not sponsor fees (feePayer is false)")
        if authorized_signer is None:
            authorized_signer = self.voucher_signer if self._voucher_key is not None else None
        elif authorized_signer.lower() != self.voucher_signer:
            raise PayerError("authorized_signer must be the address of voucher_key")
        raw_signer = (authorized_signer or ZERO_ADDRESS).lower()
        salt = salt or "0x" + os.urandom(32).hex()  # SES-07: a fresh salt per channel
        cid = derive_channel_id(
            self.address,
            terms.recipient,
            terms.currency,
            salt,
            raw_signer,
            terms.escrow_contract,
            terms.chain_id,
        )
        calls = open_calls(
            escrow=terms.escrow_contract,
            token=terms.currency,
            payee=terms.recipient,
            deposit=deposit,
            salt=salt,
            authorized_signer=raw_signer,
        )
        transaction = self.signed_tx(
            calls, terms.chain_id, OPEN_GAS, terms.currency, sponsored, expires
        )
        first = terms.amount  # one unit, like the TypeScript client (AMB-09)
        if initial is not None:
            first = max(first, min(initial, deposit))
        rec = PayerChannel(
            channel_id=cid,
            payer=self.address,
            payee=terms.recipient,
            token=terms.currency,
            escrow=terms.escrow_contract,
            chain_id=terms.chain_id,
            authorized_signer=raw_signer,
            salt=salt,
            deposit=deposit,
            cumulative=first,
            signature=None,
            status="pending",
            updated_at=int(self._now()),
        )
        signature = self._sign(rec, first)
        self.records.put(dataclasses.replace(rec, signature=signature))
        return {
            "action": "open",
            "type": "transaction",
            "channelId": cid,
            "transaction": transaction,
            "authorizedSigner": self.voucher_signer,
            "cumulativeAmount": str(first),
            "signature": signature,
        }

    # --- vouchers -------------------------------------------------------------------------------

    def voucher_payload(self, channel_id: str, required_cumulative: int) -> dict[str, Any]:
        """A voucher for at least `required_cumulative` (never below what was already signed)."""
        now = int(self._now())

        def raise_to(rec: PayerChannel) -> PayerChannel:
            if rec.status not in ("open", "pending"):
                raise PayerError(f"channel {rec.channel_id} is {rec.status}")
            if required_cumulative > rec.deposit:
                raise DepositExhausted(
                    f"required {required_cumulative} exceeds the deposit {rec.deposit}: top up"
                )
            if required_cumulative <= rec.cumulative and rec.signature:
                return rec
            amount = max(required_cumulative, rec.cumulative)
            return dataclasses.replace(
                rec, cumulative=amount, signature=self._sign(rec, amount), updated_at=now
            )

        rec = self.records.update(channel_id, raise_to)
        return {
            "action": "voucher",
            "channelId": rec.channel_id,
            "cumulativeAmount": str(rec.cumulative),
            "signature": rec.signature,
        }

    # --- topUp ----------------------------------------------------------------------------------

    def topup_payload(
        self,
        channel_id: str,
        additional: int,
        *,
        expires: int | None = None,
        fee_sponsored: bool = False,
    ) -> dict[str, Any]:
        """A signed approve+topUp batch; call `confirm_topup` once the server accepted it."""
        rec = self._record(channel_id)
        if additional <= 0:
            raise PolicyViolation("additional deposit must be positive")
        self.policy.check_deposit(rec.deposit + additional)
        if self.policy.allowed_tokens is not None and rec.token not in self.policy.allowed_tokens:
            raise PolicyViolation(f"currency {rec.token} is not allowed")
        calls = topup_calls(
            escrow=rec.escrow,
            token=rec.token,
            channel_id=rec.channel_id,
            additional_deposit=additional,
        )
        transaction = self.signed_tx(
            calls, rec.chain_id, TOPUP_GAS, rec.token, fee_sponsored, expires
        )
        return {
            "action": "topUp",
            "type": "transaction",
            "channelId": rec.channel_id,
            "transaction": transaction,
            "additionalDeposit": str(additional),
        }

    def confirm_topup(self, channel_id: str, additional: int) -> PayerChannel:
        return self.records.update(
            channel_id,
            lambda rec: dataclasses.replace(rec, deposit=rec.deposit + additional),
        )

    # --- receipts and close ---------------------------------------------------------------------

    def record_receipt(self, receipt: Mapping[str, Any]) -> PayerChannel:
        """Validate a session receipt against what we signed and remember its counters."""
        if receipt.get("intent") != "session" or receipt.get("status") != "success":
            raise ReceiptRejected("not a successful session receipt")
        cid = receipt.get("channelId")
        if not isinstance(cid, str):
            raise ReceiptRejected("receipt has no channelId")
        try:
            accepted = parse_amount(receipt.get("acceptedCumulative"), "acceptedCumulative")
            spent = parse_amount(receipt.get("spent"), "spent")
        except ValueError as exc:
            raise ReceiptRejected(str(exc)) from None

        def apply(rec: PayerChannel) -> PayerChannel:
            if accepted > rec.cumulative:
                raise ReceiptRejected("receipt acceptedCumulative exceeds what we signed")
            if spent > accepted:
                raise ReceiptRejected("receipt spent exceeds acceptedCumulative")
            status = "open" if rec.status == "pending" else rec.status
            new = (max(rec.spent, spent), max(rec.accepted, accepted), status)
            if new == (rec.spent, rec.accepted, rec.status):
                return rec  # the same counters again: nothing to write
            return dataclasses.replace(
                rec, spent=new[0], accepted=new[1], status=status, updated_at=int(self._now())
            )

        try:
            return self.records.update(cid, apply)
        except KeyError:
            raise ReceiptRejected(f"receipt for unknown channel {cid}") from None

    def close_payload(self, channel_id: str, spent: int | None = None) -> dict[str, Any]:
        """A close voucher at exactly max(spent, settled) (AMB-02, SES-36).

        `spent` defaults to the last receipt's; a server's `spent` problem extension may be
        passed to re-sign, but never above what we already authorized.
        """
        rec = self._record(channel_id)
        if spent is None:
            spent = rec.spent
        if spent > rec.cumulative:
            raise PayerError("spent exceeds the cumulative amount we signed")
        settled = rec.settled
        if self.chain is not None:
            settled = max(settled, self.chain.read_channel(rec.escrow, rec.channel_id).settled)
        amount = max(spent, settled)
        signature = self._sign(rec, amount)
        self.records.update(
            channel_id,
            lambda r: dataclasses.replace(
                r, status="closing", spent=max(r.spent, spent), settled=settled
            ),
        )
        return {
            "action": "close",
            "channelId": rec.channel_id,
            "cumulativeAmount": str(amount),
            "signature": signature,
        }

    def mark_closed(self, channel_id: str) -> PayerChannel:
        return self.records.update(channel_id, lambda r: dataclasses.replace(r, status="closed"))

    def note_server_accepted(self, channel_id: str, accepted: int) -> PayerChannel | None:
        """The server says it holds `accepted` (a stale-voucher 402): re-sync our record.

        At or below what we signed, there is nothing to do (another voucher of ours overtook
        this one). Above it, either a power loss rolled back our last records (WAL+NORMAL, see
        mpp.store.payer_records) or the server claims what we never signed; we cannot tell
        which, so the channel is set aside ("stale": never reused, nothing more signed on it)
        and the client opens a new one. Returns the record, None for an unknown channel.
        """

        def check(rec: PayerChannel) -> PayerChannel:
            if accepted <= rec.cumulative or rec.status not in ("open", "pending"):
                return rec
            return dataclasses.replace(rec, status="stale", updated_at=int(self._now()))

        try:
            return self.records.update(channel_id, check)
        except KeyError:
            return None

    # --- reuse (SES-04) -------------------------------------------------------------------------

    def sync(self, channel_id: str) -> PayerChannel:
        """Refresh deposit / settled / status from chain (needs `chain`)."""
        if self.chain is None:
            raise PayerError("no chain to read from")
        rec = follow_chain(self.records, self.chain, channel_id)
        self._synced[rec.channel_id] = time.monotonic()
        return rec

    def find_reusable_channel(self, terms: SessionTerms, cost: int) -> PayerChannel | None:
        """An open channel for this route whose deposit − max(spent, settled) ≥ cost (SES-04).

        The challenge's suggested `channelId` is preferred when it is one of ours.
        """
        found = self.records.find(
            payer=self.address,
            payee=terms.recipient,
            token=terms.currency,
            escrow=terms.escrow_contract,
            chain_id=terms.chain_id,
        )
        found.sort(key=lambda r: r.channel_id != terms.channel_id)
        for rec in found:
            if self.chain is not None and self._sync_due(rec.channel_id):
                rec = self.sync(rec.channel_id)
                if rec.status != "open":
                    continue
            if rec.deposit - max(rec.spent, rec.settled) >= cost:
                return rec
        return None

    def _sync_due(self, channel_id: str) -> bool:
        last = self._synced.get(channel_id)
        return last is None or time.monotonic() - last >= self.sync_ttl
