// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TempoStreamChannel} from "../src/TempoStreamChannel.sol";
import {MockERC20} from "./MockERC20.sol";
import {vm} from "./Vm.sol";

/// @dev Shared fixture: one escrow named as the tempo deployment, one 6-decimal token, a payer
///      with an unlimited approval, a payee, a delegate signer and a stranger.
///      Trap: compute signatures *before* vm.prank / vm.expectRevert. `_sign` calls the escrow
///      (getVoucherDigest), and that call would consume the prank or the expected revert.
abstract contract ChannelBase {
    string internal constant NAME = "Tempo Stream Channel";
    uint256 internal constant SECP256K1_N =
        0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;
    uint256 internal constant PAYER_KEY = 0xA11CE;
    uint256 internal constant PAYEE_KEY = 0xB0B;
    uint256 internal constant SIGNER_KEY = 0x5160E2;
    uint256 internal constant STRANGER_KEY = 0xE7E;
    uint128 internal constant DEPOSIT = 1_000_000_000; // 1,000 units of a 6-decimal stablecoin
    uint256 internal constant PAYER_FUNDS = 1e18;
    bytes32 internal constant SALT = keccak256("salt");

    TempoStreamChannel internal escrow;
    MockERC20 internal token;
    address internal payer;
    address internal payee;
    address internal signer;
    address internal stranger;

    function setUp() public virtual {
        escrow = _deployEscrow(NAME);
        token = new MockERC20();
        payer = vm.addr(PAYER_KEY);
        payee = vm.addr(PAYEE_KEY);
        signer = vm.addr(SIGNER_KEY);
        stranger = vm.addr(STRANGER_KEY);
        vm.label(payer, "payer");
        vm.label(payee, "payee");
        vm.label(signer, "signer");
        vm.label(stranger, "stranger");
        vm.label(address(escrow), "escrow");
        vm.warp(1_700_000_000);

        token.mint(payer, PAYER_FUNDS);
        vm.prank(payer);
        token.approve(address(escrow), type(uint256).max);
    }

    /// @dev Set by the suites in test/Artifact.t.sol: deploy the committed, optimized bytecode
    ///      instead of forge's (unoptimized) build of the source.
    bool internal fromArtifact;

    function _deployEscrow(string memory name) internal returns (TempoStreamChannel deployed) {
        if (!fromArtifact) return new TempoStreamChannel(name);

        string memory json = vm.readFile(
            string.concat(vm.projectRoot(), "/../mpp/chain/artifacts/TempoStreamChannel.json")
        );
        bytes memory initCode = bytes.concat(vm.parseJsonBytes(json, ".bytecode"), abi.encode(name));
        assembly {
            deployed := create(0, add(initCode, 0x20), mload(initCode))
        }
        vm.assertTrue(address(deployed) != address(0), "artifact deploys");
        vm.assertEq(
            address(deployed).code.length,
            vm.parseJsonBytes(json, ".deployedBytecode").length,
            "runtime size matches the artifact"
        );
    }

    // ----- channel helpers -----

    function _open() internal returns (bytes32) {
        return _openWith(address(0), DEPOSIT, SALT);
    }

    function _openWith(address authorizedSigner, uint128 deposit, bytes32 salt)
        internal
        returns (bytes32 channelId)
    {
        vm.prank(payer);
        channelId = escrow.open(payee, address(token), deposit, salt, authorizedSigner);
    }

    function _settle(bytes32 channelId, uint128 cumulativeAmount) internal {
        bytes memory signature = _sign(PAYER_KEY, channelId, cumulativeAmount);
        vm.prank(payee);
        escrow.settle(channelId, cumulativeAmount, signature);
    }

    function _close(bytes32 channelId, uint128 cumulativeAmount) internal {
        bytes memory signature = _sign(PAYER_KEY, channelId, cumulativeAmount);
        vm.prank(payee);
        escrow.close(channelId, cumulativeAmount, signature);
    }

    function _requestClose(bytes32 channelId) internal {
        vm.prank(payer);
        escrow.requestClose(channelId);
    }

    function _channel(bytes32 channelId) internal view returns (TempoStreamChannel.Channel memory) {
        return escrow.getChannel(channelId);
    }

    // ----- signature helpers -----

    /// @dev A 65-byte (r, s, v) voucher signature for this test's escrow.
    function _sign(uint256 key, bytes32 channelId, uint128 cumulativeAmount)
        internal
        view
        returns (bytes memory)
    {
        return _signFor(escrow, key, channelId, cumulativeAmount);
    }

    function _signFor(
        TempoStreamChannel target,
        uint256 key,
        bytes32 channelId,
        uint128 cumulativeAmount
    ) internal view returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(key, target.getVoucherDigest(channelId, cumulativeAmount));
        return abi.encodePacked(r, s, v);
    }

    function _split(bytes memory signature) internal pure returns (bytes32 r, bytes32 s, uint8 v) {
        assembly {
            r := mload(add(signature, 32))
            s := mload(add(signature, 64))
            v := byte(0, mload(add(signature, 96)))
        }
    }

    /// @dev EIP-2098: (r, vs) with the y-parity in the top bit of vs.
    function _compact(bytes memory signature) internal pure returns (bytes memory) {
        (bytes32 r, bytes32 s, uint8 v) = _split(signature);
        bytes32 vs = bytes32(uint256(s) | (uint256(v - 27) << 255));
        return abi.encodePacked(r, vs);
    }

    /// @dev The other valid secp256k1 encoding of the same signature: (r, n - s, flipped v).
    function _highSTwin(bytes memory signature) internal pure returns (bytes memory) {
        (bytes32 r, bytes32 s, uint8 v) = _split(signature);
        return abi.encodePacked(r, bytes32(SECP256K1_N - uint256(s)), v == 27 ? uint8(28) : 27);
    }

    function _bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        return min + (x % (max - min + 1));
    }
}
