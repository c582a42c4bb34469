"""Unit tests of the ordering core's rules, driving ``Core`` objects by hand (no simulator)."""

from __future__ import annotations

import gc
import weakref

import pytest

from emrp2p.codec import decode
from emrp2p.consensus import (
    BlockVote,
    Config,
    Core,
    EvidenceFound,
    ForwardTxs,
    Head,
    Heartbeat,
    Message,
    PreVote,
    PreVoteGrant,
    ProposalEquivocation,
    Propose,
    Role,
    SubmitStatus,
    SyncResponse,
    TermVote,
    TxRejected,
    TxState,
    TxStatus,
)
from emrp2p.consensus.certs import certificate_ok
from emrp2p.consensus.core import block_tx_root
from emrp2p.consensus.messages import HardState
from emrp2p.crypto import Identity
from emrp2p.ledger.execute import BlockContext, Ledger
from emrp2p.ledger.types import (
    Block,
    BlockHeader,
    Certificate,
    Genesis,
    Member,
    Noop,
    Signature,
    Tx,
    make_certificate,
    sign_block,
    sign_tx,
    sign_vote,
    tx_root,
)
from emrp2p.store.api import WriteBatch
from emrp2p.store.memory import MemoryStore

CFG = Config()
NAMES = ["a", "b", "c"]


class Net:
    """Three validators wired by hand: each node's ready() is persisted and its messages collected."""

    def __init__(self, cfg: Config = CFG) -> None:
        self.cfg = cfg
        self.ids = {name: Identity.from_test_name(f"rules-{name}") for name in NAMES}
        self.genesis = Genesis("rules", 0, tuple(Member(i.public, n) for n, i in self.ids.items()))
        self.ledger = Ledger(self.genesis)
        self.stores = {n: MemoryStore() for n in NAMES}
        for store in self.stores.values():
            store.init_genesis(self.genesis, self.ledger.genesis_state())
        self.cores = {n: self.start(n) for n in NAMES}
        self.outbox: dict[str, list[tuple[bytes, Message]]] = {n: [] for n in NAMES}

    def start(self, name: str) -> Core:
        return Core(self.ids[name], self.ledger, self.stores[name], self.cfg, 0)

    def restart(self, name: str) -> Core:
        self.cores[name] = self.start(name)
        self.flush(name)
        return self.cores[name]

    def flush(self, name: str) -> list[tuple[bytes, Message]]:
        core = self.cores[name]
        sent: list[tuple[bytes, Message]] = []
        while core.has_ready():
            rd = core.ready()
            self.stores[name].write(rd.write)
            sent.extend(rd.messages)
            core.advance(rd)
        self.outbox[name].extend(sent)
        return sent

    def deliver_all(self, rounds: int = 10) -> None:
        """Flush every core and hand each message to its destination, until nothing moves."""
        for _ in range(rounds):
            moved = False
            for name in NAMES:
                for dest, msg in self.flush(name):
                    self.cores[self.name_of(dest)].step(self.ids[name].public, msg)
                    moved = True
            if not moved:
                return

    def elect(self) -> int:
        """Tick every core by 20 ms and deliver until all know the leader; the time reached."""
        now = 0
        while not all(c.leader is not None for c in self.cores.values()):
            now += 20
            assert now < 5000, "no leader"
            for core in self.cores.values():
                core.tick(now)
            self.deliver_all()
        return now

    def name_of(self, key: bytes) -> str:
        return next(n for n, i in self.ids.items() if i.public == key)

    def leader_name(self, term: int) -> str:
        return self.name_of(self.cores["a"].leader_of(term))

    def block(self, proposer: str, term: int, height: int, parent: bytes, ts: int) -> Block:
        ident = self.ids[proposer]
        state = self.stores[proposer].state
        delta = self.ledger.execute(state, BlockContext(height, ts, ident.public), ())
        header = BlockHeader(
            self.genesis.chain_id, height, term, parent, ident.public, ts, tx_root(()), delta.root, 0
        )
        return sign_block(ident, header, ())


def votes_in(messages: list[tuple[bytes, Message]]) -> list[BlockVote]:
    return [m for _, m in messages if isinstance(m, BlockVote)]


