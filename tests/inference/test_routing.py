"""Three providers with different prices and speeds (two embedded, one upstream that is a second
server process), each strategy's choice, filters, measured stats, 502/503, and fallback."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mpp.inference import (
    EmbeddedProvider,
    InferenceSettings,
    Price,
    Registry,
    UpstreamProvider,
    create_app,
)
from mpp.inference.providers import GlassModel
from tests.inference.servers import (
    MODEL,
    UPSTREAM_KEY,
    chat_body,
    free_port,
    serve_app,
    sse_data,
    upstream_process,
)

KEY = "sk-routing"
FAST_UPSTREAM = [
    {
        "name": "up-embedded",
        "model": "glassllm",
        "input_price_per_million": 0,
        "output_price_per_million": 0,
        "models": [MODEL],
    }
]


@pytest.fixture(scope="module")
def glass() -> GlassModel:
    return GlassModel()


def _post(url: str, **body: Any) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json=chat_body(**body),
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )


@pytest.fixture(scope="module")
def three(glass: GlassModel) -> Iterator[tuple[str, Registry]]:
    with upstream_process(FAST_UPSTREAM) as up:
        registry = Registry()
        cheap = EmbeddedProvider("cheap", [MODEL], Price(100, 200), model=glass, token_delay=0.03)
        mid = EmbeddedProvider("mid", [MODEL], Price(110, 220), model=glass, token_delay=0.01)
        remote = UpstreamProvider(
            "remote", [MODEL], Price(1000, 2000), base_url=up.url, api_key=UPSTREAM_KEY
        )
        registry.add(cheap, expected_ttft_s=0.05, expected_tokens_per_s=30)
        registry.add(mid, expected_ttft_s=0.05, expected_tokens_per_s=100)
        registry.add(remote, expected_ttft_s=0.01, expected_tokens_per_s=1000)
        settings = InferenceSettings(
            registry=registry, api_keys=frozenset({KEY}), rng=random.Random(1)
        )
        with serve_app(create_app(settings)) as url:
            yield url, registry


def test_cheapest_is_random_within_20_percent(three: tuple[str, Registry]) -> None:
    url, _ = three
    chosen = {_post(url, routing_strategy="cheapest").headers["x-mpp-provider"] for _ in range(10)}
    assert chosen == {"cheap", "mid"}  # 330 ≤ 1.2 × 300; the upstream (3000) never


def test_fastest_picks_measured_best(three: tuple[str, Registry]) -> None:
    url, _ = three
    for _ in range(3):
        r = _post(url, routing_strategy="fastest")
        assert r.headers["x-mpp-provider"] == "remote"
    r = _post(url, routing_strategy="fastest", allow_external=False)
    assert r.headers["x-mpp-provider"] == "mid"


def test_balanced_weighs_price_and_speed(three: tuple[str, Registry]) -> None:
    url, _ = three
    for _ in range(2):
        assert _post(url).headers["x-mpp-provider"] == "mid"  # balanced is the default
        r = _post(url, routing_strategy="balanced", allow_external=False)
        assert r.headers["x-mpp-provider"] == "mid"


def test_price_ceiling_filters_first(three: tuple[str, Registry]) -> None:
    url, _ = three
    r = _post(
        url,
        routing_strategy="fastest",
        max_input_price_per_million=105,
        max_output_price_per_million=210,
    )
    assert r.headers["x-mpp-provider"] == "cheap"


def test_price_ceiling_excluding_all_is_503(three: tuple[str, Registry]) -> None:
    url, _ = three
    r = _post(url, max_input_price_per_million=10, max_output_price_per_million=10)
    assert r.status_code == 503
    assert r.headers["x-should-retry"] == "false"
    assert r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "no_provider_available"


def test_upstream_usage_and_measured_stats(three: tuple[str, Registry], glass: GlassModel) -> None:
    url, registry = three
    # Greedy decoding: sampled tokens may differ across processes at near-equal probabilities.
    r = _post(url, routing_strategy="fastest", stream=False, max_tokens=6, temperature=0)
    assert r.headers["x-mpp-provider"] == "remote"
    local = _post(
        url, routing_strategy="cheapest", stream=False, max_tokens=6, temperature=0
    ).json()
    assert r.json()["usage"] == local["usage"]  # the upstream's real counts, same tokenizer
    assert r.json()["choices"][0]["message"]["content"] == local["choices"][0]["message"]["content"]
    listing = httpx.get(f"{url}/v1/models").json()["data"][0]["providers"]
    stats = {p["name"]: p for p in listing}
    assert stats["remote"]["requests"] > 0 and stats["cheap"]["requests"] > 0
    # Measured, no longer the operator's hint of 30 tok/s / 1000 tok/s.
    assert stats["cheap"]["tokens_per_second"] != 30.0
    assert stats["remote"]["tokens_per_second"] != 1000.0
    assert registry.get("cheap").stats.tokens_per_s < registry.get("mid").stats.tokens_per_s  # type: ignore[operator]


def test_all_failing_is_502(glass: GlassModel) -> None:
    dead = UpstreamProvider(
        "dead", [MODEL], Price(1, 1), base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    slow = EmbeddedProvider("slow", [MODEL], Price(2, 2), model=glass, first_token_delay=5)
    settings = InferenceSettings(registry=Registry([dead, slow]), api_keys=frozenset({KEY}))
    with serve_app(create_app(settings)) as url:
        began = time.monotonic()
        r = _post(url, timeout_ms=300)  # the slow one counts as failing at its timeout
        assert time.monotonic() - began < 3
        assert r.status_code == 502
        assert r.headers["x-should-retry"] == "false"
        assert r.json()["error"]["code"] == "all_providers_failed"
        assert settings.registry.get("slow").stats.failures == 1
        assert settings.registry.get("dead").stats.failures == 1


def _fallback_app(glass: GlassModel, upstream_url: str) -> InferenceSettings:
    registry = Registry()
    registry.add(
        UpstreamProvider(
            "remote", [MODEL], Price(1, 1), base_url=upstream_url, api_key=UPSTREAM_KEY
        ),
        expected_tokens_per_s=10_000,
    )
    registry.add(EmbeddedProvider("local", [MODEL], Price(5, 5), model=glass))
    return InferenceSettings(registry=registry, api_keys=frozenset({KEY}))


async def test_upstream_dying_before_first_byte_falls_back(glass: GlassModel) -> None:
    spec = [{**FAST_UPSTREAM[0], "first_token_delay": 5.0}]
    with upstream_process(spec) as up:
        settings = _fallback_app(glass, up.url)
        with serve_app(create_app(settings)) as url:
            async with httpx.AsyncClient(timeout=30) as client:
                task = asyncio.create_task(
                    client.post(
                        f"{url}/v1/chat/completions",
                        json=chat_body(routing_strategy="fastest"),
                        headers={"Authorization": f"Bearer {KEY}"},
                    )
                )
                await asyncio.sleep(0.8)
                assert not task.done()
                up.kill()
                r = await task
    assert r.status_code == 200
    assert r.headers["x-mpp-provider"] == "local"
    events = sse_data(r.text)
    assert events[-1] == "[DONE]" and events[-2]["usage"]["completion_tokens"] == 8


async def test_upstream_dying_after_first_byte_is_error_chunk(glass: GlassModel) -> None:
    spec = [{**FAST_UPSTREAM[0], "token_delay": 0.05}]
    with upstream_process(spec) as up:
        settings = _fallback_app(glass, up.url)
        with serve_app(create_app(settings)) as url:
            async with httpx.AsyncClient(timeout=30) as client:
                body = chat_body(routing_strategy="fastest", max_tokens=200)
                headers = {"Authorization": f"Bearer {KEY}"}
                async with client.stream(
                    "POST", f"{url}/v1/chat/completions", json=body, headers=headers
                ) as r:
                    assert r.headers["x-mpp-provider"] == "remote"
                    text = ""
                    async for piece in r.aiter_text():
                        text += piece
                        if text.count('"content":"') >= 4 and up.process.poll() is None:
                            up.kill()
    events = sse_data(text)
    assert events[-1] == "[DONE]"
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and errors[0]["error"]["code"] == "provider_failed"
    assert events[-2]["choices"] == [] and 3 <= events[-2]["usage"]["completion_tokens"] < 200
    assert not any(
        e["choices"] and e["choices"][0]["finish_reason"] for e in events[:-1] if "choices" in e
    )
