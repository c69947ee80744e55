// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TempoStreamChannel} from "../src/TempoStreamChannel.sol";
import {MockERC20} from "./MockERC20.sol";
import {vm} from "./Vm.sol";
import {ChannelBase} from "./ChannelBase.t.sol";

/// @dev ESC-06: open.
contract OpenTest is ChannelBase {
    function test_open_recordsChannelPullsDepositAndEmits() public {
        bytes32 expectedId = escrow.computeChannelId(payer, payee, address(token), SALT, address(0));
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelOpened(
            expectedId, payer, payee, address(token), address(0), SALT, DEPOSIT
        );
        bytes32 id = _open();

        vm.assertEq(id, expectedId, "channel id");
        TempoStreamChannel.Channel memory ch = _channel(id);
        vm.assertEq(ch.finalized, false, "finalized");
        vm.assertEq(uint256(ch.closeRequestedAt), 0, "closeRequestedAt");
        vm.assertEq(ch.payer, payer, "payer");
        vm.assertEq(ch.payee, payee, "payee");
        vm.assertEq(ch.token, address(token), "token");
        vm.assertEq(ch.authorizedSigner, address(0), "authorizedSigner");
        vm.assertEq(uint256(ch.deposit), DEPOSIT, "deposit");
        vm.assertEq(uint256(ch.settled), 0, "settled");
        vm.assertEq(token.balanceOf(address(escrow)), DEPOSIT, "escrow balance");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - DEPOSIT, "payer balance");
    }

    function test_open_callerBecomesPayer() public {
        token.mint(stranger, DEPOSIT);
        vm.prank(stranger);
        token.approve(address(escrow), DEPOSIT);
        vm.prank(stranger);
        bytes32 id = escrow.open(payee, address(token), DEPOSIT, SALT, address(0));
        vm.assertEq(_channel(id).payer, stranger, "payer is the caller");
        vm.assertTrue(
            id != escrow.computeChannelId(payer, payee, address(token), SALT, address(0)), "id"
        );
    }

    function test_open_revert_duplicate() public {
        _open();
        vm.expectRevert(TempoStreamChannel.ChannelAlreadyExists.selector);
        _open();
    }

    function test_open_newSaltOpensSecondChannel() public {
        bytes32 first = _open();
        bytes32 second = _openWith(address(0), DEPOSIT, keccak256("salt 2"));
        vm.assertTrue(first != second, "distinct ids");
        vm.assertEq(token.balanceOf(address(escrow)), 2 * uint256(DEPOSIT), "both deposits held");
    }

    function test_open_revert_zeroDeposit() public {
        vm.expectRevert(TempoStreamChannel.ZeroDeposit.selector);
        _openWith(address(0), 0, SALT);
    }

    function test_open_revert_zeroPayee() public {
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.InvalidPayee.selector);
        escrow.open(address(0), address(token), DEPOSIT, SALT, address(0));
    }

    function test_open_revert_invalidToken_noCode() public {
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.InvalidToken.selector);
        escrow.open(payee, address(0xdead), DEPOSIT, SALT, address(0));
    }

    function test_open_revert_tokenReturnsFalse() public {
        token.setMode(MockERC20.Mode.ReturnFalse);
        vm.expectRevert(TempoStreamChannel.TransferFailed.selector);
        _open();
    }

    function test_open_revert_tokenReverts() public {
        token.setMode(MockERC20.Mode.Revert);
        vm.expectRevert(TempoStreamChannel.TransferFailed.selector);
        _open();
    }

    function test_open_revert_insufficientBalance() public {
        vm.expectRevert(TempoStreamChannel.TransferFailed.selector);
        // forge-lint: disable-next-line(unsafe-typecast)
        _openWith(address(0), uint128(PAYER_FUNDS + 1), SALT); // 1e18 + 1 fits easily
    }

    function test_open_tokenWithoutReturnData() public {
        token.setMode(MockERC20.Mode.NoReturnData);
        bytes32 id = _open();
        vm.assertEq(token.balanceOf(address(escrow)), DEPOSIT, "pulled");
        _close(id, 1);
        vm.assertEq(token.balanceOf(payee), 1, "paid");
    }
}