def test_a_follower_votes_once_per_term_and_height_even_after_a_restart() -> None:
    net = Net()
    leader = net.leader_name(0)
    follower = next(n for n in NAMES if n != leader)
    chain_id = net.genesis.chain_id
    first = net.block(leader, 0, 1, chain_id, ts=10)
    second = net.block(leader, 0, 1, chain_id, ts=11)  # an equivocating leader: same slot, other block
    assert first.block_hash != second.block_hash

    net.cores[follower].step(net.ids[leader].public, Propose(0, first))
    assert [v.vote.block_hash for v in votes_in(net.flush(follower))] == [first.block_hash]

    core = net.restart(follower)
    core.step(net.ids[leader].public, Propose(0, second))
    rd = core.ready()
    assert votes_in(rd.messages) == []
    assert any(
        isinstance(e, EvidenceFound) and isinstance(e.evidence, ProposalEquivocation) for e in rd.events
    )

    # The same block again is fine: the same vote, re-sent.
    core.step(net.ids[leader].public, Propose(0, first))
    assert [v.vote.block_hash for v in votes_in(core.ready().messages)] == [first.block_hash]


def test_a_candidate_counts_a_term_vote_only_from_a_node_no_more_up_to_date_than_itself() -> None:
    net = Net()
    term = 3
    cand = net.leader_name(term)
    ahead, behind = (n for n in NAMES if n != cand)
    core = net.cores[cand]
    core.step(net.ids[ahead].public, TermVote(term, Head(2, 5, b"\x01" * 32), 0))
    assert core.term == term and core.role is Role.CANDIDATE  # the ahead node's vote is not a grant
    core.step(net.ids[behind].public, TermVote(term, Head(0, 0, net.genesis.chain_id), 0))
    assert core.role is Role.LEADER


def test_a_candidate_behind_a_majority_is_never_established() -> None:
    net = Net()
    term = 4
    cand = net.leader_name(term)
    core = net.cores[cand]
    for other in (n for n in NAMES if n != cand):
        core.step(net.ids[other].public, TermVote(term, Head(1, 1, b"\x02" * 32), 0))
    assert core.role is Role.CANDIDATE
    core.tick(CFG.election_timeout_ms + 1)
    asked = [m for _, m in net.flush(cand) if isinstance(m, PreVote)]
    assert core.term == term and [m.term for m in asked] == [term + 1, term + 1]
    other = next(n for n in NAMES if n != cand)
    core.step(net.ids[other].public, PreVoteGrant(term + 1))
    assert core.term == term + 1  # gave up once a majority agreed: the next term's leader takes over


def test_a_follower_that_lost_its_leader_alone_does_not_move_the_term() -> None:
    """Pre-vote: a follower cut off on its own (or paused) asks before it enters a new term,
    and nodes that still hear the leader refuse; so its return changes no term and no leader."""
    net = Net()
    now = net.elect()
    leader = net.leader_name(net.cores["a"].term)
    term = net.cores[leader].term
    lone, other = (n for n in NAMES if n != leader)
    net.flush(lone)
    # The lone follower hears nothing for an election timeout; the others keep hearing the leader.
    late = now + CFG.election_timeout_ms + 1
    for t in range(now + 100, late, 100):
        for name in (leader, other):
            net.cores[name].tick(t)
        net.flush(leader)
        for dest, msg in net.outbox[leader]:
            if net.name_of(dest) == other:
                net.cores[other].step(net.ids[leader].public, msg)
        net.outbox[leader].clear()
        net.flush(other)
    net.cores[lone].tick(late)
    asks = [(net.name_of(d), m) for d, m in net.flush(lone)]
    assert net.cores[lone].term == term
    assert sorted(d for d, m in asks if isinstance(m, PreVote) and m.term == term + 1) == sorted(
        (leader, other)
    )
    for dest, msg in asks:
        net.cores[dest].step(net.ids[lone].public, msg)
    answers = [(d, m) for name in (leader, other) for d, m in net.flush(name) if net.name_of(d) == lone]
    assert not any(isinstance(m, PreVoteGrant) for _, m in answers)  # both still hear a leader
    assert any(isinstance(m, Heartbeat) for _, m in answers)  # and the leader lets it hear it
    assert {c.term for c in net.cores.values()} == {term}
    for _, msg in answers:
        net.cores[lone].step(net.ids[leader].public, msg)
    assert net.cores[lone].leader == net.ids[leader].public and net.cores[lone].term == term


