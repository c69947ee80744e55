"""A FastAPI app with a fixed-price route and a metered SSE route, paid over MPP sessions.

Configuration comes from the environment (see `mpp devnet` for local values):
  MPP_RPC_URL, MPP_ESCROW, MPP_PAYEE_KEY, MPP_SECRET (>= 32 bytes), MPP_STORE (default sqlite).
Run: MPP_...=... .venv/bin/uvicorn examples.paid_api:app --port 8000
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Annotated

from eth_account import Account
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse

from mpp import (
    PATH_USD,
    ChallengeIssuer,
    Meter,
    PaymentGate,
    PaymentMiddleware,
    Price,
    Route,
    SessionServer,
    SessionTerms,
    Web3Chain,
    open_store,
    payment_meter,
)

payee = Account.from_key(os.environ["MPP_PAYEE_KEY"])
chain = Web3Chain(os.environ["MPP_RPC_URL"], account=payee, fee_token=PATH_USD)
terms = SessionTerms(
    amount=1,
    currency=PATH_USD,
    recipient=payee.address.lower(),
    escrow_contract=os.environ["MPP_ESCROW"].lower(),
    chain_id=chain.chain_id,
)
engine = SessionServer(open_store(os.environ.get("MPP_STORE", "paid_api.db")), chain, terms)
issuer = ChallengeIssuer(os.environ["MPP_SECRET"], realm="api.example")
routes = [
    Route("/answer", Price(amount=1_000)),
    Route("/count", Price(amount=10, unit_type="item", suggested_deposit=100_000)),
]

app = FastAPI()
app.add_middleware(PaymentMiddleware, gate=PaymentGate(engine, issuer, routes))


@app.get("/answer")
async def answer() -> dict[str, str]:
    return {"answer": "42"}


@app.get("/count")
async def count(meter: Annotated[Meter, Depends(payment_meter)]) -> StreamingResponse:
    async def items() -> AsyncIterator[bytes]:
        for i in range(50):
            if not await meter.charge(1):  # paid before it is sent; False ends the stream
                return
            yield f"data: {i}\n\n".encode()

    return StreamingResponse(items(), media_type="text/event-stream")