/// @dev ESC-07: settle.
contract SettleTest is ChannelBase {
    bytes32 internal id;

    function setUp() public override {
        super.setUp();
        id = _open();
    }

    function test_settle_paysDeltaAndEmits() public {
        bytes memory sig = _sign(PAYER_KEY, id, 300);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.Settled(id, payer, payee, 300, 300, 300);
        vm.prank(payee);
        escrow.settle(id, 300, sig);
        vm.assertEq(uint256(_channel(id).settled), 300, "settled");
        vm.assertEq(token.balanceOf(payee), 300, "payee paid");
        vm.assertEq(token.balanceOf(address(escrow)), DEPOSIT - 300, "escrow keeps the rest");
    }

    function test_settle_multiple() public {
        _settle(id, 100);
        bytes memory sig = _sign(PAYER_KEY, id, 250);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.Settled(id, payer, payee, 250, 150, 250);
        vm.prank(payee);
        escrow.settle(id, 250, sig);
        _settle(id, 1000);
        vm.assertEq(uint256(_channel(id).settled), 1000, "settled");
        vm.assertEq(token.balanceOf(payee), 1000, "payee paid in total");
    }

    function test_settle_revert_notIncreasing() public {
        _settle(id, 500);
        bytes memory sig = _sign(PAYER_KEY, id, 400);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.AmountNotIncreasing.selector);
        escrow.settle(id, 400, sig);
    }

    function test_settle_revert_sameAmount() public {
        _settle(id, 500);
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.AmountNotIncreasing.selector);
        escrow.settle(id, 500, sig);
    }

    function test_settle_revert_zeroAmount() public {
        bytes memory sig = _sign(PAYER_KEY, id, 0);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.AmountNotIncreasing.selector);
        escrow.settle(id, 0, sig);
    }

    function test_settle_revert_exceedsDeposit() public {
        bytes memory sig = _sign(PAYER_KEY, id, DEPOSIT + 1);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.AmountExceedsDeposit.selector);
        escrow.settle(id, DEPOSIT + 1, sig);
    }

    function test_settle_exactDeposit() public {
        _settle(id, DEPOSIT);
        vm.assertEq(uint256(_channel(id).settled), DEPOSIT, "settled");
        vm.assertEq(token.balanceOf(payee), DEPOSIT, "payee paid");
        vm.assertEq(token.balanceOf(address(escrow)), 0, "escrow empty");
    }

    function test_settle_revert_invalidSignature() public {
        bytes memory sig = _sign(STRANGER_KEY, id, 100);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        escrow.settle(id, 100, sig);
    }

    function test_settle_revert_signatureForOtherAmount() public {
        bytes memory sig = _sign(PAYER_KEY, id, 100);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        escrow.settle(id, 200, sig);
    }

    function test_settle_revert_finalized() public {
        _close(id, 100);
        bytes memory sig = _sign(PAYER_KEY, id, 200);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.settle(id, 200, sig);
    }

    function test_settle_revert_nonExistentChannel() public {
        bytes32 unknown = keccak256("unknown");
        bytes memory sig = _sign(PAYER_KEY, unknown, 100);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelNotFound.selector);
        escrow.settle(unknown, 100, sig);
    }

    function test_settle_revert_notPayee() public {
        bytes memory sig = _sign(PAYER_KEY, id, 100);
        vm.prank(stranger);
        vm.expectRevert(TempoStreamChannel.NotPayee.selector);
        escrow.settle(id, 100, sig);
    }

    function test_settle_revert_payerCannotSettle() public {
        bytes memory sig = _sign(PAYER_KEY, id, 100);
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.NotPayee.selector);
        escrow.settle(id, 100, sig);
    }

    /// @dev A relayer holding a valid voucher still cannot redeem it: only the payee may.
    function test_settle_revert_thirdParty() public {
        bytes memory sig = _sign(PAYER_KEY, id, 100);
        vm.prank(address(this));
        vm.expectRevert(TempoStreamChannel.NotPayee.selector);
        escrow.settle(id, 100, sig);
        vm.assertEq(token.balanceOf(payee), 0, "nothing paid");
    }

    /// @dev ESC-14: the domain binds verifyingContract, so a voucher for the same channel id on
    ///      a second escrow does not verify there.
    function test_settle_revert_crossContractReplay() public {
        TempoStreamChannel other = _deployEscrow(NAME);
        vm.prank(payer);
        token.approve(address(other), type(uint256).max);
        vm.prank(payer);
        bytes32 otherId = other.open(payee, address(token), DEPOSIT, SALT, address(0));
        // Signed with the first escrow's domain for the second escrow's channel.
        bytes memory sig = _signFor(escrow, PAYER_KEY, otherId, 100);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        other.settle(otherId, 100, sig);

        // The same voucher for the first escrow's own channel id is good on the first only.
        bytes memory own = _sign(PAYER_KEY, id, 100);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelNotFound.selector);
        other.settle(id, 100, own);
    }

    /// @dev ESC-14: block.chainid is read live, so a fork with a new chain id rejects old vouchers.
    function test_settle_revert_crossChainReplay() public {
        bytes memory sig = _sign(PAYER_KEY, id, 100);
        vm.chainId(block.chainid + 1);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        escrow.settle(id, 100, sig);
    }

    function test_settle_revert_transferFailed() public {
        bytes memory sig = _sign(PAYER_KEY, id, 100);
        token.setMode(MockERC20.Mode.ReturnFalse);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.TransferFailed.selector);
        escrow.settle(id, 100, sig);
    }
}

