"""Interop peer: the official Python SDK (pympp), driven over JSON lines on stdin/stdout.

Run by the peer venv's python (its import name is also `mpp`, so it cannot share our venv).
One request per line: {"op": ..., ...}; one answer per line: {"ok": true, "result": ...} or
{"ok": false, "error": "<ExceptionType>: <message>"}.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

import mpp
from mpp import Challenge, ChallengeEcho, Credential, Receipt


def _challenge_dict(c: Challenge) -> dict[str, Any]:
    return {
        "id": c.id,
        "realm": c.realm,
        "method": c.method,
        "intent": c.intent,
        "request": c.request,
        "request_b64": c.request_b64,
        "expires": c.expires,
        "digest": c.digest,
        "description": c.description,
        "opaque": c.opaque,
        "header": c.header,
    }


def op_version(_: dict[str, Any]) -> Any:
    from importlib.metadata import version

    return version("pympp")


def op_challenge_id(m: dict[str, Any]) -> Any:
    kwargs = {k: m[k] for k in ("expires", "digest", "opaque", "header") if m.get(k) is not None}
    return mpp.generate_challenge_id(
        secret_key=m["secret"],
        realm=m["realm"],
        method=m["method"],
        intent=m["intent"],
        request=m["request"],
        **kwargs,
    )


def op_parse_challenge(m: dict[str, Any]) -> Any:
    return _challenge_dict(Challenge.from_www_authenticate(m["header"]))


def op_create_challenge(m: dict[str, Any]) -> Any:
    c = Challenge.create(
        secret_key=m["secret"],
        realm=m["realm"],
        method=m["method"],
        intent=m["intent"],
        request=m["request"],
        expires=m.get("expires"),
        digest=m.get("digest"),
        description=m.get("description"),
        meta=m.get("opaque"),
        header=m.get("header"),
    )
    return {"header": c.to_www_authenticate(m["realm"]), "challenge": _challenge_dict(c)}


def op_verify_challenge(m: dict[str, Any]) -> Any:
    c = Challenge.from_www_authenticate(m["header"])
    return c.verify(m["secret"], m["realm"])


def op_parse_credential(m: dict[str, Any]) -> Any:
    cred = Credential.from_authorization(m["header"])
    e = cred.challenge
    echo = {
        k: getattr(e, k)
        for k in (
            "id",
            "realm",
            "method",
            "intent",
            "request",
            "expires",
            "digest",
            "opaque",
            "header",
            "description",
        )
    }
    return {"challenge": echo, "payload": cred.payload, "source": cred.source}


def op_format_credential(m: dict[str, Any]) -> Any:
    echo = ChallengeEcho(**m["challenge"])
    credential = Credential(challenge=echo, payload=m["payload"], source=m.get("source"))
    return credential.to_authorization()


def op_parse_receipt(m: dict[str, Any]) -> Any:
    r = Receipt.from_payment_receipt(m["header"])
    return {
        "status": r.status,
        "timestamp": r.timestamp.isoformat(),
        "reference": r.reference,
        "method": r.method,
        "external_id": r.external_id,
        "extensions": r.extensions,
    }


def op_format_receipt(m: dict[str, Any]) -> Any:
    r = Receipt(
        status="success",
        timestamp=datetime.fromisoformat(m["timestamp"].replace("Z", "+00:00")),
        reference=m["reference"],
        method=m["method"],
        external_id=m.get("external_id"),
        extensions=m.get("extensions"),
    )
    return r.to_payment_receipt()


def _ops_per_second(fn: Any, seconds: float) -> float:
    n = 0
    batch = 200
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            fn()
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def op_bench(m: dict[str, Any]) -> Any:
    """pympp's own timing loop: parse + format of the given challenge and credential."""
    seconds = float(m.get("seconds", 1.0))
    challenge_header, credential_header = m["challenge"], m["credential"]
    realm = Challenge.from_www_authenticate(challenge_header).realm

    def challenge_round() -> None:
        Challenge.from_www_authenticate(challenge_header).to_www_authenticate(realm)

    def credential_round() -> None:
        Credential.from_authorization(credential_header).to_authorization()

    return {
        "challenge": _ops_per_second(challenge_round, seconds),
        "credential": _ops_per_second(credential_round, seconds),
    }


OPS = {name[3:]: fn for name, fn in globals().items() if name.startswith("op_")}


def main() -> None:
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            message = json.loads(line)
            result = OPS[message["op"]](message)
            answer: dict[str, Any] = {"ok": True, "result": result}
        except Exception as exc:  # report every peer failure as data
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer, default=str) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
