"""Interop with the official Python SDK, pympp (PyPI), run in its own venv (.peers/pympp).

One long-lived peer process per session (tests/interop/pympp_peer.py, JSON lines). Under CI
(CI=true) a missing peer venv fails instead of skipping.
Rows: CORE-01..04, 11, 12, 18, 19, 22, 23, 32; AMB-18 (header slot: pympp 0.16 supports it).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mpp.core import (
    Challenge,
    ChallengeIssuer,
    Credential,
    Receipt,
    challenge_id,
    content_digest,
    parse_challenge,
    parse_credential,
    parse_receipt,
)
from tests.core.helpers import NOW, REALM, REQUEST, SECRET

ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = ROOT / ".peers" / "pympp" / "bin" / "python"
PEER_SCRIPT = Path(__file__).with_name("pympp_peer.py")


class Peer:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def call(self, op: str, **message: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **message}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("pympp peer exited")
        answer = json.loads(line)
        if not answer["ok"]:
            raise PeerError(answer["error"])
        return answer["result"]


class PeerError(Exception):
    pass


@pytest.fixture(scope="session")
def pympp() -> Iterator[Peer]:
    if not PEER_PYTHON.exists():
        message = f"pympp peer venv missing at {PEER_PYTHON} (run scripts/setup.sh)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.Popen(
        [str(PEER_PYTHON), str(PEER_SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(PEER_SCRIPT.parent),  # keep our own `mpp` off the peer's sys.path
    )
    peer = Peer(proc)
    try:
        assert peer.call("version").startswith("0.16.")
        yield peer
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


DIGEST = content_digest(b'{"hello": "world"}')
VARIANTS: list[dict[str, Any]] = [
    {},
    {"expires": "2026-03-01T12:05:00.000Z"},
    {"digest": DIGEST},
    {"opaque": {"order": "42", "z": "ü"}},
    {"header": "Payment-Authorization"},
    {
        "expires": "2026-03-01T12:05:00.000Z",
        "digest": DIGEST,
        "opaque": {"order": "42"},
        "header": "Payment-Authorization",
    },
]
REQUESTS: list[dict[str, Any]] = [
    REQUEST,
    {"amount": "1", "methodDetails": {"chainId": 42431, "feePayer": True}, "memo": "é ☕ <&>"},
    {"b": [1, 2, {"z": None, "a": False}], "a": 'x\ny"\\'},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "+".join(v) or "minimal")
@pytest.mark.parametrize("request_", REQUESTS, ids=["charge", "nested", "escapes"])
def test_core_18_same_challenge_id(
    pympp: Peer, variant: dict[str, Any], request_: dict[str, Any]
) -> None:
    """CORE-18/19, AMB-18: both SDKs compute the same id (expires, digest, opaque, header)."""
    kw = {"realm": REALM, "method": "tempo", "intent": "charge", "request": request_, **variant}
    theirs = pympp.call("challenge_id", secret=SECRET, **kw)
    assert challenge_id(SECRET, **kw) == theirs


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "+".join(v) or "minimal")
def test_core_01_our_challenges_parse_and_verify_in_pympp(
    pympp: Peer, variant: dict[str, Any]
) -> None:
    """CORE-01/11/12: pympp parses our header and verifies our HMAC id."""
    issuer = ChallengeIssuer(SECRET, realm=REALM)
    ours = issuer.issue(
        method="tempo",
        intent="session",
        request=REQUESTS[1],
        now=NOW,
        description='Pay "1" C:\\ café ☕',
        digest=variant.get("digest"),
        opaque=variant.get("opaque"),
        header=variant.get("header"),
    )
    wire = ours.to_header()
    got = pympp.call("parse_challenge", header=wire)
    assert got["id"] == ours.id
    assert got["request"] == ours.request and got["request_b64"] == ours.request_b64
    assert got["expires"] == ours.expires and got["digest"] == ours.digest
    assert got["description"] == ours.description
    assert got["opaque"] == ours.opaque and got["header"] == ours.header
    assert pympp.call("verify_challenge", header=wire, secret=SECRET, realm=REALM) is True


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "+".join(v) or "minimal")
def test_core_01_pympp_challenges_parse_and_verify_in_ours(
    pympp: Peer, variant: dict[str, Any]
) -> None:
    """CORE-01/19: we parse pympp's header; its id verifies under our binding."""
    out = pympp.call(
        "create_challenge",
        secret=SECRET,
        realm=REALM,
        method="tempo",
        intent="charge",
        request=REQUESTS[2],
        description="Zahlung für ☕",
        **{"expires": "2026-03-01T12:05:00.000Z", **variant},
    )
    c = parse_challenge(out["header"])
    theirs = out["challenge"]
    assert (c.id, c.realm, c.method, c.intent) == (theirs["id"], REALM, "tempo", "charge")
    assert c.request == REQUESTS[2] and c.description == "Zahlung für ☕"
    assert c.opaque == theirs["opaque"] and c.header == theirs["header"]
    assert c.digest == theirs["digest"] and c.expires == theirs["expires"]
    ChallengeIssuer(SECRET, realm=REALM).check_binding(c, now=NOW)
    # And the echo of a pympp challenge round-trips through our formatter unchanged.
    assert parse_challenge(c.to_header()) == c


