"""HMAC challenge binding (CORE-17..21, AMB-18) and a stateless issuer/verifier with rotation.

The HMAC input is built from ONE ordered slot list. A slot is either always present (empty string
when absent) or present only when set; draft -01's `header` slot sits just before `opaque` and is
omitted for the default `Authorization`, so -00 ids are unchanged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from mpp.core.challenge import Challenge, advertised_header
from mpp.core.digest import check_content_digest
from mpp.core.encoding import b64url_encode, encode_json_b64, encode_opaque, jcs
from mpp.core.errors import (
    ChallengeExpired,
    FormatError,
    InvalidChallenge,
    VerificationFailed,
)
from mpp.core.rfc3339 import format_rfc3339, parse_rfc3339, require_aware

MIN_SECRET_BYTES: Final = 32
DEFAULT_TTL: Final = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    always: bool  # True: "" when absent (the -00 slots); False: omitted entirely when absent


#: CORE-18 order. Insert new optional slots here; callers pass values by name.
HMAC_SLOTS: Final[tuple[Slot, ...]] = (
    Slot("realm", True),
    Slot("method", True),
    Slot("intent", True),
    Slot("request", True),
    Slot("expires", True),
    Slot("digest", True),
    Slot("header", False),  # draft -01 (AMB-18): only a non-default credential header
    Slot("opaque", True),
)


def hmac_input(values: Mapping[str, str | None], slots: Sequence[Slot] = HMAC_SLOTS) -> str:
    """`realm|method|intent|request|expires|digest[|header]|opaque` from named wire values."""
    parts: list[str] = []
    for slot in slots:
        value = values.get(slot.name) or ""
        if value or slot.always:
            parts.append(value)
    return "|".join(parts)


def secret_bytes(secret: bytes | str) -> bytes:
    raw = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(raw) < MIN_SECRET_BYTES:
        raise ValueError(f"binding secret must be at least {MIN_SECRET_BYTES} bytes (CORE-21)")
    return raw


def _mac(key: bytes, values: Mapping[str, str | None]) -> str:
    digest = hmac.new(key, hmac_input(values).encode("utf-8"), hashlib.sha256).digest()
    return b64url_encode(digest)


def challenge_id(
    secret: bytes | str,
    *,
    realm: str,
    method: str,
    intent: str,
    request: Mapping[str, Any] | str,
    expires: str | None = None,
    digest: str | None = None,
    opaque: Mapping[str, str] | str | None = None,
    header: str | None = None,
) -> str:
    """CORE-18/19: base64url_nopad(HMAC-SHA256(secret, slots)). Strings are used verbatim."""
    key = secret_bytes(secret)
    opaque_b64 = opaque if opaque is None or isinstance(opaque, str) else encode_opaque(opaque)
    return _mac(
        key,
        {
            "realm": realm,
            "method": method,
            "intent": intent,
            "request": request if isinstance(request, str) else encode_json_b64(request),
            "expires": expires,
            "digest": digest,
            "header": advertised_header(header),
            "opaque": opaque_b64,
        },
    )


def _echo_values(echo: Challenge) -> dict[str, str | None]:
    # CORE-19: the echoed wire strings, never re-serialized; description is not bound (CORE-15).
    return {
        "realm": echo.realm,
        "method": echo.method,
        "intent": echo.intent,
        "request": echo.request_b64,
        "expires": echo.expires,
        "digest": echo.digest,
        "header": echo.header,
        "opaque": echo.opaque_b64,
    }


@dataclass(frozen=True, slots=True, repr=False)
class RetiredSecret:
    """A previous secret; its challenges verify while `expires <= retired_at + max_ttl`."""

    secret: bytes
    retired_at: datetime

    def __repr__(self) -> str:
        return f"RetiredSecret(secret=<redacted>, retired_at={self.retired_at.isoformat()})"


def _same_json(echoed: Mapping[str, Any], demanded: Mapping[str, Any]) -> bool:
    # Compare canonical bytes, not Python values: 1 == 1.0 == True must not pass as equal.
    try:
        return jcs(echoed) == jcs(demanded)
    except FormatError:
        return False


class ChallengeIssuer:
    """Issues HMAC-bound challenges with `expires` and verifies their echoes (CORE-17..21).

    Stateless: nothing is stored per challenge. Time comes from `now=` or the injected `clock`.
    Single-use (charge) bookkeeping belongs to the caller's store (CORE-26/46).
    """

    __slots__ = ("_clock", "_key", "_retired", "realm", "ttl")

    def __init__(
        self,
        secret: bytes | str,
        *,
        realm: str,
        ttl: timedelta = DEFAULT_TTL,
        retired: Sequence[RetiredSecret] = (),
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not realm:
            raise ValueError("realm is required (CORE-16)")
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        self._key = secret_bytes(secret)
        self._retired = tuple(RetiredSecret(secret_bytes(r.secret), r.retired_at) for r in retired)
        self.realm = realm
        self.ttl = ttl
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"ChallengeIssuer(realm={self.realm!r}, ttl={self.ttl}, retired={len(self._retired)})"
        )

    def _now(self, now: datetime | None) -> datetime:
        if now is None:
            if self._clock is None:
                raise ValueError("pass now= or construct the issuer with clock=")
            now = self._clock()
        return require_aware(now)

    def rotated(self, new_secret: bytes | str, *, now: datetime | None = None) -> ChallengeIssuer:
        """A new issuer signing with `new_secret`; the current secret keeps verifying (CORE-21)."""
        at = self._now(now)
        keep = [r for r in self._retired if at < r.retired_at + self.ttl]
        return ChallengeIssuer(
            new_secret,
            realm=self.realm,
            ttl=self.ttl,
            retired=(RetiredSecret(self._key, at), *keep),
            clock=self._clock,
        )

    def issue(
        self,
        *,
        method: str,
        intent: str,
        request: Mapping[str, Any],
        now: datetime | None = None,
        ttl: timedelta | None = None,
        digest: str | None = None,
        description: str | None = None,
        opaque: Mapping[str, str] | None = None,
        header: str | None = None,
    ) -> Challenge:
        life = self.ttl if ttl is None else min(ttl, self.ttl)
        expires = format_rfc3339(self._now(now) + life)
        request_b64 = encode_json_b64(request)
        opaque_b64 = None if opaque is None else encode_opaque(opaque)
        header = advertised_header(header)
        values = {
            "realm": self.realm,
            "method": method,
            "intent": intent,
            "request": request_b64,
            "expires": expires,
            "digest": digest,
            "header": header,
            "opaque": opaque_b64,
        }
        return Challenge(
            id=_mac(self._key, values),
            realm=self.realm,
            method=method,
            intent=intent,
            request=dict(request),
            request_b64=request_b64,
            expires=expires,
            digest=digest,
            description=description,
            opaque=None if opaque is None else dict(opaque),
            opaque_b64=opaque_b64,
            header=header,
        )

    def check_binding(self, echo: Challenge, *, now: datetime | None = None) -> None:
        """Authenticity and freshness only: ours, unexpired, HMAC matches (constant time).

        Expiry raises ChallengeExpired (an InvalidChallenge), checked before the HMAC so an
        intent can map it (sessions: challenge-not-found, AMB-05/06)."""
        at = self._now(now)
        if echo.realm != self.realm:
            raise InvalidChallenge("challenge realm does not match")
        if echo.expires is None:
            raise InvalidChallenge("challenge has no expires")
        try:
            expires = parse_rfc3339(echo.expires)
        except ValueError:
            raise InvalidChallenge("challenge expires is malformed") from None
        if expires <= at:
            raise ChallengeExpired("challenge expired")  # AMB-06: an InvalidChallenge
        values = _echo_values(echo)
        given = echo.id.encode("utf-8", "surrogatepass")
        ok = hmac.compare_digest(given, _mac(self._key, values).encode("ascii"))
        for old in self._retired:
            # Only challenges issued before retirement can carry an old-secret id.
            if expires <= old.retired_at + self.ttl:
                ok |= hmac.compare_digest(given, _mac(old.secret, values).encode("ascii"))
        if not ok:
            raise InvalidChallenge("challenge id does not match its parameters")

    def verify(
        self,
        echo: Challenge,
        *,
        method: str,
        intent: str,
        request: Mapping[str, Any],
        now: datetime | None = None,
        body: bytes | None = None,
    ) -> Challenge:
        """CORE-17/20: binding, then the route's demand now (method, intent, whole request).

        When the echo carries a `digest`, `body` (the current request body) must match it
        (CORE-13) or VerificationFailed is raised.
        """
        self.check_binding(echo, now=now)
        if echo.method != method or echo.intent != intent:
            raise InvalidChallenge("challenge is for another method or intent")
        if echo.request_b64 != encode_json_b64(request) and not _same_json(echo.request, request):
            raise InvalidChallenge("challenge request differs from what this route demands")
        if echo.digest is not None and not check_content_digest(echo.digest, body or b""):
            raise VerificationFailed("request body does not match the challenge digest")
        return echo
