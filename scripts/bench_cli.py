"""Start-up of the `mpp` command and the demo on a fresh clone (issue 15 numbers).

    .venv/bin/python scripts/bench_cli.py [--runs 7] [--no-clone]

- `mpp --help` and `mpp --version` wall time (median of `--runs`), beside a bare `python -c
  pass` and `python -c "import mpp"` from the same interpreter: goal < 0.3 s;
- `mpp demo` on a fresh clone: `git clone` of this repository into a temporary directory,
  `bash scripts/setup.sh` there (pip's wheel cache and npm's cache are warm on a machine that
  ran setup before: the llama.cpp build is not repeated), then `.venv/bin/mpp demo`, each timed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def timed(cmd: list[str], cwd: Path = ROOT, timeout: float = 600) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr[-1500:]}")
    return elapsed, done.stdout


def median_of(cmd: list[str], runs: int) -> float:
    timed(cmd)  # warm the OS file cache
    return statistics.median(timed(cmd)[0] for _ in range(runs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--no-clone", action="store_true", help="skip the fresh-clone demo")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    mpp = str(Path(sys.executable).with_name("mpp"))
    start = {
        "python -c pass": median_of([sys.executable, "-c", "pass"], args.runs),
        "python -c 'import mpp'": median_of([sys.executable, "-c", "import mpp"], args.runs),
        "mpp --version": median_of([mpp, "--version"], args.runs),
        "mpp --help": median_of([mpp, "--help"], args.runs),
    }
    for name, seconds in start.items():
        print(f"{name:24s} {seconds * 1000:7.1f} ms")
    result: dict[str, Any] = {"runs": args.runs, "start_s": start}
    if not args.no_clone:
        tmp = Path(tempfile.mkdtemp(prefix="mpp-fresh-"))
        try:
            clone_s, _ = timed(["git", "clone", "-q", str(ROOT), str(tmp / "repo")])
            repo = tmp / "repo"
            setup_s, _ = timed(["bash", "scripts/setup.sh"], cwd=repo, timeout=1800)
            demo_s, out = timed([str(repo / ".venv" / "bin" / "mpp"), "demo", "--json"], cwd=repo)
            summary = json.loads(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        result["fresh_clone"] = {
            "clone_s": clone_s,
            "setup_s": setup_s,
            "demo_s": demo_s,
            "demo_elapsed_s": summary["elapsedSeconds"],
            "model": summary["modelLabel"],
        }
        print(f"fresh clone: clone {clone_s:.1f} s, setup {setup_s:.1f} s, demo {demo_s:.2f} s "
              f"({summary['modelLabel']})")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
