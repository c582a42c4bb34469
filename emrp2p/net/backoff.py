"""Exponential backoff with bounded, seeded jitter for our reconnect loop."""

from __future__ import annotations

import random


class Backoff:
    """Delays ``base * 2**n`` capped at ``cap``, each scaled by a jitter in [1-j, 1].

    The jitter comes from a seeded generator, so a test (or a simulation) sees
    the same sequence every run; different nodes use different seeds so that
    they do not redial a restarted peer in lockstep.
    """

    def __init__(self, base: float, cap: float, *, jitter: float = 0.25, seed: int | bytes = 0) -> None:
        if not (0 < base <= cap) or not (0 <= jitter < 1):
            raise ValueError("backoff needs 0 < base <= cap and 0 <= jitter < 1")
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self._rng = random.Random(seed)
        self._attempt = 0

    def next(self) -> float:
        """The delay before the next attempt; grows until :meth:`reset`."""
        raw: float = min(self.cap, self.base * (2.0 ** min(self._attempt, 32)))
        self._attempt += 1
        return raw * (1.0 - self.jitter * float(self._rng.random()))

    def reset(self) -> None:
        self._attempt = 0
