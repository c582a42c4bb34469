"""One seeded run: a random fault schedule over a loaded cluster, then every checker."""

from __future__ import annotations

import functools
import multiprocessing
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from emrp2p.consensus import Config
from emrp2p.ledger.types import Action, ApproveMembership, ProposeMembership
from emrp2p.ledger.types import Role as MemberRole
from emrp2p.sim.checks import check_liveness, check_safety, liveness_bound_ms
from emrp2p.sim.cluster import Cluster
from emrp2p.sim.faults import schedule_faults

__all__ = ["RunResult", "run_seed", "run_many", "SIM_CONFIG"]

SIM_CONFIG = Config(
    heartbeat_ms=150,
    election_timeout_ms=1000,
    min_block_interval_ms=50,
    max_in_flight=4,
    pipeline_min_txs=1,
    max_blocks_per_term=40,
    max_term_ms=8000,
    sync_batch_blocks=64,
)


@dataclass
class RunResult:
    seed: int
    nodes: int
    violations: list[str]
    trace_hash: str
    height: int
    committed_txs: int
    events: int


def run_seed(
    nodes: int,
    seed: int,
    *,
    duration_ms: int = 30_000,
    rate_per_s: float = 20.0,
    faults: bool = True,
    trace: Callable[[str], None] | None = None,
) -> RunResult:
    rng = random.Random(f"faults:{nodes}:{seed}")
    churn = seed % 3 == 1
    observers = 1 if churn or seed % 4 == 0 else 0
    cluster = Cluster(nodes, seed, config=SIM_CONFIG, trace=trace, n_observers=observers)
    tail = 2 * liveness_bound_ms(cluster) + 2000
    heal_at = max(1000.0, duration_ms - tail)
    # Load runs past the healing (liveness is judged on it) and stops before the end, so at the end
    # every node must have caught up exactly.
    cluster.client_load(rate_per_s, (heal_at + duration_ms) / 2)
    if faults:
        schedule_faults(cluster, rng, 500, heal_at)
    if churn:
        _schedule_churn(cluster, rng, heal_at)
    cluster.run_until(heal_at)
    height_at_heal = cluster.max_height()
    cluster.run_until(duration_ms)
    violations = check_safety(cluster) + check_liveness(cluster, heal_at, duration_ms, height_at_heal)
    return RunResult(
        seed,
        nodes,
        violations,
        cluster.trace_hash(),
        cluster.max_height(),
        len(cluster.obs.tx_height),
        cluster.events,
    )


def _schedule_churn(cluster: Cluster, rng: random.Random, before_ms: float) -> None:
    """Governance under load and faults: the observer is voted in as a validator, then a
    validator is voted out (each effective some blocks after it is proposed)."""
    n = len(cluster.genesis.validators)
    newcomer = cluster.nodes[n].identity.public
    leaving = rng.randrange(n)
    gone = cluster.nodes[leaving].identity.public

    def propose(action: Action, node: bytes, name: str, signer: int) -> None:
        pid = rng.randbytes(16)
        effective = cluster.max_height() + 20
        cluster.governance(
            signer, ProposeMembership(pid, action, node, name, MemberRole.VALIDATOR, effective)
        )
        approvers = [i for i in range(n) if i != signer][: n // 2]
        for i in approvers:
            cluster.at(cluster.now + 1500, partial(cluster.governance, i, ApproveMembership(pid)), "approve")

    def propose_after_the_add(signer: int) -> None:
        """The ledger takes one change at a time: like an operator, wait until the addition
        took effect (as far as the most advanced node knows) before proposing the removal."""
        tip = max(cluster.nodes, key=lambda node: node.store.committed_height())
        added = newcomer in cluster.ledger.validators(tip.store.state, tip.store.committed_height() + 1)
        if not added and cluster.now + 1000 < before_ms:
            cluster.at(cluster.now + 1000, partial(propose_after_the_add, signer), "propose remove (waiting)")
            return
        propose(Action.REMOVE, gone, f"hospital-{leaving}", signer)

    proposer = (leaving + 1) % n
    cluster.at(
        before_ms * 0.25, partial(propose, Action.ADD, newcomer, f"hospital-{n}", proposer), "propose add"
    )
    cluster.at(before_ms * 0.6, partial(propose_after_the_add, proposer), "propose remove")


def _run_one(nodes: int, kwargs: dict[str, Any], seed: int) -> RunResult:
    return run_seed(nodes, seed, **kwargs)


def run_many(nodes: int, seeds: Iterable[int], *, jobs: int = 1, **kwargs: Any) -> Iterator[RunResult]:
    """Results in seed order; ``jobs`` > 1 spreads seeds over processes (each run stays deterministic).

    Workers are spawned, not forked: the caller may hold threads (the signature-verify pool),
    and a fork taken while one of them holds a lock deadlocks the child.
    """
    work = functools.partial(_run_one, nodes, kwargs)
    if jobs <= 1:
        yield from map(work, seeds)
        return
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        yield from pool.imap(work, seeds, chunksize=2)
