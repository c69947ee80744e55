// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TempoStreamChannel} from "../src/TempoStreamChannel.sol";
import {MockERC20} from "./MockERC20.sol";
import {vm} from "./Vm.sol";
import {ChannelBase} from "./ChannelBase.t.sol";

/// @dev ESC-08: topUp.
contract TopUpTest is ChannelBase {
    bytes32 internal id;

    function setUp() public override {
        super.setUp();
        id = _open();
    }

    function test_topUp_raisesDepositAndEmits() public {
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.TopUp(id, payer, payee, 500, DEPOSIT + 500);
        vm.prank(payer);
        escrow.topUp(id, 500);
        vm.assertEq(uint256(_channel(id).deposit), DEPOSIT + 500, "deposit");
        vm.assertEq(token.balanceOf(address(escrow)), DEPOSIT + 500, "escrow balance");
    }

    function test_topUp_cancelsCloseRequest() public {
        _requestClose(id);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.CloseRequestCancelled(id, payer, payee);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.TopUp(id, payer, payee, 1, DEPOSIT + 1);
        vm.prank(payer);
        escrow.topUp(id, 1);
        vm.assertEq(uint256(_channel(id).closeRequestedAt), 0, "close request cleared");

        // The old request no longer lets the payer withdraw.
        vm.warp(block.timestamp + 900);
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.CloseNotReady.selector);
        escrow.withdraw(id);
    }

    /// @dev A-2: a zero top-up reverts, so it can neither cancel a close nor emit anything.
    function test_topUp_revert_zeroAmount_keepsCloseRequest() public {
        _requestClose(id);
        uint64 requestedAt = _channel(id).closeRequestedAt;
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.ZeroDeposit.selector);
        escrow.topUp(id, 0);
        vm.assertEq(uint256(_channel(id).closeRequestedAt), requestedAt, "close still pending");
    }

    function test_topUp_revert_overflowUint128() public {
        uint256 room = type(uint128).max - DEPOSIT;
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.DepositOverflow.selector);
        escrow.topUp(id, room + 1);
        // A uint256 amount that would silently truncate to a small uint128 is caught too.
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.DepositOverflow.selector);
        escrow.topUp(id, uint256(1) << 128);
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.DepositOverflow.selector);
        escrow.topUp(id, type(uint256).max);
    }

    function test_topUp_overflowExact() public {
        uint256 room = type(uint128).max - DEPOSIT;
        token.mint(payer, room);
        vm.prank(payer);
        escrow.topUp(id, room);
        vm.assertEq(uint256(_channel(id).deposit), type(uint128).max, "deposit at the limit");
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.DepositOverflow.selector);
        escrow.topUp(id, 1);
    }

    function test_topUp_thenSettleBeyondInitialDeposit() public {
        _settle(id, DEPOSIT);
        bytes memory sig = _sign(PAYER_KEY, id, DEPOSIT + 300);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.AmountExceedsDeposit.selector);
        escrow.settle(id, DEPOSIT + 300, sig);

        vm.prank(payer);
        escrow.topUp(id, 500);
        vm.prank(payee);
        escrow.settle(id, DEPOSIT + 300, sig);
        vm.assertEq(token.balanceOf(payee), DEPOSIT + 300, "paid past the first deposit");
        vm.assertEq(token.balanceOf(address(escrow)), 200, "escrow keeps the rest");
    }

    function test_topUp_revert_notPayer() public {
        token.mint(payee, 500);
        vm.prank(payee);
        token.approve(address(escrow), 500);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.NotPayer.selector);
        escrow.topUp(id, 500);
    }

    function test_topUp_revert_nonExistentChannel() public {
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.ChannelNotFound.selector);
        escrow.topUp(keccak256("unknown"), 500);
    }

    function test_topUp_revert_transferFailed() public {
        token.setMode(MockERC20.Mode.ReturnFalse);
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.TransferFailed.selector);
        escrow.topUp(id, 500);
    }
}

