"""`mpp chat`: ask a paid inference server, paying per token over an MPP session.

With a prompt it asks once; without one it is a REPL: a multi-turn conversation (the history
goes with every turn), the cost of each turn and the channel's balance after it. Ctrl-C during
an answer stops that answer at its next chunk (only the tokens received are paid; a second
Ctrl-C stops at once); Ctrl-C or Ctrl-D at the prompt ends the session (130 / 0). `/reset`
forgets the history, `/exit` ends.

The payer key comes from MPP_PAYER_KEY or --keystore; channels are kept in the payer's records
file (--records, MPP_PAYER_RECORDS, default ~/.mpp/payer.db), so a later chat (or
`mpp channel ...`) reuses them. The spending policy (--max-price, --max-deposit) is checked
before anything is signed. `--close` closes the channel cooperatively afterwards.

Shape with --json: {"text", "model", "provider", "finishReason", "usage", "units", "unitPrice",
"spent", "channelId", "midStreamVouchers", "receipt", "close" (null or {"txHash", "captured"})}.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import IO, Any, cast

import httpx

from mpp.cli._client import CloseFailed, build_payer, close_over_http
from mpp.cli._common import (
    EXIT_USAGE,
    CliError,
    Spinner,
    add_key_flags,
    add_output_flags,
    amount_arg,
    emit,
    env_or,
    format_amount,
    http_failure,
    usage_error,
)
from mpp.core.errors import InsecureTransport
from mpp.core.http import require_secure_url
from mpp.inference.client import (
    ChatClient,
    ChatError,
    ChatStream,
    Messages,
    format_usd,
    run_chat,
)
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy

__all__ = ["register", "run"]

DEFAULT_URL = "http://127.0.0.1:8000"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "chat", help="chat with a paid inference server (the paying client)"
    )
    add_output_flags(parser)
    parser.add_argument(
        "prompt", nargs="?", help="the user message ('-' reads stdin); none: an interactive chat"
    )
    parser.add_argument("--url", help=f"server base URL (MPP_SERVER_URL; {DEFAULT_URL})")
    parser.add_argument("--model", help="model id (default: the first the server lists)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--deposit", help="channel deposit (default: the server's suggestion)")
    parser.add_argument("--max-deposit", default="10usd", help="policy: largest deposit (10usd)")
    parser.add_argument(
        "--max-price", default="1000", help="policy: most base units per token (1000)"
    )
    parser.add_argument(
        "--prepay-units",
        type=int,
        help="a fixed voucher lead in units (default: adaptive, bandwidth x delay)",
    )
    parser.add_argument("--topup-amount", help="top up by this much when the deposit runs out")
    parser.add_argument("--rpc-url", help="read fees and time from this RPC (MPP_RPC_URL)")
    parser.add_argument("--chain-id", type=int, help="expected chain id (MPP_CHAIN_ID)")
    parser.add_argument("--records", help="payer records file (MPP_PAYER_RECORDS)")
    parser.add_argument("--close", action="store_true", help="close the channel afterwards")
    parser.add_argument("--api-key-env", metavar="NAME", help="pay with an API key instead")
    add_key_flags(parser, "payer")
    parser.set_defaults(handler=run)


def _payer(args: argparse.Namespace) -> Payer:
    policy = SpendingPolicy(
        max_amount_per_unit=amount_arg(args.max_price, "--max-price"),
        max_deposit=amount_arg(args.max_deposit, "--max-deposit"),
    )
    return build_payer(args, policy)


def _client(args: argparse.Namespace, url: str) -> tuple[ChatClient, Payer | None]:
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise usage_error(f"{args.api_key_env} is not set")
        return ChatClient(url, api_key=key, model=args.model), None
    payer = _payer(args)
    client = ChatClient(
        url,
        payer=payer,
        model=args.model,
        allow_insecure=True,  # plain http is still refused unless the host is loopback
        deposit=amount_arg(args.deposit, "--deposit") if args.deposit else None,
        prepay_units=args.prepay_units,
        topup_amount=amount_arg(args.topup_amount, "--topup-amount") if args.topup_amount else None,
    )
    return client, payer


class _StopOnWrite(io.TextIOBase):
    """stdout that first stops the spinner (the answer starts, nothing to wait for anymore)."""

    def __init__(self, spinner: Spinner) -> None:
        self._spinner = spinner

    def write(self, text: str) -> int:
        self._spinner.__exit__()
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def _answer(
    client: ChatClient,
    messages: Messages,
    args: argparse.Namespace,
    stop: threading.Event | None = None,
) -> ChatStream:
    """Stream one answer to stdout, with a spinner until its first token."""
    spinner = Spinner("paying and waiting for the first token", enabled=True)
    with spinner:
        out = cast(IO[str], _StopOnWrite(spinner))  # write + flush is all run_chat uses
        return run_chat(client, messages, out=out, stop=stop, **_params(args))


@contextmanager
def _first_ctrl_c_stops(stop: threading.Event) -> Iterator[None]:
    """While an answer streams, the first Ctrl-C only sets `stop` (the answer ends at its next
    chunk, cleanly: no payment code is interrupted halfway, no lock left held); a second one
    interrupts at once."""

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"max_tokens": args.max_tokens}
    if args.seed is not None:
        params["seed"] = args.seed
    return params


def chat_summary(stream: ChatStream) -> dict[str, Any]:
    final = stream.receipts[-1] if stream.receipts else None
    return {
        "text": stream.text,
        "provider": stream.provider,
        "finishReason": stream.finish_reason,
        "usage": stream.usage,
        "units": stream.units,
        "unitPrice": None if stream.unit_price is None else str(stream.unit_price),
        "spent": str(stream.spent),
        "channelId": final.get("channelId") if final else None,
        # header receipt + one per voucher / topUp answered mid-stream + the final event
        "midStreamVouchers": max(0, len(stream.receipts) - 2),
        "balance": None if stream.balance is None else str(stream.balance),
        "receipt": final,
    }


def _repl(client: ChatClient, args: argparse.Namespace) -> int:
    """The interactive chat. Errors of one turn are shown and the chat goes on."""
    history: list[dict[str, str]] = []
    total = 0
    try:
        model = client.default_model()
    except ChatError as exc:
        raise CliError(f"the server refused the model list: {exc}") from None
    except httpx.HTTPError as exc:
        reason = http_failure(exc)
        raise CliError(f"cannot reach the server at {client.base_url}: {reason}") from None
    print(f"Chatting with {model} at {client.base_url}. /reset forgets, /exit or Ctrl-D ends.")
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            break
        except KeyboardInterrupt:
            print()
            return 130
        if line in ("/exit", "/quit"):
            break
        if line == "/reset":
            history.clear()
            print("(history cleared)")
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        stop = threading.Event()
        stream: ChatStream | None = None
        try:
            with _first_ctrl_c_stops(stop):
                stream = _answer(client, history, args, stop)
        except KeyboardInterrupt:  # a second Ctrl-C
            stop.set()
        except ChatError as exc:
            print(f"error: the server refused the request: {exc}", file=sys.stderr)
            history.pop()
            continue
        except httpx.HTTPError as exc:
            print(f"error: cannot reach the server: {http_failure(exc)}", file=sys.stderr)
            history.pop()
            continue
        if stop.is_set() or stream is None:
            print("(stopped: only the tokens received are paid)")
            history.pop()
            continue
        history.append({"role": "assistant", "content": stream.text})
        total += stream.spent
        if client.auth is not None:
            print(f"(this chat so far: {format_usd(total)})")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.max_tokens <= 0:
        raise usage_error("--max-tokens must be positive")
    if args.prepay_units is not None and args.prepay_units < 0:
        raise usage_error("--prepay-units must be >= 0")
    url = str(env_or(args.url, "MPP_SERVER_URL") or DEFAULT_URL).rstrip("/")
    if args.prompt is None and args.json:
        raise usage_error("--json needs a prompt (the interactive chat is for people)")
    if not args.api_key_env:
        try:  # CORE-42 up front: https, or plain http to loopback only
            require_secure_url(url, allow_insecure=True)
        except InsecureTransport as exc:
            raise CliError(f"{exc} (plain http only to loopback)", EXIT_USAGE) from None
    client, payer = _client(args, url)
    try:
        if args.prompt is None:
            return _repl(client, args)
        prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
        if args.json:
            stream = client.complete(prompt, **_params(args))
        else:
            stream = _answer(client, prompt, args)
        data = {"model": client.model, **chat_summary(stream), "close": None}
        if args.close and payer is not None and data["channelId"]:
            receipt, captured = close_over_http(
                url + "/v1/chat/completions", payer, str(data["channelId"])
            )
            data["close"] = {"txHash": receipt.get("txHash"), "captured": str(captured)}
    except ChatError as exc:
        raise CliError(f"the server refused the request: {exc}") from None
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the server at {url}: {http_failure(exc)}") from None
    except CloseFailed as exc:
        raise CliError(str(exc)) from None
    finally:
        client.close()
        if payer is not None:
            close_records = getattr(payer.records, "close", None)
            if close_records is not None:
                close_records()
    if args.json:
        emit(args, data, str)
    elif data["close"] is not None:
        closed = data["close"]
        print(f"Closed {data['channelId']}: captured {format_amount(int(closed['captured']))}")
        print(f"  tx {closed['txHash']}")
    return 0
