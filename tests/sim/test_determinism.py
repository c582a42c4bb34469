"""One seed fixes everything: the same seed replays the very same run."""

from __future__ import annotations

from emrp2p.sim.run import run_seed


def test_the_same_seed_gives_the_same_trace() -> None:
    a = run_seed(4, 11, duration_ms=12_000)
    b = run_seed(4, 11, duration_ms=12_000)
    assert a.trace_hash == b.trace_hash
    assert (a.height, a.committed_txs, a.events) == (b.height, b.committed_txs, b.events)


def test_different_seeds_give_different_traces() -> None:
    assert run_seed(4, 1, duration_ms=8_000).trace_hash != run_seed(4, 2, duration_ms=8_000).trace_hash


def test_a_run_without_faults_commits_the_offered_load() -> None:
    r = run_seed(5, 3, duration_ms=10_000, faults=False)
    assert r.violations == []
    assert r.committed_txs > 0.8 * 20 * 10 / 2
