// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TempoStreamChannel} from "../src/TempoStreamChannel.sol";
import {MockERC20} from "./MockERC20.sol";
import {vm} from "./Vm.sol";
import {ChannelBase} from "./ChannelBase.t.sol";

/// @dev Helpers for the exact-capture functions (ESC-16 settleCapture, ESC-17 closeCapture):
///      the voucher is signed by the payer for `cumulativeAmount`, the payee captures less.
abstract contract CaptureBase is ChannelBase {
    bytes32 internal id;

    function setUp() public virtual override {
        super.setUp();
        id = _open();
    }

    function _settleCapture(uint128 cumulativeAmount, uint128 captureAmount) internal {
        bytes memory sig = _sign(PAYER_KEY, id, cumulativeAmount);
        vm.prank(payee);
        escrow.settleCapture(id, cumulativeAmount, captureAmount, sig);
    }

    function _closeCapture(uint128 cumulativeAmount, uint128 captureAmount) internal {
        bytes memory sig = _sign(PAYER_KEY, id, cumulativeAmount);
        vm.prank(payee);
        escrow.closeCapture(id, cumulativeAmount, captureAmount, sig);
    }

    function _expectSettleCaptureReverts(
        bytes4 selector,
        uint128 cumulativeAmount,
        uint128 captureAmount,
        bytes memory sig
    ) internal {
        vm.prank(payee);
        vm.expectRevert(selector);
        escrow.settleCapture(id, cumulativeAmount, captureAmount, sig);
    }

    function _expectCloseCaptureReverts(
        bytes4 selector,
        uint128 cumulativeAmount,
        uint128 captureAmount,
        bytes memory sig
    ) internal {
        vm.prank(payee);
        vm.expectRevert(selector);
        escrow.closeCapture(id, cumulativeAmount, captureAmount, sig);
    }
}

