"""Take the screenshot of the operator page in docs/: a devnet, `mpp serve` with an admin key,
a few paying clients (one settled by the threshold, one refused voucher), headless Chromium.

    .venv/bin/python scripts/operator_screenshot.py [--output docs/operator-page.png]
        [--rounds 6] [--pause 4]

Needs anvil (scripts/setup.sh) and Debian's chromium at /usr/bin/chromium (driven by
playwright; playwright's own browser download is not used). Everything it starts is stopped by
its handle at the end, also on failure. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from eth_account.signers.local import LocalAccount

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mpp.chain.devnet import Devnet  # noqa: E402
from mpp.cli._paid import free_port  # noqa: E402
from mpp.core.challenge import parse_challenges  # noqa: E402
from mpp.core.credential import Credential  # noqa: E402
from mpp.http import PaymentAuth  # noqa: E402
from mpp.session.payer import Payer  # noqa: E402
from mpp.session.policy import SpendingPolicy  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
CHAT = "/v1/chat/completions"
PROMPT = {"model": "glassllm-en", "messages": [{"role": "user", "content": "Tell me a story."}]}

CONFIG = """
admin_key_env = "MPP_ADMIN_KEY"
rpc_url = "{rpc}"
escrow = "{escrow}"
store = "sqlite:{store}"
bind = "127.0.0.1:{port}"
realm = "operator.example"
suggested_deposit_units = 2000

[settlement]
threshold = 250       # low, so the watcher settles channels during the run
poll_interval = 0.5

[[providers]]
kind = "embedded"
model = "glassllm"
name = "local"
models = ["glassllm-en"]
input_price_per_million = 100
output_price_per_million = 200
"""


def start_server(
    devnet: Devnet, payee_key: str, tmp: Path, admin_key: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    config = tmp / "server.toml"
    config.write_text(
        CONFIG.format(rpc=devnet.rpc_url, escrow=devnet.escrow, store=tmp / "server.db", port=port)
    )
    env = {
        **os.environ,
        "MPP_PAYEE_KEY": payee_key,
        "MPP_SECRET": secrets.token_hex(32),
        "MPP_ADMIN_KEY": admin_key,
    }
    for name in ("MPP_RPC_URL", "MPP_ESCROW", "MPP_STORE", "MPP_CONFIG"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "mpp", "serve", "--config", str(config), "--json",
           "--log-level", "warning"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("mpp serve did not start")
    return proc, str(json.loads(line)["url"])


def refuse_one(url: str, channel_id: str) -> None:
    """A voucher with a signature nobody made: the page lists it as a refusal."""
    body = json.dumps({**PROMPT, "max_tokens": 4}).encode()
    headers = {"content-type": "application/json"}
    first = httpx.post(url + CHAT, content=body, headers=headers)
    (challenge,) = parse_challenges(first.headers.get_list("www-authenticate"))
    payload = {"action": "voucher", "channelId": channel_id, "cumulativeAmount": "900",
               "signature": "0x" + "11" * 64 + "1b"}  # fmt: skip
    headers["authorization"] = Credential(challenge, payload).to_header()
    httpx.post(url + CHAT, content=body, headers=headers)


def screenshot(url: str, admin_key: str, output: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url + "/operator")
            page.fill("input[name=key]", admin_key)
            page.click("button[type=submit]")
            page.wait_for_selector("body[data-loaded='1']")
            output.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(output), full_page=True)
        finally:
            browser.close()


def pay(
    devnet: Devnet, url: str, accounts: list[LocalAccount], tmp: Path, rounds: int, pause: float
) -> None:
    """Rounds of paid streams from several payers, and one refused voucher halfway."""
    clients: list[tuple[httpx.Client, PaymentAuth]] = []
    for i, account in enumerate(accounts):
        payer = Payer(
            "0x" + bytes(account.key).hex(),
            records_path=tmp / f"payer{i}.db",
            chain=devnet.chain(),
            policy=SpendingPolicy(max_amount_per_unit=10, max_deposit=10**7),
        )
        auth = PaymentAuth(payer, allow_insecure=True, deposit=2_000 + 1_000 * i)
        clients.append((httpx.Client(auth=auth, timeout=60), auth))
    try:
        for rnd in range(rounds):
            for i, (client, _) in enumerate(clients):
                if i == 0 or (rnd + i) % 2 == 0:  # the first payer is the busiest
                    client.post(url + CHAT, json={**PROMPT, "max_tokens": 20 + 15 * i})
            if rnd == rounds // 2:
                refuse_one(url, str(clients[0][1].receipts[-1]["channelId"]))
            time.sleep(pause)
    finally:
        for client, _ in clients:
            client.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()  # graceful: streams end, what is due is settled
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "operator-page.png")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of paid requests")
    parser.add_argument("--pause", type=float, default=4.0, help="seconds between rounds")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt install chromium")
    admin_key = secrets.token_urlsafe(24)
    devnet = Devnet.start()
    try:
        payee, *payers = devnet.new_accounts(4)
        with tempfile.TemporaryDirectory() as tmp:
            proc, url = start_server(devnet, "0x" + bytes(payee.key).hex(), Path(tmp), admin_key)
            try:
                pay(devnet, url, payers, Path(tmp), args.rounds, args.pause)
                screenshot(url, admin_key, args.output)
            finally:
                stop(proc)
    finally:
        devnet.stop()
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
