"""Simulated throughput and latency: 7 validators, 10 virtual minutes, 200 signed tx/s offered,
the leader crashed once a minute (restarted 5 s later). Real Ed25519 signatures throughout.

Client transactions are signed before the timed run (load generation is not the system under
test); every node still checks every signature (once per process, thanks to the verify cache).
Prints committed tx/s and commit latency (virtual), then ``sim_speedup=`` (virtual seconds per
wall second) on the last line.
"""

from __future__ import annotations

import argparse
import time

from emrp2p.consensus import Config
from emrp2p.sim.cluster import Cluster
from emrp2p.sim.network import LinkProfile

CONFIG = Config(
    heartbeat_ms=150,
    election_timeout_ms=1000,
    min_block_interval_ms=250,
    max_blocks_per_term=600,
    max_term_ms=60_000,
)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--validators", type=int, default=7)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    duration = int(args.minutes * 60_000)
    cluster = Cluster(
        args.validators, args.seed, config=CONFIG, n_clients=32, link=LinkProfile(base_ms=2.0, jitter_ms=3.0)
    )
    cluster.client_load(args.rate, duration - 5000)
    cluster.presign(int(args.rate * duration / 1000 / len(cluster.clients) * 1.3) + 10)

    def crash_leader() -> None:
        for i in cluster.leaders():
            cluster.crash(i)
            cluster.at(cluster.now + 5000, lambda i=i: cluster.restart(i), f"restart n{i}")

    for minute in range(1, int(args.minutes) + 1):
        if minute * 60_000 < duration:
            cluster.at(minute * 60_000 - 30_000, crash_leader, "crash leader")
    t0 = time.perf_counter()
    cluster.run_until(duration)
    wall = time.perf_counter() - t0
    obs = cluster.obs
    lat = sorted(obs.latencies)
    committed = len(obs.tx_height)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else float("nan")

    print(
        f"validators={args.validators} virtual_s={duration / 1000:.0f} wall_s={wall:.1f} events={cluster.events}"
    )
    print(
        f"offered_tx_s={args.rate:.0f} submitted={len(obs.submitted)} committed={committed} height={cluster.max_height()}"
    )
    print(f"committed_tx_s={committed / (duration / 1000):.1f}")
    print(f"commit_latency_ms p50={pct(0.5):.0f} p99={pct(0.99):.0f}")
    print(f"violations={len(obs.violations)}")
    print(f"sim_speedup={duration / 1000 / wall:.1f}")


if __name__ == "__main__":
    main()
