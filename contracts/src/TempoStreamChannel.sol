// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @dev The two token calls the escrow makes. TIP-20 precompiles and ordinary ERC-20s both fit.
interface ITransferToken {
    function transfer(address to, uint256 amount) external returns (bool);
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title TempoStreamChannel (session v1 escrow)
/// @notice Unidirectional payment channels: a payer escrows tokens for a payee and streams
///         EIP-712 vouchers for a growing cumulative amount; the payee redeems the latest one with
///         `settle` or `close`, or captures only part of it with `settleCapture` or
///         `closeCapture`. A payer who wants out calls `requestClose` and, after
///         CLOSE_GRACE_PERIOD, `withdraw`s whatever was not settled.
/// @dev Row ids (ESC-xx, A-x) refer to docs/protocol.md section 3. The ABI is exactly the v1 ABI
///      (ESC-01..05) so the official SDKs decode it; the behaviour is the hardened one (A-2) with
///      two deliberate differences from the reference: finalized records are kept forever, and
///      signatures must be low-s with v in {27, 28} (A-4). On top of the v1 ABI it adds the
///      exact-capture pair ESC-16 settleCapture / ESC-17 closeCapture (and their one error,
///      InvalidCaptureAmount): clients sign vouchers ahead of what they consume, and a payee must
///      capture only what it delivered (SES-36), so the capture amount is its own argument.
///      Only well-behaved tokens are supported (A-7): no fee-on-transfer, no rebasing. The escrow
///      credits exactly the amount it asked `transferFrom` to move.
contract TempoStreamChannel {
    // ---------------------------------------------------------------------------------------
    // Types and constants
    // ---------------------------------------------------------------------------------------

    /// @dev ESC-02: this member order is the ABI the SDKs decode (finalized first). It is also the
    ///      tightest storage packing for these fields: 5 slots, the first holding
    ///      finalized + closeRequestedAt + payer.
    struct Channel {
        bool finalized;
        uint64 closeRequestedAt;
        address payer;
        address payee;
        address token;
        address authorizedSigner;
        uint128 deposit;
        uint128 settled;
    }

    /// @notice ESC-01, A-5: how long a payee has, after `requestClose`, to redeem its last voucher.
    uint64 public constant CLOSE_GRACE_PERIOD = 15 minutes;

    /// @notice ESC-01: EIP-712 type hash of a voucher.
    bytes32 public constant VOUCHER_TYPEHASH =
        keccak256("Voucher(bytes32 channelId,uint128 cumulativeAmount)");

    bytes32 private constant _DOMAIN_TYPEHASH = keccak256(
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    );
    bytes32 private constant _HASHED_VERSION = keccak256("1");

    /// @dev A-4: the largest s accepted, n/2 of secp256k1. The twin (r, n - s) of any signature
    ///      would otherwise be a second valid encoding of the same voucher.
    uint256 private constant _HALF_CURVE_ORDER =
        0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;

    // ---------------------------------------------------------------------------------------
    // State
    // ---------------------------------------------------------------------------------------

    /// @notice ESC-02, ESC-12: every channel ever opened, finalized ones included.
    mapping(bytes32 channelId => Channel) public channels;

    /// @dev A-3: the EIP-712 domain name is chosen per deployment ("Tempo Stream Channel" for
    ///      method=tempo, "EVM Payment Channel" for method=evm); version stays "1".
    string private _name;
    bytes32 private immutable _HASHED_NAME;

    // ---------------------------------------------------------------------------------------
    // Events (ESC-04: exact signatures; the first three parameters are indexed everywhere)
    // ---------------------------------------------------------------------------------------

    event ChannelOpened(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        address token,
        address authorizedSigner,
        bytes32 salt,
        uint256 deposit
    );
    event Settled(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint256 cumulativeAmount,
        uint256 deltaPaid,
        uint256 newSettled
    );
    event CloseRequested(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint256 closeGraceEnd
    );
    event CloseRequestCancelled(
        bytes32 indexed channelId, address indexed payer, address indexed payee
    );
    event TopUp(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint256 additionalDeposit,
        uint256 newDeposit
    );
    event ChannelClosed(
        bytes32 indexed channelId,
        address indexed payer,
        address indexed payee,
        uint256 settledToPayee,
        uint256 refundedToPayer
    );
    event ChannelExpired(bytes32 indexed channelId, address indexed payer, address indexed payee);

    // ---------------------------------------------------------------------------------------
    // Errors (ESC-05: names without parameters, so the selectors match the reference)
    // ---------------------------------------------------------------------------------------

    error ChannelAlreadyExists();
    error ChannelNotFound();
    error ChannelFinalized();
    error InvalidSignature();
    error AmountExceedsDeposit();
    error AmountNotIncreasing();
    error NotPayer();
    error NotPayee();
    error TransferFailed();
    error CloseNotReady();
    error InvalidPayee();
    error DepositOverflow();
    error InvalidToken();
    error ZeroDeposit();
    /// @dev ESC-16, ESC-17: not in the v1 ABI (the capture functions are ours): a capture above
    ///      the voucher, or a close capture below what is already settled.
    error InvalidCaptureAmount();

    constructor(string memory name_) {
        _name = name_;
        _HASHED_NAME = keccak256(bytes(name_));
    }

    // ---------------------------------------------------------------------------------------
    // State-changing functions
    // ---------------------------------------------------------------------------------------

    /// @notice ESC-06: open a channel funded by the caller, who becomes the payer.
    /// @param authorizedSigner Key that signs vouchers; 0 means the payer signs them itself.
    function open(
        address payee,
        address token,
        uint128 deposit,
        bytes32 salt,
        address authorizedSigner
    ) external returns (bytes32 channelId) {
        if (payee == address(0)) revert InvalidPayee();
        // A call to an address without code "succeeds" with no return data, which would let a
        // channel be opened on nothing. TIP-20 precompiles do carry code.
        if (token.code.length == 0) revert InvalidToken();
        if (deposit == 0) revert ZeroDeposit();

        channelId = computeChannelId(msg.sender, payee, token, salt, authorizedSigner);
        Channel storage channel = channels[channelId];
        // ESC-12: a finalized record keeps its payer, so this also refuses to re-open it.
        if (channel.payer != address(0) || channel.finalized) revert ChannelAlreadyExists();

        // ESC-15: record the channel before the token call.
        channel.payer = msg.sender;
        channel.payee = payee;
        channel.token = token;
        channel.authorizedSigner = authorizedSigner;
        channel.deposit = deposit;

        _transferFrom(token, msg.sender, deposit);
        emit ChannelOpened(channelId, msg.sender, payee, token, authorizedSigner, salt, deposit);
    }

    /// @notice ESC-07: the payee redeems a voucher without closing the channel.
    function settle(bytes32 channelId, uint128 cumulativeAmount, bytes calldata signature)
        external
    {
        // The capture of the whole voucher: the capture bound (InvalidCaptureAmount) cannot fire,
        // and the remaining checks run in the v1 order.
        _settle(channelId, cumulativeAmount, cumulativeAmount, signature);
    }

    /// @notice ESC-16 settleCapture: the payee redeems `captureAmount` of a voucher for
    ///         `cumulativeAmount`. The voucher proves the payer authorized at least that much;
    ///         the payee takes only what it delivered, and the rest stays in the channel.
    function settleCapture(
        bytes32 channelId,
        uint128 cumulativeAmount,
        uint128 captureAmount,
        bytes calldata signature
    ) external {
        _settle(channelId, cumulativeAmount, captureAmount, signature);
    }

    /// @notice ESC-08: the payer adds funds. This also withdraws a pending close request, since a
    ///         payer who tops up evidently wants the channel to go on.
    /// @dev `additionalDeposit` is uint256 in the v1 ABI (ESC-03) but the deposit is a uint128.
    function topUp(bytes32 channelId, uint256 additionalDeposit) external {
        Channel storage channel = _liveChannel(channelId);
        if (msg.sender != channel.payer) revert NotPayer();
        // A-2: a zero top-up would be a free way to cancel a close; refuse it like a zero open.
        if (additionalDeposit == 0) revert ZeroDeposit();
        uint128 deposit = channel.deposit;
        if (additionalDeposit > type(uint128).max - deposit) revert DepositOverflow();

        uint128 newDeposit;
        unchecked {
            // The cast and the sum fit: additionalDeposit <= uint128.max - deposit.
            // forge-lint: disable-next-line(unsafe-typecast)
            newDeposit = deposit + uint128(additionalDeposit);
        }
        channel.deposit = newDeposit;
        bool cancelledClose = channel.closeRequestedAt != 0;
        if (cancelledClose) channel.closeRequestedAt = 0;

        _transferFrom(channel.token, msg.sender, additionalDeposit);
        if (cancelledClose) emit CloseRequestCancelled(channelId, msg.sender, channel.payee);
        emit TopUp(channelId, msg.sender, channel.payee, additionalDeposit, newDeposit);
    }

    /// @notice ESC-09: the payer starts the grace period. Idempotent: a second call neither moves
    ///         the start nor emits again, so a payer cannot push its own deadline around.
    function requestClose(bytes32 channelId) external {
        Channel storage channel = _liveChannel(channelId);
        if (msg.sender != channel.payer) revert NotPayer();
        if (channel.closeRequestedAt != 0) return;

        channel.closeRequestedAt = uint64(block.timestamp);
        emit CloseRequested(
            channelId, msg.sender, channel.payee, block.timestamp + CLOSE_GRACE_PERIOD
        );
    }

    /// @notice ESC-10: the payee closes at once, optionally redeeming a final voucher, and the
    ///         rest goes back to the payer. Allowed while a close request is pending.
    /// @dev When `cumulativeAmount` is not above what is already settled, nothing new is paid and
    ///      the signature is not looked at (an empty one is fine): the payee can always give up.
    function close(bytes32 channelId, uint128 cumulativeAmount, bytes calldata signature) external {
        _close(channelId, cumulativeAmount, cumulativeAmount, signature, false);
    }

    /// @notice ESC-17 closeCapture: the payee closes at once capturing exactly `captureAmount` of
    ///         a voucher for `cumulativeAmount`; deposit - captureAmount goes back to the payer.
    ///         Allowed while a close request is pending.
    /// @dev Unlike `close`, a capture below what is already settled is refused rather than
    ///      rounded up: the caller asked for an exact final amount it cannot get. A capture equal
    ///      to it pays nothing new and, as in `close`, ignores the voucher (an empty signature is
    ///      fine).
    function closeCapture(
        bytes32 channelId,
        uint128 cumulativeAmount,
        uint128 captureAmount,
        bytes calldata signature
    ) external {
        _close(channelId, cumulativeAmount, captureAmount, signature, true);
    }

    /// @notice ESC-11: the payer recovers the unsettled remainder once the grace period is over.
    function withdraw(bytes32 channelId) external {
        Channel storage channel = _liveChannel(channelId);
        if (msg.sender != channel.payer) revert NotPayer();
        uint256 requestedAt = channel.closeRequestedAt;
        // A-5: the payee gets the full CLOSE_GRACE_PERIOD; at exactly requestedAt + 900 it is over.
        // forge-lint: disable-next-line(block-timestamp)
        if (requestedAt == 0 || block.timestamp < requestedAt + CLOSE_GRACE_PERIOD) {
            revert CloseNotReady();
        }

        uint128 settled = channel.settled;
        uint128 refund;
        unchecked {
            refund = channel.deposit - settled; // settled never exceeds deposit
        }
        channel.finalized = true;

        if (refund != 0) _transfer(channel.token, msg.sender, refund);
        emit ChannelExpired(channelId, msg.sender, channel.payee);
        emit ChannelClosed(channelId, msg.sender, channel.payee, settled, refund);
    }

    // ---------------------------------------------------------------------------------------
    // Views
    // ---------------------------------------------------------------------------------------

    /// @notice ESC-02: one channel; a zeroed struct for an unknown id.
    function getChannel(bytes32 channelId) external view returns (Channel memory) {
        return _load(channelId);
    }

    /// @notice ESC-14: many channels in one call; zeroed structs for unknown ids.
    function getChannelsBatch(bytes32[] calldata channelIds)
        external
        view
        returns (Channel[] memory channelStates)
    {
        channelStates = new Channel[](channelIds.length);
        for (uint256 i; i < channelIds.length; ++i) {
            channelStates[i] = _load(channelIds[i]);
        }
    }

    /// @notice ESC-14: ids are bound to this contract and chain, so one `open` cannot be
    ///         replayed into an identical channel elsewhere.
    function computeChannelId(
        address payer,
        address payee,
        address token,
        bytes32 salt,
        address authorizedSigner
    ) public view returns (bytes32) {
        return keccak256(
            abi.encode(payer, payee, token, salt, authorizedSigner, address(this), block.chainid)
        );
    }

    /// @notice ESC-14: the EIP-712 digest a voucher signature covers.
    function getVoucherDigest(bytes32 channelId, uint128 cumulativeAmount)
        public
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, cumulativeAmount));
        return keccak256(abi.encodePacked("\x19\x01", domainSeparator(), structHash));
    }

    /// @notice ESC-01: the EIP-712 domain separator. It is computed on every call rather than
    ///         cached at deployment, so after a chain split a voucher signed for one chain id
    ///         never verifies on the other.
    function domainSeparator() public view returns (bytes32) {
        return keccak256(
            abi.encode(
                _DOMAIN_TYPEHASH, _HASHED_NAME, _HASHED_VERSION, block.chainid, address(this)
            )
        );
    }

    /// @notice ERC-5267 (ESC-01, ESC-02): lets wallets and SDKs discover the signing domain.
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        // 0x0f: name, version, chainId and verifyingContract are used; no salt, no extensions.
        fields = hex"0f";
        name = _name;
        version = "1";
        chainId = block.chainid;
        verifyingContract = address(this);
        salt = bytes32(0);
        extensions; // ERC-5267: no extensions (the zero-length default)
    }

    // ---------------------------------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------------------------------

    /// @dev Shared by getChannel and getChannelsBatch (one copy of the storage-to-memory code).
    function _load(bytes32 channelId) private view returns (Channel memory) {
        return channels[channelId];
    }

    /// @dev ESC-07 settle and ESC-16 settleCapture. `settle` is the capture of a whole voucher,
    ///      so both share this body and `_checkCapture`'s check order (the v1 one, with the
    ///      capture bound slotted in where `settle` can never trip it).
    function _settle(
        bytes32 channelId,
        uint128 cumulativeAmount,
        uint128 captureAmount,
        bytes calldata signature
    ) private {
        Channel storage channel = _liveChannel(channelId);
        if (msg.sender != channel.payee) revert NotPayee();
        uint128 delta =
            _checkCapture(channel, channelId, cumulativeAmount, captureAmount, signature);
        // ESC-15: the new settled amount is stored before the token call.
        channel.settled = captureAmount;

        _transfer(channel.token, msg.sender, delta);
        emit Settled(channelId, channel.payer, msg.sender, cumulativeAmount, delta, captureAmount);
    }

    /// @dev ESC-10 close and ESC-17 closeCapture. `close` passes its voucher amount as the
    ///      capture with `exact` false: an amount at or below settled means "close for what is
    ///      settled" (v1). `closeCapture` passes `exact`: a capture below settled is an amount the
    ///      payee cannot get, so it reverts instead of being rounded up. Either way, only a
    ///      capture above settled looks at the voucher, so a payee can always close for what it
    ///      already has.
    function _close(
        bytes32 channelId,
        uint128 cumulativeAmount,
        uint128 captureAmount,
        bytes calldata signature,
        bool exact
    ) private {
        Channel storage channel = _liveChannel(channelId);
        if (msg.sender != channel.payee) revert NotPayee();

        uint128 finalSettled = channel.settled;
        // Nested rather than `exact && ...`: the optimizer makes this ~17 bytes smaller.
        if (captureAmount < finalSettled) {
            if (exact) revert InvalidCaptureAmount();
        }
        uint128 delta;
        if (captureAmount > finalSettled) {
            // _checkCapture's AmountNotIncreasing cannot fire here: captureAmount > settled.
            delta = _checkCapture(channel, channelId, cumulativeAmount, captureAmount, signature);
            finalSettled = captureAmount;
            channel.settled = finalSettled;
        }
        uint128 refund;
        unchecked {
            refund = channel.deposit - finalSettled; // settled never exceeds deposit
        }
        // ESC-12, A-2: finalize in place; the record stays readable and blocks a re-open.
        channel.finalized = true;

        address token = channel.token;
        address payer = channel.payer;
        if (delta != 0) _transfer(token, msg.sender, delta);
        if (refund != 0) _transfer(token, payer, refund);
        emit ChannelClosed(channelId, payer, msg.sender, finalSettled, refund);
    }

    /// @dev The common preamble of the state-changing functions after `open`. Finalized is
    ///      checked first (as in the hardened reference), so a closed channel always reports
    ///      ChannelFinalized, whoever asks.
    function _liveChannel(bytes32 channelId) private view returns (Channel storage channel) {
        channel = channels[channelId];
        if (channel.finalized) revert ChannelFinalized();
        if (channel.payer == address(0)) revert ChannelNotFound();
    }

    /// @dev ESC-07, ESC-16: the checks of a capture of `captureAmount` out of a voucher for
    ///      `cumulativeAmount`; returns what is newly due to the payee. The order is v1's
    ///      (deposit, then monotonicity, then the signature) with the capture bound right after
    ///      the deposit bound.
    ///      ESC-13: the voucher must be signed by the authorized signer, or by the payer when none
    ///      was set at open. The signature covers `cumulativeAmount`, the voucher as signed, never
    ///      the capture: how much of it to take is the payee's choice.
    ///      One copy for the settle and the close path, with the voucher check folded in, keeps
    ///      ~110 bytes out of the runtime code, for one extra warm SLOAD (settled) on close.
    function _checkCapture(
        Channel storage channel,
        bytes32 channelId,
        uint128 cumulativeAmount,
        uint128 captureAmount,
        bytes calldata signature
    ) private view returns (uint128 delta) {
        uint128 alreadySettled = channel.settled;
        if (cumulativeAmount > channel.deposit) revert AmountExceedsDeposit();
        if (captureAmount > cumulativeAmount) revert InvalidCaptureAmount();
        if (captureAmount <= alreadySettled) revert AmountNotIncreasing();
        address expected = channel.authorizedSigner;
        if (expected == address(0)) expected = channel.payer;
        if (_recover(getVoucherDigest(channelId, cumulativeAmount), signature) != expected) {
            revert InvalidSignature();
        }
        unchecked {
            delta = captureAmount - alreadySettled; // > 0: checked above
        }
    }

    /// @dev ESC-13, A-4: accepts a 65-byte (r, s, v) or a 64-byte EIP-2098 (r, vs) signature.
    ///      Unlike the reference, it rejects high-s and any v other than 27/28, so every voucher
    ///      has exactly one accepted (r, s, v): no malleable twin. Anything else is
    ///      InvalidSignature.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        bytes32 r;
        bytes32 s;
        uint8 v;
        // Plain calldataload instead of slices: the length is checked right here, and slices
        // would add ~170 bytes of bounds checks to the runtime code.
        if (signature.length == 65) {
            assembly ("memory-safe") {
                r := calldataload(signature.offset)
                s := calldataload(add(signature.offset, 32))
                v := byte(0, calldataload(add(signature.offset, 64)))
            }
        } else if (signature.length == 64) {
            // EIP-2098: the top bit of vs is the y-parity, the other 255 bits are s.
            bytes32 vs;
            assembly ("memory-safe") {
                r := calldataload(signature.offset)
                vs := calldataload(add(signature.offset, 32))
            }
            s = vs & bytes32(type(uint256).max >> 1);
            v = uint8(uint256(vs) >> 255) + 27;
        } else {
            revert InvalidSignature();
        }
        if (uint256(s) > _HALF_CURVE_ORDER || (v != 27 && v != 28)) revert InvalidSignature();

        address signer = ecrecover(digest, v, r, s);
        // ecrecover signals failure with address(0); never let that match anything.
        if (signer == address(0)) revert InvalidSignature();
        return signer;
    }

    function _transfer(address token, address to, uint256 amount) private {
        _callToken(token, abi.encodeCall(ITransferToken.transfer, (to, amount)));
    }

    function _transferFrom(address token, address from, uint256 amount) private {
        _callToken(
            token, abi.encodeCall(ITransferToken.transferFrom, (from, address(this), amount))
        );
    }

    /// @dev A revert, a `false`, or a malformed return all become TransferFailed. Empty return
    ///      data counts as success (tokens that predate the bool return); that is safe only
    ///      because `open` refused tokens without code. Only the first return word is copied, so
    ///      a token cannot make the escrow pay for a huge return buffer.
    function _callToken(address token, bytes memory data) private {
        bool ok;
        assembly ("memory-safe") {
            // The return word lands in scratch space (0x00..0x20).
            ok := call(gas(), token, 0, add(data, 0x20), mload(data), 0, 0x20)
            let size := returndatasize()
            ok := and(ok, or(iszero(size), and(gt(size, 0x1f), eq(mload(0), 1))))
        }
        if (!ok) revert TransferFailed();
    }
}
