"""The state commitment: a fixed-depth Merkle tree over 2^16 hash buckets, with proofs.

Every logical state key ``k`` lives in bucket ``sha256(k)[:2]`` and is stored
under the raw key ``b"s" + bucket + k``. A bucket's hash covers its sorted,
length-prefixed (key, value) pairs; the tree of bucket hashes is binary and
heap-indexed (root 1, bucket ``b`` at ``2^16 + b``), and its non-default nodes
are kept in the state itself under ``b"m" + index`` so that a block only
rehashes the buckets it touched and their paths to the root. Empty subtrees
hash to precomputed defaults, so an empty state has a fixed root.

A proof for one key is its whole bucket plus the 16 sibling hashes on the path:
it shows presence with a value, or absence, against a state root that a
certified block header carries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from emrp2p.codec import Limits, wire
from emrp2p.store.api import KV

__all__ = [
    "DEPTH",
    "BUCKETS",
    "EMPTY_ROOT",
    "ProofEntry",
    "StateProof",
    "bucket_of",
    "raw_key",
    "bucket_hash",
    "commit",
    "state_root",
    "prove",
    "verify_proof",
]

DEPTH = 16
BUCKETS = 1 << DEPTH
STATE_PREFIX = b"s"
NODE_PREFIX = b"m"
LEAF = b"\x00"
NODE = b"\x01"

_sha256 = hashlib.sha256


def _default_hashes() -> tuple[bytes, ...]:
    """``out[d]`` is the hash of an empty subtree whose root sits at depth ``d``."""
    out = [b""] * (DEPTH + 1)
    out[DEPTH] = _sha256(LEAF).digest()
    for d in range(DEPTH - 1, -1, -1):
        out[d] = _sha256(NODE + out[d + 1] + out[d + 1]).digest()
    return tuple(out)


DEFAULTS = _default_hashes()
EMPTY_ROOT = DEFAULTS[0]


def bucket_of(key: bytes) -> int:
    return int.from_bytes(_sha256(key).digest()[:2], "big")


def raw_key(key: bytes) -> bytes:
    """Where the logical state key ``key`` is stored in the KV."""
    return STATE_PREFIX + _sha256(key).digest()[:2] + key


def node_key(index: int) -> bytes:
    return NODE_PREFIX + index.to_bytes(4, "big")


_NODE_KEYS = [node_key(i) for i in range(2 * BUCKETS)]


def bucket_hash(entries: list[tuple[bytes, bytes]]) -> bytes:
    """Hash of one bucket's (logical key, value) pairs, which must be sorted by key."""
    h = _sha256(LEAF)
    for k, v in entries:
        h.update(len(k).to_bytes(4, "big"))
        h.update(k)
        h.update(len(v).to_bytes(4, "big"))
        h.update(v)
    return h.digest()


def state_root(state: KV) -> bytes:
    root = state.get(node_key(1))
    return EMPTY_ROOT if root is None else root


def commit(base: KV, writes: dict[bytes, bytes | None]) -> bytes:
    """Extend ``writes`` (raw keys over ``base``) with the tree nodes they change; return the new root.

    Only ``b"s"`` keys in ``writes`` count as state; node keys already present
    are overwritten.
    """
    touched: dict[bytes, dict[bytes, bytes | None]] = {}
    for raw, value in writes.items():
        if raw[:1] == STATE_PREFIX:
            b = raw[1:3]
            group = touched.get(b)
            if group is None:
                group = touched[b] = {}
            group[raw] = value
    if not touched:
        return state_root(base)

    level: dict[int, bytes] = {}
    for b, group in touched.items():
        entries = dict(base.items(STATE_PREFIX + b))
        for raw, value in group.items():
            if value is None:
                entries.pop(raw, None)
            else:
                entries[raw] = value
        level[BUCKETS + int.from_bytes(b, "big")] = bucket_hash(
            [(k[3:], entries[k]) for k in sorted(entries)]
        )

    get = base.get
    keys = _NODE_KEYS
    sha = _sha256
    for depth in range(DEPTH, 0, -1):
        default = DEFAULTS[depth]
        parents: dict[int, bytes] = {}
        for index, h in level.items():
            writes[keys[index]] = None if h == default else h
            if index & 1:
                if index - 1 in level:
                    continue
                left = get(keys[index - 1]) or default
                parents[index >> 1] = sha(NODE + left + h).digest()
            else:
                right = level.get(index + 1)
                if right is None:
                    right = get(keys[index + 1]) or default
                parents[index >> 1] = sha(NODE + h + right).digest()
        level = parents
    root = level[1]
    writes[_NODE_KEYS[1]] = None if root == EMPTY_ROOT else root
    return root


@wire(300)
@dataclass(frozen=True)
class ProofEntry:
    key: bytes
    value: bytes


@wire(301)
@dataclass(frozen=True)
class StateProof:
    """Membership or absence of one key: its bucket's entries and the sibling hashes, leaf first."""

    bucket: int = field(metadata={"limits": Limits(min_value=0, max_value=BUCKETS - 1)})
    entries: tuple[ProofEntry, ...]
    siblings: tuple[bytes, ...] = field(metadata={"limits": Limits(exact_len=32, max_len=DEPTH)})


def prove(state: KV, key: bytes) -> StateProof:
    """A proof for logical ``key`` (present or absent) against ``state_root(state)``."""
    b = bucket_of(key)
    prefix = STATE_PREFIX + b.to_bytes(2, "big")
    entries = tuple(ProofEntry(raw[3:], value) for raw, value in state.items(prefix))
    siblings = []
    index = BUCKETS + b
    for depth in range(DEPTH, 0, -1):
        sib = state.get(node_key(index ^ 1))
        siblings.append(DEFAULTS[depth] if sib is None else sib)
        index >>= 1
    return StateProof(b, entries, tuple(siblings))


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: StateProof) -> bool:
    """True if ``proof`` shows that under ``root`` the logical ``key`` holds ``value`` (``None``: absent)."""
    if proof.bucket != bucket_of(key) or len(proof.siblings) != DEPTH:
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
    index = BUCKETS + proof.bucket
    for sib in proof.siblings:
        h = _sha256(NODE + h + sib).digest() if index & 1 == 0 else _sha256(NODE + sib + h).digest()
        index >>= 1
    return h == root
