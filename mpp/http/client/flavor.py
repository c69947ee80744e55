"""httpx and httpx2 (encode's next httpx, which the openai 3 SDK is built on): one auth flow.

The flow touches only what both libraries share (headers, url, content, status, extensions,
stream). The few places that need a class of the library get it here, from the object at hand:
a flow driven by an httpx2 client builds httpx2 requests and wraps httpx2 streams. httpx2 is
optional (the `httpx2` extra); without it, everything is httpx.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx

__all__ = ["AuthBase", "httpx2", "library"]


def _optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


httpx2 = _optional("httpx2")

if TYPE_CHECKING:
    AuthBase = httpx.Auth
elif httpx2 is not None:

    class AuthBase(httpx.Auth, httpx2.Auth):
        """An Auth both clients accept (each checks `isinstance` against its own Auth)."""

else:
    AuthBase = httpx.Auth


def library(obj: Any) -> ModuleType:
    """httpx2 for its requests and responses, else httpx."""
    if httpx2 is not None and type(obj).__module__.partition(".")[0] == "httpx2":
        return httpx2
    return httpx
