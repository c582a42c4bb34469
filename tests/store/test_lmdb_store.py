"""LmdbStore: the chain, its indexes, state and hard state, one atomic durable write per batch."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import lmdb
import pytest
from store_chainkit import ChainBuilder, expected_state, genesis_delta, hard_state_bytes, make_genesis

from emrp2p.codec import decode, encode
from emrp2p.ledger.types import Block, Genesis
from emrp2p.store import lmdb_store
from emrp2p.store.api import Commit, StateDelta, WriteBatch
from emrp2p.store.lmdb_store import (
    CHAIN_DIR,
    GenesisMismatch,
    InconsistentWrite,
    LmdbStore,
    NoGenesis,
    StoreError,
    StoreFull,
    open_chain_store,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LmdbStore]:
    s = LmdbStore(tmp_path / "chain")
    yield s
    s.close()


@pytest.fixture
def genesis() -> Genesis:
    return make_genesis()


def init(store: LmdbStore, genesis: Genesis) -> ChainBuilder:
    store.init_genesis(genesis, genesis_delta())
    return ChainBuilder(genesis)


def commit_n(store: LmdbStore, chain: ChainBuilder, n: int) -> list[Commit]:
    out = []
    for _ in range(n):
        commit, batch = chain.synthetic_commit()
        store.write(batch)
        out.append(commit)
    return out


def test_an_empty_store_has_no_genesis_and_height_zero(store: LmdbStore) -> None:
    assert store.genesis() is None
    assert store.committed_height() == 0
    assert store.head_hash() is None
    assert store.accepted() == []
    assert store.hard_state() is None
    with pytest.raises(NoGenesis):
        store.state_root()


def test_init_genesis_writes_the_genesis_and_initial_state(store: LmdbStore, genesis: Genesis) -> None:
    store.init_genesis(genesis, genesis_delta())
    assert store.genesis() == genesis
    assert store.genesis_bytes() == encode(genesis)
    assert store.committed_height() == 0
    assert store.head_hash() == genesis.chain_id
    assert store.state_root() == genesis_delta().root
    assert store.state_root_at(0) == genesis_delta().root
    assert store.state.get(b"g/founded") == b"yes"


def test_init_genesis_is_idempotent_for_the_same_genesis(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    commit_n(store, chain, 2)
    store.init_genesis(genesis, genesis_delta())
    assert store.committed_height() == 2
    assert store.state.get(b"counter") == b"2"


def test_init_genesis_refuses_a_different_genesis(tmp_path: Path, genesis: Genesis) -> None:
    with LmdbStore(tmp_path / "c") as s:
        s.init_genesis(genesis, genesis_delta())
    with LmdbStore(tmp_path / "c") as s, pytest.raises(GenesisMismatch):
        s.init_genesis(make_genesis("another-network"), genesis_delta())


def test_a_chain_write_before_genesis_is_refused(store: LmdbStore, genesis: Genesis) -> None:
    _, batch = ChainBuilder(genesis).synthetic_commit()
    with pytest.raises(NoGenesis):
        store.write(batch)
    assert store.block(1) is None


def test_committed_blocks_are_readable_by_height_hash_and_tx(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    commits = commit_n(store, chain, 3)
    assert store.committed_height() == 3
    for c in commits:
        h = c.block.height
        assert store.block(h) == c.block
        assert store.block_bytes(h) == encode(c.block)
        assert store.certificate(h) == c.cert
        assert store.height_of(c.block.block_hash) == h
        assert store.state_root_at(h) == c.delta.root
        for tx in c.block.txs:
            assert store.tx_height(tx.tx_id) == h
    assert store.head_hash() == commits[-1].block.block_hash
    assert store.state_root() == commits[-1].delta.root
    assert store.block(4) is None
    assert store.certificate(4) is None
    assert store.tx_height(b"\x00" * 32) is None
    assert store.height_of(b"\x00" * 32) is None


def test_the_head_block_is_answered_as_written_and_older_ones_from_disk(
    store: LmdbStore, genesis: Genesis, tmp_path: Path
) -> None:
    chain = init(store, genesis)
    commits = commit_n(store, chain, 2)
    assert store.block(2) is commits[1].block  # no decode of the head (chain.head asks for it)
    assert store.block(1) is not commits[0].block and store.block(1) == commits[0].block
    (later,) = commit_n(store, chain, 1)
    assert store.block(3) is later.block
    assert store.block(2) == commits[1].block and store.block(2) is not commits[1].block
    # A refused write (a height gap) leaves the head as it was.
    chain.synthetic_commit()
    _, gap = chain.synthetic_commit()
    with pytest.raises(InconsistentWrite):
        store.write(gap)
    assert store.block(3) is later.block and store.block(5) is None
    store.close()
    reopened = LmdbStore(tmp_path / "chain")
    try:
        assert reopened.block(3) == later.block
    finally:
        reopened.close()


def test_state_follows_the_deltas_with_none_deleting(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    commit_n(store, chain, 7)
    state, root = expected_state(7)
    assert store.state_root() == root
    assert dict(store.state.items(b"")) == state
    assert store.state.get(b"h/00000003") is None  # deleted at height 6
    assert store.state.get(b"h/00000007") == bytes([7]) * 64


def test_items_yields_only_the_prefix_in_ascending_key_order(store: LmdbStore, genesis: Genesis) -> None:
    store.init_genesis(
        genesis,
        StateDelta({b"a/2": b"x", b"a/1": b"y", b"a": b"z", b"b/1": b"w", b"a/\xff": b"v"}, b"r" * 32),
    )
    assert list(store.state.items(b"a/")) == [(b"a/1", b"y"), (b"a/2", b"x"), (b"a/\xff", b"v")]
    assert list(store.state.items(b"c")) == []
    assert list(store.state.items(b"b/1")) == [(b"b/1", b"w")]
    assert [k for k, _ in store.state.items(b"")] == [b"a", b"a/1", b"a/2", b"a/\xff", b"b/1"]


def test_an_abandoned_items_iterator_does_not_block_writes(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    commit_n(store, chain, 1)
    it = store.state.items(b"k/")
    next(it)
    del it
    commit_n(store, chain, 1)
    assert store.committed_height() == 2


def test_a_snapshot_keeps_seeing_the_state_it_was_opened_on(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    commit_n(store, chain, 1)
    with store.snapshot() as snap:
        commit_n(store, chain, 1)
        assert snap.get(b"counter") == b"1"
        assert store.state.get(b"counter") == b"2"
        assert [k for k, _ in snap.items(b"h/")] == [b"h/00000001"]


def test_a_height_gap_is_refused_and_nothing_of_the_batch_is_written(
    store: LmdbStore, genesis: Genesis
) -> None:
    chain = init(store, genesis)
    commit_n(store, chain, 1)
    skipped, _ = chain.synthetic_commit()
    gap, _ = chain.synthetic_commit()
    with pytest.raises(InconsistentWrite):
        store.write(WriteBatch(accept=[skipped.block], commit=[gap], hard_state=b"hs"))
    assert store.committed_height() == 1
    assert store.accepted() == []
    assert store.hard_state() == hard_state_bytes(1, 1)
    assert store.block(3) is None


def test_a_block_that_does_not_extend_the_head_is_refused(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    commit_n(store, chain, 1)
    fork = ChainBuilder(genesis)
    fork.term = 2
    forked, _ = fork.synthetic_commit()
    other, _ = fork.synthetic_commit()  # height 2, parent is the fork's block 1
    with pytest.raises(InconsistentWrite):
        store.write(WriteBatch(commit=[other]))
    assert forked.block.block_hash != store.head_hash()
    assert store.committed_height() == 1


def test_a_certificate_for_another_block_is_refused(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    first, _ = chain.synthetic_commit()
    second, _ = chain.synthetic_commit()
    with pytest.raises(InconsistentWrite):
        store.write(WriteBatch(commit=[Commit(first.block, first.delta, second.cert)]))
    assert store.committed_height() == 0


def test_several_commits_in_one_batch_all_land(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    commits = [chain.synthetic_commit()[0] for _ in range(4)]
    store.write(WriteBatch(commit=commits))
    assert store.committed_height() == 4
    assert dict(store.state.items(b"")) == expected_state(4)[0]


def test_accepted_blocks_are_listed_in_height_order_until_committed(
    store: LmdbStore, genesis: Genesis
) -> None:
    chain = init(store, genesis)
    c1, _ = chain.synthetic_commit()
    c2, _ = chain.synthetic_commit()
    c3, _ = chain.synthetic_commit()
    store.write(WriteBatch(accept=[c2.block, c1.block]))
    store.write(WriteBatch(accept=[c3.block]))
    assert store.accepted() == [c1.block, c2.block, c3.block]
    store.write(WriteBatch(commit=[Commit(c1.block, c1.delta, None), Commit(c2.block, c2.delta, c2.cert)]))
    assert store.accepted() == [c3.block]
    assert store.committed_height() == 2


def test_a_block_committed_through_a_descendant_has_no_certificate_of_its_own(
    store: LmdbStore, genesis: Genesis
) -> None:
    chain = init(store, genesis)
    c1, _ = chain.synthetic_commit()
    c2, _ = chain.synthetic_commit()
    store.write(WriteBatch(commit=[Commit(c1.block, c1.delta, None), c2]))
    assert store.certificate(1) is None
    assert store.certificate(2) == c2.cert


def test_truncate_drops_accepted_blocks_from_a_height_before_accepting_new_ones(
    store: LmdbStore, genesis: Genesis
) -> None:
    chain = init(store, genesis)
    blocks = [chain.synthetic_commit()[0].block for _ in range(4)]
    store.write(WriteBatch(accept=blocks))
    replacement = ChainBuilder(genesis, term=2)
    replacement.advance(blocks[1], None, b"")
    new3 = replacement.next_block(b"\x01" * 32)
    store.write(WriteBatch(truncate_accepted_from=3, accept=[new3]))
    assert store.accepted() == [blocks[0], blocks[1], new3]
    store.write(WriteBatch(truncate_accepted_from=1))
    assert store.accepted() == []


def test_a_batch_cut_between_its_split_parts_reopens_with_what_the_first_part_promised(
    tmp_path: Path, genesis: Genesis
) -> None:
    """``WriteBatch.split``: votes and accepted blocks first, commits second. A crash between the
    two writes leaves a store that opens with the accepted blocks (the commit is learnt again
    from the peers); writing the second part then gives what the whole batch would have."""
    store = LmdbStore(tmp_path / "chain")
    chain = init(store, genesis)
    c1, _ = chain.synthetic_commit()
    c2, _ = chain.synthetic_commit()
    store.write(WriteBatch(accept=[c1.block]))
    whole = WriteBatch(accept=[c2.block], commit=[c1], hard_state=b"vote:t1:h2")
    promises, commits = whole.split()
    assert promises == WriteBatch(accept=[c2.block], hard_state=b"vote:t1:h2")
    assert commits == WriteBatch(commit=[c1])
    store.write(promises)
    store.close()  # the crash: the commits never written
    store = LmdbStore(tmp_path / "chain")
    try:
        assert store.committed_height() == 0
        assert store.accepted() == [c1.block, c2.block]
        assert store.hard_state() == b"vote:t1:h2"
        store.write(commits)
        assert store.committed_height() == 1
        assert store.accepted() == [c2.block]
        assert dict(store.state.items(b"")) == expected_state(1)[0]
    finally:
        store.close()


def test_accepting_a_block_at_a_committed_height_is_a_no_op(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    (c1,) = commit_n(store, chain, 1)
    store.write(WriteBatch(accept=[c1.block]))
    assert store.accepted() == []


def test_hard_state_is_kept_until_a_batch_replaces_it(store: LmdbStore, genesis: Genesis) -> None:
    init(store, genesis)
    store.write(WriteBatch(hard_state=b"vote:t1:h1"))
    store.write(WriteBatch(truncate_accepted_from=5))
    assert store.hard_state() == b"vote:t1:h1"
    store.write(WriteBatch(hard_state=b"vote:t2:h1"))
    assert store.hard_state() == b"vote:t2:h1"


def test_certify_stores_a_late_certificate_for_a_committed_block(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    c1, _ = chain.synthetic_commit()
    store.write(WriteBatch(commit=[Commit(c1.block, c1.delta, None)]))
    assert store.certificate(1) is None
    assert c1.cert is not None
    store.write(WriteBatch(certify=[c1.cert]))
    assert store.certificate(1) == c1.cert


def test_certify_skips_uncommitted_heights_and_keeps_the_first_certificate(
    store: LmdbStore, genesis: Genesis
) -> None:
    chain = init(store, genesis)
    (c1,) = commit_n(store, chain, 1)
    c2, _ = chain.synthetic_commit()
    assert c1.cert is not None and c2.cert is not None
    store.write(WriteBatch(certify=[c2.cert]))
    assert store.certificate(2) is None
    other_signers = chain.certify(c1.block, signers=4)
    store.write(WriteBatch(certify=[other_signers]))
    assert store.certificate(1) == c1.cert
    store.write(WriteBatch(commit=[c2]))
    assert store.certificate(2) == c2.cert


def test_certify_refuses_a_certificate_for_a_different_block_at_a_committed_height(
    store: LmdbStore, genesis: Genesis
) -> None:
    chain = init(store, genesis)
    c1, _ = chain.synthetic_commit()
    store.write(WriteBatch(commit=[Commit(c1.block, c1.delta, None)], hard_state=b"before"))
    fork = ChainBuilder(genesis, term=3)
    other, _ = fork.synthetic_commit()
    assert other.cert is not None
    with pytest.raises(InconsistentWrite):
        store.write(WriteBatch(hard_state=b"not-written", certify=[other.cert]))
    assert store.certificate(1) is None
    assert store.hard_state() == b"before"


def test_blocks_range_yields_committed_block_bytes_inclusive(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    commits = commit_n(store, chain, 5)
    assert list(store.blocks_range(2, 4)) == [encode(c.block) for c in commits[1:4]]
    assert list(store.blocks_range(0, 2)) == [encode(c.block) for c in commits[:2]]
    assert list(store.blocks_range(4, 99)) == [encode(c.block) for c in commits[3:]]
    assert list(store.blocks_range(6, 9)) == []


def test_an_empty_batch_writes_nothing(store: LmdbStore, genesis: Genesis) -> None:
    init(store, genesis)
    before = store._env.info()["last_txnid"]
    store.write(WriteBatch())
    assert store._env.info()["last_txnid"] == before


def test_a_full_map_raises_store_full_and_leaves_the_store_as_it_was(
    tmp_path: Path, genesis: Genesis
) -> None:
    path = tmp_path / "small"
    with LmdbStore(path, map_size=2 << 20) as s:
        chain = init(s, genesis)
        commit_n(s, chain, 1)
        big, _ = chain.synthetic_commit()
        writes = dict(big.delta.writes)
        writes.update({b"big/%d" % i: b"x" * 200_000 for i in range(20)})
        with pytest.raises(StoreFull):
            s.write(WriteBatch(commit=[Commit(big.block, StateDelta(writes, big.delta.root), big.cert)]))
        assert s.committed_height() == 1
        assert s.state.get(b"big/0") is None
        s.write(WriteBatch(commit=[big]))  # the same block without the oversized writes still fits
        assert s.committed_height() == 2
    with LmdbStore(path, map_size=2 << 20) as s:
        assert s.committed_height() == 2
        assert dict(s.state.items(b"")) == expected_state(2)[0]


def test_store_full_is_a_store_error() -> None:
    assert issubclass(StoreFull, StoreError)


def test_everything_survives_a_reopen(tmp_path: Path, genesis: Genesis) -> None:
    with open_chain_store(tmp_path) as s:
        chain = init(s, genesis)
        commits = commit_n(s, chain, 3)
        s.write(WriteBatch(accept=[chain.next_block(b"\x02" * 32)]))
    assert (tmp_path / CHAIN_DIR / "data.mdb").exists()
    with open_chain_store(tmp_path) as s:
        assert s.genesis() == genesis
        assert s.committed_height() == 3
        assert s.block(3) == commits[2].block
        assert [b.height for b in s.accepted()] == [4]
        assert s.hard_state() == hard_state_bytes(1, 3)
        assert dict(s.state.items(b"")) == expected_state(3)[0]


def test_a_read_only_store_reads_but_refuses_writes(tmp_path: Path, genesis: Genesis) -> None:
    with LmdbStore(tmp_path / "c") as s:
        chain = init(s, genesis)
        commit_n(s, chain, 2)
    with LmdbStore(tmp_path / "c", readonly=True) as ro:
        assert ro.committed_height() == 2
        assert ro.block(2) is not None
        with pytest.raises(StoreError):
            ro.write(WriteBatch(hard_state=b"x"))


def test_opening_a_missing_store_read_only_fails_with_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        LmdbStore(tmp_path / "nothing-here", readonly=True)


def test_a_closed_store_refuses_writes(tmp_path: Path, genesis: Genesis) -> None:
    s = LmdbStore(tmp_path / "c")
    s.init_genesis(genesis, genesis_delta())
    s.close()
    s.close()
    with pytest.raises(StoreError):
        s.write(WriteBatch(hard_state=b"x"))


def test_stats_report_entries_and_sizes(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    commit_n(store, chain, 3)
    store.write(WriteBatch(accept=[chain.next_block(b"\x03" * 32)]))
    st = store.stats()
    assert st.committed_height == 3
    assert st.accepted_blocks == 1
    assert st.state_entries == len(expected_state(3)[0])
    assert st.tx_entries == 3 * chain.txs_per_block
    assert 0 < st.used_bytes <= st.file_bytes <= st.map_bytes


def test_the_store_is_durable_by_configuration(store: LmdbStore) -> None:
    flags = store._env.flags()
    assert flags["sync"] and flags["metasync"] and not flags["map_async"]
    assert isinstance(store._env, lmdb.Environment)


def test_block_one_must_have_the_chain_id_as_parent(store: LmdbStore, genesis: Genesis) -> None:
    init(store, genesis)
    chain = ChainBuilder(genesis, head_hash=b"\x09" * 32)
    orphan, _ = chain.synthetic_commit()
    with pytest.raises(InconsistentWrite):
        store.write(WriteBatch(commit=[orphan]))
    assert store.committed_height() == 0


@pytest.mark.parametrize("count", [0, 1, 23, 24, 255, 256, 300])
def test_a_block_written_with_its_transactions_cached_encodings_is_canonical(
    genesis: Genesis, count: int
) -> None:
    chain = ChainBuilder(genesis)
    first, _ = chain.synthetic_commit()
    block = chain.next_block(b"\x05" * 32, chain.make_txs(count))
    assert block.header.parent_cert is not None
    for b in (block, first.block):
        data = encode(b)
        assert cbor2.dumps(cbor2.loads(data), canonical=True) == data
        assert decode(Block, data) == b


def test_pinned_reads_see_one_snapshot_until_released(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    commit_n(store, chain, 1)
    with store.pinned():
        commit_n(store, chain, 1)
        assert store.committed_height() == 1
        assert store.state.get(b"counter") == b"1"
        assert [k for k, _ in store.state.items(b"h/")] == [b"h/00000001"]
        assert store.block(2) is None
        assert list(store.blocks_range(1, 5)) == [store.block_bytes(1)]
    assert store.committed_height() == 2
    assert store.state.get(b"counter") == b"2"


def _index_table(store: LmdbStore) -> dict[bytes, int]:
    """What the ``tx_index`` table itself holds (not the entries kept in memory)."""
    with store._env.begin() as txn:
        return {k: int.from_bytes(v, "big") for k, v in txn.cursor(db=store._tx_index)}


def test_index_entries_are_written_together_once_enough_gathered_and_answered_all_along(
    store: LmdbStore, genesis: Genesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = init(store, genesis)
    per_block = chain.txs_per_block
    monkeypatch.setattr(lmdb_store, "INDEX_FLUSH_ENTRIES", 3 * per_block)
    commits = commit_n(store, chain, 2)
    assert _index_table(store) == {}  # held in memory
    assert all(store.tx_height(tx.tx_id) == c.block.height for c in commits for tx in c.block.txs)
    assert store.stats().tx_entries == 2 * per_block
    commits += commit_n(store, chain, 1)  # the third block's commit writes all three, sorted
    table = _index_table(store)
    assert table == {tx.tx_id: c.block.height for c in commits for tx in c.block.txs}
    commits += commit_n(store, chain, 1)
    assert len(_index_table(store)) == 3 * per_block
    assert all(store.tx_height(tx.tx_id) == c.block.height for c in commits for tx in c.block.txs)
    assert store.stats().tx_entries == 4 * per_block


def _two_blocks_before_a_flush_of_three_chunks(
    store: LmdbStore, genesis: Genesis, monkeypatch: pytest.MonkeyPatch
) -> tuple[ChainBuilder, list[Commit]]:
    """Two blocks committed; the third's commit flushes the index, one block's entries a chunk."""
    chain = init(store, genesis)
    monkeypatch.setattr(lmdb_store, "INDEX_FLUSH_ENTRIES", 3 * chain.txs_per_block)
    monkeypatch.setattr(lmdb_store, "INDEX_FLUSH_CHUNK", chain.txs_per_block)
    return chain, commit_n(store, chain, 2)


def test_an_index_flush_goes_in_sorted_chunks_and_the_last_one_moves_indexed(
    tmp_path: Path, genesis: Genesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_chain_store(tmp_path) as s:
        chain, commits = _two_blocks_before_a_flush_of_three_chunks(s, genesis, monkeypatch)
        transactions: list[str] = []
        real = s._transact

        def counting(apply: object) -> None:
            transactions.append("write")
            real(apply)

        monkeypatch.setattr(s, "_transact", counting)
        commits += commit_n(s, chain, 1)
        assert len(transactions) == 1 + 3  # the commit, then three chunks of the flush
        assert _index_table(s) == {tx.tx_id: c.block.height for c in commits for tx in c.block.txs}
        with s._env.begin() as txn:
            assert txn.get(b"indexed", db=s._meta) == (3).to_bytes(8, "big")
    with open_chain_store(tmp_path) as s:
        assert s._unindexed == {}
        assert all(s.tx_height(tx.tx_id) == c.block.height for c in commits for tx in c.block.txs)


def test_an_index_flush_cut_short_counts_each_entry_once_and_is_finished_later(
    tmp_path: Path, genesis: Genesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up before the flush's last chunk: the commit stands, the entries its
    chunks wrote leave the memory, and nothing is counted twice, then or after a reopen."""
    with open_chain_store(tmp_path) as s:
        chain, commits = _two_blocks_before_a_flush_of_three_chunks(s, genesis, monkeypatch)
        per_block = chain.txs_per_block
        real = s._transact
        calls: list[int] = []

        def full_at_the_last_chunk(apply: object) -> None:
            calls.append(1)
            if len(calls) == 4:  # the commit, two chunks, then this
                raise StoreFull("no space left on device")
            real(apply)

        monkeypatch.setattr(s, "_transact", full_at_the_last_chunk)
        commits += commit_n(s, chain, 1)
        assert s.committed_height() == 3
        assert len(_index_table(s)) == 2 * per_block
        assert len(s._unindexed) == per_block
        assert s.stats().tx_entries == 3 * per_block
        monkeypatch.setattr(s, "_transact", real)
    with open_chain_store(tmp_path) as s:
        assert s.stats().tx_entries == 3 * per_block
        assert all(s.tx_height(tx.tx_id) == c.block.height for c in commits for tx in c.block.txs)
        commits += commit_n(s, chain, 2)  # a later flush writes the rest with the new entries
        assert _index_table(s) == {tx.tx_id: c.block.height for c in commits for tx in c.block.txs}
        assert s.stats().tx_entries == 5 * per_block


