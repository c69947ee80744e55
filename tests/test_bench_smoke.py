"""The scaling benchmark runs end to end in its smallest form and prints its tables.

No timing assertions: the machine is shared and noisy; the point is that `scripts/bench.py`
cannot rot into a script that no longer starts (anvil, server and client processes, channels).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mpp.chain.devnet import DevnetError, find_anvil

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def anvil() -> None:
    try:
        find_anvil()
    except DevnetError as exc:
        pytest.skip(str(exc))


def test_bench_scaling_smoke_prints_its_tables(anvil: None, tmp_path: Path) -> None:
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, "scripts/bench_scaling.py", "--smoke", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| streams | unpaid tokens/s | paid tokens/s | paid/unpaid |" in proc.stdout
    rows = [ln for ln in proc.stdout.splitlines() if ln.startswith(("| 1 |", "| 2 |"))]
    assert len(rows) == 4  # two concurrency levels, two tables
    result = json.loads(out.read_text())
    assert [r["streams"] for r in result["sqlite"]["rows"]] == [1, 2]
    for row in result["sqlite"]["rows"]:
        assert row["tokens_s_paid"] > 0 and row["tokens_s_unpaid"] > 0
        assert row["ttft"]["samples"] > 0 and row["token"]["samples"] > 0


def test_bench_http_wan_smoke_measures_both_sources(anvil: None, tmp_path: Path) -> None:
    """The WAN case (a 50 ms delay proxy, paced and unpaced) runs and its goals can be judged."""
    out = tmp_path / "wan.json"
    args = ["--wan", "--rounds", "1", "--ttft", "2", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "scripts/bench_http.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for name in ("paced", "unpaced"):
        assert result[f"{name}_paid"] > 0 and result[f"{name}_unpaid"] > 0
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import bench
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    rows = bench.wan_goals(result)
    assert len(rows) == 3 and all(isinstance(met, bool) for _, _, met in rows)


def test_bench_charge_smoke_compares_both_servers(anvil: None, tmp_path: Path) -> None:
    out = tmp_path / "charge.json"
    args = ["--requests", "2", "--rounds", "1", "--pay-runs", "1", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, "scripts/bench_charge.py", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    if proc.returncode != 0 and "peer venv missing" in proc.stderr:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["ours_per_s"] > 0 and result["pympp_per_s"] > 0
    assert result["pay_paid_s"] > 0 and result["requests"] == 2
