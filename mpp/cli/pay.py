"""`mpp pay URL`: a curl-like request that pays the server's 402, with a charge or a session.

The response body goes to stdout (with `-i`, the status line and headers first); what was paid
goes to stderr as one `mpp: paid ...` line with the receipt, so stdout stays the body. The payer
key comes from MPP_PAYER_KEY or --keystore; session channels are kept in the payer's records
(--records, MPP_PAYER_RECORDS). The spending policy is checked before anything is signed:
`--max-amount` caps a charge (one request) and a session's price per unit; `--max-deposit`
caps a channel's deposit. `--dry-run` asks once without paying and prints the challenges offered
and what the policy would do, signing nothing.

Exit codes as for every command: 0 a 2xx answer, 1 the server did not serve (the body is still
printed) or refused the payment, 2 usage, 3 chain unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from mpp.charge.payer import ChargePayer
from mpp.charge.terms import ChargeTerms
from mpp.cli._client import build_payer
from mpp.cli._common import (
    EXIT_FAILED,
    CliError,
    add_key_flags,
    amount_arg,
    http_failure,
    usage_error,
)
from mpp.core.challenge import Challenge, parse_challenges
from mpp.core.errors import InsecureTransport, PaymentError
from mpp.core.http import require_secure_url
from mpp.http import PaymentAuth
from mpp.http.client import RECEIPTS_KEY
from mpp.http.client.auth import DEFAULT_ACCEPT_PAYMENT
from mpp.http.client.routes import best_offer
from mpp.session.payer import Payer
from mpp.session.policy import PolicyViolation, SpendingPolicy
from mpp.session.terms import SessionTerms, TermsError

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pay", help="send a request and pay its 402 (charge or session)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("url")
    parser.add_argument("-X", "--request", dest="method", help="method (GET; POST with a body)")
    parser.add_argument("-d", "--data", help="request body ('@file' reads a file, '-' stdin)")
    parser.add_argument("--json", dest="json_body", metavar="DATA",
                        help="JSON request body (sets Content-Type and Accept)")  # fmt: skip
    parser.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    parser.add_argument("-i", "--include", action="store_true", help="print status and headers")
    parser.add_argument("--max-amount", default="1usd",
                        help="policy: most a charge or a unit may cost (1usd)")  # fmt: skip
    parser.add_argument("--max-deposit", default="10usd", help="policy: largest deposit (10usd)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the challenges and the decision; sign nothing")  # fmt: skip
    parser.add_argument("--rpc-url", help="read fees and time from this RPC (MPP_RPC_URL)")
    parser.add_argument("--chain-id", type=int, help="expected chain id (MPP_CHAIN_ID)")
    parser.add_argument("--records", help="payer records file (MPP_PAYER_RECORDS)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (60)")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="tracebacks on errors")  # fmt: skip
    add_key_flags(parser, "payer")
    parser.set_defaults(handler=run)


def _body(args: argparse.Namespace) -> tuple[bytes | None, dict[str, str]]:
    if args.data is not None and args.json_body is not None:
        raise usage_error("give either -d or --json, not both")
    raw = args.json_body if args.json_body is not None else args.data
    if raw is None:
        return None, {}
    if raw == "-":
        data = sys.stdin.buffer.read()
    elif raw.startswith("@"):
        try:
            data = Path(raw[1:]).read_bytes()
        except OSError as exc:
            raise usage_error(f"cannot read {raw[1:]}: {exc.strerror}") from None
    else:
        data = raw.encode()
    if args.json_body is None:
        return data, {"content-type": "application/x-www-form-urlencoded"}
    try:
        json.loads(data)
    except ValueError:
        raise usage_error("--json needs a JSON document") from None
    return data, {"content-type": "application/json", "accept": "application/json"}


def _headers(args: argparse.Namespace, extra: dict[str, str]) -> dict[str, str]:
    headers = dict(extra)
    for line in args.header:
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c in line for c in "\r\n"):
            raise usage_error(f"bad header {line!r} (want 'Name: value')")
        headers[name.strip().lower()] = value.strip()
    return headers


def _payer(args: argparse.Namespace) -> Payer:
    policy = SpendingPolicy(
        max_amount_per_unit=amount_arg(args.max_amount, "--max-amount"),
        max_deposit=amount_arg(args.max_deposit, "--max-deposit"),
    )
    return build_payer(args, policy)


def run(args: argparse.Namespace) -> int:
    try:  # CORE-42 up front: https, or plain http to loopback only
        require_secure_url(args.url, allow_insecure=True)
    except InsecureTransport as exc:
        raise usage_error(f"{exc} (plain http only to loopback)") from None
    body, extra = _body(args)
    headers = _headers(args, extra)
    method = (args.method or ("POST" if body is not None else "GET")).upper()
    payer = _payer(args)
    try:
        if args.dry_run:
            return _dry_run(args, payer, method, headers, body)
        auth = PaymentAuth(payer, allow_insecure=True)
        try:
            with httpx.Client(auth=auth, timeout=args.timeout) as client:
                response = client.request(method, args.url, headers=headers, content=body)
        finally:
            auth.close()
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {args.url}: {http_failure(exc)}") from None
    except PolicyViolation as exc:
        raise CliError(f"not paid: {exc}") from None
    finally:
        close = getattr(payer.records, "close", None)
        if close is not None:
            close()
    return _print(args, response)


def _print(args: argparse.Namespace, response: httpx.Response) -> int:
    out = sys.stdout.buffer
    if args.include:
        out.write(f"HTTP/1.1 {response.status_code} {response.reason_phrase}\r\n".encode())
        for name, value in response.headers.items():
            out.write(f"{name}: {value}\r\n".encode("latin-1", "replace"))
        out.write(b"\r\n")
    out.write(response.content)
    out.flush()
    receipts = response.extensions.get(RECEIPTS_KEY) or []
    if receipts and 200 <= response.status_code < 300:
        last = receipts[-1]
        print(f"mpp: paid ({last.get('intent', '?')}): {json.dumps(last)}", file=sys.stderr)
    if response.status_code == 402:
        raise CliError(f"payment not accepted: {_detail(response)}")
    return 0 if 200 <= response.status_code < 300 else EXIT_FAILED


def _detail(response: httpx.Response) -> str:
    try:
        data = json.loads(response.content)
    except ValueError:
        data = {}
    detail = data.get("detail") if isinstance(data, dict) else None
    return str(detail or "HTTP 402")


def _dry_run(
    args: argparse.Namespace,
    payer: Payer,
    method: str,
    headers: dict[str, str],
    body: bytes | None,
) -> int:
    accept = DEFAULT_ACCEPT_PAYMENT
    with httpx.Client(timeout=args.timeout) as client:
        response = client.request(
            method, args.url, headers={**headers, "accept-payment": accept}, content=body
        )
    if response.status_code != 402:
        print(f"no payment asked: HTTP {response.status_code}")
        return 0
    try:
        offered = parse_challenges(response.headers.get_list("www-authenticate"), strict=False)
    except PaymentError as exc:
        raise CliError(f"the server's challenges do not parse: {exc}") from None
    for ch in offered:
        print(f"offered: {_describe(ch)}")
    chosen = best_offer(response, accept)
    if chosen is None:
        print("decision: nothing we can pay")
        return EXIT_FAILED
    try:
        if chosen.intent == "charge":
            ChargePayer(payer, max_amount=payer.policy.max_amount_per_unit).check(
                ChargeTerms.from_request(chosen.request)
            )
        else:
            payer.policy.check_terms(SessionTerms.from_request(chosen.request))
    except (PolicyViolation, TermsError) as exc:
        print(f"decision: refuse tempo/{chosen.intent} ({exc})")
        return EXIT_FAILED
    print(f"decision: pay tempo/{chosen.intent} (nothing was signed)")
    return 0


def _describe(ch: Challenge) -> str:
    req = ch.request
    what = f"{ch.method}/{ch.intent} amount={req.get('amount')}"
    if req.get("unitType"):
        what += f" per {req.get('unitType')}"
    what += f" currency={req.get('currency')} recipient={req.get('recipient')}"
    if ch.description:
        what += f" ({ch.description})"
    return what
