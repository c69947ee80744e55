"""An OpenAI-compatible upstream over HTTP: `POST {base_url}/chat/completions` with streaming.

Each content delta of the upstream stream becomes one `Token` (OpenAI-style servers send one token
per chunk); the upstream's final `usage` (requested with `stream_options.include_usage`) carries the
real counts, which the server uses to settle any difference at the end. The API key is sent only to
the upstream and never logged or echoed in errors.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import httpx

from mpp.inference.pricing import Price
from mpp.inference.providers.base import (
    Finish,
    FinishReason,
    GenerationParams,
    Provider,
    ProviderError,
    ProviderEvent,
    Token,
)

__all__ = ["UpstreamProvider"]

_MAX_LINE = 1 << 20


class UpstreamProvider(Provider):
    """`models` maps our model ids to the upstream's (a sequence means "same name upstream")."""

    def __init__(
        self,
        name: str,
        models: Sequence[str] | Mapping[str, str],
        price: Price,
        *,
        base_url: str,
        api_key: str | None = None,
        external: bool = True,
        client: httpx.AsyncClient | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        mapping = dict(models) if isinstance(models, Mapping) else {m: m for m in models}
        super().__init__(name, list(mapping), price, external=external)
        self._upstream_model = mapping
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._own_client = client is None

    def __repr__(self) -> str:  # never show the key
        return f"UpstreamProvider({self.name!r}, base_url={self.base_url!r})"

    def _body(self, params: GenerationParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._upstream_model.get(params.model, params.model),
            "messages": [{"role": role, "content": text} for role, text in params.messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
        }
        optional = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stop": list(params.stop) or None,
            "frequency_penalty": params.frequency_penalty,
            "presence_penalty": params.presence_penalty,
            "seed": params.seed,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        return body

    async def stream(self, params: GenerationParams) -> AsyncIterator[ProviderEvent]:
        headers = {"Accept": "text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        url = f"{self.base_url}/chat/completions"
        try:
            async with self._client.stream(
                "POST", url, json=self._body(params), headers=headers
            ) as response:
                if response.status_code != 200:
                    raise ProviderError(f"upstream {self.name} answered {response.status_code}")
                async for event in _events(response):
                    yield event
        except httpx.HTTPError as exc:
            raise ProviderError(f"upstream {self.name} failed: {type(exc).__name__}") from None

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()


async def _events(response: httpx.Response) -> AsyncIterator[ProviderEvent]:
    reason: FinishReason = "stop"
    usage: Mapping[str, Any] = {}
    async for line in response.aiter_lines():
        if len(line) > _MAX_LINE:
            raise ProviderError("upstream sent an oversized line")
        if not line.startswith("data:"):
            continue  # comments, named events, blank separators
        data = line[5:].strip()
        if data == "[DONE]":
            yield Finish(
                reason,
                _count(usage.get("prompt_tokens")),
                _count(usage.get("completion_tokens")),
            )
            return
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ProviderError("upstream sent invalid JSON") from None
        if not isinstance(chunk, dict):
            continue
        if "error" in chunk:
            raise ProviderError("upstream reported an error mid-stream")
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str) and content:
                yield Token(content)
            if choice.get("finish_reason") == "length":
                reason = "length"
    raise ProviderError("upstream stream ended before [DONE]")


def _count(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None
