"""PostgreSQL Store: for several server processes (or hosts) sharing one channel ledger.

Concurrency: `update` runs in one READ COMMITTED transaction that first takes the channel row's
lock with `SELECT ... FOR UPDATE`; every other updater of that channel blocks on the same row
until we commit, then reads the committed result, so read → decide → write is linearizable per
channel while different channels proceed in parallel. A channel that does not exist yet has no
row to lock, so creators serialize on `pg_advisory_xact_lock(hashtext(channel_id))` and re-read.
No serialization retries are needed (and `decide` runs exactly once per call).

Connections: one per thread (base.PerThread), autocommit with explicit transactions; psycopg
prepares the hot statements automatically after a few executions.

Amounts are NUMERIC(39,0) (uint128 has 39 decimal digits), never floats.

Voucher feed (ports.VoucherFeed): an `update` that appends voucher rows also runs
`pg_notify('mpp_vouchers', channel_id)` in its transaction, so the announcement goes out when,
and only if, the acceptance commits. `subscribe_vouchers` starts one listener thread per store
(its own connection, `LISTEN`, blocking on the socket: no polling) that hands each channel id to
the subscribers; it reconnects after a lost connection and then reports `None` ("may have missed
some"). It is stopped by a NOTIFY on its private channel from `close()`.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import psycopg

from mpp.session.ports import ChannelState, Mutation, VoucherRecord
from mpp.store.base import PerThread, check_mutation, normalize_id

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
VOUCHER_CHANNEL = "mpp_vouchers"  # NOTIFY channel; payload: the lowercase channel id
_SCHEMA_LOCK = 0x6D7070  # advisory lock id for schema creation ("mpp")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS mpp_schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS mpp_channels (
        channel_id TEXT PRIMARY KEY,
        escrow TEXT NOT NULL,
        chain_id BIGINT NOT NULL,
        payer TEXT NOT NULL,
        payee TEXT NOT NULL,
        token TEXT NOT NULL,
        authorized_signer TEXT NOT NULL,
        deposit NUMERIC(39, 0) NOT NULL,
        settled NUMERIC(39, 0) NOT NULL,
        accepted_cumulative NUMERIC(39, 0) NOT NULL,
        spent NUMERIC(39, 0) NOT NULL,
        voucher_signature TEXT,
        close_requested_at BIGINT NOT NULL,
        finalized BOOLEAN NOT NULL,
        refreshed_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS mpp_vouchers (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        channel_id TEXT NOT NULL,
        cumulative_amount NUMERIC(39, 0) NOT NULL,
        signature TEXT NOT NULL,
        challenge_id TEXT NOT NULL,
        received_at BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS mpp_vouchers_by_channel ON mpp_vouchers (channel_id, seq)",
    """CREATE TABLE IF NOT EXISTS mpp_idempotency (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        response BYTEA NOT NULL,
        PRIMARY KEY (scope, key)
    )""",
    "CREATE TABLE IF NOT EXISTS mpp_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)

_COLS = (
    "channel_id, escrow, chain_id, payer, payee, token, authorized_signer, deposit, settled, "
    "accepted_cumulative, spent, voucher_signature, close_requested_at, finalized, "
    "refreshed_at, updated_at"
)
# The f-strings below only splice the constant column list; values always go through %s.
_SELECT_ONE = f"SELECT {_COLS} FROM mpp_channels WHERE channel_id = %s"  # noqa: S608
_LOCK_ONE = _SELECT_ONE + " FOR UPDATE"
_SELECT_ALL = f"SELECT {_COLS} FROM mpp_channels ORDER BY channel_id"  # noqa: S608
_UPSERT = (
    f"INSERT INTO mpp_channels ({_COLS}) VALUES ({', '.join(['%s'] * 16)}) "  # noqa: S608
    "ON CONFLICT (channel_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLS.split(", ")[1:])
)
_INSERT_VOUCHER = (
    "INSERT INTO mpp_vouchers (channel_id, cumulative_amount, signature, challenge_id, "
    "received_at) VALUES (%s, %s, %s, %s, %s)"
)


def _to_state(r: Sequence[Any]) -> ChannelState:
    # NUMERIC arrives as Decimal built from the exact decimal text, so int() is exact.
    return ChannelState(
        channel_id=r[0],
        escrow=r[1],
        chain_id=int(r[2]),
        payer=r[3],
        payee=r[4],
        token=r[5],
        authorized_signer=r[6],
        deposit=int(r[7]),
        settled=int(r[8]),
        accepted_cumulative=int(r[9]),
        spent=int(r[10]),
        voucher_signature=r[11],
        close_requested_at=int(r[12]),
        finalized=bool(r[13]),
        refreshed_at=int(r[14]),
        updated_at=int(r[15]),
    )


def _to_row(s: ChannelState) -> tuple[object, ...]:
    return (
        s.channel_id,
        s.escrow,
        s.chain_id,
        s.payer,
        s.payee,
        s.token,
        s.authorized_signer,
        s.deposit,
        s.settled,
        s.accepted_cumulative,
        s.spent,
        s.voucher_signature,
        s.close_requested_at,
        s.finalized,
        s.refreshed_at,
        s.updated_at,
    )


class PostgresStore:
    """Store on a PostgreSQL database given by a libpq DSN/URL; thread- and process-safe."""

    def __init__(self, dsn: str, *, connect_timeout: int = 10) -> None:
        self.dsn = dsn
        self._connect_timeout = connect_timeout
        # Reconnect when a connection broke (server restart): `closed` is then True.
        self._conns = PerThread(self._connect, lambda conn: not conn.closed)
        self._listener: _Listener | None = None
        self._listener_lock = threading.Lock()
        conn = self._conn()
        with conn.transaction():
            # Concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalogs.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for stmt in _SCHEMA:
                conn.execute(stmt)
            row = conn.execute("SELECT max(version) FROM mpp_schema_version").fetchone()
            found = None if row is None else row[0]
            if found is None:
                conn.execute("INSERT INTO mpp_schema_version VALUES (%s)", (SCHEMA_VERSION,))
            elif found > SCHEMA_VERSION:
                raise RuntimeError(f"store schema v{found} is newer than this code")

    def _conn(self) -> psycopg.Connection[Any]:
        return self._conns.get()

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=self._connect_timeout)

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query; a connection found dead (server restart) is replaced once."""
        conn = self._conn()
        try:
            return conn.execute(sql, params).fetchall()
        except psycopg.OperationalError:
            if not conn.closed:
                raise
            return self._conn().execute(sql, params).fetchall()

    def get(self, channel_id: str) -> ChannelState | None:
        rows = self._read(_SELECT_ONE, (normalize_id(channel_id),))
        return _to_state(rows[0]) if rows else None

    def update(
        self, channel_id: str, decide: Callable[[ChannelState | None], Mutation]
    ) -> ChannelState | None:
        cid = normalize_id(channel_id)
        for attempt in (1, 2):
            conn = self._conn()
            decided = False
            try:
                # transaction() commits on success and rolls back + re-raises if anything
                # (decide included) raises, so a failed decision writes nothing.
                with conn.transaction(), conn.cursor() as cur:
                    row = cur.execute(_LOCK_ONE, (cid,)).fetchone()
                    if row is None:
                        # No row to lock yet: serialize would-be creators, then look again
                        # (READ COMMITTED gives each statement a fresh snapshot, so a creator
                        # that committed while we waited is visible and locked by the SELECT).
                        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (cid,))
                        row = cur.execute(_LOCK_ONE, (cid,)).fetchone()
                    current = None if row is None else _to_state(row)
                    decided = True
                    state, rows = check_mutation(cid, decide(current))
                    if state is not None:
                        cur.execute(_UPSERT, _to_row(state))
                        current = state
                    if rows:
                        cur.executemany(
                            _INSERT_VOUCHER,
                            [
                                (cid, v.cumulative_amount, v.signature, v.challenge_id,
                                 v.received_at)
                                for v in rows
                            ],
                        )  # fmt: skip
                        # Delivered at COMMIT, never for a rolled-back acceptance.
                        cur.execute("SELECT pg_notify(%s, %s)", (VOUCHER_CHANNEL, cid))
                return current
            except psycopg.OperationalError:
                # A connection that died before anything was decided (idle connection killed
                # by a server restart) is safe to replace and retry. Once decide ran, the
                # outcome of a lost COMMIT is unknown, so the error goes to the caller.
                if decided or attempt == 2 or not conn.closed:
                    raise
        raise AssertionError("unreachable")

    def vouchers(self, channel_id: str) -> list[VoucherRecord]:
        rows = self._read(
            "SELECT channel_id, cumulative_amount, signature, challenge_id, received_at "
            "FROM mpp_vouchers WHERE channel_id = %s ORDER BY seq",
            (normalize_id(channel_id),),
        )
        return [VoucherRecord(r[0], int(r[1]), r[2], r[3], int(r[4])) for r in rows]

    def channels(self) -> list[ChannelState]:
        return [_to_state(r) for r in self._read(_SELECT_ALL)]

    def get_idempotent(self, scope: str, key: str) -> bytes | None:
        rows = self._read(
            "SELECT response FROM mpp_idempotency WHERE scope = %s AND key = %s", (scope, key)
        )
        return bytes(rows[0][0]) if rows else None

    def put_idempotent(self, scope: str, key: str, response: bytes) -> bool:
        # A single autocommit statement; ON CONFLICT DO NOTHING makes the first writer win.
        # Not retried on a lost connection: a retry could report our own insert as "taken".
        cur = self._conn().execute(
            "INSERT INTO mpp_idempotency (scope, key, response) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            (scope, key, bytes(response)),
        )
        return cur.rowcount == 1

    def replace_idempotent(self, scope: str, key: str, response: bytes) -> None:
        self._conn().execute(
            "INSERT INTO mpp_idempotency (scope, key, response) VALUES (%s, %s, %s) "
            "ON CONFLICT (scope, key) DO UPDATE SET response = EXCLUDED.response",
            (scope, key, bytes(response)),
        )

    def delete_idempotent(self, scope: str, key: str, expected: bytes) -> bool:
        cur = self._conn().execute(
            "DELETE FROM mpp_idempotency WHERE scope = %s AND key = %s AND response = %s",
            (scope, key, bytes(expected)),
        )
        return cur.rowcount == 1

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM mpp_meta WHERE key = %s", (key,))
        return str(rows[0][0]) if rows else None

    def put_meta(self, key: str, value: str) -> None:
        self._conn().execute(
            "INSERT INTO mpp_meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            (key, str(value)),
        )

    def subscribe_vouchers(self, callback: Callable[[str | None], None]) -> Callable[[], None]:
        """ports.VoucherFeed: `callback(channel_id)` for vouchers committed by any process."""
        with self._listener_lock:
            if self._conns.closed:
                raise RuntimeError("store is closed")
            if self._listener is None or self._listener.pid != os.getpid():
                self._listener = _Listener(self.dsn, self._connect_timeout)
            listener = self._listener
        listener.add(callback)
        return lambda: listener.remove(callback)

    def close(self) -> None:
        with self._listener_lock:
            listener, self._listener = self._listener, None
        if listener is not None and listener.pid == os.getpid():
            listener.stop()
        self._conns.close_all()


