"""The Payment path end to end on anvil (Tempo mode) with real servers on loopback: the 402
challenge, a metered stream with mid-stream vouchers and a topUp, the non-streaming receipt
header, `ChatClient` (sync and async), and the official openai SDK through the paying client."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from eth_account import Account

from mpp.chain.devnet import Devnet
from mpp.core.challenge import parse_challenges
from mpp.core.credential import Credential
from mpp.core.receipt import parse_receipt
from mpp.http import PaymentAuth
from mpp.inference import (
    EmbeddedProvider,
    InferenceSettings,
    PaymentConfig,
    Price,
    Registry,
    create_app,
)
from mpp.inference.client import AsyncChatClient, ChatClient, openai_http_client, run_chat
from mpp.inference.providers import GlassModel, render_chat
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy
from mpp.session.terms import SessionTerms
from mpp.store.sqlite import SqliteStore
from tests.inference.servers import (
    MODEL,
    chat_body,
    devnet_or_skip,
    issuer_for,
    serve_app,
    session_engine,
    sse_data,
)

KEY = "sk-paid-server"
PRICE = Price(100, 200)  # 1 base unit per prompt token, 2 per completion token
UNIT_PRICE = 2  # = the output price per token: one unit per completion token
PROMPT = "Tell me a story."
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Paid:
    devnet: Devnet
    url: str
    tmp: Path
    glass: GlassModel

    def payer(self, name: str) -> Payer:
        (account,) = self.devnet.new_accounts(1)
        return Payer(
            "0x" + account.key.hex(),
            records_path=self.tmp / f"{name}.db",
            chain=self.devnet.chain(),
            policy=SpendingPolicy(max_amount_per_unit=10, max_deposit=10**7),
        )

    def units(self, completion: int) -> int:
        prompt = len(self.glass.tokenizer.encode(render_chat([("user", PROMPT)])))
        return -(-(prompt * 100 + completion * 200) // (100 * UNIT_PRICE))


@pytest.fixture(scope="module")
def paid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paid]:
    with devnet_or_skip() as devnet:
        tmp = tmp_path_factory.mktemp("paid")
        (payee,) = devnet.new_accounts(1)
        store = SqliteStore(str(tmp / "server.db"))
        engine = session_engine(devnet, payee, store, unit_price=UNIT_PRICE)
        issuer = issuer_for("inference.test")
        glass = GlassModel()
        settings = InferenceSettings(
            registry=Registry([EmbeddedProvider("local", [MODEL], PRICE, model=glass)]),
            api_keys=frozenset({KEY}),
            payment=PaymentConfig(engine, issuer, voucher_timeout=20, failure_rate=None),
            suggested_deposit_units=5_000,
        )
        assert settings.effective_unit_price == UNIT_PRICE
        with serve_app(create_app(settings)) as url:
            yield Paid(devnet, url, tmp, glass)


def test_no_credential_is_402_with_per_token_challenge(paid: Paid) -> None:
    r = httpx.post(f"{paid.url}/v1/chat/completions", json=chat_body())
    assert r.status_code == 402
    assert r.headers["x-should-retry"] == "false"
    (challenge,) = parse_challenges(r.headers.get_list("www-authenticate"))
    assert (challenge.method, challenge.intent) == ("tempo", "session")
    request = challenge.request
    assert request["amount"] == str(UNIT_PRICE)
    assert request["unitType"] == "llm_token"
    assert request["suggestedDeposit"] == str(5_000 * UNIT_PRICE)
    body = r.json()
    assert body["error"]["type"] == "payment_required"
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["status"] == 402  # the RFC 9457 members stay for payment clients


def test_bearer_still_works_on_a_paid_server(paid: Paid) -> None:
    r = httpx.post(
        f"{paid.url}/v1/chat/completions",
        json=chat_body(max_tokens=4),
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert r.status_code == 200 and "payment-" not in r.text
    assert "payment-receipt" not in r.headers


def test_paid_stream_with_mid_stream_vouchers_and_topup(paid: Paid) -> None:
    payer = paid.payer("stream")
    # 60 units of deposit for a ~130-unit answer: vouchers mid-stream, then an on-chain topUp.
    auth = PaymentAuth(payer, allow_insecure=True, deposit=120, prepay_units=8, topup_amount=400)
    n = 120
    with httpx.Client(auth=auth, timeout=60) as client:
        with client.stream(
            "POST", f"{paid.url}/v1/chat/completions", json=chat_body(max_tokens=n)
        ) as r:
            assert r.status_code == 200
            body = r.read().decode()
            receipts = list(r.extensions["mpp.receipts"])
            header = parse_receipt(r.headers["payment-receipt"]).to_json()
    assert "payment-" not in body  # stripped below the caller
    events = sse_data(body)
    assert events[-1] == "[DONE]"
    usage = events[-2]["usage"]
    assert usage["completion_tokens"] == n and events[-2]["choices"] == []
    content = [e for e in events[:-2] if e["choices"] and e["choices"][0]["delta"].get("content")]
    assert len(content) == n
    # the stream's final receipt carries `units`; a pipelined prepay voucher's receipt may land
    # after it
    final = next(r for r in reversed(receipts) if "units" in r)
    assert final["units"] == paid.units(n)
    assert header["channelId"] == final["channelId"]
    assert len(receipts) >= 4  # header + mid-stream voucher/topUp receipts + final event
    onchain = paid.devnet.chain().read_channel(paid.devnet.escrow, final["channelId"])
    assert onchain.deposit == 520  # one topUp of 400 on chain
    rec = payer.channel(final["channelId"])
    assert rec is not None and rec.spent == paid.units(n) * UNIT_PRICE
    # What this request cost and what the channel can still pay, in the final receipt; the
    # headers tell what was paid when the stream started (the prompt).
    assert final["cost"] == str(rec.spent) and final["balance"] == str(520 - rec.spent)
    assert header["cost"] == r.headers["x-mpp-cost"] and int(header["cost"]) < rec.spent
    assert r.headers["x-mpp-balance"] == header["balance"]


def test_non_streaming_receipt_header(paid: Paid) -> None:
    auth = PaymentAuth(paid.payer("json"), allow_insecure=True, deposit=2_000, prepay_units=100)
    with httpx.Client(auth=auth, timeout=60) as client:
        # A JSON answer is charged before its first byte, so it needs a channel with balance:
        # open one with a short stream, then the JSON request reuses it with a prepaid voucher.
        # (A first-ever JSON request re-opens instead of vouchering: see the issue note.)
        warm = client.post(f"{paid.url}/v1/chat/completions", json=chat_body(max_tokens=2))
        assert warm.status_code == 200
        r = client.post(
            f"{paid.url}/v1/chat/completions", json=chat_body(stream=False, max_tokens=10)
        )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 10
    receipt = parse_receipt(r.headers["payment-receipt"]).to_json()
    assert receipt["status"] == "success" and receipt["method"] == "tempo"
    # A JSON answer's headers carry its whole cost (its tokens were held before it started).
    cost = paid.units(10) * UNIT_PRICE
    assert receipt["cost"] == r.headers["x-mpp-cost"] == str(cost)
    assert receipt["balance"] == r.headers["x-mpp-balance"] == str(2_000 - int(receipt["spent"]))
    assert (
        receipt["channelId"]
        == parse_receipt(warm.headers["payment-receipt"]).to_json()["channelId"]
    )


def test_chat_client_sync_reports_usage_receipts_and_spend(paid: Paid) -> None:
    payer = paid.payer("chat")
    with ChatClient(paid.url, payer=payer, allow_insecure=True, deposit=1_000) as client:
        out = io.StringIO()
        stream = run_chat(client, PROMPT, out=out, max_tokens=12)
        assert stream.usage is not None and stream.usage["completion_tokens"] == 12
        assert stream.units == paid.units(12) and stream.spent == paid.units(12) * UNIT_PRICE
        assert out.getvalue().startswith(stream.text)
        assert f"({stream.spent} base units)" in out.getvalue()
        again = client.complete(PROMPT, max_tokens=5)  # the channel is reused
        assert again.receipts[-1]["channelId"] == stream.receipts[-1]["channelId"]


async def test_async_chat_client(paid: Paid) -> None:
    async with AsyncChatClient(
        paid.url, payer=paid.payer("async"), allow_insecure=True, deposit=1_000
    ) as client:
        stream = client.stream(PROMPT, max_tokens=7)
        deltas = [d async for d in stream]
        assert "".join(deltas) == stream.text and stream.units == paid.units(7)
        assert stream.finish_reason == "length"


def test_openai_2_sdk_through_paying_http_client(paid: Paid) -> None:
    """openai 2.x on httpx 0.28, from .peers/openai2 ahead of the venv's openai 3.x and httpx
    0.29, in its own process: `PaymentAuth` on the older httpx, under the older SDK."""
    peer = ROOT / ".peers" / "openai2"
    if not (peer / "openai").is_dir():
        pytest.skip("openai 2.x is not in .peers/openai2 (scripts/setup.sh puts it there)")
    (account,) = paid.devnet.new_accounts(1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(peer), str(ROOT)])}
    cmd = [sys.executable, str(ROOT / "tests" / "inference" / "openai2_client.py"), paid.url,
           paid.devnet.rpc_url, str(paid.devnet.chain_id), "0x" + account.key.hex(),
           str(paid.tmp / "sdk2.db")]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["version"].startswith("2.") and seen["httpx"].startswith("0.28.")
    assert seen["chunksOk"]
    assert httpx.__version__.startswith("0.29.")  # and this process runs the newer one
    assert seen["completionTokens"] == 9 and seen["jsonTokens"] == 5
    receipts = seen["receipts"]
    assert [r["units"] for r in receipts if "units" in r] == [paid.units(9)]  # the stream's
    assert receipts[-1]["cost"] == str(paid.units(5) * UNIT_PRICE)  # the JSON answer's


def test_openai_sdk_through_paying_http_client(paid: Paid) -> None:
    """The venv's openai is 3.x (on httpx2); it takes our httpx client as `http_client`."""
    assert openai.__version__.startswith("3.")
    auth = PaymentAuth(paid.payer("sdk"), allow_insecure=True, deposit=1_000)
    client = openai.OpenAI(
        base_url=f"{paid.url}/v1", api_key="unused", http_client=openai_http_client(auth)
    )
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": PROMPT}], max_tokens=9, stream=True
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert all(c.choices is not None for c in chunks)  # no bogus payment chunks
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9
    assert auth.receipts and auth.receipts[-1]["units"] == paid.units(9)
    assert Account  # the payer key never leaves the Payer


