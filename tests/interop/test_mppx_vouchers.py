"""Legacy-session ("Tempo Stream Channel", uint128) vouchers: mppx 0.11 and ours agree.

Offline: channel ids, EIP-712 digests and signatures for chain id 31337 and an escrow address,
in both directions. On chain: a voucher mppx signs settles on our escrow (anvil, Tempo mode), and
the escrow's own views agree with mppx's digest and channel id.

Rows: SES-06 (channelId), SES-08 (domain), SES-09 (Voucher type), SES-10 (65-byte r||s||v,
v in {27,28}; 64-byte form), SES-11 (low-s), SES-24 (uint128), AMB-07.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator

import pytest
from eth_account import Account
from eth_utils import to_checksum_address

from mpp.chain.devnet import Devnet
from mpp.core.errors import InvalidSignature
from mpp.session.voucher import (
    MAX_AMOUNT,
    SECP256K1_N,
    InvalidAmount,
    channel_id,
    normalize_signature,
    recover_voucher_signer,
    sign_voucher,
    voucher_digest,
)
from tests.interop.test_mppx_codec import MppxPeer, PeerError, start_peer

CHAIN_ID = 31337
ESCROW = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
OTHER_ESCROW = "0xe7f1725e7734ce288f8367e1bb143e90bb3f0512"
ZERO = "0x" + "00" * 20
AMOUNTS = [0, 1, 25, 10**6, 2**64, MAX_AMOUNT]
KEYS = ["0x" + f"{i:064x}" for i in (1, 2, 0xDEADBEEF)] + [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
]


@pytest.fixture(scope="module")
def mppx() -> Iterator[MppxPeer]:
    yield from start_peer()


def _address(rng: random.Random) -> str:
    return to_checksum_address("0x" + rng.randbytes(20).hex())


def _channel_inputs(seed: int) -> dict[str, str]:
    rng = random.Random(seed)
    return {
        "payer": _address(rng),
        "payee": _address(rng),
        "token": "0x20C0000000000000000000000000000000000000",
        "salt": "0x" + rng.randbytes(32).hex(),
        "authorizedSigner": ZERO if seed % 2 else _address(rng),
    }


@pytest.mark.parametrize("seed", range(6))
def test_ses_06_channel_id_matches_mppx(mppx: MppxPeer, seed: int) -> None:
    """SES-06: keccak(abi.encode(payer, payee, token, salt, authorizedSigner, escrow, chainId))."""
    c = _channel_inputs(seed)
    for escrow in (ESCROW, OTHER_ESCROW):
        theirs = mppx.call("channel_id", escrow=escrow, chainId=CHAIN_ID, **c)
        ours = channel_id(
            c["payer"], c["payee"], c["token"], c["salt"], c["authorizedSigner"], escrow, CHAIN_ID
        )
        assert ours == theirs.lower()


@pytest.mark.parametrize("amount", AMOUNTS)
def test_ses_09_voucher_digest_matches_mppx(mppx: MppxPeer, amount: int) -> None:
    """SES-08/09: the EIP-712 Voucher digest for chain 31337 and our escrow, up to uint128 max."""
    cid = "0x" + random.Random(amount).randbytes(32).hex()
    for escrow in (ESCROW, OTHER_ESCROW):
        theirs = mppx.call(
            "voucher_digest",
            channelId=cid,
            cumulativeAmount=str(amount),
            escrow=escrow,
            chainId=CHAIN_ID,
        )
        ours = voucher_digest(cid, amount, chain_id=CHAIN_ID, escrow=escrow)
        assert "0x" + ours.hex() == theirs


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("amount", [1, 250_025, MAX_AMOUNT])
def test_ses_10_mppx_signatures_recover_in_ours(mppx: MppxPeer, key: str, amount: int) -> None:
    """SES-10/11: mppx's legacy voucher signatures recover to its signer with our fast path."""
    cid = "0x" + random.Random(key).randbytes(32).hex()
    got = mppx.call(
        "sign_voucher",
        privateKey=key,
        channelId=cid,
        cumulativeAmount=str(amount),
        escrow=ESCROW,
        chainId=CHAIN_ID,
    )
    signer = got["signer"].lower()
    assert signer == Account.from_key(key).address.lower()
    sig = got["signature"]
    assert len(sig) == 2 + 130 and int(sig[-2:], 16) in (27, 28)
    assert recover_voucher_signer(cid, amount, sig, chain_id=CHAIN_ID, escrow=ESCROW) == signer
    # Both sides sign deterministically (RFC 6979, low-s): the bytes are identical.
    assert sign_voucher(key, cid, amount, chain_id=CHAIN_ID, escrow=ESCROW) == sig
    # Bound to the domain: another escrow or chain recovers someone else.
    for escrow, chain in ((OTHER_ESCROW, CHAIN_ID), (ESCROW, CHAIN_ID + 1)):
        assert recover_voucher_signer(cid, amount, sig, chain_id=chain, escrow=escrow) != signer


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("amount", [0, 1, 2**100])
def test_ses_10_our_signatures_verify_in_mppx(mppx: MppxPeer, key: str, amount: int) -> None:
    """SES-08/10: mppx's verifyVoucher accepts ours, and only for the signed domain."""
    cid = "0x" + random.Random(amount).randbytes(32).hex()
    sig = sign_voucher(key, cid, amount, chain_id=CHAIN_ID, escrow=ESCROW)
    signer = Account.from_key(key).address

    def verify(**over: object) -> bool:
        m: dict[str, object] = {
            "channelId": cid,
            "cumulativeAmount": str(amount),
            "signature": sig,
            "escrow": ESCROW,
            "chainId": CHAIN_ID,
            "signer": signer,
        }
        m.update(over)
        return bool(mppx.call("verify_voucher", **m))

    assert verify() is True
    assert verify(escrow=to_checksum_address(OTHER_ESCROW)) is False
    assert verify(chainId=CHAIN_ID + 1) is False
    assert verify(cumulativeAmount=str(amount + 1)) is False
    assert verify(signer=to_checksum_address(ESCROW)) is False


