"""What one JSON-RPC call costs the daemon: CPU and round-trip time per method, as an app sees it.

    python bench/rpc.py [--nodes 4] [--calls 2000] [--block-txs 1000]

Real ``emrp2pd`` daemons on loopback (``emrp2p.cluster.LocalCluster``, default
settings). First ``--block-txs`` signed transactions are submitted in one
``tx.submit_many`` to one node and committed (so the head block holds them: a
method that decoded the head block would pay for each). Then, one method at a
time, ``--calls`` calls are made back to back on one connection to that node
(the way a clinician app or a dashboard polls), and for each method the
daemon's CPU per call (utime + stime from /proc, all threads; the network's
own upkeep while idle, about 1 % of a core, is included) and the client's
round trip per call (median and p99) are printed. ``tx.submit_many`` is
measured with transactions the node already committed (answered
``duplicate``): the intake path without the consensus round. The last line is
``rpc_cpu_us_per_call=<node.status's CPU per call>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from procstat import HZ, cpu_ticks  # noqa: E402

from emrp2p.cluster import LocalCluster, wait_until  # noqa: E402
from emrp2p.genesis import load_genesis  # noqa: E402
from emrp2p.loadgen import TxFactory  # noqa: E402
from emrp2p.rpc.client import SyncRpcClient  # noqa: E402


def measure(
    client: SyncRpcClient, pid: int, method: str, params: Any, calls: int
) -> tuple[float, float, float]:
    """(daemon CPU per call, median round trip, p99 round trip), all in microseconds."""
    for _ in range(min(100, calls)):
        client.call(method, params)
    times = []
    t0 = cpu_ticks(pid)
    for _ in range(calls):
        t = time.perf_counter()
        client.call(method, params)
        times.append(time.perf_counter() - t)
    cpu = (cpu_ticks(pid) - t0) / HZ
    times.sort()
    return cpu / calls * 1e6, statistics.median(times) * 1e6, times[int(0.99 * (len(times) - 1))] * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--calls", type=int, default=2000, help="calls per method (bounded: at most 100,000)")
    p.add_argument("--block-txs", type=int, default=1000, help="transactions in the head block")
    a = p.parse_args()
    calls = max(1, min(a.calls, 100_000))
    with tempfile.TemporaryDirectory(prefix="emrp2p-rpc-bench-") as tmp:
        folder = Path(tmp)
        with LocalCluster(folder / "net", a.nodes) as cluster:
            cluster.start()
            node = cluster.nodes[0]
            genesis = load_genesis(folder / "net" / "genesis.json")
            txs = [
                tx.encoded.hex()
                for tx in TxFactory(genesis.chain_id, 64, prefix="rpc-bench").make(a.block_txs)
            ]
            with SyncRpcClient(str(node.socket)) as client:
                answers = client.call("tx.submit_many", {"txs": txs})
                accepted = [r["tx_id"] for r in answers if r["status"] == "accepted"]
                last = client.call("tx.status", {"tx_id": accepted[-1], "wait": True, "timeout": 60})
                if last["status"] != "committed":
                    print(f"the load did not commit: {last}", file=sys.stderr)
                    return 1
                wait_until(lambda: client.call("node.status")["pending"] == 0, 60, "an empty pool")
                head = client.call("chain.block", {"height": client.call("chain.head")["height"]})
                print(f"{a.nodes} daemons; head block {head['height']} holds {head['tx_count']} transactions")
                print(f"{'method':<32} {'daemon CPU/call':>16} {'round trip p50':>15} {'p99':>9}")
                cases = [
                    ("node.status", None),
                    ("chain.head", None),
                    ("tx.status", {"tx_id": accepted[0]}),
                    ("tx.submit_many (1, duplicate)", {"txs": txs[:1]}),
                    ("tx.submit_many (100, duplicate)", {"txs": txs[:100]}),
                ]
                figures = {}
                for label, params in cases:
                    method = label.split(" ")[0]
                    cpu, p50, p99 = measure(client, node.pid, method, params, calls)
                    figures[label] = cpu
                    print(f"{label:<32} {cpu:>13.0f} us {p50:>12.0f} us {p99:>6.0f} us")
    print(f"rpc_cpu_us_per_call={figures['node.status']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
