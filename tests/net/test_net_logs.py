"""Logging is configured before libp2p is imported and keeps libp2p's records in line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import logging, sys
import emrp2p, emrp2p.logs
assert "libp2p" not in sys.modules, "import emrp2p must stay light"
emrp2p.logs.configure_logging(json=True, level="INFO", stream=sys.stdout)
import emrp2p.net  # imports libp2p, which resets its own logger
assert len(logging.getLogger().handlers) == 1, logging.getLogger().handlers
lib = logging.getLogger("libp2p")
assert lib.propagate and not lib.handlers
logging.getLogger("libp2p.network.swarm").error("failed to upgrade security for peer %s", "x")
logging.getLogger("libp2p.network.auto_connector").info("auto-connect chatter")
logging.getLogger("libp2p.pubsub").debug("debug chatter")
logging.getLogger("libp2p.host").error("something odd %d", 7)
emrp2p.logs.get_logger("emrp2p.test").info("hello", n=1)
"""


def test_libp2p_records_are_routed_through_structlog_with_sane_levels() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    events = {r["event"]: r for r in records}
    assert set(events) == {"something odd 7", "hello"}, records
    assert events["something odd 7"]["level"] == "warning"  # libp2p's ERROR demoted
    assert events["hello"]["level"] == "info" and events["hello"]["n"] == 1
    assert out.stderr == ""
