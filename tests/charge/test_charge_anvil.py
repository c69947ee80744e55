"""tempo charge on anvil in Tempo mode: real 0x76 transfers of pathUSD, a real SQLite store.

One test per CHG rule, named by its row: pull and push payments, replay of a credential and of
a transaction across challenges, wrong recipient/amount/token/memo, splits, an expired
transaction window, a reverted transaction, `hash` with `feePayer`, zero-amount proofs, and
concurrent duplicates (exactly one success).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from mpp.chain.devnet import Devnet
from mpp.charge import ChargePayer, ChargeServer, ChargeTerms, Split
from mpp.core.binding import ChallengeIssuer
from mpp.core.credential import Credential
from mpp.core.errors import InvalidChallenge, MalformedCredential, VerificationFailed
from mpp.session.payer import Payer
from mpp.session.policy import PolicyViolation, SpendingPolicy
from mpp.store.sqlite import SqliteStore

TOKEN = "0x20c0000000000000000000000000000000000000"
OTHER_TOKEN = "0x20c0000000000000000000000000000000000001"
MEMO = "0x" + "ab" * 32
ISSUER = ChallengeIssuer(
    b"charge-secret-0123456789abcdef-0123456789", realm="shop.test", clock=lambda: datetime.now(UTC)
)


@dataclasses.dataclass
class Shop:
    devnet: Devnet
    server: ChargeServer
    payer: ChargePayer
    payee: str
    split_to: str
    tmp: Path

    def terms(self, **kw: Any) -> ChargeTerms:
        base: dict[str, Any] = dict(
            amount=1_000, currency=TOKEN, recipient=self.payee, chain_id=self.devnet.chain_id
        )
        base.update(kw)
        return ChargeTerms(**base)

    def credential(
        self,
        terms: ChargeTerms,
        *,
        mode: str = "pull",
        payload: dict[str, Any] | None = None,
        asked: ChargeTerms | None = None,
    ) -> tuple[Credential, int]:
        """A challenge for `asked` (default: `terms`) and a payload that pays `terms`."""
        request = (asked or terms).to_request()
        challenge = ISSUER.issue(
            method="tempo", intent="charge", request=request, now=datetime.now(UTC)
        )
        expires = challenge.expires_at()
        assert expires is not None
        unix = int(expires.timestamp())
        if payload is None:
            payload = self.payer.payload(
                terms, challenge_id=challenge.id, expires=unix, realm=challenge.realm, mode=mode
            )
        return Credential(challenge, payload, source=self.payer.did(terms)), unix

    def balance(self, who: str) -> int:
        return self.devnet.chain().balance_of(TOKEN, who)


@pytest.fixture
def shop(
    devnet_clean: Devnet, payer: LocalAccount, payee: LocalAccount, sponsor: LocalAccount,
    other_account: LocalAccount, tmp_path: Path,
) -> Iterator[Shop]:  # fmt: skip
    chain = devnet_clean.chain()
    store = SqliteStore(str(tmp_path / "shop.db"))
    server = ChargeServer(store, chain, fee_payer_key="0x" + sponsor.key.hex(), fee_token=TOKEN)
    session_payer = Payer(
        "0x" + payer.key.hex(), records_path=tmp_path / "payer.db", chain=devnet_clean.chain(),
        policy=SpendingPolicy(),
    )  # fmt: skip
    broadcast = devnet_clean.chain().send_raw_transaction
    charge_payer = ChargePayer(session_payer, max_amount=10**6, broadcast=broadcast)
    try:
        yield Shop(devnet_clean, server, charge_payer, payee.address.lower(),
                   other_account.address.lower(), tmp_path)  # fmt: skip
    finally:
        store.close()


@pytest.mark.parametrize("fee_payer", [False, True])
def test_chg_07_chg_10_pull_transaction_pays_once_and_receipts(shop: Shop, fee_payer: bool) -> None:
    """CHG-07, and CHG-10 when sponsored: the payer signs with the placeholder, the server
    co-signs as fee payer and pays the fee; the payee gets the whole amount either way."""
    terms = shop.terms(fee_payer=fee_payer, external_id="order-7")
    before = shop.balance(shop.payee)
    cred, expires = shop.credential(terms)
    charged = shop.server.verify(cred, terms, expires=expires)
    assert shop.balance(shop.payee) == before + 1_000
    receipt = charged.receipt  # CHG-11
    assert receipt["method"] == "tempo" and receipt["status"] == "success"
    assert receipt["reference"].startswith("0x") and len(receipt["reference"]) == 66
    assert receipt["externalId"] == "order-7" and receipt["challengeId"] == cred.challenge.id
    assert charged.payer == shop.payer.payer.address


def test_chg_03_replayed_credential_is_refused(shop: Shop) -> None:
    terms = shop.terms()
    cred, expires = shop.credential(terms)
    shop.server.verify(cred, terms, expires=expires)
    with pytest.raises(InvalidChallenge):
        shop.server.verify(cred, terms, expires=expires)


def test_chg_17_one_transaction_hash_cannot_pay_two_challenges(shop: Shop) -> None:
    terms = shop.terms()
    first, expires = shop.credential(terms, mode="push")
    shop.server.verify(first, terms, expires=expires)
    second, expires = shop.credential(terms, payload=first.payload)  # another challenge
    with pytest.raises(VerificationFailed, match="already used"):
        shop.server.verify(second, terms, expires=expires)
    third, expires = shop.credential(terms)  # that challenge is still free for a real payment
    shop.server.verify(third, terms, expires=expires)


def test_chg_08_push_hash_is_checked_against_the_logs(shop: Shop) -> None:
    terms = shop.terms(memo=MEMO)
    cred, expires = shop.credential(terms, mode="push")
    charged = shop.server.verify(cred, terms, expires=expires)
    assert charged.receipt["reference"] == cred.payload["hash"]
    # The same hash offered for a larger amount pays nothing more.
    bigger = shop.terms(amount=2_000)
    cred2, expires = shop.credential(bigger, payload={"type": "hash", "hash": cred.payload["hash"]})
    with pytest.raises(VerificationFailed):
        shop.server.verify(cred2, bigger, expires=expires)


def test_chg_08_hash_with_fee_payer_is_refused(shop: Shop) -> None:
    plain = shop.terms()
    pushed, _ = shop.credential(plain, mode="push")
    sponsored = shop.terms(fee_payer=True)
    cred, expires = shop.credential(sponsored, payload=pushed.payload)
    with pytest.raises(VerificationFailed, match="feePayer"):
        shop.server.verify(cred, sponsored, expires=expires)
    with pytest.raises(PolicyViolation):  # and our client never tries
        shop.payer.payload(sponsored, challenge_id="x", expires=None, realm="r", mode="push")


def test_chg_05_supported_modes_are_enforced(shop: Shop) -> None:
    pull_only = shop.terms(supported_modes=("pull",))
    pushed, _ = shop.credential(shop.terms(), mode="push")
    cred, expires = shop.credential(pull_only, payload=pushed.payload)
    with pytest.raises(VerificationFailed, match="does not accept hash"):
        shop.server.verify(cred, pull_only, expires=expires)
    push_only = shop.terms(supported_modes=("push",))
    cred, expires = shop.credential(push_only)  # our client switches to push
    assert cred.payload["type"] == "hash"
    shop.server.verify(cred, push_only, expires=expires)


@pytest.mark.parametrize(
    "wrong",
    [
        {"recipient": "0x" + "77" * 20},
        {"amount": 999},
        {"currency": OTHER_TOKEN},
        {"memo": MEMO},
    ],
    ids=["recipient", "amount", "token", "memo"],
)
def test_chg_07_wrong_transfer_is_refused_before_broadcast(
    shop: Shop, wrong: dict[str, Any]
) -> None:
    asked = shop.terms()
    paid = dataclasses.replace(asked, **wrong)
    if "memo" in wrong:  # the challenge asks for a memo; the payer pays without one
        asked, paid = paid, asked
    cred, expires = shop.credential(paid, asked=asked)
    before = shop.balance(shop.payee)
    with pytest.raises(VerificationFailed):
        shop.server.verify(cred, asked, expires=expires)
    assert shop.balance(shop.payee) == before  # nothing was broadcast


def test_chg_06_splits_pay_each_recipient(shop: Shop) -> None:
    terms = shop.terms(splits=(Split(shop.split_to, 300, MEMO),))
    before = (shop.balance(shop.payee), shop.balance(shop.split_to))
    cred, expires = shop.credential(terms)
    shop.server.verify(cred, terms, expires=expires)
    assert shop.balance(shop.payee) == before[0] + 700
    assert shop.balance(shop.split_to) == before[1] + 300
    pushed_terms = shop.terms(splits=(Split(shop.split_to, 100),))
    cred, expires = shop.credential(pushed_terms, mode="push")
    shop.server.verify(cred, pushed_terms, expires=expires)
    # A transaction that pays only the primary does not satisfy a split.
    plain, expires = shop.credential(shop.terms(amount=900))
    with pytest.raises(VerificationFailed):
        shop.server.verify(plain, pushed_terms, expires=expires)


def test_chg_06_splits_summing_to_the_amount_are_refused() -> None:
    with pytest.raises(ValueError, match="less than amount"):
        ChargeTerms(amount=100, currency=TOKEN, recipient="0x" + "11" * 20,
                    splits=(Split("0x" + "22" * 20, 100),))  # fmt: skip


def test_chg_07_transaction_valid_after_the_challenge_expires_is_refused(shop: Shop) -> None:
    terms = shop.terms()
    cred, expires = shop.credential(terms)
    with pytest.raises(VerificationFailed, match="after the challenge expires"):
        shop.server.verify(cred, terms, expires=expires - 3_600)


def test_chg_07_reverted_transaction_fails_and_frees_the_challenge(shop: Shop) -> None:
    poor = Payer("0x" + "5a" * 32, records_path=shop.tmp / "poor.db",
                 chain=shop.devnet.chain(), policy=SpendingPolicy())  # fmt: skip
    broke = ChargePayer(poor)
    terms = shop.terms(amount=10**6, fee_payer=True)  # the sponsor pays the fee, not the payer
    challenge = ISSUER.issue(method="tempo", intent="charge", request=terms.to_request())
    payload = broke.payload(terms, challenge_id=challenge.id, expires=None, realm=challenge.realm)
    cred = Credential(challenge, payload, source=broke.did(terms))
    with pytest.raises(VerificationFailed, match=r"reverted|refused"):
        shop.server.verify(cred, terms)  # no balance to transfer
    assert shop.server.store.get_idempotent("charge-challenge", challenge.id) is None


def test_chg_09_zero_amount_is_paid_with_a_proof(shop: Shop) -> None:
    terms = shop.terms(amount=0)
    cred, expires = shop.credential(terms)
    assert cred.payload["type"] == "proof"
    other_chain = dataclasses.replace(cred, source=f"did:pkh:eip155:1:{shop.payer.payer.address}")
    with pytest.raises(VerificationFailed):
        shop.server.verify(other_chain, terms, expires=expires)
    stranger = dataclasses.replace(cred, source=shop.payer.did(terms)[:-40] + "11" * 20)
    with pytest.raises(VerificationFailed, match="not signed by its source"):
        shop.server.verify(stranger, terms, expires=expires)
    with pytest.raises(MalformedCredential):  # a transaction never pays a zero charge
        shop.server.verify(
            dataclasses.replace(cred, payload={"type": "transaction", "signature": "0x76"}), terms
        )
    charged = shop.server.verify(cred, terms, expires=expires)  # failures left it unused
    assert charged.receipt["reference"] == cred.challenge.id
    assert charged.payer == shop.payer.payer.address


def test_chg_18_concurrent_duplicates_one_success(shop: Shop) -> None:
    terms = shop.terms()
    cred, expires = shop.credential(terms)
    before = shop.balance(shop.payee)
    results: list[str] = []

    def attempt() -> None:
        try:
            shop.server.verify(cred, terms, expires=expires)
            results.append("ok")
        except (InvalidChallenge, VerificationFailed) as exc:
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count("ok") == 1 and len(results) == 4
    assert shop.balance(shop.payee) == before + 1_000


def test_chg_04_client_checks_the_request_before_signing(shop: Shop) -> None:
    with pytest.raises(PolicyViolation, match="per-request maximum"):
        shop.payer.payload(shop.terms(amount=10**7), challenge_id="x", expires=None, realm="r")
