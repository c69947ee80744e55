"""What the inference app tells its operator: `/metrics`, one access-log line per request,
provider speeds, and the in-memory series of what was spent.

`Observability` is built once per app (`create_app`) over its own `CollectorRegistry`, so many
apps can live in one process (the tests build dozens). It holds:

- the payment layer's metrics (`mpp.http.server.metrics`): the gate's observer, and the
  store- and watcher-derived gauges computed at scrape time;
- request metrics and the access log (`begin` / `sending` / `finish`, driven by the app's
  front door): method, path, status, duration, the payment outcome, and units and cost when
  paid. Headers are never logged (they carry credentials and API keys), nor query strings;
- provider metrics: time to first token and tokens per second, per provider;
- `SpendSeries`: delivered base units through this process since it started, for the
  operator page's chart.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import anyio.to_thread
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response

from mpp.core.errors import PROBLEM_BASE
from mpp.core.problem import PROBLEM_CONTENT_TYPE
from mpp.http.server.asgi import Message, Scope, Send
from mpp.http.server.meter import Meter
from mpp.http.server.metrics import ChannelCollector, PaymentMetrics, WatcherCollector
from mpp.inference.completion import Attempt, Delta, Done, Outcome
from mpp.inference.settings import InferenceSettings

__all__ = [
    "ACCESS_LOGGER",
    "Observability",
    "ProviderMetrics",
    "RequestRecord",
    "SpendSeries",
    "attach_meter",
    "payment_outcome",
    "stderr_logging",
]

ACCESS_LOGGER: Final = "mpp.inference.access"
RECORD_KEY: Final = "mpp.observe.record"
_MAX_PROBLEM: Final = 16 * 1024
_TTFT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_SPEED_BUCKETS: Final = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0)

access_log = logging.getLogger(ACCESS_LOGGER)


@dataclass
class RequestRecord:
    """One request as the access log sees it; lives in the ASGI scope under RECORD_KEY."""

    method: str
    path: str
    route: str  # a known route, or "other" (bounded metric labels)
    peer: str
    auth: str  # the Authorization scheme, lowercase ("payment", "bearer"), or ""
    started: float
    status: int = 0
    receipt: bool = False  # a Payment-Receipt went out
    problem: str | None = None  # a payment problem's short name, when one was answered
    provider: str | None = None
    meter: Meter | None = None  # the paid handler's meter (attach_meter)
    _body: bytes = b""
    _sniff: bool = False


def attach_meter(scope: Scope, meter: Meter) -> None:
    """Called by the handler: the access log reads units and cost from the meter at the end."""
    record = scope.get(RECORD_KEY)
    if isinstance(record, RequestRecord):
        record.meter = meter


def payment_outcome(record: RequestRecord) -> str:
    """`paid`, `402` (a challenge), `refused:<problem>`, `api-key` or `unpaid`."""
    if record.auth == "payment" and record.problem and record.problem != "payment-required":
        return f"refused:{record.problem}"
    if record.status == 402:
        return "402"
    if record.receipt:
        return "paid"
    if record.auth == "bearer":
        return "api-key"
    return "unpaid"


def _printable(text: str, limit: int = 200) -> str:
    """No control characters or spaces in a log field (a path is percent-decoded)."""
    out = "".join(c if "!" <= c <= "~" else "?" for c in text[:limit])
    return out + ("..." if len(text) > limit else "")


def _auth_scheme(scope: Scope) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"authorization":
            scheme = bytes(value).decode("latin-1").strip().partition(" ")[0].lower()
            return scheme if scheme in ("payment", "bearer") else "other"
    return ""


def _problem_name(body: bytes) -> str | None:
    try:
        problem = json.loads(body)
    except ValueError:
        return None
    kind = problem.get("type") if isinstance(problem, dict) else None
    if not isinstance(kind, str) or not kind.startswith(PROBLEM_BASE):
        return None
    return _printable(kind.rsplit("/", 1)[-1], 64)


class SpendSeries:
    """Delivered base units through this process since it started, sampled as paid requests
    end: (unix time, cumulative) points, one per `resolution`-second bucket, the last `size`
    kept (an hour of steady traffic on the defaults). Integers only."""

    def __init__(
        self, *, size: int = 720, resolution: int = 5, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self.resolution = max(1, resolution)
        self.since = int(clock())
        self.total = 0
        self._lock = threading.Lock()
        self._points: deque[tuple[int, int]] = deque([(self.since, 0)], maxlen=max(2, size))

    def add(self, amount: int) -> None:
        if amount <= 0:
            return
        now = int(self._clock())
        with self._lock:
            self.total += amount
            last = self._points[-1][0]
            # One point per `resolution`-second bucket (its latest sample); the start stays.
            if len(self._points) > 1 and last // self.resolution == now // self.resolution:
                self._points[-1] = (now, self.total)
            else:
                self._points.append((now, self.total))

    def points(self) -> list[tuple[int, int]]:
        with self._lock:
            return list(self._points)


class ProviderMetrics:
    """Time to first token and generation speed, per provider."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._ttft = Histogram(
            "mpp_provider_ttft_seconds",
            "Seconds from a provider's request to its first token.",
            ["provider"],
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        self._speed = Histogram(
            "mpp_provider_tokens_per_second",
            "Completion tokens per second after the first one, per finished completion "
            "(a paid stream's waits for vouchers included).",
            ["provider"],
            buckets=_SPEED_BUCKETS,
            registry=registry,
        )
        self._tokens = Counter(
            "mpp_provider_completion_tokens",
            "Completion tokens generated, per provider.",
            ["provider"],
            registry=registry,
        )

    def first_token(self, attempt: Attempt) -> None:
        self._ttft.labels(attempt.entry.name).observe(attempt.first_token_at - attempt.started)

    async def timed(
        self, attempt: Attempt, outcomes: AsyncIterator[Outcome]
    ) -> AsyncIterator[Outcome]:
        """`outcomes`, passed through; the last one (Done, Failed, Stopped) is measured."""
        try:
            async for out in outcomes:
                if not isinstance(out, Delta):
                    self._finished(attempt, out)
                yield out
        finally:
            aclose = getattr(outcomes, "aclose", None)
            if aclose is not None:  # close the provider's stream now, not at garbage collection
                await aclose()

    def _finished(self, attempt: Attempt, out: Outcome) -> None:
        name = attempt.entry.name
        tokens = out.usage.completion_tokens if not isinstance(out, Delta) else 0
        if tokens > 0:
            self._tokens.labels(name).inc(tokens)
        elapsed = time.perf_counter() - attempt.first_token_at
        if isinstance(out, Done) and tokens >= 2 and elapsed > 0:
            self._speed.labels(name).observe((tokens - 1) / elapsed)


