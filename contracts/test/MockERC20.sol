// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @dev A minimal 6-decimal ERC-20 for the escrow tests, like a TIP-20 stablecoin as far as the
///      escrow can tell. `setMode` makes it misbehave so the TransferFailed paths can be tested.
contract MockERC20 {
    enum Mode {
        Normal, // returns true
        ReturnFalse, // moves nothing, returns false
        Revert, // reverts
        NoReturnData // moves the tokens, returns nothing (pre-ERC-20-final tokens)
    }

    uint8 public constant decimals = 6;
    Mode public mode;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 amount);
    event Approval(address indexed owner, address indexed spender, uint256 amount);

    function setMode(Mode newMode) external {
        mode = newMode;
    }

    function mint(address to, uint256 amount) external {
        totalSupply += amount;
        balanceOf[to] += amount;
        emit Transfer(address(0), to, amount);
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        return _finish(_move(msg.sender, to, amount));
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        if (mode == Mode.Normal || mode == Mode.NoReturnData) {
            uint256 allowed = allowance[from][msg.sender];
            require(allowed >= amount, "allowance");
            if (allowed != type(uint256).max) allowance[from][msg.sender] = allowed - amount;
        }
        return _finish(_move(from, to, amount));
    }

    function _move(address from, address to, uint256 amount) private returns (bool) {
        if (mode == Mode.Revert) revert("MockERC20: transfer reverted");
        if (mode == Mode.ReturnFalse) return false;
        require(balanceOf[from] >= amount, "balance");
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
        return true;
    }

    function _finish(bool result) private view returns (bool) {
        if (mode == Mode.NoReturnData) {
            assembly {
                return(0, 0)
            }
        }
        return result;
    }
}
