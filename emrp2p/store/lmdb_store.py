"""The daemon's chain store: blocks, certificates, indexes, state and hard state in one LMDB environment.

Layout of a node's data directory: ``DATADIR/chain`` (``CHAIN_DIR``) is this
environment. Named sub-databases (all keys are bytes; heights are 8-byte
big-endian so that byte order is height order):

``blocks``      height -> canonical block bytes (committed blocks, heights 1..head)
``block_hash``  block hash -> height
``certs``       height -> canonical certificate bytes
``tx_index``    tx id -> height of the committed block holding it, for blocks up to ``indexed``
``state``       raw ledger state keys -> values (committed state only; its Merkle nodes as of
                ``nodes_at``, see below)
``roots``       height -> state root after that height (0 = genesis)
``accepted``    height -> block bytes, accepted but not committed
``dirty``       height -> the (2-byte) ids of the buckets its commit changed, for heights above
                ``nodes_at``
``meta``        ``genesis``, ``head`` (height, block hash, state root), ``hard_state``, ``format``,
                ``indexed`` (the height up to which ``tx_index`` is written), ``nodes_at``

Transaction ids are hashes, so each one put into ``tx_index`` lands on its own
B-tree page: indexed with every commit, a block of a hundred transactions
rewrote a hundred 4 KiB pages (half of a commit's write once the index held
~100k entries). So the index entries of recent blocks are kept in memory and
written together, sorted, once ``INDEX_FLUSH_ENTRIES`` of them (or
``INDEX_FLUSH_BLOCKS`` blocks) have gathered, right after the transaction of a
commit: a page then takes many entries at once. A flush rewrites most of the
table's pages and holds the environment's one writer lock meanwhile: 16,384
entries into a table of 150k took 17-23 ms alone (45-100 ms in 4 loaded daemons,
all at the same height), into 1M 88-94 ms. So it goes in chunks of
``INDEX_FLUSH_CHUNK`` sorted entries, one transaction each (longest 3 and 13-16 ms
there, the same in all), and lets any writer waiting meanwhile (a vote's promise,
on the consensus round's path) go between two; the last chunk moves ``indexed``.
``tx_height`` looks in memory, then in the table. The blocks are the log of what
is not written yet: opening the store indexes in memory again the entries of the
blocks above ``indexed`` that the table lacks (a flush cut short wrote some).

The state's Merkle nodes (``emrp2p.ledger.merkle``: 4,369 keys under ``b"m"``,
512 bytes each) are a function of the rest of the state, and a block rewrites one
per touched subtree and level: a block of 2,000 transactions rewrote ~2,600 of
them, most of the table's node pages, and 200 scattered updates ~1 MB of pages
in all. So the store holds the nodes in memory, one map per head height
(``Nodes``, published before the commit's transaction ends, never changed after),
and reads of ``b"m"`` keys, through any snapshot, take the map of that snapshot's
head. The table gets them every ``NODE_FLUSH_BLOCKS`` commits, within that
commit's transaction (which moves ``nodes_at`` and empties ``dirty``), and at
``close``. Each commit records the buckets it changed in ``dirty``; opening the
store (or a reader whose snapshot's map is gone: a read-only store, whose writer
is another process) takes the table's nodes, recomputes the nodes above those
buckets (``merkle.refresh``) and checks the root against the head's. After a
crash that is at most ``NODE_FLUSH_BLOCKS`` commits' buckets, all 65,536 at most.

Every ``write`` is one LMDB write transaction committed with fsync
(``sync=True, metasync=True``), so after a crash at any point either all of a
batch is on disk or none of it (an index flush behind it is bookkeeping: see
above). ``head_hash()`` at height 0 is the chain id.

Checks mirror ``emrp2p.store.memory.MemoryStore`` (so the simulator and the
daemon behave alike): commits must extend the head (height + 1, parent = head
hash, the chain id for block 1, as ``emrp2p.consensus.core`` builds it); ``certify`` keeps the first certificate stored for a
committed height and skips heights not committed yet.
"""

from __future__ import annotations

import errno
import functools
import os
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb

from emrp2p.codec import CodecError, decode, encode
from emrp2p.ledger import merkle
from emrp2p.ledger.types import Block, Certificate, Genesis
from emrp2p.store.api import KV, StateDelta, WriteBatch

__all__ = [
    "CHAIN_DIR",
    "DEFAULT_MAP_SIZE",
    "LmdbStore",
    "LmdbKV",
    "StoreError",
    "StoreFull",
    "GenesisMismatch",
    "NoGenesis",
    "InconsistentWrite",
    "StoreStats",
]

CHAIN_DIR = "chain"
"""The LMDB environment's directory inside a node's data directory."""

