"""The state commitment: a 16-ary Merkle tree over 2^16 hash buckets, with proofs.

Every logical state key ``k`` lives in bucket ``sha256(k)[:2]`` and is stored
under the raw key ``b"s" + bucket + k``. A bucket's hash covers its sorted,
length-prefixed (key, value) pairs. Above the buckets sit four levels of
16-ary nodes; each node is stored in the state itself, under
``b"m" + level + index``, as the 16 child hashes it commits to (512 bytes),
and its hash is ``sha256(0x01 + those 512 bytes)``. The root is the hash of
the level-0 node. A block therefore reads and rewrites one node per touched
subtree and level (about 4,400 at most, far fewer than a binary tree's
per-level siblings), and rehashes only the buckets it touched. Nodes that
commit to nothing but empty subtrees are not stored, so an empty state has a
fixed root and no node keys.

The nodes are state like any other key to the ledger; the daemon's store keeps
them in memory and writes them now and then (``emrp2p.store.lmdb_store``),
rebuilding what it had not written with ``refresh``.

A proof for one key is its whole bucket plus the four nodes on its path: it
shows presence with a value, or absence, against a state root that a
certified block header carries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from emrp2p.codec import Limits, wire
from emrp2p.store.api import KV

__all__ = [
    "LEVELS",
    "BUCKETS",
    "EMPTY_ROOT",
    "ProofEntry",
    "StateProof",
    "bucket_of",
    "raw_key",
    "NODE_PREFIX",
    "bucket_hash",
    "commit",
    "refresh",
    "touched_buckets",
    "state_root",
    "prove",
    "verify_proof",
]

FANOUT_BITS = 4
FANOUT = 1 << FANOUT_BITS
LEVELS = 4
BUCKETS = FANOUT**LEVELS
HASH_LEN = 32
NODE_LEN = FANOUT * HASH_LEN
STATE_PREFIX = b"s"
NODE_PREFIX = b"m"
LEAF = b"\x00"
NODE = b"\x01"

_sha256 = hashlib.sha256


def _defaults() -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
    """Per level: the stored form of an empty node, and the hash of an empty subtree rooted there.

    Level ``LEVELS`` is the buckets themselves (no stored node).
    """
    hashes = [b""] * (LEVELS + 1)
    blobs = [b""] * LEVELS
    hashes[LEVELS] = _sha256(LEAF).digest()
    for level in range(LEVELS - 1, -1, -1):
        blobs[level] = hashes[level + 1] * FANOUT
        hashes[level] = _sha256(NODE + blobs[level]).digest()
    return tuple(blobs), tuple(hashes)


EMPTY_NODES, EMPTY_HASHES = _defaults()
EMPTY_ROOT = EMPTY_HASHES[0]


def bucket_of(key: bytes) -> int:
    return int.from_bytes(_sha256(key).digest()[:2], "big")


def raw_key(key: bytes) -> bytes:
    """Where the logical state key ``key`` is stored in the KV."""
    return STATE_PREFIX + _sha256(key).digest()[:2] + key


def node_key(level: int, index: int) -> bytes:
    return NODE_PREFIX + bytes([level]) + index.to_bytes(2, "big")


ROOT_KEY = node_key(0, 0)
_STATE_BYTE = STATE_PREFIX[0]
_LEVEL_PREFIX = tuple(NODE_PREFIX + bytes([depth]) for depth in range(LEVELS))


def bucket_hash(entries: list[tuple[bytes, bytes]]) -> bytes:
    """Hash of one bucket's (logical key, value) pairs, which must be sorted by key."""
    parts = [LEAF]
    for k, v in entries:
        parts += (len(k).to_bytes(4, "big"), k, len(v).to_bytes(4, "big"), v)
    return _sha256(b"".join(parts)).digest()


def node_hash(node: bytes) -> bytes:
    return _sha256(NODE + node).digest()


def state_root(state: KV) -> bytes:
    root = state.get(ROOT_KEY)
    return EMPTY_ROOT if root is None else node_hash(root)


def commit(base: KV, writes: dict[bytes, bytes | None]) -> bytes:
    """Extend ``writes`` (raw keys over ``base``) with the tree nodes they change; return the new root.

    Only ``b"s"`` keys in ``writes`` count as state; node keys already in
    ``writes`` are overwritten. The buckets, then each level's nodes, are read
    from ``base`` in one batch.
    """
    touched: dict[bytes, dict[bytes, bytes | None]] = {}
    for raw, value in writes.items():
        if raw[0] == _STATE_BYTE:
            b = raw[1:3]
            group = touched.get(b)
            if group is None:
                touched[b] = {raw: value}
            else:
                group[raw] = value
    if not touched:
        return state_root(base)
    return _rehash(base, touched, writes)