def test_followers_that_all_lost_the_leader_grant_each_other_and_move_on() -> None:
    net = Net()
    now = net.elect()
    leader = net.leader_name(net.cores["a"].term)
    term = net.cores[leader].term
    followers = [n for n in NAMES if n != leader]
    for name in NAMES:
        net.flush(name)
    # The leader dies: the followers' timers run out about together.
    first, second = followers
    net.cores[second].tick(now + CFG.election_timeout_ms - CFG.heartbeat_ms + 1)
    net.cores[first].tick(now + CFG.election_timeout_ms + 1)
    for dest, msg in net.flush(first):
        if net.name_of(dest) == second:
            net.cores[second].step(net.ids[first].public, msg)
    grants = [m for _, m in net.flush(second) if isinstance(m, PreVoteGrant)]
    assert [g.term for g in grants] == [term + 1]
    net.cores[first].step(net.ids[second].public, grants[0])
    assert net.cores[first].term == term + 1


def _cert(net: Net, signers: list[str], block_hash: bytes, term: int = 0, height: int = 1) -> Certificate:
    votes = [sign_vote(net.ids[n], net.genesis.chain_id, term, height, block_hash) for n in signers]
    return make_certificate(votes)


def test_certificate_validation_accepts_a_majority_and_rejects_forgeries() -> None:
    net = Net()
    chain_id = net.genesis.chain_id
    vals = net.genesis.validators
    h = b"\x07" * 32
    good = _cert(net, ["a", "b"], h)
    assert certificate_ok(good, chain_id, vals, h, 0)

    forged = Certificate(0, 1, h, (good.signatures[0], Signature(good.signatures[1].signer, b"\x00" * 64)))
    assert not certificate_ok(forged, chain_id, vals, h, 0)

    dup = Certificate(0, 1, h, (good.signatures[0], good.signatures[0]))
    assert not certificate_ok(dup, chain_id, vals, h, 0)

    outsider = Identity.from_test_name("outsider")
    stranger_vote = sign_vote(outsider, chain_id, 0, 1, h)
    with_stranger = make_certificate([*_cert(net, ["a"], h).votes(), stranger_vote])
    assert not certificate_ok(with_stranger, chain_id, vals, h, 0)

    assert not certificate_ok(_cert(net, ["a"], h), chain_id, vals, h, 0)  # a minority
    assert not certificate_ok(good, chain_id, vals, b"\x08" * 32, 0)  # another block
    assert not certificate_ok(good, chain_id, vals, h, 1)  # votes not cast in the block's term
    other_chain = _cert(net, ["a", "b"], h)
    assert not certificate_ok(other_chain, b"\x09" * 32, vals, h, 0)


def test_submit_reports_invalid_duplicate_and_busy_and_tracks_status() -> None:
    net = Net()
    core = Core(net.ids["a"], net.ledger, net.stores["a"], Config(max_pending=2), 0)
    client = Identity.from_test_name("client")
    chain_id = net.genesis.chain_id
    txs = [sign_tx(client, chain_id, n, Noop(b"x")) for n in range(3)]
    bad = sign_tx(client, b"\x00" * 32, 0, Noop(b"y"))  # signed for another chain
    results = core.submit([txs[0], txs[0], bad, txs[1], txs[2]])
    assert [r.status for r in results] == [
        SubmitStatus.ACCEPTED,
        SubmitStatus.DUPLICATE,
        SubmitStatus.INVALID,
        SubmitStatus.ACCEPTED,
        SubmitStatus.BUSY,
    ]
    assert results[2].code == "invalid_signature"
    assert core.tx_status(txs[0].tx_id).state is TxState.PENDING
    assert core.tx_status(txs[2].tx_id).state is TxState.UNKNOWN