/// @dev ESC-07/ESC-10: an authorized signer replaces the payer as voucher signer.
contract AuthorizedSignerTest is ChannelBase {
    function test_authorizedSigner_settleSuccess() public {
        bytes32 id = _openWith(signer, DEPOSIT, SALT);
        vm.assertEq(_channel(id).authorizedSigner, signer, "stored");
        bytes memory sig = _sign(SIGNER_KEY, id, 400);
        vm.prank(payee);
        escrow.settle(id, 400, sig);
        vm.assertEq(token.balanceOf(payee), 400, "paid");
    }

    function test_authorizedSigner_payerSignatureRejected() public {
        bytes32 id = _openWith(signer, DEPOSIT, SALT);
        bytes memory sig = _sign(PAYER_KEY, id, 400);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        escrow.settle(id, 400, sig);
    }

    function test_authorizedSigner_closeWithDelegateVoucher() public {
        bytes32 id = _openWith(signer, DEPOSIT, SALT);
        bytes memory sig = _sign(SIGNER_KEY, id, 700);
        vm.prank(payee);
        escrow.close(id, 700, sig);
        vm.assertEq(token.balanceOf(payee), 700, "payee");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 700, "payer refunded");
    }

    function test_authorizedSigner_closeRejectsPayerVoucher() public {
        bytes32 id = _openWith(signer, DEPOSIT, SALT);
        bytes memory sig = _sign(PAYER_KEY, id, 700);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        escrow.close(id, 700, sig);
    }

    function test_authorizedSigner_equalsPayer() public {
        bytes32 id = _openWith(payer, DEPOSIT, SALT);
        vm.assertTrue(
            id != escrow.computeChannelId(payer, payee, address(token), SALT, address(0)),
            "authorizedSigner is part of the id"
        );
        _settle(id, 100);
        vm.assertEq(token.balanceOf(payee), 100, "payer's own voucher is accepted");
    }
}