def touched_buckets(writes: dict[bytes, bytes | None]) -> set[bytes]:
    """The (2-byte) ids of the buckets whose entries ``writes`` (raw keys) change."""
    return {raw[1:3] for raw in writes if raw[0] == _STATE_BYTE}


def refresh(base: KV, buckets: Iterable[bytes], writes: dict[bytes, bytes | None]) -> bytes:
    """Bring the tree up to date over ``buckets`` (2-byte ids) whose entries in ``base`` changed
    since ``base``'s nodes were written: put the nodes that change into ``writes``; return the root.

    ``base``'s nodes must be exact everywhere else (a store that writes its nodes now and then
    rebuilds what it had not written yet this way).
    """
    touched: dict[bytes, dict[bytes, bytes | None]] = {b: {} for b in buckets}
    if not touched:
        return state_root(base)
    return _rehash(base, touched, writes)


def _rehash(
    base: KV, touched: dict[bytes, dict[bytes, bytes | None]], writes: dict[bytes, bytes | None]
) -> bytes:
    """Hash each touched bucket (its entries in ``base`` updated by its writes), then each level's
    nodes above them; every node on the way goes into ``writes``. Returns the root."""
    level: dict[int, bytes] = {}
    buckets = list(touched)
    stored = base.items_many([STATE_PREFIX + b for b in buckets])
    for b, found in zip(buckets, stored, strict=True):
        entries: dict[bytes, bytes | None] = dict(found)
        entries.update(touched[b])
        level[int.from_bytes(b, "big")] = bucket_hash(
            [(k[3:], v) for k in sorted(entries) if (v := entries[k]) is not None]
        )

    for depth in range(LEVELS - 1, -1, -1):
        empty = EMPTY_NODES[depth]
        prefix = _LEVEL_PREFIX[depth]
        children: dict[int, list[tuple[int, bytes]]] = {}
        for index, h in level.items():
            parent = index >> FANOUT_BITS
            slot = (index & (FANOUT - 1)) * HASH_LEN
            group2 = children.get(parent)
            if group2 is None:
                children[parent] = [(slot, h)]
            else:
                group2.append((slot, h))
        keys = [prefix + parent.to_bytes(2, "big") for parent in children]
        parents: dict[int, bytes] = {}
        for key, (parent, slots), old in zip(keys, children.items(), base.get_many(keys), strict=True):
            node = bytearray(old or empty)
            for slot, h in slots:
                node[slot : slot + HASH_LEN] = h
            blob = bytes(node)
            writes[key] = None if blob == empty else blob
            parents[parent] = _sha256(NODE + blob).digest()
        level = parents
    return level[0]


@wire(300)
@dataclass(frozen=True)
class ProofEntry:
    key: bytes
    value: bytes


@wire(301)
@dataclass(frozen=True)
class StateProof:
    """Membership or absence of one key: its bucket's entries and the nodes on its path, lowest first."""

    bucket: int = field(metadata={"limits": Limits(min_value=0, max_value=BUCKETS - 1)})
    entries: tuple[ProofEntry, ...]
    nodes: tuple[bytes, ...] = field(metadata={"limits": Limits(exact_len=NODE_LEN, max_len=LEVELS)})


def prove(state: KV, key: bytes) -> StateProof:
    """A proof for logical ``key`` (present or absent) against ``state_root(state)``."""
    b = bucket_of(key)
    prefix = STATE_PREFIX + b.to_bytes(2, "big")
    entries = tuple(ProofEntry(raw[3:], value) for raw, value in state.items(prefix))
    nodes = []
    index = b
    for depth in range(LEVELS - 1, -1, -1):
        index >>= FANOUT_BITS
        node = state.get(node_key(depth, index))
        nodes.append(EMPTY_NODES[depth] if node is None else node)
    return StateProof(b, entries, tuple(nodes))


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: StateProof) -> bool:
    """True if ``proof`` shows that under ``root`` the logical ``key`` holds ``value`` (``None``: absent)."""
    if proof.bucket != bucket_of(key) or len(proof.nodes) != LEVELS:
        return False
    found: bytes | None = None
    previous: bytes | None = None
    for e in proof.entries:
        if previous is not None and e.key <= previous:
            return False
        if bucket_of(e.key) != proof.bucket:
            return False
        if e.key == key:
            found = e.value
        previous = e.key
    if found != value:
        return False
    h = bucket_hash([(e.key, e.value) for e in proof.entries])
    index = proof.bucket
    for node in proof.nodes:
        slot = (index & (FANOUT - 1)) * HASH_LEN
        if len(node) != NODE_LEN or node[slot : slot + HASH_LEN] != h:
            return False
        h = node_hash(node)
        index >>= FANOUT_BITS
    return h == root
