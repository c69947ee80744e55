"""The payer's view of a channel, its errors, and the two ports the Payer is written against.

`PayerRecordStore` is implemented by mpp.store.payer_records.PayerRecords (one SQLite file);
`PayerChain` by mpp.chain.web3chain.Web3Chain (optional: channel reads, base fee, block time).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mpp.session.ports import OnChainChannel

__all__ = [
    "DepositExhausted",
    "PayerChain",
    "PayerChannel",
    "PayerError",
    "PayerRecordStore",
    "ReceiptRejected",
]


class PayerError(ValueError):
    """The payer cannot produce what was asked (client-side, nothing was signed)."""


class DepositExhausted(PayerError):
    """The required cumulative amount exceeds the channel deposit: top up first (SES-31)."""


class ReceiptRejected(PayerError):
    """A server receipt that contradicts what we signed."""


@dataclass(frozen=True)
class PayerChannel:
    """One channel as the payer knows it; addresses and ids lowercase, amounts int base units.

    `status`: "open" (usable), "pending" (opened, no receipt yet), "closing" (close voucher
    sent), "closed", "stale" (the server holds more than this record says: never reused).
    """

    channel_id: str
    payer: str
    payee: str
    token: str
    escrow: str
    chain_id: int
    authorized_signer: str
    salt: str
    deposit: int
    cumulative: int  # highest cumulative amount ever signed
    signature: str | None  # signature of `cumulative`
    spent: int = 0  # from the last accepted receipt (cumulative, AMB-13)
    accepted: int = 0  # acceptedCumulative from the last accepted receipt
    settled: int = 0  # last known on-chain settled amount
    status: str = "open"
    updated_at: int = 0


class PayerRecordStore(Protocol):
    """Durable channel records (mpp.store.payer_records.PayerRecords is the SQLite one)."""

    def get(self, channel_id: str) -> PayerChannel | None: ...

    def put(self, rec: PayerChannel) -> None: ...

    def update(
        self, channel_id: str, change: Callable[[PayerChannel], PayerChannel]
    ) -> PayerChannel: ...

    def find(
        self, *, payer: str, payee: str, token: str, escrow: str, chain_id: int, status: str = ...
    ) -> list[PayerChannel]: ...


class PayerChain(Protocol):
    """What the payer may read from chain (optional): channel state, base fee, block time."""

    def read_channel(self, escrow: str, channel_id: str) -> OnChainChannel: ...

    def base_fee(self) -> int: ...

    def latest_timestamp(self) -> int: ...
