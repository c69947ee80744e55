"""SES-26: vouchers and charges on one channel from 2 OS processes × 25 concurrent operations.

Run once on SQLite and once on PostgreSQL: spent ≤ acceptedCumulative at every observed step, no
lost update (final spent == the sum of what every worker was told it charged), and the audit trail
of accepted vouchers strictly increasing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from mpp.session.ports import Mutation
from mpp.store.open import open_store
from tests.session._workers import CID, state

ROOT = Path(__file__).resolve().parents[2]
OPS, THREADS, STEP, COST = 25, 5, 40, 30


@contextmanager
def processes(count: int, args: list[dict[str, Any]]) -> Iterator[list[subprocess.Popen[str]]]:
    """Start the workers; each one is killed and reaped through its handle, also on failure."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for a in args[:count]:
            p = subprocess.Popen(
                [sys.executable, "-m", "tests.session._workers"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(p)
            assert p.stdin is not None
            p.stdin.write(json.dumps(a) + "\n")
            p.stdin.flush()
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return str(request.getfixturevalue("pg_fresh_dsn"))


def test_ses_26_two_processes_vouchers_and_charges_linearizable(dsn: str) -> None:
    store = open_store(dsn)
    try:
        store.update(CID, lambda _cur: Mutation(state(deposit=10**9)))
        args = [
            {
                "mode": "ops",
                "dsn": dsn,
                "worker": w,
                "ops": OPS,
                "threads": THREADS,
                "step": STEP,
                "cost": COST,
            }
            for w in (0, 1)
        ]
        with processes(2, args) as procs:
            for p in procs:
                assert p.stdout is not None
                assert p.stdout.readline().strip() == "ready"
            for p in procs:  # release both at once so their operations overlap
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            results = []
            for p in procs:
                out, _ = p.communicate(timeout=120)
                assert p.returncode == 0, out
                results.append(json.loads(out.strip().splitlines()[-1]))
        final = store.get(CID)
        assert final is not None
        assert sum(r["violations"] for r in results) == 0
        charged = sum(r["charged"] for r in results)
        assert final.spent == charged > 0  # no lost update
        assert final.spent <= final.accepted_cumulative <= final.deposit
        amounts = [v.cumulative_amount for v in store.vouchers(CID)]
        assert amounts == sorted(set(amounts))  # each accepted voucher strictly higher
        assert amounts[-1] == final.accepted_cumulative
        assert {v.challenge_id[:2] for v in store.vouchers(CID)} <= {"w0", "w1"}
    finally:
        store.close()
