"""Model providers: the embedded models (SmolLM2 on llama.cpp, glassllm) and OpenAI-compatible
upstreams."""

from mpp.inference.providers.base import (
    Finish,
    GenerationParams,
    Provider,
    ProviderError,
    ProviderEvent,
    Start,
    StopMatcher,
    Token,
)
from mpp.inference.providers.embedded import EmbeddedProvider, LocalModel
from mpp.inference.providers.glass import GlassModel, render_chat
from mpp.inference.providers.smollm import SmolLM, smollm_available
from mpp.inference.providers.upstream import UpstreamProvider

__all__ = [
    "EmbeddedProvider",
    "Finish",
    "GenerationParams",
    "GlassModel",
    "LocalModel",
    "Provider",
    "ProviderError",
    "ProviderEvent",
    "SmolLM",
    "Start",
    "StopMatcher",
    "Token",
    "UpstreamProvider",
    "render_chat",
    "smollm_available",
]
