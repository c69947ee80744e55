"""Interop with the official TypeScript SDK, mppx 0.11 (npm), run under Node as a peer.

One long-lived peer process per module (tests/interop/mppx_peer.mjs, JSON lines over
stdin/stdout), stopped through its handle. Under CI (CI=true) a missing node or mppx fails
instead of skipping. This module also hosts the peer helper the other mppx test modules import.

Rows: CORE-01..04, 11, 12, 13, 18, 19, 22, 23, 32, 33; SES-33 (session receipt shape);
AMB-18 (the optional `header` slot before `opaque`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
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
    check_content_digest,
    content_digest,
    encode_json_b64,
    parse_challenge,
    parse_challenges,
    parse_credential,
    parse_receipt,
)
from mpp.core.encoding import encode_opaque
from tests.core.helpers import NOW, REALM, REQUEST, SECRET

ROOT = Path(__file__).resolve().parents[2]
PEER_SCRIPT = Path(__file__).with_name("mppx_peer.mjs")
MPPX_DIR = ROOT / "node_modules" / "mppx"
PEER_TIMEOUT = 20.0  # seconds for one answer (signing and parsing take milliseconds)


# --- the peer -------------------------------------------------------------------------------------


class PeerError(Exception):
    """The peer answered {"ok": false}: mppx refused the input."""


def node_or_skip() -> str:
    """The node binary with mppx installed; skip locally, fail under CI, when missing."""
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not on PATH"
    elif not (MPPX_DIR / "package.json").is_file():
        missing = f"mppx is not installed at {MPPX_DIR} (run scripts/setup.sh)"
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(missing)
        pytest.skip(missing)
    assert node is not None
    return node


class MppxPeer:
    """A running mppx_peer.mjs; `call` sends one op and waits (bounded) for its answer."""

    def __init__(self, node: str) -> None:
        self.proc = subprocess.Popen(
            [node, str(PEER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=str(ROOT),
        )

    def call(self, op: str, **message: Any) -> Any:
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        if proc.poll() is not None:
            raise RuntimeError(f"mppx peer exited with {proc.returncode}")
        proc.stdin.write(json.dumps({"op": op, **message}) + "\n")
        proc.stdin.flush()
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(proc.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(PEER_TIMEOUT)
        if not answer or not answer[0]:
            self.stop()
            raise RuntimeError(f"mppx peer gave no answer to {op!r}")
        reply = json.loads(answer[0])
        if not reply["ok"]:
            raise PeerError(reply["error"])
        return reply["result"]

    def stop(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            assert proc.stdin is not None
            try:
                proc.stdin.close()
                proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
                proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def start_peer() -> Iterator[MppxPeer]:
    """Body of a peer fixture: start, check the version, always stop."""
    peer = MppxPeer(node_or_skip())
    try:
        assert peer.call("version") == "0.11.0"
        yield peer
    finally:
        peer.stop()


@pytest.fixture(scope="module")
def mppx() -> Iterator[MppxPeer]:
    yield from start_peer()


# --- shared values --------------------------------------------------------------------------------

DIGEST = content_digest(b'{"hello": "world"}')
EXPIRES = "2026-03-01T12:05:00.000Z"
VARIANTS: list[dict[str, Any]] = [
    {},
    {"expires": EXPIRES},
    {"digest": DIGEST},
    {"opaque": {"order": "42", "z": "ü"}},
    {"header": "Payment-Authorization"},
    {"expires": EXPIRES, "digest": DIGEST, "opaque": {"order": "42"}, "header": "X-Pay"},
]
REQUESTS: list[dict[str, Any]] = [
    REQUEST,
    {
        "amount": "25",
        "currency": "0x20c0000000000000000000000000000000000000",
        "recipient": "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
        "unitType": "llm_token",
        "suggestedDeposit": "1000000",
        "methodDetails": {
            "escrowContract": "0x5fbdb2315678afecb367f032d93f642f64180aa3",
            "chainId": 31337,
            "feePayer": False,
            "sessionProtocol": "v1",
        },
    },
    {"b": [1, 2, {"z": None, "a": False}], "a": 'x\ny"\\', "é": "☕ <&>", "n": -7},
]
REQUEST_IDS = ["charge", "session", "escapes"]


def _variant_ids(v: dict[str, Any]) -> str:
    return "+".join(v) or "minimal"


def _mppx_params(variant: dict[str, Any]) -> dict[str, Any]:
    """Our variant spelled for mppx: `opaque` travels as its base64url wire string."""
    out = dict(variant)
    if "opaque" in out:
        out["opaque"] = encode_opaque(out["opaque"])
    return out


# --- challenge ids (CORE-18/19, AMB-18) -----------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_ids)
@pytest.mark.parametrize("request_", REQUESTS, ids=REQUEST_IDS)
def test_core_18_same_challenge_id(
    mppx: MppxPeer, variant: dict[str, Any], request_: dict[str, Any]
) -> None:
    """CORE-18/19, AMB-18: mppx and we compute the same HMAC id over the same slots."""
    kw = {"realm": REALM, "method": "tempo", "intent": "session", "request": request_}
    theirs = mppx.call("challenge_id", secret=SECRET, **kw, **_mppx_params(variant))
    assert challenge_id(SECRET, **kw, **variant) == theirs


def test_core_18_cross_sdk_vector(mppx: MppxPeer) -> None:
    """CORE-18: the reference vector (7 slots, empty optional ones) gives one id in both."""
    kw = {"realm": REALM, "method": "tempo", "intent": "charge", "request": {"amount": "1000000"}}
    ours = challenge_id(SECRET, **kw)
    assert mppx.call("challenge_id", secret=SECRET, **kw) == ours
    # mppx's `meta` (a flat string map) serializes to the same opaque wire string as ours.
    meta = {"order": "42", "a": "ü"}
    assert mppx.call("challenge_id", secret=SECRET, meta=meta, **kw) == challenge_id(
        SECRET, opaque=meta, **kw
    )


# --- challenges both ways (CORE-01..04, 11, 12) ---------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_ids)
def test_core_01_our_challenges_parse_and_verify_in_mppx(
    mppx: MppxPeer, variant: dict[str, Any]
) -> None:
    """CORE-01/11/12/19: mppx parses our header and its verify() accepts our HMAC id."""
    ours = ChallengeIssuer(SECRET, realm=REALM).issue(
        method="tempo",
        intent="session",
        request=REQUESTS[1],
        now=NOW,
        description='Pay "1" C:\\tempo, ok',
        digest=variant.get("digest"),
        opaque=variant.get("opaque"),
        header=variant.get("header"),
    )
    got = mppx.call("parse_challenge", header=ours.to_header(), secret=SECRET)
    theirs = got["challenge"]
    assert got["verified"] is True
    assert (theirs["id"], theirs["realm"], theirs["method"], theirs["intent"]) == (
        ours.id,
        REALM,
        "tempo",
        "session",
    )
    assert theirs["request"] == ours.request and theirs["request_b64"] == ours.request_b64
    assert theirs["expires"] == ours.expires
    assert theirs.get("digest") == ours.digest
    assert theirs["description"] == ours.description
    assert theirs.get("opaque") == ours.opaque_b64
    assert theirs.get("header") == ours.header


@pytest.mark.parametrize("variant", VARIANTS, ids=_variant_ids)
@pytest.mark.parametrize("request_", REQUESTS, ids=REQUEST_IDS)
def test_core_01_mppx_challenges_parse_and_verify_in_ours(
    mppx: MppxPeer, variant: dict[str, Any], request_: dict[str, Any]
) -> None:
    """CORE-01/11/19: we parse mppx's header; its id verifies under our binding."""
    params = {"expires": EXPIRES, **_mppx_params(variant)}
    out = mppx.call(
        "create_challenge",
        secret=SECRET,
        realm=REALM,
        method="tempo",
        intent="session",
        request=request_,
        description='say "hi" \\ ok',
        **params,
    )
    c = parse_challenge(out["header"])
    theirs = out["challenge"]
    assert (c.id, c.realm, c.method, c.intent) == (theirs["id"], REALM, "tempo", "session")
    assert c.request == request_ and c.request_b64 == encode_json_b64(request_)
    assert c.description == 'say "hi" \\ ok'
    assert c.expires == EXPIRES and c.digest == variant.get("digest")
    assert c.opaque == variant.get("opaque") and c.header == variant.get("header")
    ChallengeIssuer(SECRET, realm=REALM).check_binding(c, now=NOW)
    assert parse_challenge(c.to_header()) == c