/// @dev ESC-16: settleCapture.
contract SettleCaptureTest is CaptureBase {
    function test_settleCapture_paysCaptureAndEmits() public {
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        vm.expectEmit(true, true, true, true, address(escrow));
        // cumulativeAmount is the voucher's; deltaPaid and newSettled are the capture's.
        emit TempoStreamChannel.Settled(id, payer, payee, 500, 300, 300);
        vm.prank(payee);
        escrow.settleCapture(id, 500, 300, sig);
        vm.assertEq(uint256(_channel(id).settled), 300, "settled is the capture");
        vm.assertEq(token.balanceOf(payee), 300, "payee paid the capture only");
        vm.assertEq(token.balanceOf(address(escrow)), DEPOSIT - 300, "escrow keeps the rest");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - DEPOSIT, "payer untouched");
        vm.assertEq(_channel(id).finalized, false, "still open");
    }

    function test_settleCapture_captureEqualsCumulative() public {
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.Settled(id, payer, payee, 500, 500, 500);
        vm.prank(payee);
        escrow.settleCapture(id, 500, 500, sig);
        vm.assertEq(uint256(_channel(id).settled), 500, "settled");
        vm.assertEq(token.balanceOf(payee), 500, "payee");
    }

    function test_settleCapture_captureOneBelowCumulative() public {
        _settleCapture(500, 499);
        vm.assertEq(uint256(_channel(id).settled), 499, "settled");
        vm.assertEq(token.balanceOf(payee), 499, "payee");
        vm.assertEq(token.balanceOf(address(escrow)), DEPOSIT - 499, "escrow");
    }

    function test_settleCapture_revert_captureEqualsSettled() public {
        _settleCapture(500, 300);
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        _expectSettleCaptureReverts(TempoStreamChannel.AmountNotIncreasing.selector, 500, 300, sig);
    }

    function test_settleCapture_revert_captureBelowSettled() public {
        _settleCapture(500, 300);
        bytes memory sig = _sign(PAYER_KEY, id, 800);
        _expectSettleCaptureReverts(TempoStreamChannel.AmountNotIncreasing.selector, 800, 299, sig);
    }

    function test_settleCapture_revert_zeroCapture() public {
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        _expectSettleCaptureReverts(TempoStreamChannel.AmountNotIncreasing.selector, 500, 0, sig);
    }

    function test_settleCapture_captureSettledPlusOne() public {
        _settleCapture(500, 300);
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.Settled(id, payer, payee, 500, 1, 301);
        vm.prank(payee);
        escrow.settleCapture(id, 500, 301, sig);
        vm.assertEq(uint256(_channel(id).settled), 301, "settled");
        vm.assertEq(token.balanceOf(payee), 301, "payee");
    }

    function test_settleCapture_revert_captureAboveCumulative() public {
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        _expectSettleCaptureReverts(TempoStreamChannel.InvalidCaptureAmount.selector, 500, 501, sig);
        vm.assertEq(token.balanceOf(payee), 0, "nothing paid");
    }

    function test_settleCapture_revert_cumulativeExceedsDeposit() public {
        bytes memory sig = _sign(PAYER_KEY, id, DEPOSIT + 1);
        // A small capture does not make a voucher above the deposit acceptable.
        _expectSettleCaptureReverts(
            TempoStreamChannel.AmountExceedsDeposit.selector, DEPOSIT + 1, 100, sig
        );
    }

    function test_settleCapture_cumulativeEqualsDeposit() public {
        _settleCapture(DEPOSIT, 700);
        vm.assertEq(uint256(_channel(id).settled), 700, "settled");
        vm.assertEq(token.balanceOf(payee), 700, "payee");
        _settleCapture(DEPOSIT, DEPOSIT);
        vm.assertEq(token.balanceOf(payee), DEPOSIT, "payee gets it all");
        vm.assertEq(token.balanceOf(address(escrow)), 0, "escrow empty");
    }

    function test_settleCapture_revert_invalidSignature() public {
        bytes memory sig = _sign(STRANGER_KEY, id, 500);
        _expectSettleCaptureReverts(TempoStreamChannel.InvalidSignature.selector, 500, 300, sig);
    }

    /// @dev The signature covers the voucher's cumulative amount, never the capture.
    function test_settleCapture_revert_signatureOverCaptureNotCumulative() public {
        bytes memory sig = _sign(PAYER_KEY, id, 300);
        _expectSettleCaptureReverts(TempoStreamChannel.InvalidSignature.selector, 500, 300, sig);
    }

    function test_settleCapture_revert_emptySignature() public {
        _expectSettleCaptureReverts(TempoStreamChannel.InvalidSignature.selector, 500, 300, "");
    }

    function test_settleCapture_revert_highS() public {
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        _expectSettleCaptureReverts(
            TempoStreamChannel.InvalidSignature.selector, 500, 300, _highSTwin(sig)
        );
        vm.prank(payee);
        escrow.settleCapture(id, 500, 300, sig);
        vm.assertEq(token.balanceOf(payee), 300, "the canonical encoding works");
    }

    function test_settleCapture_compact64_accepted() public {
        bytes memory sig = _compact(_sign(PAYER_KEY, id, 500));
        vm.prank(payee);
        escrow.settleCapture(id, 500, 300, sig);
        vm.assertEq(token.balanceOf(payee), 300, "paid");
    }

    function test_settleCapture_revert_notPayee() public {
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        vm.prank(stranger);
        vm.expectRevert(TempoStreamChannel.NotPayee.selector);
        escrow.settleCapture(id, 500, 300, sig);
    }

    function test_settleCapture_revert_payerCannot() public {
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.NotPayee.selector);
        escrow.settleCapture(id, 500, 300, sig);
    }

    function test_settleCapture_revert_finalized() public {
        _close(id, 100);
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        _expectSettleCaptureReverts(TempoStreamChannel.ChannelFinalized.selector, 500, 300, sig);
    }

    function test_settleCapture_revert_unknownChannel() public {
        bytes32 unknown = keccak256("unknown");
        bytes memory sig = _sign(PAYER_KEY, unknown, 500);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelNotFound.selector);
        escrow.settleCapture(unknown, 500, 300, sig);
    }

    function test_settleCapture_afterPriorSettle() public {
        _settle(id, 200);
        bytes memory sig = _sign(PAYER_KEY, id, 900);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.Settled(id, payer, payee, 900, 350, 550);
        vm.prank(payee);
        escrow.settleCapture(id, 900, 550, sig);
        vm.assertEq(uint256(_channel(id).settled), 550, "settled");
        vm.assertEq(token.balanceOf(payee), 550, "payee paid in total");
    }

    /// @dev After a partial capture, the same voucher captures more, and a v1 settle with a
    ///      higher voucher pays exactly the difference from the capture.
    function test_settleCapture_thenHigherSettle() public {
        _settleCapture(500, 300);
        _settleCapture(500, 450); // the same voucher, a bigger capture
        vm.assertEq(token.balanceOf(payee), 450, "two captures");
        bytes memory sig = _sign(PAYER_KEY, id, 800);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.Settled(id, payer, payee, 800, 350, 800);
        vm.prank(payee);
        escrow.settle(id, 800, sig);
        vm.assertEq(uint256(_channel(id).settled), 800, "settled");
        vm.assertEq(token.balanceOf(payee), 800, "payee");
        vm.assertEq(token.balanceOf(address(escrow)), DEPOSIT - 800, "escrow");
    }

    /// @dev v1 settle refuses a voucher at or below a capture, like any voucher at or below settled.
    function test_settle_revert_voucherBelowCapture() public {
        _settleCapture(500, 300);
        bytes memory sig = _sign(PAYER_KEY, id, 300);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.AmountNotIncreasing.selector);
        escrow.settle(id, 300, sig);
    }

    function test_settleCapture_duringGracePeriod() public {
        _requestClose(id);
        vm.warp(block.timestamp + 899);
        _settleCapture(500, 300);
        vm.assertEq(token.balanceOf(payee), 300, "settled during the grace period");
    }

    function test_settleCapture_authorizedSigner() public {
        bytes32 delegated = _openWith(signer, DEPOSIT, keccak256("delegated"));
        bytes memory payerSig = _sign(PAYER_KEY, delegated, 500);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        escrow.settleCapture(delegated, 500, 300, payerSig);

        bytes memory delegateSig = _sign(SIGNER_KEY, delegated, 500);
        vm.prank(payee);
        escrow.settleCapture(delegated, 500, 300, delegateSig);
        vm.assertEq(uint256(_channel(delegated).settled), 300, "settled");
        vm.assertEq(token.balanceOf(payee), 300, "paid");
    }

    function test_settleCapture_revert_transferFailed() public {
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        token.setMode(MockERC20.Mode.ReturnFalse);
        _expectSettleCaptureReverts(TempoStreamChannel.TransferFailed.selector, 500, 300, sig);
        vm.assertEq(uint256(_channel(id).settled), 0, "rolled back");
    }

    // ----- check order (ESC-16: live, payee, deposit, capture bound, monotonic, signature) -----

    function test_settleCapture_order_notPayeeBeforeAmounts() public {
        vm.prank(stranger);
        vm.expectRevert(TempoStreamChannel.NotPayee.selector);
        escrow.settleCapture(id, DEPOSIT + 1, DEPOSIT + 2, "");
    }

    function test_settleCapture_order_depositBeforeCaptureBound() public {
        _expectSettleCaptureReverts(
            TempoStreamChannel.AmountExceedsDeposit.selector, DEPOSIT + 1, DEPOSIT + 2, ""
        );
    }

    function test_settleCapture_order_captureBoundBeforeMonotonic() public {
        _settleCapture(500, 300);
        // capture 250 is above the voucher (200) and below settled (300): the bound wins.
        _expectSettleCaptureReverts(TempoStreamChannel.InvalidCaptureAmount.selector, 200, 250, "");
    }

    function test_settleCapture_order_monotonicBeforeSignature() public {
        _settleCapture(500, 300);
        _expectSettleCaptureReverts(TempoStreamChannel.AmountNotIncreasing.selector, 500, 300, "");
    }
}

