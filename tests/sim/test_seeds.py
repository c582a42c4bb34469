"""Seeded fault-injection runs (the CI share of ``make soak``) and a check that the checkers bite."""

from __future__ import annotations

import pytest

from emrp2p.consensus.messages import Head
from emrp2p.sim.run import run_many, run_seed


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


def test_the_checkers_catch_a_broken_election_restriction(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every candidate taken as up to date, a new leader can drop a committed block;
    seed 34 of 5 validators is a schedule where that happens."""
    monkeypatch.setattr(Head, "rank", lambda self: (0, 0))
    r = run_seed(5, 34)
    assert any("different" in v for v in r.violations)
