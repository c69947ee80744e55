"""`PaymentAuth`: an httpx.Auth that pays `Payment` challenges with a session Payer.

One generator flow (`auth_flow`) serves httpx.Client and httpx.AsyncClient, like httpx's own
DigestAuth, and httpx2's clients the same way (mpp.http.client.flavor); the two thin drivers
only read the body of a 402/410 (its problem details). Per
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
import uuid
from collections import deque
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import anyio
import anyio.to_thread
import httpx

from mpp.core.amounts import decimal_amount
from mpp.core.challenge import Challenge
from mpp.core.credential import Credential
from mpp.core.digest import check_content_digest
from mpp.core.errors import InsecureTransport
from mpp.core.http import require_secure_url
from mpp.http.client.charges import ChargeClient
from mpp.http.client.exchange import (
    PAID_RETRY_METHODS,
    RECEIPTS_KEY,
    PaidExchange,
    PaymentDeclined,
    ProblemAmounts,
    unix_expires,
)
from mpp.http.client.flavor import AuthBase, library
from mpp.http.client.management import ManagementRequests
from mpp.http.client.routes import (
    CachedChallenge,
    RouteChallenges,
    best_offer,
    choose_challenge,
    route_key,
)
from mpp.http.client.stream import paid_body
from mpp.http.client.windows import LeadWindows
from mpp.http.sse import is_event_stream
from mpp.session.budget import StreamBudget
from mpp.session.payer import Payer, PayerChannel, PayerError, ReceiptRejected
from mpp.session.policy import PolicyViolation
from mpp.session.terms import SessionTerms, TermsError

log = logging.getLogger(__name__)


def _same_payee(previous: Challenge, terms: SessionTerms) -> bool:
    try:
        return SessionTerms.from_request(previous.request).same_payee(terms)
    except TermsError:
        return False


def _resume(
    flow: Generator[httpx.Request, httpx.Response, None], response: httpx.Response
) -> httpx.Request | None:
    """The flow's next request, None once it is done (StopIteration cannot cross threads)."""
    try:
        return flow.send(response)
    except StopIteration:
        return None


CHARGE = "charge"
# A session where both are offered (no transaction per request), else a charge (CORE-36).
DEFAULT_ACCEPT_PAYMENT = "tempo/session, tempo/charge;q=0.5"


