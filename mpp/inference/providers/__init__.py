"""Model providers: the embedded glassllm model and OpenAI-compatible upstreams."""

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
from mpp.inference.providers.embedded import EmbeddedProvider, GlassModel, render_chat
from mpp.inference.providers.upstream import UpstreamProvider

__all__ = [
    "EmbeddedProvider",
    "Finish",
    "GenerationParams",
    "GlassModel",
    "Provider",
    "ProviderError",
    "ProviderEvent",
    "Start",
    "StopMatcher",
    "Token",
    "UpstreamProvider",
    "render_chat",
]