DEFAULT_MAP_SIZE = 64 << 30
"""Address space reserved for the environment; the file grows only as data is written."""

FORMAT_VERSION = b"2"
"""1: the Merkle nodes were written with every commit (opened as if ``nodes_at`` were the head)."""

_HEIGHT = struct.Struct(">Q")
_HEAD = struct.Struct(">Q32s32s")

_DB_NAMES = ("blocks", "block_hash", "certs", "tx_index", "state", "roots", "accepted", "meta")
_DIRTY_DB = b"dirty"
"""Opened on its own: a format 1 store lacks it (and a read-only open cannot create it)."""

_K_GENESIS = b"genesis"
_K_HEAD = b"head"
_K_HARD_STATE = b"hard_state"
_K_FORMAT = b"format"
_K_INDEXED = b"indexed"
_K_NODES_AT = b"nodes_at"

_NODE = merkle.NODE_PREFIX
_NODE_BYTE = _NODE[0]

INDEX_FLUSH_ENTRIES = 16384
"""Transaction index entries held in memory before they are written together (~3 MB)."""
INDEX_FLUSH_BLOCKS = 4096
"""...or committed blocks (what opening the store re-reads at most to index them again)."""
INDEX_FLUSH_CHUNK = 2048
"""Entries per write transaction of a flush: another writer (a vote's promise) waits for one
chunk at most, not for the whole flush."""
_YIELD_MAX_S = 0.05
"""How long a flush waits, between two chunks, for other writers to go first."""
NODE_FLUSH_BLOCKS = 256
"""Commits after which the Merkle nodes held in memory are written (with that commit)."""
_NODE_MAPS_KEPT = 4
"""Node maps of the newest heights kept for readers whose snapshot is a commit or two behind."""


class StoreError(Exception):
    """The store could not complete an operation; nothing of the failed write is on disk."""


class StoreFull(StoreError):
    """The map or the disk is full: the batch was not written. Free space or grow ``map_size``."""


class GenesisMismatch(StoreError):
    """The store already holds a different genesis (another network's data directory?)."""


class NoGenesis(StoreError):
    """A chain write before ``init_genesis``."""


class InconsistentWrite(StoreError):
    """A batch that would break the chain: a height gap, a wrong parent, a certificate for another block."""


def height_key(height: int) -> bytes:
    return _HEIGHT.pack(height)


def _key_height(key: bytes) -> int:
    height: int = _HEIGHT.unpack(key)[0]
    return height


@dataclass(frozen=True)
class StoreStats:
    """Sizes, for metrics and the operator's status command."""

    committed_height: int
    accepted_blocks: int
    state_entries: int
    tx_entries: int
    file_bytes: int
    used_bytes: int
    map_bytes: int


@dataclass(frozen=True)
class _Head:
    height: int
    block_hash: bytes
    state_root: bytes


Nodes = dict[bytes, bytes]
"""The state's Merkle nodes at one height: node key -> stored form (see ``LmdbStore``)."""


class _Reads:
    """Where reads go: a fresh short read transaction each, or the one pinned by ``LmdbStore.pinned``.

    The pin is per thread: verify-chain pinning a snapshot in a worker thread
    must not freeze what the daemon's own loop reads meanwhile. ``nodes_for``
    gives the Merkle nodes that go with a read transaction's snapshot.
    """

    __slots__ = ("env", "_local", "nodes_for")

    def __init__(self, env: lmdb.Environment, nodes_for: Any) -> None:
        self.env = env
        self._local = threading.local()
        self.nodes_for = nodes_for

    @property
    def pinned(self) -> lmdb.Transaction[bytes] | None:
        pin: lmdb.Transaction[bytes] | None = getattr(self._local, "txn", None)
        return pin

    def pin(self, txn: lmdb.Transaction[bytes] | None, nodes: Nodes | None) -> None:
        self._local.txn = txn
        self._local.nodes = nodes

    def get(self, db: Any, key: bytes) -> bytes | None:
        value: bytes | None
        pin = getattr(self._local, "txn", None)  # the ``pinned`` property, inlined: a hot path
        if pin is not None:
            value = pin.get(key, db=db)
            return value
        with self.env.begin(db=db) as txn:
            value = txn.get(key)
            return value

    def nodes(self, txn: lmdb.Transaction[bytes]) -> Nodes:
        if txn is getattr(self._local, "txn", None):
            nodes: Nodes = self._local.nodes
            return nodes
        result: Nodes = self.nodes_for(txn)
        return result

    @contextmanager
    def txn(self) -> Iterator[lmdb.Transaction[bytes]]:
        pin = self.pinned
        if pin is not None:
            yield pin
        else:
            with self.env.begin() as txn:
                yield txn


