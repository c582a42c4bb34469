"""Scenario tests: scripted fault sequences over the simulated cluster, each read as a step list.

Every scenario ends with the simulator's safety checker (one block per height
everywhere, prefix chains, equal state roots, no double vote, every committed
tx submitted and committed once) and a check that the cluster made progress.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import pytest

from emrp2p.consensus import Config, Head, Message, Role, SyncResponse
from emrp2p.ledger.types import Action, ApproveMembership, ProposeMembership
from emrp2p.ledger.types import Role as MemberRole
from emrp2p.sim.checks import check_safety
from emrp2p.sim.cluster import Cluster
from emrp2p.sim.network import LinkProfile

CFG = Config(heartbeat_ms=100, election_timeout_ms=800, min_block_interval_ms=50, max_term_ms=60_000)


def cluster(n: int = 5, seed: int = 7, **kw: object) -> Cluster:
    c = Cluster(n, seed, config=CFG, link=LinkProfile(base_ms=2, jitter_ms=2), **kw)  # type: ignore[arg-type]
    c.run_until(1500)
    return c


def run_until(c: Cluster, pred: Callable[[], bool], limit_ms: float, step_ms: float = 1.0) -> None:
    end = c.now + limit_ms
    while not pred():
        assert c.now < end, "condition not reached in time"
        c.run_until(c.now + step_ms)


def leader(c: Cluster) -> int:
    leaders = [i for i in c.leaders() if not c.nodes[i].paused]
    assert len(leaders) >= 1
    return max(leaders, key=lambda i: c.nodes[i].core.term)  # type: ignore[union-attr]


def load(c: Cluster, count: int, at: int | None = None, first_client: int = 0) -> list[bytes]:
    """``count`` Noop txs from the clients: one batch submitted at node ``at``, or spread one by
    one over the live nodes."""
    live = [n.index for n in c.nodes if n.up and not n.paused]
    txs = [c.new_tx(c.clients[first_client + k % 2]) for k in range(count)]
    if at is not None:
        c.submit(at, txs)
    else:
        for k, tx in enumerate(txs):
            c.submit(live[k % len(live)], [tx])
    return [tx.tx_id for tx in txs]


def all_committed(c: Cluster, ids: list[bytes]) -> bool:
    return all(tx_id in c.obs.tx_height for tx_id in ids)


def assert_safe(c: Cluster) -> None:
    assert check_safety(c) == []


def test_a_leader_is_established_and_commits_submitted_transactions() -> None:
    c = cluster()
    assert len(c.leaders()) == 1
    ids = load(c, 40)
    c.run_until(c.now + 2000)
    assert all_committed(c, ids)
    assert len(set(c.heights())) == 1
    assert_safe(c)


def test_leader_crash_right_after_proposing() -> None:
    c = cluster()
    old = leader(c)
    ids = load(c, 20, at=old)
    core = c.nodes[old].core
    assert core is not None
    # The leader proposes a block of all 20 on this very submit: crash it before any vote comes back.
    assert [len(b.txs) for b in core.accepted_blocks() if b.term == core.term] == [20]
    c.crash(old)
    run_until(c, lambda: any(i != old for i in c.leaders()), 5 * CFG.election_timeout_ms)
    ids += load(c, 10)
    run_until(c, lambda: all_committed(c, ids), 5000, 50)  # the carried-forward block commits too
    c.restart(old)
    c.run_until(c.now + 3000)
    assert c.nodes[old].store.committed_height() == c.max_height()
    assert_safe(c)


def test_a_leader_crashed_while_writing_a_proposal_it_sent_first_moves_on_and_the_block_commits() -> None:
    """A leader with a slow disk sends its proposal while it writes it (``Ready.proposals_first``);
    it crashes before the write is done. Restarted without the block, it leads that term no
    more (no second block at that height), and the followers' copy commits under the next."""
    c = cluster()
    lead = leader(c)
    if c.nodes[lead].core.term == 0:  # type: ignore[union-attr]
        # Term 0's leader does not send proposals first: on to a later term.
        c.crash(lead)
        run_until(c, lambda: any(i != lead for i in c.leaders()), 5 * CFG.election_timeout_ms)
        c.restart(lead)
        c.run_until(c.now + 500)
        lead = leader(c)
    core = c.nodes[lead].core
    assert core is not None and core.term > 0
    term = core.term
    c.slow_disk(lead, 40)
    ids = load(c, 20, at=lead)
    [block] = [b for b in core.accepted_blocks() if b.term == term and len(b.txs) == 20]

    def stored_by(j: int) -> bool:
        return block.block_hash in {b.block_hash for b in c.nodes[j].store.accepted()}

    run_until(c, lambda: sum(stored_by(j) for j in range(5) if j != lead) >= 2, 30, 0.5)
    assert not stored_by(lead)  # the followers hold it; the leader's own write is still going
    c.crash(lead)
    c.restart(lead)
    restarted = c.nodes[lead].core
    assert restarted is not None and restarted.term > term
    assert not stored_by(lead)
    ids += load(c, 10)
    run_until(c, lambda: all_committed(c, ids), 8000, 50)
    assert c.obs.tx_height[ids[0]] == block.height  # the block itself, carried forward
    c.run_until(c.now + 2000)
    assert c.nodes[lead].store.committed_height() == c.max_height()
    assert_safe(c)


