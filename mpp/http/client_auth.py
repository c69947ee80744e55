"""`PaymentAuth`: an httpx.Auth that pays `Payment` challenges with a session Payer.

One generator flow (`auth_flow`) serves httpx.Client and httpx.AsyncClient, like httpx's own
DigestAuth; the two thin drivers only read the body of a 402/410 (its problem details). Per
request: `Accept-Payment` is sent; on 402 the best `tempo/session` challenge is checked (expiry
CORE-14, body digest CORE-13, TLS CORE-42, spending policy CORE-39) before anything is signed; a
known channel is reused (SES-04/39) or a new one opened; the request is retried with the
credential (at most twice: a second time only when the server says the balance fell short, or
that it holds more than our records on a channel that then is set aside).

Pay ahead (AMB-05: a session challenge serves many credentials until `expires`): the last
challenge that paid for (origin, path, method) is kept, and while it is unexpired (CORE-14) and
an open channel fits its terms (SES-04), the FIRST attempt already carries a `voucher`
credential (cumulative = spent + price, plus the prepay window), so a paid request on an open
channel is one round trip. A body-bound challenge (`digest`, CORE-13) only fits the same body;
for another body a digest-free one is fetched once with `HEAD` (AMB-05). If the server answers
402/410 anyway (challenge expired or rotated, price changed, balance short, channel closed),
the ordinary flow above runs once on that answer: vouchers are cumulative and the payer never
signs below what it signed, so re-signing never pays twice.

Paid requests carry an `Idempotency-Key` (CORE-47); network errors are never retried here, so
nothing is paid twice behind the caller's back. Receipts: `response.extensions["mpp.receipts"]`,
`auth.receipts`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import anyio
import anyio.to_thread
import httpx

from mpp.core.challenge import Challenge, parse_challenges
from mpp.core.credential import Credential
from mpp.core.digest import check_content_digest
from mpp.core.errors import InsecureTransport, PaymentError
from mpp.core.http import require_secure_url
from mpp.core.negotiate import rank_challenges
from mpp.core.receipt import parse_receipt
from mpp.http.client_model import (
    MAX_CACHED,
    PAID_RETRY_METHODS,
    RECEIPTS_KEY,
    CachedChallenge,
    PaidExchange,
    PaymentDeclined,
    RouteKey,
    amount_of,
    problem_of,
    retry_after,
    route_key,
    superseded,
    unix_expires,
)
from mpp.http.client_stream import PaidAsyncStream, PaidSyncStream
from mpp.http.sse import is_event_stream
from mpp.session.budget import StreamBudget
from mpp.session.payer import Payer, PayerChannel, PayerError, ReceiptRejected
from mpp.session.policy import PolicyViolation
from mpp.session.terms import SessionTerms, TermsError
from mpp.session.window import LeadWindow

log = logging.getLogger(__name__)


def _resume(
    flow: Generator[httpx.Request, httpx.Response, None], response: httpx.Response
) -> httpx.Request | None:
    """The flow's next request, None once it is done (StopIteration cannot cross threads)."""
    try:
        return flow.send(response)
    except StopIteration:
        return None


def _same_payee(previous: PaidExchange, terms: SessionTerms) -> bool:
    try:
        before = SessionTerms.from_request(previous.challenge.request)
    except TermsError:
        return False
    keys = ("recipient", "currency", "escrow_contract", "chain_id")
    return all(getattr(before, k) == getattr(terms, k) for k in keys)