@pytest.mark.parametrize("stream", [False, None], ids=["stream-false", "stream-omitted"])
def test_openai_sdk_json_answers_pay_exactly_their_usage_on_defaults(
    paid: Paid, stream: bool | None
) -> None:
    """SES-27: a JSON answer cannot pause for a voucher, so the server holds its longest
    outcome (prompt + max_tokens) up front; the client on its defaults pays the one 402's exact
    `requiredTopUp`, and what the answer did not use goes back: spent is exactly the usage."""
    payer = paid.payer(f"sdk-json-{stream}")
    auth = PaymentAuth(payer, allow_insecure=True)  # defaults: deposit, window, policy
    client = openai.OpenAI(
        base_url=f"{paid.url}/v1", api_key="unused", http_client=openai_http_client(auth)
    )
    extra = {} if stream is None else {"stream": stream}
    spent = 0
    for max_tokens in (12, 30):  # the second reuses the channel
        answer = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=max_tokens,
            **extra,  # type: ignore[call-overload]
        )
        assert answer.object == "chat.completion"
        assert answer.usage is not None and answer.usage.completion_tokens == max_tokens
        spent += paid.units(max_tokens) * UNIT_PRICE
        receipt = auth.receipts[-1]
        assert receipt["spent"] == str(spent)
        rec = payer.channel(receipt["channelId"])
        assert rec is not None and rec.spent == spent


