"""The `Payment` challenge (`WWW-Authenticate`): model, parser and formatter (CORE-01..16)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mpp.core.encoding import decode_json_b64, decode_opaque, encode_json_b64, encode_opaque
from mpp.core.errors import ChallengeParseError, FormatError, ParseError
from mpp.core.limits import check_challenge_size
from mpp.core.params import RawChallenge, format_challenge, is_token, scan_challenges
from mpp.core.rfc3339 import parse_rfc3339, require_aware

SCHEME = "Payment"
DEFAULT_CREDENTIAL_HEADER = "Authorization"
REQUIRED_PARAMS = ("id", "realm", "method", "intent", "request")

_METHOD = re.compile(r"[a-z]++")  # CORE-09: 1*LOWERALPHA, case-sensitive
_INTENT = re.compile(r"[A-Za-z0-9-]++")  # CORE-09: 1*(ALPHA / DIGIT / "-")


def is_method_name(value: str) -> bool:
    return _METHOD.fullmatch(value) is not None


def is_intent_name(value: str) -> bool:
    return _INTENT.fullmatch(value) is not None


def advertised_header(header: str | None) -> str | None:
    """The credential header to advertise and bind: None for the implicit `Authorization`."""
    if header is None or header == "" or header.lower() == "authorization":
        return None
    if not is_token(header):
        raise ValueError(f"credential header {header!r} is not a field name")
    return header


@dataclass(frozen=True, slots=True)
class Challenge:
    """One Payment challenge.

    `request_b64` / `opaque_b64` are the wire strings, kept verbatim after parsing (CORE-19/23);
    when built in code, leave them empty and they are derived from `request` / `opaque` (JCS).
    `header` is the draft -01 credential-header param (None = `Authorization`, AMB-18).
    The constructor does not validate; `to_header()` and the parsers do.
    """

    id: str
    realm: str
    method: str
    intent: str
    request: dict[str, Any] = field(default_factory=dict)
    request_b64: str = ""
    expires: str | None = None
    digest: str | None = None
    description: str | None = None
    opaque: dict[str, str] | None = None
    opaque_b64: str | None = None
    header: str | None = None

    def __post_init__(self) -> None:
        if not self.request_b64:
            object.__setattr__(self, "request_b64", encode_json_b64(self.request))
        if self.opaque is not None and self.opaque_b64 is None:
            object.__setattr__(self, "opaque_b64", encode_opaque(self.opaque))

    @property
    def credential_header(self) -> str:
        return self.header or DEFAULT_CREDENTIAL_HEADER

    def expires_at(self) -> datetime | None:
        """`expires` as an aware datetime (None when absent); ValueError when malformed."""
        return None if self.expires is None else parse_rfc3339(self.expires)

    def is_expired(self, now: datetime) -> bool:
        """CORE-14. A challenge without `expires` never expires by itself; `expires <= now` has."""
        at = self.expires_at()
        return at is not None and at <= require_aware(now)

    def wire_params(self) -> list[tuple[str, str]]:
        """The auth-params in emission order (required first, then the optional ones present)."""
        params = [
            ("id", self.id),
            ("realm", self.realm),
            ("method", self.method),
            ("intent", self.intent),
            ("request", self.request_b64),
        ]
        if self.expires is not None:
            params.append(("expires", self.expires))
        if self.digest is not None:
            params.append(("digest", self.digest))
        if self.description is not None:
            params.append(("description", self.description))
        if self.header is not None:
            params.append(("header", self.header))
        if self.opaque_b64 is not None:
            params.append(("opaque", self.opaque_b64))
        return params

    def to_header(self) -> str:
        """Format as a `WWW-Authenticate` value; FormatError on anything a peer must reject."""
        _check_formattable(self)
        return format_challenge(SCHEME, self.wire_params())

    def echo(self) -> dict[str, str]:
        """CORE-23: the `challenge` object of a credential, wire strings unchanged."""
        echo = {
            "id": self.id,
            "realm": self.realm,
            "method": self.method,
            "intent": self.intent,
            "request": self.request_b64,
        }
        for name, value in (
            ("expires", self.expires),
            ("digest", self.digest),
            ("description", self.description),
            ("header", self.header),
            ("opaque", self.opaque_b64),
        ):
            if value is not None:
                echo[name] = value
        return echo


def _check_formattable(ch: Challenge) -> None:
    if not ch.id:
        raise FormatError("challenge id is missing or empty (CORE-08)")
    if not ch.realm:
        raise FormatError("challenge realm is missing or empty (CORE-16)")
    if not is_method_name(ch.method):
        raise FormatError("method must be lowercase letters only (CORE-09)")
    if not is_intent_name(ch.intent):
        raise FormatError("intent must be letters, digits and '-' (CORE-09)")
    if ch.expires is not None:
        try:
            parse_rfc3339(ch.expires)
        except ValueError:
            raise FormatError("expires is not an RFC 3339 date-time") from None
    if ch.header is not None and advertised_header(ch.header) != ch.header:
        raise FormatError("header must name a non-default credential field")


def challenge_from_params(
    params: Mapping[str, str], *, error: type[ParseError] = ChallengeParseError
) -> Challenge:
    """Validate Payment auth-params (or a credential's echo object) and build a Challenge."""
    for name in REQUIRED_PARAMS:
        if name not in params:
            raise error(f"missing required parameter {name}")
    ident = params["id"]
    if not ident:
        raise error("empty id")
    realm = params["realm"]
    if not realm:
        raise error("empty realm")
    method, intent = params["method"], params["intent"]
    if not is_method_name(method):
        raise error("invalid method (1*LOWERALPHA)")
    if not is_intent_name(intent):
        raise error("invalid intent")
    request_b64 = params["request"]
    request = decode_json_b64(request_b64, what="request", error=error)
    expires = params.get("expires")
    if expires is not None:
        try:
            parse_rfc3339(expires)
        except ValueError:
            raise error("expires is not an RFC 3339 date-time") from None
    opaque_b64 = params.get("opaque")
    opaque = None if opaque_b64 is None else decode_opaque(opaque_b64, error=error)
    header = params.get("header")
    if header is not None:
        try:
            header = advertised_header(header)
        except ValueError:
            raise error("header is not a field name") from None
    return Challenge(
        id=ident,
        realm=realm,
        method=method,
        intent=intent,
        request=request,
        request_b64=request_b64,
        expires=expires,
        digest=params.get("digest"),
        description=params.get("description"),
        opaque=opaque,
        opaque_b64=opaque_b64,
        header=header,
    )


def _from_raw(raw: RawChallenge) -> Challenge:
    if raw.error is not None:
        raise ChallengeParseError(f"malformed Payment challenge: {raw.error}")
    if raw.token68 is not None:
        raise ChallengeParseError("Payment challenge carries a token68, not auth-params")
    params: dict[str, str] = {}
    for name, value in raw.params:
        if name in params:
            raise ChallengeParseError(f"duplicate parameter {name}")  # CORE-06
        params[name] = value
    return challenge_from_params(params)


def parse_challenges(values: str | Iterable[str], *, strict: bool = True) -> list[Challenge]:
    """Every Payment challenge in one or several `WWW-Authenticate` values (CORE-04).

    Other schemes are skipped. A broken Payment challenge raises ChallengeParseError naming the
    problem; with `strict=False` it is skipped instead, so a client can still use the good ones.
    """
    if isinstance(values, str):
        values = (values,)
    out: list[Challenge] = []
    for value in values:
        check_challenge_size(value)
        for raw in scan_challenges(value):
            if raw.scheme.lower() != "payment":
                continue
            try:
                out.append(_from_raw(raw))
            except ChallengeParseError:
                if strict:
                    raise
    return out


def parse_challenge(values: str | Iterable[str]) -> Challenge:
    """The first Payment challenge; ChallengeParseError when there is none (CORE-07)."""
    found = parse_challenges(values)
    if not found:
        raise ChallengeParseError("no Payment challenge found")
    return found[0]
