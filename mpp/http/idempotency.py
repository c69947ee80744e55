"""`Idempotency-Key` for paid requests (CORE-47, SES-29): a replay returns the stored response.

Records go to the session Store (`get_idempotent` / `put_idempotent`, first writer wins),
scoped by channel so only the payer who made the request can replay it. Concurrent requests
with the same key in this process wait for the first one (an in-flight map); across processes
the Store API cannot make "check, run, charge, store" one transaction (see the module note in
the report: the Store port needs an idempotency record written in the charge's transaction).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mpp.session.ports import Store

MAX_KEY_LENGTH = 255
MAX_STORED_BODY = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def encode(self) -> bytes:
        return json.dumps(
            {
                "status": self.status,
                "headers": [list(h) for h in self.headers],
                "body": base64.b64encode(self.body).decode("ascii"),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> StoredResponse | None:
        try:
            data: Any = json.loads(raw)
            headers = tuple((str(k), str(v)) for k, v in data["headers"])
            return cls(int(data["status"]), headers, base64.b64decode(data["body"]))
        except (ValueError, KeyError, TypeError):
            return None


def valid_key(key: str | None) -> bool:
    return bool(key) and len(key or "") <= MAX_KEY_LENGTH and (key or "").isprintable()


class IdempotencyCache:
    """Stored responses in the Store plus an in-process in-flight map."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._inflight: dict[tuple[str, str], asyncio.Event] = {}

    @staticmethod
    def scope(channel_id: str) -> str:
        return "http:" + channel_id.lower()

    def lookup(self, scope: str, key: str) -> StoredResponse | None:
        raw = self.store.get_idempotent(scope, key)
        return None if raw is None else StoredResponse.decode(raw)

    def save(self, scope: str, key: str, response: StoredResponse) -> bool:
        if len(response.body) > MAX_STORED_BODY:
            return False
        return self.store.put_idempotent(scope, key, response.encode())

    async def wait_inflight(self, scope: str, key: str) -> None:
        """Wait while another request of this process holds the same key."""
        while (event := self._inflight.get((scope, key))) is not None:
            await event.wait()

    @contextmanager
    def hold(self, scope: str, key: str) -> Iterator[None]:
        event = asyncio.Event()
        self._inflight[(scope, key)] = event
        try:
            yield
        finally:
            del self._inflight[(scope, key)]
            event.set()
