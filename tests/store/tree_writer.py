"""Commits blocks whose state deltas carry the ledger's Merkle nodes into an LmdbStore forever,
reporting each durable commit on stdout (as ``crash_writer.py`` does).

Run by ``test_store_crash_nodes.py``, which SIGKILLs it at random points. The store writes
its nodes every ``FLUSH_EVERY`` commits, so kills land before, during and after those
writes. On start the writer takes the state back from the reopened store (nodes rebuilt
by the store) and goes on from it.
"""

from __future__ import annotations

import sys

from store_chainkit import ChainBuilder, make_genesis

from emrp2p.ledger import merkle
from emrp2p.ledger.state import MemoryKV
from emrp2p.store import lmdb_store
from emrp2p.store.api import Commit, StateDelta, WriteBatch
from emrp2p.store.lmdb_store import LmdbStore

FLUSH_EVERY = 3
KEYS = 400
NETWORK = "tree-crash"


def logical_writes(height: int) -> dict[bytes, bytes | None]:
    """Height 0 is the genesis state; later heights update 40 keys and delete one."""
    if height == 0:
        return {b"acct/%04d" % i: b"g" for i in range(0, KEYS, 7)}
    out: dict[bytes, bytes | None] = {
        b"acct/%04d" % ((height * 13 + i) % KEYS): b"%d:%d" % (height, i) for i in range(40)
    }
    out[b"acct/%04d" % ((height * 29) % KEYS)] = None
    return out


def tree_delta(state: MemoryKV, height: int) -> StateDelta:
    """The delta of ``height`` over ``state`` (nodes included); applies it to ``state``."""
    writes = {merkle.raw_key(k): v for k, v in logical_writes(height).items()}
    root = merkle.commit(state, writes)
    state.apply(writes)
    return StateDelta(writes, root)


def main(path: str) -> None:
    lmdb_store.NODE_FLUSH_BLOCKS = FLUSH_EVERY
    genesis = make_genesis(NETWORK)
    store = LmdbStore(path)
    store.init_genesis(genesis, tree_delta(MemoryKV(), 0))
    state = MemoryKV(dict(store.state.items(b"")))
    chain = ChainBuilder(genesis, txs_per_block=2, root=store.state_root())
    head = store.committed_height()
    if head:
        head_hash = store.head_hash()
        assert head_hash is not None
        chain.height, chain.head_hash = head, head_hash
        chain.last_cert = store.certificate(head)
    out = sys.stdout
    out.write(f"ready {head}\n")
    out.flush()
    while True:
        delta = tree_delta(state, chain.height + 1)
        block = chain.next_block(delta.root)
        cert = chain.certify(block)
        chain.advance(block, cert, delta.root)
        out.write(f"writing {block.height}\n")
        out.flush()
        store.write(WriteBatch(commit=[Commit(block, delta, cert)]))
        out.write(f"committed {block.height}\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1])
