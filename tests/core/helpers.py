"""Shared values for the core codec tests."""

from __future__ import annotations

from datetime import UTC, datetime

SECRET = "test-vector-secret-minimum-32-byte-secret"
REALM = "api.example.com"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
REQUEST = {
    "amount": "1000000",
    "currency": "0x20c0000000000000000000000000000000000000",
    "recipient": "0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00",
}


def header(**params: str) -> str:
    """A Payment challenge with the required params (override or add any)."""
    base = {"id": "a", "realm": "r", "method": "tempo", "intent": "charge", "request": "e30"}
    base.update(params)
    return "Payment " + ", ".join(f'{k}="{v}"' for k, v in base.items())
