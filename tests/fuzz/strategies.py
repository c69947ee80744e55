"""Hypothesis strategies shared by the fuzz tests: seed corpora and mutators.

The seeds are well-formed values produced by our own codec (challenges, credentials, receipts,
Accept-Payment); the mutators damage them at the character level (insert / delete / replace /
duplicate / truncate, biased towards the grammar's special characters) or at the JSON level
(replace any node of a credential with an arbitrary JSON value, drop keys, re-encode).
`FUZZ_EXAMPLES` (env `MPP_FUZZ_EXAMPLES`) scales every fuzz test.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any, Final

from hypothesis import strategies as st

from mpp.core import ChallengeIssuer, Credential, Receipt, b64url_encode, content_digest

FUZZ_EXAMPLES: Final = int(os.environ.get("MPP_FUZZ_EXAMPLES", "250"))

SECRET: Final = "fuzz-secret-that-is-at-least-32-bytes-long"
REALM: Final = "fuzz.example"
NOW: Final = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CHANNEL_ID: Final = "0x" + "ab" * 32
SESSION_REQUEST: Final[dict[str, Any]] = {
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
}
ISSUER: Final = ChallengeIssuer(SECRET, realm=REALM)

# Characters the grammar cares about, plus ones that trip decoders.
SPECIAL: Final = [
    '"', "\\", ",", "=", " ", "\t", ";", "/", "*", ":", "-", "_", "+", "{", "}", "[", "]",
    "\x00", "\r", "\n", "\x7f", "é", "\u2014", "\ud800", "\U0001f680", "\\u", "\\ud83d",
    "Payment ", "payment ", "Bearer ", "id=", "request=", "=\"", "e30", "q=", "0x", "%",
]  # fmt: skip
TOKENS: Final = ["", "0", "-1", "1e3", "null", "true", "[]", "{}", '"', "\\", "é", "\x00"]


def _payloads() -> list[dict[str, Any]]:
    sig = "0x" + "cd" * 64 + "1b"
    return [
        {"action": "voucher", "channelId": CHANNEL_ID, "cumulativeAmount": "50", "signature": sig},
        {"action": "close", "channelId": CHANNEL_ID, "cumulativeAmount": "25", "signature": sig},
        {
            "action": "open",
            "type": "transaction",
            "channelId": CHANNEL_ID,
            "transaction": "0x76" + "00" * 60,
            "authorizedSigner": "0x" + "11" * 20,
            "cumulativeAmount": "1",
            "signature": sig,
        },
        {
            "action": "topUp",
            "type": "transaction",
            "channelId": CHANNEL_ID,
            "transaction": "0x76" + "00" * 60,
            "additionalDeposit": "1000",
        },
    ]


def _seed_challenges() -> list[str]:
    out = []
    for i, extra in enumerate(
        [
            {},
            {"digest": content_digest(b"{}")},
            {"opaque": {"order": "42"}},
            {"header": "Payment-Authorization", "description": 'say "hi" \\ — ☕'},
        ]
    ):
        intent = "session" if i % 2 == 0 else "charge"
        c = ISSUER.issue(method="tempo", intent=intent, request=SESSION_REQUEST, now=NOW, **extra)
        out.append(c.to_header())
    out.append(f'Bearer realm="x", {out[0]}, Basic abc==, {out[1]}')
    out.append("Payment id=a, realm=r, method=tempo, intent=charge, request=e30")
    out.append("Payment abc.def==")
    return out


SEED_CHALLENGES: Final = _seed_challenges()
SEED_PAYLOADS: Final = _payloads()


def session_challenge() -> Any:
    return ISSUER.issue(method="tempo", intent="session", request=SESSION_REQUEST, now=NOW)


def seed_credential_json(payload: dict[str, Any] | None = None) -> dict[str, Any]:
    c = session_challenge()
    body = payload if payload is not None else SEED_PAYLOADS[0]
    cred = Credential(c, body, source="did:pkh:eip155:31337:0x" + "22" * 20)
    return cred.to_json()


SEED_CREDENTIALS: Final = [
    Credential(session_challenge(), p, source="did:pkh:eip155:31337:0x" + "22" * 20).to_header()
    for p in SEED_PAYLOADS
]
SEED_RECEIPTS: Final = [
    Receipt.success(
        method="tempo",
        reference=CHANNEL_ID,
        timestamp=NOW,
        intent="session",
        challengeId="x",
        channelId=CHANNEL_ID,
        acceptedCumulative="50",
        spent="25",
        units=1,
    ).to_header(),
    Receipt.success(method="tempo", reference="0x" + "12" * 32, timestamp=NOW).to_header(),
]
SEED_ACCEPT: Final = [
    "tempo/*, solana/*;q=0.6, */session;q=0.3",
    "tempo/session;q=0, */*;q=0.001",
    "*/*",
]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[str], max_ops: int = 6) -> str:
    """A seed damaged by 1..max_ops character-level edits."""
    s = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.integers(0, 6))
        pos = draw(st.integers(0, len(s)))
        if op == 0:  # insert a special piece
            s = s[:pos] + draw(st.sampled_from(SPECIAL)) + s[pos:]
        elif op == 1:  # insert arbitrary text
            s = s[:pos] + draw(st.text(max_size=4)) + s[pos:]
        elif op == 2:  # delete a range
            end = draw(st.integers(pos, min(len(s), pos + 12)))
            s = s[:pos] + s[end:]
        elif op == 3 and s:  # replace one character
            i = min(pos, len(s) - 1)
            s = s[:i] + draw(st.characters()) + s[i + 1 :]
        elif op == 4:  # duplicate a slice
            end = draw(st.integers(pos, min(len(s), pos + 40)))
            s = s[:end] + s[pos:end] + s[end:]
        elif op == 5:  # truncate
            s = s[:pos]
        else:  # swap case of a slice
            end = draw(st.integers(pos, min(len(s), pos + 10)))
            s = s[:pos] + s[pos:end].swapcase() + s[end:]
    return s


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
    | st.sampled_from(TOKENS)
    | st.sampled_from(["0x" + "ab" * 32, "0x" + "11" * 20, "0x" + "cd" * 65, "25", "-25", "1.5"])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out.extend(_paths(v, (*prefix, k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_paths(v, (*prefix, i)))
    return out


def _set(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        copy = dict(node)
        copy[head] = _set(node[head], rest, value)
        return copy
    copy_list = list(node)
    copy_list[head] = _set(node[head], rest, value)
    return copy_list


def _drop(node: Any, path: tuple[Any, ...]) -> Any:
    if len(path) == 1 and isinstance(node, dict):
        return {k: v for k, v in node.items() if k != path[0]}
    if len(path) == 1 and isinstance(node, list):
        return node[: path[0]] + node[path[0] + 1 :]
    if not path:
        return node
    head = path[0]
    if isinstance(node, dict):
        return {**node, head: _drop(node[head], path[1:])}
    return [*node[:head], _drop(node[head], path[1:]), *node[head + 1 :]]


@st.composite
def mutated_json(draw: st.DrawFn, seed: dict[str, Any], max_ops: int = 3) -> Any:
    """The seed with 1..max_ops nodes replaced by arbitrary JSON or dropped."""
    value: Any = seed
    for _ in range(draw(st.integers(1, max_ops))):
        paths = _paths(value)
        path = draw(st.sampled_from(paths))
        if path and draw(st.booleans()):
            value = _drop(value, path)
        else:
            value = _set(value, path, draw(json_values))
    return value


def to_credential_header(value: Any) -> str:
    """`Payment <b64url(JSON)>`, keeping lone surrogates and big numbers as JSON allows."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return "Payment " + b64url_encode(text.encode("utf-8"))


@st.composite
def mutated_credentials(draw: st.DrawFn) -> str:
    """A credential header whose JSON was mutated (structure-aware), or whose text was."""
    payload = draw(st.sampled_from(SEED_PAYLOADS))
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return to_credential_header(draw(mutated_json(seed_credential_json(payload))))
    if kind == 1:
        return draw(mutated(SEED_CREDENTIALS, max_ops=3))
    raw = draw(st.binary(max_size=200))
    return draw(st.sampled_from(["Payment ", "payment\t", "", "Payment  "])) + b64url_encode(raw)
