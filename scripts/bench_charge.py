"""Charge benchmark: one paid GET per request (tempo/charge) against our server and against a
pympp 0.16 charge server, on the same anvil in the same run; and `mpp pay` for a charged GET.

Both servers run in child processes on loopback (ours: uvicorn + PaymentMiddleware over SQLite;
pympp: tests/interop/pympp_charge_server.py in its own venv). The same client pays both:
`PaymentAuth(payer, charge_mode="push")` (the client broadcasts, the server checks the receipt;
pull is not possible against pympp on anvil, docs/charge.md). Interleaved rounds; per request the
wall time of the whole exchange (402, transfer, retry); p50 and requests/s (sequential).
`mpp pay` wall time: a charged GET (pull) vs an unpaid GET through the same command (its
start-up dominates both), median of `--pay-runs`.

    .venv/bin/python scripts/bench_charge.py [--requests 20] [--pay-runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpp.chain.devnet import Devnet  # noqa: E402
from mpp.http import PaymentAuth, PaymentGate, Price, Route  # noqa: E402
from tests.http.support import TOKEN, Counters, Env, free_port, plain_app  # noqa: E402

PRICE = Price(amount=1_000, intents=("charge",))
PEER_PYTHON = ROOT / ".peers" / "pympp" / "bin" / "python"
PEER_SERVER = ROOT / "tests" / "interop" / "pympp_charge_server.py"


def serve() -> int:
    """Child mode: our server, configured by one JSON line on stdin (keys never on argv)."""
    import uvicorn

    cfg = json.loads(sys.stdin.readline())
    devnet = Devnet(None, cfg["rpc"], 0, cfg["chain_id"], None, escrow=cfg["escrow"])  # type: ignore[arg-type]
    env = Env(devnet, cfg["payer_key"], cfg["payee_key"], Path(cfg["tmp"]))
    routes = [Route("/paid", PRICE)]
    gate = PaymentGate(env.engine(), env.issuer(), routes, failure_rate=None)
    config = uvicorn.Config(
        plain_app(gate, Counters()), host="127.0.0.1", port=cfg["port"], log_level="warning",
        lifespan="off", timeout_graceful_shutdown=5,
    )  # fmt: skip
    uvicorn.Server(config).run()
    return 0


def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _timed(client: httpx.Client, url: str) -> float:
    started = time.perf_counter()
    response = client.get(url)
    assert response.status_code == 200, response.text[:300]
    return time.perf_counter() - started


def _pay_wall(url: str, env_vars: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "mpp.cli.main", "pay", url], capture_output=True, text=True,
        env=env_vars, timeout=120, cwd=str(ROOT),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-500:]
    return time.perf_counter() - started


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20, help="paid GETs per server and round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--pay-runs", type=int, default=3)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.serve:
        return serve()
    if not PEER_PYTHON.exists():
        print(f"pympp peer venv missing at {PEER_PYTHON} (run scripts/setup.sh)", file=sys.stderr)
        return 1
    with Devnet.start() as devnet, tempfile.TemporaryDirectory() as tmp:
        payer, payee = devnet.new_accounts(2, amount=10**10)
        env = Env(devnet, "0x" + payer.key.hex(), "0x" + payee.key.hex(), Path(tmp))
        # pympp signs valid_before = wall clock + 60 s; T4 keeps expiring nonces within 30 s.
        devnet.set_next_block_timestamp(int(time.time()) + 35)
        devnet.mine()
        ours_port, theirs_port = free_port(), free_port()
        ours = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                                text=True)  # fmt: skip
        theirs = subprocess.Popen(
            [str(PEER_PYTHON), str(PEER_SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, cwd=str(PEER_SERVER.parent),
        )  # fmt: skip
        try:
            assert ours.stdin is not None and theirs.stdin is not None
            ours.stdin.write(json.dumps({
                "rpc": devnet.rpc_url, "chain_id": devnet.chain_id, "escrow": devnet.escrow,
                "payer_key": env.payer_key, "payee_key": env.payee_key, "tmp": tmp,
                "port": ours_port}) + "\n")  # fmt: skip
            ours.stdin.flush()
            theirs.stdin.write(json.dumps({
                "port": theirs_port, "recipient": env.payee, "chain_id": devnet.chain_id,
                "rpc_url": devnet.rpc_url, "currency": TOKEN,
                "secret": "pympp-bench-secret-0123456789abcdef",
                "amount": "0.001"}) + "\n")  # fmt: skip
            theirs.stdin.flush()
            ours_url = f"http://127.0.0.1:{ours_port}/paid"
            theirs_url = f"http://127.0.0.1:{theirs_port}/paid"
            _wait_up(ours_url)
            _wait_up(theirs_url)
            result = _run(env, ours_url, theirs_url, args)
            result.update(_pay(env, ours_url, args))
        finally:
            _stop(ours)
            _stop(theirs)
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _run(env: Env, ours_url: str, theirs_url: str, args: argparse.Namespace) -> dict[str, Any]:
    auth = PaymentAuth(env.payer_for(), allow_insecure=True, charge_mode="push")
    times: dict[str, list[float]] = {"ours": [], "pympp": []}
    with httpx.Client(auth=auth, timeout=60) as client:
        _timed(client, ours_url)  # warm up both
        _timed(client, theirs_url)
        for _ in range(args.rounds):
            for name, url in (("ours", ours_url), ("pympp", theirs_url)):
                times[name] += [_timed(client, url) for _ in range(args.requests)]
    out: dict[str, Any] = {"requests": len(times["ours"])}
    for name, samples in times.items():
        out[f"{name}_p50_ms"] = statistics.median(samples) * 1e3
        out[f"{name}_per_s"] = len(samples) / sum(samples)
    out["p50_ratio"] = out["ours_p50_ms"] / out["pympp_p50_ms"]
    return out


def _pay(env: Env, ours_url: str, args: argparse.Namespace) -> dict[str, Any]:
    env_vars = {**os.environ, "MPP_PAYER_KEY": env.payer_key,
                "MPP_PAYER_RECORDS": str(env.tmp / "cli-payer.db"),
                "MPP_RPC_URL": env.devnet.rpc_url}  # fmt: skip
    free = ours_url.rsplit("/", 1)[0] + "/free"  # not a paid route: no 402
    paid = [_pay_wall(ours_url, env_vars) for _ in range(args.pay_runs)]
    unpaid = [_pay_wall(free, env_vars) for _ in range(args.pay_runs)]
    return {"pay_paid_s": statistics.median(paid), "pay_unpaid_s": statistics.median(unpaid),
            "pay_runs": args.pay_runs}  # fmt: skip


def _print(r: dict[str, Any]) -> None:
    print("| server | paid GET p50 | paid GETs/s (sequential) |")
    print("|---|---:|---:|")
    for name, label in (("ours", "mpp (ours)"), ("pympp", "pympp 0.16")):
        print(f"| {label} | {r[f'{name}_p50_ms']:.1f} ms | {r[f'{name}_per_s']:.2f} |")
    print(f"\nours/pympp p50 {r['p50_ratio']:.2f} over {r['requests']} requests each (push mode; "
          "the client's own broadcast is in both).")  # fmt: skip
    print(f"\n`mpp pay` wall time, median of {r['pay_runs']}: charged GET {r['pay_paid_s']:.2f} s, "
          f"unpaid GET {r['pay_unpaid_s']:.2f} s.")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
