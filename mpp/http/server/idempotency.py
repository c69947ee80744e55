"""`Idempotency-Key` for paid requests (CORE-47, SES-29): a duplicate never runs or pays again.

Atomic through the Store, across threads and processes: a request first *reserves* its key
with `put_idempotent(scope, key, PENDING)` (first writer wins in every store), and only the
winner charges and runs the handler; it then `replace_idempotent`s the marker with the final
response, or removes its own marker (`delete_idempotent`, compare-and-delete) when it did not
succeed, so the client may retry with the same key (e.g. after a 402 and a top-up). A duplicate
that finds:
- the final response → gets it replayed, no handler, no charge;
- a PENDING marker → 409 problem+json with `Retry-After` (the first is still running);
- a record of another request (method, path, query or body differ) → 422.

Scope: the channel id, not the challenge id (a decision against SES-29's `(challengeId, key)`):
session challenges are reused until they expire (AMB-05) and a client's retry after a lost
response may carry a fresh challenge; keyed by challenge that retry would run and pay again.
The channel is proven by the credential's verified voucher, so only its payer can replay.

Crash safety: a process that dies between reserving and completing leaves PENDING behind, so
the client never pays twice for that key; after `pending_timeout` the 409 says the outcome is
unknown (no Retry-After) and a new key is needed to run the request again.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

from mpp.session.ports import Store

MAX_KEY_LENGTH = 255
MAX_STORED_BODY = 4 * 1024 * 1024
PENDING_TIMEOUT = 600.0
_PENDING = "pending"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    fingerprint: str = ""
    replayable: bool = True  # False: completed, but too large to keep

    def encode(self) -> bytes:
        return json.dumps(
            {
                "status": self.status,
                "headers": [list(h) for h in self.headers],
                "body": base64.b64encode(self.body).decode("ascii"),
                "fp": self.fingerprint,
                "replayable": self.replayable,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> StoredResponse | None:
        try:
            data: Any = json.loads(raw)
            headers = tuple((str(k), str(v)) for k, v in data["headers"])
            body = base64.b64decode(data["body"])
            fp, ok = str(data.get("fp", "")), bool(data.get("replayable", True))
            return cls(int(data["status"]), headers, body, fp, ok)
        except (ValueError, KeyError, TypeError):
            return None


@dataclass(frozen=True, slots=True)
class InProgress:
    """Another request holds the key (or crashed holding it)."""

    at: float
    fingerprint: str


@dataclass(frozen=True, slots=True)
class Reservation:
    """This request holds the key: complete() or abandon() it."""

    scope: str
    key: str
    marker: bytes
    fingerprint: str


def valid_key(key: str | None) -> bool:
    return bool(key) and len(key or "") <= MAX_KEY_LENGTH and (key or "").isprintable()


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """What makes a duplicate the *same* request: a key reused for another one gets 422."""
    h = hashlib.sha256()
    for part in (method.encode(), path.encode(), query, body):
        h.update(len(part).to_bytes(8, "big") + part)
    return h.hexdigest()


def _decode_pending(raw: bytes) -> InProgress | None:
    try:
        data: Any = json.loads(raw)
        if not isinstance(data, dict) or data.get(_PENDING) is not True:
            return None
        return InProgress(float(data["at"]), str(data["fp"]))
    except (ValueError, KeyError, TypeError):
        return None


class IdempotencyCache:
    """Reserve / replay / complete over the Store's idempotency records."""

    def __init__(self, store: Store, *, pending_timeout: float = PENDING_TIMEOUT) -> None:
        self.store = store
        self.pending_timeout = pending_timeout

    @staticmethod
    def scope(channel_id: str) -> str:
        return "http:" + channel_id.lower()

    def reserve(
        self, channel_id: str, key: str, fp: str, *, now: float
    ) -> Reservation | StoredResponse | InProgress | None:
        """Reservation: run the request. StoredResponse: replay it. InProgress: 409. None: the
        record is unreadable or belongs to another request (answer 422)."""
        scope = self.scope(channel_id)
        nonce = base64.urlsafe_b64encode(os.urandom(12)).decode("ascii")
        marker = json.dumps({_PENDING: True, "at": now, "fp": fp, "n": nonce}).encode()
        for _ in range(3):  # the holder may delete its marker between our put and our get
            if self.store.put_idempotent(scope, key, marker):
                return Reservation(scope, key, marker, fp)
            raw = self.store.get_idempotent(scope, key)
            if raw is None:
                continue
            held = _decode_pending(raw)
            if held is not None:
                return held if held.fingerprint == fp else None
            stored = StoredResponse.decode(raw)
            return stored if stored is not None and stored.fingerprint == fp else None
        return InProgress(now, fp)

    def stale(self, pending: InProgress, *, now: float) -> bool:
        return now - pending.at > self.pending_timeout

    def complete(self, reservation: Reservation, response: StoredResponse) -> None:
        if len(response.body) > MAX_STORED_BODY:
            response = StoredResponse(
                response.status, response.headers, b"", reservation.fingerprint, False
            )
        self.store.replace_idempotent(reservation.scope, reservation.key, response.encode())

    def abandon(self, reservation: Reservation) -> None:
        """The request did not succeed: free the key for a retry (only our own marker)."""
        self.store.delete_idempotent(reservation.scope, reservation.key, reservation.marker)
