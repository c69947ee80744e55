"""The OpenAI-compatible paid completions server (providers + routing + per-token metering) and
the paying chat client.

Serve: `create_app(InferenceSettings(registry=Registry([...]), api_keys=..., payment=...))`.
"""

from mpp.inference.api import APIError, ChatCompletionRequest, RoutingStrategy, parse_request
from mpp.inference.pricing import Price, UnitCursor, default_unit_price
from mpp.inference.providers import (
    EmbeddedProvider,
    GenerationParams,
    GlassModel,
    Provider,
    ProviderError,
    SmolLM,
    UpstreamProvider,
)
from mpp.inference.registry import ProviderStats, Registry
from mpp.inference.server import CHAT_PATH, UNIT_TYPE, create_app
from mpp.inference.settings import (
    InferenceSettings,
    PaymentConfig,
    build_provider,
    settings_from_config,
)

__all__ = [
    "CHAT_PATH",
    "UNIT_TYPE",
    "APIError",
    "ChatCompletionRequest",
    "EmbeddedProvider",
    "GenerationParams",
    "GlassModel",
    "InferenceSettings",
    "PaymentConfig",
    "Price",
    "Provider",
    "ProviderError",
    "ProviderStats",
    "Registry",
    "RoutingStrategy",
    "SmolLM",
    "UnitCursor",
    "UpstreamProvider",
    "build_provider",
    "create_app",
    "default_unit_price",
    "parse_request",
    "settings_from_config",
]