def _malleate(sig: str) -> str:
    raw = bytes.fromhex(sig[2:])
    s = int.from_bytes(raw[32:64], "big")
    v = raw[64]
    return "0x" + raw[:32].hex() + (SECP256K1_N - s).to_bytes(32, "big").hex() + f"{55 - v:02x}"


def _compact(sig: str) -> str:
    raw = bytes.fromhex(sig[2:])
    vs = int.from_bytes(raw[32:64], "big") | ((raw[64] - 27) << 255)
    return "0x" + raw[:32].hex() + vs.to_bytes(32, "big").hex()


def test_ses_11_high_s_refused_by_us_accepted_by_mppx(mppx: MppxPeer) -> None:
    """SES-11/AMB-07 finding: the malleated twin (s' = n - s, v' = 55 - v) of a voucher.

    We refuse it (the spec's server MUST; our escrow refuses it on chain too, see the on-chain
    test). mppx 0.11's verifyVoucher accepts it: its server side is malleable here.
    """
    cid = "0x" + "11" * 32
    key = KEYS[-1]
    sig = sign_voucher(key, cid, 7, chain_id=CHAIN_ID, escrow=ESCROW)
    high = _malleate(sig)
    with pytest.raises(InvalidSignature, match="high-s"):
        recover_voucher_signer(cid, 7, high, chain_id=CHAIN_ID, escrow=ESCROW)
    signer = Account.from_key(key).address
    common = {"channelId": cid, "cumulativeAmount": "7", "escrow": ESCROW, "chainId": CHAIN_ID}
    assert mppx.call("verify_voucher", signature=high, signer=signer, **common) is True