class PaymentAuth(httpx.Auth):
    """Pays `tempo/session` 402s for httpx clients (sync and async)."""

    def __init__(
        self,
        payer: Payer,
        *,
        allow_insecure: bool = False,
        deposit: int | None = None,
        prepay_units: int | None = None,
        topup_amount: int | None = None,
        voucher_method: str = "POST",
        accept_payment: str = "tempo/session",
        on_receipt: Callable[[dict[str, Any]], None] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if voucher_method not in ("POST", "HEAD"):
            raise ValueError("voucher_method must be POST or HEAD")
        if prepay_units is not None and prepay_units < 0:
            raise ValueError("prepay_units must be >= 0 (None: bandwidth x delay)")
        self.payer = payer
        self.allow_insecure = allow_insecure
        self.deposit = deposit
        self.prepay_units = prepay_units
        self.topup_amount = topup_amount
        self.voucher_method = voucher_method
        self.accept_payment = accept_payment
        self.on_receipt = on_receipt
        self.timeout = timeout
        self.receipts: deque[dict[str, Any]] = deque(maxlen=256)
        self._lock = threading.Lock()
        self._challenges: dict[RouteKey, CachedChallenge] = {}
        self._no_head: set[RouteKey] = set()  # HEAD gave no usable challenge here
        self._windows: dict[str, LeadWindow] = {}  # channel → its bandwidth × delay window
        self._windows_lock = threading.Lock()
        self._sync_client: httpx.Client | None = None
        self._async_client: httpx.AsyncClient | None = None

    def __repr__(self) -> str:
        return f"PaymentAuth(payer={self.payer.address!r})"

    # --- the flow -------------------------------------------------------------------------------

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers.setdefault("Accept-Payment", self.accept_payment)
        exchange: PaidExchange | None = None
        cached = self._cached_for(request)
        if cached is not None and not cached.fits(request):
            cached = yield from self._refresh_with_head(request)
        if cached is not None:
            exchange = self._pay_ahead(request, cached)
        response = yield request
        payable = {402}
        if exchange is not None:
            if 200 <= response.status_code < 300:
                self._on_success(response, exchange)
                return
            if not self._after_failed_ahead(exchange, response):
                return  # not a payment answer (400/403/5xx…): the caller gets it
            payable.add(response.status_code)  # 402, or 410 for a channel closed meanwhile
            exchange = None  # the ordinary flow, once, on this answer
        for _ in range(2):
            if response.status_code not in payable:
                break
            payable = {402}
            exchange = self._pay(request, response, exchange)
            if exchange is None:
                return  # nothing we can or may pay: the caller gets the 402
            response = yield request
        if exchange is not None and 200 <= response.status_code < 300:
            self._on_success(response, exchange)

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        flow = self.auth_flow(request)
        request = next(flow)
        while True:
            response = yield request
            if response.status_code in (402, 410):
                response.read()  # the problem body says what fell short
            try:
                request = flow.send(response)
            except StopIteration:
                break

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        # The same flow, each step in a worker thread: a step may sign, read and write the
        # payer's records (SQLite) or ask the chain (an open's fee and nonce), and the event
        # loop never waits for that.
        flow = self.auth_flow(request)
        step: httpx.Request | None = await anyio.to_thread.run_sync(next, flow)
        while step is not None:
            response = yield step
            if response.status_code in (402, 410):
                await response.aread()
            step = await anyio.to_thread.run_sync(_resume, flow, response)

    # --- the lookahead window (mpp.session.window) ----------------------------------------------

    def _window(self, channel_id: str | None, terms: SessionTerms) -> LeadWindow | None:
        """The channel's bandwidth × delay window; None with a fixed `prepay_units` or for a
        fixed-price route (each request pays exactly its price on its own attempt)."""
        if self.prepay_units is not None or terms.unit_type is None:
            return None
        policy = self.payer.policy
        fresh = LeadWindow(policy.lead_units_cap(terms.amount), policy.max_lead_seconds)
        if channel_id is None:
            return fresh
        with self._windows_lock:  # callers may hold self._lock
            window = self._windows.get(channel_id)
            if window is None:
                if len(self._windows) >= MAX_CACHED:
                    del self._windows[next(iter(self._windows))]
                window = self._windows[channel_id] = fresh
            window.resume(time.monotonic())
        return window

    def _lead(self, channel_id: str | None, terms: SessionTerms) -> int:
        """Units to authorize beyond this request's first unit (0 for a fixed price)."""
        if self.prepay_units is not None:
            return self.prepay_units
        window = self._window(channel_id, terms)
        return 0 if window is None else window.units()

    def lead_units(self, ex: PaidExchange) -> int:
        """The lead a running stream keeps authorized ahead of delivery, in units."""
        if self.prepay_units is not None:
            return self.prepay_units
        return 0 if ex.window is None else ex.window.units()

    # --- paying ahead with a cached challenge (AMB-05) ------------------------------------------

    def _cached_for(self, request: httpx.Request) -> CachedChallenge | None:
        """An unexpired cached challenge for this route, when we may pay here at all."""
        if "authorization" in request.headers:
            return None  # the caller's own credentials: not ours to replace up front
        key = route_key(request.url, request.method)
        with self._lock:
            cached = self._challenges.get(key)
            if cached is not None and not cached.usable(time.time()):
                del self._challenges[key]  # CORE-14: never submit an expired challenge
                cached = None
        if cached is None:
            return None
        try:
            require_secure_url(str(request.url), self.allow_insecure)  # CORE-42
            self.payer.policy.check_terms(cached.terms)  # CORE-39
        except (InsecureTransport, PolicyViolation):
            return None
        with self._lock:  # only worth a credential (or a HEAD) with a channel to pay from
            if self._reusable(cached.terms, cached.terms.amount, 0) is None:
                return None
        return cached

    def _refresh_with_head(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, CachedChallenge | None]:
        """A digest-free challenge for this route from `HEAD` (AMB-05), once per route."""
        key = route_key(request.url, request.method)
        if key in self._no_head:
            return None
        head = httpx.Request("HEAD", request.url, headers={"Accept-Payment": self.accept_payment})
        response = yield head
        chosen = self._choose(response) if response.status_code == 402 else None
        if chosen is None or chosen[0].digest is not None:
            self._no_head.add(key)
            return None
        cached = self._remember(key, chosen[0], chosen[1])
        return cached if cached.fits(request) else None

    def _pay_ahead(self, request: httpx.Request, cached: CachedChallenge) -> PaidExchange | None:
        """A voucher credential on the first attempt, when an open channel fits (SES-04)."""
        terms, cost = cached.terms, cached.terms.amount
        with self._lock:
            rec = self._reusable(terms, cost, 0)
            if rec is None:
                return None
            spent = max(rec.spent, rec.settled)
            lead = self._lead(rec.channel_id, terms)
            target = min(spent + cost + lead * cost, rec.deposit)
            try:
                payload = self.payer.voucher_payload(rec.channel_id, target)
            except PayerError:
                return None
        return self._attach(request, cached.challenge, terms, payload)

    def _after_failed_ahead(self, ex: PaidExchange, response: httpx.Response) -> bool:
        """Forget the cached challenge; True when the ordinary flow may pay this answer."""
        if ex.key is not None:
            with self._lock:
                self._challenges.pop(ex.key, None)
        if response.status_code not in (402, 410) or self._choose(response) is None:
            return False
        accepted = amount_of(problem_of(response).get("acceptedCumulative"))
        with self._lock:
            if accepted is not None:
                self.payer.note_server_accepted(ex.channel_id, accepted)
            if response.status_code == 410 and self.payer.chain is not None:
                self.payer.sync(ex.channel_id)  # closed meanwhile: not reused again
        return True

    def _remember(
        self, key: RouteKey, challenge: Challenge, terms: SessionTerms
    ) -> CachedChallenge:
        cached = CachedChallenge(challenge, terms, unix_expires(challenge.expires))
        with self._lock:
            self._challenges.pop(key, None)
            if len(self._challenges) >= MAX_CACHED:
                del self._challenges[next(iter(self._challenges))]  # the oldest
            self._challenges[key] = cached
        return cached

    def _attach(
        self,
        request: httpx.Request,
        challenge: Challenge,
        terms: SessionTerms,
        payload: dict[str, Any],
    ) -> PaidExchange:
        source = f"did:pkh:eip155:{terms.chain_id}:{self.payer.address}"
        credential = Credential(challenge, payload, source=source)
        request.headers["Authorization"] = credential.to_header()
        if request.method in PAID_RETRY_METHODS and "idempotency-key" not in request.headers:
            request.headers["Idempotency-Key"] = str(uuid.uuid4())
        key = route_key(request.url, request.method)
        cid = str(payload["channelId"])
        window = self._window(cid, terms)
        return PaidExchange(
            self, str(request.url), challenge, cid, terms.amount, source, key=key, window=window
        )

    # --- choosing and paying --------------------------------------------------------------------

    def _choose(self, response: httpx.Response) -> tuple[Challenge, SessionTerms] | None:
        try:
            offered = parse_challenges(response.headers.get_list("www-authenticate"), strict=False)
        except PaymentError:
            return None
        now = time.time()
        for ch in rank_challenges(offered, self.accept_payment):
            if (ch.method, ch.intent) != ("tempo", "session"):
                continue  # CORE-39: unknown intents are unsupported
            try:
                terms = SessionTerms.from_request(ch.request)
                expires = ch.expires_at()
            except (TermsError, ValueError):
                continue
            if expires is not None and expires.timestamp() <= now:
                continue  # CORE-14: never pay an expired challenge
            return ch, terms
        return None

    def _pay(
        self, request: httpx.Request, response: httpx.Response, previous: PaidExchange | None
    ) -> PaidExchange | None:
        chosen = self._choose(response)
        if chosen is None:
            return None
        challenge, terms = chosen
        require_secure_url(str(request.url), self.allow_insecure)  # CORE-42, before signing
        if challenge.digest is not None and not check_content_digest(
            challenge.digest, request.content
        ):
            raise PaymentDeclined("challenge digest does not match this request's body")
        self.payer.policy.check_terms(terms)  # CORE-39, before signing
        if previous is not None and not _same_payee(previous, terms):
            # A retry of the same request must pay the same party: a server that changes its
            # recipient (or token, escrow, chain) mid-request is not paid again.
            raise PaymentDeclined("the server changed its payment terms during this request")
        problem = problem_of(response)
        server_spent = amount_of(problem.get("spent")) or 0
        accepted = amount_of(problem.get("acceptedCumulative"))
        cost = terms.amount
        expires = unix_expires(challenge.expires)
        with self._lock:
            rec = None
            if previous is not None:
                if accepted is not None:
                    self.payer.note_server_accepted(previous.channel_id, accepted)
                if not self._set_aside(previous):
                    if server_spent == 0 and not problem.get("requiredTopUp"):
                        return None  # the retry failed for another reason: do not pay again
                    rec = self._retry_channel(previous, cost, server_spent)
            if rec is None:
                rec = self._reusable(terms, cost, server_spent)
            if rec is not None:
                spent = max(rec.spent, rec.settled, server_spent)
                # A metered answer that ran dry before its first byte used what it found (its
                # units stay charged) and needs more than that: cover it again on top.
                used = 0
                if terms.unit_type is not None:
                    used = max(0, server_spent - max(rec.spent, rec.settled))
                target = spent + used + cost + self._lead(rec.channel_id, terms) * cost
                top_up = amount_of(problem.get("requiredTopUp"))
                if accepted is not None and top_up is not None:
                    target = max(target, accepted + top_up)  # SES-27: what fell short
                self._check_lead(target - spent)
                payload = self.payer.voucher_payload(rec.channel_id, min(target, rec.deposit))
            else:
                first = cost + self._lead(None, terms) * cost  # the lead from the start
                payload = self.payer.open_payload(
                    terms, self.deposit, expires=expires, initial=first
                )
        return self._attach(request, challenge, terms, payload)

    def _check_lead(self, lead: int) -> None:
        """CORE-39: what a server asks us to authorize ahead of delivery (a non-streaming
        answer's `requiredTopUp`) stays within the policy's `max_lead`."""
        max_lead = self.payer.policy.max_lead
        if max_lead is not None and lead > max_lead:
            raise PaymentDeclined(
                f"the server asks to authorize {lead} ahead of delivery, more than the "
                f"policy's max_lead {max_lead}"
            )

    def _retry_channel(
        self, previous: PaidExchange, cost: int, server_spent: int
    ) -> PayerChannel | None:
        """The channel the last attempt paid with, for the retry: an open that the server took
        (still "pending" here: the 402 carried no receipt) is topped up by a voucher, never
        followed by a second open."""
        rec = self.payer.channel(previous.channel_id)
        if rec is None or rec.status not in ("open", "pending"):
            return None
        if rec.deposit - max(rec.spent, server_spent) < cost:
            return None  # drained: open a new channel (SES-04)
        return rec

    def _set_aside(self, previous: PaidExchange) -> bool:
        rec = self.payer.channel(previous.channel_id)
        return rec is not None and rec.status == "stale"

    def _reusable(self, terms: SessionTerms, cost: int, server_spent: int) -> PayerChannel | None:
        rec = self.payer.find_reusable_channel(terms, cost)
        if rec is not None and rec.deposit - max(rec.spent, server_spent) < cost:
            return None  # drained: open a new channel (SES-04)
        return rec

    def _on_success(self, response: httpx.Response, exchange: PaidExchange) -> None:
        if exchange.key is not None:
            try:
                terms = SessionTerms.from_request(exchange.challenge.request)
            except TermsError:
                pass
            else:  # AMB-05: the next request on this route pays on its first attempt
                self._remember(exchange.key, exchange.challenge, terms)
        response.extensions[RECEIPTS_KEY] = exchange.receipts
        header = response.headers.get("payment-receipt")
        if header:
            try:
                exchange.add_receipt(parse_receipt(header).to_json())
            except PaymentError:
                log.warning("ignored a malformed Payment-Receipt header")
        if is_event_stream(response.headers.get("content-type")):
            exchange.budget = self._budget(exchange)
            if isinstance(response.stream, httpx.AsyncByteStream):
                response.stream = PaidAsyncStream(response.stream, exchange)
            elif isinstance(response.stream, httpx.SyncByteStream):
                response.stream = PaidSyncStream(response.stream, exchange)

    def _budget(self, exchange: PaidExchange) -> StreamBudget:
        """What this stream may make us sign (mpp.session.budget): from what was covered when
        it started (the header receipt's `spent`, never above what we had signed), the
        delivered units plus the lookahead window plus one unit."""
        rec = self.payer.channel(exchange.channel_id)
        signed = rec.cumulative if rec is not None else 0
        spent = amount_of(exchange.receipts[-1].get("spent")) if exchange.receipts else None
        base = min(signed, spent if spent is not None else (rec.spent if rec else 0))
        try:
            delta = SessionTerms.from_request(exchange.challenge.request).min_voucher_delta
        except TermsError:
            delta = 0
        window = max(2 * self.lead_units(exchange) * exchange.unit_price, delta)
        # Ahead widens it as the bandwidth × delay window grows (never beyond max_lead).
        budget = StreamBudget(
            exchange.unit_price, base, 0, max_window=self.payer.policy.max_lead, signed=signed
        )
        budget.widen(window)
        return budget

    def remember_receipt(self, receipt: dict[str, Any]) -> None:
        self.receipts.append(receipt)
        try:
            with self._lock:
                self.payer.record_receipt(receipt)
        except ReceiptRejected as exc:
            log.warning("receipt rejected: %s", exc)
        if self.on_receipt is not None:
            self.on_receipt(receipt)

    # --- management requests: vouchers and topUps on the same URI (SES-34) ----------------------

    def _management_request(self, ex: PaidExchange, payload: dict[str, Any]) -> httpx.Request:
        credential = Credential(ex.challenge, payload, source=ex.source)
        headers = {"Authorization": credential.to_header(), "Accept-Payment": self.accept_payment}
        method = self.voucher_method if payload.get("action") == "voucher" else "POST"
        return httpx.Request(method, ex.url, headers=headers)

    def _stale(self, ex: PaidExchange, margin: float = 30.0) -> bool:
        expires = unix_expires(ex.challenge.expires)
        return expires is not None and expires - time.time() < margin

    def _take_challenge(self, ex: PaidExchange, response: httpx.Response) -> bool:
        """A 402 carries a fresh challenge (AMB-05: HEAD refreshes); use it from now on."""
        chosen = self._choose(response) if response.status_code == 402 else None
        if chosen is not None:
            ex.challenge = chosen[0]
        return chosen is not None

    def _check(self, ex: PaidExchange, response: httpx.Response) -> None:
        if not 200 <= response.status_code < 300:  # AMB-15: any 2xx is success
            raise httpx.HTTPStatusError(
                f"payment management request failed with {response.status_code}",
                request=response.request,
                response=response,
            )
        header = response.headers.get("payment-receipt")
        if header:
            try:
                ex.add_receipt(parse_receipt(header).to_json())
            except PaymentError:
                log.warning("ignored a malformed Payment-Receipt header")

    def _client(self) -> httpx.Client:
        if self._sync_client is None:
            self._sync_client = httpx.Client(timeout=self.timeout)
        return self._sync_client

    def _aclient(self) -> httpx.AsyncClient:
        if self._async_client is None:
            self._async_client = httpx.AsyncClient(timeout=self.timeout)
        return self._async_client

    def _send_sync(self, ex: PaidExchange, build: Callable[[], dict[str, Any]]) -> None:
        client = self._client()
        if self._stale(ex):
            self._take_challenge(ex, client.head(ex.url))
        payload = build()
        response = client.send(self._management_request(ex, payload))
        if response.status_code == 429:  # SES-42: the server's pace, then once more
            time.sleep(retry_after(response))
            response = client.send(self._management_request(ex, payload))
        if superseded(payload, response):
            return
        if self._take_challenge(ex, response):  # expired meanwhile: once more, re-signed
            response = client.send(self._management_request(ex, build()))
        self._check(ex, response)

    async def _send_async(self, ex: PaidExchange, build: Callable[[], dict[str, Any]]) -> None:
        client = self._aclient()
        if self._stale(ex):
            self._take_challenge(ex, await client.head(ex.url))
        payload = await anyio.to_thread.run_sync(build)
        response = await client.send(self._management_request(ex, payload))
        if response.status_code == 429:
            await anyio.sleep(retry_after(response))
            response = await client.send(self._management_request(ex, payload))
        if superseded(payload, response):
            return
        if self._take_challenge(ex, response):
            payload = await anyio.to_thread.run_sync(build)
            response = await client.send(self._management_request(ex, payload))
        await anyio.to_thread.run_sync(self._check, ex, response)  # records the receipt

    def _voucher(self, cid: str, cumulative: int) -> Callable[[], dict[str, Any]]:
        def build() -> dict[str, Any]:
            with self._lock:
                return self.payer.voucher_payload(cid, cumulative)

        return build

    def _topup(self, ex: PaidExchange, cid: str, additional: int) -> Callable[[], dict[str, Any]]:
        def build() -> dict[str, Any]:
            expires = unix_expires(ex.challenge.expires)
            return self.payer.topup_payload(cid, additional, expires=expires)

        return build

    def send_voucher_sync(self, ex: PaidExchange, cid: str, cumulative: int) -> None:
        self._send_sync(ex, self._voucher(cid, cumulative))

    async def send_voucher_async(self, ex: PaidExchange, cid: str, cumulative: int) -> None:
        await self._send_async(ex, self._voucher(cid, cumulative))

    def topup_sync(self, ex: PaidExchange, cid: str, additional: int) -> None:
        """On-chain topUp through the server (SES-17), then the payer's deposit is raised."""
        self._send_sync(ex, self._topup(ex, cid, additional))
        self._confirm_topup(cid, additional)

    async def topup_async(self, ex: PaidExchange, cid: str, additional: int) -> None:
        await self._send_async(ex, self._topup(ex, cid, additional))
        await anyio.to_thread.run_sync(self._confirm_topup, cid, additional)

    def _confirm_topup(self, cid: str, additional: int) -> None:
        with self._lock:
            self.payer.confirm_topup(cid, additional)

    def close(self) -> None:
        if self._sync_client is not None:
            self._sync_client.close()

    async def aclose(self) -> None:
        if self._async_client is not None:
            await self._async_client.aclose()