def test_a_store_without_genesis_is_refused() -> None:
    net = Net()
    from emrp2p.consensus import CoreNotInitialised

    with pytest.raises(CoreNotInitialised):
        Core(net.ids["a"], net.ledger, MemoryStore(), CFG, 0)


def test_the_leader_reports_and_drops_a_tx_that_fails_selection_but_keeps_one_waiting_for_its_nonce() -> None:
    ident = Identity.from_test_name("solo")
    genesis = Genesis("solo", 0, (Member(ident.public, "solo"),))
    ledger = Ledger(genesis)
    store = MemoryStore()
    store.init_genesis(genesis, ledger.genesis_state())
    core = Core(ident, ledger, store, Config(min_block_interval_ms=0), 0)
    assert core.role is Role.LEADER  # a single validator is its own majority
    client = Identity.from_test_name("client")
    first = sign_tx(client, genesis.chain_id, 0, Noop(b"first"))
    replay = sign_tx(client, genesis.chain_id, 0, Noop(b"same nonce"))
    early = sign_tx(client, genesis.chain_id, 2, Noop(b"too early"))
    core.submit([first, replay, early])
    rd = core.ready()
    store.write(rd.write)
    core.advance(rd)
    assert [len(b.txs) for b in rd.committed] == [1]
    assert core.tx_status(first.tx_id).state is TxState.COMMITTED
    assert core.tx_status(replay.tx_id) == TxStatus(TxState.REJECTED, code="bad_nonce")
    assert [e for e in rd.events if isinstance(e, TxRejected)] == [TxRejected(replay.tx_id, "bad_nonce")]
    assert core.tx_status(early.tx_id).state is TxState.PENDING
    middle = sign_tx(client, genesis.chain_id, 1, Noop(b"fills the gap"))
    core.submit([middle])
    core.tick(1)
    for _ in range(3):
        rd = core.ready()
        store.write(rd.write)
        core.advance(rd)
        core.tick(2)
    assert core.tx_status(early.tx_id).state is TxState.COMMITTED
    assert core.tx_status(middle.tx_id).state is TxState.COMMITTED


def test_the_tx_root_memo_does_not_keep_old_blocks_alive() -> None:
    """The memo serves cores checking the same block at about the same time (the simulator);
    it must not hold a loaded daemon's recent blocks (it once held 256 of them)."""
    client = Identity.from_test_name("memo-client")

    def block_txs(tag: int) -> tuple[Tx, ...]:
        return tuple(sign_tx(client, b"\x01" * 32, n, Noop(bytes([tag]))) for n in range(3))

    first = block_txs(0)
    watch = weakref.ref(first[0])
    root = block_tx_root(first)
    assert block_tx_root(first) == root  # memoised while recent
    del first
    for tag in range(1, 40):
        block_tx_root(block_txs(tag))
    gc.collect()
    assert watch() is None


def test_a_submission_is_forwarded_at_once_when_no_forward_went_out_within_the_interval() -> None:
    """Ticks with nothing to forward must not restart the forward interval: a transaction an
    app submits to a follower on a quiet network goes to the leader straight away (it once
    waited up to ``forward_interval_ms`` for the next tick)."""
    net = Net(Config(forward_interval_ms=50))
    now = net.elect()
    leader = net.cores["a"].leader
    follower = next(n for n in NAMES if net.ids[n].public != leader)
    for _ in range(10):  # 200 ms of ticks, nothing submitted
        now += 20
        for core in net.cores.values():
            core.tick(now)
        net.deliver_all()
    client = Identity.from_test_name("client")
    core = net.cores[follower]
    tx = sign_tx(client, net.genesis.chain_id, 0, Noop(b"now"))
    core.submit([tx])
    rd = core.ready()
    assert [(d, m) for d, m in rd.messages if isinstance(m, ForwardTxs)] == [(leader, ForwardTxs((tx,)))]
    net.stores[follower].write(rd.write)
    core.advance(rd)
    # A second submission within the interval waits for a tick past it: one message per interval.
    core.submit([sign_tx(client, net.genesis.chain_id, 1, Noop(b"soon"))])
    assert not any(isinstance(m, ForwardTxs) for _, m in core.ready().messages)