/// @dev ESC-17: closeCapture, and the finalized record it leaves (ESC-12).
contract CloseCaptureTest is CaptureBase {
    function test_closeCapture_revert_captureBelowSettled() public {
        _settleCapture(500, 400);
        bytes memory sig = _sign(PAYER_KEY, id, 500);
        _expectCloseCaptureReverts(TempoStreamChannel.InvalidCaptureAmount.selector, 500, 399, sig);
        vm.assertEq(_channel(id).finalized, false, "still open");
    }

    /// @dev Unlike v1 close, which closes for what is settled when the amount is below it.
    function test_closeCapture_revert_zeroCaptureAfterSettle() public {
        _settle(id, 250);
        _expectCloseCaptureReverts(TempoStreamChannel.InvalidCaptureAmount.selector, 0, 0, "");
    }

    /// @dev capture == settled: nothing new is paid and neither the signature nor the voucher
    ///      amount is looked at (empty or garbage signature, even a voucher above the deposit).
    function test_closeCapture_captureEqualsSettled_noSignatureCheck() public {
        _settleCapture(700, 400);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelClosed(id, payer, payee, 400, DEPOSIT - 400);
        vm.prank(payee);
        escrow.closeCapture(id, 400, 400, "");
        vm.assertEq(token.balanceOf(payee), 400, "nothing new paid");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 400, "refund = deposit - settled");
        vm.assertEq(token.balanceOf(address(escrow)), 0, "escrow empty");
        vm.assertEq(uint256(_channel(id).settled), 400, "settled unchanged");
        vm.assertEq(_channel(id).finalized, true, "finalized");
    }

    function test_closeCapture_captureEqualsSettled_ignoresVoucher() public {
        _settleCapture(700, 400);
        vm.prank(payee);
        escrow.closeCapture(id, DEPOSIT + 1, 400, hex"deadbeef");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 400, "refund = deposit - settled");
    }

    function test_closeCapture_untouchedChannel() public {
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelClosed(id, payer, payee, 0, DEPOSIT);
        vm.prank(payee);
        escrow.closeCapture(id, 0, 0, "");
        vm.assertEq(token.balanceOf(payee), 0, "payee");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS, "full refund");
        vm.assertEq(_channel(id).finalized, true, "finalized");
    }

    function test_closeCapture_captureEqualsCumulative() public {
        bytes memory sig = _sign(PAYER_KEY, id, 600);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelClosed(id, payer, payee, 600, DEPOSIT - 600);
        vm.prank(payee);
        escrow.closeCapture(id, 600, 600, sig);
        vm.assertEq(token.balanceOf(payee), 600, "payee");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 600, "payer");
        vm.assertEq(token.balanceOf(address(escrow)), 0, "escrow empty");
    }

    function test_closeCapture_captureBelowCumulative() public {
        bytes memory sig = _sign(PAYER_KEY, id, 900);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelClosed(id, payer, payee, 600, DEPOSIT - 600);
        vm.prank(payee);
        escrow.closeCapture(id, 900, 600, sig);
        vm.assertEq(token.balanceOf(payee), 600, "payee gets the capture");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 600, "payer gets deposit - capture");
        vm.assertEq(token.balanceOf(address(escrow)), 0, "escrow empty");
        TempoStreamChannel.Channel memory ch = _channel(id);
        vm.assertEq(uint256(ch.settled), 600, "settled is the capture");
        vm.assertEq(ch.finalized, true, "finalized");
    }

    function test_closeCapture_afterPartialSettle() public {
        _settleCapture(500, 200);
        bytes memory sig = _sign(PAYER_KEY, id, 900);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelClosed(id, payer, payee, 600, DEPOSIT - 600);
        vm.prank(payee);
        escrow.closeCapture(id, 900, 600, sig);
        vm.assertEq(token.balanceOf(payee), 600, "200 settled + 400 on close");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 600, "payer");
        vm.assertEq(token.balanceOf(address(escrow)), 0, "escrow empty");
    }

    function test_closeCapture_fullDeposit() public {
        _closeCapture(DEPOSIT, DEPOSIT);
        vm.assertEq(token.balanceOf(payee), DEPOSIT, "payee gets it all");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - DEPOSIT, "no refund");
    }

    function test_closeCapture_revert_captureAboveCumulative() public {
        bytes memory sig = _sign(PAYER_KEY, id, 600);
        _expectCloseCaptureReverts(TempoStreamChannel.InvalidCaptureAmount.selector, 600, 601, sig);
    }

    function test_closeCapture_revert_cumulativeExceedsDeposit() public {
        bytes memory sig = _sign(PAYER_KEY, id, DEPOSIT + 1);
        _expectCloseCaptureReverts(
            TempoStreamChannel.AmountExceedsDeposit.selector, DEPOSIT + 1, 600, sig
        );
    }

    function test_closeCapture_revert_invalidSignature() public {
        bytes memory sig = _sign(STRANGER_KEY, id, 600);
        _expectCloseCaptureReverts(TempoStreamChannel.InvalidSignature.selector, 600, 300, sig);
    }

    function test_closeCapture_revert_emptySignatureAboveSettled() public {
        _expectCloseCaptureReverts(TempoStreamChannel.InvalidSignature.selector, 600, 1, "");
    }

    function test_closeCapture_revert_highS() public {
        bytes memory twin = _highSTwin(_sign(PAYER_KEY, id, 600));
        _expectCloseCaptureReverts(TempoStreamChannel.InvalidSignature.selector, 600, 300, twin);
    }

    function test_closeCapture_order_captureBelowSettledFirst() public {
        _settleCapture(500, 400);
        // Below settled is refused before the voucher is looked at (here it is out of range).
        _expectCloseCaptureReverts(
            TempoStreamChannel.InvalidCaptureAmount.selector, DEPOSIT + 1, 399, ""
        );
    }

    function test_closeCapture_order_depositBeforeCaptureBound() public {
        _expectCloseCaptureReverts(
            TempoStreamChannel.AmountExceedsDeposit.selector, DEPOSIT + 1, DEPOSIT + 2, ""
        );
    }

    function test_closeCapture_duringGracePeriod() public {
        uint256 requestedAt = block.timestamp;
        _requestClose(id);
        vm.warp(requestedAt + 899);
        _closeCapture(900, 400);
        vm.assertEq(token.balanceOf(payee), 400, "payee");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 400, "payer refunded at once");
        vm.assertEq(_channel(id).finalized, true, "finalized");
        vm.assertEq(uint256(_channel(id).closeRequestedAt), requestedAt, "request kept");
    }

    function test_closeCapture_revert_notPayee() public {
        bytes memory sig = _sign(PAYER_KEY, id, 600);
        vm.prank(stranger);
        vm.expectRevert(TempoStreamChannel.NotPayee.selector);
        escrow.closeCapture(id, 600, 300, sig);
    }

    function test_closeCapture_revert_payerCannot() public {
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.NotPayee.selector);
        escrow.closeCapture(id, 0, 0, "");
    }

    function test_closeCapture_revert_unknownChannel() public {
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelNotFound.selector);
        escrow.closeCapture(keccak256("unknown"), 0, 0, "");
    }

    function test_closeCapture_authorizedSigner() public {
        bytes32 delegated = _openWith(signer, DEPOSIT, keccak256("delegated"));
        bytes memory payerSig = _sign(PAYER_KEY, delegated, 700);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        escrow.closeCapture(delegated, 700, 500, payerSig);

        bytes memory delegateSig = _sign(SIGNER_KEY, delegated, 700);
        vm.prank(payee);
        escrow.closeCapture(delegated, 700, 500, delegateSig);
        vm.assertEq(token.balanceOf(payee), 500, "payee");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - DEPOSIT - 500, "payer refunded");
    }

    function test_closeCapture_revert_transferFailed() public {
        bytes memory sig = _sign(PAYER_KEY, id, 600);
        token.setMode(MockERC20.Mode.ReturnFalse);
        _expectCloseCaptureReverts(TempoStreamChannel.TransferFailed.selector, 600, 300, sig);
        vm.assertEq(_channel(id).finalized, false, "rolled back");
        vm.assertEq(uint256(_channel(id).settled), 0, "settled rolled back");
    }

    /// @dev ESC-12: after closeCapture every state-changing function, old and new, reverts
    ///      ChannelFinalized.
    function test_closeCapture_finalized_allFunctionsRevert() public {
        _closeCapture(900, 400);
        _assertAllRevertFinalized();
    }

    /// @dev The same after a v1 close: the new functions see the finalized flag too.
    function test_close_finalized_captureFunctionsRevert() public {
        _close(id, 400);
        _assertAllRevertFinalized();
    }

    function _assertAllRevertFinalized() internal {
        bytes memory sig = _sign(PAYER_KEY, id, 900);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.settleCapture(id, 900, 500, sig);

        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.closeCapture(id, 900, 500, sig);

        // capture == settled would be a no-op close on a live channel: still refused.
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.closeCapture(id, 0, 400, "");

        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.settle(id, 900, sig);

        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.close(id, 900, sig);

        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.topUp(id, 1);

        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.requestClose(id);

        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.withdraw(id);

        vm.prank(stranger);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.settleCapture(id, 1, 1, "");

        vm.assertEq(token.balanceOf(address(escrow)), 0, "nothing left to move");
    }

    /// @dev ESC-12, A-2: the record stays (fields kept) and blocks a re-open.
    function test_closeCapture_keepsRecord_blocksReopen() public {
        _closeCapture(900, 600);
        TempoStreamChannel.Channel memory ch = _channel(id);
        vm.assertEq(ch.finalized, true, "finalized");
        vm.assertEq(ch.payer, payer, "payer kept");
        vm.assertEq(ch.payee, payee, "payee kept");
        vm.assertEq(uint256(ch.deposit), DEPOSIT, "deposit kept");
        vm.assertEq(uint256(ch.settled), 600, "settled kept");

        vm.expectRevert(TempoStreamChannel.ChannelAlreadyExists.selector);
        _open();
    }
}

