"""`Payment-Receipt: base64url-nopad(JSON)` (CORE-32/33/41)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from mpp.core.challenge import is_method_name
from mpp.core.encoding import b64url_encode, compact_json, decode_json_b64
from mpp.core.errors import FormatError, ParseError, ReceiptParseError
from mpp.core.limits import check_credential_size
from mpp.core.rfc3339 import format_rfc3339, parse_rfc3339

RESERVED = frozenset({"status", "method", "timestamp", "reference"})


@dataclass(frozen=True, slots=True)
class Receipt:
    """`fields` carries everything beyond the core four (method fields, externalId, ...)."""

    method: str
    reference: str
    timestamp: str
    status: str = "success"
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def success(
        cls, *, method: str, reference: str, timestamp: datetime | str, **fields: Any
    ) -> Receipt:
        stamp = timestamp if isinstance(timestamp, str) else format_rfc3339(timestamp)
        return cls(method=method, reference=reference, timestamp=stamp, fields=fields)

    def timestamp_at(self) -> datetime:
        return parse_rfc3339(self.timestamp)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": self.status,
            "method": self.method,
            "timestamp": self.timestamp,
            "reference": self.reference,
        }
        body.update(self.fields)
        return body

    def to_header(self) -> str:
        _validate(self.status, self.method, self.timestamp, self.reference, FormatError)
        clash = RESERVED.intersection(self.fields)
        if clash:
            raise FormatError(f"receipt field {sorted(clash)[0]} is reserved")
        return b64url_encode(compact_json(self.to_json()))


def _validate(
    status: object,
    method: object,
    timestamp: object,
    reference: object,
    error: type[ParseError] | type[FormatError],
) -> None:
    if status != "success":
        raise error('receipt status must be "success" (CORE-33)')
    if not isinstance(method, str) or not is_method_name(method):
        raise error("receipt method is missing or invalid")
    if not isinstance(reference, str):
        raise error("receipt reference is missing or not a string")
    if not isinstance(timestamp, str):
        raise error("receipt timestamp is missing or not a string")
    try:
        parse_rfc3339(timestamp)
    except ValueError:
        raise error("receipt timestamp is not RFC 3339") from None


def parse_receipt(value: str) -> Receipt:
    """Parse and validate a `Payment-Receipt` value; unknown fields are kept in `fields`."""
    check_credential_size(value)
    data = decode_json_b64(value.strip(" \t"), what="receipt", error=ReceiptParseError)
    status, method = data.get("status"), data.get("method")
    timestamp, reference = data.get("timestamp"), data.get("reference")
    _validate(status, method, timestamp, reference, ReceiptParseError)
    fields = {k: v for k, v in data.items() if k not in RESERVED}
    return Receipt(
        method=cast(str, method),
        reference=cast(str, reference),
        timestamp=cast(str, timestamp),
        fields=fields,
    )