def test_core_04_pympp_reads_each_of_our_challenges(pympp: Peer) -> None:
    """CORE-04: each challenge we emit in a list is readable by pympp on its own line."""
    a = Challenge(id="a", realm=REALM, method="tempo", intent="charge", request=REQUEST)
    b = Challenge(id="b", realm=REALM, method="tempo", intent="session", request=REQUEST)
    for c in (a, b):
        assert pympp.call("parse_challenge", header=c.to_header())["id"] == c.id


def _credential(**variant: Any) -> Credential:
    issuer = ChallengeIssuer(SECRET, realm=REALM)
    c = issuer.issue(
        method="tempo",
        intent="charge",
        request=REQUEST,
        now=NOW,
        description="one coffee ☕",
        digest=variant.get("digest"),
        opaque=variant.get("opaque"),
        header=variant.get("header"),
    )
    return Credential(
        c,
        {"type": "transaction", "signature": "0x" + "ab" * 65, "n": [1, {"x": None}]},
        source="did:pkh:eip155:42431:0x742d35Cc6634C0532925a3b844Bc9e7595f8fE00",
    )


@pytest.mark.parametrize("variant", VARIANTS[2:], ids=lambda v: "+".join(v))
def test_core_22_our_credentials_parse_in_pympp(pympp: Peer, variant: dict[str, Any]) -> None:
    """CORE-22/23: pympp reads our credential; the echo is byte-identical."""
    cred = _credential(**variant)
    got = pympp.call("parse_credential", header=cred.to_header())
    echo = {k: v for k, v in got["challenge"].items() if v is not None}
    assert echo == cred.challenge.echo()
    assert got["payload"] == cred.payload and got["source"] == cred.source


@pytest.mark.parametrize("variant", VARIANTS[2:], ids=lambda v: "+".join(v))
def test_core_22_pympp_credentials_parse_in_ours(pympp: Peer, variant: dict[str, Any]) -> None:
    """CORE-22/23: we read pympp's credential; echo and payload survive."""
    cred = _credential(**variant)
    wire = pympp.call(
        "format_credential",
        challenge=cred.challenge.echo(),
        payload=cred.payload,
        source=cred.source,
    )
    assert parse_credential(wire) == cred


def test_core_32_receipts_both_ways(pympp: Peer) -> None:
    """CORE-32: receipts with method fields cross in both directions."""
    ours = Receipt.success(
        method="tempo",
        reference="0xabc",
        timestamp=NOW,
        externalId="ord-1",
        channelId="0x01",
        spent="25",
    )
    got = pympp.call("parse_receipt", header=ours.to_header())
    assert got["status"] == "success" and got["reference"] == "0xabc" and got["method"] == "tempo"
    assert got["timestamp"] == "2026-03-01T12:00:00+00:00"
    assert got["external_id"] == "ord-1"
    assert got["extensions"] == {"channelId": "0x01", "spent": "25"}

    wire = pympp.call(
        "format_receipt",
        timestamp="2026-03-01T12:00:00.250Z",
        reference="0xdef",
        method="tempo",
        external_id="ord-2",
        extensions={"units": 3},
    )
    r = parse_receipt(wire)
    assert (r.method, r.reference, r.status) == ("tempo", "0xdef", "success")
    assert r.timestamp_at() == NOW.replace(microsecond=250_000)
    assert r.fields == {"externalId": "ord-2", "units": 3}