def test_between_ticks_the_driver_sets_the_clock_so_a_forward_due_goes_out_with_the_submission() -> None:
    """``TickSchedule.catch_up`` sets the core's clock before an input when no tick is due, so
    an interval the core keeps (here ``forward_interval_ms``) is measured exactly: a submission
    30 ms after the last forward goes out with it, not at the next tick (it once waited for
    one: the core's clock only moved on ticks, so 25 ms meant 40 in practice)."""
    from emrp2p.consensus.core import TickSchedule

    net = Net(Config(forward_interval_ms=25))
    now = net.elect()
    leader = net.cores["a"].leader
    follower = next(n for n in NAMES if net.ids[n].public != leader)
    core = net.cores[follower]
    schedule = TickSchedule(20, now)
    client = Identity.from_test_name("client")

    def at(t: int, nonce: int | None = None) -> bool:
        """Catch up at ``t`` (and submit) as the daemon does; whether a forward went out."""
        schedule.catch_up(core, t, t)
        if nonce is not None:
            core.submit([sign_tx(client, net.genesis.chain_id, nonce, Noop(b"%d" % nonce))])
        rd = core.ready()
        net.stores[follower].write(rd.write)
        core.advance(rd)
        return any(isinstance(m, ForwardTxs) for _, m in rd.messages)

    assert at(now + 20, 0)  # a tick; nothing was forwarded lately: goes at once
    assert not at(now + 30, 1)  # 10 ms after that forward: waits
    assert not at(now + 40)  # a tick, 20 ms after it: still waits
    assert at(now + 50, 2)  # no tick due, but 30 ms after the forward: both go now
    assert schedule.last_ms == now + 40


def test_a_leader_cut_off_that_syncs_a_later_terms_certified_blocks_leaves_its_term() -> None:
    """A leader isolated in its term, whose proposal nobody got, learns by block sync (and by
    nothing else) that a later term has committed blocks: it must leave its term. It once went
    on leading it and proposed again at a height it had proposed at (simulator seed 1132:
    evidence of equivocation against an honest node)."""
    net = Net()
    now = net.elect()
    old = net.name_of(net.cores["a"].leader)  # type: ignore[arg-type]
    rest = [n for n in NAMES if n != old]
    client = Identity.from_test_name("client")
    net.cores[old].submit([sign_tx(client, net.genesis.chain_id, 0, Noop(b"unseen"))])
    assert any(isinstance(m, Propose) for _, m in net.flush(old))  # proposed; nobody gets it

    def leader_of_rest() -> str | None:
        for n in rest:
            core = net.cores[n]
            if core.term > 0 and core.role is Role.LEADER and core.leader == net.ids[n].public:
                return n
        return None

    def step_rest() -> None:
        """The other two exchange messages; nothing reaches the old leader."""
        for _ in range(10):
            moved = False
            for n in rest:
                for dest, msg in net.flush(n):
                    if net.name_of(dest) in rest:
                        net.cores[net.name_of(dest)].step(net.ids[n].public, msg)
                        moved = True
            if not moved:
                return

    while leader_of_rest() is None:
        now += 20
        assert now < 20_000, "the other two elected no leader"
        for n in rest:
            net.cores[n].tick(now)
        step_rest()
    new = leader_of_rest()
    assert new is not None
    other = sign_tx(Identity.from_test_name("other client"), net.genesis.chain_id, 0, Noop(b"seen"))
    net.cores[new].submit([other])
    step_rest()
    store = net.stores[new]
    assert store.committed_height() >= 1
    block, cert = store.block(1), store.certificate(1)
    assert block is not None and cert is not None and block.term > 0
    stale = net.cores[old]
    assert stale.role is Role.LEADER and stale.term == 0
    stale.step(net.ids[new].public, SyncResponse(store.committed_height(), (block,), (cert,)))
    assert stale.committed_height == 1
    assert stale.term >= block.term and stale.role is not Role.LEADER
    assert not [m for _, m in net.flush(old) if isinstance(m, Propose) and m.term == 0]


