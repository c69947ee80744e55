"""The one benchmark command: runs every scripts/bench_*.py and writes BENCHMARKS.md.

    .venv/bin/python scripts/bench.py [--quick] [--output BENCHMARKS.md] [--only NAME,...]

Each script runs as a subprocess, one after the other (never two at once), with bounded
parameters and `--json` for the figures the goals are judged on; its own markdown goes into the
file next to the goals from the issues, each marked met or missed from the measured value. A script
that fails or overruns its budget gets a section saying so with the tail of its stderr; the file
is written anyway and the command exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

Row = tuple[str, str, bool | None]  # (goal, measured, met: None = no numeric goal)


@dataclass(frozen=True)
class Bench:
    name: str
    title: str
    script: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    timeout: float  # seconds, full run (a quick run gets half)
    about: str
    goals: Callable[[dict[str, Any]], list[Row]]
    # bench_inference imports `tests` without putting the root on sys.path. Not for the others:
    # the pympp peer that bench_codec starts must not import our `mpp` (same import name).
    root_on_path: bool = False


# --- goals, judged on each script's --json output -----------------------------------------------


def codec_goals(d: dict[str, Any]) -> list[Row]:
    c = d["cases"]
    measured = ", ".join(f"{k} {v['ratio']:.2f}×" for k, v in c.items())
    worst = min(v["ratio"] for v in c.values())
    return [("codec vs pympp ≥ 1.0× (parse + format)", measured, worst >= 1.0)]


def voucher_goals(d: dict[str, Any]) -> list[Row]:
    rows = {r["name"]: r for r in d["rows"]}
    ours = rows["our recover_voucher_signer"]
    eth = rows["eth-account recover (same digest)"]["ops_per_s"]
    full = rows["accept voucher, SQLite synchronous=FULL"]["ops_per_s"]
    normal = rows["accept voucher, SQLite synchronous=NORMAL"]["ops_per_s"]
    out: list[Row] = [
        ("verify ≥ 0.85× raw libsecp256k1 recover", f"{ours['x_raw']:.3f}×", ours["x_raw"] >= 0.85),
        ("verify vs eth-account recover", f"{ours['ops_per_s'] / eth:.1f}× faster", None),
        (
            "voucher acceptance on SQLite ≥ 2,000/s (synchronous=FULL, the default)",
            f"{full:,.0f}/s (NORMAL: {normal:,.0f}/s)",
            full >= 2000,
        ),
    ]
    pg = rows.get("accept voucher, PostgreSQL")
    if pg:
        out.append(("voucher acceptance on PostgreSQL", f"{pg['ops_per_s']:,.0f}/s", None))
    return out


def store_goals(d: dict[str, Any]) -> list[Row]:
    rows = d["rows"]
    measured = "; ".join(f"{k} {v['accept_audit']:,.0f}/s" for k, v in rows.items())
    return [("store update + audit row, per backend (context for acceptance)", measured, None)]


def http_goals(d: dict[str, Any]) -> list[Row]:
    best, median = d["sse_ratio_best"], d["sse_ratio_median"]
    added = d["flat_added_p50_ms"]
    lead = "default (adaptive) lead" if d["prepay"] is None else f"a fixed lead of {d['prepay']}"
    return [
        (
            f"loopback paid/unpaid SSE units/s ≥ 0.95 ({lead})",
            f"{best:.3f} best of {d['rounds']} rounds (ratio of medians {median:.3f})",
            best >= 0.95,
        ),
        (
            "added server latency p50 ≤ 0.5 ms (paid request, open channel)",
            f"{added:.3f} ms",
            added <= 0.5,
        ),
    ]


def wan_goals(d: dict[str, Any]) -> list[Row]:
    rtt = f"{d['rtt_ms']:.0f} ms RTT"
    paced, unpaced, added = d["paced_ratio"], d["unpaced_ratio"], d["ttft_added_ms"]
    return [
        (
            f"paid/unpaid tokens/s ≥ 0.97, model at 100 tokens/s, {rtt}, defaults",
            f"{paced:.3f} ({d['paced_paid']:.1f} vs {d['paced_unpaid']:.1f} tokens/s)",
            paced >= 0.97,
        ),
        (
            f"paid/unpaid tokens/s ≥ 0.97, unpaced source, {rtt}, defaults",
            f"{unpaced:.3f} ({d['unpaced_paid']:,.0f} vs {d['unpaced_unpaid']:,.0f} tokens/s)",
            unpaced >= 0.97,
        ),
        (
            f"TTFT added on an open channel ≤ 15 ms, {rtt}",
            f"{added:.1f} ms ({d['ttft_paid_ms']:.1f} vs {d['ttft_unpaid_ms']:.1f} ms)",
            added <= 15.0,
        ),
    ]


def charge_goals(d: dict[str, Any]) -> list[Row]:
    return [
        (
            "charge: paid GET p50, ours vs pympp 0.16 (same chain, same client, push)",
            f"{d['ours_p50_ms']:.1f} vs {d['pympp_p50_ms']:.1f} ms ({d['p50_ratio']:.2f}×); "
            f"{d['ours_per_s']:.1f} vs {d['pympp_per_s']:.1f} requests/s",
            None,
        ),
        (
            "`mpp pay` wall time, charged GET (vs an unpaid GET through the same command)",
            f"{d['pay_paid_s']:.2f} s (unpaid {d['pay_unpaid_s']:.2f} s)",
            None,
        ),
    ]


def inference_goals(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for name, m in d["models"].items():
        ratio, added = m["tokens_s_ratio"], m["ttft_added_ms"]
        speed = f"{m['tokens_s']['unpaid']:.1f} tok/s, TTFT {m['ttft_ms']['unpaid']:.1f} ms"
        rows += [
            (f"{name}: speed unpaid (info)", speed, None),
            (f"{name}: paid/unpaid tokens/s ≥ 0.9", f"{ratio:.3f}", ratio >= 0.9),
            (f"{name}: TTFT added by payment ≤ 5 ms (median)", f"{added:.2f} ms", added <= 5.0),
        ]
    return rows


# The gas probe of docs/development.md (T0 = anvil's default hardfork / T4) for a ~5 KB escrow.
PROBE = {
    "deploy escrow": (1_100_000, 12_900_000),
    "approve+open (sponsored)": (196_000, 1_580_000),
    "settle": (82_000, 332_000),
    "approve+topUp": (81_000, 249_000),
    "close": (117_000, 343_000),
}
PROBE_RUNTIME_BYTES = 5_000


def gas_goals(d: dict[str, Any]) -> list[Row]:
    from mpp.chain.artifacts import load_escrow_artifact

    size = len(load_escrow_artifact().deployed_bytecode)
    allowance = size / PROBE_RUNTIME_BYTES
    out: list[Row] = []
    for op, probe in PROBE.items():
        for i, fork in enumerate(("default", "T4")):
            if fork not in d["gas"]:
                continue
            ours, theirs = d["gas"][fork][op], probe[i]
            ratio = ours / theirs
            label = "T0 (default)" if fork == "default" else fork
            if op == "deploy escrow":
                sizes = f"{size:,} B / ~{PROBE_RUNTIME_BYTES:,} B = {allowance:.2f}×"
                goal = f"deploy on {label} ≤ probe × runtime code size ratio ({sizes})"
                met = ratio <= allowance
            else:
                goal, met = f"{op} on {label} ≤ probe", ratio <= 1.0
            out.append((goal, f"{ours:,} vs {theirs:,} ({ratio:.2f}×)", met))
    # The exact-capture functions next to the v1 ones they replace on the payee's paths (T0; on
    # T4 `settle` is the payee's first transaction and carries new-state costs).
    for new, old in (("settleCapture", "settle"), ("closeCapture (capture < voucher)", "close")):
        if new in d["gas"].get("default", {}):
            ours, theirs = d["gas"]["default"][new], d["gas"]["default"][old]
            measured = f"{ours:,} vs {theirs:,} ({ours / theirs:.3f}×)"
            out.append((f"{new} vs {old} on T0 (default)", measured, None))
    return out


def scaling_goals(d: dict[str, Any]) -> list[Row]:
    out: list[Row] = []
    for r in d["sqlite"]["rows"]:
        measured = (
            f"{r['tokens_s_paid']:,.0f} tokens/s ({r['ratio']:.2f}× unpaid); added first token "
            f"p50 {r['ttft']['p50_added_ms']:+.1f} ms, per token p50/p99 "
            f"{r['token']['p50_added_ms']:+.2f}/{r['token']['p99_added_ms']:+.2f} ms"
        )
        streams = f"{r['streams']} concurrent paid stream{'s' if r['streams'] > 1 else ''}"
        out.append((f"{streams}, one server process", measured, None))
    if "pg2" in d:
        one, two = d["pg1"]["rows"][0]["tokens_s_paid"], d["pg2"]["rows"][0]["tokens_s_paid"]
        n = d["params"]["pg_streams"]
        measured = f"{two:,.0f} vs {one:,.0f} paid tokens/s ({two / one:.2f}×)"
        out.append((f"two server processes vs one on PostgreSQL, {n} paid streams", measured, None))
    return out


def money_goals(d: dict[str, Any]) -> list[Row]:
    r, f = d["close_reaction_s"], d["faults"]
    grace = 15 * 60  # the escrow's grace period, seconds
    kills = ", ".join(f"{phase} {n}" for phase, n in f["kills"].items())
    return [
        (
            "requestClose → settling tx, median, default settings ≪ the 15 min grace period",
            f"{r['median']:.2f} s (max {r['max']:.2f} s of {r['n']})",
            r["max"] < grace / 10,
        ),
        (
            "fault runs: delivered ≤ captured ≤ delivered + one window per crash",
            f"{f['channels']} channels, kills: {kills}; Σ delivered {f['delivered']:,}, "
            f"Σ captured {f['captured']:,}; largest excess {f['largest_excess']} "
            f"(window {f['window']})",
            f["delivered"] <= f["captured"] and f["largest_excess"] <= f["window"],
        ),
    ]


def cli_goals(d: dict[str, Any]) -> list[Row]:
    s = {k: v * 1000 for k, v in d["start_s"].items()}  # ms
    bare, light = s["python -c pass"], s["python -c 'import mpp'"]
    rows: list[Row] = [
        ("`mpp --help` < 0.3 s", f"{s['mpp --help']:.0f} ms", s["mpp --help"] < 300),
        ("`mpp --version` < 0.3 s", f"{s['mpp --version']:.0f} ms", s["mpp --version"] < 300),
        ("context: `python -c pass` / `python -c 'import mpp'`",
         f"{bare:.0f} ms / {light:.0f} ms", None),
    ]  # fmt: skip
    fresh = d.get("fresh_clone")
    if fresh:
        rows.append(("`mpp demo` on a fresh clone (info)",
                     f"demo {fresh['demo_s']:.1f} s after clone {fresh['clone_s']:.1f} s + "
                     f"setup {fresh['setup_s']:.0f} s (warm caches); {fresh['model']}",
                     None))  # fmt: skip
    return rows


BENCHES = [
    Bench("vouchers", "Voucher verification and acceptance", "bench_vouchers.py",
          ("--n", "5000"), ("--n", "1000"), 300,
          "Raw libsecp256k1 recovery (coincurve) vs eth-account vs our "
          "`recover_voucher_signer`; full acceptance through `SessionServer.handle` on SQLite "
          "and PostgreSQL.", voucher_goals),
    Bench("codec", "Header codec vs pympp", "bench_codec.py",
          ("--seconds", "1.0", "--rounds", "3"), ("--seconds", "0.3", "--rounds", "2"), 240,
          "Parse + format of a typical challenge and credential, ours vs pympp in its own venv, "
          "interleaved rounds, best kept.", codec_goals),
    Bench("store", "Store update throughput", "bench_store.py",
          ("--n", "5000", "--pg-temp"), ("--n", "1000"), 240,
          "One `store.update` per op (decide + audit row), single thread.", store_goals),
    Bench("http", "Paid vs unpaid stream (HTTP adapter)", "bench_http.py",
          (), ("--units", "5000", "--requests", "100", "--rounds", "2"), 300,
          "SSE through `PaymentMiddleware` (uvicorn child process, SQLite): paid on the client's "
          "defaults vs unpaid (API key) on the same route; server-side latency of a paid "
          "request.", http_goals),
    Bench("wan", "Paid vs unpaid over a 50 ms round trip", "bench_http.py",
          ("--wan", "--rounds", "3"), ("--wan", "--rounds", "2", "--ttft", "10"), 300,
          "The same server behind a loopback proxy adding 50 ms of round-trip time "
          "(tests/delay_proxy.py); a model at 100 tokens/s and an unpaced source; the client "
          "on its defaults (the bandwidth × delay window).", wan_goals),
    Bench("charge", "Charge per request: ours vs pympp, and `mpp pay`", "bench_charge.py",
          ("--requests", "20", "--rounds", "2"), ("--requests", "5", "--rounds", "1",
          "--pay-runs", "1"), 300,
          "A paid GET per request (tempo/charge, push) against our server and a pympp 0.16 "
          "charge server on the same anvil, the same client, interleaved; `mpp pay` on a "
          "charged GET.", charge_goals),
    Bench("inference", "Paid vs unpaid inference stream", "bench_inference.py",
          ("--rounds", "7"), ("--rounds", "3"), 240,
          "The paid inference server with each embedded model (SmolLM2-135M-Instruct on "
          "llama.cpp, 1 thread; glassllm): tokens/s and time to first token, paid vs unpaid, "
          "alternating.", inference_goals, root_on_path=True),
    Bench("cli", "The `mpp` command: start-up and the demo on a fresh clone", "bench_cli.py",
          ("--runs", "7"), ("--runs", "3", "--no-clone"), 1800,
          "Median wall time of `mpp --help` / `--version` beside a bare interpreter; a fresh "
          "`git clone`, `scripts/setup.sh` (pip and npm caches warm) and `mpp demo` in it.",
          cli_goals),
    Bench("gas", "Gas per operation", "bench_gas.py",
          ("--hardforks", "default,T4"), ("--hardforks", "default,T4"), 300,
          "Escrow operations on anvil in Tempo mode, default hardfork (T0) and T4, vs "
          "the gas probe in docs/development.md (T0 / T4).", gas_goals),
    Bench("money", "Money safety: force-close reaction and fault runs", "bench_money.py",
          ("--closes", "7", "--lifecycles", "3"), ("--closes", "3", "--lifecycles", "1"), 600,
          "A real `mpp serve` on defaults reacting to requestClose; SIGKILLs across open, "
          "vouchers, settle and close; definitions in the script's docstring.", money_goals,
          root_on_path=True),
    Bench("scaling", "Scaling: concurrent paid streams", "bench_scaling.py",
          (), ("--quick",), 600,
          "Concurrent streams on one server process (SQLite), then one vs two server processes "
          "on one PostgreSQL; definitions in the script's docstring.", scaling_goals),
]  # fmt: skip


# --- running --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    bench: Bench
    command: list[str]
    seconds: float
    returncode: int | None  # None: over its time budget
    stdout: str
    stderr: str
    data: dict[str, Any] | None


def run(bench: Bench, quick: bool) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        args = bench.quick if quick else bench.full
        command = [sys.executable, f"scripts/{bench.script}", *args, "--json", str(out)]
        shown = [_rel(sys.executable), f"scripts/{bench.script}", *args]
        env = dict(os.environ)
        if bench.root_on_path:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        began = time.monotonic()
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            stdout, stderr = proc.communicate(timeout=bench.timeout / (2 if quick else 1))
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            # SIGINT, not SIGTERM: the script's `finally` blocks stop anvil and its servers.
            proc.send_signal(signal.SIGINT)
            try:
                stdout, stderr = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                stdout, stderr = proc.communicate()
            code = None
        seconds = time.monotonic() - began
        data = json.loads(out.read_text()) if code == 0 and out.exists() else None
        return Outcome(bench, shown, seconds, code, stdout, stderr, data)


def _rel(path: str) -> str:
    try:
        return str(Path(path).relative_to(ROOT))
    except ValueError:
        return path


def _cmd(args: list[str]) -> str:
    try:
        return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine() -> list[str]:
    cpu = _field("/proc/cpuinfo", "model name", ":") or platform.processor() or "unknown"
    mem = (_field("/proc/meminfo", "MemTotal", ":") or "0 kB").split()[0]
    distro = (_field("/etc/os-release", "PRETTY_NAME", "=") or platform.system()).strip('"')
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    commit = _cmd(["git", "rev-parse", "--short", "HEAD"]).strip() or "unknown"
    dirty = _cmd(["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no"])
    return [
        f"- CPU: {cpu}, {os.cpu_count()} logical cores ({len(os.sched_getaffinity(0))} usable)",
        f"- Memory: {int(mem) / 2**20:.1f} GiB",
        f"- OS: {distro}, kernel {platform.release()} ({platform.machine()})",
        f"- Python: {platform.python_implementation()} {platform.python_version()}",
        f"- Load average at start (1, 5, 15 min): {load}",
        f"- Commit: {commit}{' + uncommitted changes' if dirty.strip() else ''}",
    ]


def _field(path: str, name: str, sep: str) -> str | None:
    """The value of the first `name<sep>value` line of a text file."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, found, value = line.partition(sep)
        if found and key.strip() == name:
            return value.strip()
    return None


