"""Server-side settlement: when to settle or close, how much to capture, and the escrow calls.

The payee captures exactly what it delivered, never more and never less (SES-36: MUST NOT
capture more than consumed), whatever vouchers it holds: with prepay-ahead the highest voucher
is usually above `spent`. Every settle and close therefore goes through our escrow's capture
functions (ESC-16 `settleCapture`, ESC-17 `closeCapture`): the voucher proves the payer
authorized at least that much, the capture amount says how much of it is taken, and on close the
rest of the deposit goes back to the payer.

What "delivered" means: `spent` in the store minus the reservations THIS process charged and
has not delivered yet (mpp.session.holds). A crash leaves reserved units charged (SES-28 allows
charged-but-unsent), so a crash costs the payer at most one reservation window per stream.

Rows: SES-35 (settle any time; a status-0 receipt is a definitive typed failure), SES-36 +
AMB-02 (close capture), SES-38 (a pending close request is settled at once, long before the
grace period ends), SES-44 (idle channels are closed), ESC-16/17 (calldata).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from mpp.core.errors import ChainUnavailable, ChannelNotFound, PaymentError, TransactionReverted
from mpp.session import accounting as acc
from mpp.session.escrow_abi import encode_close_capture, encode_settle_capture
from mpp.session.holds import Holds
from mpp.session.ports import Chain, ChannelState, Store

__all__ = [
    "Capture",
    "SettlementPolicy",
    "Settler",
    "close_due",
    "earned",
    "plan_close",
    "plan_settle",
    "settlement_due",
]

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 1_000_000  # 1.00 of a 6-decimal stablecoin
DEFAULT_INTERVAL = 3_600  # seconds
DEFAULT_IDLE_CLOSE = 86_400  # seconds


@dataclass(frozen=True)
class SettlementPolicy:
    """When the payee puts its earnings on chain (run by `SessionServer.maybe_settle`, which the
    chain watcher calls). On by default:

    - `threshold`: settle a channel once its unsettled earnings reach this many base units;
    - `interval`: settle unsettled earnings at least this often (seconds);
    - `idle_close`: cooperatively close a channel that saw no voucher or charge for this long
      (seconds), capturing exactly what was delivered and refunding the rest (SES-44).

    `SettlementPolicy.off()` disables all three. A channel whose payer requested a close is
    closed at once whatever the policy says (capturing what was delivered, refunding the rest
    without the payer waiting for the grace period): the payer could otherwise withdraw what it
    was served (SES-38).
    """

    threshold: int | None = DEFAULT_THRESHOLD
    interval: int | None = DEFAULT_INTERVAL
    idle_close: int | None = DEFAULT_IDLE_CLOSE

    @classmethod
    def off(cls) -> SettlementPolicy:
        return cls(None, None, None)

    @property
    def enabled(self) -> bool:
        return any(v is not None for v in (self.threshold, self.interval, self.idle_close))

    def __post_init__(self) -> None:
        for name in ("threshold", "interval", "idle_close"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value <= 0):
                raise ValueError(f"settlement {name} must be a positive int or None")


def earned(state: ChannelState, held: int = 0) -> int:
    """What the payee may capture now: `spent` minus undelivered reservations (`held`), never
    below what is already settled (settled amounts cannot move back)."""
    return max(state.settled, state.spent - min(held, state.spent))


@dataclass(frozen=True)
class Capture:
    """An escrow capture call: the voucher presented (`cumulative`, `signature`; none needed when
    nothing new is captured) and the amount the channel's `settled` becomes."""

    cumulative: int
    signature: str | None
    amount: int


def plan_settle(state: ChannelState, held: int = 0) -> Capture | None:
    """ESC-16: settle exactly the earnings with the highest voucher; None when nothing is due."""
    amount = earned(state, held)
    if state.finalized or amount <= state.settled or not state.voucher_signature:
        return None
    return Capture(state.accepted_cumulative, state.voucher_signature, amount)


def plan_close(
    state: ChannelState, held: int = 0, cumulative: int = 0, signature: str | None = None
) -> Capture:
    """ESC-17: close capturing exactly the earnings. The client's close voucher (`cumulative`,
    `signature`) is used when it covers them; a short one (below `spent`: the TypeScript client
    signs its close from the last receipt it saw) is replaced by the highest stored voucher,
    which the payer signed too and which always covers `spent` (accepted >= spent)."""
    amount = earned(state, held)
    if amount == state.settled:
        return Capture(amount, None, amount)  # nothing new: the escrow checks no signature
    if signature and cumulative >= amount:
        return Capture(cumulative, signature, amount)
    if not state.voucher_signature or state.accepted_cumulative < amount:
        raise RuntimeError("no stored voucher covers the amount spent")  # an engine bug
    return Capture(state.accepted_cumulative, state.voucher_signature, amount)


def settlement_due(
    state: ChannelState,
    policy: SettlementPolicy,
    *,
    now: int,
    last_settled_at: int,
    held: int = 0,
) -> bool:
    """Whether the earnings of `state` should go on chain now."""
    if plan_settle(state, held) is None or state.close_requested_at != 0:
        return False  # nothing to settle, or closed instead (close_due)
    unsettled = earned(state, held) - state.settled
    if policy.threshold is not None and unsettled >= policy.threshold:
        return True
    return policy.interval is not None and now - last_settled_at >= policy.interval


