"""Chat with a paid inference server (`mpp serve` or `mpp demo`'s), paying per token: with the
toolkit's own client, then with the official openai SDK.

Environment: MPP_SERVER_URL (e.g. http://127.0.0.1:8000), MPP_RPC_URL, MPP_PAYER_KEY.
"""

from __future__ import annotations

import os

import openai

from mpp import ChatClient, Payer, SpendingPolicy, Web3Chain, openai_http_client

url = os.environ["MPP_SERVER_URL"]
payer = Payer(
    os.environ["MPP_PAYER_KEY"],
    records_path="payer_channels.db",
    chain=Web3Chain(os.environ["MPP_RPC_URL"]),
    policy=SpendingPolicy(max_amount_per_unit=1_000, max_deposit=200_000),
)
with ChatClient(url, payer=payer, allow_insecure=True) as chat:  # loopback only: no TLS here
    model = chat.default_model()  # the first model the server lists
    print("model:", model)
    stream = chat.stream("Name three colours.", max_tokens=24, temperature=0.2)
    for delta in stream:
        print(delta, end="", flush=True)
    print(f"\n{stream.usage}, cost {stream.spent}, balance {stream.balance}")

client = openai.OpenAI(
    base_url=f"{url}/v1",
    api_key="unused",
    http_client=openai_http_client(payer, allow_insecure=True),
)
answer = client.chat.completions.create(
    model=chat.default_model(),
    messages=[{"role": "user", "content": "And three fruits?"}],
    max_tokens=24,
)
print(answer.choices[0].message.content)
