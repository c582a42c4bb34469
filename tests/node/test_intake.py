"""Admission by Little's law: a pool takes what the network committed of it over the window."""

from __future__ import annotations

import pytest

from emrp2p.node.intake import Intake


def test_an_idle_pool_takes_its_floor_and_no_more() -> None:
    intake = Intake(window_ms=1000, floor=50, now_ms=0, drained=0)
    assert intake.room(10_000, drained=0, waiting=0) == 50
    assert intake.room(10_000, drained=0, waiting=30) == 20
    assert intake.room(10_000, drained=0, waiting=80) == 0


def test_room_follows_what_committed_over_the_last_window() -> None:
    intake = Intake(window_ms=1000, floor=10, now_ms=0, drained=0)
    for t in range(100, 1100, 100):  # 100 commits every 100 ms: 1,000 a second
        intake.observe(t, drained=t)
    assert intake.committed_in_window(1000, drained=1000) == 1000
    assert intake.room(1000, drained=1000, waiting=400) == 600
    # Commits stop: the window empties as it slides, down to the floor.
    assert intake.committed_in_window(1500, drained=1000) == 500
    assert intake.committed_in_window(2000, drained=1000) == 0
    assert intake.room(2000, drained=1000, waiting=4) == 6


def test_a_burst_after_a_long_idle_spell_counts_only_inside_the_window() -> None:
    intake = Intake(window_ms=1000, floor=1, now_ms=0, drained=7)
    intake.observe(60_000, drained=7)  # nothing new: no sample
    intake.observe(60_500, drained=57)
    assert intake.committed_in_window(60_800, drained=57) == 50
    assert intake.committed_in_window(61_600, drained=57) == 0


def test_the_window_and_floor_must_make_sense() -> None:
    with pytest.raises(ValueError):
        Intake(window_ms=0, floor=1, now_ms=0, drained=0)
    with pytest.raises(ValueError):
        Intake(window_ms=10, floor=0, now_ms=0, drained=0)
