"""The optional voucher feed (ports.VoucherFeed) of the PostgreSQL store: LISTEN/NOTIFY.

SES-31 (a paused stream wakes when a voucher advances acceptedCumulative) and SES-34 (voucher
updates may arrive on other connections): an update that appends voucher rows announces its
channel id when it commits, to subscribers of every store instance on the database; an update
without voucher rows, or one whose decision raised, announces nothing. SQLite and memory stores
have no feed (in-process wake-ups only).
"""

from __future__ import annotations

import queue
import threading

import pytest

from mpp.session.ports import Mutation
from mpp.store.memory import MemoryStore
from mpp.store.open import open_store
from mpp.store.postgres import PostgresStore
from tests.store._support import accept, channel_id, create
from tests.store.test_store_processes import workers

CID = channel_id(0xFEED)


class Boom(Exception):
    pass


def test_ses_31_sqlite_and_memory_have_no_feed(tmp_path: object) -> None:
    assert not hasattr(MemoryStore(), "subscribe_vouchers")
    sqlite = open_store(f"sqlite://{tmp_path}/feed.db")
    try:
        assert not hasattr(sqlite, "subscribe_vouchers")
    finally:
        sqlite.close()


def test_ses_31_34_voucher_commits_are_announced_to_other_stores(pg_fresh_dsn: str) -> None:
    listener, writer = PostgresStore(pg_fresh_dsn), PostgresStore(pg_fresh_dsn)
    heard: queue.Queue[str | None] = queue.Queue()
    try:
        unsubscribe = listener.subscribe_vouchers(heard.put)
        writer.update(CID, lambda cur: create(CID))  # no voucher rows: silent
        with pytest.raises(Boom):
            writer.update(CID, refuse)  # rolled back: nothing announced
        assert cur_is_quiet(heard)
        writer.update(CID.upper().replace("0X", "0x"), lambda cur: accept(cur, 5, "ch-1"))
        assert heard.get(timeout=5) == CID  # lowercase id (SES-05)
        unsubscribe()
        writer.update(CID, lambda cur: accept(cur, 5, "ch-2"))
        assert cur_is_quiet(heard)
    finally:
        listener.close()
        writer.close()
    assert not any(t.name == "mpp-pg-listen" and t.is_alive() for t in threading.enumerate())


def test_ses_34_voucher_from_another_process_is_announced(pg_fresh_dsn: str) -> None:
    """The worker process accepts one voucher (then waits to be killed by its handle)."""
    store = PostgresStore(pg_fresh_dsn)
    heard: queue.Queue[str | None] = queue.Queue()
    try:
        store.update(CID, lambda cur: create(CID))
        store.subscribe_vouchers(heard.put)
        with workers(["crash", pg_fresh_dsn, CID]) as (proc,):
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
            proc.stdout.readline()  # its JSON line: the update has committed
            assert heard.get(timeout=5) == CID
    finally:
        store.close()


def refuse(cur: object) -> Mutation:
    raise Boom


def cur_is_quiet(heard: queue.Queue[str | None], wait: float = 0.3) -> bool:
    try:
        heard.get(timeout=wait)
    except queue.Empty:
        return True
    return False


def test_ses_31_mutation_without_rows_is_silent(pg_fresh_dsn: str) -> None:
    store = PostgresStore(pg_fresh_dsn)
    heard: queue.Queue[str | None] = queue.Queue()
    try:
        store.update(CID, lambda cur: create(CID))
        store.subscribe_vouchers(heard.put)
        store.update(CID, lambda cur: Mutation(None))
        assert cur_is_quiet(heard)
    finally:
        store.close()