def test_a_write_waiting_during_an_index_flush_goes_before_the_flush_s_next_chunk(
    store: LmdbStore, genesis: Genesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A vote's promise must not wait for a whole flush (tens of ms on a long chain)."""
    chain, _ = _two_blocks_before_a_flush_of_three_chunks(store, genesis, monkeypatch)
    order: list[str] = []
    real_transact = store._transact
    promise = threading.Thread(target=lambda: store.write(WriteBatch(hard_state=b"vote")))

    def transact(apply: object) -> None:
        def inside(txn: lmdb.Transaction[bytes]) -> None:
            apply(txn)  # type: ignore[operator]
            if threading.current_thread() is promise:
                order.append("promise")
                return
            order.append("write")
            if len(order) == 2:  # inside the flush's first chunk: the promise waits for the lock
                promise.start()
                deadline = time.monotonic() + 10
                while store._waiting_writers == 0 and time.monotonic() < deadline:
                    time.sleep(0.001)
                assert store._waiting_writers == 1

        real_transact(inside)

    monkeypatch.setattr(store, "_transact", transact)
    commit_n(store, chain, 1)
    promise.join(10)
    assert order == ["write", "write", "promise", "write", "write"]  # commit, chunk, promise, chunks
    assert store.hard_state() == b"vote"


def test_entries_not_written_yet_are_indexed_again_from_the_blocks_on_reopen(
    tmp_path: Path, genesis: Genesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_chain_store(tmp_path) as s:
        chain = init(s, genesis)
        monkeypatch.setattr(lmdb_store, "INDEX_FLUSH_ENTRIES", 2 * chain.txs_per_block)
        commits = commit_n(s, chain, 3)  # the first two written to the table, the third not
        assert len(_index_table(s)) == 2 * chain.txs_per_block
    for readonly in (False, True):
        with LmdbStore(tmp_path / CHAIN_DIR, readonly=readonly) as s:
            assert all(s.tx_height(tx.tx_id) == c.block.height for c in commits for tx in c.block.txs)


_READER = """
import sys
from emrp2p.store.lmdb_store import LmdbStore
with LmdbStore(sys.argv[1], readonly=True) as ro:
    print("open", flush=True)
    ids = [bytes.fromhex(h) for h in sys.stdin.readline().split()]
    print(*[ro.tx_height(i) for i in ids], flush=True)
    with ro.pinned():
        print(*[ro.tx_height(i) for i in ids], flush=True)
"""


def test_a_read_only_store_finds_transactions_another_process_commits_after_it_opened(
    tmp_path: Path, genesis: Genesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LmdbStore(tmp_path / "c") as writer:
        chain = init(writer, genesis)
        monkeypatch.setattr(lmdb_store, "INDEX_FLUSH_ENTRIES", 2 * chain.txs_per_block)
        first = commit_n(writer, chain, 1)[0]
        reader = subprocess.Popen(
            [sys.executable, "-c", _READER, str(tmp_path / "c")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert reader.stdout is not None and reader.stdin is not None
        assert reader.stdout.readline() == "open\n"  # it indexed block 1 in its memory
        later = commit_n(writer, chain, 1)[0]  # blocks 1 and 2 go to the table
        latest = commit_n(writer, chain, 1)[0]  # in the writer's memory only
        ids = [c.block.txs[0].tx_id.hex() for c in (first, later, latest)]
        out, _ = reader.communicate(" ".join(ids) + "\n", timeout=60)
    assert out.splitlines() == ["1 2 3", "1 2 3"]


def test_a_pinned_reader_keeps_finding_entries_written_to_the_table_after_its_snapshot(
    store: LmdbStore, genesis: Genesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    chain = init(store, genesis)
    monkeypatch.setattr(lmdb_store, "INDEX_FLUSH_ENTRIES", 2 * chain.txs_per_block)
    first = commit_n(store, chain, 1)[0]
    with store.pinned():  # its snapshot's table lacks block 1's entries; the flush below swaps the memory
        commit_n(store, chain, 1)
        assert store.tx_height(first.block.txs[0].tx_id) == 1
    assert store.tx_height(first.block.txs[0].tx_id) == 1


def test_a_refused_commit_leaves_no_index_entries(store: LmdbStore, genesis: Genesis) -> None:
    chain = init(store, genesis)
    commit_n(store, chain, 1)
    chain.synthetic_commit()
    gap, _ = chain.synthetic_commit()
    with pytest.raises(InconsistentWrite):
        store.write(WriteBatch(commit=[gap]))
    assert all(store.tx_height(tx.tx_id) is None for tx in gap.block.txs)
    assert store.stats().tx_entries == chain.txs_per_block


def test_a_store_written_before_the_indexed_key_counts_every_block_as_indexed(
    tmp_path: Path, genesis: Genesis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lmdb_store, "INDEX_FLUSH_ENTRIES", 1)
    with LmdbStore(tmp_path / "c") as s:
        chain = init(s, genesis)
        commits = commit_n(s, chain, 2)
    env = lmdb.open(str(tmp_path / "c"), max_dbs=12)
    with env.begin(write=True) as txn:
        assert txn.delete(b"indexed", db=env.open_db(b"meta", txn=txn))
    env.close()
    with LmdbStore(tmp_path / "c") as s:
        assert all(s.tx_height(tx.tx_id) == c.block.height for c in commits for tx in c.block.txs)
        commits += commit_n(s, chain, 1)
    with LmdbStore(tmp_path / "c", readonly=True) as s:  # the key is back: block 3 is indexed again
        assert all(s.tx_height(tx.tx_id) == c.block.height for c in commits for tx in c.block.txs)
