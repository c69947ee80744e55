"""Helpers shared by the Store adapters: id normalization and mutation checks (SES-05, AMB-01)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from mpp.core.amounts import MAX_AMOUNT  # uint128: anything outside is a bug upstream
from mpp.session.ports import ChannelState, Mutation, VoucherRecord

C = TypeVar("C")


def normalize_id(channel_id: str) -> str:
    """SES-05: the state key is the lowercase channel id."""
    return channel_id.strip().lower()


def _check_amount(name: str, value: int) -> None:
    # bool is an int subclass; a float would silently lose precision above 2**53.
    if type(value) is not int or not 0 <= value <= MAX_AMOUNT:
        raise ValueError(f"{name} must be an int in [0, 2**128-1], got {value!r}")


def check_mutation(
    cid: str, mutation: Mutation
) -> tuple[ChannelState | None, tuple[VoucherRecord, ...]]:
    """Validate what `decide` returned for channel `cid`; returns rows with normalized ids.

    A state or voucher for another channel would corrupt the per-channel lock discipline, so it
    is rejected (the transaction then rolls back like any exception from `decide`).
    """
    if not isinstance(mutation, Mutation):
        raise TypeError(f"decide must return a Mutation, got {type(mutation).__name__}")
    state = mutation.state
    if state is not None:
        if normalize_id(state.channel_id) != cid:
            raise ValueError(f"state for {state.channel_id} returned while updating {cid}")
        for name in ("deposit", "settled", "accepted_cumulative", "spent"):
            _check_amount(name, getattr(state, name))
        if state.channel_id != cid:
            state = dataclasses.replace(state, channel_id=cid)
    rows: list[VoucherRecord] = []
    for row in mutation.vouchers:
        if normalize_id(row.channel_id) != cid:
            raise ValueError(f"voucher for {row.channel_id} appended while updating {cid}")
        _check_amount("cumulative_amount", row.cumulative_amount)
        if row.channel_id != cid:
            row = dataclasses.replace(row, channel_id=cid)
        rows.append(row)
    return state, tuple(rows)


class PerThread(Generic[C]):
    """One connection per thread (and per process), all closed by `close_all()`.

    Connections of threads that have exited are closed when the next one is opened. After a
    fork() the child never touches the parent's connections: using them would interleave two
    processes on one socket/file handle, and even closing them would end the parent's PostgreSQL
    session or make SQLite checkpoint under the parent's feet, so they stay referenced, unused.
    """

    def __init__(self, connect: Callable[[], C], usable: Callable[[C], bool]) -> None:
        self._connect = connect
        self._usable = usable
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._open: list[tuple[weakref.ref[threading.Thread], C]] = []
        self._inherited: list[C] = []
        self.closed = False

    def get(self) -> C:
        if self.closed:
            raise RuntimeError("store is closed")
        conn: C | None = getattr(self._local, "conn", None)
        if conn is not None and self._pid == os.getpid() and self._usable(conn):
            return conn
        with self._lock:
            if self._pid != os.getpid():
                self._inherited.extend(c for _, c in self._open)
                self._open, self._pid = [], os.getpid()
            keep = []
            for ref, old in self._open:
                owner = ref()
                if owner is not None and owner.is_alive() and old is not conn:
                    keep.append((ref, old))
                else:
                    _close(old)
            conn = self._connect()
            self._open = [*keep, (weakref.ref(threading.current_thread()), conn)]
        self._local.conn = conn
        return conn

    def close_all(self) -> None:
        self.closed = True
        with self._lock:
            conns, self._open = self._open, []
            mine = self._pid == os.getpid()
        for _, conn in conns if mine else ():
            _close(conn)


def _close(conn: object) -> None:
    close = getattr(conn, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):  # a broken connection may fail to close cleanly
            close()
