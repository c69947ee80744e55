"""One exception hierarchy for the Payment scheme; every class knows its problem type and status.

Problem types live under https://paymentauth.org/problems/ (CORE-29/30, SES-40, AMB-04/06/11).
Error bodies follow RFC 9457. Messages must never contain credentials, keys or secrets (CORE-43).
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_BASE = "https://paymentauth.org/problems/"


class PaymentError(Exception):
    """Base class. `problem` is the path under PROBLEM_BASE; `status` the HTTP status."""

    problem: ClassVar[str] = "verification-failed"
    status: ClassVar[int] = 402
    title: ClassVar[str] = "Payment verification failed"
    # Whether a 4xx answer for this error carries a fresh challenge (CORE-25..27, AMB-04).
    fresh_challenge: ClassVar[bool] = True

    def __init__(self, detail: str = "", **extensions: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extensions = extensions

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.problem

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """RFC 9457 problem details object (extension members stringified by the caller)."""
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        for key, value in self.extensions.items():
            if key not in body:
                body[key] = value
        return body


# --- core (CORE-30) -------------------------------------------------------------------------


class PaymentRequired(PaymentError):
    problem = "payment-required"
    title = "Payment required"


class PaymentInsufficient(PaymentError):
    problem = "payment-insufficient"
    title = "Payment insufficient"


class PaymentExpired(PaymentError):
    """Reserved for method authorizations (AMB-06), not for challenge expiry."""

    problem = "payment-expired"
    title = "Payment authorization expired"


class VerificationFailed(PaymentError):
    problem = "verification-failed"
    title = "Payment verification failed"


class MethodUnsupported(PaymentError):
    problem = "method-unsupported"
    status = 400
    title = "Payment method unsupported"
    fresh_challenge = False


class MalformedCredential(PaymentError):
    problem = "malformed-credential"
    title = "Malformed payment credential"


class InvalidChallenge(PaymentError):
    problem = "invalid-challenge"
    title = "Invalid or expired challenge"


class ChallengeExpired(InvalidChallenge):
    """CORE-14/26: the echoed challenge's `expires` has passed. Still `invalid-challenge` for the
    core (AMB-06); an intent may map it to its own type (sessions: challenge-not-found, AMB-05)."""

    title = "Challenge expired"


class MultipleCredentials(PaymentError):
    """CORE-24: more than one Payment credential in a request."""

    problem = "malformed-credential"
    status = 400
    title = "Multiple payment credentials"
    fresh_challenge = False


class CredentialTooLarge(PaymentError):
    """CORE-40: credential above the size cap."""

    problem = "malformed-credential"
    status = 431
    title = "Payment credential too large"
    fresh_challenge = False


class PolicyDenied(PaymentError):
    """CORE-28: payment verified, access denied by policy: 403, no challenge."""

    problem = "verification-failed"
    status = 403
    title = "Access denied by policy"
    fresh_challenge = False


class RateLimited(PaymentError):
    problem = "rate-limited"
    status = 429
    title = "Too many payment requests"
    fresh_challenge = False


# --- parse / format errors raised by the codec (not HTTP answers by themselves) ---------------


class ParseError(MalformedCredential):
    """A header could not be parsed; `what` names the problem (e.g. 'duplicate parameter id')."""


class ChallengeParseError(ParseError):
    title = "Malformed payment challenge"


class FormatError(ValueError):
    """Refused to format a header (CR/LF injection, missing id, bad value)."""


# --- session intent (SES-40, AMB-04/05/11) ----------------------------------------------------


class SessionError(PaymentError):
    pass


class InvalidSignature(SessionError):
    problem = "session/invalid-signature"
    title = "Invalid voucher signature"


class SignerMismatch(SessionError):
    problem = "session/signer-mismatch"
    title = "Voucher signer does not match the channel"


class AmountExceedsDeposit(SessionError):
    problem = "session/amount-exceeds-deposit"
    title = "Voucher amount exceeds the channel deposit"


class DeltaTooSmall(SessionError):
    problem = "session/delta-too-small"
    title = "Voucher increment below minVoucherDelta"


class ChallengeNotFound(SessionError):
    problem = "session/challenge-not-found"
    title = "Challenge unknown or expired"


class InsufficientBalance(SessionError):
    problem = "session/insufficient-balance"
    title = "Insufficient channel balance"


class ChannelNotFound(SessionError):
    problem = "session/channel-not-found"
    status = 410
    title = "Channel not found"


class ChannelFinalized(SessionError):
    problem = "session/channel-finalized"
    status = 410
    title = "Channel finalized or closing"


class TransactionReverted(SessionError):
    problem = "session/transaction-reverted"
    status = 409
    title = "Transaction reverted"


class ChainUnavailable(PaymentError):
    """The RPC endpoint is unreachable: 503 + Retry-After, never 500."""

    problem = "service-unavailable"
    status = 503
    title = "Payment backend unavailable"
    fresh_challenge = False


# --- codec additions (issue 3) ----------------------------------------------------------------


class HeaderTooLarge(CredentialTooLarge, ParseError):
    """CORE-40: a header value above the cap, refused before any decoding (431)."""

    title = "Payment header too large"


class ReceiptParseError(ParseError):
    title = "Malformed payment receipt"


class AcceptPaymentParseError(ParseError):
    """A malformed Accept-Payment header (CORE-36); servers MAY ignore it (CORE-38)."""

    status = 400
    title = "Malformed Accept-Payment header"
    fresh_challenge = False


class InsecureTransport(ValueError):
    """CORE-42: payment over plain HTTP refused (loopback only with an explicit opt-in)."""
