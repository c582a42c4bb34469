"""``make devnet ARGS=--exit`` as an operator runs it: a short load, identical chains, clean stop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_devnet_exit_runs_a_load_checks_the_chains_and_stops_cleanly(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "emrp2p.cli.devnet",
            "--exit",
            "--seconds",
            "3",
            "--dir",
            str(tmp_path / "devnet"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "devnet ok"
    for i in range(1, 5):
        assert not (tmp_path / "devnet" / f"node{i}" / "emrp2pd.sock").exists()