def test_a_proposal_to_every_member_stands_in_for_the_next_heartbeat() -> None:
    """While blocks flow, a heartbeat adds nothing (followers reset their election timer on a
    proposal) but a message per follower and a re-sent vote: it waits a full period after the
    last proposal; a quiet leader still sends it on time."""
    net = Net(Config(min_block_interval_ms=20))
    now = net.elect()
    lead = net.name_of(net.cores["a"].leader)  # type: ignore[arg-type]
    core = net.cores[lead]
    client = Identity.from_test_name("client")
    net.outbox[lead].clear()
    for n in range(8):  # a block every 20 ms: each tick brings a transaction
        now += 20
        core.submit([sign_tx(client, net.genesis.chain_id, n, Noop(b"busy"))])
        core.tick(now)
        net.deliver_all()
    sent = [m for _, m in net.outbox[lead]]
    assert sum(isinstance(m, Propose) for m in sent) >= 12  # 2 followers, 6 blocks or more
    assert not any(isinstance(m, Heartbeat) for m in sent)
    net.outbox[lead].clear()
    for _ in range(10):  # 200 ms with nothing to propose
        now += 20
        core.tick(now)
        net.deliver_all()
    assert any(isinstance(m, Heartbeat) for _, m in net.outbox[lead])


def test_a_leader_that_hears_another_leader_of_its_term_moves_to_the_next() -> None:
    """Two validators can each lead one term when they entered it on different sides of a
    membership change; their followers each hear a live leader and refuse pre-votes, so the
    leaders themselves must break the tie (seed 1546 of the simulator)."""
    net = Net()
    net.elect()
    term = net.cores["a"].term
    lead = net.leader_name(term)
    rival, follower = (n for n in NAMES if n != lead)
    core = net.cores[lead]
    claim = Heartbeat(term, core.committed_height, core.head(), None)
    net.cores[follower].step(net.ids[rival].public, claim)
    assert net.cores[follower].term == term  # a follower just ignores a non-leader
    core.step(net.ids[rival].public, claim)
    assert core.term == term + 1
    assert any(isinstance(m, TermVote) and m.term == term + 1 for _, m in net.flush(lead))


def test_a_follower_whose_leader_is_silent_forwards_to_the_one_leading_its_term() -> None:
    """A follower that entered a term on the other side of a membership change backs a leader
    that never speaks; what its apps submit goes to the validator it hears leading the term, or
    it would wait for the term to end, and every later transaction of the same senders with it
    (the leader parks them: seed 2026 of the simulator)."""
    net = Net()
    net.elect()
    term = net.cores["a"].term + 1
    absent = net.leader_name(term)  # the leader of the next term, in everyone's view
    follower, rival = (n for n in NAMES if n != absent)
    core = net.cores[follower]
    net.flush(follower)
    head = net.cores[rival].head()
    core.step(net.ids[rival].public, Heartbeat(term, head.height, head, None))
    assert core.term == term and core.leader is None  # it keeps to its own (silent) leader
    tx = sign_tx(Identity.from_test_name("client"), net.genesis.chain_id, 0, Noop(b"held"))
    core.submit([tx])
    forwards = [(dest, m) for dest, m in net.flush(follower) if isinstance(m, ForwardTxs)]
    assert forwards == [(net.ids[rival].public, ForwardTxs((tx,)))]


def test_a_leader_moves_on_when_too_many_validators_ask_to_leave_its_term() -> None:
    """Validators that pre-vote past the term of a live leader do not hear it lead (a one-way
    link, or they back another leader of the term: seed 418 of the simulator). Once the rest
    cannot form a quorum, no block of the leader's can commit and, with it and its followers
    refusing their pre-votes, nobody would move: the leader moves on."""
    net = Net()
    net.elect()
    term = net.cores["a"].term
    lead = net.leader_name(term)
    core = net.cores[lead]
    first, second = (n for n in NAMES if n != lead)
    head = net.cores[first].head()
    ask = PreVote(term + 1, head, head.height)
    core.step(net.ids[first].public, ask)
    assert core.term == term and core.role is Role.LEADER  # the other follower still makes a quorum
    core.step(net.ids[first].public, ask)
    assert core.term == term  # counted once
    core.step(net.ids[second].public, ask)
    assert core.term == term + 1
    assert any(isinstance(m, TermVote) and m.term == term + 1 for _, m in net.flush(lead))


