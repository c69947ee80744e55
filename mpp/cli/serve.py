"""`mpp serve`: the paid OpenAI-compatible inference server.

Settings come from flags, else environment variables, else a TOML file (`--config`, or
MPP_CONFIG), else defaults. TOML keys (all optional; unknown keys are an error):

    rpc_url, chain_id, escrow, token, store, bind ("host:port"), realm, secret_env,
    payee_key_env, keystore, password_env, unit_price, suggested_deposit_units,
    voucher_timeout, min_deposit, fee_payer, api_key_envs (list of env var names),
    admin_key_env (the env var holding the operator page's key; unset: no page, see
    docs/operator.md), log_level (debug, info, warning, error; info logs each request),
    charge_per_request (a non-streaming completion may pay this once with tempo/charge instead of
    per token: base units or "0.01usd"; streams stay on sessions), routing_seed, [[providers]]
    tables (mpp.inference.settings.build_provider: kind, name, models, input_price_per_million,
    ...), and a [settlement] table:

    [settlement]
    enabled = true        # false: no periodic settlement, no idle closes (warned at start)
    threshold = 1000000   # settle a channel once its unsettled earnings reach this (base units)
    interval = 3600       # settle unsettled earnings at least this often (seconds)
    idle_close = 86400    # close channels idle this long (seconds); 0 turns one of these off
    confirmations = 0     # blocks the chain watcher leaves at the head
    poll_interval = 1.0   # seconds between chain watcher rounds

The chain watcher always runs: a payer's close request is answered by a cooperative close that
captures exactly what was delivered, whatever the settlement settings (mpp.session.watcher).

Environment: MPP_RPC_URL, MPP_CHAIN_ID, MPP_ESCROW, MPP_STORE, MPP_BIND, MPP_PAYEE_KEY (or
the variable named by payee_key_env), MPP_SECRET (HMAC secret for challenges, >= 32 bytes; a
random one per process when unset). Secrets and keys are only ever named, never written in the
file. Ready line with --json: {"url", "chainId", "escrowContract", "payee", "currency",
"unitPrice", "suggestedDeposit", "models", "store"}.
"""

from __future__ import annotations

import argparse
import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mpp.chain.web3chain import PATH_USD
from mpp.cli._channel_view import open_server_store
from mpp.cli._common import (
    add_key_flags,
    add_output_flags,
    address_arg,
    amount_arg,
    connect,
    emit,
    escrow_of,
    load_key,
    step,
    until_stopped,
    usage_error,
)
from mpp.cli._paid import PaymentOptions, attach_payment, serve_in_thread
from mpp.inference.observe import stderr_logging
from mpp.inference.settings import settings_from_config
from mpp.session.engine import SessionServer
from mpp.session.settlement import SettlementPolicy
from mpp.session.watcher import ChainWatcher

__all__ = ["load_config", "register", "run"]

_KEYS: Final = frozenset(
    {
        "rpc_url", "chain_id", "escrow", "token", "store", "bind", "realm", "secret_env",
        "payee_key_env", "keystore", "password_env", "unit_price", "suggested_deposit_units",
        "voucher_timeout", "min_deposit", "fee_payer", "settlement", "api_key_envs",
        "routing_seed", "providers", "charge_per_request", "admin_key_env", "log_level",
    }
)  # fmt: skip
# flag dest -> (environment variable, TOML key)
_SOURCES: Final = {
    "rpc_url": ("MPP_RPC_URL", "rpc_url"),
    "chain_id": ("MPP_CHAIN_ID", "chain_id"),
    "escrow": ("MPP_ESCROW", "escrow"),
    "store": ("MPP_STORE", "store"),
    "bind": ("MPP_BIND", "bind"),
}
_LOG_LEVELS: Final = ("debug", "info", "warning", "error")
# TIP-20 tokens (Tempo's precompiles, prefix 0x20c0) all have 6 decimals.
_TIP20_PREFIX: Final = "0x20c0"
_TIP20_DECIMALS: Final = 6
_SETTLEMENT_KEYS: Final = frozenset(
    {"enabled", "threshold", "interval", "idle_close", "confirmations", "poll_interval"}
)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the paid inference server",
        description="Serve POST /v1/chat/completions, charged per token over MPP sessions.",
    )
    add_output_flags(parser)
    parser.add_argument("--config", type=Path, help="TOML settings file (MPP_CONFIG)")
    parser.add_argument("--rpc-url", help="JSON-RPC URL (MPP_RPC_URL)")
    parser.add_argument("--chain-id", type=int, help="expected chain id (MPP_CHAIN_ID)")
    parser.add_argument("--escrow", help="escrow contract (MPP_ESCROW)")
    parser.add_argument("--token", help="TIP-20 currency (pathUSD)")
    parser.add_argument("--store", help="store DSN (MPP_STORE; default sqlite:mpp-server.db)")
    parser.add_argument("--bind", help="host:port (MPP_BIND; default 127.0.0.1:8000)")
    parser.add_argument("--unit-price", type=int, help="base units per token")
    parser.add_argument("--suggested-deposit-units", type=int, help="suggestedDeposit / price")
    parser.add_argument("--realm", help="challenge realm")
    parser.add_argument(
        "--api-key-env", action="append", help="env var holding an operator API key (repeatable)"
    )
    group = parser.add_argument_group("settlement (on by default; see [settlement] in --config)")
    group.add_argument(
        "--settle-threshold",
        type=int,
        metavar="UNITS",
        help="settle once unsettled earnings reach this (0: off)",
    )
    group.add_argument(
        "--settle-interval",
        type=int,
        metavar="SECONDS",
        help="settle unsettled earnings at least this often (0: off)",
    )
    group.add_argument(
        "--idle-close", type=int, metavar="SECONDS", help="close channels idle this long (0: off)"
    )
    group.add_argument(
        "--no-settlement",
        action="store_true",
        help="no periodic settlement or idle closes (close requests still answered)",
    )
    group.add_argument(
        "--confirmations",
        type=int,
        metavar="BLOCKS",
        help="blocks the chain watcher leaves at the head (default 0)",
    )
    parser.add_argument(
        "--log-level",
        choices=_LOG_LEVELS,
        help="stderr log level; info shows one line per request (default info; log_level)",
    )
    add_key_flags(parser, "payee")
    parser.set_defaults(handler=run, key_env=None, password_env=None)


