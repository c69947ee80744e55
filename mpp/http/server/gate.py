"""Framework-neutral payment gate: route prices → challenges; credentials → the session engine.

Two steps so an async server keeps its event loop free: `prepare()` is cheap and I/O-free
(route lookup, CORE-24 single credential, codec, HMAC binding + route check CORE-17/20, body
digest CORE-13) and `execute()` calls the synchronous session engine (run it in a worker
thread). Rate limits (SES-42, decided differently here) apply to credentials that FAIL, per
peer address: a voucher that advances a valid channel is never limited, and a stranger who
knows a channel id cannot spend its payer's budget by sending garbage for it. Every protocol
decision on a payload is the engine's (mpp.session, mpp.session.scheme); this module only maps
its results and errors onto HTTP answers (mpp.http.server.answers).
A fixed price is a reservation (`SessionServer.charge(reserve=True)`): committed when a 2xx
starts, released (`SessionServer.release`) otherwise. An `Idempotency-Key` is reserved in the
Store before any charge (mpp.http.server.idempotency).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mpp.charge.server import ChargeChain, ChargeServer
from mpp.core.amounts import MAX_AMOUNT
from mpp.core.binding import ChallengeIssuer
from mpp.core.challenge import Challenge
from mpp.core.credential import Credential, parse_credential
from mpp.core.digest import check_content_digest, content_digest
from mpp.core.errors import (
    ChannelNotFound,
    CredentialTooLarge,
    InvalidChallenge,
    InvalidSignature,
    MalformedCredential,
    MethodUnsupported,
    MultipleCredentials,
    PaymentError,
    PolicyDenied,
    RateLimited,
    SignerMismatch,
    VerificationFailed,
)
from mpp.core.http import select_payment_credential
from mpp.core.problem import error_response, payment_required
from mpp.http.server.answers import Answer, management_answer, payment_problem, plain_problem
from mpp.http.server.charge import CHARGE, ChargePending, ChargeRoutes
from mpp.http.server.idempotency import IdempotencyCache, InProgress, Reservation, StoredResponse
from mpp.http.server.metrics import PaymentObserver
from mpp.http.server.ratelimit import RateLimiter
from mpp.http.server.routes import Price, RequestInfo, Route
from mpp.session.engine import SessionResult, SessionServer
from mpp.session.ports import ChannelState
from mpp.session.scheme import INTENT, METHOD, is_management, is_ours
from mpp.session.terms import SessionTerms, TermsError

log = logging.getLogger(__name__)

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


# What a stranger can send at will: malformed, unbound, unsigned or wrongly signed credentials
# and unknown channels. Not counted: stale vouchers and closed channels (a paying client's
# pipelined vouchers produce those), the server's own troubles (503), policy refusals.
_FAILURES = (
    MalformedCredential,
    InvalidChallenge,
    MethodUnsupported,
    MultipleCredentials,
    CredentialTooLarge,
    InvalidSignature,
    SignerMismatch,
    ChannelNotFound,
    VerificationFailed,
)


@dataclass
class Pending:
    """A parsed, bound credential waiting for the engine."""

    route: Route
    terms: SessionTerms
    credential: Credential
    channel_id: str
    action: str
    management: bool


@dataclass(frozen=True)
class IdempotencyKey:
    """A request's `Idempotency-Key` and the fingerprint of what it asks for."""

    key: str
    fingerprint: str


@dataclass
class Paid:
    """A paid content request: the handler runs. `charged` (the fixed price) is reserved
    before it, committed when a 2xx starts, released otherwise. `idempotency` is this
    request's hold on its key; `replay` a stored answer to send instead of running."""

    route: Route
    terms: SessionTerms
    challenge: Challenge
    channel_id: str
    result: SessionResult
    charged: int = 0
    replay: StoredResponse | None = field(default=None)
    idempotency: Reservation | None = field(default=None)


def to_unix(expires: str | None) -> int | None:
    if expires is None:
        return None
    from mpp.core.rfc3339 import parse_rfc3339

    return int(parse_rfc3339(expires).timestamp())