def test_amb_15_bodyless_open_post_is_management_not_500(paid: Paid) -> None:
    """A bodyless POST carrying an `open` credential opens the channel and answers 200 with a
    receipt and no body (it used to answer 500 after the channel was opened and stored)."""
    first = httpx.post(f"{paid.url}/v1/chat/completions", json=chat_body())
    assert first.status_code == 402
    (challenge,) = parse_challenges(first.headers.get_list("www-authenticate"))
    payload = paid.payer("bodyless").open_payload(SessionTerms.from_request(challenge.request))
    auth = Credential(challenge, payload).to_header()
    r = httpx.post(f"{paid.url}/v1/chat/completions", headers={"Authorization": auth})
    assert r.status_code == 200 and r.content == b""
    assert (
        parse_receipt(r.headers["payment-receipt"]).to_json()["channelId"] == payload["channelId"]
    )


def test_openai_sdk_with_stream_omitted_gets_json(paid: Paid) -> None:
    """Decided: an omitted `stream` is answered with JSON when the request accepts JSON and not
    SSE (the openai SDK sends `Accept: application/json`), so `create()` without `stream`
    returns a ChatCompletion, not a string. Without such an Accept header it still streams."""
    messages = [{"role": "user", "content": PROMPT}]
    with openai.OpenAI(base_url=f"{paid.url}/v1", api_key=KEY) as sdk:
        completion = sdk.chat.completions.create(model=MODEL, messages=messages, max_tokens=5)  # type: ignore[arg-type]
    assert completion.object == "chat.completion"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    body = {k: v for k, v in chat_body(max_tokens=3).items() if k != "stream"}
    sse = httpx.post(
        f"{paid.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert sse.headers["content-type"].startswith("text/event-stream")