# --- the file -------------------------------------------------------------------------------------


def evaluate(o: Outcome) -> list[Row] | str:
    """The goal rows, or why there are none."""
    if o.returncode is None:
        return f"over its time budget ({o.seconds:.0f} s)"
    if o.returncode != 0 or o.data is None:
        return f"failed (exit code {o.returncode})"
    try:
        return o.bench.goals(o.data)
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as exc:
        return f"figures unreadable ({type(exc).__name__}: {exc})"


def status(met: bool | None) -> str:
    return "—" if met is None else "met" if met else "**missed**"


def goal_table(rows: list[Row], with_bench: str | None = None) -> list[str]:
    head = (
        "| benchmark | goal | measured | status |" if with_bench else "| goal | measured | status |"
    )
    lines = [head, "|---" * (4 if with_bench else 3) + "|"]
    for goal, measured, met in rows:
        lead = f"| {with_bench} " if with_bench else ""
        lines.append(f"{lead}| {goal} | {measured} | {status(met)} |")
    return lines


def section(o: Outcome, verdict: list[Row] | str) -> list[str]:
    lines = [f"## {o.bench.title}", "", o.bench.about, ""]
    lines += [f"`{shlex.join(o.command)}` ({o.seconds:.0f} s)", ""]
    if isinstance(verdict, str):
        tail = o.stderr.strip()[-3000:] or "(no stderr)"
        return [*lines, f"**Not measured: the script {verdict}.** Its stderr ends with:", "",
                "```text", tail, "```", ""]  # fmt: skip
    if any(met is not None for _, _, met in verdict):  # else the script's own tables say it all
        lines += [*goal_table(verdict), ""]
    body = o.stdout.strip()
    if any(ln.startswith("|") for ln in body.splitlines()):
        lines += [body, ""]
    else:
        lines += ["```text", body, "```", ""]
    return lines


