"""The state's Merkle nodes: held in memory by ``LmdbStore``, written every ``NODE_FLUSH_BLOCKS``
commits and at close, rebuilt on open from the buckets the commits since then changed.

Deltas here use the ledger's layout (``merkle.raw_key`` and ``merkle.commit``), checked
against a ``MemoryKV`` that applies the same writes (the simulator's store).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import lmdb
import pytest
from store_chainkit import ChainBuilder, make_genesis

from emrp2p.ledger import merkle
from emrp2p.ledger.state import MemoryKV
from emrp2p.store import lmdb_store
from emrp2p.store.api import Commit, StateDelta, WriteBatch
from emrp2p.store.lmdb_store import LmdbStore, StoreError

KEYS = 3000


class TreeChain:
    """Blocks whose deltas change 150 ledger keys each (and delete one), with their tree nodes."""

    def __init__(self) -> None:
        self.ref = MemoryKV()
        self.genesis = make_genesis()
        self.genesis_delta = self._delta({b"g/founded": b"yes"})
        self.chain = ChainBuilder(self.genesis, root=self.genesis_delta.root)

    def _delta(self, logical: dict[bytes, bytes | None]) -> StateDelta:
        writes = {merkle.raw_key(k): v for k, v in logical.items()}
        root = merkle.commit(self.ref, writes)
        self.ref.apply(writes)
        return StateDelta(writes, root)

    def commit(self) -> Commit:
        height = self.chain.height + 1
        logical: dict[bytes, bytes | None] = {
            b"acct/%04d" % ((height * 37 + i) % KEYS): b"%d:%d" % (height, i) for i in range(150)
        }
        logical[b"acct/%04d" % ((height * 11) % KEYS)] = None
        delta = self._delta(logical)
        block = self.chain.next_block(delta.root)
        cert = self.chain.certify(block)
        self.chain.advance(block, cert, delta.root)
        return Commit(block, delta, cert)

    def start(self, store: LmdbStore, blocks: int) -> None:
        """The genesis, then ``blocks`` commits."""
        store.init_genesis(self.genesis, self.genesis_delta)
        self.write(store, blocks)

    def write(self, store: LmdbStore, n: int) -> None:
        for _ in range(n):
            store.write(WriteBatch(commit=[self.commit()]))

    def nodes(self) -> dict[bytes, bytes]:
        return dict(self.ref.items(merkle.NODE_PREFIX))


def table_nodes(store: LmdbStore) -> dict[bytes, bytes]:
    """The nodes the LMDB table itself holds."""
    with store._env.begin() as txn:
        return dict(lmdb_store._table_items(txn, store._state, merkle.NODE_PREFIX))


def dirty_heights(store: LmdbStore) -> list[int]:
    with store._env.begin() as txn:
        return [lmdb_store._key_height(k) for k, _ in txn.cursor(db=store._dirty)]


def assert_reads_match(store: LmdbStore, tc: TreeChain) -> None:
    assert merkle.state_root(store.state) == tc.chain.root == store.state_root()
    assert list(store.state.items(b"")) == list(tc.ref.items(b""))
    assert store.stats().state_entries == len(tc.ref.data)
    for i in (0, 1, 7, 2999):
        key = b"acct/%04d" % i
        proof = merkle.prove(store.state, key)
        assert merkle.verify_proof(tc.chain.root, key, tc.ref.get(merkle.raw_key(key)), proof)


@pytest.fixture
def flush_every_5(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lmdb_store, "NODE_FLUSH_BLOCKS", 5)


def test_nodes_are_written_every_flush_interval_and_read_from_memory_between(
    tmp_path: Path, flush_every_5: None
) -> None:
    tc = TreeChain()
    with LmdbStore(tmp_path / "c") as store:
        store.init_genesis(tc.genesis, tc.genesis_delta)
        genesis_nodes = tc.nodes()
        assert table_nodes(store) == genesis_nodes
        for height in range(1, 5):
            tc.write(store, 1)
            assert table_nodes(store) == genesis_nodes  # not rewritten by the commit
            assert dirty_heights(store) == list(range(1, height + 1))
            assert_reads_match(store, tc)
        tc.write(store, 1)
        assert table_nodes(store) == tc.nodes()
        assert dirty_heights(store) == []
        assert_reads_match(store, tc)


def test_closing_writes_the_nodes_and_a_reopen_reads_them(tmp_path: Path, flush_every_5: None) -> None:
    tc = TreeChain()
    with LmdbStore(tmp_path / "c") as store:
        tc.start(store, 7)
    with LmdbStore(tmp_path / "c") as store:
        assert table_nodes(store) == tc.nodes()
        assert dirty_heights(store) == []
        assert_reads_match(store, tc)


def test_after_a_crash_the_nodes_not_written_yet_are_rebuilt_on_open(
    tmp_path: Path, flush_every_5: None
) -> None:
    tc = TreeChain()
    store = LmdbStore(tmp_path / "c")
    tc.start(store, 8)  # nodes written at 5; 6..8 only in memory
    flushed = table_nodes(store)
    store._env.close()  # the crash: every commit is on disk, close() never ran
    with LmdbStore(tmp_path / "c") as store:
        assert table_nodes(store) == flushed != tc.nodes()
        assert dirty_heights(store) == [6, 7, 8]
        assert_reads_match(store, tc)
        tc.write(store, 2)  # commits go on from the rebuilt nodes; the flush at 10 writes them
        assert table_nodes(store) == tc.nodes()
        assert_reads_match(store, tc)


def test_nodes_that_do_not_give_the_head_s_state_root_are_refused_on_open(tmp_path: Path) -> None:
    tc = TreeChain()
    with LmdbStore(tmp_path / "c") as store:
        tc.start(store, 3)
        key = next(iter(tc.nodes()))
    env = lmdb.open(str(tmp_path / "c"), max_dbs=12)
    with env.begin(write=True) as txn:
        txn.put(key, b"\x00" * merkle.NODE_LEN, db=env.open_db(b"state", txn=txn))
    env.close()
    with pytest.raises(StoreError, match="Merkle nodes"):
        LmdbStore(tmp_path / "c")


def test_a_pinned_reader_keeps_the_nodes_of_its_snapshot_while_a_commit_lands(tmp_path: Path) -> None:
    tc = TreeChain()
    with LmdbStore(tmp_path / "c") as store:
        tc.start(store, 2)
        before_root, before = tc.chain.root, list(tc.ref.items(b""))
        commit = tc.commit()
        with store.pinned():
            writer = threading.Thread(target=store.write, args=(WriteBatch(commit=[commit]),))
            writer.start()
            writer.join()
            assert store.committed_height() == 2  # the snapshot's head
            assert merkle.state_root(store.state) == before_root
            assert list(store.state.items(b"")) == before
        assert store.committed_height() == 3
        assert_reads_match(store, tc)


def test_a_refused_commit_leaves_the_nodes_of_the_head(tmp_path: Path) -> None:
    tc = TreeChain()
    with LmdbStore(tmp_path / "c") as store:
        tc.start(store, 1)
        good_root, good = tc.chain.root, list(tc.ref.items(b""))
        tc.commit()
        gap = tc.commit()  # height 3 on a head of 1
        with pytest.raises(lmdb_store.InconsistentWrite):
            store.write(WriteBatch(commit=[gap]))
        assert merkle.state_root(store.state) == good_root
        assert list(store.state.items(b"")) == good


_READER = """
import sys
from emrp2p.ledger import merkle
from emrp2p.store.lmdb_store import LmdbStore
with LmdbStore(sys.argv[1], readonly=True) as ro, ro.pinned():
    print(ro.committed_height(), merkle.state_root(ro.state).hex(), len(list(ro.state.items(b""))), flush=True)
"""


def test_a_read_only_store_rebuilds_the_nodes_its_writer_holds_in_memory(tmp_path: Path) -> None:
    tc = TreeChain()
    with LmdbStore(tmp_path / "c") as store:
        tc.start(store, 4)
        assert table_nodes(store) != tc.nodes()
        out = subprocess.run(
            [sys.executable, "-c", _READER, str(tmp_path / "c")], capture_output=True, text=True, timeout=60
        )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", tc.chain.root.hex(), str(len(tc.ref.data))]