class PaymentAuth(AuthBase):
    """Pays `tempo/session` and `tempo/charge` 402s for httpx and httpx2 clients (sync and
    async)."""

    def __init__(
        self,
        payer: Payer,
        *,
        allow_insecure: bool = False,
        deposit: int | None = None,
        prepay_units: int | None = None,
        topup_amount: int | None = None,
        voucher_method: str = "POST",
        accept_payment: str = DEFAULT_ACCEPT_PAYMENT,
        on_receipt: Callable[[dict[str, Any]], None] | None = None,
        timeout: float = 30.0,
        charge_mode: str = "pull",
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
        self._routes = RouteChallenges()
        self._charges = ChargeClient(payer, allow_insecure=allow_insecure, mode=charge_mode)
        self._windows = LeadWindows(payer.policy, prepay_units)
        self._management = ManagementRequests(
            payer,
            self._lock,
            accept_payment=accept_payment,
            voucher_method=voucher_method,
            timeout=timeout,
        )

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
            offer = best_offer(response, self.accept_payment) if exchange is None else None
            if offer is not None and offer.intent == CHARGE:
                self._charges.attach(request, offer)  # one payment, one retry
                response = yield request
                if 200 <= response.status_code < 300:
                    self._on_charged(response)
                return
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

    # --- paying ahead with a cached challenge (AMB-05) ------------------------------------------

    def _cached_for(self, request: httpx.Request) -> CachedChallenge | None:
        """An unexpired cached challenge for this route, when we may pay here at all."""
        if "authorization" in request.headers:
            return None  # the caller's own credentials: not ours to replace up front
        cached = self._routes.get(route_key(request.url, request.method))
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
        if self._routes.head_useless(key):
            return None
        headers = {"Accept-Payment": self.accept_payment}
        head = library(request).Request("HEAD", request.url, headers=headers)
        response = yield head
        chosen = self._choose(response) if response.status_code == 402 else None
        if chosen is None or chosen[0].digest is not None:
            self._routes.head_failed(key)
            return None
        cached = self._routes.remember(key, chosen[0], chosen[1])
        return cached if cached.fits(request) else None

    def _pay_ahead(self, request: httpx.Request, cached: CachedChallenge) -> PaidExchange | None:
        """A voucher credential on the first attempt, when an open channel fits (SES-04)."""
        terms, cost = cached.terms, cached.terms.amount
        with self._lock:
            rec = self._reusable(terms, cost, 0)
            if rec is None:
                return None
            spent = max(rec.spent, rec.settled)
            lead = self._windows.lead(rec.channel_id, terms)
            target = min(spent + cost + lead * cost, rec.deposit)
            try:
                payload = self.payer.voucher_payload(rec.channel_id, target)
            except PayerError:
                return None
        return self._attach(request, cached.challenge, terms, payload)

    def _after_failed_ahead(self, ex: PaidExchange, response: httpx.Response) -> bool:
        """Forget the cached challenge; True when the ordinary flow may pay this answer."""
        if ex.key is not None:
            self._routes.forget(ex.key)
        if response.status_code not in (402, 410) or self._choose(response) is None:
            return False
        accepted = ProblemAmounts.of(response).accepted_cumulative
        with self._lock:
            if accepted is not None:
                self.payer.note_server_accepted(ex.channel_id, accepted)
            if response.status_code == 410 and self.payer.chain is not None:
                self.payer.sync(ex.channel_id)  # closed meanwhile: not reused again
        return True

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
        window = self._windows.window(cid, terms)
        return PaidExchange(
            self, str(request.url), challenge, cid, terms.amount, source, key=key, window=window
        )

    # --- choosing and paying --------------------------------------------------------------------

    def _choose(self, response: httpx.Response) -> tuple[Challenge, SessionTerms] | None:
        return choose_challenge(response, self.accept_payment)

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
        if previous is not None and not _same_payee(previous.challenge, terms):
            # A retry of the same request must pay the same party: a server that changes its
            # recipient (or token, escrow, chain) mid-request is not paid again.
            raise PaymentDeclined("the server changed its payment terms during this request")
        problem = ProblemAmounts.of(response)
        server_spent = problem.spent or 0
        accepted = problem.accepted_cumulative
        cost = terms.amount
        expires = unix_expires(challenge.expires)
        with self._lock:
            rec = None
            if previous is not None:
                if accepted is not None:
                    self.payer.note_server_accepted(previous.channel_id, accepted)
                if not self._set_aside(previous):
                    if server_spent == 0 and problem.required_topup is None:
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
                target = spent + used + cost + self._windows.lead(rec.channel_id, terms) * cost
                top_up = problem.required_topup
                if accepted is not None and top_up is not None:
                    target = max(target, accepted + top_up)  # SES-27: what fell short
                self._check_lead(target - spent)
                payload = self.payer.voucher_payload(rec.channel_id, min(target, rec.deposit))
            else:
                first = cost + self._windows.lead(None, terms) * cost  # the lead from the start
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
                self._routes.remember(exchange.key, exchange.challenge, terms)
        response.extensions[RECEIPTS_KEY] = exchange.receipts
        exchange.add_receipt_header(response)
        if is_event_stream(response.headers.get("content-type")):
            exchange.budget = self._budget(exchange)
            response.stream = paid_body(response.stream, exchange, library(response))

    def _budget(self, exchange: PaidExchange) -> StreamBudget:
        """What this stream may make us sign (mpp.session.budget)."""
        rec = self.payer.channel(exchange.channel_id)
        signed = rec.cumulative if rec is not None else 0
        spent = decimal_amount(exchange.receipts[-1].get("spent")) if exchange.receipts else None
        if spent is None:
            spent = rec.spent if rec is not None else 0
        try:
            delta = SessionTerms.from_request(exchange.challenge.request).min_voucher_delta
        except TermsError:
            delta = 0
        fixed = self.prepay_units
        lead = fixed if fixed is not None else (exchange.window.units() if exchange.window else 0)
        # The stream widens it as the bandwidth × delay window grows (never beyond max_lead).
        return StreamBudget.for_response(
            unit_price=exchange.unit_price,
            signed=signed,
            spent=spent,
            lead=lead * exchange.unit_price,
            min_voucher_delta=delta,
            max_window=self.payer.policy.max_lead,
        )

    def _on_charged(self, response: httpx.Response) -> None:
        receipt = self._charges.receipt(response)
        response.extensions[RECEIPTS_KEY] = [receipt] if receipt is not None else []
        if receipt is not None:
            self.receipts.append(receipt)
            if self.on_receipt is not None:
                self.on_receipt(receipt)

    def remember_receipt(self, receipt: dict[str, Any]) -> None:
        self.receipts.append(receipt)
        try:
            with self._lock:
                self.payer.record_receipt(receipt)
        except ReceiptRejected as exc:
            log.warning("receipt rejected: %s", exc)
        if self.on_receipt is not None:
            self.on_receipt(receipt)

    # --- what a paid stream asks of us (mpp.http.client.exchange.Paying) -----------------------

    def deposit_of(self, channel_id: str) -> int | None:
        rec = self.payer.channel(channel_id)
        return None if rec is None else rec.deposit

    def send_voucher(self, ex: PaidExchange, channel_id: str, cumulative: int) -> None:
        self._management.voucher(ex, channel_id, cumulative)

    def topup(self, ex: PaidExchange, channel_id: str, additional: int) -> None:
        self._management.topup(ex, channel_id, additional)

    def close(self) -> None:
        self._management.close()

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self._management.close)
