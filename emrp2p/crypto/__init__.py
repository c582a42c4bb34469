"""Hashing, Ed25519 identities, X25519 key wrapping, and a verified-signature cache.

One Ed25519 key per node serves libp2p (peer id), the ledger (tx and vote
signatures) and, converted to X25519, key wrapping. Signature verification is a
pure function, so a process-wide cache of verified triples never verifies the
same signature twice; ``verify_many`` spreads a batch over a thread pool
(libsodium releases the GIL).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

__all__ = [
    "sha256",
    "Identity",
    "InvalidSignature",
    "verify",
    "verify_many",
    "pending_checks",
    "check_pending",
    "seal_key",
    "open_sealed_key",
    "box_public_key",
]

PUBLIC_KEY_LEN = 32
SIGNATURE_LEN = 64


class InvalidSignature(ValueError):
    """A signature that does not verify under the claimed key."""


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Identity:
    """An Ed25519 signing identity built from a 32-byte seed."""

    __slots__ = ("seed", "public", "_sk")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError("an identity seed is 32 bytes")
        self.seed = bytes(seed)
        self._sk = nacl.signing.SigningKey(self.seed)
        self.public = bytes(self._sk.verify_key)

    def __repr__(self) -> str:
        return f"Identity({self.public.hex()[:16]})"

    @classmethod
    def generate(cls) -> Identity:
        return cls(os.urandom(32))

    @classmethod
    def from_test_name(cls, name: str) -> Identity:
        """A deterministic identity for tests and simulations (never for real nodes)."""
        return cls(sha256(b"emrp2p-test-identity:" + name.encode()))

    def sign(self, message: bytes) -> bytes:
        return bytes(self._sk.sign(message).signature)

    def box_secret(self) -> bytes:
        """X25519 secret key for unwrapping data keys, derived from the Ed25519 seed."""
        return bytes(self._sk.to_curve25519_private_key())

    def box_public(self) -> bytes:
        return box_public_key(self.public)


def box_public_key(ed25519_public: bytes) -> bytes:
    """The X25519 public key that corresponds to an Ed25519 public key."""
    return bytes(nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(ed25519_public))


_CACHE_CAPACITY = 1 << 16
_HASHED_FROM = 256
_verified: OrderedDict[bytes, None] = OrderedDict()
"""(key, message, signature) triples known to verify, oldest first.

It only has to bridge a check made on intake to the checks of the same signature when the
transaction is pooled, proposed and executed (seconds): 64 k entries cover half a minute at
2,000 tx/s. A miss costs one more check, never a wrong answer. Lookups take no lock (a dict
lookup is atomic under the GIL) and do not reorder; only additions and evictions lock.
"""
_verified_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_THREADS = min(4, os.cpu_count() or 1)
"""Threads a large batch is split over (``os.cpu_count`` reads a file in /sys on every call)."""
_pool_lock = threading.Lock()


def _cache_key(public_key: bytes, message: bytes, signature: bytes) -> bytes:
    """The triple itself for a short message (no hashing), else with the message's digest; the
    first byte keeps the two forms apart."""
    if len(message) <= _HASHED_FROM:
        return b"\x00" + public_key + signature + message
    return b"\x01" + public_key + signature + hashlib.sha256(message).digest()


def _remember(key: bytes) -> None:
    with _verified_lock:
        _verified[key] = None
        if len(_verified) > _CACHE_CAPACITY:
            _verified.popitem(last=False)


def _check(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(public_key) != PUBLIC_KEY_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``public_key``'s signature over ``message``."""
    key = _cache_key(public_key, message, signature)
    return key in _verified or _check_and_remember(public_key, message, signature, key)


def _check_and_remember(public_key: bytes, message: bytes, signature: bytes, key: bytes) -> bool:
    ok = _check(public_key, message, signature)
    if ok:
        _remember(key)
    return ok


def _check_chunk(items: Sequence[tuple[bytes, bytes, bytes, bytes]]) -> list[bool]:
    """Check (key, message, signature, cache key) quadruples that missed the cache."""
    return [_check_and_remember(pk, msg, sig, key) for pk, msg, sig, key in items]


def pending_checks(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[tuple[bytes, bytes, bytes, bytes]]:
    """The (public key, message, signature, cache key) of those of ``items`` not yet known to
    verify: what :func:`check_pending` has to check."""
    known = _verified
    out = []
    for pk, msg, sig in items:
        key = _cache_key(pk, msg, sig)
        if key not in known:
            out.append((pk, msg, sig, key))
    return out


def check_pending(
    todo: Sequence[tuple[bytes, bytes, bytes, bytes]], *, threads: int | None = None
) -> list[bool]:
    """Check what :func:`pending_checks` returned (and remember what verifies), split over a
    thread pool when there are many: the calling thread checks the first share itself rather
    than wait idle for the pool (one thread hand-off fewer per batch)."""
    global _pool
    n = threads if threads is not None else _THREADS
    if len(todo) < 64 or n <= 1:
        return _check_chunk(todo)
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=n - 1, thread_name_prefix="verify")
    step = (len(todo) + n - 1) // n
    rest = [_pool.submit(_check_chunk, todo[i : i + step]) for i in range(step, len(todo), step)]
    checked = _check_chunk(todo[:step])
    for part in rest:
        checked.extend(part.result())
    return checked


def verify_many(items: Sequence[tuple[bytes, bytes, bytes]], *, threads: int | None = None) -> list[bool]:
    """Verify a batch of (public key, message, signature); order of results matches.

    Cache hits are answered here; only misses are checked (:func:`check_pending`)."""
    known = _verified
    keyed = [(pk, msg, sig, _cache_key(pk, msg, sig)) for pk, msg, sig in items]
    out = [q[3] in known for q in keyed]
    misses = [i for i, hit in enumerate(out) if not hit]
    if not misses:
        return out
    checked = check_pending([keyed[i] for i in misses], threads=threads)
    for i, ok in zip(misses, checked, strict=True):
        out[i] = ok
    return out


def seal_key(recipient_ed25519_public: bytes, data_key: bytes) -> bytes:
    """Wrap a data key for a recipient (X25519 sealed box, anonymous sender)."""
    box = nacl.public.SealedBox(nacl.public.PublicKey(box_public_key(recipient_ed25519_public)))
    return bytes(box.encrypt(data_key))


def open_sealed_key(identity: Identity, sealed: bytes) -> bytes:
    """Unwrap a data key sealed to ``identity``."""
    box = nacl.public.SealedBox(nacl.public.PrivateKey(identity.box_secret()))
    try:
        return bytes(box.decrypt(sealed))
    except nacl.exceptions.CryptoError as e:
        raise InvalidSignature("sealed key does not open with this identity") from e
