"""Random fault schedules: one seed, one schedule of node and network faults, all healed
before a quiet tail in which liveness is checked."""

from __future__ import annotations

import random
from functools import partial

from emrp2p.sim.cluster import Cluster
from emrp2p.sim.network import LinkProfile

__all__ = ["schedule_faults", "random_link"]


def random_link(rng: random.Random) -> LinkProfile:
    return LinkProfile(
        base_ms=rng.uniform(0.5, 15.0),
        jitter_ms=rng.uniform(0.1, 25.0),
        drop=rng.choice([0.0, 0.0, 0.01, 0.05, 0.15]),
        duplicate=rng.choice([0.0, 0.0, 0.02, 0.1]),
    )


def schedule_faults(cluster: Cluster, rng: random.Random, start_ms: float, end_ms: float) -> float:
    """Schedule random faults in [start_ms, end_ms); everything is healed by ``end_ms``.

    Returns the time of the last healing action (``end_ms``).
    """
    n = len(cluster.nodes)
    validators = len(cluster.genesis.validators)
    for i in range(n):
        for j in range(n):
            if i != j and rng.random() < 0.3:
                cluster.net.links[(i, j)] = random_link(rng)
    t = start_ms + rng.uniform(0, 1500)
    while t < end_ms - 500:
        kind = rng.choice(
            ["crash", "crash", "pause", "partition", "partition", "cut", "skew", "disk", "leader"]
        )
        length = rng.uniform(300, 6000)
        stop = min(t + length, end_ms)
        i = rng.randrange(n)
        if kind == "crash":
            cluster.at(t, partial(cluster.crash, i), f"fault crash n{i}")
            cluster.at(stop, partial(cluster.restart, i), f"heal restart n{i}")
        elif kind == "leader":
            # Crash whoever leads right now (often right after it proposed).
            def crash_leader(stop: float = stop) -> None:
                for j in cluster.leaders():
                    cluster.crash(j)
                    cluster.at(stop, partial(cluster.restart, j), f"heal restart n{j}")

            cluster.at(t, crash_leader, "fault crash leader")
        elif kind == "pause":
            cluster.at(t, partial(cluster.pause, i), f"fault pause n{i}")
            cluster.at(stop, partial(cluster.resume, i), f"heal resume n{i}")
        elif kind == "partition":
            members = list(range(n))
            rng.shuffle(members)
            cut = rng.randint(1, max(1, validators // 2 + rng.randint(0, 1)))
            groups = [set(members[:cut]), set(members[cut:])]
            cluster.at(t, partial(cluster.partition, groups), "fault partition")
            cluster.at(stop, cluster.heal, "heal network")
        elif kind == "cut":
            j = rng.randrange(n)
            if j != i:
                cluster.at(t, partial(cluster.cut, i, j), f"fault cut n{i}->n{j}")
                cluster.at(stop, cluster.heal, "heal network")
        elif kind == "skew":
            delta = rng.choice([-1, 1]) * rng.randint(100, 4000)
            cluster.at(t, partial(cluster.skew, i, delta), f"fault clock n{i}")
            cluster.at(stop, partial(cluster.skew, i, -delta), f"heal clock n{i}")
        elif kind == "disk":
            ms = rng.randint(5, 120)
            cluster.at(t, partial(cluster.slow_disk, i, ms), f"fault slow disk n{i}")
            cluster.at(stop, partial(cluster.slow_disk, i, 0), f"heal disk n{i}")
        t += rng.expovariate(1 / 1500)

    def heal_all() -> None:
        cluster.heal()
        for node in cluster.nodes:
            cluster.resume(node.index)
            cluster.restart(node.index)
            if node.skew_ms:
                cluster.skew(node.index, -node.skew_ms)
            node.disk_ms = 0

    cluster.at(end_ms, heal_all, "heal everything")
    return end_ms