def close_due(state: ChannelState, policy: SettlementPolicy, *, now: int, held: int) -> bool:
    """Whether to close `state` cooperatively now: its payer requested a close (SES-38, always),
    or it is idle: untouched for `idle_close` seconds with no stream on it here (SES-44)."""
    if state.finalized:
        return False
    if state.close_requested_at != 0:
        return True
    if policy.idle_close is None or held:
        return False
    return now - state.updated_at >= policy.idle_close


def _uncertain(exc: PaymentError) -> bool:
    """Whether a failed escrow call may still land: the RPC was down, or the tx was broadcast
    and not seen mined in time. Simulation reverts, node refusals and status-0 receipts are
    definitive."""
    return isinstance(exc, ChainUnavailable) or "tx_hash" in exc.extensions


class Settler:
    """Puts earnings on chain from the server's account: settle, cooperative close, policy.

    `holds` are this process's undelivered reservations (None for a process that does not
    serve, such as `mpp channel settle`).
    """

    def __init__(
        self,
        store: Store,
        chain: Chain,
        policy: SettlementPolicy,
        *,
        now: Callable[[], int],
        tx_timeout: float,
        holds: Holds | None = None,
    ) -> None:
        self.store, self.chain, self.policy = store, chain, policy
        self._now = now
        self._holds = holds
        self.tx_timeout = tx_timeout
        self._started = now()
        self._last_settled: dict[str, int] = {}  # in-process pacing only

    def _held(self, channel_id: str) -> int:
        return 0 if self._holds is None else self._holds.get(channel_id)

    def snapshot(self, channel_id: str) -> tuple[ChannelState, int]:
        """The stored state and this process's holds, read together (mpp.session.holds)."""
        if self._holds is None:
            state = self.store.get(channel_id)
            held = 0
        else:
            with self._holds.lock(channel_id):
                state = self.store.get(channel_id)
                held = self._holds.get(channel_id)
        if state is None:
            raise ChannelNotFound("unknown channel")
        return state, held

    def _send(self, to: str, data: bytes) -> str:
        receipt = self.chain.send_call(to, data, timeout=self.tx_timeout)
        if receipt.status != 1:  # SES-35: a definitive failure, never polled
            raise TransactionReverted("escrow call reverted", txHash=receipt.tx_hash)
        return receipt.tx_hash

    def settle(self, channel_id: str) -> str | None:
        """Capture the earnings of one channel (ESC-16); the tx hash, or None if none are due."""
        state, held = self.snapshot(channel_id)
        plan = plan_settle(state, held)
        if plan is None or plan.signature is None:
            return None
        data = encode_settle_capture(state.channel_id, plan.cumulative, plan.amount, plan.signature)
        tx_hash = self._send(state.escrow, data)
        now = self._now()
        self.store.update(
            state.channel_id, lambda cur: acc.apply_settled(cur, plan.amount, now=now)
        )
        self._last_settled[state.channel_id] = now
        log.info("settled %s: captured %d in %s", state.channel_id, plan.amount, tx_hash)
        return tx_hash

    def maybe_settle(self) -> dict[str, str]:
        """Settle every channel the policy says is due (closes are `due_closes`)."""
        now, done = self._now(), {}
        for state in self.store.channels():
            last = self._last_settled.get(state.channel_id, self._started)
            held = self._held(state.channel_id)
            if not settlement_due(state, self.policy, now=now, last_settled_at=last, held=held):
                continue
            try:
                tx_hash = self.settle(state.channel_id)
            except PaymentError as exc:
                log.warning("settlement of %s failed: %s", state.channel_id, exc.detail)
                continue
            if tx_hash is not None:
                done[state.channel_id] = tx_hash
        return done

    def due_closes(self) -> list[str]:
        """Channels to close now: close requested by the payer, or idle (`close_due`)."""
        now = self._now()
        return [
            s.channel_id
            for s in self.store.channels()
            if close_due(s, self.policy, now=now, held=self._held(s.channel_id))
        ]

    def close(
        self, frozen: ChannelState, cumulative: int = 0, signature: str | None = None
    ) -> tuple[ChannelState, str]:
        """Submit the close for a row frozen by `apply_close`/`apply_freeze` (ESC-17); finalize
        it, or unfreeze it on a definitive failure (an uncertain one stays frozen until
        `reconcile`)."""
        cid = frozen.channel_id
        state, held = self.snapshot(cid)
        plan = plan_close(state, held, cumulative, signature)
        now = self._now()
        data = encode_close_capture(cid, plan.cumulative, plan.amount, plan.signature)
        try:
            tx_hash = self._send(frozen.escrow, data)
        except PaymentError as exc:
            if not _uncertain(exc):
                try:
                    self.reconcile(cid, unfreeze=True)
                except PaymentError:
                    log.warning("could not reconcile %s after a failed close", cid)
            raise
        final = self.store.update(cid, lambda cur: acc.apply_closed(cur, plan.amount, now=now))
        assert final is not None
        log.info("closed %s: captured %d, refunded the rest in %s", cid, plan.amount, tx_hash)
        return final, tx_hash

    def close_stored(self, channel_id: str) -> tuple[ChannelState, str]:
        """A payee-initiated cooperative close with the stored vouchers (idle channels, the
        operator's `mpp channel close`): captures exactly the earnings."""
        now = self._now()
        frozen = self.store.update(channel_id, lambda cur: acc.apply_freeze(cur, now=now))
        assert frozen is not None
        return self.close(frozen)

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
