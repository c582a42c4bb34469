"""Seeded fault-injection runs: the CI share of ``make soak``. (That the checkers bite is shown in
``tests/consensus/test_scenarios.py``, with the election restriction broken on purpose.)"""

from __future__ import annotations

import pytest

from emrp2p.sim.run import run_many


def _violations(nodes: int, seeds: range) -> list[str]:
    return [f"seed {r.seed}: {r.violations}" for r in run_many(nodes, seeds, jobs=2) if r.violations]


def test_seeded_faults_with_4_validators() -> None:
    assert _violations(4, range(0, 100)) == []


@pytest.mark.slow
def test_seeded_faults_with_5_validators() -> None:
    assert _violations(5, range(1000, 1080)) == []


@pytest.mark.slow
def test_seeded_faults_with_7_validators() -> None:
    assert _violations(7, range(2000, 2050)) == []


def test_seeds_where_an_honest_leader_once_proposed_twice_at_one_height() -> None:
    """1132: a leader cut off in its term synced a later term's certified blocks and went on
    leading its own. 238: a node behind a membership change led a term that the others gave to
    another node; after syncing their blocks it proposed again at heights it had proposed at.
    Both ended with evidence of equivocation against an honest node."""
    results = {r.seed: r.violations for r in run_many(4, [238, 1132], jobs=2)}
    assert results == {238: [], 1132: []}


def test_seed_where_two_leaders_of_one_term_each_held_their_followers_back() -> None:
    """1546: after a membership change, two validators each led term 3 (they entered it on
    different sides of the change), each with followers that heard a live leader and so refused
    every pre-vote, and neither with a majority: no commit for 5 s after the faults healed. A
    leader that hears another leader of its own term now moves on to the next term."""
    assert [r.violations for r in run_many(4, [1546])] == [[]]


def test_seeds_where_a_split_view_of_a_terms_leader_stalled_commits_after_healing() -> None:
    """Both after a membership change, with validators that entered a term on different sides of
    it. 2026: the one backing a leader that never spoke held its apps' transactions, and the
    leader the others followed parked every later transaction of the same senders (5 s without a
    commit). 418: two validators backed a silent leader and pre-voted, the leader and its one
    follower refused, and the leader's blocks never reached a quorum (7.8 s)."""
    results = {r.seed: r.violations for r in run_many(4, [418, 2026], jobs=2)}
    assert results == {418: [], 2026: []}
