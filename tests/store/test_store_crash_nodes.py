"""Crash safety of the Merkle nodes the store holds in memory: a writer SIGKILLed at random
points (before, during and after the commits that write its nodes) reopens with the state,
nodes included, of exactly its committed prefix, and goes on from it."""

from __future__ import annotations

import random
from pathlib import Path

from test_store_crash import kill_at_random_points
from tree_writer import FLUSH_EVERY, NETWORK, tree_delta

from emrp2p.ledger import merkle
from emrp2p.ledger.state import MemoryKV
from emrp2p.store.lmdb_store import LmdbStore

TREE_WRITER = Path(__file__).with_name("tree_writer.py")
KILLS = 20
SEED = 20261127


def replay(head: int) -> tuple[MemoryKV, list[bytes]]:
    """The state after heights 0..head and the root after each."""
    state = MemoryKV()
    roots = [tree_delta(state, h).root for h in range(head + 1)]
    return state, roots


def check_store(path: Path, reported: int) -> int:
    with LmdbStore(path) as store:  # opening rebuilds the nodes and checks them against the head's root
        assert store.genesis() is not None and store.genesis().network == NETWORK  # type: ignore[union-attr]
        head = store.committed_height()
        assert reported <= head <= reported + 1, f"head {head}, last reported commit {reported}"
        state, roots = replay(head)
        assert [store.state_root_at(h) for h in range(head + 1)] == roots
        assert store.state_root() == roots[-1] == merkle.state_root(store.state)
        assert list(store.state.items(b"")) == list(state.items(b""))
        assert store.stats().state_entries == len(state.data)
        key = b"acct/0007"
        proof = merkle.prove(store.state, key)
        assert merkle.verify_proof(roots[-1], key, state.get(merkle.raw_key(key)), proof)
        return head


def test_sigkill_at_random_points_loses_no_committed_state_of_the_nodes_held_in_memory(
    tmp_path: Path,
) -> None:
    least = in_node_writes = head = 0
    runs = kill_at_random_points(
        tmp_path / "chain",
        random.Random(SEED),
        check_store,
        script=TREE_WRITER,
        kills=KILLS,
        max_steps=7,
        into_write=1.0,
        max_spin_s=0.004,
    )
    for last, _, reached, steps in runs:
        least += steps
        in_node_writes += last.startswith("writing") and int(last.split()[1]) % FLUSH_EVERY == 0
        head = reached
    assert head >= least
    print(f"{KILLS} kills, {in_node_writes} during a commit that writes the nodes, final height {head}")