def test_crash_right_after_voting_keeps_the_vote() -> None:
    c = cluster()
    lead = leader(c)
    follower = (lead + 1) % 5
    before = c.nodes[follower].store.hard_state()
    load(c, 5, at=lead)
    run_until(c, lambda: c.nodes[follower].store.hard_state() != before, 200, 0.5)
    c.crash(follower)
    c.restart(follower)
    hs_after = c.nodes[follower].core._hs  # type: ignore[union-attr]
    assert hs_after.vote_height == c.nodes[lead].core.head().height  # type: ignore[union-attr]
    c.run_until(c.now + 3000)
    assert_safe(c)


def test_restart_of_every_node_keeps_the_chain_and_resumes() -> None:
    c = cluster()
    ids = load(c, 30)
    c.run_until(c.now + 1000)
    height = c.max_height()
    for i in range(5):
        c.crash(i)
    for i in range(5):
        c.restart(i)
    assert min(c.heights()) >= height - 1
    ids += load(c, 30)
    run_until(c, lambda: all_committed(c, ids), 8000, 50)
    assert_safe(c)


def test_a_two_two_split_of_four_stalls_and_heals() -> None:
    c = cluster(4)
    c.partition([{0, 1}, {2, 3}])
    ids = load(c, 20)
    c.run_until(c.now + 4000)
    stalled = c.max_height()
    assert not all_committed(c, ids)  # no side has a majority of 4
    c.heal()
    run_until(c, lambda: all_committed(c, ids), 8000, 50)
    assert c.max_height() > stalled
    assert_safe(c)


def test_a_three_two_split_keeps_the_majority_going_and_the_minority_catches_up() -> None:
    c = cluster(5)
    c.partition([{0, 1, 2}, {3, 4}])
    ids = load(c, 20, at=0)
    run_until(c, lambda: all_committed(c, ids), 6000, 50)
    assert c.nodes[3].store.committed_height() < c.max_height()
    c.heal()
    run_until(c, lambda: len(set(c.heights())) == 1, 6000, 50)
    assert_safe(c)


def test_an_isolated_leader_returns_with_a_stale_term_and_follows() -> None:
    c = cluster(5)
    old = leader(c)
    old_term = c.nodes[old].core.term  # type: ignore[union-attr]
    c.partition([{old}, {i for i in range(5) if i != old}])
    ids = load(c, 10, at=old)  # stuck on the isolated leader
    others = load(c, 10, at=(old + 1) % 5, first_client=2)  # other clients: no nonce gap
    run_until(c, lambda: all_committed(c, others), 6000, 50)
    assert c.nodes[old].core.role is Role.LEADER  # type: ignore[union-attr]
    c.heal()
    run_until(c, lambda: c.nodes[old].core.term > old_term, 3000)  # type: ignore[union-attr]
    run_until(c, lambda: all_committed(c, ids) and len(set(c.heights())) == 1, 8000, 50)
    assert_safe(c)


@pytest.mark.parametrize("fault", ["partition", "pause"])
def test_a_follower_back_from_isolation_or_a_pause_moves_no_term_and_no_leader(fault: str) -> None:
    """Pre-vote: while one follower is cut off (or its process stopped) for several election
    timeouts, the others keep hearing the leader, so its return changes neither term nor
    leader; it catches up and the cluster commits on throughout."""
    c = cluster(5)
    lead = leader(c)
    term = c.nodes[lead].core.term  # type: ignore[union-attr]
    lone = (lead + 1) % 5
    if fault == "partition":
        c.partition([{lone}, {i for i in range(5) if i != lone}])
    else:
        c.pause(lone)
    ids = load(c, 10, at=lead)
    c.run_until(c.now + 4 * CFG.election_timeout_ms)
    assert all_committed(c, ids)
    if fault == "partition":
        c.heal()
    else:
        c.resume(lone)
    more = load(c, 10, at=lone, first_client=2)
    run_until(c, lambda: all_committed(c, more) and len(set(c.heights())) == 1, 4000, 50)
    assert [n.core.term for n in c.nodes] == [term] * 5  # type: ignore[union-attr]
    assert leader(c) == lead
    assert_safe(c)


def test_clock_jumps_forward_and_back_do_not_break_ordering() -> None:
    c = cluster(5)
    ids = load(c, 10)
    c.skew(1, +30_000)  # a follower's clock leaps ahead: it times out at once
    c.skew(2, -20_000)  # another's goes back: its timers stop until it catches up
    ids += load(c, 10)
    c.run_until(c.now + 5000)
    c.skew(1, -30_000)
    c.skew(2, +20_000)
    ids += load(c, 10)
    run_until(c, lambda: all_committed(c, ids), 10_000, 50)
    timestamps = [c.nodes[0].store.block(h).header.timestamp_ms for h in range(1, c.max_height() + 1)]  # type: ignore[union-attr]
    assert timestamps == sorted(timestamps)
    assert_safe(c)


