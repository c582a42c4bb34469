"""Leader fail-over: how long commits stop when the leader's process is SIGKILLed under load.

    python bench/failover.py [--nodes 4] [--kills 5] [--rate 200] [--keep]

Real ``emrp2pd`` daemons on loopback (``emrp2p.cluster.LocalCluster``, default
settings: election timeout 1 s, heartbeat 150 ms). A thread offers signed
transactions at ``--rate`` tx/s through the RPC socket of a node that is not
about to be killed. Each round: find the established leader, SIGKILL it, and
poll the survivors' committed height every 10 ms; the *gap* is the time from
the kill to the first block committed after it, and the *new leader* time is
when a survivor first reports an established leader of a later term. The killed
node is then restarted and must catch up (same head as the others) before the
next round (with every pool drained), so every round starts from a full
cluster. Every tenth accepted transaction is looked up at the end: all must be
committed (the node they were submitted to is never the one killed while it
holds them).

Prints one line per kill, then the median and worst gap; the last line is
``failover_max_ms=<worst gap>``. Every process started here is stopped on the
way out.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emrp2p.cluster import LocalCluster, NodeProcess, wait_until  # noqa: E402
from emrp2p.genesis import load_genesis  # noqa: E402
from emrp2p.loadgen import Submitter, TxFactory  # noqa: E402

POLL_S = 0.01
ROUND_LIMIT_S = 30.0
CATCH_UP_LIMIT_S = 60.0


class Load:
    """Offers ``rate`` tx/s (batches every 50 ms) to whichever node ``target`` names."""

    def __init__(self, factory: TxFactory, rate: float) -> None:
        self.factory = factory
        self.per_batch = max(1, round(rate / 20))
        self.target: NodeProcess | None = None
        self.stop = threading.Event()
        self.accepted: list[str] = []
        self.errors = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        sub: Submitter | None = None
        current: NodeProcess | None = None
        while not self.stop.is_set():
            node = self.target
            if node is not current:
                if sub is not None:
                    sub.close()
                sub, current = (Submitter(str(node.socket), timeout=5) if node else None), node
            if sub is not None:
                try:
                    results = sub.submit(self.factory.make(self.per_batch), busy_for=5)
                    self.accepted += [r["tx_id"] for r in results if r["status"] == "accepted"]
                except Exception:
                    self.errors += 1
                    sub.close()
                    sub, current = None, None
            self.stop.wait(0.05)
        if sub is not None:
            sub.close()


def answering(nodes: list[NodeProcess]) -> list[dict[str, Any]]:
    """``node.status`` of each node that answers (one down or too busy is left out)."""
    out = []
    for n in nodes:
        try:
            out.append(n.rpc("node.status", timeout=2.0))
        except Exception:
            continue
    return out


def committed(statuses: list[dict[str, Any]]) -> int:
    return max((int(st["height"]) for st in statuses), default=-1)


def new_leader(statuses: list[dict[str, Any]], term: int) -> bool:
    return any(st["role"] == "leader" and int(st["term"]) > term for st in statuses)


def one_kill(cluster: LocalCluster, load: Load) -> dict[str, Any]:
    leader = wait_until(cluster.leader, ROUND_LIMIT_S, "an established leader")
    survivors = [n for n in cluster.nodes if n is not leader]
    load.target = survivors[0]
    term = int(leader.rpc("node.status")["term"])
    # Let the load reach the chain before the kill, so the gap is measured under load.
    h = committed(answering(survivors))
    wait_until(lambda: committed(answering(survivors)) >= h + 3, ROUND_LIMIT_S, "blocks under load")
    before = committed(answering(survivors))
    leader.signal(signal.SIGKILL)
    killed = time.monotonic()
    gap = elected = None
    while time.monotonic() - killed < ROUND_LIMIT_S and (gap is None or elected is None):
        statuses = answering(survivors)  # one pass per poll serves both questions
        now = time.monotonic() - killed
        if elected is None and new_leader(statuses, term):
            elected = now
        if gap is None and committed(statuses) > before:
            gap = now
        time.sleep(POLL_S)
    if gap is None or elected is None:
        raise RuntimeError(f"no commit or no new leader within {ROUND_LIMIT_S} s of the kill")
    # Bring the killed node back and let it catch up before the next round.
    leader.proc = None
    leader.start()
    leader.wait_ready()
    t0 = time.monotonic()

    def level() -> bool:
        heads = {(h["height"], h["hash"]) for h in (n.rpc("chain.head", timeout=2.0) for n in cluster.nodes)}
        return len(heads) == 1 and all(st["pending"] == 0 for st in cluster.statuses())

    # A quiet moment: every pool drains (so no accepted transaction sits in the next victim's
    # pool, which is not persisted) and all nodes reach the same head.
    load.target = None
    wait_until(level, CATCH_UP_LIMIT_S, "the restarted node to catch up and the pools to drain")
    return {"gap_ms": 1000 * gap, "elected_ms": 1000 * elected, "catch_up_s": time.monotonic() - t0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--kills", type=int, default=5)
    p.add_argument("--rate", type=float, default=200.0, help="offered load, tx/s")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = p.parse_args()
    if not 1 <= args.kills <= 50 or args.nodes < 3:
        p.error("--kills must be 1..50 and --nodes at least 3")

    tmp = Path(tempfile.mkdtemp(prefix="emrp2p-failover-"))
    cluster = LocalCluster(tmp / "net", args.nodes)
    load: Load | None = None
    gaps: list[float] = []
    try:
        cluster.start()
        wait_until(cluster.leader, ROUND_LIMIT_S, "an established leader")
        load = Load(
            TxFactory(load_genesis(cluster.dir / "genesis.json").chain_id, prefix="failover"), args.rate
        )
        load.thread.start()
        print(f"{args.nodes} daemons, {args.rate:.0f} tx/s offered through a survivor's RPC socket")
        for k in range(args.kills):
            r = one_kill(cluster, load)
            gaps.append(r["gap_ms"])
            print(
                f"  kill {k + 1}: first commit {r['gap_ms']:.0f} ms after SIGKILL of the leader, "
                f"new leader after {r['elected_ms']:.0f} ms; restarted node caught up in {r['catch_up_s']:.1f} s"
            )
        load.stop.set()
        load.thread.join(10)
        sample = load.accepted[::10]
        node = cluster.nodes[0]
        wait_until(
            lambda: all(node.rpc("tx.status", {"tx_id": t})["status"] == "committed" for t in sample[-20:]),
            ROUND_LIMIT_S,
            "the last accepted transactions to commit",
        )
        missing = [t for t in sample if node.rpc("tx.status", {"tx_id": t})["status"] != "committed"]
        print(
            f"accepted {len(load.accepted)} transactions, {len(sample)} checked afterwards, "
            f"{len(missing)} not committed; submit errors while a node was down: {load.errors}"
        )
        print(
            f"gap after SIGKILL of the leader: median {statistics.median(gaps):.0f} ms, worst {max(gaps):.0f} ms"
        )
        print(f"failover_max_ms={max(gaps):.0f}")
        return 0 if not missing else 1
    finally:
        if load is not None:
            load.stop.set()
        cluster.stop()
        cluster.kill_all()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