/// @dev Fuzzed sequences of settleCapture / closeCapture (with v1 settle and topUp mixed in)
///      against a model of the channel. After every step: the escrow holds exactly
///      sum(deposits) - sum(paid out), `settled` matches the model, never exceeds the deposit or
///      the capture bound of any accepted call, and the payee holds exactly `settled`.
contract CaptureFuzzTest is ChannelBase {
    uint256 internal constant STEPS = 12;
    uint128 internal constant BYSTANDER = 7;

    bytes32 internal id;
    uint256 internal paidIn;
    uint256 internal paidOut;
    // The model.
    uint128 internal deposit;
    uint128 internal settled;
    bool internal finalized;

    /// @dev Amounts near the interesting boundaries, or anywhere up to just past the deposit.
    function _amount(uint256 r, uint128 near) internal view returns (uint128) {
        uint256 kind = r % 8;
        r >>= 8;
        if (kind == 0) return near;
        if (kind == 1) return near == 0 ? 0 : near - 1;
        if (kind == 2) return near + 1;
        if (kind == 3) return settled;
        if (kind == 4) return settled + 1;
        if (kind == 5) return deposit;
        if (kind == 6) return deposit + 1;
        // The cast is safe: the value is at most deposit + 1 <= PAYER_FUNDS.
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint128(r % (uint256(deposit) + 2));
    }

    function _assertState(string memory step) internal view {
        TempoStreamChannel.Channel memory ch = _channel(id);
        vm.assertEq(token.balanceOf(address(escrow)), paidIn - paidOut, step);
        vm.assertEq(uint256(ch.settled), settled, "settled matches the model");
        vm.assertEq(uint256(ch.deposit), deposit, "deposit matches the model");
        vm.assertEq(ch.finalized, finalized, "finalized matches the model");
        vm.assertTrue(ch.settled <= ch.deposit, "settled <= deposit");
        vm.assertEq(token.balanceOf(payee), settled, "payee holds exactly settled");
    }

    function testFuzz_captureSequence(uint256 seed, uint128 initialDeposit) public {
        deposit = uint128(_bound(initialDeposit, 1, PAYER_FUNDS / 4));
        _openWith(address(0), BYSTANDER, keccak256("bystander"));
        id = _openWith(address(0), deposit, SALT);
        paidIn = BYSTANDER + uint256(deposit);
        _assertState("after open");

        for (uint256 i; i < STEPS; ++i) {
            uint256 r = uint256(keccak256(abi.encode(seed, i)));
            uint256 op = r % 8; // 0-2 settleCapture, 3 settle, 4 topUp, 5-7 closeCapture
            uint128 cum = _amount(r >> 8, settled);
            uint128 capture = _amount(r >> 80, cum);
            bool badSig = (r >> 160) % 10 == 0;
            bytes memory sig = _sign(badSig ? STRANGER_KEY : PAYER_KEY, id, cum);

            if (op <= 2) {
                _stepSettleCapture(cum, capture, badSig, sig);
            } else if (op == 3) {
                _stepSettleCapture(cum, cum, badSig, sig); // v1 settle == settleCapture(cum, cum)
            } else if (op == 4) {
                _stepTopUp(uint128(_bound(r >> 8, 1, PAYER_FUNDS / 4 / STEPS)));
            } else {
                _stepCloseCapture(cum, capture, badSig, sig);
            }
            _assertState("after step");
        }

        if (!finalized) _stepCloseCapture(0, settled, false, "");
        _assertState("after finalization");
        vm.assertEq(token.balanceOf(address(escrow)), BYSTANDER, "only the bystander is left");
        vm.assertEq(
            token.balanceOf(payer) + token.balanceOf(payee) + BYSTANDER,
            PAYER_FUNDS,
            "no token created or lost"
        );
    }

    function _stepSettleCapture(uint128 cum, uint128 capture, bool badSig, bytes memory sig)
        internal
    {
        bytes4 expected;
        if (finalized) expected = TempoStreamChannel.ChannelFinalized.selector;
        else if (cum > deposit) expected = TempoStreamChannel.AmountExceedsDeposit.selector;
        else if (capture > cum) expected = TempoStreamChannel.InvalidCaptureAmount.selector;
        else if (capture <= settled) expected = TempoStreamChannel.AmountNotIncreasing.selector;
        else if (badSig) expected = TempoStreamChannel.InvalidSignature.selector;

        bool v1 = capture == cum && uint256(keccak256(sig)) % 2 == 0;
        vm.prank(payee);
        if (expected != bytes4(0)) vm.expectRevert(expected);
        if (v1) escrow.settle(id, cum, sig);
        else escrow.settleCapture(id, cum, capture, sig);
        if (expected != bytes4(0)) return;

        vm.assertTrue(capture <= cum && cum <= deposit, "accepted capture within its bounds");
        paidOut += capture - settled;
        settled = capture;
    }

    function _stepCloseCapture(uint128 cum, uint128 capture, bool badSig, bytes memory sig)
        internal
    {
        bytes4 expected;
        if (finalized) {
            expected = TempoStreamChannel.ChannelFinalized.selector;
        } else if (capture < settled) {
            expected = TempoStreamChannel.InvalidCaptureAmount.selector;
        } else if (capture > settled) {
            if (cum > deposit) expected = TempoStreamChannel.AmountExceedsDeposit.selector;
            else if (capture > cum) expected = TempoStreamChannel.InvalidCaptureAmount.selector;
            else if (badSig) expected = TempoStreamChannel.InvalidSignature.selector;
        }

        vm.prank(payee);
        if (expected != bytes4(0)) vm.expectRevert(expected);
        escrow.closeCapture(id, cum, capture, sig);
        if (expected != bytes4(0)) return;

        vm.assertTrue(capture == settled || capture <= cum, "accepted capture within its bounds");
        paidOut += uint256(deposit) - settled; // the new capture to the payee, the rest refunded
        settled = capture;
        finalized = true;
        vm.assertEq(
            token.balanceOf(payer),
            PAYER_FUNDS - paidIn + (uint256(deposit) - capture),
            "payer refunded deposit - capture"
        );
    }

    function _stepTopUp(uint128 amount) internal {
        vm.prank(payer);
        if (finalized) vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.topUp(id, amount);
        if (finalized) return;
        deposit += amount;
        paidIn += amount;
    }
}
