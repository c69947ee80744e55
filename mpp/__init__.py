"""mpp-channels: the Python toolkit for MPP payment channels.

The protocol core is re-exported here (`from mpp import Challenge, ...`), and so are the main
names of the other layers, loaded on first use so that `import mpp` stays light:
`from mpp import PaymentAuth, PaymentMiddleware, PaymentGate, Price, Route, Payer, ...`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mpp.core import *  # noqa: F403
from mpp.core import __all__ as _core_all

if TYPE_CHECKING:  # what the lazy names are, for type checkers
    from mpp.chain.devnet import Devnet as Devnet
    from mpp.chain.web3chain import PATH_USD as PATH_USD
    from mpp.chain.web3chain import Web3Chain as Web3Chain
    from mpp.charge import ChargePayer as ChargePayer
    from mpp.charge import ChargeServer as ChargeServer
    from mpp.charge import ChargeTerms as ChargeTerms
    from mpp.charge import Split as Split
    from mpp.http import RECEIPTS_KEY as RECEIPTS_KEY
    from mpp.http import Meter as Meter
    from mpp.http import PaymentAuth as PaymentAuth
    from mpp.http import PaymentDeclined as PaymentDeclined
    from mpp.http import PaymentGate as PaymentGate
    from mpp.http import PaymentMiddleware as PaymentMiddleware
    from mpp.http import Price as Price
    from mpp.http import Route as Route
    from mpp.http import get_meter as get_meter
    from mpp.http.server import ChargeOptions as ChargeOptions
    from mpp.http.server.fastapi import payment_meter as payment_meter
    from mpp.inference.client import AsyncChatClient as AsyncChatClient
    from mpp.inference.client import ChatClient as ChatClient
    from mpp.inference.client import openai_http_client as openai_http_client
    from mpp.session.engine import SessionServer as SessionServer
    from mpp.session.payer import Payer as Payer
    from mpp.session.policy import SpendingPolicy as SpendingPolicy
    from mpp.session.terms import SessionTerms as SessionTerms
    from mpp.session.watcher import ChainWatcher as ChainWatcher
    from mpp.store import open_store as open_store

__version__ = "0.1.0"

# name -> the module that defines it (imported on first access, PEP 562)
_LAZY = {
    "Devnet": "mpp.chain.devnet",
    "PATH_USD": "mpp.chain.web3chain",
    "Web3Chain": "mpp.chain.web3chain",
    "ChargePayer": "mpp.charge",
    "ChargeServer": "mpp.charge",
    "ChargeTerms": "mpp.charge",
    "Split": "mpp.charge",
    "RECEIPTS_KEY": "mpp.http",
    "Meter": "mpp.http",
    "PaymentAuth": "mpp.http",
    "PaymentDeclined": "mpp.http",
    "PaymentGate": "mpp.http",
    "PaymentMiddleware": "mpp.http",
    "Price": "mpp.http",
    "Route": "mpp.http",
    "get_meter": "mpp.http",
    "ChargeOptions": "mpp.http.server",
    "payment_meter": "mpp.http.server.fastapi",
    "AsyncChatClient": "mpp.inference.client",
    "ChatClient": "mpp.inference.client",
    "openai_http_client": "mpp.inference.client",
    "ChainWatcher": "mpp.session.watcher",
    "SessionServer": "mpp.session.engine",
    "Payer": "mpp.session.payer",
    "SpendingPolicy": "mpp.session.policy",
    "SessionTerms": "mpp.session.terms",
    "open_store": "mpp.store",
}

__all__ = [*_core_all, *_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mpp' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