def test_a_proposal_still_being_checked_keeps_the_leader_alive() -> None:
    """A follower whose driver is still checking a big proposal's signatures past the election
    timeout must not ask for a new term: the proposal's arrival shows the leader alive."""
    net = Net()
    now = net.elect()
    term = net.cores["a"].term
    lead = net.leader_name(term)
    follower = next(n for n in NAMES if n != lead)
    core = net.cores[follower]
    net.flush(follower)
    core.tick(now + CFG.election_timeout_ms - 10)
    core.leader_traffic(net.ids[lead].public, term)
    core.leader_traffic(net.ids[follower].public, term)  # not the leader: no effect, no error
    core.tick(now + CFG.election_timeout_ms + 10)
    assert not any(isinstance(m, PreVote) for _, m in net.flush(follower))
    core.tick(now + 2 * CFG.election_timeout_ms)  # then nothing more arrives: it asks
    assert any(isinstance(m, PreVote) for _, m in net.flush(follower))
    assert core.term == term


def test_an_idle_core_names_its_next_deadline_and_a_busy_one_wants_every_tick() -> None:
    """``quiet_ms``: how long a driver may sleep without ticking. An idle leader wakes for its
    heartbeat, an idle follower for its election timeout; a tick before then sends nothing;
    a core with anything pending wants the driver's regular ticks."""
    net = Net()
    now = net.elect()
    net.deliver_all()
    leader = net.leader_name(net.cores["a"].term)
    follower = next(n for n in NAMES if n != leader)
    lc, fc = net.cores[leader], net.cores[follower]
    assert 0 < lc.quiet_ms() <= CFG.heartbeat_ms
    assert CFG.heartbeat_ms < fc.quiet_ms() <= CFG.election_timeout_ms

    due = now + lc.quiet_ms()
    lc.tick(due - 1)
    assert net.flush(leader) == []
    lc.tick(due)
    assert {type(m) for _, m in net.flush(leader)} == {Heartbeat}
    assert lc.quiet_ms() == CFG.heartbeat_ms

    due = now + fc.quiet_ms()
    fc.tick(due - 1)
    assert net.flush(follower) == []
    fc.tick(due)
    assert any(isinstance(m, PreVote) for _, m in net.flush(follower))
    assert fc.quiet_ms() == 0  # asking for a pre-vote: every tick counts

    client = Identity.from_test_name("client")
    lc.submit([sign_tx(client, net.genesis.chain_id, 0, Noop(b"x"))])
    assert lc.quiet_ms() == 0  # a transaction to propose


def test_commits_written_behind_the_core_are_read_through_until_the_store_holds_each() -> None:
    """A driver may write a Ready's commits after it has stepped later inputs
    (``WriteBatch.split``). Until the store holds a commit the core reads its state through what
    it committed in memory, and it forgets each commit as soon as the store holds that one, not
    only once the store has caught up with all of them (under steady load it never quite does)."""

    class Behind(Net):
        held: list[WriteBatch]
        slow: str = ""

        def flush(self, name: str) -> list[tuple[bytes, Message]]:
            if name != self.slow:
                return super().flush(name)
            core = self.cores[name]
            sent: list[tuple[bytes, Message]] = []
            while core.has_ready():
                rd = core.ready()
                promises, commits = rd.write.split()
                self.stores[name].write(promises)
                if not commits.empty():
                    self.held.append(commits)
                sent.extend(rd.messages)
                core.advance(rd)
            self.outbox[name].extend(sent)
            return sent

    net = Behind(Config(min_block_interval_ms=0))
    net.held = []
    net.elect()
    net.slow = lead = net.leader_name(net.cores["a"].term)
    core, store = net.cores[lead], net.stores[lead]
    client = Identity.from_test_name("client")
    chain_id = net.genesis.chain_id
    for nonce in range(3):  # each needs the state its predecessor's block left: the nonce
        assert core.submit([sign_tx(client, chain_id, nonce, Noop(b"x"))])[0].status is SubmitStatus.ACCEPTED
        net.deliver_all()
    height = core.committed_height
    assert store.committed_height() == height - 3 and len(net.held) == 3
    assert all(c.committed_height == height for c in net.cores.values())
    assert net.ledger.next_nonce(core._committed_state(), client.public) == 3

    store.write(net.held.pop(0))
    core.advance(core.ready())
    assert sorted(core._unflushed_commits) == [height - 1, height]
    assert net.ledger.next_nonce(core._committed_state(), client.public) == 3
    for batch in net.held:
        store.write(batch)
    core.advance(core.ready())
    assert core._unflushed_commits == {} and core._unflushed == {}
    assert net.ledger.next_nonce(store.state, client.public) == 3


