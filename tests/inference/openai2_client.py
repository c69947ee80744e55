"""Run by tests/inference/test_paid.py with the openai 2.x SDK and httpx 0.28 first on PYTHONPATH
(.peers/openai2, from scripts/setup.sh): pays a stream and a JSON answer through
`openai_http_client`, prints what it saw as one JSON line. Args: base URL, RPC URL, chain id,
payer key, records path."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import openai

from mpp.chain.web3chain import Web3Chain
from mpp.http import PaymentAuth
from mpp.inference.client import openai_http_client
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy


def main() -> None:
    url, rpc, chain_id, key, records = sys.argv[1:6]
    chain = Web3Chain(rpc, chain_id=int(chain_id))
    policy = SpendingPolicy(max_amount_per_unit=10, max_deposit=10**7)
    auth = PaymentAuth(
        Payer(key, records_path=Path(records), chain=chain, policy=policy),
        allow_insecure=True,
        deposit=1_000,
    )
    client = openai.OpenAI(
        base_url=f"{url}/v1", api_key="unused", http_client=openai_http_client(auth)
    )
    messages = [{"role": "user", "content": "Tell me a story."}]
    chunks = list(
        client.chat.completions.create(
            model="glassllm-en",
            messages=messages,
            max_tokens=9,
            stream=True,  # type: ignore[arg-type]
        )
    )
    answer = client.chat.completions.create(
        model="glassllm-en",
        messages=messages,
        max_tokens=5,  # type: ignore[arg-type]
    )
    print(
        json.dumps(
            {
                "version": openai.__version__,
                "httpx": httpx.__version__,
                "chunksOk": all(c.choices is not None for c in chunks),
                "completionTokens": chunks[-1].usage.completion_tokens
                if chunks[-1].usage
                else None,
                "jsonTokens": answer.usage.completion_tokens if answer.usage else None,
                "receipts": list(auth.receipts),
            }
        )
    )


if __name__ == "__main__":
    main()
