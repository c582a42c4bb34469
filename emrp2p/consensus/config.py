"""Tunables of the ordering core (all times in milliseconds of the driver's clock)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Config"]


@dataclass(frozen=True)
class Config:
    heartbeat_ms: int = 150
    """Leader heartbeat period (a proposal that reaches every member stands in for one);
    followers resend lost term votes at this pace too."""
    election_timeout_ms: int = 1000
    """A follower that hears nothing from the leader for this long moves to the next term."""
    max_txs_per_block: int = 3000
    min_block_interval_ms: int = 100
    """At most 1000 / this blocks per second."""
    max_in_flight: int = 1
    """The leader proposes on top of at most this many of its own blocks still waiting for a
    quorum (pipelining; 1 = one round at a time). A certificate for a block commits every
    uncommitted block below it, so a lost vote for one of them costs nothing."""
    pipeline_min_txs: int = 200
    """A block is proposed while another is in flight only if it carries at least this many
    transactions: under light load rounds stay one at a time (every block costs every node a
    fixed amount of work), under heavy load full blocks overlap."""
    max_blocks_per_term: int = 200
    max_term_ms: int = 60_000
    """The leader hands over after this many blocks or this long (fairness, load spreading)."""
    max_pending: int = 20_000
    """Pending pool bound: past it ``submit`` answers ``BUSY`` (back-pressure, never silent loss)."""
    pending_ttl_ms: int = 120_000
    """A pending transaction not committed by then is dropped and reported as expired."""
    forward_interval_ms: int = 0
    """A follower forwards what its apps submitted at most this often (0: every tick). Each
    message costs the leader a fixed amount beyond its transactions."""
    forward_retry_ms: int = 2000
    """Pending transactions are forwarded to the leader again after this long without commit."""
    max_clock_drift_ms: int = 5000
    """A block timestamped further than this ahead of the follower's clock is refused."""
    sync_batch_blocks: int = 256
    sync_max_bytes: int = 2 << 20
    """A sync response stops near this many bytes (twice at most), well under the transport's frame cap."""
    sync_timeout_ms: int = 1000
    remember_txs: int = 100_000
    """How many recent committed / rejected / expired transaction ids are remembered for status and
    dedupe (about 16 MB). Older committed ones are still found in the store's transaction index."""
