"""A local Tempo devnet: the native anvil binary in Tempo mode, with the escrow deployed.

`anvil --network tempo --hardfork T4` (docs/development.md). The Devnet object owns the process
and stopped through its handle (terminate, then kill); use it as a context manager.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from eth_account import Account

from mpp.chain.web3chain import PATH_USD, Web3Chain
from mpp.session.tempo_tx import TIP20_TRANSFER_GAS, transfer_call

if TYPE_CHECKING:
    from types import TracebackType

    from eth_account.signers.local import LocalAccount

__all__ = [
    "ANVIL_RELATIVE",
    "DEV_KEY_0",
    "DEV_MNEMONIC",
    "Devnet",
    "DevnetError",
    "dev_account",
    "find_anvil",
    "start_devnet",
]

DEV_MNEMONIC: Final = "test test test test test test test test test test test junk"
DEV_KEY_0: Final = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_RELATIVE: Final = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
ANVIL_VERSION: Final = "1.7.1"  # package.json pins the same
DEFAULT_FUNDING: Final = 1_000 * 10**6  # 1,000 pathUSD in base units
_FUND_BATCH: Final = 40  # transfers per funding tx (each ~280 k gas to a fresh account on T4)


class DevnetError(RuntimeError):
    """anvil is missing, failed to start, or died."""


def find_anvil() -> Path:
    """$MPP_ANVIL, else `anvil` on PATH, else node_modules/@foundry-rs/anvil-* found from this
    package upwards or from the cwd (the repository's pinned npm package)."""
    env = os.environ.get("MPP_ANVIL")
    if env:
        path = Path(env)
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise DevnetError(f"MPP_ANVIL={env} is not an executable file")
    on_path = shutil.which("anvil")
    if on_path:
        return Path(on_path)
    for base in (Path(__file__).resolve(), Path.cwd().resolve() / "x"):
        for parent in base.parents:
            found = sorted((parent / "node_modules" / "@foundry-rs").glob("anvil-*/bin/anvil"))
            if found:
                return found[0]
    raise DevnetError(
        "anvil not found: set MPP_ANVIL, put anvil on PATH, or run `npm install "
        f"@foundry-rs/anvil@{ANVIL_VERSION}` (scripts/setup.sh does)"
    )


def dev_account(index: int) -> LocalAccount:
    """Dev account `index` of anvil's public "test ... junk" mnemonic."""
    if index == 0:
        account: LocalAccount = Account.from_key(DEV_KEY_0)
        return account
    Account.enable_unaudited_hdwallet_features()
    account = Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")
    return account


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, method: str, params: list[Any], timeout: float = 1.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    if not url.startswith("http://127.0.0.1:"):
        raise DevnetError("the devnet RPC is loopback only")
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        return json.loads(response.read())


@dataclass
class Devnet:
    """A running anvil (Tempo mode) with the escrow deployed from dev account 0."""

    process: subprocess.Popen[bytes]
    rpc_url: str
    port: int
    chain_id: int
    hardfork: str | None
    escrow: str = ""
    token: str = PATH_USD
    funded: list[LocalAccount] = field(default_factory=list)
    _log: Any = None

    # --- lifecycle --------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        *,
        hardfork: str | None = "T4",
        deploy: bool = True,
        escrow_name: str = "Tempo Stream Channel",
        port: int | None = None,
        anvil: Path | str | None = None,
        startup_timeout: float = 10.0,
    ) -> Devnet:
        if port and not _port_free(port):
            # Whatever listens there is not ours: deploying and funding on it would write to
            # someone else's chain.
            raise DevnetError(f"port {port} is already in use; choose another or omit --port")
        binary = Path(anvil) if anvil else find_anvil()
        port = port or _free_port()
        args = [str(binary), "--network", "tempo", "--host", "127.0.0.1", "--port", str(port)]
        if hardfork:
            args += ["--hardfork", hardfork]
        args.append("--silent")
        log = tempfile.TemporaryFile()  # stderr, shown if startup fails
        try:
            process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        except OSError as exc:
            log.close()
            raise DevnetError(f"cannot start anvil: {exc}") from None
        url = f"http://127.0.0.1:{port}"
        devnet = cls(process, url, port, 0, hardfork, _log=log)
        try:
            devnet.chain_id = devnet._wait_ready(startup_timeout)
            if deploy:
                devnet.escrow = devnet.deploy_escrow(escrow_name)
        except BaseException:
            devnet.stop()
            raise
        return devnet

    def _wait_ready(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise DevnetError(
                    f"anvil exited with code {self.process.returncode}: {self._tail()}"
                )
            try:
                return int(_post(self.rpc_url, "eth_chainId", [], 0.5)["result"], 16)
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                time.sleep(0.01)
        raise DevnetError(f"anvil did not answer within {timeout:.0f} s: {self._tail()}")

    def _tail(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        return str(self._log.read()[-500:].decode(errors="replace").strip())

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 3.0) -> None:
        """Terminate anvil through its own handle, kill it if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Devnet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- chain access -----------------------------------------------------------------------

    def chain(
        self, account: str | bytes | LocalAccount | None = None, *, fee_token: str | None = None
    ) -> Web3Chain:
        """A Web3Chain on this devnet, sending from `account` (default: none)."""
        return Web3Chain(self.rpc_url, account=account, fee_token=fee_token, chain_id=self.chain_id)

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        response = _post(self.rpc_url, method, params or [], 10.0)
        if "error" in response:
            raise DevnetError(f"{method}: {response['error'].get('message')}")
        return response["result"]

    def deploy_escrow(self, name: str = "Tempo Stream Channel") -> str:
        return self.chain(DEV_KEY_0).deploy_escrow(name)

    def fund(
        self, addresses: list[str], amount: int = DEFAULT_FUNDING, *, token: str = PATH_USD
    ) -> None:
        """Transfer `amount` of `token` to each address from dev account 0 (batched 0x76 txs)."""
        sender = self.chain(DEV_KEY_0)
        for start in range(0, len(addresses), _FUND_BATCH):
            chunk = addresses[start : start + _FUND_BATCH]
            calls = tuple(transfer_call(token, to, amount) for to in chunk)
            receipt = sender.send_calls(calls, gas_limit=TIP20_TRANSFER_GAS * len(chunk) + 100_000)
            if receipt.status != 1:
                raise DevnetError("funding transfer reverted")

    def new_accounts(self, count: int, amount: int = DEFAULT_FUNDING) -> list[LocalAccount]:
        """`count` fresh random accounts, each funded with `amount` pathUSD."""
        accounts = [Account.create() for _ in range(count)]
        if accounts and amount:
            self.fund([a.address for a in accounts], amount)
        self.funded.extend(accounts)
        return accounts

    # --- state tools ------------------------------------------------------------------------

    def snapshot(self) -> str:
        return str(self.rpc("evm_snapshot"))

    def revert(self, snapshot_id: str) -> bool:
        return bool(self.rpc("evm_revert", [snapshot_id]))

    def mine(self) -> int:
        """Mine one block; returns its timestamp (the node's notion of "now")."""
        self.rpc("evm_mine")
        return int(self.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

    def set_next_block_timestamp(self, timestamp: int) -> None:
        self.rpc("evm_setNextBlockTimestamp", [timestamp])

    def increase_time(self, seconds: int) -> int:
        """evm_increaseTime + evm_mine; returns the new block timestamp."""
        self.rpc("evm_increaseTime", [seconds])
        return self.mine()


def start_devnet(**kwargs: Any) -> Devnet:
    """Devnet.start(...) (kept as a function for scripts)."""
    return Devnet.start(**kwargs)
