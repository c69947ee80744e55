"""Interop peer: the official Python SDK's (pympp) tempo charge client pays one URL.

Run by the peer venv's python. Reads one JSON line on stdin (keys never on argv):
{"url", "key", "rpc_url", "chain_id", "currency", "max_atomic_amount"}; prints one JSON line:
{"status", "receipt" (the Payment-Receipt header or null), "body"} or {"error": "..."}.
"""

from __future__ import annotations

import asyncio
import json
import sys

from mpp.client import Mpp
from mpp.methods.tempo import TempoAccount
from mpp.methods.tempo import client as tempo


async def main() -> None:
    cfg = json.loads(sys.stdin.readline())
    method = tempo.charge(
        account=TempoAccount.from_key(cfg["key"]),
        chain_id=cfg["chain_id"],
        rpc_url=cfg["rpc_url"],
        currency=cfg["currency"],
        max_atomic_amount=cfg["max_atomic_amount"],
    )
    async with Mpp(methods=[method]) as client:
        response = await client.fetch(cfg["url"])
    out = {
        "status": response.status_code,
        "receipt": response.headers.get("payment-receipt"),
        "body": response.text[:2000],
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except Exception as exc:  # one line for the test to show
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
