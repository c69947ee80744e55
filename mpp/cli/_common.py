"""What every `mpp` command shares: exit codes, output (--json or human), input parsing, keys,
the chain connection, and a stderr spinner.

Exit codes (documented in the README and `mpp --help`):

- 0 success
- 1 the operation failed (transaction reverted, insufficient balance, channel finalized or not
  ready, server refused, spending policy)
- 2 usage or bad input (argparse errors, malformed address / amount / channel id, missing or
  undecryptable key, unknown channel, bad config file)
- 3 the chain is unreachable or is not the expected one (RPC down, wrong chain id)
- 130 interrupted (Ctrl-C)

Keys come from an environment variable (hex) or an eth-account keystore file whose password
comes from an environment variable or a prompt; they are never printed, logged or put in an
error message.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import FrameType
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

from eth_account import Account

from mpp.chain.web3chain import PATH_USD, Web3Chain
from mpp.core.amounts import decimal_amount, format_decimals
from mpp.core.errors import ChainUnavailable
from mpp.session.terms import TermsError, parse_address, parse_bytes32
from mpp.session.voucher import private_key_bytes

__all__ = [
    "EXIT_CHAIN",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "Spinner",
    "add_chain_flags",
    "add_key_flags",
    "add_output_flags",
    "address_arg",
    "amount_arg",
    "channel_id_arg",
    "connect",
    "emit",
    "env_or",
    "escrow_of",
    "format_amount",
    "iso",
    "load_key",
    "redact_url",
    "step",
    "table",
    "usage_error",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_CHAIN: Final = 3
EXIT_INTERRUPTED: Final = 130
DECIMALS: Final = 6  # pathUSD and the other USD TIP-20 tokens


class CliError(Exception):
    """One readable line for the user and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


def usage_error(message: str) -> CliError:
    return CliError(message, EXIT_USAGE)


# --- flags ----------------------------------------------------------------------------------


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object (scripting)")
    # SUPPRESS: `mpp --debug cmd` and `mpp cmd --debug` both work, neither overrides the other.
    parser.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="tracebacks on errors"
    )


def add_chain_flags(parser: argparse.ArgumentParser, *, escrow: bool = True) -> None:
    parser.add_argument("--rpc-url", help="JSON-RPC URL (env MPP_RPC_URL)")
    parser.add_argument("--chain-id", type=int, help="expected chain id (env MPP_CHAIN_ID)")
    if escrow:
        parser.add_argument("--escrow", help="escrow contract address (env MPP_ESCROW)")


def add_key_flags(parser: argparse.ArgumentParser, role: str) -> None:
    env = f"MPP_{role.upper()}_KEY"
    group = parser.add_argument_group(f"{role} key (never printed)")
    group.add_argument(
        "--key-env", default=env, metavar="NAME", help=f"env var holding the hex key ({env})"
    )
    group.add_argument("--keystore", type=Path, help="eth-account keystore JSON file instead")
    group.add_argument(
        "--password-env",
        default="MPP_KEYSTORE_PASSWORD",
        metavar="NAME",
        help="env var with the keystore password (else a prompt)",
    )


def env_or(value: Any, name: str) -> Any:
    """A flag's value, else the environment variable `name` (None when neither is set)."""
    if value is not None:
        return value
    return os.environ.get(name) or None


# --- input ----------------------------------------------------------------------------------


def address_arg(value: str | None, what: str) -> str:
    if value is None:
        raise usage_error(f"missing {what}")
    try:
        return parse_address(value, what)
    except TermsError:
        raise usage_error(f"bad address for {what}: {value!r}") from None


def channel_id_arg(value: str) -> str:
    try:
        return parse_bytes32(value, "channel id")
    except TermsError:
        raise usage_error(f"bad channel id {value!r} (expected 0x + 64 hex digits)") from None


def amount_arg(value: str, what: str) -> int:
    """Base units ("1500000") or token units with a `usd` suffix ("1.5usd")."""
    text = value.strip().lower()
    try:
        if not text.isascii():  # Decimal() and isdigit() also read "²" and fullwidth digits
            raise InvalidOperation
        if text.endswith("usd"):
            units = Decimal(text[:-3]) * 10**DECIMALS
            if units != units.to_integral_value():
                raise InvalidOperation
            amount = int(units)
        else:
            parsed = decimal_amount(text)
            if parsed is None:
                raise InvalidOperation
            amount = parsed
    except InvalidOperation:
        raise usage_error(
            f"bad amount for {what}: {value!r} (base units like 1500000, or 1.5usd)"
        ) from None
    if not 0 <= amount < 2**128:
        raise usage_error(f"amount for {what} out of range")
    return amount


def http_failure(exc: Exception) -> str:
    """A readable reason for a request that failed (never a bare exception class name)."""
    import httpx

    if isinstance(exc, httpx.ConnectError):
        return "connection refused or host unreachable"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "the server closed the connection without an answer"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or "the request failed"


def format_amount(amount: int, token: str = PATH_USD) -> str:
    name = "pathUSD" if token.lower() == PATH_USD else "USD"
    return f"{format_decimals(amount, DECIMALS)} {name}"


# --- keys -----------------------------------------------------------------------------------