class LmdbKV:
    """Committed state, read through short read transactions (one per call).

    ``items`` holds one read transaction for the whole iteration, so it sees one
    snapshot; it is closed when the iterator is exhausted or discarded.
    """

    __slots__ = ("_reads", "_db")

    def __init__(self, reads: _Reads, db: Any) -> None:
        self._reads = reads
        self._db = db

    def get(self, key: bytes) -> bytes | None:
        if key[:1] == _NODE:
            with self._reads.txn() as txn:
                return self._reads.nodes(txn).get(key)
        return self._reads.get(self._db, key)

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        with self._reads.txn() as txn:
            yield from _prefix_items(txn, self._db, prefix, self._reads.nodes)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        with self._reads.txn() as txn:
            return _get_many(txn, self._db, keys, self._reads.nodes)

    def items_many(self, prefixes: Sequence[bytes]) -> list[list[tuple[bytes, bytes]]]:
        with self._reads.txn() as txn:
            return _prefix_lists(txn, self._db, prefixes, self._reads.nodes)


class SnapshotKV:
    """Committed state as of one read transaction (consistent across many reads)."""

    __slots__ = ("_txn", "_db", "_nodes")

    def __init__(self, txn: lmdb.Transaction[bytes], db: Any, nodes: Nodes) -> None:
        self._txn = txn
        self._db = db
        self._nodes = nodes

    def _nodes_of(self, _txn: lmdb.Transaction[bytes]) -> Nodes:
        return self._nodes

    def get(self, key: bytes) -> bytes | None:
        if key[:1] == _NODE:
            return self._nodes.get(key)
        value: bytes | None = self._txn.get(key, db=self._db)
        return value

    def items(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return _prefix_items(self._txn, self._db, prefix, self._nodes_of)

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return _get_many(self._txn, self._db, keys, self._nodes_of)

    def items_many(self, prefixes: Sequence[bytes]) -> list[list[tuple[bytes, bytes]]]:
        return _prefix_lists(self._txn, self._db, prefixes, self._nodes_of)


def _holds_nodes(prefix: bytes) -> bool:
    """Whether keys under ``prefix`` may be Merkle nodes (which the table holds only as of
    ``nodes_at``: readers take them from the store's node map instead)."""
    return prefix[:1] == _NODE or not prefix


def _table_items(txn: lmdb.Transaction[bytes], db: Any, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    cursor = txn.cursor(db=db)
    try:
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not key.startswith(prefix):
                return
            yield key, value
    finally:
        cursor.close()


def _prefix_items(
    txn: lmdb.Transaction[bytes], db: Any, prefix: bytes, nodes_of: Any
) -> Iterator[tuple[bytes, bytes]]:
    """The table's entries under ``prefix``, with the Merkle nodes of ``nodes_of(txn)`` in place of
    the table's own (in key order: all node keys share one first byte)."""
    if not _holds_nodes(prefix):
        yield from _table_items(txn, db, prefix)
        return
    nodes = sorted(kv for kv in nodes_of(txn).items() if kv[0].startswith(prefix))
    for key, value in _table_items(txn, db, prefix):
        if key[0] < _NODE_BYTE:
            yield key, value
            continue
        if nodes:
            yield from nodes
            nodes = []
        if key[0] != _NODE_BYTE:
            yield key, value
    yield from nodes


def _get_many(
    txn: lmdb.Transaction[bytes], db: Any, keys: Sequence[bytes], nodes_of: Any
) -> list[bytes | None]:
    get = txn.get
    if not any(key[:1] == _NODE for key in keys):
        return [get(key, db=db) for key in keys]
    nodes = nodes_of(txn)
    return [nodes.get(key) if key[:1] == _NODE else get(key, db=db) for key in keys]


def _prefix_lists(
    txn: lmdb.Transaction[bytes], db: Any, prefixes: Sequence[bytes], nodes_of: Any
) -> list[list[tuple[bytes, bytes]]]:
    """Each prefix's entries, through one cursor (a cursor and a generator per range cost more
    than reading a short range)."""
    out: list[list[tuple[bytes, bytes]]] = []
    cursor = txn.cursor(db=db)
    try:
        for prefix in prefixes:
            if _holds_nodes(prefix):
                out.append(list(_prefix_items(txn, db, prefix, nodes_of)))
                continue
            found: list[tuple[bytes, bytes]] = []
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not key.startswith(prefix):
                        break
                    found.append((key, value))
            out.append(found)
    finally:
        cursor.close()
    return out


def _is_full(e: lmdb.Error) -> bool:
    if isinstance(e, lmdb.MapFullError):
        return True
    code = getattr(e, "code", 0)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return "No space left" in text or "quota" in text.lower()


class LmdbStore:
    """``ChainStore`` over one LMDB environment (see the module docstring for the layout)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        readonly: bool = False,
    ) -> None:
        self.path = Path(path)
        self.readonly = readonly
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=len(_DB_NAMES) + 3,
                sync=True,
                metasync=True,
                readonly=readonly,
                create=not readonly,
                max_spare_txns=8,
                max_readers=256,
            )
        except lmdb.Error as e:
            raise StoreError(f"cannot open chain store at {self.path}: {e}") from e
        try:
            dbs = {name: self._env.open_db(name.encode(), create=not readonly) for name in _DB_NAMES}
        except lmdb.Error as e:
            self._env.close()
            raise StoreError(f"chain store at {self.path} is not initialised: {e}") from e
        try:
            self._dirty: Any = self._env.open_db(_DIRTY_DB, create=not readonly)
        except lmdb.Error:
            self._dirty = None  # format 1, read-only: its nodes are all in the table
        self._blocks = dbs["blocks"]
        self._block_hash = dbs["block_hash"]
        self._certs = dbs["certs"]
        self._tx_index = dbs["tx_index"]
        self._state = dbs["state"]
        self._roots = dbs["roots"]
        self._accepted = dbs["accepted"]
        self._meta = dbs["meta"]
        self._reads = _Reads(self._env, self._nodes_for)
        self._node_maps: dict[int, Nodes] = {}
        """Head height -> the Merkle nodes at that height, for the newest few heights. A map is
        published (for its commit's height) before the commit's transaction ends and never
        changes after: a reader whose snapshot sees a height finds its nodes here, else
        rebuilds them from that snapshot (``_nodes_for``)."""
        self._node_maps_lock = threading.Lock()
        self._state_kv = LmdbKV(self._reads, self._state)
        self._genesis: Genesis | None = None
        self._unindexed: dict[bytes, int] = {}
        """Index entries of committed blocks above ``indexed`` (tx id -> height). The writer
        adds a commit's entries before its transaction and, after a transaction that wrote
        them all to ``tx_index``, puts a fresh dict here; a dict once replaced never changes,
        so a reader that took it before the swap still finds what its snapshot lacks."""
        self._pinned_index = threading.local()
        self._indexed = 0
        self._indexed_to = 0
        """The head ``_unindexed`` was built up to (a read-only store's check for news)."""
        self._last_committed: Block | None = None
        """The newest block this store committed, as it was written (committed blocks never
        change): the head is what apps ask for most (``chain.head``), and decoding a block of
        thousands of transactions to read its header stalls the event loop for milliseconds."""
        self._closed = False
        self._waiting_writers = 0
        self._waiting_lock = threading.Lock()
        try:
            with self._env.begin() as txn:
                legacy = self._index_tail(txn)
                self._nodes_for(txn)
            if legacy and not readonly:
                self._transact(lambda t: t.put(_K_INDEXED, height_key(self._indexed), db=self._meta))
        except BaseException:
            self._env.close()
            raise

    def _index_tail(self, txn: lmdb.Transaction[bytes]) -> bool:
        """Index in memory the committed blocks above ``indexed`` as ``txn`` sees them: at open,
        and in a read-only store at each read, since another process may write the environment.
        True for a store written before the ``indexed`` key existed (every block is indexed)."""
        raw_head = txn.get(_K_HEAD, db=self._meta)
        if raw_head is None:
            return False
        head = _HEAD.unpack(raw_head)[0]
        raw = txn.get(_K_INDEXED, db=self._meta)
        indexed = head if raw is None else _key_height(raw)
        if indexed == self._indexed and head == self._indexed_to:
            return raw is None
        if indexed == self._indexed and head > self._indexed_to:
            start, unindexed = self._indexed_to, dict(self._unindexed)
        else:
            start, unindexed = indexed, {}
        for height in range(start + 1, head + 1):
            raw_block = txn.get(height_key(height), db=self._blocks)
            try:
                block = decode(Block, raw_block or b"")
            except CodecError:
                continue  # a damaged block indexes nothing; verify-chain names its height
            for tx in block.txs:
                # A flush cut short (a crash, a full disk) wrote some of these to the table.
                if txn.get(tx.tx_id, db=self._tx_index) is None:
                    unindexed[tx.tx_id] = height
        self._unindexed, self._indexed, self._indexed_to = unindexed, indexed, head
        return raw is None

    def _nodes_for(self, txn: lmdb.Transaction[bytes]) -> Nodes:
        """The Merkle nodes that go with ``txn``'s snapshot: the map published for its head, else
        rebuilt from the snapshot (and published: a read-only store, whose writer is another
        process, or a reader that fell behind the maps kept)."""
        raw_head = txn.get(_K_HEAD, db=self._meta)
        height = -1 if raw_head is None else _HEAD.unpack(raw_head)[0]
        nodes = self._node_maps.get(height)
        if nodes is None:
            nodes = self._build_nodes(txn, raw_head)
            self._publish(height, nodes)
        return nodes

    def _build_nodes(self, txn: lmdb.Transaction[bytes], raw_head: bytes | None) -> Nodes:
        """The nodes the table holds (as of ``nodes_at``), brought up to ``txn``'s head over the
        buckets the commits since then changed; checked against the head's state root."""
        if raw_head is None:
            return {}
        head, _, root = _HEAD.unpack(raw_head)
        nodes = dict(_table_items(txn, self._state, _NODE))
        raw_at = txn.get(_K_NODES_AT, db=self._meta)
        if raw_at is not None and self._dirty is not None:
            buckets: set[bytes] = set()
            cursor = txn.cursor(db=self._dirty)
            try:
                if cursor.set_range(height_key(_key_height(raw_at) + 1)):
                    for value in cursor.iternext(keys=False, values=True):
                        buckets.update(value[i : i + 2] for i in range(0, len(value), 2))
            finally:
                cursor.close()
            writes: dict[bytes, bytes | None] = {}
            merkle.refresh(SnapshotKV(txn, self._state, nodes), buckets, writes)
            for key, node in writes.items():
                if node is None:
                    nodes.pop(key, None)
                else:
                    nodes[key] = node
        # A state written without the ledger's tree (the store's own tests) has no nodes.
        if nodes and merkle.state_root(SnapshotKV(txn, self._state, nodes)) != root:
            raise StoreError(
                f"chain store at {self.path}: the state's Merkle nodes do not give the state root"
                f" of the head (height {head})"
            )
        return nodes

    def _publish(self, height: int, nodes: Nodes) -> None:
        with self._node_maps_lock:
            maps = self._node_maps
            maps[height] = nodes
            for old in sorted(maps)[:-_NODE_MAPS_KEPT]:
                del maps[old]

    # ------------------------------------------------------------------ reads

    @property
    def state(self) -> KV:
        return self._state_kv

    @contextmanager
    def snapshot(self) -> Iterator[SnapshotKV]:
        """Committed state through one read transaction: fastest for many reads (e.g. executing a block)."""
        with self._env.begin() as txn:
            yield SnapshotKV(txn, self._state, self._nodes_for(txn))

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Every read through this store object sees one snapshot until the block exits.

        For long offline reads (verify-chain) while the daemon keeps writing; the
        daemon's file cannot reuse pages freed meanwhile, so keep it short-lived.
        """
        if self._reads.pinned is not None:
            yield
            return
        with self._env.begin() as txn:
            if self.readonly:
                self._index_tail(txn)
            self._reads.pin(txn, self._nodes_for(txn))
            self._pinned_index.d = self._unindexed
            try:
                yield
            finally:
                self._reads.pin(None, None)
                self._pinned_index.d = None

    def _get(self, db: Any, key: bytes) -> bytes | None:
        return self._reads.get(db, key)

    def _head(self) -> _Head | None:
        raw = self._get(self._meta, _K_HEAD)
        if raw is None:
            return None
        height, block_hash, root = _HEAD.unpack(raw)
        return _Head(height, block_hash, root)

    def genesis(self) -> Genesis | None:
        if self._genesis is None:
            raw = self._get(self._meta, _K_GENESIS)
            if raw is not None:
                self._genesis = decode(Genesis, raw)
        return self._genesis

    def genesis_bytes(self) -> bytes | None:
        return self._get(self._meta, _K_GENESIS)

    def committed_height(self) -> int:
        head = self._head()
        return 0 if head is None else head.height

    def head_hash(self) -> bytes | None:
        """Hash of the last committed block (the chain id at height 0; None before genesis)."""
        head = self._head()
        return None if head is None else head.block_hash

    def state_root(self) -> bytes:
        head = self._head()
        if head is None:
            raise NoGenesis("the store has no genesis yet")
        return head.state_root

    def state_root_at(self, height: int) -> bytes | None:
        """State root recorded after committing ``height`` (0 = genesis)."""
        return self._get(self._roots, height_key(height))

    def block_bytes(self, height: int) -> bytes | None:
        return self._get(self._blocks, height_key(height))

    def block(self, height: int) -> Block | None:
        last = self._last_committed
        if last is not None and last.height == height and height <= self.committed_height():
            return last  # (a pinned snapshot older than the write does not see it yet)
        raw = self.block_bytes(height)
        return None if raw is None else decode(Block, raw)

    def height_of(self, block_hash: bytes) -> int | None:
        """Height of the committed block with this hash."""
        raw = self._get(self._block_hash, block_hash)
        return None if raw is None else _key_height(raw)

    def blocks_range(self, lo: int, hi: int) -> Iterator[bytes]:
        """Canonical bytes of committed blocks ``lo..hi`` (both inclusive), stopping at the first gap."""
        lo = max(lo, 1)
        with self._reads.txn() as txn:
            cursor = txn.cursor(db=self._blocks)
            if not cursor.set_key(height_key(lo)):
                return
            expected = lo
            for key, value in cursor:
                height = _key_height(key)
                if height > hi or height != expected:
                    return
                yield value
                expected += 1

    def certificate(self, height: int) -> Certificate | None:
        raw = self.certificate_bytes(height)
        return None if raw is None else decode(Certificate, raw)

    def certificate_bytes(self, height: int) -> bytes | None:
        return self._get(self._certs, height_key(height))

    def tx_height(self, tx_id: bytes) -> int | None:
        # The dict first, then the table: a flush writes the table before it swaps the dict.
        unindexed = getattr(self._pinned_index, "d", None)
        if unindexed is None:
            if self.readonly:
                with self._env.begin() as txn:
                    self._index_tail(txn)
            unindexed = self._unindexed
        height = unindexed.get(tx_id)
        if height is not None:
            return height
        raw = self._get(self._tx_index, tx_id)
        return None if raw is None else _key_height(raw)

    def accepted(self) -> list[Block]:
        with self._reads.txn() as txn:
            return [decode(Block, value) for _, value in txn.cursor(db=self._accepted)]

    def hard_state(self) -> bytes | None:
        return self._get(self._meta, _K_HARD_STATE)

    def stats(self) -> StoreStats:
        with self._reads.txn() as txn:
            accepted = txn.stat(self._accepted)["entries"]
            # The table's nodes are those of ``nodes_at``; count the head's instead.
            stored_nodes = sum(1 for _ in _table_items(txn, self._state, _NODE))
            state_entries = txn.stat(self._state)["entries"] - stored_nodes + len(self._reads.nodes(txn))
            tx_entries = txn.stat(self._tx_index)["entries"]
            raw = txn.get(_K_HEAD, db=self._meta)
        info = self._env.info()
        psize = self._env.stat()["psize"]
        data_file = self.path / "data.mdb"
        return StoreStats(
            committed_height=0 if raw is None else _HEAD.unpack(raw)[0],
            accepted_blocks=accepted,
            state_entries=state_entries,
            tx_entries=tx_entries + len(self._unindexed),
            file_bytes=data_file.stat().st_size if data_file.exists() else 0,
            used_bytes=(info["last_pgno"] + 1) * psize,
            map_bytes=info["map_size"],
        )

    # ------------------------------------------------------------------ writes

    def init_genesis(self, genesis: Genesis, delta: StateDelta) -> None:
        encoded = encode(genesis)
        existing = self._get(self._meta, _K_GENESIS)
        if existing is not None:
            if existing != encoded:
                raise GenesisMismatch(
                    f"store holds genesis {decode(Genesis, existing).chain_id.hex()}, not {genesis.chain_id.hex()}"
                )
            return

        def apply(txn: lmdb.Transaction[bytes]) -> None:
            txn.put(_K_FORMAT, FORMAT_VERSION, db=self._meta)
            txn.put(_K_GENESIS, encoded, db=self._meta)
            self._apply_delta(txn, delta, None)
            txn.put(height_key(0), delta.root, db=self._roots)
            txn.put(_K_HEAD, _HEAD.pack(0, genesis.chain_id, delta.root), db=self._meta)
            txn.put(_K_INDEXED, height_key(0), db=self._meta)
            txn.put(_K_NODES_AT, height_key(0), db=self._meta)

        self._transact(apply)
        self._genesis = genesis

    def write(self, batch: WriteBatch) -> None:
        """Apply ``batch`` in one durable transaction, in the order documented in ``store.api``."""
        if batch.empty():
            return
        unindexed = self._unindexed
        added = [
            (tx.tx_id, c.block.height)
            for c in batch.commit
            for tx in c.block.txs
            if tx.tx_id not in unindexed
        ]
        unindexed.update(added)
        try:
            self._transact(lambda txn: self._apply_batch(txn, batch))
        except BaseException:
            for tx_id, _ in added:
                unindexed.pop(tx_id, None)
            raise
        if batch.commit:
            head = batch.commit[-1].block.height
            self._last_committed = batch.commit[-1].block
            if len(unindexed) >= INDEX_FLUSH_ENTRIES or head - self._indexed >= INDEX_FLUSH_BLOCKS:
                self._flush_index(unindexed, head)

    def _flush_index(self, unindexed: dict[bytes, int], head: int) -> None:
        """Write the entries held in memory to ``tx_index`` in sorted chunks (see the module
        docstring); the last chunk sets ``indexed`` to ``head``, then the memory is emptied.

        The commits are written already: a flush that fails (a full disk) keeps in memory the
        entries its chunks did not write, and is tried again with the next commit; the store's
        next write fails as well.
        """
        entries = sorted((tx_id, height_key(h)) for tx_id, h in unindexed.items())
        step = INDEX_FLUSH_CHUNK
        chunks = [entries[i : i + step] for i in range(0, len(entries), step)] or [[]]
        done = 0
        try:
            for i, chunk in enumerate(chunks):
                if i:
                    self._let_waiting_writers_go()
                indexed = height_key(head) if i == len(chunks) - 1 else None
                self._transact(functools.partial(self._put_index_chunk, chunk=chunk, indexed=indexed))
                done += len(chunk)
        except StoreError:
            if done:  # a new dict: one a pinned reader holds never changes
                written = {tx_id for tx_id, _ in entries[:done]}
                self._unindexed = {k: h for k, h in unindexed.items() if k not in written}
            return
        self._indexed = head
        self._unindexed = {}

    def _put_index_chunk(
        self, txn: lmdb.Transaction[bytes], *, chunk: list[tuple[bytes, bytes]], indexed: bytes | None
    ) -> None:
        txn.cursor(db=self._tx_index).putmulti(chunk)
        if indexed is not None:
            txn.put(_K_INDEXED, indexed, db=self._meta)

    def _let_waiting_writers_go(self) -> None:
        deadline = time.monotonic() + _YIELD_MAX_S
        while self._waiting_writers and time.monotonic() < deadline:
            time.sleep(0.0002)

    def _transact(self, apply: Any) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        if self.readonly:
            raise StoreError("the store is open read-only")
        with self._waiting_lock:
            self._waiting_writers += 1
        try:
            txn = self._env.begin(write=True)
        except lmdb.Error as e:
            raise self._wrap(e) from e
        finally:
            with self._waiting_lock:
                self._waiting_writers -= 1
        try:
            apply(txn)
            txn.commit()
        except lmdb.Error as e:
            _abort(txn)
            raise self._wrap(e) from e
        except BaseException:
            _abort(txn)
            raise

    def _wrap(self, e: lmdb.Error) -> StoreError:
        if _is_full(e):
            return StoreFull(f"chain store at {self.path} is full: {e}")
        return StoreError(f"chain store at {self.path}: {e}")

    def _apply_delta(self, txn: lmdb.Transaction[bytes], delta: StateDelta, nodes: Nodes | None) -> None:
        """The delta's writes into the state table; its Merkle nodes into ``nodes`` instead, when
        given (the commit's buckets are then recorded in ``dirty``, by the caller)."""
        state = self._state
        puts: list[tuple[bytes, bytes]] = []
        delete = txn.delete
        for key, value in delta.writes.items():
            if nodes is not None and key[:1] == _NODE:
                if value is None:
                    nodes.pop(key, None)
                else:
                    nodes[key] = value
            elif value is None:
                delete(key, db=state)
            else:
                puts.append((key, value))
        if puts:
            txn.cursor(db=state).putmulti(puts)

    def _write_nodes(self, txn: lmdb.Transaction[bytes], nodes: Nodes, height: int) -> None:
        """Make the table's nodes those of ``height`` (what changed since ``nodes_at``) and move
        ``nodes_at`` there; the buckets recorded since are forgotten."""
        state = self._state
        stored = dict(_table_items(txn, state, _NODE))
        for key in stored.keys() - nodes.keys():
            txn.delete(key, db=state)
        puts = sorted((k, v) for k, v in nodes.items() if stored.get(k) != v)
        if puts:
            txn.cursor(db=state).putmulti(puts)
        txn.drop(self._dirty, delete=False)
        txn.put(_K_NODES_AT, height_key(height), db=self._meta)

    def _apply_batch(self, txn: lmdb.Transaction[bytes], batch: WriteBatch) -> None:
        raw_head = txn.get(_K_HEAD, db=self._meta)
        if raw_head is None:
            raise NoGenesis("init_genesis must come before any chain write")
        head_height, head_hash, head_root = _HEAD.unpack(raw_head)
        start_height = head_height
        # A copy: the map published for the head never changes (readers hold it).
        nodes = dict(self._nodes_for(txn)) if batch.commit else None

        if batch.truncate_accepted_from is not None:
            cursor = txn.cursor(db=self._accepted)
            if cursor.set_range(height_key(batch.truncate_accepted_from)):
                while cursor.delete():
                    pass
            cursor.close()

        for block in batch.accept:
            if block.height <= head_height:
                continue  # already settled by a commit
            txn.put(height_key(block.height), block.encoded, db=self._accepted)

        for commit in batch.commit:
            block = commit.block
            header = block.header
            height = header.height
            if height != head_height + 1:
                raise InconsistentWrite(f"commit of height {height} after head {head_height}")
            if header.parent != head_hash:
                raise InconsistentWrite(f"block {height} does not extend the head {head_hash.hex()[:16]}")
            block_hash = header.block_hash
            hkey = height_key(height)
            txn.put(hkey, block.encoded, db=self._blocks)
            txn.put(block_hash, hkey, db=self._block_hash)
            if commit.cert is not None:
                self._check_cert(commit.cert, height, block_hash)
                txn.put(hkey, encode(commit.cert), db=self._certs)
            self._apply_delta(txn, commit.delta, nodes)
            buckets = merkle.touched_buckets(commit.delta.writes)
            if buckets:
                txn.put(hkey, b"".join(sorted(buckets)), db=self._dirty)
            txn.put(hkey, commit.delta.root, db=self._roots)
            txn.delete(hkey, db=self._accepted)
            head_height, head_hash, head_root = height, block_hash, commit.delta.root

        if batch.commit:
            txn.put(_K_HEAD, _HEAD.pack(head_height, head_hash, head_root), db=self._meta)
            # Anything accepted at a committed height is settled now.
            cursor = txn.cursor(db=self._accepted)
            while cursor.first() and _key_height(cursor.key()) <= head_height:
                cursor.delete()
            cursor.close()

        if batch.hard_state is not None:
            txn.put(_K_HARD_STATE, batch.hard_state, db=self._meta)

        for cert in batch.certify:
            hkey = height_key(cert.height)
            if not 1 <= cert.height <= head_height or txn.get(hkey, db=self._certs) is not None:
                continue  # not committed yet (it will come with its block), or already proven
            if txn.get(cert.block_hash, db=self._block_hash) != hkey:
                raise InconsistentWrite(
                    f"certificate names a block that is not the committed one at {cert.height}"
                )
            txn.put(hkey, encode(cert), db=self._certs)

        if nodes is None:
            return
        raw_at = txn.get(_K_NODES_AT, db=self._meta)
        nodes_at = start_height if raw_at is None else _key_height(raw_at)  # format 1: exact at the head
        if head_height - nodes_at >= NODE_FLUSH_BLOCKS:
            self._write_nodes(txn, nodes, head_height)
        elif raw_at is None:
            txn.put(_K_NODES_AT, height_key(nodes_at), db=self._meta)
        # Before the transaction ends, so that any snapshot with this head finds its map. Should
        # the commit fail, no snapshot ever sees this height with it: the next commit of the
        # height publishes its own.
        self._publish(head_height, nodes)

    @staticmethod
    def _check_cert(cert: Certificate, height: int, block_hash: bytes) -> None:
        if cert.height != height or cert.block_hash != block_hash:
            raise InconsistentWrite(f"certificate for height {cert.height} does not name block {height}")

    def close(self) -> None:
        """Writes the Merkle nodes held in memory (a reopen then has nothing to rebuild), then
        closes; a failure to write them loses nothing (a reopen rebuilds them)."""
        if not self._closed:
            if not self.readonly:
                with suppress(StoreError):
                    self._transact(self._write_head_nodes)
            self._closed = True
            self._env.close()

    def _write_head_nodes(self, txn: lmdb.Transaction[bytes]) -> None:
        raw_head = txn.get(_K_HEAD, db=self._meta)
        raw_at = txn.get(_K_NODES_AT, db=self._meta)
        if raw_head is None or raw_at is None:
            return
        head = _HEAD.unpack(raw_head)[0]
        if _key_height(raw_at) < head:
            self._write_nodes(txn, self._nodes_for(txn), head)

    def __enter__(self) -> LmdbStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _abort(txn: lmdb.Transaction[bytes]) -> None:
    with suppress(lmdb.Error):
        txn.abort()


def open_chain_store(datadir: str | os.PathLike[str], *, readonly: bool = False) -> LmdbStore:
    """The chain store of a node's data directory (``DATADIR/chain``)."""
    return LmdbStore(Path(datadir) / CHAIN_DIR, readonly=readonly)
