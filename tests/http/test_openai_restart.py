"""The official openai SDK over PaymentAuth, and a client killed mid-stream that resumes.

Rows: SES-31/32 (payment events stripped below the SDK), SES-04/39 (a restarted client reuses
its channel from its records), CORE-47 (Idempotency-Key on paid POSTs).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import httpx
import openai

from mpp.http import RECEIPTS_KEY, PaymentAuth
from tests.http.support import Counters, Env, ServerThread, final_receipt, starlette_app


def test_ses_31_openai_sdk_streams_clean_chunks(env: Env) -> None:
    server = ServerThread(starlette_app(env.gate(), Counters())).start()
    try:
        receipts: list[dict[str, Any]] = []
        auth = PaymentAuth(
            env.payer_for(),
            allow_insecure=True,
            deposit=3_000,
            prepay_units=30,
            on_receipt=receipts.append,
        )
        http = httpx.Client(auth=auth, timeout=30)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", http_client=http)
        stream = client.chat.completions.create(
            model="test",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            max_tokens=120,
        )
        text = ""
        for chunk in stream:
            assert chunk.choices, "a payment event leaked into the SDK"
            text += chunk.choices[0].delta.content or ""
        http.close()
        assert text.split() == [f"t{i}" for i in range(120)]
        assert (
            final_receipt(receipts)["spent"] == "1200" and final_receipt(receipts)["units"] == 120
        )
        assert len(receipts) >= 4  # header + mid-stream voucher receipts + final event
    finally:
        server.stop()


CHILD = r"""
import json, sys, httpx
from mpp.http import PaymentAuth
from mpp.session.payer import Payer
args = json.loads(sys.stdin.readline())
from mpp.chain.web3chain import Web3Chain
payer = Payer(args["key"], records_path=args["records"], chain=Web3Chain(args["rpc"]))
auth = PaymentAuth(payer, allow_insecure=True, deposit=5_000, prepay_units=20)
with httpx.Client(auth=auth, timeout=30) as client:
    with client.stream("GET", args["url"]) as r:
        print("status", r.status_code, flush=True)
        for line in r.iter_lines():
            if line:
                print(line, flush=True)
"""


def test_ses_04_client_killed_mid_stream_resumes_same_channel(env: Env) -> None:
    server = ServerThread(starlette_app(env.gate(), Counters())).start()
    records = env.tmp / "killed.db"
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=str(env.tmp.parent),
        )
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(
            json.dumps(
                {
                    "key": env.payer_key,
                    "records": str(records),
                    "url": server.url + "/stream?n=100000",
                    "rpc": env.devnet.rpc_url,
                }
            )
            + "\n"
        )
        child.stdin.flush()
        assert child.stdout.readline().strip() == "status 200"
        for _ in range(60):  # well past the first few vouchers
            assert child.stdout.readline().startswith("data: ")
        child.kill()
        child.wait(10)
        child.stdout.close()
        child.stdin.close()

        payer = env.payer_for(name="killed.db")
        (rec,) = payer.records.all()  # type: ignore[attr-defined]
        auth = PaymentAuth(payer, allow_insecure=True, deposit=5_000, prepay_units=20)
        with httpx.Client(auth=auth, timeout=30) as client:
            r = client.get(server.url + "/stream?n=40")
        assert r.status_code == 200 and r.content.count(b"data: ") == 40
        final = final_receipt(r.extensions[RECEIPTS_KEY])
        assert final["channelId"] == rec.channel_id  # resumed, no second open
        assert len(payer.records.all()) == 1  # type: ignore[attr-defined]
        assert int(final["spent"]) >= 100 * 10  # the killed stream's units stay paid
    finally:
        server.stop()