def load_key(args: argparse.Namespace) -> bytes:
    """The private key from --keystore (password from env or a prompt) or from --key-env."""
    if getattr(args, "keystore", None) is not None:
        return _from_keystore(args.keystore, args.password_env)
    name = args.key_env
    raw = os.environ.get(name)
    if not raw:
        raise usage_error(f"no key: set {name} or give --keystore")
    try:
        return private_key_bytes(raw.strip())
    except ValueError as exc:
        raise usage_error(f"{name} does not hold a usable private key: {exc}") from None


def _from_keystore(path: Path, password_env: str) -> bytes:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise usage_error(f"cannot read keystore {path}: {exc.strerror}") from None
    except ValueError:
        raise usage_error(f"keystore {path} is not JSON") from None
    password = os.environ.get(password_env)
    if password is None:
        if not sys.stdin.isatty():
            raise usage_error(f"no keystore password: set {password_env} (stdin is not a TTY)")
        password = getpass.getpass(f"Password for {path.name}: ", stream=sys.stderr)
    try:
        return bytes(Account.decrypt(data, password))
    except (ValueError, KeyError, TypeError):
        raise usage_error(f"cannot decrypt keystore {path} (wrong password?)") from None


# --- chain ----------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """scheme://host:port only: provider URLs often carry an API key in the path or query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable URL>"
    return f"{parts.scheme}://{host}{port}"


def connect(args: argparse.Namespace, key: bytes | None = None) -> Web3Chain:
    """A Web3Chain for --rpc-url / MPP_RPC_URL, checked against --chain-id / MPP_CHAIN_ID."""
    url = env_or(getattr(args, "rpc_url", None), "MPP_RPC_URL")
    if not url:
        raise usage_error("no RPC URL: give --rpc-url or set MPP_RPC_URL")
    if not str(url).startswith(("http://", "https://")):
        raise usage_error(f"bad RPC URL {redact_url(url)} (http:// or https:// expected)")
    expected = env_or(getattr(args, "chain_id", None), "MPP_CHAIN_ID")
    try:
        chain = Web3Chain(url, account=key, request_timeout=10.0, timeout=30.0)
    except ChainUnavailable:
        raise CliError(f"RPC endpoint unreachable: {redact_url(url)}", EXIT_CHAIN) from None
    if expected is not None:
        try:
            want = int(expected)
        except ValueError:
            raise usage_error(f"bad chain id {expected!r}") from None
        if chain.chain_id != want:
            raise CliError(
                f"wrong chain: {redact_url(url)} is chain {chain.chain_id}, expected {want}",
                EXIT_CHAIN,
            )
    return chain


def escrow_of(
    args: argparse.Namespace, chain: Web3Chain | None, fallback: str | None = None
) -> str:
    """--escrow / MPP_ESCROW (else `fallback`), checked to hold code when `chain` is given."""
    value = env_or(getattr(args, "escrow", None), "MPP_ESCROW") or fallback
    if value is None:
        raise usage_error("no escrow contract: give --escrow or set MPP_ESCROW")
    escrow = address_arg(value, "--escrow")
    if chain is not None and str(chain.rpc("eth_getCode", [escrow, "latest"])) in ("0x", "0x0"):
        raise usage_error(f"no contract at escrow address {escrow} on chain {chain.chain_id}")
    return escrow


# --- output ---------------------------------------------------------------------------------


def emit(args: argparse.Namespace, data: Mapping[str, Any], human: Callable[[], str]) -> None:
    """--json: one compact JSON object on stdout; otherwise the human rendering."""
    if getattr(args, "json", False):
        print(json.dumps(data, separators=(",", ":")), flush=True)
    else:
        print(human(), flush=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return "(none)"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


class Spinner:
    """A one-line stderr spinner while waiting (transactions, model loading).

    Silent when stderr is not a TTY or with --json, so scripts and logs get clean output.
    """

    FRAMES: Final = "|/-\\"

    def __init__(self, text: str, *, enabled: bool, stream: TextIO | None = None) -> None:
        self.text = text
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_args(cls, args: argparse.Namespace, text: str) -> Spinner:
        return cls(text, enabled=not getattr(args, "json", False))

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(0.1):
            self.stream.write(f"\r{self.FRAMES[i % 4]} {self.text}")
            self.stream.flush()
            i += 1

    def __enter__(self) -> Spinner:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop and clear the line (idempotent: may be called early, e.g. on first output)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.stream.write("\r" + " " * (len(self.text) + 2) + "\r")
            self.stream.flush()


@contextmanager
def step(args: argparse.Namespace, text: str) -> Iterator[None]:
    with Spinner.for_args(args, text):
        yield


def iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class StopSignal:
    """How a command that runs until stopped (`mpp devnet`, `mpp serve`) was stopped. `event` is
    set by SIGINT or SIGTERM; `exit_code` is 130 after Ctrl-C (SIGINT, as documented for every
    command) and 0 after SIGTERM, a service manager's normal stop."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.exit_code = 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            self.exit_code = EXIT_INTERRUPTED
        self.event.set()


@contextmanager
def until_stopped() -> Iterator[StopSignal]:
    """SIGINT and SIGTERM set the returned event instead of raising, for a clean shutdown."""
    stop = StopSignal()
    previous = {sig: signal.signal(sig, stop._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
