// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TempoStreamChannel} from "../src/TempoStreamChannel.sol";
import {vm} from "./Vm.sol";
import {ChannelBase} from "./ChannelBase.t.sol";

/// @dev Fuzzed invariants: settlement only moves up, and no token is created or lost.
contract FuzzTest is ChannelBase {
    uint256 internal paidOut;
    uint256 internal paidIn;

    function _assertEscrowBalance(string memory step) internal view {
        vm.assertEq(token.balanceOf(address(escrow)), paidIn - paidOut, step);
    }

    /// @dev ESC-07: `settled` never decreases; a voucher at or below it is refused.
    function testFuzz_settle_monotonic(uint128 deposit, uint128 first, uint128 second) public {
        deposit = uint128(_bound(deposit, 1, PAYER_FUNDS));
        first = uint128(_bound(first, 1, deposit));
        second = uint128(_bound(second, 0, deposit));
        bytes32 id = _openWith(address(0), deposit, SALT);
        _settle(id, first);

        bytes memory sig = _sign(PAYER_KEY, id, second);
        if (second <= first) {
            vm.prank(payee);
            vm.expectRevert(TempoStreamChannel.AmountNotIncreasing.selector);
            escrow.settle(id, second, sig);
        } else {
            vm.prank(payee);
            escrow.settle(id, second, sig);
        }
        uint256 highest = second > first ? second : first;
        vm.assertEq(uint256(_channel(id).settled), highest, "settled is the running maximum");
        vm.assertEq(token.balanceOf(payee), highest, "payee received exactly settled");
    }

    /// @dev Conservation: after every step the escrow holds sum(deposits) - paid out; at the end
    ///      (close or withdraw) it holds nothing and payer + payee hold all the funds again.
    function testFuzz_conservation(
        uint128 deposit,
        uint256 additional,
        uint128 settleAmount,
        uint128 closeAmount,
        bool payerWithdraws
    ) public {
        deposit = uint128(_bound(deposit, 1, PAYER_FUNDS / 2));
        additional = _bound(additional, 1, PAYER_FUNDS / 2);
        // forge-lint: disable-next-line(unsafe-typecast)
        uint128 total = deposit + uint128(additional); // additional <= PAYER_FUNDS / 2
        settleAmount = uint128(_bound(settleAmount, 1, total));
        closeAmount = uint128(_bound(closeAmount, 0, total));

        // A second channel stays open throughout, so the escrow balance is a real sum.
        _openWith(address(0), 7, keccak256("bystander"));
        paidIn += 7;
        bytes32 id = _openWith(address(0), deposit, SALT);
        paidIn += deposit;
        _assertEscrowBalance("after open");

        vm.prank(payer);
        escrow.topUp(id, additional);
        paidIn += additional;
        _assertEscrowBalance("after topUp");

        _settle(id, settleAmount);
        paidOut += settleAmount;
        _assertEscrowBalance("after settle");

        if (payerWithdraws) {
            _requestClose(id);
            vm.warp(block.timestamp + 900);
            vm.prank(payer);
            escrow.withdraw(id);
        } else {
            _close(id, closeAmount);
        }
        paidOut += total - settleAmount; // whatever was not paid to the payee was refunded
        _assertEscrowBalance("after finalization");
        vm.assertEq(token.balanceOf(address(escrow)), 7, "only the bystander's deposit is left");

        uint256 toPayee = token.balanceOf(payee);
        uint256 expectedToPayee =
            payerWithdraws || closeAmount <= settleAmount ? settleAmount : closeAmount;
        vm.assertEq(toPayee, expectedToPayee, "payee got the highest redeemed voucher");
        vm.assertEq(token.balanceOf(payer) + toPayee + 7, PAYER_FUNDS, "no token created or lost");
    }
}
