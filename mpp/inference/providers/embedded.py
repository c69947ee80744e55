"""The embedded provider: `glassllm`, a small NumPy transformer whose weights ship in its wheel.

No download, no GPU: it is what lets the demo and the tests run offline. Prompts are rendered with a
plain-text chat template and counted with the model's own BPE tokenizer; each sampled token is one
`Token` event. Generation runs in a worker thread (NumPy releases the GIL in its kernels) so the
event loop keeps serving; a small credit window bounds how far the thread runs ahead of a paused
consumer, and closing the stream stops the thread.

Sampling is seeded (the request's `seed`, else the provider's), so a request is reproducible.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import numpy as np

from mpp.inference.pricing import Price
from mpp.inference.providers.base import (
    Finish,
    FinishReason,
    GenerationParams,
    Provider,
    ProviderError,
    ProviderEvent,
    Start,
    StopMatcher,
    Token,
)

__all__ = ["EmbeddedProvider", "GlassModel", "render_chat"]

_EOS = "<eos>"
_AHEAD = 32  # tokens the worker may generate beyond what the consumer has taken


def render_chat(messages: Sequence[tuple[str, str]]) -> str:
    """A plain-text chat template (glassllm is not chat-tuned): `Role: text` lines, then
    `Assistant:`."""
    lines = [f"{role.capitalize()}: {text}" for role, text in messages]
    return "\n".join([*lines, "Assistant:"])


class GlassModel:
    """The loaded weights and tokenizer, shared by all requests (read-only after load)."""

    def __init__(self, lang: str = "en") -> None:
        import glassllm  # type: ignore[import-untyped]

        self._glassllm: Any = glassllm
        self.model, self.tokenizer = glassllm.load_pretrained(lang)
        self.max_len: int = int(self.model.cfg.max_len)
        self.eos_id: int = int(self.tokenizer.token_to_id[_EOS])

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def tokens(self, prompt_ids: list[int], params: GenerationParams, seed: int) -> Iterator[int]:
        """Sample up to `max_tokens` token ids (stops at `<eos>`).

        Unlike `GlassLM.generate`, a full context is rebuilt from its last half (not re-run every
        step), which keeps long completions at full speed; also applies top_p and penalties.
        """
        model, max_len = self.model, self.max_len
        rng = np.random.default_rng(seed)
        history = list(prompt_ids[-max_len:])
        counts = np.zeros(self.tokenizer.vocab_size, dtype=np.float64)
        cache, start, pending = model.new_cache(), 0, history
        for _ in range(params.max_tokens):
            if start + len(pending) > max_len:
                history = history[-(max_len // 2) :]
                cache, start, pending = model.new_cache(), 0, history
            with self._glassllm.no_grad():
                logits = model.forward(pending, cache=cache, start=start).data[0, -1]
            start += len(pending)
            token = _sample(np.asarray(logits, dtype=np.float64), counts, params, rng)
            if token == self.eos_id:
                return
            counts[token] += 1
            history.append(token)
            pending = [token]
            yield token


def _sample(
    logits: np.ndarray[Any, Any],
    counts: np.ndarray[Any, Any],
    params: GenerationParams,
    rng: np.random.Generator,
) -> int:
    if params.frequency_penalty:
        logits = logits - params.frequency_penalty * counts
    if params.presence_penalty:
        logits = logits - params.presence_penalty * (counts > 0)
    if params.temperature <= 0:
        return int(np.argmax(logits))
    z = logits / params.temperature
    probs = np.exp(z - z.max())
    probs /= probs.sum()
    if params.top_p is not None and params.top_p < 1:
        order = np.argsort(probs)[::-1]
        keep = np.cumsum(probs[order]) - probs[order] < params.top_p
        mask = np.zeros_like(probs)
        mask[order[keep]] = 1.0
        probs = probs * mask
        probs /= probs.sum()
    return int(rng.choice(len(probs), p=probs))


class EmbeddedProvider(Provider):
    """Serves `models` from an in-process `GlassModel`.

    `first_token_delay` / `token_delay` (seconds) slow it down on purpose: an operator can model a
    slower tier, and the routing tests get providers with really different speeds.
    """

    def __init__(
        self,
        name: str,
        models: Sequence[str],
        price: Price,
        *,
        model: GlassModel | None = None,
        lang: str = "en",
        seed: int = 0,
        external: bool = False,
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
    ) -> None:
        super().__init__(name, models, price, external=external)
        self.glass = model or GlassModel(lang)
        self.seed = seed
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay

    def prompt_ids(self, params: GenerationParams) -> list[int]:
        ids: list[int] = self.glass.tokenizer.encode(render_chat(params.messages))
        return ids

    async def stream(self, params: GenerationParams) -> AsyncIterator[ProviderEvent]:
        ids = self.prompt_ids(params)
        if not ids:
            raise ProviderError("empty prompt")
        yield Start(prompt_tokens=len(ids))
        if self.first_token_delay:
            await asyncio.sleep(self.first_token_delay)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Token | Finish | BaseException] = asyncio.Queue()
        credit = threading.Semaphore(_AHEAD)
        cancel = threading.Event()
        seed = self.seed if params.seed is None else params.seed
        worker = threading.Thread(
            target=self._run,
            args=(ids, params, seed, loop, queue, credit, cancel),
            name=f"glassllm-{self.name}",
            daemon=True,
        )
        worker.start()
        try:
            while True:
                item = await queue.get()
                credit.release()
                if isinstance(item, BaseException):
                    raise ProviderError(f"embedded model failed: {type(item).__name__}") from item
                if isinstance(item, Finish):
                    yield Finish(item.reason, len(ids), item.completion_tokens)
                    return
                if self.token_delay and item.count:
                    await asyncio.sleep(self.token_delay)
                yield item
        finally:
            cancel.set()
            credit.release()  # wake a worker blocked on credit so it sees `cancel`

    def _run(
        self,
        ids: list[int],
        params: GenerationParams,
        seed: int,
        loop: asyncio.AbstractEventLoop,
        queue: asyncio.Queue[Token | Finish | BaseException],
        credit: threading.Semaphore,
        cancel: threading.Event,
    ) -> None:
        def put(item: Token | Finish | BaseException) -> bool:
            while not credit.acquire(timeout=0.5):
                if cancel.is_set():
                    return False
            if cancel.is_set():
                return False
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # loop closed
                return False
            return True

        matcher = StopMatcher(params.stop)
        produced = 0
        try:
            for token in self.glass.tokens(ids, params, seed):
                if cancel.is_set():
                    return
                produced += 1
                if not put(Token(matcher.feed(self.glass.tokenizer.decode([token])))):
                    return
                if matcher.stopped:
                    put(Finish("stop", completion_tokens=produced))
                    return
            tail = matcher.flush()
            if tail and not put(Token(tail, count=0)):  # held back, already charged
                return
            reason: FinishReason = "length" if produced >= params.max_tokens else "stop"
            put(Finish(reason, completion_tokens=produced))
        except Exception as exc:  # surfaced as a ProviderError in the consumer
            put(exc)
