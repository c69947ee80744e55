"""SQLite Store (the default): one file, WAL journal, linearizable per channel across processes.

Concurrency: every `update` is `BEGIN IMMEDIATE` → read → decide → write → `COMMIT` on a
connection owned by the calling thread. BEGIN IMMEDIATE takes the database's single write lock up
front, so two updaters (threads or processes) can never both read the same old state; readers
keep going thanks to WAL. The lock is database-wide rather than per channel, which is fine for an
embedded store: each transaction is a few microseconds of work plus one fsync.

Durability: `synchronous=FULL` fsyncs the WAL on every commit. With NORMAL a commit survives a
process crash but may be rolled back by a power loss or kernel crash, and SES-25/SES-28 say an
accepted voucher (and a `spent` increment made before serving) must never be lost.

Amounts are uint128 but SQLite integers are 64-bit, so they are stored as decimal TEXT.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Literal

from mpp.session.ports import ChannelState, Mutation, VoucherRecord
from mpp.store.base import PerThread, check_mutation, normalize_id

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS channels (
    channel_id TEXT PRIMARY KEY,
    escrow TEXT NOT NULL,
    chain_id INTEGER NOT NULL,
    payer TEXT NOT NULL,
    payee TEXT NOT NULL,
    token TEXT NOT NULL,
    authorized_signer TEXT NOT NULL,
    deposit TEXT NOT NULL,
    settled TEXT NOT NULL,
    accepted_cumulative TEXT NOT NULL,
    spent TEXT NOT NULL,
    voucher_signature TEXT,
    close_requested_at INTEGER NOT NULL,
    finalized INTEGER NOT NULL,
    refreshed_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS vouchers (
    seq INTEGER PRIMARY KEY,  -- the rowid: rows are never deleted, so it only grows
    channel_id TEXT NOT NULL,
    cumulative_amount TEXT NOT NULL,
    signature TEXT NOT NULL,
    challenge_id TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS vouchers_by_channel ON vouchers (channel_id, seq);
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    response BLOB NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_COLUMNS = (
    "channel_id, escrow, chain_id, payer, payee, token, authorized_signer, deposit, settled, "
    "accepted_cumulative, spent, voucher_signature, close_requested_at, finalized, "
    "refreshed_at, updated_at"
)
# The f-strings below only splice the constant column list; values always go through `?`.
_SELECT_ONE = f"SELECT {_COLUMNS} FROM channels WHERE channel_id = ?"  # noqa: S608
_SELECT_ALL = f"SELECT {_COLUMNS} FROM channels ORDER BY channel_id"  # noqa: S608
# One upsert statement instead of SELECT-then-INSERT/UPDATE: a single step per write.
_UPSERT = (
    f"INSERT INTO channels ({_COLUMNS}) VALUES ({', '.join('?' * 16)}) "  # noqa: S608
    "ON CONFLICT (channel_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS.split(", ")[1:])
)
_INSERT_VOUCHER = (
    "INSERT INTO vouchers (channel_id, cumulative_amount, signature, challenge_id, received_at) "
    "VALUES (?, ?, ?, ?, ?)"
)

Row = tuple[str, str, int, str, str, str, str, str, str, str, str, str | None, int, int, int, int]


def _to_state(row: Row) -> ChannelState:
    return ChannelState(
        channel_id=row[0],
        escrow=row[1],
        chain_id=row[2],
        payer=row[3],
        payee=row[4],
        token=row[5],
        authorized_signer=row[6],
        deposit=int(row[7]),
        settled=int(row[8]),
        accepted_cumulative=int(row[9]),
        spent=int(row[10]),
        voucher_signature=row[11],
        close_requested_at=row[12],
        finalized=bool(row[13]),
        refreshed_at=row[14],
        updated_at=row[15],
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
        str(s.deposit),
        str(s.settled),
        str(s.accepted_cumulative),
        str(s.spent),
        s.voucher_signature,
        s.close_requested_at,
        int(s.finalized),
        s.refreshed_at,
        s.updated_at,
    )


class SqliteStore:
    """Store on one SQLite file; safe to share between threads and between processes."""

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_ms: int = 30_000,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        """`synchronous="NORMAL"` trades power-loss durability for speed (see module doc)."""
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError("synchronous must be FULL or NORMAL")
        self.path = path
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._conns = PerThread(self._connect, lambda conn: True)
        conn = self._conn()
        self._immediate(conn, lambda: _create_schema(conn))

    # -- connections ---------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; we issue BEGIN IMMEDIATE ourselves.
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,  # only so close() may close other threads' connections
            cached_statements=64,
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        return conn

    @staticmethod
    def _immediate(conn: sqlite3.Connection, body: Callable[[], object]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            body()
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- Store port ----------------------------------------------------------------------------

    def get(self, channel_id: str) -> ChannelState | None:
        row = self._conn().execute(_SELECT_ONE, (normalize_id(channel_id),)).fetchone()
        return None if row is None else _to_state(row)

    def update(
        self, channel_id: str, decide: Callable[[ChannelState | None], Mutation]
    ) -> ChannelState | None:
        cid = normalize_id(channel_id)
        conn = self._conn()
        # BEGIN IMMEDIATE waits (busy_timeout) for the write lock, so the read below already sees
        # the latest committed state and nobody else can commit until we do.
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(_SELECT_ONE, (cid,)).fetchone()
            current = None if row is None else _to_state(row)
            state, rows = check_mutation(cid, decide(current))
            if state is not None:
                conn.execute(_UPSERT, _to_row(state))
                current = state
            if rows:
                conn.executemany(
                    _INSERT_VOUCHER,
                    [
                        (cid, str(v.cumulative_amount), v.signature, v.challenge_id, v.received_at)
                        for v in rows
                    ],
                )
            conn.execute("COMMIT")
        except BaseException:
            # decide raised, a write failed, or even COMMIT failed: leave nothing half-done.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return current

    def vouchers(self, channel_id: str) -> list[VoucherRecord]:
        cur = self._conn().execute(
            "SELECT channel_id, cumulative_amount, signature, challenge_id, received_at "
            "FROM vouchers WHERE channel_id = ? ORDER BY seq",
            (normalize_id(channel_id),),
        )
        return [VoucherRecord(r[0], int(r[1]), r[2], r[3], r[4]) for r in cur]

    def channels(self) -> list[ChannelState]:
        return [_to_state(r) for r in self._conn().execute(_SELECT_ALL)]

    def get_idempotent(self, scope: str, key: str) -> bytes | None:
        row = (
            self._conn()
            .execute("SELECT response FROM idempotency WHERE scope = ? AND key = ?", (scope, key))
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def put_idempotent(self, scope: str, key: str, response: bytes) -> bool:
        conn = self._conn()
        # Autocommit statement: atomic on its own; OR IGNORE makes the first writer win.
        cur = conn.execute(
            "INSERT OR IGNORE INTO idempotency (scope, key, response) VALUES (?, ?, ?)",
            (scope, key, bytes(response)),
        )
        return cur.rowcount == 1

    def replace_idempotent(self, scope: str, key: str, response: bytes) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO idempotency (scope, key, response) VALUES (?, ?, ?)",
            (scope, key, bytes(response)),
        )

    def delete_idempotent(self, scope: str, key: str, expected: bytes) -> bool:
        cur = self._conn().execute(
            "DELETE FROM idempotency WHERE scope = ? AND key = ? AND response = ?",
            (scope, key, bytes(expected)),
        )
        return cur.rowcount == 1

    def get_meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_meta(self, key: str, value: str) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, str(value))
        )

    def close(self) -> None:
        self._conns.close_all()


def _create_schema(conn: sqlite3.Connection) -> None:
    # executescript() would COMMIT the open transaction first, so statements run one by one
    # inside BEGIN IMMEDIATE: concurrent first opens from several processes serialize cleanly.
    for stmt in _SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    if row[0] is None:
        conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    elif row[0] > SCHEMA_VERSION:
        raise RuntimeError(f"store schema v{row[0]} is newer than this code (v{SCHEMA_VERSION})")