/// @dev ESC-09, ESC-11, A-5: requestClose, the grace period and withdraw.
contract GracePeriodTest is ChannelBase {
    bytes32 internal id;
    uint256 internal requestedAt;

    function setUp() public override {
        super.setUp();
        id = _open();
    }

    function _startClose() internal {
        requestedAt = block.timestamp;
        _requestClose(id);
    }

    function test_requestClose_recordsTimeAndEmits() public {
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.CloseRequested(id, payer, payee, block.timestamp + 900);
        _startClose();
        vm.assertEq(uint256(_channel(id).closeRequestedAt), block.timestamp, "requested at");
    }

    function test_requestClose_idempotent() public {
        _startClose();
        vm.warp(block.timestamp + 600);
        vm.recordLogs();
        _requestClose(id);
        vm.assertEq(vm.getRecordedLogs().length, 0, "second call emits nothing");
        vm.assertEq(uint256(_channel(id).closeRequestedAt), requestedAt, "start did not move");
    }

    function test_requestClose_revert_notPayer() public {
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.NotPayer.selector);
        escrow.requestClose(id);
    }

    function test_requestClose_revert_nonExistentChannel() public {
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.ChannelNotFound.selector);
        escrow.requestClose(keccak256("unknown"));
    }

    function test_payeeCanSettleDuringGracePeriod() public {
        _startClose();
        vm.warp(requestedAt + 899);
        _settle(id, 400);
        vm.assertEq(token.balanceOf(payee), 400, "settled in the last second");
    }

    function test_payeeCanCloseDuringGracePeriod() public {
        _startClose();
        vm.warp(requestedAt + 899);
        _close(id, 400);
        vm.assertEq(token.balanceOf(payee), 400, "payee");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 400, "payer refunded");
        vm.assertEq(_channel(id).finalized, true, "finalized");
    }

    /// @dev Nothing in the contract ends the payee's rights at the deadline: until the payer
    ///      actually withdraws, the payee may still settle.
    function test_payeeCanSettleAfterGraceUntilWithdrawn() public {
        _startClose();
        vm.warp(requestedAt + 5000);
        _settle(id, 10);
        vm.assertEq(token.balanceOf(payee), 10, "settled");
    }

    function test_withdraw_exactGraceBoundary() public {
        _startClose();
        vm.warp(requestedAt + 900);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelExpired(id, payer, payee);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelClosed(id, payer, payee, 0, DEPOSIT);
        vm.prank(payer);
        escrow.withdraw(id);
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS, "full refund");
        vm.assertEq(token.balanceOf(address(escrow)), 0, "escrow empty");
        vm.assertEq(_channel(id).finalized, true, "finalized");
    }

    function test_withdraw_revert_beforeGracePeriod() public {
        _startClose();
        vm.warp(requestedAt + 899);
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.CloseNotReady.selector);
        escrow.withdraw(id);
    }

    function test_withdraw_revert_noCloseRequest() public {
        vm.warp(block.timestamp + 365 days);
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.CloseNotReady.selector);
        escrow.withdraw(id);
    }

    function test_withdraw_revert_doubleWithdraw() public {
        _startClose();
        vm.warp(requestedAt + 900);
        vm.prank(payer);
        escrow.withdraw(id);
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.withdraw(id);
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS, "refunded once");
    }

    function test_withdraw_afterPartialSettle() public {
        _settle(id, 300);
        _startClose();
        vm.warp(requestedAt + 900);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelClosed(id, payer, payee, 300, DEPOSIT - 300);
        vm.prank(payer);
        escrow.withdraw(id);
        vm.assertEq(token.balanceOf(payee), 300, "payee keeps its settlement");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 300, "payer gets the rest");
        vm.assertEq(token.balanceOf(address(escrow)), 0, "escrow empty");
    }

    function test_withdraw_fullySettledRefundsNothing() public {
        _settle(id, DEPOSIT);
        _startClose();
        vm.warp(requestedAt + 900);
        vm.prank(payer);
        escrow.withdraw(id);
        vm.assertEq(_channel(id).finalized, true, "finalized");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - DEPOSIT, "nothing to refund");
    }

    function test_withdraw_revert_notPayer() public {
        _startClose();
        vm.warp(requestedAt + 900);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.NotPayer.selector);
        escrow.withdraw(id);
    }

    function test_withdraw_revert_transferFailed() public {
        _startClose();
        vm.warp(requestedAt + 900);
        token.setMode(MockERC20.Mode.Revert);
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.TransferFailed.selector);
        escrow.withdraw(id);
        vm.assertEq(_channel(id).finalized, false, "rolled back");
    }
}

