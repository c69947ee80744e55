"""Payment-layer metrics: what the gate and the middleware decide, and where the money is.

Two kinds, both on a `CollectorRegistry` the caller owns (one per app, never the global one):

- **events**, counted as they happen: `PaymentObserver` is the hook the gate
  (`PaymentGate.observer`) and the middleware call at their verdicts; it does nothing by
  default. `PaymentMetrics` counts them (credentials accepted by action, refused by problem
  type, stream pauses, streams started and active) and keeps the last refusals for an
  operator to read.
- **state**, read at scrape time: `ChannelCollector` sums the store's channel rows (deposit,
  accepted, delivered, settled, unsettled) and `WatcherCollector` reads the chain watcher's
  status. Nothing is kept in parallel with the store, so the figures agree with
  `mpp channel list` and survive restarts.

Amounts are integer base units of the channel currency (pathUSD: 6 decimals). No protocol
decision is made here: "delivered" is `mpp.session.settlement.earned`, what settlement would
capture.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from mpp.core.errors import PaymentError
from mpp.session.engine import SessionServer
from mpp.session.ports import ChannelState
from mpp.session.settlement import earned
from mpp.session.watcher import WatcherStatus

__all__ = [
    "ChannelCollector",
    "ChannelFigures",
    "PaymentMetrics",
    "PaymentObserver",
    "Refusal",
    "Totals",
    "WatcherCollector",
    "channel_figures",
    "problem_name",
    "totals",
]

log = logging.getLogger(__name__)

ACTIONS: Final = frozenset({"open", "voucher", "topUp", "close"})
_CHANNEL_ID: Final = re.compile(r"0x[0-9a-f]{64}")
_UNITS: Final = "base units of the channel currency"


def problem_name(exc: PaymentError) -> str:
    """The short name of a problem type: `session/invalid-signature` → `invalid-signature`."""
    return exc.problem.rsplit("/", 1)[-1]


class PaymentObserver:
    """The payment layer's hooks, called at each verdict; all no-ops. Subclass to observe.

    Called from the event loop and from worker threads (the gate's engine work): an
    implementation must be thread-safe and quick, and must not raise."""

    def accepted(self, action: str, channel_id: str) -> None:
        """The engine accepted a credential (`open`, `voucher`, `topUp`, `close`)."""

    def refused(self, exc: PaymentError, channel_id: str | None) -> None:
        """A credential failed; `exc` is what the peer is answered (after rate limiting)."""

    def paused(self, channel_id: str) -> None:
        """A metered stream ran dry and waits for a voucher."""

    def stream_started(self, channel_id: str) -> None:
        """A paid event stream began (its 2xx started)."""

    def stream_ended(self, channel_id: str) -> None:
        """A paid event stream that `stream_started` ended, however it ended."""


@dataclass(frozen=True)
class Refusal:
    reason: str  # the problem type's short name
    at: float  # unix time
    channel_id: str | None  # None when the credential named no well-formed channel


class PaymentMetrics(PaymentObserver):
    """Counts the payment layer's events on `registry`; keeps the last `recent` refusals."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        recent: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._refusals: deque[Refusal] = deque(maxlen=recent)
        self.active_streams = 0
        self.pauses = 0
        self._accepted = Counter(
            "mpp_vouchers_accepted",
            "Payment credentials the session engine accepted, by action "
            "(open, voucher, topUp, close).",
            ["action"],
            registry=registry,
        )
        self._refused = Counter(
            "mpp_vouchers_refused",
            "Payment credentials refused, by the short name of the problem type answered "
            "(e.g. invalid-signature, rate-limited).",
            ["reason"],
            registry=registry,
        )
        self._pauses = Counter(
            "mpp_stream_pauses",
            "Metered streams that ran out of authorization and waited for a voucher.",
            registry=registry,
        )
        self._started = Counter(
            "mpp_streams_started", "Paid event streams started.", registry=registry
        )
        self._active = Gauge(
            "mpp_streams_active", "Paid event streams in progress.", registry=registry
        )

    def accepted(self, action: str, channel_id: str) -> None:
        self._accepted.labels(action if action in ACTIONS else "other").inc()

    def refused(self, exc: PaymentError, channel_id: str | None) -> None:
        reason = problem_name(exc)
        self._refused.labels(reason).inc()
        # A stranger chooses the channel id it sends: show it only when it is well formed.
        shown = channel_id if channel_id and _CHANNEL_ID.fullmatch(channel_id) else None
        with self._lock:
            self._refusals.append(Refusal(reason, self._clock(), shown))

    def paused(self, channel_id: str) -> None:
        self._pauses.inc()
        with self._lock:
            self.pauses += 1

    def stream_started(self, channel_id: str) -> None:
        self._started.inc()
        self._active.inc()
        with self._lock:
            self.active_streams += 1

    def stream_ended(self, channel_id: str) -> None:
        self._active.dec()
        with self._lock:
            self.active_streams -= 1

    def recent_refusals(self) -> list[Refusal]:
        """Newest first."""
        with self._lock:
            return list(reversed(self._refusals))


# --- where the money is, from the store ----------------------------------------------------------


@dataclass(frozen=True)
class ChannelFigures:
    """One channel as an operator reads it. `spent` is what was delivered (what settlement
    captures: `spent` minus this process's undelivered reservations); `unsettled` the part
    of it not yet captured on chain (0 once the channel is closed)."""

    channel_id: str
    payer: str
    state: str  # "open", "closing" (the payer requested a close), "closed"
    deposit: int
    accepted: int
    spent: int
    settled: int
    unsettled: int
    updated_at: int


def _figures(state: ChannelState, held: int) -> ChannelFigures:
    delivered = earned(state, held)
    if state.finalized:
        status, unsettled = "closed", 0
    else:
        status = "closing" if state.close_requested_at else "open"
        unsettled = delivered - state.settled
    return ChannelFigures(
        state.channel_id,
        state.payer,
        status,
        state.deposit,
        state.accepted_cumulative,
        delivered,
        state.settled,
        unsettled,
        state.updated_at,
    )


def channel_figures(engine: SessionServer) -> list[ChannelFigures]:
    """Every channel of the engine's store (blocking: a store read)."""
    return [_figures(s, engine.held(s.channel_id)) for s in engine.store.channels()]


@dataclass(frozen=True)
class Totals:
    channels: dict[str, int]  # by state
    deposit: int  # escrowed in channels not closed
    accepted: int
    spent: int
    settled: int
    unsettled: int  # delivered, not settled, on channels not closed
    unsettled_accepted: int  # authorized by vouchers, not settled, on channels not closed


def totals(figures: Sequence[ChannelFigures]) -> Totals:
    count = {"open": 0, "closing": 0, "closed": 0}
    for f in figures:
        count[f.state] += 1
    live = [f for f in figures if f.state != "closed"]
    return Totals(
        channels=count,
        deposit=sum(f.deposit for f in live),
        accepted=sum(f.accepted for f in figures),
        spent=sum(f.spent for f in figures),
        settled=sum(f.settled for f in figures),
        unsettled=sum(f.unsettled for f in live),
        unsettled_accepted=sum(max(0, f.accepted - f.settled) for f in live),
    )


class ChannelCollector(Collector):
    """Store-derived gauges, computed at each scrape."""

    def __init__(self, engine: SessionServer) -> None:
        self.engine = engine

    def describe(self) -> Iterable[Metric]:
        return ()  # computed at scrape time; no names reserved at registration

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("mpp_store_up", "1 if the last scrape could read the store.")
        try:
            sums = totals(channel_figures(self.engine))
        except Exception as exc:  # a scrape must not fail because the store is down
            log.warning("metrics: cannot read the store (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        channels = GaugeMetricFamily(
            "mpp_channels",
            "Channels in the store, by state (open, closing, closed).",
            labels=["state"],
        )
        for name, n in sums.channels.items():
            channels.add_metric([name], n)
        yield channels
        for name, value, help_text in (
            ("mpp_deposit_base_units", sums.deposit, "Deposits escrowed in channels not closed"),
            ("mpp_accepted_base_units", sums.accepted, "Highest accepted vouchers, all channels"),
            ("mpp_spent_base_units", sums.spent, "Delivered (charged and sent), all channels"),
            ("mpp_settled_base_units", sums.settled, "Captured on chain, all channels"),
            (
                "mpp_unsettled_base_units",
                sums.unsettled,
                "Delivered but not yet captured on chain, channels not closed",
            ),
            (
                "mpp_unsettled_accepted_base_units",
                sums.unsettled_accepted,
                "Authorized by accepted vouchers but not captured on chain, channels not closed",
            ),
        ):
            yield GaugeMetricFamily(name, f"{help_text} ({_UNITS}).", value=value)


class WatcherCollector(Collector):
    """The chain watcher's position, read at each scrape (`ChainWatcher.status`)."""

    def __init__(
        self, status: Callable[[], WatcherStatus], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.status = status
        self._clock = clock

    def describe(self) -> Iterable[Metric]:
        return ()

    def collect(self) -> Iterable[Metric]:
        try:
            st = self.status()
        except Exception as exc:  # the cursor lives in the store
            log.warning("metrics: cannot read the chain watcher (%s)", type(exc).__name__)
            return
        yield GaugeMetricFamily(
            "mpp_chain_watcher_running",
            "1 while the chain watcher thread runs.",
            value=int(st.running),
        )
        yield GaugeMetricFamily(
            "mpp_chain_watcher_failures",
            "Consecutive failed chain watcher rounds (0: healthy).",
            value=st.failures,
        )
        for name, value, help_text in (
            ("mpp_chain_watcher_head_block", st.head, "Latest block the chain watcher saw."),
            (
                "mpp_chain_watcher_cursor_block",
                st.cursor,
                "Last block whose escrow events were handled.",
            ),
            (
                "mpp_chain_watcher_lag_blocks",
                st.lag_blocks,
                "Blocks between the head and the cursor.",
            ),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=value)
        if st.last_ok is not None:
            yield GaugeMetricFamily(
                "mpp_chain_watcher_last_success_timestamp_seconds",
                "Unix time of the last successful chain watcher round.",
                value=st.last_ok,
            )
            yield GaugeMetricFamily(
                "mpp_chain_watcher_seconds_since_success",
                "Seconds since the last successful chain watcher round.",
                value=max(0.0, self._clock() - st.last_ok),
            )
