// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @dev The handful of forge cheatcodes these tests use (docs/development.md: the npm forge-std is a
///      broken 2022 copy, so we declare our own). Signatures follow forge's cheatcode spec.
interface Vm {
    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest)
        external
        pure
        returns (uint8 v, bytes32 r, bytes32 s);
    function prank(address sender) external;
    function warp(uint256 timestamp) external;
    function chainId(uint256 newChainId) external;
    function assume(bool condition) external pure;
    function label(address account, string calldata name) external;
    function projectRoot() external view returns (string memory path);
    function readFile(string calldata path) external view returns (string memory data);
    function parseJsonBytes(string calldata json, string calldata key)
        external
        pure
        returns (bytes memory);

    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory logs);

    function expectRevert(bytes4 selector) external;
    function expectEmit(bool topic1, bool topic2, bool topic3, bool data, address emitter) external;

    function assertEq(uint256 left, uint256 right, string calldata err) external pure;
    function assertEq(address left, address right, string calldata err) external pure;
    function assertEq(bytes32 left, bytes32 right, string calldata err) external pure;
    function assertEq(bool left, bool right, string calldata err) external pure;
    function assertEq(string calldata left, string calldata right, string calldata err)
        external
        pure;
    function assertTrue(bool condition, string calldata err) external pure;
}

/// @dev The one address forge answers cheatcodes on.
Vm constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));