class PaymentGate:
    """Routes and their prices over one SessionServer and one ChallengeIssuer."""

    def __init__(
        self,
        engine: SessionServer,
        issuer: ChallengeIssuer,
        routes: Sequence[Route] | Mapping[str, Price],
        *,
        authorize: Callable[[RequestInfo], bool] | None = None,
        policy: Callable[[RequestInfo, SessionResult], bool] | None = None,
        failure_rate: float | None = 10.0,  # failed credentials per second and peer
        charge: ChargeServer | None = None,
        retry_after: int = 1,
        clock: Callable[[], float] = time.time,
        observer: PaymentObserver | None = None,
    ) -> None:
        if isinstance(routes, Mapping):
            routes = [Route(path, price) for path, price in routes.items()]
        self.engine = engine
        self.issuer = issuer
        self.routes = list(routes)
        self.authorize = authorize
        self.policy = policy
        self.limiter = RateLimiter(failure_rate) if failure_rate else None
        self.retry_after = retry_after
        self.observer = observer or PaymentObserver()  # metrics hooks (mpp.http.server.metrics)
        self.idempotency = IdempotencyCache(engine.store)
        self._clock = clock
        self._terms: dict[Price, SessionTerms] = {}
        self.charge: ChargeRoutes | None = None
        if any(r.price.offers(CHARGE) for r in self.routes):
            if charge is None:  # the payer pays the fees; pass a ChargeServer to sponsor them
                if not isinstance(engine.chain, ChargeChain):
                    raise ValueError("charge routes need a chain that sends and reads transactions")
                charge = ChargeServer(engine.store, engine.chain, clock=clock)
            self.charge = ChargeRoutes(charge, issuer, engine.terms)

    # --- routes and challenges ------------------------------------------------------------------

    def route_for(self, path: str) -> Route | None:
        for route in self.routes:
            if route.matches(path):
                return route
        return None

    def terms_for(self, route: Route) -> SessionTerms:
        terms = self._terms.get(route.price)
        if terms is None:
            base, p = self.engine.terms, route.price
            terms = dataclasses.replace(
                base.with_channel(None),
                amount=p.amount,
                unit_type=p.unit_type,
                suggested_deposit=p.suggested_deposit or base.suggested_deposit,
            )
            self._terms[route.price] = terms
        return terms

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def challenge(self, route: Route, info: RequestInfo) -> Challenge:
        """The route's session challenge. CORE-13: it binds the body of a request that has one."""
        digest = content_digest(info.body) if info.method in BODY_METHODS and info.body else None
        return self.issuer.issue(
            method=METHOD,
            intent=INTENT,
            request=self.terms_for(route).to_request(),
            now=self.now(),
            digest=digest,
            description=route.price.description,
        )

    def challenges(self, route: Route, info: RequestInfo) -> list[Challenge]:
        """One challenge per intent the route offers, in its order: the client picks."""
        out = []
        for intent in route.price.intents:
            if not route.offers(intent, info):
                continue
            if intent == CHARGE:
                assert self.charge is not None
                out.append(self.charge.challenge(route, info, self.now()))
            else:
                out.append(self.challenge(route, info))
        return out

    def error(self, exc: PaymentError, route: Route, info: RequestInfo) -> Answer:
        fresh = self.challenges(route, info) if exc.fresh_challenge else []
        retry = self.retry_after if exc.status in (402, 503) else None
        if isinstance(exc, RateLimited):
            retry = int(exc.extensions.get("retryAfter", self.retry_after))
        resp = error_response(exc, fresh, retry_after=retry, instance=info.path)
        return payment_problem(resp)

    def refuse(
        self, exc: PaymentError, route: Route, info: RequestInfo, channel_id: str | None = None
    ) -> Answer:
        """The answer to a credential that failed. Failures of verification count against the
        sending peer; past its rate the peer gets 429 + Retry-After. Nothing that succeeds is
        counted, so a paying client is never slowed by what others send."""
        if self.limiter is not None and isinstance(exc, _FAILURES):
            wait = self.limiter.acquire(info.peer)
            if wait > 0:
                retry = RateLimiter.retry_after(wait)
                exc = RateLimited("too many failed payment credentials", retryAfter=retry)
        self.observer.refused(exc, channel_id)
        return self.error(exc, route, info)

    def over_failure_rate(self, pending: Pending, info: RequestInfo) -> Answer | None:
        """A 429 for a peer already past its failure rate, before any work that costs a chain
        RPC (a voucher naming a channel this process does not know): what a stranger sends
        costs at most `failure_rate` lookups per second."""
        wait = self.limiter.waiting(info.peer) if self.limiter is not None else 0.0
        if wait <= 0:
            return None
        exc = RateLimited(
            "too many failed payment credentials", retryAfter=RateLimiter.retry_after(wait)
        )
        self.observer.refused(exc, pending.channel_id)
        return self.error(exc, pending.route, info)

    def payment_required(self, route: Route, info: RequestInfo) -> Answer:
        resp = payment_required(self.challenges(route, info), retry_after=self.retry_after)
        return payment_problem(resp)

    # --- step 1: parse and bind (no I/O) --------------------------------------------------------

    def prepare(self, route: Route, info: RequestInfo) -> Pending | ChargePending | Answer | None:
        """None: serve unpaid (the authorize hook let it through). Answer: respond now."""
        try:
            raw = select_payment_credential(info.all("authorization"))  # CORE-24 → 400
            if raw is None:
                if self.authorize is not None and self.authorize(info):
                    return None  # e.g. an API key: no payment, no payment events
                return self.payment_required(route, info)
            return self._bind(route, info, parse_credential(raw))
        except PaymentError as exc:
            return self.refuse(exc, route, info)

    def _bind(self, route: Route, info: RequestInfo, cred: Credential) -> Pending | ChargePending:
        echo = cred.challenge
        if echo.method == METHOD and echo.intent == CHARGE and self.charge is not None:
            if not route.offers(CHARGE, info):
                raise MethodUnsupported("this request is not paid per request with charge")
            return self.charge.bind(route, info, cred, self.now())
        if not is_ours(echo.method, echo.intent) or not route.price.offers(INTENT):
            offered = ", ".join(f"tempo/{i}" for i in route.price.intents)
            raise MethodUnsupported(f"this route accepts {offered} only")
        # CORE-17 binding; the session decides what an expired challenge is (AMB-05/06).
        self.engine.check_challenge(self.issuer, echo, now=self.now())
        terms = self.terms_for(route)
        try:
            echoed = SessionTerms.from_request(echo.request, domain_name=terms.domain_name)
        except TermsError:
            raise InvalidChallenge("challenge request is not this route's") from None
        if not echoed.same_route(terms):
            raise InvalidChallenge("challenge was issued for another price or route")  # CORE-20
        payload = cred.payload
        action = payload.get("action")
        cid = payload.get("channelId")
        if not isinstance(action, str) or not isinstance(cid, str):
            raise MalformedCredential("payload needs action and channelId")
        management = is_management(info.method, action, bool(info.body))  # AMB-15
        if not management and echo.digest is not None:
            if not check_content_digest(echo.digest, info.body):  # CORE-13
                raise VerificationFailed("request body does not match the challenge digest")
        return Pending(route, terms, cred, cid.lower(), action, management)

    # --- step 2: the engine (blocking; run in a worker thread) ----------------------------------

    def execute(
        self,
        pending: Pending,
        info: RequestInfo,
        *,
        idempotency: IdempotencyKey | None = None,
        reserve_units: int | None = 0,
    ) -> Paid | Answer:
        """Verify the credential and reserve what the request will use, in ONE transaction when
        it is a voucher: the fixed price, or up to `reserve_units` of a metered route."""
        route, cred = pending.route, pending.credential
        price = route.price
        if pending.management:
            reserve, partial = 0, False
        elif price.metered:
            units = MAX_AMOUNT if reserve_units is None else reserve_units
            reserve, partial = min(MAX_AMOUNT, units * price.amount), True
        else:
            reserve, partial = price.amount, False
        try:
            result = self.engine.handle(
                cred.payload,
                challenge_id=cred.challenge.id,
                challenge_expires=to_unix(cred.challenge.expires),
                source=cred.source,
                terms=pending.terms,
                reserve=reserve,
                reserve_partial=partial,
            )
            self.observer.accepted(pending.action, result.state.channel_id)
            paid = Paid(route, pending.terms, cred.challenge, result.state.channel_id, result)
            if not price.metered:
                paid.charged = result.reserved  # the fixed price, reserved with the voucher
            if self.policy is not None and not self.policy(info, result):
                self._give_back(paid)
                raise PolicyDenied("payment verified, access denied by policy")  # CORE-28
            if pending.management:
                return management_answer(result.receipt)
            if idempotency is not None:
                # CORE-47/SES-29: hold the key before serving; a duplicate never pays (what was
                # reserved with its voucher goes back).
                answer = self._reserve_key(paid, idempotency, info)
                if answer is not None or paid.replay is not None:
                    self._give_back(paid)
                    return answer or paid
            try:
                if not price.metered and price.amount and not paid.charged:
                    state = self.engine.charge(  # SES-27/28: reserved until a 2xx starts
                        paid.channel_id,
                        route.price.amount,
                        challenge_id=paid.challenge.id,
                        reserve=True,
                    )
                    paid.charged = route.price.amount
                    paid.result = dataclasses.replace(result, state=state)
            except BaseException:
                self.abandon(paid)
                raise
            return paid
        except PaymentError as exc:
            return self.refuse(exc, route, info, pending.channel_id)
        except (ValueError, TypeError, KeyError):
            # Hostile input is answered with typed PaymentErrors by the codec and the engine;
            # anything else is our bug: logged with its traceback, answered 500, not 402.
            log.exception("payment credential handling failed")
            return plain_problem(500, "internal error while handling the payment", info.path)

    def _give_back(self, paid: Paid) -> None:
        """Release what was reserved with the voucher for a request that will not be served."""
        held = paid.charged + (paid.result.reserved if paid.route.price.metered else 0)
        paid.charged = 0
        paid.result = dataclasses.replace(paid.result, reserved=0)
        if held:
            state = self.engine.release(paid.channel_id, held, challenge_id=paid.challenge.id)
            if state is not None:
                paid.result = dataclasses.replace(paid.result, state=state)

    def _reserve_key(self, paid: Paid, idem: IdempotencyKey, info: RequestInfo) -> Answer | None:
        now = self._clock()
        got = self.idempotency.reserve(paid.channel_id, idem.key, idem.fingerprint, now=now)
        if isinstance(got, Reservation):
            paid.idempotency = got
            return None
        if isinstance(got, StoredResponse):
            if got.replayable:
                paid.replay = got  # no handler, no charge
                return None
            return plain_problem(409, "the original response was too large to replay", info.path)
        if isinstance(got, InProgress):
            if self.idempotency.stale(got, now=now):
                detail = "an earlier request with this key did not complete; use a new key"
                return plain_problem(409, detail, info.path)
            detail = "a request with this Idempotency-Key is in progress"
            return plain_problem(409, detail, info.path, retry_after=self.retry_after)
        return plain_problem(422, "Idempotency-Key was used for another request", info.path)

    def abandon(self, paid: Paid) -> None:
        """Not a success: give the fixed price back and free the Idempotency-Key."""
        if paid.charged:
            charged, paid.charged = paid.charged, 0
            self.engine.release(paid.channel_id, charged, challenge_id=paid.challenge.id)
        if paid.idempotency is not None:
            reservation, paid.idempotency = paid.idempotency, None
            self.idempotency.abandon(reservation)

    def delivered(self, paid: Paid) -> None:
        """A 2xx starts: the fixed price is delivered (receipts count it from now on)."""
        if paid.charged:
            self.engine.commit(paid.channel_id, paid.charged)
            paid.charged = 0

    def complete(self, paid: Paid, response: StoredResponse) -> None:
        """A 2xx finished: store it for replays."""
        if paid.idempotency is not None:
            reservation, paid.idempotency = paid.idempotency, None
            self.idempotency.complete(reservation, response)

    def receipt(
        self, paid: Paid, state: ChannelState | None, units: int | None, cost: int
    ) -> dict[str, Any]:
        return self.engine.receipt(
            state or paid.result.state,
            challenge_id=paid.challenge.id,
            units=units,
            cost=cost,
            tx_hash=paid.result.tx_hash,
        )
