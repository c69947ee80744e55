"""The payer's local channel records: one SQLite file, so a restarted client resumes its channel.

What must survive a restart is the highest cumulative amount ever signed: signing below it later
is harmless, but forgetting it would make the next voucher look stale to the server, and the
payer's own safety rule (never sign above the deposit) needs the deposit. Updates run under
`BEGIN IMMEDIATE`, so two client processes sharing the file cannot both sign from the same
old cumulative amount. Amounts are uint128, stored as decimal TEXT (SQLite integers are 64-bit).

Durability: WAL with `synchronous=NORMAL`, not FULL (an fsync per voucher and per receipt was
most of the payer's per-voucher cost). A process crash loses nothing in WAL+NORMAL: a commit is
in the WAL file before `update` returns, so a voucher is still recorded before it leaves. Only a
power loss (or OS crash) can roll back the last commits. These records are the payer's cache of
the channel, not the money: the server holds the highest voucher and reports
`acceptedCumulative`/`spent` in every receipt, 402 problem and need-voucher event, and the
payer re-syncs from those (mpp.session.payer: `record_receipt`, `note_server_accepted`). A
lost record never lets anyone take more than the payer signed; at worst a voucher signed from
the older record is refused as stale and the client re-syncs or opens a new channel. An update
that changes nothing (the same receipt again) writes nothing.
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
from collections.abc import Callable

from mpp.session.payer_model import PayerChannel

__all__ = ["PayerRecords"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payer_channels (
    channel_id TEXT PRIMARY KEY,
    payer TEXT NOT NULL,
    payee TEXT NOT NULL,
    token TEXT NOT NULL,
    escrow TEXT NOT NULL,
    chain_id INTEGER NOT NULL,
    authorized_signer TEXT NOT NULL,
    salt TEXT NOT NULL,
    deposit TEXT NOT NULL,
    cumulative TEXT NOT NULL,
    signature TEXT,
    spent TEXT NOT NULL,
    accepted TEXT NOT NULL,
    settled TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS payer_channels_by_route
    ON payer_channels (payee, token, escrow, chain_id, status);
"""

_AMOUNTS = ("deposit", "cumulative", "spent", "accepted", "settled")
_COLUMNS = (
    "channel_id",
    "payer",
    "payee",
    "token",
    "escrow",
    "chain_id",
    "authorized_signer",
    "salt",
    "deposit",
    "cumulative",
    "signature",
    "spent",
    "accepted",
    "settled",
    "status",
    "updated_at",
)


def _to_row(rec: PayerChannel) -> tuple[object, ...]:
    values = dataclasses.asdict(rec)
    return tuple(str(values[c]) if c in _AMOUNTS else values[c] for c in _COLUMNS)


def _from_row(row: tuple[object, ...]) -> PayerChannel:
    values = dict(zip(_COLUMNS, row, strict=True))
    for name in _AMOUNTS:
        values[name] = int(str(values[name]))
    return PayerChannel(**values)  # type: ignore[arg-type]


class PayerRecords:
    """SQLite-backed records; `path` may be ":memory:" for tests."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._conn = sqlite3.connect(
            os.fspath(path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")  # see the module doc
            self._conn.executescript(_SCHEMA)

    def get(self, channel_id: str) -> PayerChannel | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM payer_channels WHERE channel_id = ?",  # noqa: S608
                (channel_id.lower(),),
            ).fetchone()
        return None if row is None else _from_row(row)

    def put(self, rec: PayerChannel) -> None:
        """Insert a new channel record; an existing id is an error (ids are never reused)."""
        rec = dataclasses.replace(rec, channel_id=rec.channel_id.lower())
        marks = ", ".join("?" for _ in _COLUMNS)
        with self._lock:
            self._conn.execute(
                f"INSERT INTO payer_channels ({', '.join(_COLUMNS)}) VALUES ({marks})",  # noqa: S608
                _to_row(rec),
            )

    def update(
        self, channel_id: str, change: Callable[[PayerChannel], PayerChannel]
    ) -> PayerChannel:
        """Read-modify-write one record atomically across threads and processes.

        `change` may raise to abort (nothing is written). KeyError for an unknown channel.
        """
        cid = channel_id.lower()
        sets = ", ".join(f"{c} = ?" for c in _COLUMNS[1:])
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute(
                    f"SELECT {', '.join(_COLUMNS)} FROM payer_channels WHERE channel_id = ?",  # noqa: S608
                    (cid,),
                ).fetchone()
                if row is None:
                    raise KeyError(cid)
                old = _from_row(row)
                new = dataclasses.replace(change(old), channel_id=cid)
                if new != old:  # nothing changed (a repeated receipt): no write at all
                    self._conn.execute(
                        f"UPDATE payer_channels SET {sets} WHERE channel_id = ?",  # noqa: S608
                        (*_to_row(new)[1:], cid),
                    )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return new

    def find(
        self,
        *,
        payer: str,
        payee: str,
        token: str,
        escrow: str,
        chain_id: int,
        status: str = "open",
    ) -> list[PayerChannel]:
        """Records for one route, newest first."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM payer_channels "  # noqa: S608
                "WHERE payer = ? AND payee = ? AND token = ? AND escrow = ? AND chain_id = ? "
                "AND status = ? ORDER BY updated_at DESC, channel_id",
                (payer.lower(), payee.lower(), token.lower(), escrow.lower(), chain_id, status),
            ).fetchall()
        return [_from_row(r) for r in rows]

    def all(self) -> list[PayerChannel]:
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM payer_channels ORDER BY channel_id"  # noqa: S608
            ).fetchall()
        return [_from_row(r) for r in rows]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
