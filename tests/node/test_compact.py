"""Compact proposals' bookkeeping (emrp2p.node.compact): what the leader relays to whom, and
what a follower fills a proposal in from."""

from __future__ import annotations

from emrp2p.codec import decode, encode
from emrp2p.consensus import Propose
from emrp2p.consensus.messages import Message, ProposeCompact
from emrp2p.crypto import Identity
from emrp2p.ledger.types import BlockHeader, Noop, Tx, sign_block, sign_tx
from emrp2p.node.compact import CompactRelay

LEADER = Identity.from_test_name("leader")
A, B, C = (Identity.from_test_name(n).public for n in ("a", "b", "c"))
VALIDATORS = (LEADER.public, A, B, C)
CHAIN = b"c" * 32


def _txs(n: int, start: int = 0) -> list[Tx]:
    client = Identity.from_test_name("client")
    return [sign_tx(client, CHAIN, k, Noop(b"%d" % k)) for k in range(start, start + n)]


def _propose(txs: list[Tx], term: int = 3, block_term: int = 3, height: int = 7) -> Propose:
    header = BlockHeader(
        CHAIN, height, block_term, b"p" * 32, LEADER.public, 5, b"r" * 32, b"s" * 32, len(txs), None
    )
    return Propose(term, sign_block(LEADER, header, tuple(txs)))


def _ids(txs: list[Tx]) -> list[bytes]:
    return [tx.tx_id for tx in txs]


def test_the_leader_relays_to_every_other_validator_but_never_back_to_the_forwarder() -> None:
    relay = CompactRelay(LEADER.public, capacity=100)
    from_a, own = _txs(2), _txs(1, start=2)
    relay.queue(A, from_a)
    relay.queue(LEADER.public, own)
    relay.queue(A, from_a)  # forwarded twice: relayed once
    assert relay.queued() == 3
    out = relay.take(VALIDATORS)
    assert {dest: _ids(txs) for dest, txs in out.items()} == {
        A: _ids(own),
        B: _ids(from_a + own),
        C: _ids(from_a + own),
    }
    assert relay.queued() == 0 and relay.take(VALIDATORS) == {}


def test_a_new_proposal_goes_compact_after_whatever_of_it_was_not_relayed_yet() -> None:
    relay = CompactRelay(LEADER.public, capacity=100)
    relayed, queued, never = _txs(2), _txs(1, start=2), _txs(1, start=3)
    relay.queue(A, relayed)
    relay.take(VALIDATORS)
    relay.queue(B, queued)
    msg = _propose(relayed + queued + never)
    result = relay.compact(msg, VALIDATORS)
    assert result is not None
    ahead, small = result
    # The queued one goes with its origin's exception, the unknown one to everybody.
    assert {dest: _ids(txs) for dest, txs in ahead.items()} == {
        A: _ids(queued + never),
        B: _ids(never),
        C: _ids(queued + never),
    }
    assert small == ProposeCompact(
        3, msg.block.header, msg.block.signature, tuple(_ids(relayed + queued + never))
    )
    assert decode(Message, encode(small)) == small
    assert len(encode(small)) < len(encode(msg))
    assert relay.whole(msg.block.block_hash) is msg
    # Sent again (a follower behind asked for it, or it is resent): whole.
    assert relay.compact(msg, VALIDATORS) is None


def test_a_block_carried_forward_from_an_earlier_term_goes_whole() -> None:
    relay = CompactRelay(LEADER.public, capacity=100)
    assert relay.compact(_propose(_txs(2), term=4, block_term=3), VALIDATORS) is None


def test_a_follower_fills_a_proposal_in_from_relayed_and_pooled_transactions() -> None:
    relay = CompactRelay(A, capacity=100)
    relayed, pooled = _txs(3), _txs(2, start=3)
    msg = _propose(relayed + pooled)
    small = CompactRelay(LEADER.public, capacity=100).compact(msg, VALIDATORS)[1]  # type: ignore[index]
    relay.add_shared(relayed)
    pool = {tx.tx_id: tx for tx in pooled}
    # Nothing held for one of them: not filled in, and nothing is taken.
    assert relay.expand(small, lambda tx_id: None) is None
    assert all(relay.has_shared(tx.tx_id) for tx in relayed)
    whole = relay.expand(small, pool.get)
    assert whole == msg
    assert whole is not None and whole.block.encoded == msg.block.encoded
    assert not any(relay.has_shared(tx.tx_id) for tx in relayed)  # a block takes what it names


def test_relayed_and_recent_bookkeeping_is_bounded_oldest_first() -> None:
    follower = CompactRelay(A, capacity=3)
    txs = _txs(5)
    follower.add_shared(txs)
    assert [follower.has_shared(tx.tx_id) for tx in txs] == [False, False, True, True, True]
    leader = CompactRelay(LEADER.public, capacity=3, recent=2)
    msgs = [_propose(_txs(1, start=k), height=k + 1) for k in range(3)]
    for m in msgs:
        leader.compact(m, VALIDATORS)
    assert leader.whole(msgs[0].block.block_hash) is None
    assert leader.whole(msgs[2].block.block_hash) is msgs[2]
