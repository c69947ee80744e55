"""The charge intent on the gate's routes: one on-chain payment per request (mpp.charge).

A route whose `Price.intents` include `charge` offers a tempo/charge challenge for its price,
paid to the session terms' recipient in their currency and on their chain. A credential for it
is bound like any other (CORE-17/20: ours, unexpired, for this route's exact request, the body
digest, CORE-13) and then verified by `ChargeServer`, which takes the payment exactly once
before the handler runs. The response carries the receipt only when it is a success (CHG-11).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mpp.charge.server import Charged, ChargeServer
from mpp.charge.terms import ChargeTerms
from mpp.core.binding import ChallengeIssuer
from mpp.core.challenge import Challenge
from mpp.core.credential import Credential
from mpp.core.digest import content_digest
from mpp.http.server.routes import Price, RequestInfo, Route
from mpp.session.terms import SessionTerms

__all__ = ["CHARGE", "ChargePending", "ChargeRoutes"]

CHARGE = "charge"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass
class ChargePending:
    """A bound charge credential waiting for its payment to be taken."""

    route: Route
    terms: ChargeTerms
    credential: Credential
    expires: int | None


class ChargeRoutes:
    def __init__(self, server: ChargeServer, issuer: ChallengeIssuer, base: SessionTerms) -> None:
        self.server = server
        self._issuer = issuer
        self._base = base
        self._terms: dict[Price, ChargeTerms] = {}

    def terms_for(self, route: Route) -> ChargeTerms:
        price = route.price
        terms = self._terms.get(price)
        if terms is None:
            base, more = self._base, price.charge
            terms = self._terms[price] = ChargeTerms(
                amount=price.per_request,
                currency=base.currency,
                recipient=base.recipient,
                chain_id=base.chain_id,
                description=price.description,
                external_id=more.external_id,
                fee_payer=self.server.sponsors,
                memo=more.memo,
                splits=more.splits,
                supported_modes=more.supported_modes,
            )
        return terms

    def challenge(self, route: Route, info: RequestInfo, now: datetime) -> Challenge:
        digest = content_digest(info.body) if info.method in BODY_METHODS and info.body else None
        return self._issuer.issue(
            method="tempo",
            intent=CHARGE,
            request=self.terms_for(route).to_request(),
            now=now,
            digest=digest,
            description=route.price.description,
        )

    def bind(
        self, route: Route, info: RequestInfo, cred: Credential, now: datetime
    ) -> ChargePending:
        """CORE-17/20 and CORE-13 for a charge credential; InvalidChallenge and friends."""
        terms = self.terms_for(route)
        echo = self._issuer.verify(
            cred.challenge,
            method="tempo",
            intent=CHARGE,
            request=terms.to_request(),
            now=now,
            body=info.body,
        )
        expires = echo.expires_at()
        return ChargePending(
            route, terms, cred, None if expires is None else int(expires.timestamp())
        )

    def execute(self, pending: ChargePending) -> Charged:
        """Take the payment (blocking: a broadcast and its receipt; run it in a thread)."""
        return self.server.verify(pending.credential, pending.terms, expires=pending.expires)
