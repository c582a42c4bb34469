"""Crash safety: a writer SIGKILLed at random points leaves every batch on disk whole or not at all.

The writer (``crash_writer.py``) reports each durable commit over a pipe; the
test waits for a randomly chosen report, kills the writer (it is then somewhere
inside building or writing the next batch), reopens the store and checks it
against a recomputation of what the committed prefix must contain.
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from store_chainkit import (
    expected_state,
    genesis_delta,
    hard_state_bytes,
    make_genesis,
    next_root,
    synthetic_writes,
)

import emrp2p
from emrp2p.store.lmdb_store import LmdbStore

WRITER = Path(__file__).with_name("crash_writer.py")
REPO_ROOT = Path(emrp2p.__file__).resolve().parent.parent
TXS_PER_BLOCK = 20
KILLS = 30
SEED = 20240611
DEADLINE_S = 120.0


class Writer:
    def __init__(self, path: Path, script: Path = WRITER) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(script.parent)]))
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(path)],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stdout is not None
        self.stdout = self.proc.stdout

    def read_line(self, deadline: float) -> str:
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([self.stdout], [], [], max(remaining, 0))
        if not ready:
            self.kill()
            raise AssertionError("the writer reported nothing before the deadline")
        line = self.stdout.readline().decode()
        if not line:
            code = self.proc.wait()
            raise AssertionError(f"the writer exited with {code}")
        return line.strip()

    def kill(self) -> list[str]:
        """SIGKILL the writer; returns the lines it wrote that were not read yet."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        rest = self.stdout.read().decode().splitlines()
        self.stdout.close()
        return rest


def check_store(path: Path, reported: int) -> int:
    """Everything committed 1..head is whole and consistent; returns the head."""
    genesis = make_genesis()
    with LmdbStore(path) as store:
        assert store.genesis() == genesis
        head = store.committed_height()
        assert reported <= head <= reported + 1, f"head {head}, last reported commit {reported}"
        root = genesis_delta().root
        assert store.state_root_at(0) == root
        parent = genesis.chain_id
        for h in range(1, head + 1):
            block = store.block(h)
            assert block is not None, f"block {h} missing"
            assert block.height == h
            assert h == 1 or block.header.parent == parent
            cert = store.certificate(h)
            assert cert is not None and cert.block_hash == block.block_hash and cert.height == h
            assert store.height_of(block.block_hash) == h
            assert len(block.txs) == TXS_PER_BLOCK
            for tx in block.txs:
                assert store.tx_height(tx.tx_id) == h
            root = next_root(root, h, synthetic_writes(h))
            assert block.header.state_root == root
            assert store.state_root_at(h) == root
            parent = block.block_hash
        assert store.block(head + 1) is None
        assert store.certificate(head + 1) is None
        assert store.state_root_at(head + 1) is None
        state, expected_root = expected_state(head)
        assert store.state_root() == expected_root
        assert store.head_hash() == parent
        assert dict(store.state.items(b"")) == state
        stats = store.stats()
        assert stats.tx_entries == head * TXS_PER_BLOCK
        assert stats.state_entries == len(state)
        accepted = [b.height for b in store.accepted()]
        if head:
            assert accepted == [head + 1]
            assert store.hard_state() == hard_state_bytes(1, head)
        else:
            assert accepted == []
            assert store.hard_state() is None
        return head


def test_sigkill_at_random_points_leaves_every_batch_whole_or_absent(tmp_path: Path) -> None:
    least = torn = mid_write = head = 0
    for last, reported, head, steps in kill_at_random_points(
        tmp_path / "chain", random.Random(SEED), check_store
    ):
        least += steps
        mid_write += last.startswith("writing")
        torn += head - reported
    assert head >= least
    print(f"{KILLS} kills, {mid_write} during a write, final height {head}, {torn} writes durable unreported")


def kill_at_random_points(
    path: Path,
    rng: random.Random,
    check: Callable[[Path, int], int],
    *,
    script: Path = WRITER,
    kills: int = KILLS,
    max_steps: int = 4,
    into_write: float = 0.85,
    max_spin_s: float = 0.008,
) -> Iterator[tuple[str, int, int, int]]:
    """Start the writer ``kills`` times; each time let it report 0..``max_steps`` commits, then
    (with chance ``into_write``) wait until it starts writing the next batch, spin a random
    moment and SIGKILL it; ``check(path, last reported commit)`` returns the head it finds.
    Yields (the writer's last line, its last reported commit, that head, the steps waited for)."""
    deadline = time.monotonic() + DEADLINE_S
    head = 0
    for _ in range(kills):
        writer = Writer(path, script)
        reported = head
        try:
            last = writer.read_line(deadline)
            assert last == f"ready {head}", last
            steps = rng.randint(0, max_steps)
            while reported < head + steps:
                reported = parse_progress(last := writer.read_line(deadline), reported)
            if rng.random() < into_write:
                # Wait until the next batch is being written, then kill somewhere inside (or just after) it.
                while not last.startswith("writing"):
                    reported = parse_progress(last := writer.read_line(deadline), reported)
            spin_until = time.perf_counter() + rng.uniform(0, max_spin_s)
            while time.perf_counter() < spin_until:
                pass
        finally:
            rest = writer.kill()
        for last in rest:
            reported = parse_progress(last, reported)
        head = check(path, reported)
        yield last, reported, head, steps


def parse_progress(line: str, reported: int) -> int:
    """The new last reported commit, checking the writer's lines come in order."""
    kind, value = line.split()
    if kind == "writing":
        assert int(value) == reported + 1, line
        return reported
    assert kind == "committed" and int(value) == reported + 1, line
    return int(value)