/// @dev ESC-13, A-4: signature encodings.
contract SignatureEncodingTest is ChannelBase {
    bytes32 internal id;

    function setUp() public override {
        super.setUp();
        id = _open();
    }

    function _expectSettleReverts(uint128 amount, bytes memory sig) internal {
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        escrow.settle(id, amount, sig);
    }

    function test_signature_highSTwin_rejected() public {
        bytes memory sig = _sign(PAYER_KEY, id, 100);
        bytes memory twin = _highSTwin(sig);
        // The twin is a valid secp256k1 signature by the payer: only the low-s rule stops it.
        (bytes32 r, bytes32 s, uint8 v) = _split(twin);
        vm.assertEq(ecrecover(escrow.getVoucherDigest(id, 100), v, r, s), payer, "twin recovers");
        _expectSettleReverts(100, twin);
        // The canonical encoding still works.
        vm.prank(payee);
        escrow.settle(id, 100, sig);
    }

    function test_signature_highSTwin_rejectedByClose() public {
        bytes memory twin = _highSTwin(_sign(PAYER_KEY, id, 100));
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        escrow.close(id, 100, twin);
    }

    function test_signature_v0v1_rejected() public {
        (bytes32 r, bytes32 s, uint8 v) = _split(_sign(PAYER_KEY, id, 100));
        _expectSettleReverts(100, abi.encodePacked(r, s, v - 27));
        _expectSettleReverts(100, abi.encodePacked(r, s, v == 27 ? uint8(1) : 0));
    }

    function test_signature_otherV_rejected() public {
        (bytes32 r, bytes32 s,) = _split(_sign(PAYER_KEY, id, 100));
        _expectSettleReverts(100, abi.encodePacked(r, s, uint8(29)));
        _expectSettleReverts(100, abi.encodePacked(r, s, uint8(0xff)));
    }

    function test_signature_compact64_accepted() public {
        bytes memory compact = _compact(_sign(PAYER_KEY, id, 100));
        vm.assertEq(compact.length, 64, "EIP-2098 length");
        vm.prank(payee);
        escrow.settle(id, 100, compact);
        vm.assertEq(token.balanceOf(payee), 100, "paid");
    }

    function test_signature_compact64_bothParities() public {
        // Two vouchers almost surely cover both y-parities; each must round-trip.
        bytes memory a = _compact(_sign(PAYER_KEY, id, 100));
        bytes memory b = _compact(_sign(PAYER_KEY, id, 200));
        bytes memory c = _compact(_sign(PAYER_KEY, id, 300));
        vm.prank(payee);
        escrow.settle(id, 100, a);
        vm.prank(payee);
        escrow.settle(id, 200, b);
        vm.prank(payee);
        escrow.settle(id, 300, c);
    }

    function test_signature_compact64_highS_rejected() public {
        (bytes32 r, bytes32 s, uint8 v) = _split(_highSTwin(_sign(PAYER_KEY, id, 100)));
        bytes memory compact = abi.encodePacked(r, bytes32(uint256(s) | (uint256(v - 27) << 255)));
        _expectSettleReverts(100, compact);
    }

    function test_signature_badLengths_rejected() public {
        bytes memory sig = _sign(PAYER_KEY, id, 100);
        _expectSettleReverts(100, "");
        _expectSettleReverts(100, abi.encodePacked(bytes32(0), bytes31(0)));
        _expectSettleReverts(100, abi.encodePacked(sig, uint8(0)));
        _expectSettleReverts(100, abi.encodePacked(sig, sig));
    }

    function test_signature_ecrecoverFailure_rejected() public {
        // r = 0 is not a curve point: ecrecover returns address(0), which must match nobody.
        _expectSettleReverts(100, abi.encodePacked(bytes32(0), bytes32(uint256(1)), uint8(27)));
    }
}