def _membership_tx(c: Cluster, signer: int, payload: object) -> None:
    node = c.nodes[signer]
    core = node.core
    assert core is not None
    from emrp2p.ledger.types import sign_tx

    nonce = c.ledger.next_nonce(node.store.state, node.identity.public)
    tx = sign_tx(node.identity, c.chain_id, nonce, payload)  # type: ignore[arg-type]
    c.obs.submitted.add(tx.tx_id)
    c.submit(signer, [tx])


def test_membership_add_and_remove_under_load() -> None:
    c = cluster(4, n_observers=1)
    newcomer = c.nodes[4].identity.public
    c.client_load(50, c.now + 20_000)
    c.run_until(c.now + 1000)

    add = secrets.token_bytes(16)
    effective = c.max_height() + 15
    _membership_tx(
        c, 0, ProposeMembership(add, Action.ADD, newcomer, "hospital-4", MemberRole.VALIDATOR, effective)
    )
    c.run_until(c.now + 500)
    for voter in (1, 2):
        _membership_tx(c, voter, ApproveMembership(add))
    run_until(c, lambda: c.max_height() > effective + 5, 15_000, 50)
    assert newcomer in c.nodes[0].core.validators()  # type: ignore[union-attr]
    assert c.nodes[4].core.is_validator  # type: ignore[union-attr]

    remove = secrets.token_bytes(16)
    gone = c.nodes[3].identity.public
    effective = c.max_height() + 15
    _membership_tx(
        c, 0, ProposeMembership(remove, Action.REMOVE, gone, "hospital-3", MemberRole.VALIDATOR, effective)
    )
    c.run_until(c.now + 500)
    for voter in (1, 2):
        _membership_tx(c, voter, ApproveMembership(remove))
    run_until(c, lambda: c.max_height() > effective + 5, 15_000, 50)
    assert gone not in c.nodes[0].core.validators()  # type: ignore[union-attr]
    c.run_until(c.now + 3000)
    assert len(set(c.heights()[:3] + c.heights()[4:])) == 1
    assert_safe(c)


@pytest.mark.slow
def test_a_node_back_from_a_long_outage_syncs_more_than_a_thousand_blocks_in_batches() -> None:
    fast = Config(heartbeat_ms=100, election_timeout_ms=800, min_block_interval_ms=0, sync_batch_blocks=256)
    c = Cluster(4, 3, config=fast, link=LinkProfile(base_ms=1, jitter_ms=1))
    c.run_until(1000)
    c.crash(3)
    c.client_load(200, c.now + 20_000)
    run_until(c, lambda: c.max_height() > 1200, 40_000, 500)
    responses: list[int] = []
    original = c._send_batch

    def counting(i: int, incarnation: int, messages: list[tuple[bytes, Message]]) -> None:
        responses.extend(len(m.blocks) for _, m in messages if isinstance(m, SyncResponse))
        original(i, incarnation, messages)

    c._send_batch = counting  # type: ignore[method-assign]
    c.restart(3)
    run_until(c, lambda: c.nodes[3].store.committed_height() >= c.max_height() - 1, 10_000, 50)
    assert sum(responses) >= 1200 and max(responses) <= 2 * 256 and len(responses) >= 5
    assert_safe(c)


def _commit_known_only_to_the_leader(c: Cluster) -> None:
    """Raft's figure-8 setting: the leader L certifies a block that its followers A and B
    accepted but never see committed, then L is cut off; the next two terms' leaders D1, D2
    never saw the block. Only A or B may lead next, and they must commit that very block."""
    lead = leader(c)
    term = c.nodes[lead].core.term  # type: ignore[union-attr]
    d1, d2, a, b = ((term + k) % 5 for k in (1, 2, 3, 4))
    c.partition([{lead, a, b}, {d1, d2}])
    load(c, 2, at=d1, first_client=2)  # D1 has something to propose if it ever leads
    c.run_until(c.now + 100)
    height = c.nodes[lead].store.committed_height() + 1
    load(c, 3, at=lead)
    run_until(c, lambda: all(c.nodes[i].core.head().height == height for i in (a, b)), 100, 0.1)  # type: ignore[union-attr]
    c.cut(lead, a)
    c.cut(lead, b)  # the votes still reach L, its commit notices no longer reach A and B
    run_until(c, lambda: c.nodes[lead].store.committed_height() == height, 100, 0.1)
    assert c.nodes[a].store.committed_height() < height
    c.partition([{lead}, {a, b, d1, d2}])
    c.run_until(c.now + 8 * CFG.election_timeout_ms)


def test_a_block_certified_only_at_the_old_leader_survives_behind_candidates() -> None:
    c = cluster(5)
    _commit_known_only_to_the_leader(c)
    assert_safe(c)
    c.heal()
    c.run_until(c.now + 3000)
    assert len(set(c.heights())) == 1
    assert_safe(c)


def test_the_checker_catches_a_broken_election_restriction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Head, "rank", lambda self: (0, 0))  # any candidate looks up to date
    c = cluster(5)
    _commit_known_only_to_the_leader(c)
    assert any("different" in v for v in check_safety(c))