def test_core_04_lists_both_ways(mppx: MppxPeer) -> None:
    """CORE-04: several challenges in one field value, mixed with another scheme."""
    issuer = ChallengeIssuer(SECRET, realm=REALM)
    a = issuer.issue(method="tempo", intent="session", request=REQUESTS[1], now=NOW)
    b = issuer.issue(method="tempo", intent="charge", request=REQUEST, now=NOW, description="a, b")
    joined = f'Bearer realm="x", {a.to_header()}, {b.to_header()}'
    got = mppx.call("parse_challenges", header=joined)
    assert [g["id"] for g in got] == [a.id, b.id]
    assert got[1]["description"] == "a, b"

    headers = [
        mppx.call(
            "create_challenge",
            secret=SECRET,
            realm=REALM,
            method="tempo",
            intent=intent,
            request=REQUEST,
            expires=EXPIRES,
        )["header"]
        for intent in ("session", "charge")
    ]
    parsed = parse_challenges(", ".join(headers))
    assert [c.intent for c in parsed] == ["session", "charge"]
    for c in parsed:
        issuer.check_binding(c, now=NOW)


def test_core_03_non_latin1_descriptions_both_ways(mppx: MppxPeer) -> None:
    """CORE-03: text above U+00FF travels as `\\uXXXX` escapes (mppx's convention, also ours).

    Covers a BMP character, a surrogate pair (emoji) and Latin-1; the id stays valid (CORE-15).
    """
    text = 'café — ☕ 🚀 "q" \\'
    out = mppx.call(
        "create_challenge",
        secret=SECRET,
        realm=REALM,
        method="tempo",
        intent="charge",
        request=REQUEST,
        expires=EXPIRES,
        description=text,
    )
    assert "\\u2014" in out["header"]
    c = parse_challenge(out["header"])
    assert c.description == text
    ChallengeIssuer(SECRET, realm=REALM).check_binding(c, now=NOW)

    ours = ChallengeIssuer(SECRET, realm=REALM).issue(
        method="tempo", intent="charge", request=REQUEST, now=NOW, description=text
    )
    got = mppx.call("parse_challenge", header=ours.to_header(), secret=SECRET)
    assert got["challenge"]["description"] == text and got["verified"] is True


