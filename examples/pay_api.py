"""Pay the example API: a fixed-price GET and a metered SSE stream that needs vouchers mid-way.

Environment: MPP_RPC_URL, MPP_PAYER_KEY, API_URL (e.g. http://127.0.0.1:8000).
"""

from __future__ import annotations

import os

import httpx

from mpp import Payer, PaymentAuth, SpendingPolicy, Web3Chain

payer = Payer(
    os.environ["MPP_PAYER_KEY"],
    records_path="payer_channels.db",
    chain=Web3Chain(os.environ["MPP_RPC_URL"]),
    policy=SpendingPolicy(max_amount_per_unit=1_000, max_deposit=200_000),
)
auth = PaymentAuth(payer, allow_insecure=True)  # loopback only: no TLS here
with httpx.Client(base_url=os.environ["API_URL"], auth=auth, timeout=30) as client:
    print(client.get("/answer").json())
    with client.stream("GET", "/count") as stream:
        items = [line for line in stream.iter_lines() if line.startswith("data:")]
    print(len(items), "items; receipts:", [r["spent"] for r in auth.receipts][-1])
print("cost", auth.receipts[-1]["cost"], "balance", auth.receipts[-1]["balance"])
