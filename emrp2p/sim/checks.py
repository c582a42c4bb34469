"""Checkers run after every simulation: safety from the recorded observations and the
stores, liveness after the faults healed."""

from __future__ import annotations

from emrp2p.sim.cluster import Cluster

__all__ = ["check_safety", "check_liveness", "liveness_bound_ms"]


def liveness_bound_ms(cluster: Cluster) -> float:
    """After everything heals (all nodes up, network whole), a new block commits within this.

    Each term whose designated leader cannot win (behind, or still catching up)
    costs one election timeout; at most ``f + 1`` of those in a row, plus the
    time to carry over and certify.
    """
    n = len(cluster.genesis.validators)
    return (n // 2 + 2) * cluster.cfg.election_timeout_ms + 1000


def check_safety(cluster: Cluster) -> list[str]:
    out = list(cluster.obs.violations)
    longest: list[bytes] = []
    chains = []
    for node in cluster.nodes:
        store = node.store
        chain = [b.block_hash for b in (store.block(h) for h in range(1, store.committed_height() + 1)) if b]
        chains.append(chain)
        if len(chain) > len(longest):
            longest = chain
    for node, chain in zip(cluster.nodes, chains, strict=True):
        if chain != longest[: len(chain)]:
            out.append(f"n{node.index}'s committed chain is not a prefix of the longest")
        for h, block_hash in enumerate(chain, start=1):
            seen = cluster.obs.committed.get(h)
            if seen is not None and seen != block_hash:
                out.append(f"n{node.index} stores a different block at height {h}")
                break
        core = node.core
        if core is not None and core.evidence:
            out.append(f"n{node.index} holds evidence of equivocation")
    roots: dict[int, bytes] = {}
    for node in cluster.nodes:
        store = node.store
        h = store.committed_height()
        root = store.state_root()
        if roots.setdefault(h, root) != root:
            out.append(f"different state roots at height {h}")
    seen_txs: dict[bytes, int] = {}
    for h, block_hash in enumerate(longest, start=1):
        for node in cluster.nodes:
            block = node.store.block(h)
            if block is not None:
                break
        assert block is not None and block.block_hash == block_hash
        for tx in block.txs:
            if tx.tx_id not in cluster.obs.submitted:
                out.append(f"height {h} holds a tx never submitted")
            if tx.tx_id in seen_txs:
                out.append(f"tx at heights {seen_txs[tx.tx_id]} and {h}")
            seen_txs[tx.tx_id] = h
    return out


def check_liveness(cluster: Cluster, healed_at: float, end: float, height_at_heal: int) -> list[str]:
    out = []
    bound = liveness_bound_ms(cluster)
    after = [t for t in cluster.obs.commit_times if t > healed_at]
    if cluster.max_height() <= height_at_heal or not after:
        out.append(f"no commit after healing at {healed_at:.0f} ms (until {end:.0f} ms)")
    elif after[0] - healed_at > bound:
        out.append(
            f"first commit {after[0] - healed_at:.0f} ms after healing, over the bound of {bound:.0f} ms"
        )
    top = cluster.max_height()
    lagging = [n.index for n in cluster.nodes if n.store.committed_height() < top]
    if lagging:
        out.append(f"nodes {lagging} did not catch up by the end (heights {cluster.heights()})")
    return out
