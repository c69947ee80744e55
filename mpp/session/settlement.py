"""Server-side settlement: when to settle, and the escrow calls that move money to the payee.

Rows: SES-35 (settle any time with the highest voucher; receipt status 0 is a definitive typed
failure), SES-36 + AMB-02 (a cooperative close captures exactly what was consumed), SES-38 (a
pending close request must be settled within the grace period), ESC-07/ESC-10 (calldata).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from mpp.core.errors import ChainUnavailable, ChannelNotFound, PaymentError, TransactionReverted
from mpp.session import accounting as acc
from mpp.session.accounting import close_bounds
from mpp.session.escrow_abi import encode_close, encode_settle
from mpp.session.ports import Chain, ChannelState, Store, VoucherRecord

__all__ = [
    "SettlementPolicy",
    "Settler",
    "choose_close_voucher",
    "encode_close",
    "encode_settle",
    "settlement_due",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SettlementPolicy:
    """When `SessionServer.maybe_settle()` settles a live channel (closes always settle).

    A channel with a pending close request is settled at once: the payer can withdraw the rest
    after the grace period (SES-38).
    """

    every_amount: int | None = None  # settle when accepted - settled >= this many base units
    every_seconds: int | None = None  # settle unsettled channels at least this often


def settlement_due(
    state: ChannelState, policy: SettlementPolicy, *, now: int, last_settled_at: int
) -> bool:
    """Whether the highest voucher of `state` should go on chain now."""
    unsettled = state.accepted_cumulative - state.settled
    if state.finalized or unsettled <= 0 or not state.voucher_signature:
        return False
    if state.close_requested_at != 0:
        return True
    if policy.every_amount is not None and unsettled >= policy.every_amount:
        return True
    return policy.every_seconds is not None and now - last_settled_at >= policy.every_seconds


def choose_close_voucher(
    state: ChannelState, cum: int, signature: str, history: list[VoucherRecord]
) -> tuple[int, str | None]:
    """AMB-02: what to submit for an accepted close voucher `cum` on a frozen `state`.

    Capture exactly `spent` when possible: nothing to sign when spent == settled, otherwise a
    stored voucher for exactly `spent`; else the client's explicitly signed `cum`.
    """
    low, _ = close_bounds(state)
    if cum == low:
        return cum, signature if cum > state.settled else None
    if low == state.settled:
        return low, None
    for row in reversed(history):
        if row.cumulative_amount == low:
            return low, row.signature
    return cum, signature


def _uncertain(exc: PaymentError) -> bool:
    """Whether a failed escrow call may still land: the RPC was down, or the tx was broadcast
    and not seen mined in time. Simulation reverts, node refusals and status-0 receipts are
    definitive."""
    return isinstance(exc, ChainUnavailable) or "tx_hash" in exc.extensions


class Settler:
    """Puts vouchers on chain from the server's account: settle, cooperative close, policy."""

    def __init__(
        self,
        store: Store,
        chain: Chain,
        policy: SettlementPolicy,
        *,
        now: Callable[[], int],
        tx_timeout: float,
    ) -> None:
        self.store, self.chain, self.policy = store, chain, policy
        self._now = now
        self.tx_timeout = tx_timeout
        self._started = now()
        self._last_settled: dict[str, int] = {}  # in-process pacing only

    def _send(self, to: str, data: bytes) -> str:
        receipt = self.chain.send_call(to, data, timeout=self.tx_timeout)
        if receipt.status != 1:  # SES-35: a definitive failure, never polled
            raise TransactionReverted("escrow call reverted", txHash=receipt.tx_hash)
        return receipt.tx_hash

    def settle(self, channel_id: str) -> str | None:
        state = self.store.get(channel_id)
        if state is None:
            raise ChannelNotFound("unknown channel")
        amount, signature = state.accepted_cumulative, state.voucher_signature
        if state.finalized or amount <= state.settled or not signature:
            return None
        tx_hash = self._send(state.escrow, encode_settle(state.channel_id, amount, signature))
        now = self._now()
        self.store.update(state.channel_id, lambda cur: acc.apply_settled(cur, amount, now=now))
        self._last_settled[state.channel_id] = now
        log.info("settled %s up to %d in %s", state.channel_id, amount, tx_hash)
        return tx_hash

    def maybe_settle(self) -> dict[str, str]:
        now, done = self._now(), {}
        for state in self.store.channels():
            last = self._last_settled.get(state.channel_id, self._started)
            if not settlement_due(state, self.policy, now=now, last_settled_at=last):
                continue
            try:
                tx_hash = self.settle(state.channel_id)
            except PaymentError as exc:
                log.warning("settlement of %s failed: %s", state.channel_id, exc.detail)
                continue
            if tx_hash is not None:
                done[state.channel_id] = tx_hash
        return done

    def close(self, frozen: ChannelState, cum: int, signature: str) -> tuple[ChannelState, str]:
        """Submit the close for a row `apply_close` froze; finalize it, or unfreeze on a
        definitive failure (an uncertain one stays frozen until `reconcile`)."""
        cid = frozen.channel_id
        amount, sig = choose_close_voucher(frozen, cum, signature, self.store.vouchers(cid))
        if amount > frozen.spent:
            log.info("closing %s above spent (%d > %d): client-signed", cid, amount, frozen.spent)
        now = self._now()
        try:
            tx_hash = self._send(frozen.escrow, encode_close(cid, amount, sig))
        except PaymentError as exc:
            if not _uncertain(exc):
                try:
                    self.reconcile(cid, unfreeze=True)
                except PaymentError:
                    log.warning("could not reconcile %s after a failed close", cid)
            raise
        final = self.store.update(cid, lambda cur: acc.apply_closed(cur, amount, now=now))
        assert final is not None
        return final, tx_hash

    def close_stored(self, channel_id: str) -> tuple[ChannelState, str]:
        """A payee-initiated cooperative close with the stored vouchers: captures exactly
        `spent` when a voucher for it is stored, else the highest voucher (AMB-02)."""
        now = self._now()
        frozen = self.store.update(channel_id, lambda cur: acc.apply_freeze(cur, now=now))
        assert frozen is not None
        return self.close(frozen, frozen.accepted_cumulative, frozen.voucher_signature or "0x")

    def reconcile(self, channel_id: str, *, unfreeze: bool = True) -> ChannelState:
        """Re-read the channel; a row frozen by a close that did not happen is unfrozen."""
        state = self.store.get(channel_id)
        if state is None:
            raise ChannelNotFound("unknown channel")
        onchain = self.chain.read_channel(state.escrow, channel_id)
        now = self._now()
        if unfreeze and state.finalized and not onchain.finalized:
            self.store.update(channel_id, lambda cur: acc.apply_close_abort(cur, now=now))
        new = self.store.update(channel_id, lambda cur: acc.apply_refresh(cur, onchain, now=now))
        assert new is not None
        return new