class _Listener:
    """One LISTEN connection in a daemon thread, fanning notifications out to callbacks."""

    def __init__(self, dsn: str, connect_timeout: int) -> None:
        self.dsn = dsn
        self.pid = os.getpid()
        self._timeout = connect_timeout
        self._stop_channel = "mpp_stop_" + uuid.uuid4().hex
        self._callbacks: list[Callable[[str | None], None]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpp-pg-listen", daemon=True)
        self._thread.start()
        # Subscribers rely on LISTEN being active once subscribe returns (no lost wake-up).
        if not self._ready.wait(connect_timeout + 5):
            log.warning("voucher listener not ready; cross-process wake-ups may be late")

    def add(self, callback: Callable[[str | None], None]) -> None:
        with self._lock:
            self._callbacks.append(callback)

    def remove(self, callback: Callable[[str | None], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

    def _fire(self, channel_id: str | None) -> None:
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback(channel_id)
            except Exception:  # a subscriber's bug must not kill the feed
                log.exception("voucher subscriber failed")

    def _run(self) -> None:
        connected_before = False
        while not self._stopping.is_set():
            try:
                with psycopg.connect(
                    self.dsn, autocommit=True, connect_timeout=self._timeout
                ) as conn:
                    conn.execute(f"LISTEN {VOUCHER_CHANNEL}")
                    conn.execute(f"LISTEN {self._stop_channel}")
                    self._ready.set()
                    if connected_before:
                        self._fire(None)  # announcements may have been missed meanwhile
                    connected_before = True
                    for note in conn.notifies():
                        if note.channel == self._stop_channel or self._stopping.is_set():
                            return
                        if note.payload:
                            self._fire(note.payload)
            except psycopg.Error:
                log.warning("voucher listener lost its connection; reconnecting")
                self._stopping.wait(1.0)

    def stop(self) -> None:
        self._stopping.set()
        try:
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=self._timeout) as c:
                c.execute("SELECT pg_notify(%s, '')", (self._stop_channel,))
        except psycopg.Error:
            pass  # the listener's own connection is broken too: it sees `_stopping`
        self._thread.join(5)
