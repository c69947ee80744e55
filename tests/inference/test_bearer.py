"""The API-key path end to end on loopback: streaming shape, usage, non-streaming, /v1/models,
every parameter's 400, 401s, and the official openai SDK."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from mpp.inference import EmbeddedProvider, InferenceSettings, Price, Registry, create_app
from mpp.inference.providers import GlassModel, render_chat
from tests.inference.servers import MODEL, chat_body, serve_app, sse_data

KEY = "sk-test-123"


@pytest.fixture(scope="module")
def glass() -> GlassModel:
    return GlassModel()


@pytest.fixture(scope="module")
def url(glass: GlassModel) -> Iterator[str]:
    registry = Registry([EmbeddedProvider("local", [MODEL], Price(100, 200), model=glass)])
    settings = InferenceSettings(registry=registry, api_keys=frozenset({KEY}))
    with serve_app(create_app(settings)) as base:
        yield base


def post(url: str, body: Any, key: str | None = KEY, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30, **kw)


def test_stream_is_default_with_usage_chunk_and_done(url: str, glass: GlassModel) -> None:
    r = post(url, chat_body(max_tokens=6))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_data(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 6  # one chunk per generated token
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    prompt = len(glass.tokenizer.encode(render_chat([("user", "Tell me a story.")])))
    assert usage_chunk["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 6,
        "total_tokens": prompt + 6,
    }
    assert "payment-" not in r.text  # payment events are for Payment clients only


def test_seeded_generation_is_reproducible(url: str) -> None:
    a = post(url, chat_body(stream=False, max_tokens=10)).json()
    b = post(url, chat_body(stream=False, max_tokens=10)).json()
    c = post(url, chat_body(stream=False, max_tokens=10, seed=7)).json()
    text = a["choices"][0]["message"]["content"]
    assert text == b["choices"][0]["message"]["content"]
    assert text != c["choices"][0]["message"]["content"]


def test_non_streaming_completion(url: str) -> None:
    r = post(url, chat_body(stream=False, max_tokens=5))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert "payment-receipt" not in r.headers  # unpaid


def test_stop_sequence_cuts_output(url: str) -> None:
    full = post(url, chat_body(stream=False, max_tokens=40)).json()["choices"][0]["message"]
    text = full["content"]
    stop = text[10:14]
    r = post(url, chat_body(stream=False, max_tokens=40, stop=[stop, "zzzz"])).json()
    assert r["choices"][0]["finish_reason"] == "stop"
    assert r["choices"][0]["message"]["content"] == text[: text.index(stop)]
    assert r["usage"]["completion_tokens"] < 40


def test_models_lists_prices(url: str) -> None:
    r = httpx.get(f"{url}/v1/models")
    assert r.status_code == 200
    (model,) = r.json()["data"]
    assert model["id"] == MODEL and model["object"] == "model"
    assert model["pricing"]["input_price_per_million"] == 100
    assert model["pricing"]["output_price_per_million"] == 200
    (provider,) = model["providers"]
    assert provider["name"] == "local"
    # 100 / 200 cents per million tokens = 1 / 2 base units (6 decimals) per token, exactly.
    assert provider["input_base_units_per_token"] == "1"
    assert provider["output_base_units_per_token"] == "2"


@pytest.mark.parametrize(
    ("cents_per_million", "base_units"),
    [(0, "0"), (1, "0.01"), (150, "1.5"), (10_000, "100"), (12_345, "123.45")],
)
def test_price_per_token_in_base_units_is_exact(cents_per_million: int, base_units: str) -> None:
    assert Price(cents_per_million, 0).base_units_per_token() == (base_units, "0")


def test_invalid_key_is_401(url: str) -> None:
    r = post(url, chat_body(), key="sk-wrong")
    assert r.status_code == 401
    assert r.json() == {
        "error": {
            "message": "Invalid API key.",
            "type": "authentication_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert "sk-wrong" not in r.text


def test_no_credential_without_payment_is_401(url: str) -> None:
    r = post(url, chat_body(), key=None)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "missing_api_key"


DROP = object()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": DROP}, "model"),
        ({"model": 5}, "model"),
        ({"messages": DROP}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, None),
        ({"stream": "yes"}, "stream"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 4097}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.01}, "temperature"),
        ({"temperature": "1"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.1}, "top_p"),
        ({"stop": 5}, "stop"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"frequency_penalty": 2.5}, "frequency_penalty"),
        ({"presence_penalty": -3}, "presence_penalty"),
        ({"timeout_ms": 30001}, "timeout_ms"),
        ({"timeout_ms": 0}, "timeout_ms"),
        ({"routing_strategy": "random"}, "routing_strategy"),
        ({"allow_external": "no"}, "allow_external"),
        ({"max_input_price_per_million": 10}, "max_input_price_per_million"),
        ({"max_output_price_per_million": 10}, "max_input_price_per_million"),
        (
            {"max_input_price_per_million": 1.5, "max_output_price_per_million": 3},
            "max_input_price_per_million",
        ),
        ({"max_input_price_per_million": -1, "max_output_price_per_million": 3}, None),
        ({"n": 2}, "n"),
        ({"logit_bias": {}}, "logit_bias"),
    ],
)
def test_parameter_validation_400(url: str, body: dict[str, Any], param: str | None) -> None:
    full = {k: v for k, v in {**chat_body(), **body}.items() if v is not DROP}
    r = post(url, full)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"] == param


def test_unknown_model_is_503_no_providers_available(url: str) -> None:
    """The seed platform's shape: 503, `No providers available`, and no automatic retry."""
    r = post(url, {**chat_body(), "model": "no-such-model"})
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["message"].startswith("No providers available")
    assert err["code"] == "no_provider_available" and r.headers["x-should-retry"] == "false"


def test_invalid_json_400(url: str) -> None:
    r = httpx.post(
        f"{url}/v1/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_json"


def test_validation_comes_before_auth(url: str) -> None:
    # Nobody should pay (or be told to) for a request that cannot run.
    r = post(url, chat_body(temperature=9), key=None)
    assert r.status_code == 400


def test_openai_sdk_streams_with_api_key(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=5, stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    done = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=5, stream=False
    )
    assert done.choices[0].message.content == text
    assert done.usage is not None and done.usage.completion_tokens == 5
