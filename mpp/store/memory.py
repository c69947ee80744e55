"""In-memory Store (tests only): the same contract as SQLite/PostgreSQL, without durability.

Linearizable per channel across threads via one lock per channel id; it cannot serialize across
processes, which is why production code uses mpp.store.sqlite or mpp.store.postgres.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from mpp.session.ports import ChannelState, Mutation, VoucherRecord
from mpp.store.base import check_mutation, normalize_id


class MemoryStore:
    """Dict-backed Store; `close()` is a no-op apart from refusing further use."""

    def __init__(self) -> None:
        self._states: dict[str, ChannelState] = {}
        self._vouchers: dict[str, list[VoucherRecord]] = {}
        self._idem: dict[tuple[str, str], bytes] = {}
        self._settings: dict[str, str] = {}
        self._locks: dict[str, threading.Lock] = {}
        # Guards the dicts themselves (creating per-channel locks, idempotency records).
        self._meta = threading.Lock()
        self._closed = False

    def _lock_for(self, cid: str) -> threading.Lock:
        with self._meta:
            self._check_open()
            lock = self._locks.get(cid)
            if lock is None:
                lock = self._locks[cid] = threading.Lock()
            return lock

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("store is closed")

    def get(self, channel_id: str) -> ChannelState | None:
        self._check_open()
        return self._states.get(normalize_id(channel_id))

    def update(
        self, channel_id: str, decide: Callable[[ChannelState | None], Mutation]
    ) -> ChannelState | None:
        cid = normalize_id(channel_id)
        with self._lock_for(cid):
            current = self._states.get(cid)
            # Validate everything before touching the dicts so a bad mutation writes nothing.
            state, rows = check_mutation(cid, decide(current))
            if state is not None:
                self._states[cid] = state
                current = state
            if rows:
                with self._meta:
                    self._vouchers.setdefault(cid, []).extend(rows)
            return current

    def vouchers(self, channel_id: str) -> list[VoucherRecord]:
        self._check_open()
        with self._meta:
            return list(self._vouchers.get(normalize_id(channel_id), ()))

    def channels(self) -> list[ChannelState]:
        self._check_open()
        with self._meta:
            return [self._states[k] for k in sorted(self._states)]

    def get_idempotent(self, scope: str, key: str) -> bytes | None:
        self._check_open()
        with self._meta:
            return self._idem.get((scope, key))

    def put_idempotent(self, scope: str, key: str, response: bytes) -> bool:
        with self._meta:
            self._check_open()
            if (scope, key) in self._idem:
                return False
            self._idem[(scope, key)] = bytes(response)
            return True

    def replace_idempotent(self, scope: str, key: str, response: bytes) -> None:
        with self._meta:
            self._check_open()
            self._idem[(scope, key)] = bytes(response)

    def delete_idempotent(self, scope: str, key: str, expected: bytes) -> bool:
        with self._meta:
            self._check_open()
            if self._idem.get((scope, key)) != bytes(expected):
                return False
            del self._idem[(scope, key)]
            return True

    def get_meta(self, key: str) -> str | None:
        with self._meta:
            self._check_open()
            return self._settings.get(key)

    def put_meta(self, key: str, value: str) -> None:
        with self._meta:
            self._check_open()
            self._settings[key] = str(value)

    def close(self) -> None:
        self._closed = True
