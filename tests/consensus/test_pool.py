"""The pending pool holds back transactions waiting on an earlier nonce of their sender."""

from __future__ import annotations

from emrp2p.consensus.pool import TxPool
from emrp2p.crypto import Identity
from emrp2p.ledger.types import Noop, Tx, sign_tx

CHAIN = b"c" * 32


def txs(name: str, nonces: range) -> list[Tx]:
    ident = Identity.from_test_name(name)
    return [sign_tx(ident, CHAIN, n, Noop(bytes([n]))) for n in nonces]


def test_a_parked_transaction_is_no_candidate_until_its_sender_sends_again() -> None:
    pool = TxPool(max_pending=100, remember=100)
    a = txs("alice", range(3))
    b = txs("bob", range(1))
    pool.add(a[2], 0)  # nonce 2 while the ledger expects 0: a gap
    pool.add(b[0], 0)
    pool.park(a[2])
    assert pool.candidates(set(), 10) == [b[0]]
    pool.add(a[1], 1)  # still a gap, but the leader must look again
    assert set(pool.candidates(set(), 10)) == {a[1], a[2], b[0]}


def test_a_commit_by_the_sender_releases_its_parked_transactions() -> None:
    pool = TxPool(max_pending=100, remember=100)
    a = txs("alice", range(2))
    pool.add(a[1], 0)
    pool.park(a[1])
    assert pool.candidates(set(), 10) == []
    pool.committed([a[0]], height=5)  # the missing nonce came in someone else's block
    assert pool.candidates(set(), 10) == [a[1]]


def test_expired_and_rejected_parked_transactions_leave_no_trace() -> None:
    pool = TxPool(max_pending=100, remember=100)
    a = txs("alice", range(3))
    pool.add(a[1], 0)
    pool.add(a[2], 50)
    pool.park(a[1])
    pool.park(a[2])
    assert pool.expire(now_ms=100, ttl_ms=60) == [a[1].tx_id]
    pool.reject(a[2].tx_id, "bad_nonce")
    assert len(pool) == 0
    assert pool._parked == {} and pool._parked_ids == set()
    pool.add(a[0], 200)
    assert pool.candidates(set(), 10) == [a[0]]


def test_parking_a_transaction_not_pending_does_nothing() -> None:
    pool = TxPool(max_pending=100, remember=100)
    (a,) = txs("alice", range(1))
    pool.park(a)
    pool.add(a, 0)
    assert pool.candidates(set(), 10) == [a]


def test_the_backlog_is_the_wait_of_the_oldest_transaction_that_could_go_into_a_block() -> None:
    pool = TxPool(max_pending=100, remember=100)
    a = txs("alice", range(3))
    b = txs("bob", range(1))
    assert pool.oldest_wait_ms(500) == 0
    pool.add(a[2], 100)  # a gap: it waits for alice, not for the network
    pool.park(a[2])
    pool.add(b[0], 300)
    assert pool.oldest_wait_ms(1000) == 700
    pool.committed([b[0]], height=1)
    assert pool.oldest_wait_ms(1000) == 0
    pool.add(a[0], 900)  # alice sends again: her parked one is a candidate once more
    assert pool.oldest_wait_ms(1000) == 900


def test_drained_counts_the_pools_own_transactions_that_commit_and_waiting_skips_parked_ones() -> None:
    pool = TxPool(max_pending=100, remember=100)
    a = txs("alice", range(3))
    b = txs("bob", range(2))
    for tx in (a[0], a[2], b[0]):
        pool.add(tx, 0)
    pool.park(a[2])
    assert (len(pool), pool.waiting()) == (3, 2)
    pool.committed([a[0], b[0], b[1]], height=1)  # b[1] came from elsewhere: not drained from here
    assert pool.drained == 2
    pool.committed([a[0]], height=1)  # seen again (a sync): counted once
    assert pool.drained == 2
    assert (len(pool), pool.waiting()) == (1, 1)  # a[0] committing released the parked a[2]
