"""Commits synthetic blocks into an LmdbStore forever, reporting each durable commit on stdout.

Run by ``test_store_crash.py``, which SIGKILLs it at random points. Usage:
``python crash_writer.py STORE_DIR``. Prints ``ready H`` once the store is open
(H = committed height found), then for each batch ``writing H`` just before
``write`` and ``committed H`` after it returns.
Each batch commits block H (with its certificate and synthetic state writes),
accepts block H+1 and sets the hard state, like a follower's step would.
"""

from __future__ import annotations

import sys

from store_chainkit import ChainBuilder, genesis_delta, hard_state_bytes, make_genesis

from emrp2p.store.api import Commit, StateDelta, WriteBatch
from emrp2p.store.lmdb_store import LmdbStore

TXS_PER_BLOCK = 20


def main(path: str) -> None:
    genesis = make_genesis()
    store = LmdbStore(path)
    store.init_genesis(genesis, genesis_delta())
    chain = ChainBuilder(genesis, txs_per_block=TXS_PER_BLOCK)
    head = store.committed_height()
    if head:
        head_hash = store.head_hash()
        assert head_hash is not None
        chain.height, chain.head_hash, chain.root = head, head_hash, store.state_root()
        chain.last_cert = store.certificate(head)
    out = sys.stdout
    out.write(f"ready {head}\n")
    out.flush()
    while True:
        commit, _ = chain.synthetic_commit()
        # Build the next block (not yet committed) to accept in the same batch.
        ahead = ChainBuilder(genesis, txs_per_block=TXS_PER_BLOCK)
        ahead.height, ahead.head_hash, ahead.last_cert = chain.height, chain.head_hash, chain.last_cert
        ahead.nonces = dict(chain.nonces)
        pending = ahead.next_block(b"\x00" * 32)
        out.write(f"writing {commit.block.height}\n")
        out.flush()
        store.write(
            WriteBatch(
                accept=[pending],
                commit=[
                    Commit(commit.block, StateDelta(commit.delta.writes, commit.delta.root), commit.cert)
                ],
                hard_state=hard_state_bytes(chain.term, commit.block.height),
            )
        )
        out.write(f"committed {commit.block.height}\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1])