def test_ses_10_compact_signature_policy(mppx: MppxPeer) -> None:
    """SES-10/AMB-07: a 64-byte EIP-2098 voucher: we accept it (normalized to 65 bytes); mppx's
    verifyVoucher insists on the canonical 65-byte form. Both accept the normalized form."""
    cid = "0x" + "22" * 32
    key = KEYS[0]
    sig = sign_voucher(key, cid, 9, chain_id=CHAIN_ID, escrow=ESCROW)
    compact = _compact(sig)
    signer = Account.from_key(key).address
    assert recover_voucher_signer(cid, 9, compact, chain_id=CHAIN_ID, escrow=ESCROW) == (
        signer.lower()
    )
    assert normalize_signature(compact) == sig
    common = {"channelId": cid, "cumulativeAmount": "9", "escrow": ESCROW, "chainId": CHAIN_ID}
    assert mppx.call("verify_voucher", signature=compact, signer=signer, **common) is False
    assert mppx.call("verify_voucher", signature=sig, signer=signer, **common) is True


def test_ses_24_amount_above_uint128_refused_by_both(mppx: MppxPeer) -> None:
    """SES-24: 2^128 does not fit the Voucher type; neither side signs it."""
    cid = "0x" + "33" * 32
    with pytest.raises(InvalidAmount):
        sign_voucher(KEYS[0], cid, MAX_AMOUNT + 1, chain_id=CHAIN_ID, escrow=ESCROW)
    with pytest.raises(PeerError):
        mppx.call(
            "sign_voucher",
            privateKey=KEYS[0],
            channelId=cid,
            cumulativeAmount=str(MAX_AMOUNT + 1),
            escrow=ESCROW,
            chainId=CHAIN_ID,
        )


# --- on chain: our escrow verifies mppx's vouchers ------------------------------------------------


def test_ses_09_mppx_voucher_settles_on_our_escrow(mppx: MppxPeer, devnet_clean: Devnet) -> None:
    """SES-06/08/09/10 on chain: the escrow's computeChannelId and getVoucherDigest equal mppx's,
    and a voucher mppx signs for chain 31337 and our escrow address settles (then closes)."""
    devnet = devnet_clean
    assert devnet.chain_id == CHAIN_ID
    payer, payee = devnet.new_accounts(2)
    payer_chain = devnet.chain(payer)
    payee_chain = devnet.chain(payee)
    salt = "0x" + os.urandom(32).hex()
    cid, _ = payer_chain.open_channel(
        devnet.escrow, token=devnet.token, payee=payee.address, deposit=1_000, salt=salt
    )
    theirs = mppx.call(
        "channel_id",
        payer=payer.address,
        payee=payee.address,
        token=to_checksum_address(devnet.token),
        salt=salt,
        authorizedSigner=ZERO,
        escrow=to_checksum_address(devnet.escrow),
        chainId=CHAIN_ID,
    )
    assert theirs.lower() == cid
    assert payer_chain.compute_channel_id(devnet.escrow, payer.address, payee.address,
                                          devnet.token, salt) == cid  # fmt: skip
    onchain_digest = payee_chain.voucher_digest(devnet.escrow, cid, 400)
    assert "0x" + onchain_digest.hex() == mppx.call(
        "voucher_digest",
        channelId=cid,
        cumulativeAmount="400",
        escrow=to_checksum_address(devnet.escrow),
        chainId=CHAIN_ID,
    )

    def mppx_sign(amount: int) -> str:
        return str(
            mppx.call(
                "sign_voucher",
                privateKey="0x" + bytes(payer.key).hex(),
                channelId=cid,
                cumulativeAmount=str(amount),
                escrow=to_checksum_address(devnet.escrow),
                chainId=CHAIN_ID,
            )["signature"]
        )

    payer_before = devnet.chain().balance_of(devnet.token, payer.address)
    # SES-11 on chain: the high-s twin of an mppx voucher is refused by our escrow.
    with pytest.raises(InvalidSignature):
        payee_chain.settle(devnet.escrow, cid, 400, _malleate(mppx_sign(400)))
    assert payee_chain.settle(devnet.escrow, cid, 400, mppx_sign(400)).status == 1
    assert payee_chain.close(devnet.escrow, cid, 650, mppx_sign(650)).status == 1
    channel = payee_chain.read_channel(devnet.escrow, cid)
    assert channel.finalized and channel.settled == 650
    # The payer (who sent no transaction here) got exactly deposit - 650 back.
    assert devnet.chain().balance_of(devnet.token, payer.address) - payer_before == 350
