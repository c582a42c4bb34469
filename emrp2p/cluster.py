"""Run a local network of real daemons (separate processes) on 127.0.0.1.

Used by ``make devnet``, the end-to-end tests and ``bench/cluster.py``: the
same code starts, signals, restarts and queries the nodes, so what the tests
check is what an operator runs. The layout is the one ``emrp2p testnet``
writes: ``DIR/genesis.json`` and one folder ``DIR/nodeI`` per hospital holding
``emrp2pd.toml``, ``node.key``, the chain and the RPC socket.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emrp2p.node.config import CONFIG_NAME, SOCKET_NAME
from emrp2p.rpc.client import call_sync
from emrp2p.rpc.errors import RpcError

__all__ = ["LocalCluster", "NodeProcess", "wait_until"]


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, RpcError, ConnectionError, TimeoutError) as e:
            last_error = e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what} (last error: {last_error})")
        time.sleep(interval)


class NodeProcess:
    """One ``emrp2pd`` process and its folder."""

    def __init__(self, directory: Path, *, extra_args: Sequence[str] = (), log_level: str = "info") -> None:
        self.dir = directory
        self.config = directory / CONFIG_NAME
        self.socket = directory / SOCKET_NAME
        self.log_path = directory / "emrp2pd.log"
        self.extra_args = list(extra_args)
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self._terminating = False

    @property
    def name(self) -> str:
        return self.dir.name

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is already running")
        self._terminating = False
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        cmd = [
            sys.executable,
            "-m",
            "emrp2p.cli.daemon",
            "--config",
            str(self.config),
            "--log-format",
            "json",
            "--log-level",
            self.log_level,
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def rpc(self, method: str, params: Any = None, timeout: float = 10.0) -> Any:
        return call_sync(self.socket, method, params, timeout=timeout)

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        def ready() -> Any:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            return self.socket.exists() and self.rpc("node.status", timeout=2.0)

        status: dict[str, Any] = wait_until(ready, timeout, f"{self.name} to serve RPC")
        return status

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self._terminating = sig == signal.SIGTERM

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL if it does not stop in time)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            if not self._terminating:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class LocalCluster:
    """``n`` hospitals in ``directory``, created by ``emrp2p testnet`` if not there yet."""

    def __init__(
        self,
        directory: Path,
        n: int = 4,
        *,
        base_port: int = 0,
        extra_args: Sequence[str] = (),
        testnet_args: Sequence[str] = (),
        log_level: str = "info",
    ) -> None:
        self.dir = directory
        if not (directory / "genesis.json").exists():
            cmd = [
                sys.executable,
                "-m",
                "emrp2p.cli.main",
                "testnet",
                "--nodes",
                str(n),
                "--dir",
                str(directory),
            ]
            cmd += ["--base-port", str(base_port), *testnet_args]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        dirs = sorted(p for p in directory.iterdir() if p.is_dir() and (p / CONFIG_NAME).exists())
        self.nodes = [NodeProcess(d, extra_args=extra_args, log_level=log_level) for d in dirs]

    def start(self, timeout: float = 60.0) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            node.wait_ready(timeout)

    def stop(self) -> list[int]:
        for node in self.nodes:
            node.signal(signal.SIGTERM)
        return [node.stop() for node in self.nodes]

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()

    def statuses(self, nodes: Sequence[NodeProcess] | None = None) -> list[dict[str, Any]]:
        return [n.rpc("node.status") for n in (nodes or self.nodes)]

    def leader(self) -> NodeProcess | None:
        """The node that says it leads an established term (None while there is none)."""
        for node in self.nodes:
            if node.alive():
                try:
                    if node.rpc("node.status", timeout=2.0)["role"] == "leader":
                        return node
                except (OSError, RpcError, TimeoutError):
                    continue
        return None

    def wait_height(self, height: int, timeout: float, nodes: Sequence[NodeProcess] | None = None) -> None:
        targets = list(nodes or self.nodes)
        wait_until(
            lambda: all(n.rpc("node.status", timeout=2.0)["height"] >= height for n in targets),
            timeout,
            f"height {height} on {[n.name for n in targets]}",
        )

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.kill_all()
