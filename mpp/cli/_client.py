"""Client-side helpers of `mpp chat`, `mpp pay` and `mpp demo`: the payer from the command's
flags, and the cooperative close.

`close_over_http` asks the server for a fresh challenge (HEAD on the paid URI, AMB-05), signs
the payer's close voucher at exactly max(spent, settled) (SES-36/37, AMB-02) and sends it as a
bodyless POST to the same URI (SES-34); the server closes on chain and answers with a receipt
carrying the `txHash`. (A candidate for `mpp.http.PaymentAuth`; kept here until it has one.)
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import httpx

from mpp.chain.web3chain import Web3Chain
from mpp.cli._channel_view import records_path
from mpp.cli._common import connect, env_or, load_key
from mpp.core.challenge import Challenge, parse_challenges
from mpp.core.credential import Credential
from mpp.core.errors import PaymentError
from mpp.core.receipt import parse_receipt
from mpp.session.payer import Payer
from mpp.session.policy import SpendingPolicy
from mpp.session.scheme import is_ours

__all__ = ["CloseFailed", "build_payer", "close_over_http"]


def build_payer(args: argparse.Namespace, policy: SpendingPolicy) -> Payer:
    """The payer of a client command: its key (--key-env/--keystore), its records file
    (--records, MPP_PAYER_RECORDS), and a chain for fees and time when --rpc-url is set."""
    chain: Web3Chain | None = None
    if env_or(args.rpc_url, "MPP_RPC_URL"):
        chain = connect(args)
    path = records_path(args)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Payer(load_key(args), records_path=path, chain=chain, policy=policy)


class CloseFailed(RuntimeError):
    """The server did not close the channel (its problem detail is the message)."""


def _challenge(response: httpx.Response) -> Challenge:
    try:
        offered = parse_challenges(response.headers.get_list("www-authenticate"), strict=False)
    except PaymentError:
        offered = []
    for challenge in offered:
        if is_ours(challenge.method, challenge.intent):
            return challenge
    raise CloseFailed(f"no tempo/session challenge from the server (HTTP {response.status_code})")


def _detail(response: httpx.Response) -> str:
    try:
        body = json.loads(response.content)
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail or f"HTTP {response.status_code}")


def close_over_http(
    url: str, payer: Payer, channel_id: str, *, timeout: float = 60.0
) -> tuple[dict[str, Any], int]:
    """Close `channel_id` cooperatively through the server at `url`.

    Returns the server's receipt and the amount the close voucher captures.
    """
    with httpx.Client(timeout=timeout) as http:
        challenge = _challenge(http.head(url))
        payload = payer.close_payload(channel_id)
        rec = payer.channel(channel_id)
        chain_id = rec.chain_id if rec is not None else 0
        source = f"did:pkh:eip155:{chain_id}:{payer.address}"
        credential = Credential(challenge, payload, source=source)
        response = http.post(url, headers={"Authorization": credential.to_header()})
    if not 200 <= response.status_code < 300:
        raise CloseFailed(f"the server refused the close: {_detail(response)}")
    header = response.headers.get("payment-receipt")
    if not header:
        raise CloseFailed("the server sent no receipt for the close")
    receipt = parse_receipt(header).to_json()
    payer.mark_closed(channel_id)
    return receipt, int(payload["cumulativeAmount"])
