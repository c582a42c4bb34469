"""The simulated network: per-link latency, loss, duplication, reordering, partitions, one-way links.

All randomness comes from the simulation's one ``random.Random``; the network
only decides, for a message sent at time ``t`` from ``a`` to ``b``, at which
times (zero, one or two) it arrives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["LinkProfile", "Network"]


@dataclass
class LinkProfile:
    base_ms: float = 2.0
    jitter_ms: float = 3.0
    """Latency is base + exponential(jitter): later sends can overtake earlier ones (reordering)."""
    drop: float = 0.0
    duplicate: float = 0.0


@dataclass
class Network:
    rng: random.Random
    n: int
    default: LinkProfile = field(default_factory=LinkProfile)
    links: dict[tuple[int, int], LinkProfile] = field(default_factory=dict)
    groups: list[set[int]] | None = None
    """A partition: only nodes in the same group reach each other (None: fully connected)."""
    blocked: set[tuple[int, int]] = field(default_factory=set)
    """One-way cuts: (a, b) means a's messages never reach b."""

    def connected(self, a: int, b: int) -> bool:
        if (a, b) in self.blocked:
            return False
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    def partition(self, groups: list[set[int]]) -> None:
        self.groups = [set(g) for g in groups]

    def heal(self) -> None:
        self.groups = None
        self.blocked.clear()

    def arrivals(self, a: int, b: int, now: float) -> list[float]:
        if not self.connected(a, b):
            return []
        p = self.links.get((a, b), self.default)
        rng = self.rng
        if p.drop and rng.random() < p.drop:
            return []
        times = [now + p.base_ms + (rng.expovariate(1.0 / p.jitter_ms) if p.jitter_ms > 0 else 0.0)]
        if p.duplicate and rng.random() < p.duplicate:
            times.append(now + p.base_ms + rng.uniform(0, 4 * p.jitter_ms + 1))
        return times