def test_core_13_body_digest_forms(mppx: MppxPeer) -> None:
    """CORE-13 finding: mppx writes `sha-256=<b64>` (no RFC 9530 colons); we accept both forms.

    mppx's BodyDigest.verify compares strings, so it would not accept our `sha-256=:<b64>:`.
    """
    body = '{"hello": "world"}'
    theirs = mppx.call("body_digest", body=body)
    assert theirs == "sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
    assert check_content_digest(theirs, body.encode())
    assert content_digest(body.encode()) == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"


# --- credentials (CORE-22/23) ---------------------------------------------------------------------

PAYLOADS: list[dict[str, Any]] = [
    {
        "action": "voucher",
        "channelId": "0x" + "ab" * 32,
        "cumulativeAmount": "340282366920938463463374607431768211455",
        "signature": "0x" + "cd" * 65,
    },
    {"type": "transaction", "signature": "0x76" + "00" * 40, "n": [1, {"x": None}], "é": "☕"},
]
SOURCE = "did:pkh:eip155:31337:0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def _our_challenge(variant: dict[str, Any]) -> Challenge:
    return ChallengeIssuer(SECRET, realm=REALM).issue(
        method="tempo",
        intent="session",
        request=REQUESTS[1],
        now=NOW,
        description="stream",
        digest=variant.get("digest"),
        opaque=variant.get("opaque"),
        header=variant.get("header"),
    )