/// @dev ESC-01, ESC-02, ESC-14: views and the EIP-712 domain.
contract ViewsTest is ChannelBase {
    function test_constants() public view {
        vm.assertEq(uint256(escrow.CLOSE_GRACE_PERIOD()), 900, "grace period");
        vm.assertEq(
            escrow.VOUCHER_TYPEHASH(),
            keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)"),
            "typehash"
        );
    }

    function _expectedSeparator(string memory name, address verifyingContract)
        internal
        view
        returns (bytes32)
    {
        return keccak256(
            abi.encode(
                keccak256(
                    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
                ),
                keccak256(bytes(name)),
                keccak256("1"),
                block.chainid,
                verifyingContract
            )
        );
    }

    function test_voucherDigest_isEip712() public view {
        bytes32 channelId = keccak256("any");
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)"),
                channelId,
                uint256(12345)
            )
        );
        bytes32 expected = keccak256(
            abi.encodePacked("\x19\x01", _expectedSeparator(NAME, address(escrow)), structHash)
        );
        vm.assertEq(escrow.domainSeparator(), _expectedSeparator(NAME, address(escrow)), "domain");
        vm.assertEq(escrow.getVoucherDigest(channelId, 12345), expected, "digest");
    }

    /// @dev A-3: the name is a constructor argument; an evm-method instance signs a different domain.
    function test_domainName_isConstructorArgument() public {
        TempoStreamChannel evmEscrow = _deployEscrow("EVM Payment Channel");
        vm.assertEq(
            evmEscrow.domainSeparator(),
            _expectedSeparator("EVM Payment Channel", address(evmEscrow)),
            "evm domain"
        );
        (, string memory name,,,,,) = evmEscrow.eip712Domain();
        vm.assertEq(name, "EVM Payment Channel", "eip712Domain name");
    }

    function test_domainSeparator_followsChainId() public {
        bytes32 before = escrow.domainSeparator();
        vm.chainId(4217);
        vm.assertTrue(escrow.domainSeparator() != before, "changes with the chain");
        vm.assertEq(escrow.domainSeparator(), _expectedSeparator(NAME, address(escrow)), "live");
    }

    function test_eip712Domain_erc5267() public view {
        (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        ) = escrow.eip712Domain();
        vm.assertEq(uint256(uint8(fields)), 0x0f, "fields");
        vm.assertEq(name, NAME, "name");
        vm.assertEq(version, "1", "version");
        vm.assertEq(chainId, block.chainid, "chainId");
        vm.assertEq(verifyingContract, address(escrow), "verifyingContract");
        vm.assertEq(salt, bytes32(0), "salt");
        vm.assertEq(extensions.length, 0, "extensions");
    }

    function test_computeChannelId_formula() public view {
        bytes32 expected = keccak256(
            abi.encode(payer, payee, address(token), SALT, signer, address(escrow), block.chainid)
        );
        vm.assertEq(
            escrow.computeChannelId(payer, payee, address(token), SALT, signer), expected, "id"
        );
    }

    function test_getChannelsBatch_knownAndUnknown() public {
        bytes32 id = _open();
        _settle(id, 42);
        bytes32[] memory ids = new bytes32[](2);
        ids[0] = id;
        ids[1] = keccak256("unknown");
        TempoStreamChannel.Channel[] memory got = escrow.getChannelsBatch(ids);
        vm.assertEq(got.length, 2, "length");
        vm.assertEq(got[0].payer, payer, "known payer");
        vm.assertEq(uint256(got[0].settled), 42, "known settled");
        vm.assertEq(got[1].payer, address(0), "unknown payer");
        vm.assertEq(uint256(got[1].deposit), 0, "unknown deposit");
        vm.assertEq(got[1].finalized, false, "unknown finalized");
        vm.assertEq(escrow.getChannelsBatch(new bytes32[](0)).length, 0, "empty batch");
    }

    /// @dev ESC-02: the public getter returns the members in the struct order, finalized first.
    function test_channelsGetter_matchesGetChannel() public {
        bytes32 id = _openWith(signer, DEPOSIT, SALT);
        _requestClose(id);
        (
            bool finalized,
            uint64 closeRequestedAt,
            address p,
            address q,
            address t,
            address a,
            uint128 deposit,
            uint128 settled
        ) = escrow.channels(id);
        vm.assertEq(finalized, false, "finalized");
        vm.assertEq(uint256(closeRequestedAt), block.timestamp, "closeRequestedAt");
        vm.assertEq(p, payer, "payer");
        vm.assertEq(q, payee, "payee");
        vm.assertEq(t, address(token), "token");
        vm.assertEq(a, signer, "authorizedSigner");
        vm.assertEq(uint256(deposit), DEPOSIT, "deposit");
        vm.assertEq(uint256(settled), 0, "settled");
    }
}