class Observability:
    """One app's registry, metrics, access log and spend series (see the module doc)."""

    def __init__(self, settings: InferenceSettings, routes: frozenset[str]) -> None:
        self.registry = CollectorRegistry()
        self.routes = routes
        self.series = SpendSeries()
        self.payment: PaymentMetrics | None = None
        if settings.payment is not None:
            self.payment = PaymentMetrics(self.registry)
            self.registry.register(ChannelCollector(settings.payment.engine))
        if settings.watcher is not None:
            self.registry.register(WatcherCollector(settings.watcher.status))
        self.providers = ProviderMetrics(self.registry)
        self._requests = Counter(
            "mpp_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self._duration = Histogram(
            "mpp_http_request_duration_seconds",
            "Seconds from a request's arrival to the end of its response (a stream's whole "
            "length).",
            ["route"],
            registry=self.registry,
        )

    async def metrics(self, request: Request) -> Response:
        """GET /metrics: the Prometheus text format, or OpenMetrics when the scraper asks for it
        (Accept); the store is read off the event loop."""
        encode, media_type = choose_encoder(request.headers.get("accept", ""))
        body = await anyio.to_thread.run_sync(encode, self.registry)
        return Response(body, headers={"content-type": media_type, "cache-control": "no-store"})

    # --- one request ----------------------------------------------------------------------------

    def begin(self, scope: Scope) -> RequestRecord:
        path = str(scope.get("path", ""))
        client = scope.get("client")
        record = RequestRecord(
            method=_printable(str(scope.get("method", "")).upper(), 16),
            path=_printable(path),
            route=path if path in self.routes else "other",
            peer=_printable(str(client[0])) if client else "-",
            auth=_auth_scheme(scope),
            started=time.perf_counter(),
        )
        scope[RECORD_KEY] = record  # copies of the scope (the middleware's) keep it
        return record

    def sending(self, record: RequestRecord, send: Send) -> Send:
        """`send`, noting the status, the receipt, the provider and a payment problem's type."""

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                record.status = int(message.get("status", 0))
                for key, value in message.get("headers", ()):
                    name = bytes(key).lower()
                    if name == b"payment-receipt":
                        record.receipt = True
                    elif name == b"x-mpp-provider":
                        record.provider = _printable(bytes(value).decode("latin-1"), 64)
                    elif name == b"content-type":
                        ctype = bytes(value).decode("latin-1")
                        record._sniff = ctype.startswith(PROBLEM_CONTENT_TYPE)
            elif message["type"] == "http.response.body" and record._sniff:
                record._body += bytes(message.get("body", b""))[: _MAX_PROBLEM - len(record._body)]
                if not message.get("more_body", False):
                    record.problem = _problem_name(record._body)
                    record._sniff, record._body = False, b""
            await send(message)

        return wrapped

    def finish(self, record: RequestRecord) -> None:
        elapsed = time.perf_counter() - record.started
        status = str(record.status or 499)  # 499: the client left before any answer
        self._requests.labels(record.method, record.route, status).inc()
        self._duration.labels(record.route).observe(elapsed)
        outcome = payment_outcome(record)
        fields = [
            f"method={record.method}",
            f"path={record.path}",
            f"status={status}",
            f"duration_ms={elapsed * 1000:.1f}",
            f"payment={outcome}",
        ]
        meter = record.meter
        if meter is not None and meter.is_paid:
            fields += [f"units={meter.units}", f"cost={meter.cost}"]
            if outcome == "paid" and 200 <= record.status < 300:
                self.series.add(meter.cost)
        if record.provider:
            fields.append(f"provider={record.provider}")
        fields.append(f"peer={record.peer}")
        access_log.info("%s", " ".join(fields))


@contextmanager
def stderr_logging(level: str = "info") -> Iterator[None]:
    """`mpp serve`: the `mpp` loggers (the access log included) print to stderr at `level`
    while the block runs; the handler is removed after it."""
    logger = logging.getLogger("mpp")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    before = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False  # no second copy through a root handler
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]