/// @dev ESC-10, ESC-12: close and finalized records.
contract CloseTest is ChannelBase {
    bytes32 internal id;

    function setUp() public override {
        super.setUp();
        id = _open();
    }

    function test_close_withVoucher() public {
        bytes memory sig = _sign(PAYER_KEY, id, 600);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelClosed(id, payer, payee, 600, DEPOSIT - 600);
        vm.prank(payee);
        escrow.close(id, 600, sig);
        vm.assertEq(token.balanceOf(payee), 600, "payee");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 600, "payer");
        vm.assertEq(token.balanceOf(address(escrow)), 0, "escrow empty");
        vm.assertEq(uint256(_channel(id).settled), 600, "settled recorded");
    }

    function test_close_withoutVoucher() public {
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelClosed(id, payer, payee, 0, DEPOSIT);
        vm.prank(payee);
        escrow.close(id, 0, "");
        vm.assertEq(token.balanceOf(payee), 0, "payee");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS, "full refund");
    }

    /// @dev cum == settled: no signature is checked (garbage is fine) and nothing new is paid.
    function test_close_cumulativeEqualToSettled() public {
        _settle(id, 400);
        vm.prank(payee);
        escrow.close(id, 400, hex"deadbeef");
        vm.assertEq(token.balanceOf(payee), 400, "payee");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 400, "payer");
        vm.assertEq(uint256(_channel(id).settled), 400, "settled unchanged");
    }

    function test_close_cumulativeLessThanSettled() public {
        _settle(id, 400);
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelClosed(id, payer, payee, 400, DEPOSIT - 400);
        vm.prank(payee);
        escrow.close(id, 100, "");
        vm.assertEq(token.balanceOf(payee), 400, "no clawback");
        vm.assertEq(uint256(_channel(id).settled), 400, "settled not lowered");
    }

    function test_close_zeroAfterPartialSettle() public {
        _settle(id, 250);
        vm.prank(payee);
        escrow.close(id, 0, "");
        vm.assertEq(token.balanceOf(payee), 250, "payee");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - 250, "payer");
        vm.assertEq(token.balanceOf(address(escrow)), 0, "escrow empty");
    }

    function test_close_fullDeposit() public {
        vm.expectEmit(true, true, true, true, address(escrow));
        emit TempoStreamChannel.ChannelClosed(id, payer, payee, DEPOSIT, 0);
        _close(id, DEPOSIT);
        vm.assertEq(token.balanceOf(payee), DEPOSIT, "payee gets it all");
        vm.assertEq(token.balanceOf(payer), PAYER_FUNDS - DEPOSIT, "no refund");
    }

    function test_close_revert_exceedsDeposit() public {
        bytes memory sig = _sign(PAYER_KEY, id, DEPOSIT + 1);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.AmountExceedsDeposit.selector);
        escrow.close(id, DEPOSIT + 1, sig);
    }

    function test_close_revert_invalidSignature() public {
        bytes memory sig = _sign(STRANGER_KEY, id, 100);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        escrow.close(id, 100, sig);
    }

    function test_close_revert_emptySignatureAboveSettled() public {
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.InvalidSignature.selector);
        escrow.close(id, 1, "");
    }

    function test_close_revert_notPayee() public {
        bytes memory sig = _sign(PAYER_KEY, id, 100);
        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.NotPayee.selector);
        escrow.close(id, 100, sig);
    }

    function test_close_revert_nonExistentChannel() public {
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelNotFound.selector);
        escrow.close(keccak256("unknown"), 0, "");
    }

    function test_close_revert_transferFailed() public {
        bytes memory sig = _sign(PAYER_KEY, id, 100);
        token.setMode(MockERC20.Mode.ReturnFalse);
        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.TransferFailed.selector);
        escrow.close(id, 100, sig);
        vm.assertEq(_channel(id).finalized, false, "rolled back");
    }

    /// @dev ESC-12, A-2: the record stays (sticky finalized flag, fields kept) and blocks a re-open.
    function test_close_marksFinalized_keepsRecord_blocksReopen() public {
        _requestClose(id);
        uint64 requestedAt = _channel(id).closeRequestedAt;
        _close(id, 600);
        TempoStreamChannel.Channel memory ch = _channel(id);
        vm.assertEq(ch.finalized, true, "finalized");
        vm.assertEq(uint256(ch.closeRequestedAt), requestedAt, "closeRequestedAt kept");
        vm.assertEq(ch.payer, payer, "payer kept");
        vm.assertEq(ch.payee, payee, "payee kept");
        vm.assertEq(ch.token, address(token), "token kept");
        vm.assertEq(ch.authorizedSigner, address(0), "authorizedSigner kept");
        vm.assertEq(uint256(ch.deposit), DEPOSIT, "deposit kept");
        vm.assertEq(uint256(ch.settled), 600, "settled kept");

        vm.expectRevert(TempoStreamChannel.ChannelAlreadyExists.selector);
        _open();
    }

    function test_withdraw_keepsRecord_blocksReopen() public {
        _requestClose(id);
        vm.warp(block.timestamp + 900);
        vm.prank(payer);
        escrow.withdraw(id);
        vm.assertEq(_channel(id).payer, payer, "payer kept");
        vm.assertEq(uint256(_channel(id).deposit), DEPOSIT, "deposit kept");
        vm.expectRevert(TempoStreamChannel.ChannelAlreadyExists.selector);
        _open();
    }

    /// @dev All five state-changing functions refuse a finalized channel, even from the right role.
    function test_closedChannel_operationsRevertFinalized() public {
        _close(id, 100);
        bytes memory sig = _sign(PAYER_KEY, id, 200);

        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.settle(id, 200, sig);

        vm.prank(payee);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.close(id, 200, sig);

        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.topUp(id, 1);

        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.requestClose(id);

        vm.prank(payer);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.withdraw(id);
    }

    /// @dev Finalized is checked before the caller's role, so anyone learns the real state.
    function test_closedChannel_finalizedBeforeRoleCheck() public {
        _close(id, 0);
        vm.prank(stranger);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.settle(id, 1, "");
        vm.prank(stranger);
        vm.expectRevert(TempoStreamChannel.ChannelFinalized.selector);
        escrow.withdraw(id);
    }
}
