"""glassllm: a small NumPy transformer whose weights ship in its wheel (~3 MB, not chat-tuned).

It is what the fast tests run and the fallback when the SmolLM2 model is not installed. Prompts
are rendered with a plain-text chat template and counted with the model's own BPE tokenizer.
Sampling is seeded, so a request is reproducible.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Sequence
from typing import Any

import numpy as np

from mpp.inference.providers.base import GenerationParams

__all__ = ["GlassModel", "render_chat"]

_EOS = "<eos>"


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

    label = "glassllm (a 3 MB NumPy toy model, not chat-tuned: for tests)"

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text))

    def chat_ids(self, messages: Sequence[tuple[str, str]]) -> list[int]:
        ids: list[int] = self.tokenizer.encode(render_chat(messages))
        return ids

    def pieces(
        self, ids: list[int], params: GenerationParams, seed: int
    ) -> Generator[str, None, None]:
        for token in self.tokens(ids, params, seed):
            yield self.tokenizer.decode([token])

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
    temperature = 1.0 if params.temperature is None else params.temperature  # OpenAI's default
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits / temperature
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