def document(outcomes: list[Outcome], command: str, began: datetime, facts: list[str]) -> str:
    verdicts = [evaluate(o) for o in outcomes]
    total = sum(o.seconds for o in outcomes)
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {began:%Y-%m-%d %H:%M} UTC ({total / 60:.1f} min). "
        "Re-run that command to regenerate this file; `--quick` gives a short, noisier run.",
        "",
        "## Machine",
        "",
        *facts,
        "",
        "## How to read this",
        "",
        "Every figure is a ratio or a comparison measured in the same run on the same machine "
        "(paid vs unpaid, ours vs a reference), never an absolute number to compare across "
        "machines. The machine is shared and noisy (see the load average above): the scripts "
        "interleave the two sides and keep the best or median round, but expect a few percent of "
        "jitter, and more on latency quantiles. Goals come from the project's issues; each is "
        "marked met or missed from the value measured here; rows without a numeric goal say — .",
        "",
        "## Summary",
        "",
    ]
    rows: list[str] = []
    for o, v in zip(outcomes, verdicts, strict=True):
        if isinstance(v, str):
            rows.append(f"| {o.bench.name} | all goals | not measured: {v} | **missed** |")
        else:
            rows += goal_table(v, o.bench.name)[2:]
    lines += [*goal_table([], "benchmark")[:2], *rows, ""]
    for o, v in zip(outcomes, verdicts, strict=True):
        lines += section(o, v)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (a few minutes)")
    ap.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    ap.add_argument("--only", help="comma-separated subset: " + ",".join(b.name for b in BENCHES))
    args = ap.parse_args()
    wanted = set(args.only.split(",")) if args.only else {b.name for b in BENCHES}
    unknown = wanted - {b.name for b in BENCHES}
    if unknown:
        ap.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    command = shlex.join([_rel(sys.executable), _rel(str(Path(__file__).resolve())), *sys.argv[1:]])
    began = datetime.now(UTC)
    facts = machine()
    outcomes = []
    for bench in (b for b in BENCHES if b.name in wanted):
        print(f"bench: {bench.name} ...", file=sys.stderr, flush=True)
        outcome = run(bench, args.quick)
        state = "ok" if outcome.returncode == 0 else f"FAILED ({outcome.returncode})"
        print(f"bench: {bench.name} {state} in {outcome.seconds:.0f} s", file=sys.stderr)
        outcomes.append(outcome)
    args.output.write_text(document(outcomes, command, began, facts))
    print(f"bench: wrote {_rel(str(args.output.resolve()))}", file=sys.stderr)
    return 0 if all(o.returncode == 0 and o.data is not None for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
