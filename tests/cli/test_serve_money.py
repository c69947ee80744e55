"""`mpp serve` on its default settings keeps the payee's money (real processes, anvil Tempo mode).

A payer streams a paid completion, then force-closes (requestClose on the escrow): the server's
chain watcher closes the channel long before the grace period ends, capturing exactly what was
delivered and refunding the rest, also when the server was down or the RPC unreachable when the
request landed. SIGTERM ends streams cleanly with their receipts; an on-chain top-up reaches a
paused stream.

Row IDs: SES-21, SES-25, SES-31, SES-32, SES-36, SES-38, SES-43.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet
from mpp.chain.web3chain import PATH_USD
from mpp.core import Credential, parse_challenge
from mpp.inference.client import ChatClient
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy
from mpp.session.voucher import sign_voucher
from mpp.store.sqlite import SqliteStore
from tests.cli.serve_process import MppServe
from tests.faults.harness import TcpProxy
from tests.session._workers import fee_of

PRICE = 2  # glassllm's output price 200 / 1M → the server's default unit price
DEPOSIT = 2_000


def _key(account: LocalAccount) -> str:
    return "0x" + bytes(account.key).hex()


@pytest.fixture
def serve(
    devnet_clean: Devnet, payee: LocalAccount, tmp_path: Path
) -> Iterator[Callable[..., MppServe]]:
    started: list[MppServe] = []

    def make(rpc_url: str | None = None, **kw: Any) -> MppServe:
        server = MppServe(
            tmp_path, rpc_url=rpc_url or devnet_clean.rpc_url, escrow=devnet_clean.escrow,
            payee_key=_key(payee), **kw,
        )  # fmt: skip
        started.append(server)
        return server

    try:
        yield make
    finally:
        for server in started:
            server.__exit__()


def _payer(devnet: Devnet, account: LocalAccount, tmp: Path) -> Payer:
    return Payer(
        _key(account), records_path=tmp / "payer.db", chain=devnet.chain(),
        policy=SpendingPolicy(max_deposit=DEPOSIT),
    )  # fmt: skip


def _chat(url: str, payer: Payer, max_tokens: int = 40) -> Any:
    with ChatClient(url, payer=payer, allow_insecure=True, deposit=DEPOSIT) as chat:
        return chat.complete("Tell me a story.", max_tokens=max_tokens)


def _served(devnet: Devnet, account: LocalAccount, tmp: Path, server: MppServe) -> tuple[str, int]:
    """One paid completion on a new channel: (channel id, what was delivered)."""
    stream = _chat(server.url, _payer(devnet, account, tmp))
    return str(stream.receipts[-1]["channelId"]), int(stream.receipts[-1]["spent"])


def _spent(server: MppServe, cid: str) -> int:
    store = SqliteStore(str(server.store))
    try:
        state = store.get(cid)
        assert state is not None
        return state.spent
    finally:
        store.close()


def _wait_finalized(devnet: Devnet, cid: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not devnet.chain().read_channel(devnet.escrow, cid).finalized:
        if time.monotonic() > deadline:
            raise AssertionError("the server did not close the channel in time")
        time.sleep(0.1)


def _balance(devnet: Devnet, who: str) -> int:
    return int(devnet.chain().balance_of(PATH_USD, who))


@pytest.mark.timeout(120)
def test_ses_38_request_close_while_serving_settles_exactly_spent(
    devnet_clean: Devnet, payer: LocalAccount, tmp_path: Path, serve: Callable[..., MppServe]
) -> None:
    server = serve().start()
    cid, delivered = _served(devnet_clean, payer, tmp_path, server)
    assert delivered > 0
    requested_at = time.monotonic()
    payer_chain = devnet_clean.chain(_key(payer), fee_token=PATH_USD)
    before = _balance(devnet_clean, payer.address)
    receipt = payer_chain.request_close(devnet_clean.escrow, cid)
    _wait_finalized(devnet_clean, cid)
    took = time.monotonic() - requested_at
    onchain = devnet_clean.chain().read_channel(devnet_clean.escrow, cid)
    assert onchain.settled == delivered == _spent(server, cid)
    fee = fee_of(devnet_clean, receipt.tx_hash, payer.address)
    assert _balance(devnet_clean, payer.address) - before == DEPOSIT - delivered - fee
    assert took < 900  # long before the grace period ends (seconds, not minutes)


@pytest.mark.timeout(150)
def test_ses_43_request_close_while_down_then_restart_catches_up(
    devnet_clean: Devnet, payer: LocalAccount, tmp_path: Path, serve: Callable[..., MppServe]
) -> None:
    server = serve().start()
    cid, delivered = _served(devnet_clean, payer, tmp_path, server)
    server.kill()  # SIGKILL: no shutdown work at all
    devnet_clean.chain(_key(payer), fee_token=PATH_USD).request_close(devnet_clean.escrow, cid)
    devnet_clean.increase_time(600)  # ten minutes of the grace period pass while down
    server.start()
    _wait_finalized(devnet_clean, cid)
    assert devnet_clean.chain().read_channel(devnet_clean.escrow, cid).settled == delivered


@pytest.mark.timeout(150)
def test_ses_38_rpc_down_during_grace_settles_when_it_returns(
    devnet_clean: Devnet, payer: LocalAccount, tmp_path: Path, serve: Callable[..., MppServe]
) -> None:
    proxy = TcpProxy(devnet_clean.port)
    try:
        server = serve(rpc_url=proxy.url).start()
        cid, delivered = _served(devnet_clean, payer, tmp_path, server)
        proxy.down()
        devnet_clean.chain(_key(payer), fee_token=PATH_USD).request_close(devnet_clean.escrow, cid)
        time.sleep(3)  # the watcher fails and backs off meanwhile
        assert not devnet_clean.chain().read_channel(devnet_clean.escrow, cid).finalized
        assert server.proc is not None and server.proc.poll() is None  # still serving
        proxy.up()
        _wait_finalized(devnet_clean, cid, timeout=60)
        assert devnet_clean.chain().read_channel(devnet_clean.escrow, cid).settled == delivered
    finally:
        proxy.close()


@pytest.mark.timeout(150)
def test_ses_32_sigterm_mid_stream_ends_with_a_receipt_and_settles(
    devnet_clean: Devnet, payer: LocalAccount, tmp_path: Path, serve: Callable[..., MppServe]
) -> None:
    """SIGTERM while a stream runs: the stream ends cleanly with its final receipt (SES-32),
    the process exits 0, `spent` is exactly what was delivered, and what is due (here: any
    earnings, threshold 1) is settled at shutdown."""
    server = serve(settlement="threshold = 1\npoll_interval = 0.2", token_delay=0.05).start()
    client = _payer(devnet_clean, payer, tmp_path)
    got: dict[str, Any] = {}

    def run() -> None:
        with ChatClient(server.url, payer=client, allow_insecure=True, deposit=DEPOSIT) as chat:
            stream = chat.stream("Tell me a long story.", max_tokens=400)
            got["deltas"] = sum(1 for _ in stream)
            got["stream"] = stream

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while not client.records.all():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)  # some tokens flow
    assert server.terminate() == 0, server.stderr()
    thread.join(30)
    stream = got["stream"]
    final = stream.receipts[-1]
    assert 0 < final["units"] < 400  # ended early, with the final receipt event
    cid = str(final["channelId"])
    delivered = int(final["spent"])
    assert _spent(server, cid) == delivered
    onchain = devnet_clean.chain().read_channel(devnet_clean.escrow, cid)
    assert onchain.settled == delivered  # settled at shutdown (threshold 1)
    assert "Traceback" not in server.stderr()


@pytest.mark.timeout(150)
def test_ses_31_on_chain_top_up_resumes_a_paused_stream(
    devnet_clean: Devnet, payer: LocalAccount, tmp_path: Path, serve: Callable[..., MppServe]
) -> None:
    """A stream paused for a voucher beyond the deposit; the payer tops up on chain itself
    (not through the server): the watcher refreshes the deposit and wakes the stream, whose
    next need-voucher shows the new deposit; a voucher above the old deposit is accepted."""
    server = serve(token_delay=0.0).start()
    payer_chain = devnet_clean.chain(_key(payer), fee_token=PATH_USD)
    cid, _ = payer_chain.open_channel(
        devnet_clean.escrow, token=PATH_USD, payee=server.info["payee"], deposit=60
    )
    url = server.url + "/v1/chat/completions"
    challenge = parse_challenge(httpx.head(url).headers.get_list("www-authenticate"))
    source = f"did:pkh:eip155:{devnet_clean.chain_id}:{payer.address.lower()}"

    def credential(amount: int) -> str:
        sig = sign_voucher(_key(payer), cid, amount, chain_id=devnet_clean.chain_id,
                           escrow=devnet_clean.escrow)  # fmt: skip
        payload = {"action": "voucher", "channelId": cid, "cumulativeAmount": str(amount),
                   "signature": sig}  # fmt: skip
        return Credential(challenge, payload, source=source).to_header()

    body = {"model": "glassllm-en", "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 60, "stream": True}  # fmt: skip
    asks: list[dict[str, str]] = []
    tokens = 0
    with httpx.stream("POST", url, json=body, headers={"authorization": credential(60)},
                      timeout=60) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        event = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "payment-need-voucher":
                ask = json.loads(line[6:])
                asks.append(ask)
                if int(ask["requiredCumulative"]) > int(ask["deposit"]) and len(asks) == 1:
                    payer_chain.top_up(devnet_clean.escrow, cid, 1_000, token=PATH_USD)
                elif int(ask["deposit"]) > 60:
                    more = httpx.post(url, headers={"authorization": credential(1_000)})
                    assert more.status_code == 200, more.text
            elif line.startswith("data: {") and event is None:
                choices = json.loads(line[6:]).get("choices") or [{}]
                tokens += bool(choices[0].get("delta", {}).get("content"))
            elif line == "":
                event = None
    assert len(asks) >= 2 and int(asks[0]["deposit"]) == 60 and int(asks[1]["deposit"]) == 1_060
    assert tokens >= 40  # resumed and finished
