"""``make devnet``: a local network of hospitals with a live view, and a self-check.

``python -m emrp2p.cli.devnet`` writes a fresh testnet into ``./devnet``,
starts one ``emrp2pd`` per hospital, offers signed transactions through the
first node's JSON-RPC socket (as an app would), and shows heights, terms,
leaders and commits until Ctrl-C, then shuts every node down cleanly.

With ``--exit`` it runs a short load instead, waits until every node holds
the same chain (same block hash and state root at the same height), re-verifies
each chain from genesis, stops the nodes, and prints ``devnet ok`` last (exit
0) only if all of that held.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from emrp2p.cluster import LocalCluster, NodeProcess, wait_until
from emrp2p.genesis import load_genesis
from emrp2p.loadgen import Submitter, TxFactory


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="devnet", description="run a local emrp2p network of hospitals")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--dir", type=Path, default=Path("devnet"))
    p.add_argument("--rate", type=float, default=200.0, help="offered load, signed tx/s")
    p.add_argument("--seconds", type=float, default=10.0, help="load duration with --exit")
    p.add_argument("--exit", action="store_true", help="run a short load, check the chains agree, stop")
    p.add_argument("--base-port", type=int, default=0, help="first libp2p port (0: pick free ports)")
    return p


def _row(node: NodeProcess) -> list[str]:
    try:
        s: dict[str, Any] = node.rpc("node.status", timeout=2.0)
    except Exception as e:  # noqa: BLE001 - shown to the operator, not fatal
        return [node.name, "down" if not node.alive() else f"? ({type(e).__name__})", "", "", "", "", ""]
    leader = s["leader"][:12] if s["leader"] else "-"
    head = s["head"]["hash"][:12]
    return [
        node.name,
        s["role"],
        str(s["term"]),
        leader,
        str(s["height"]),
        head,
        f"{s['pending']}/{s['peers_connected']}",
    ]


def _table(cluster: LocalCluster, committed: int, started: float) -> Table:
    t = Table(title=f"emrp2p devnet — {len(cluster.nodes)} hospitals")
    for col in ("node", "role", "term", "leader", "height", "head", "pending/peers"):
        t.add_column(col)
    for node in cluster.nodes:
        t.add_row(*_row(node))
    elapsed = max(time.monotonic() - started, 1e-9)
    t.caption = (
        f"load: {committed} tx accepted, {committed / elapsed:.0f} tx/s — Ctrl-C stops every node cleanly"
    )
    return t


def _converged(cluster: LocalCluster) -> dict[str, Any] | None:
    heads: list[dict[str, Any]] = [n.rpc("chain.head", timeout=5.0) for n in cluster.nodes]
    if len({(h["height"], h["hash"], h["state_root"]) for h in heads}) == 1:
        return heads[0]
    return None


def run(args: argparse.Namespace) -> int:
    console = Console()
    if args.dir.exists():
        shutil.rmtree(args.dir)
    cluster = LocalCluster(args.dir, args.nodes, base_port=args.base_port)
    console.print(
        f"[bold]starting {args.nodes} hospitals[/] in {args.dir}/ (logs: {args.dir}/nodeN/emrp2pd.log)"
    )
    chain_id = load_genesis(args.dir / "genesis.json").chain_id
    factory = TxFactory(chain_id, senders=32, prefix="devnet")
    stop = threading.Event()
    accepted = [0]
    errors: list[BaseException] = []

    def load(seconds: float) -> None:
        sub = Submitter(str(cluster.nodes[0].socket))
        try:
            start = time.monotonic()
            while not stop.is_set() and time.monotonic() - start < seconds:
                batch = max(1, int(args.rate / 10))
                sub.submit(factory.make(batch))
                accepted[0] = sub.stats.accepted
                time.sleep(0.1)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
        finally:
            sub.close()

    try:
        cluster.start()
        started = time.monotonic()
        if args.exit:
            t = threading.Thread(target=load, args=(args.seconds,), daemon=True)
            t.start()
            with Live(_table(cluster, 0, started), console=console, refresh_per_second=2) as live:
                while t.is_alive():
                    t.join(0.5)
                    live.update(_table(cluster, accepted[0], started))
                wait_until(
                    lambda: all(n.rpc("node.status")["pending"] == 0 for n in cluster.nodes),
                    60,
                    "every pool to drain",
                )
                head = wait_until(lambda: _converged(cluster), 60, "every node at the same head")
                live.update(_table(cluster, accepted[0], started))
            if errors:
                console.print(f"[red]load failed: {errors[0]!r}")
                return 1
            console.print(
                f"all {len(cluster.nodes)} nodes at height {head['height']}, hash {head['hash'][:16]}"
            )
            for node in cluster.nodes:
                report = node.rpc("chain.verify", timeout=120)
                if not report["ok"]:
                    console.print(f"[red]{node.name}: {report['summary']}")
                    return 1
            codes = cluster.stop()
            if any(codes):
                console.print(f"[red]unclean shutdown, exit codes {codes}")
                return 1
            print(f"{accepted[0]} transactions accepted and committed; chains identical and verified")
            print("devnet ok")
            return 0
        t = threading.Thread(target=load, args=(float("inf"),), daemon=True)
        t.start()
        with Live(_table(cluster, 0, started), console=console, refresh_per_second=2) as live:
            while True:
                time.sleep(0.5)
                live.update(_table(cluster, accepted[0], started))
    except KeyboardInterrupt:
        console.print("stopping every node…")
        return 0
    finally:
        stop.set()
        codes = cluster.stop()
        cluster.kill_all()
        if not args.exit:
            console.print(f"nodes stopped (exit codes {codes})")


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
