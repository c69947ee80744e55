"""The two small ports the session engine is written against: a Chain and a Store.

Adapters live in mpp/chain (web3 + pytempo) and mpp/store (SQLite, PostgreSQL, memory).
Everything here is plain data: addresses and ids are lowercase 0x-hex strings, amounts are
int base units (never floats), times are int unix seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class OnChainChannel:
    """The escrow's `getChannel` struct (ESC-02 order), addresses lowercase."""

    channel_id: str
    finalized: bool
    close_requested_at: int
    payer: str
    payee: str
    token: str
    authorized_signer: str
    deposit: int
    settled: int

    @property
    def exists(self) -> bool:
        return self.payer != "0x" + "00" * 20 or self.finalized


@dataclass(frozen=True)
class ChannelState:
    """Server-side accounting for one channel, keyed by lowercase channel id (AMB-01).

    Invariants kept by the engine: spent <= accepted_cumulative <= deposit and
    settled <= accepted_cumulative. The payee captures exactly what was delivered
    (mpp.session.settlement), so `settled <= spent` on rows this version settled; an older
    row may hold settled > spent (the whole voucher was settled). `available =
    accepted_cumulative - spent`.
    """

    channel_id: str
    escrow: str
    chain_id: int
    payer: str
    payee: str
    token: str
    authorized_signer: str  # raw on-chain value, 0x00..00 when not delegated
    deposit: int
    settled: int
    accepted_cumulative: int
    spent: int
    voucher_signature: str | None  # signature of the highest accepted voucher (65-byte hex)
    close_requested_at: int = 0
    finalized: bool = False
    refreshed_at: int = 0  # when chain fields were last read from chain
    updated_at: int = 0

    @property
    def available(self) -> int:
        return self.accepted_cumulative - self.spent

    @property
    def expected_signer(self) -> str:
        """SES-12: authorizedSigner when set, else the payer."""
        if self.authorized_signer != "0x" + "00" * 20:
            return self.authorized_signer
        return self.payer


@dataclass(frozen=True)
class VoucherRecord:
    """Audit trail row: which challenge brought which voucher (SES-25, AMB-01)."""

    channel_id: str
    cumulative_amount: int
    signature: str
    challenge_id: str
    received_at: int


@dataclass(frozen=True)
class Mutation:
    """What an update function decides: the new state and the audit rows to append.

    `state=None` means "no change" (the transaction commits nothing but the audit rows).
    """

    state: ChannelState | None
    vouchers: tuple[VoucherRecord, ...] = field(default_factory=tuple)


class Store(Protocol):
    """Durable, linearizable per-channel state (docs/development.md, "Storage and concurrency").

    `update` runs `decide(current)` inside one transaction that holds the channel's lock across
    threads, tasks and processes (SQLite BEGIN IMMEDIATE, PostgreSQL SELECT ... FOR UPDATE), then
    writes the returned state and audit rows before returning. If `decide` raises, nothing is
    written and the exception propagates. `decide` must be pure (no I/O): it may run again on a
    serialization retry.
    """

    def get(self, channel_id: str) -> ChannelState | None: ...

    def update(
        self, channel_id: str, decide: Callable[[ChannelState | None], Mutation]
    ) -> ChannelState | None: ...

    def vouchers(self, channel_id: str) -> list[VoucherRecord]: ...

    def channels(self) -> list[ChannelState]: ...

    def get_idempotent(self, scope: str, key: str) -> bytes | None: ...

    def put_idempotent(self, scope: str, key: str, response: bytes) -> bool:
        """Store once; returns False when a record already existed (first writer wins)."""
        ...

    def replace_idempotent(self, scope: str, key: str, response: bytes) -> None:
        """Overwrite a record (a request first reserves its key with a pending marker via
        put_idempotent, runs, then replaces the marker with the final response)."""
        ...

    def delete_idempotent(self, scope: str, key: str, expected: bytes) -> bool:
        """Compare-and-delete: remove the record only while it still equals `expected` (a
        request frees its own pending marker, never another's); True when removed."""
        ...

    def get_meta(self, key: str) -> str | None:
        """A small durable setting of the server itself (the chain watcher's block cursor)."""
        ...

    def put_meta(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...


class VoucherFeed(Protocol):
    """Optional Store capability: hear about vouchers accepted by OTHER processes.

    `update` calls that append voucher rows (an accepted voucher, an open, a close) announce
    the channel id once they commit; `subscribe_vouchers(callback)` calls `callback(channel_id)`
    for each, from a listener thread, and `callback(None)` when announcements may have been
    missed (the listener reconnected): wake everything. Returns an unsubscribe function.
    PostgreSQL implements it (LISTEN/NOTIFY); SQLite and memory do not (one process's
    wake-ups stay in-process, mpp.http.server.waiters).
    """

    def subscribe_vouchers(self, callback: Callable[[str | None], None]) -> Callable[[], None]: ...


@dataclass(frozen=True)
class TxReceipt:
    tx_hash: str
    status: int  # 1 success, 0 reverted
    block_number: int
    gas_used: int
    logs: tuple[dict[str, object], ...] = ()


@dataclass(frozen=True)
class ChannelEvent:
    """One escrow event (ESC-04) as the chain watcher sees it; ids and addresses lowercase.

    `name` is the event name (`CloseRequested`, `TopUp`, `Settled`, `ChannelClosed`, ...) and
    `args` its non-indexed fields (amounts as int).
    """

    name: str
    channel_id: str
    block_number: int
    tx_hash: str
    log_index: int
    args: dict[str, object] = field(default_factory=dict)


class Chain(Protocol):
    """What the engine needs from a chain; never called per voucher (docs/development.md)."""

    chain_id: int

    def block_number(self) -> int:
        """The latest block's number."""
        ...

    def channel_events(self, escrow: str, from_block: int, to_block: int) -> list[ChannelEvent]:
        """The escrow's events in [from_block, to_block], in chain order."""
        ...

    def read_channel(self, escrow: str, channel_id: str) -> OnChainChannel: ...

    def send_raw_transaction(self, raw: bytes, *, timeout: float = 10.0) -> TxReceipt:
        """Broadcast and wait for the receipt; a silent drop raises after `timeout`."""
        ...

    def send_call(self, to: str, data: bytes, *, timeout: float = 10.0) -> TxReceipt:
        """Send a call from the server's own account (settle, close)."""
        ...

    def latest_timestamp(self) -> int: ...
