"""The paid inference server as `mpp serve` and `mpp demo` run it: the session engine and the
challenge issuer attached to `InferenceSettings`, and uvicorn in a thread stopped by its handle.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from mpp.chain.web3chain import Web3Chain
from mpp.core.binding import ChallengeIssuer
from mpp.http.server.asgi import ASGIApp, PaymentMiddleware
from mpp.inference.server import UNIT_TYPE, create_app
from mpp.inference.settings import InferenceSettings, PaymentConfig
from mpp.session.engine import SessionServer
from mpp.session.ports import Store
from mpp.session.settlement import SettlementPolicy
from mpp.session.terms import SessionTerms

__all__ = ["PaymentOptions", "attach_payment", "free_port", "serve_in_thread"]


@dataclass(frozen=True)
class PaymentOptions:
    escrow: str
    token: str
    secret: bytes
    realm: str = "mpp-inference"
    fee_payer: bool = False
    min_deposit: int = 0
    voucher_timeout: float = 60.0
    settlement: SettlementPolicy = field(default_factory=SettlementPolicy)  # on by default
    charge_per_request: int | None = None  # a JSON completion may pay this once (tempo/charge)


def attach_payment(
    settings: InferenceSettings, store: Store, chain: Web3Chain, key: bytes, opts: PaymentOptions
) -> SessionServer:
    """Make `settings` charge per token over a tempo session paid to the key's address."""
    assert chain.address is not None
    terms = SessionTerms(
        amount=settings.effective_unit_price,
        currency=opts.token,
        recipient=chain.address,
        escrow_contract=opts.escrow,
        chain_id=chain.chain_id,
        unit_type=UNIT_TYPE,
        suggested_deposit=settings.suggested_deposit,
        fee_payer=opts.fee_payer,
    )
    engine = SessionServer(
        store,
        chain,
        terms,
        fee_payer_key=key if opts.fee_payer else None,
        fee_token=opts.token,
        settlement=opts.settlement,
        min_deposit=opts.min_deposit,
        tx_timeout=30.0,
    )
    issuer = ChallengeIssuer(opts.secret, realm=opts.realm, clock=lambda: datetime.now(UTC))
    settings.payment = PaymentConfig(
        engine,
        issuer,
        voucher_timeout=opts.voucher_timeout,
        charge_per_request=opts.charge_per_request,
    )
    return engine


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve_in_thread(
    settings: InferenceSettings, host: str, port: int, *, startup_timeout: float = 15.0
) -> Iterator[str]:
    """uvicorn serving `create_app(settings)` in a thread; yields the base URL; stops it after.

    Signals stay with the caller's main thread (uvicorn installs no handlers off the main thread).
    """
    import uvicorn

    from mpp.http.server.uvicorn_guard import server_config

    app: ASGIApp = create_app(settings)
    port = port or free_port(host)
    config = server_config(app, host, port, timeout_graceful_shutdown=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="mpp-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the server could not start on {host}:{port}")
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not start in time")
            time.sleep(0.01)
        yield f"http://{host}:{port}"
    finally:
        # Graceful shutdown: paid streams end at their next unit with their final receipt
        # (and new paid requests get 503), then uvicorn stops accepting and waits for the
        # responses in flight.
        paid = getattr(app, "paid", None)
        if isinstance(paid, PaymentMiddleware):
            paid.drain()
        server.should_exit = True
        thread.join(35)