@pytest.mark.parametrize("payload", PAYLOADS, ids=["voucher", "nested"])
@pytest.mark.parametrize("variant", VARIANTS[2:], ids=_variant_ids)
def test_core_22_our_credentials_parse_in_mppx(
    mppx: MppxPeer, variant: dict[str, Any], payload: dict[str, Any]
) -> None:
    """CORE-22/23: mppx reads our credential; the echo verifies under its HMAC check."""
    cred = Credential(_our_challenge(variant), payload, source=SOURCE)
    got = mppx.call("parse_credential", header=cred.to_header())
    assert got["payload"] == payload and got["source"] == SOURCE
    echo = got["challenge"]
    assert echo["id"] == cred.challenge.id and echo["request_b64"] == cred.challenge.request_b64
    assert echo.get("opaque") == cred.challenge.opaque_b64
    assert echo.get("header") == cred.challenge.header
    assert mppx.call("verify_challenge", challenge=echo, secret=SECRET) is True


@pytest.mark.parametrize("payload", PAYLOADS, ids=["voucher", "nested"])
@pytest.mark.parametrize("variant", VARIANTS[2:], ids=_variant_ids)
def test_core_22_mppx_credentials_verify_in_ours(
    mppx: MppxPeer, variant: dict[str, Any], payload: dict[str, Any]
) -> None:
    """CORE-19/22/23: an mppx credential answering our challenge passes our binding check.

    The challenge goes out as our WWW-Authenticate value; mppx parses it and builds the credential
    exactly as its clients do; our server-side parser and issuer accept the echo.
    """
    ours = _our_challenge(variant)
    wire = mppx.call("serialize_credential", challenge=ours.to_header(), payload=payload,
                     source=SOURCE)  # fmt: skip
    cred = parse_credential(wire)
    assert cred.payload == payload and cred.source == SOURCE
    assert cred.challenge == ours
    ChallengeIssuer(SECRET, realm=REALM).verify(
        cred.challenge,
        method="tempo",
        intent="session",
        request=REQUESTS[1],
        now=NOW,
        body=b'{"hello": "world"}',
    )


# --- receipts (CORE-32/33, SES-33) ----------------------------------------------------------------


def test_core_32_receipts_both_ways(mppx: MppxPeer) -> None:
    """CORE-32: receipts with method fields cross in both directions, unknown fields kept."""
    ours = Receipt.success(
        method="tempo", reference="0xabc", timestamp=NOW, externalId="ord-1", extra={"a": [1]}
    )
    got = mppx.call("parse_receipt", header=ours.to_header())
    assert got == ours.to_json()

    theirs = {
        "method": "tempo",
        "reference": "0xdef",
        "status": "success",
        "timestamp": "2026-03-01T12:00:00.250Z",
        "externalId": "ord-2",
        "units": 3,
    }
    r = parse_receipt(mppx.call("serialize_receipt", receipt=theirs))
    assert (r.method, r.reference, r.status) == ("tempo", "0xdef", "success")
    assert r.timestamp_at() == NOW.replace(microsecond=250_000)
    assert r.fields == {"externalId": "ord-2", "units": 3}


def test_ses_33_session_receipt_passes_mppx_strict_check(mppx: MppxPeer) -> None:
    """SES-33: our session receipt satisfies the guard mppx's session client applies to every
    Payment-Receipt (intent, challengeId, string amounts, numeric `units`, string `txHash`)."""
    cid = "0x" + "ab" * 32
    base = {
        "intent": "session",
        "challengeId": "abc",
        "channelId": cid,
        "acceptedCumulative": "250",
        "spent": "225",
    }
    for extra in ({}, {"units": 9}, {"txHash": "0x" + "12" * 32}):
        ours = Receipt.success(
            method="tempo", reference=cid, timestamp=NOW, **base, **extra
        ).to_header()
        got = mppx.call("parse_session_receipt", header=ours)
        assert got["spent"] == "225" and got["channelId"] == cid
    # A string `units` (or a missing intent) is what mppx rejects: guard our own shape.
    bad = Receipt.success(method="tempo", reference=cid, timestamp=NOW, **base, units="9")
    with pytest.raises(PeerError, match="Invalid session receipt"):
        mppx.call("parse_session_receipt", header=bad.to_header())
