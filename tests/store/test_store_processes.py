"""Cross-process guarantees of the durable stores (SQLite file, PostgreSQL database).

SES-26: updates of one channel from several OS processes (each with several threads) are
linearizable: the invariant holds at every step and nothing is lost. SES-25/SES-28: an update
that returned survives the process being SIGKILLed right after.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mpp.session.ports import Store
from mpp.store.open import open_store, sqlite_path
from tests.store._mp_worker import ACCEPT_STEP, COST
from tests.store._support import channel_id, create, invariant_ok, new_state

ROOT = Path(__file__).resolve().parents[2]
CID = channel_id(0xBEEF)


@contextmanager
def workers(*argvs: list[str]) -> Iterator[list[subprocess.Popen[str]]]:
    """Start one worker per argv; every one is killed and reaped on exit, also on failure."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for argv in argvs:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.store._mp_worker", *argv],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


def go_and_collect(procs: list[subprocess.Popen[str]]) -> list[dict[str, int]]:
    # Release every worker at once so their updates really overlap.
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _seed(dsn: str) -> Store:
    store = open_store(dsn)
    store.update(CID, lambda cur: create(CID))
    return store


def test_ses26_amb01_two_processes_never_lose_an_update(durable_dsn: str) -> None:
    """SES-26: 2 processes x 25 updates (5 threads each); accepts race charges on one channel."""
    store = _seed(durable_dsn)
    try:
        ops, threads = 25, 5
        with workers(
            *[["race", durable_dsn, CID.upper(), str(w), str(ops), str(threads)] for w in (0, 1)]
        ) as procs:
            results = go_and_collect(procs)
        total = {k: sum(r[k] for r in results) for k in results[0]}
        assert total["violations"] == 0 and total["errors"] == 0, total
        n_accept = 2 * ((ops + 1) // 2)
        assert total["accepted"] == n_accept
        assert total["charged"] + total["refused"] == 2 * ops - n_accept
        state = store.get(CID)
        assert state is not None and invariant_ok(state)
        assert state.accepted_cumulative == n_accept * ACCEPT_STEP
        assert state.spent == total["charged"] * COST
        # AMB-01/SES-25: one audit row per accepted voucher, each built on its predecessor.
        trail = store.vouchers(CID)
        assert [v.cumulative_amount for v in trail] == [
            ACCEPT_STEP * (i + 1) for i in range(n_accept)
        ]
        assert len({v.challenge_id for v in trail}) == n_accept
        assert state.voucher_signature == trail[-1].signature
    finally:
        store.close()


def test_ses25_ses28_update_survives_sigkill(durable_dsn: str) -> None:
    """SES-25: a voucher whose update returned is still there after the process is killed."""
    _seed(durable_dsn).close()
    with workers(["crash", durable_dsn, CID]) as (proc,):
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"accepted_cumulative": 11}
        proc.kill()  # no close(), no clean shutdown
        proc.wait(timeout=30)
    store = open_store(durable_dsn)
    try:
        assert store.get(CID) == new_state(
            CID, accepted_cumulative=11, voucher_signature=store.vouchers(CID)[0].signature
        )
        assert [v.challenge_id for v in store.vouchers(CID)] == ["before-crash"]
    finally:
        store.close()


def test_reopen_keeps_everything(durable_dsn: str) -> None:
    store = _seed(durable_dsn)
    store.put_idempotent("c", "k", b"resp")
    store.close()
    again = open_store(durable_dsn)  # schema already there: opening is idempotent
    try:
        assert again.get(CID) == new_state(CID)
        assert again.get_idempotent("c", "k") == b"resp"
    finally:
        again.close()


def test_sqlite_dsn_forms(tmp_path: Path) -> None:
    assert sqlite_path("sqlite:///var/lib/mpp.db") == "/var/lib/mpp.db"
    assert sqlite_path("sqlite:////var/lib/mpp.db") == "/var/lib/mpp.db"
    assert sqlite_path("sqlite:rel/mpp.db") == "rel/mpp.db"
    assert sqlite_path("data/mpp.db") == "data/mpp.db"
    for bad in ("sqlite://host/x.db", "mysql://x", ""):
        try:
            sqlite_path(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} accepted")
    from mpp.store.memory import MemoryStore
    from mpp.store.sqlite import SqliteStore

    assert isinstance(open_store("memory:"), MemoryStore)
    s = open_store(str(tmp_path / "plain.db"))
    assert isinstance(s, SqliteStore)
    s.close()


def test_fork_child_uses_its_own_connection(durable_dsn: str) -> None:
    """A store opened before fork() (pre-fork servers) works in both parent and child."""
    import os
    import signal
    import time

    from tests.store._support import accept

    store = _seed(durable_dsn)
    try:
        assert store.get(CID) is not None  # the parent's thread now holds a connection
        pid = os.fork()
        if pid == 0:  # child: must not reuse (or close) the parent's connection
            code = 1
            try:
                after = store.update(CID, lambda cur: accept(cur, 1, "child") if cur else cur)  # type: ignore[arg-type, return-value]
                code = 0 if after is not None and after.accepted_cumulative == 1 else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 60
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError("forked child hung")
            time.sleep(0.01)
        assert os.waitstatus_to_exitcode(done[1]) == 0
        # The parent's connection is intact after the child exited.
        after = store.update(CID, lambda cur: accept(cur, 1, "parent") if cur else create(CID))
        assert after is not None and after.accepted_cumulative == 2
        assert [v.challenge_id for v in store.vouchers(CID)] == ["child", "parent"]
    finally:
        store.close()


def test_postgres_replaces_a_connection_killed_by_the_server(pg_fresh_dsn: str) -> None:
    """An idle connection terminated server-side (restart, failover) is replaced transparently."""
    import psycopg

    from tests.store._support import accept

    store = _seed(pg_fresh_dsn)
    try:
        assert store.get(CID) is not None
        with psycopg.connect(pg_fresh_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        after = store.update(CID, lambda cur: accept(cur, 4, "after-kill") if cur else create(CID))
        assert after is not None and after.accepted_cumulative == 4
        with psycopg.connect(pg_fresh_dsn, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        assert store.get(CID) == after
    finally:
        store.close()
