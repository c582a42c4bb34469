"""The ``emrp2p`` CLI against a real daemon: status, submit --wait, block, tx-status, verify, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from emrp2p.cluster import LocalCluster
from emrp2p.genesis import load_genesis
from emrp2p.loadgen import TxFactory

pytestmark = pytest.mark.slow


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emrp2p.cli.main", *args], capture_output=True, text=True, timeout=60
    )


def test_the_cli_mirrors_the_rpc_of_a_running_network(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "net", 1) as c:
        c.start()
        d = str(c.nodes[0].dir)
        tx = TxFactory(load_genesis(tmp_path / "net" / "genesis.json").chain_id, senders=1).make(1)[0]

        out = _cli("submit", tx.encoded.hex(), "--wait", "--datadir", d)
        assert out.returncode == 0, out.stderr
        result = json.loads(out.stdout)
        assert result["status"] == "committed"

        block = json.loads(_cli("block", str(result["height"]), "--txs", "--datadir", d).stdout)
        assert [t["tx_id"] for t in block["txs"]] == [tx.tx_id.hex()]
        status = json.loads(_cli("tx-status", tx.tx_id.hex(), "--datadir", d).stdout)
        assert status["status"] == "committed"
        assert json.loads(_cli("status", "--datadir", d).stdout)["height"] >= 1
        assert json.loads(_cli("verify", "--datadir", d).stdout)["ok"] is True

        again = _cli("submit", tx.encoded.hex(), "--datadir", d)
        assert json.loads(again.stdout)["status"] == "duplicate"
        forged = bytearray(tx.encoded)
        forged[-1] ^= 1
        bad = _cli("submit", forged.hex(), "--datadir", d)
        assert bad.returncode == 1 and "-32001" in bad.stderr
        missing = _cli("block", "999999", "--datadir", d)
        assert missing.returncode == 1 and "-32003" in missing.stderr
    down = _cli("status", "--datadir", d)
    assert down.returncode == 1 and "is the daemon running" in down.stderr