def load_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        env = os.environ.get("MPP_CONFIG")
        path = Path(env) if env else None
    if path is None:
        return {}
    try:
        config = tomllib.loads(path.read_text())
    except OSError as exc:
        raise usage_error(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise usage_error(f"bad TOML in {path}: {exc}") from None
    unknown = sorted(set(config) - _KEYS)
    if unknown:
        raise usage_error(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    return config


def _resolve(args: argparse.Namespace, config: dict[str, Any]) -> argparse.Namespace:
    """Flags > environment > TOML > defaults, as a namespace the shared helpers understand."""
    ns = argparse.Namespace(**vars(args))
    for dest, (env, key) in _SOURCES.items():
        if getattr(ns, dest, None) is None:
            setattr(ns, dest, os.environ.get(env) or config.get(key))
    ns.key_env = args.key_env or config.get("payee_key_env") or "MPP_PAYEE_KEY"
    ns.password_env = args.password_env or config.get("password_env") or "MPP_KEYSTORE_PASSWORD"
    if ns.keystore is None and config.get("keystore"):
        ns.keystore = Path(str(config["keystore"]))
    ns.store = ns.store or "sqlite:mpp-server.db"
    ns.bind = ns.bind or "127.0.0.1:8000"
    ns.token = address_arg(args.token or config.get("token") or PATH_USD, "token")
    return ns


def _bind(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise usage_error(f"bad bind address {value!r} (host:port expected)")
    return host.strip("[]"), int(port)


@dataclass(frozen=True)
class WatchOptions:
    policy: SettlementPolicy
    confirmations: int
    poll_interval: float


def _settlement(args: argparse.Namespace, config: dict[str, Any]) -> WatchOptions:
    """Flags > [settlement] table > defaults (on); 0 turns one trigger off."""
    table = config.get("settlement", {})
    if not isinstance(table, dict):
        raise usage_error("[settlement] must be a table")
    unknown = sorted(set(table) - _SETTLEMENT_KEYS)
    if unknown:
        raise usage_error(f"unknown [settlement] setting(s): {', '.join(unknown)}")
    default = SettlementPolicy()
    values: dict[str, int | None] = {}
    for name, flag in (("threshold", "settle_threshold"), ("interval", "settle_interval"),
                       ("idle_close", "idle_close")):  # fmt: skip
        value = getattr(args, flag)
        if value is None:
            value = table.get(name, getattr(default, name))
        if value is not None and (type(value) is not int or value < 0):
            raise usage_error(f"settlement {name} must be a non-negative integer")
        values[name] = value or None
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise usage_error("settlement enabled must be true or false")
    policy = SettlementPolicy(**values)
    if args.no_settlement or not enabled:
        policy = SettlementPolicy.off()
    confirmations = args.confirmations
    if confirmations is None:
        confirmations = table.get("confirmations", 0)
    if type(confirmations) is not int or confirmations < 0:
        raise usage_error("confirmations must be a non-negative integer")
    poll = table.get("poll_interval", 1.0)
    if not isinstance(poll, int | float) or isinstance(poll, bool) or poll <= 0:
        raise usage_error("poll_interval must be a positive number of seconds")
    return WatchOptions(policy, confirmations, float(poll))


def _secret(config: dict[str, Any]) -> bytes:
    name = str(config.get("secret_env", "MPP_SECRET"))
    value = os.environ.get(name)
    if not value:
        print(f"mpp: note: {name} is unset; challenges will not survive a restart", file=sys.stderr)
        return os.urandom(32)
    if len(value.encode()) < 32:
        raise usage_error(f"{name} must hold at least 32 bytes")
    return value.encode()


def _inference_config(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    wanted = ("providers", "routing_seed", "api_key_envs", "admin_key_env")
    merged: dict[str, Any] = {k: config[k] for k in wanted if k in config}
    if args.api_key_env:
        merged["api_key_envs"] = list(args.api_key_env)
    for key in ("unit_price", "suggested_deposit_units"):
        value = getattr(args, key) if getattr(args, key) is not None else config.get(key)
        if value is not None:
            merged[key] = int(value)
    return merged


def _charge_per_request(config: dict[str, Any]) -> int | None:
    value = config.get("charge_per_request")
    if value is None:
        return None
    amount = amount_arg(str(value), "charge_per_request")
    if amount <= 0:
        raise usage_error("charge_per_request must be more than zero")
    return amount


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    watch = _settlement(args, config)
    level = _log_level(args, config)
    ns = _resolve(args, config)
    host, port = _bind(ns.bind)
    key = load_key(ns)
    chain = connect(ns, key)
    escrow = escrow_of(ns, chain)
    secret = _secret(config)
    try:
        with step(args, "loading the model"):
            settings = settings_from_config(_inference_config(args, config))
    except (KeyError, TypeError, ValueError) as exc:
        raise usage_error(f"bad settings: {exc}") from None
    opts = PaymentOptions(
        escrow=escrow,
        token=ns.token,
        secret=secret,
        realm=str(args.realm or config.get("realm", "mpp-inference")),
        fee_payer=bool(config.get("fee_payer", False)),
        min_deposit=int(config.get("min_deposit", 0)),
        voucher_timeout=float(config.get("voucher_timeout", 60.0)),
        settlement=watch.policy,
        charge_per_request=_charge_per_request(config),
    )
    if not watch.policy.enabled:
        print(
            "mpp: warning: settlement is off: earnings stay unsettled until you settle or "
            "close (payer close requests are still answered)",
            file=sys.stderr,
        )
    store = open_server_store(ns.store, create=True)
    try:
        engine = attach_payment(settings, store, chain, key, opts)
        assert settings.payment is not None
        waiters = settings.payment.waiters
        watcher = ChainWatcher(
            engine,
            confirmations=watch.confirmations,
            poll_interval=watch.poll_interval,
            on_event=lambda event: waiters.wake(event.channel_id),
        )
        settings.watcher = watcher  # its lag on /metrics and the operator page
        settings.currency_decimals = _TIP20_DECIMALS if _is_tip20(ns.token) else None
        _note_admin_key(config, settings.admin_key)
        with (
            stderr_logging(level),  # one line per request (mpp.inference.access), no secrets
            until_stopped() as stop,
            watcher,
            serve_in_thread(settings, host, port) as url,
        ):
            info = {
                "url": url,
                "chainId": chain.chain_id,
                "escrowContract": escrow,
                "payee": chain.address,
                "currency": ns.token,
                "unitPrice": str(settings.effective_unit_price),
                "suggestedDeposit": str(settings.suggested_deposit),
                "models": sorted({m for e in settings.registry for m in e.provider.models}),
                "store": ns.store.split("://")[0] if "://" in ns.store else ns.store,
            }
            emit(args, info, lambda: _ready_text(info))
            while not stop.event.wait(0.5):
                pass
        # Graceful shutdown: the streams ended with their receipts and the server stopped
        # (serve_in_thread), the watcher stopped; now what is due goes on chain.
        _final_settlement(engine)
    finally:
        store.close()
    return stop.exit_code  # 130 after Ctrl-C (after the same clean shutdown), 0 after SIGTERM


def _log_level(args: argparse.Namespace, config: dict[str, Any]) -> str:
    level = args.log_level or config.get("log_level", "info")
    if level not in _LOG_LEVELS:
        raise usage_error(f"log_level must be one of {', '.join(_LOG_LEVELS)}")
    return str(level)


def _is_tip20(token: str) -> bool:
    return token.lower().startswith(_TIP20_PREFIX)


def _note_admin_key(config: dict[str, Any], key: str | None) -> None:
    name = config.get("admin_key_env")
    if name and key is None:
        print(f"mpp: note: {name} is unset; the operator page is off", file=sys.stderr)


def _final_settlement(engine: SessionServer) -> None:
    try:
        done = engine.maybe_settle()
    except Exception as exc:  # the next start settles it (the store keeps every voucher)
        print(f"mpp: warning: settlement at shutdown failed: {exc}", file=sys.stderr)
        return
    if done:
        print(f"mpp: settled or closed {len(done)} channel(s) at shutdown", file=sys.stderr)


def _ready_text(info: dict[str, Any]) -> str:
    return (
        f"Serving paid inference on {info['url']}/v1 (models: {', '.join(info['models'])})\n"
        f"  payee {info['payee']}, {info['unitPrice']} base units per token, "
        f"escrow {info['escrowContract']} on chain {info['chainId']}\n"
        "Press Ctrl-C to stop."
    )