def test_a_leader_s_proposal_may_go_before_its_write_and_a_crash_that_loses_the_write_moves_it_on() -> None:
    """``Ready.proposals_first``: a proposal in the term the store holds goes while the leader
    writes it. Should a crash lose that write, the restarted leader does not lead the term
    again (it could propose another block at the same height): it moves to the next one.
    Term 0, which a restart does not move on from, never sends a proposal first."""
    net = Net(Config(min_block_interval_ms=20, max_term_ms=200))
    now = net.elect()
    client = Identity.from_test_name("client")
    seen: dict[int, bool] = {}
    for n in range(200):
        now += 20
        lead = net.name_of(net.cores["a"].leader_of(net.cores["a"].term))
        core = net.cores[lead]
        core.submit([sign_tx(client, net.genesis.chain_id, n, Noop(b"early"))])
        for c in net.cores.values():
            c.tick(now)
        rd = core.ready()
        proposals = [m for _, m in rd.messages if isinstance(m, Propose) and m.block.term == core.term]
        if proposals:
            seen.setdefault(core.term, rd.proposals_first)
        if proposals and core.term >= 2 and rd.proposals_first:
            break
        net.stores[lead].write(rd.write)
        core.advance(rd)
        net.outbox[lead].extend(rd.messages)
        net.deliver_all()
    else:
        raise AssertionError(f"no proposal went first: {seen}")
    assert seen[0] is False
    term, block = core.term, proposals[0].block
    assert rd.write.accept == [block]
    # The crash: the write never lands.
    restarted = net.restart(lead)
    assert restarted.term == term + 1
    assert block.block_hash not in {b.block_hash for b in net.stores[lead].accepted()}
    assert all(b.block_hash != block.block_hash for b in restarted.accepted_blocks())


def test_a_proposal_goes_first_only_in_a_term_already_written_and_never_in_term_0() -> None:
    """A lone validator whose terms end every 100 ms, driven as a driver may: several ticks
    stepped before it takes the batch out. A batch that enters a term and proposes in it
    writes that term only now (a crash could lose it, and the node lead it again): its
    proposal waits for the write; proposals in a term the store holds may go first.
    Checked batch by batch against the hard state the store holds."""
    ident = Identity.from_test_name("rules-alone")
    genesis = Genesis("alone", 0, (Member(ident.public, "alone"),))
    ledger = Ledger(genesis)
    store = MemoryStore()
    store.init_genesis(genesis, ledger.genesis_state())
    core = Core(ident, ledger, store, Config(min_block_interval_ms=20, max_term_ms=100), 0)
    client = Identity.from_test_name("client")
    seen: set[tuple[bool, bool]] = set()
    for n in range(200):
        core.submit([sign_tx(client, genesis.chain_id, n, Noop(b"alone"))])
        core.tick(20 * (n + 1))
        if n % 3 and n > 100:
            continue  # later on, three ticks' work in one batch
        while core.has_ready():
            rd = core.ready()
            raw = store.hard_state()
            durable = decode(HardState, raw).term if raw is not None else 0
            if rd.write.accept:
                terms = {b.term for b in rd.write.accept}
                written = terms == {durable}
                assert rd.proposals_first == (written and durable > 0), (terms, durable)
                seen.add((written, min(terms) > 0))
            store.write(rd.write)
            core.advance(rd)
    assert seen == {(True, False), (False, True), (True, True)}
