"""How many transactions a node's apps may add to its pool now (admission, by Little's law).

A transaction waits in the pool about as long as the pool's content takes to commit:
``waiting / rate``. To keep that under ``window_ms``, a node takes new transactions only
while the pool holds fewer than the network committed of it over the last ``window_ms``
(at least ``floor``, so that an idle node takes a first burst and the rate can grow).
Counted before anything is decoded, this refuses a flood's excess for the price of a hash,
where a rule on the oldest transaction's age lets a whole batch in (seconds of work at the
node's share of the network's rate) before the first one is old enough to trip it.
"""

from __future__ import annotations

from collections import deque

__all__ = ["Intake"]


class Intake:
    """Sliding count of the pool's committed transactions, and the room it leaves.

    ``drained`` is a running total (``TxPool.drained``); :meth:`observe` records it after
    commits. Pure arithmetic on the caller's clock: no I/O, no time source of its own.
    """

    def __init__(self, window_ms: int, floor: int, now_ms: int, drained: int) -> None:
        if window_ms <= 0 or floor < 1:
            raise ValueError("window_ms must be positive and floor at least 1")
        self.window_ms = window_ms
        self.floor = floor
        self._samples: deque[tuple[int, int]] = deque([(now_ms, drained)])

    def observe(self, now_ms: int, drained: int) -> None:
        samples = self._samples
        if samples[-1][1] != drained:
            samples.append((now_ms, drained))
        self._trim(now_ms)

    def _trim(self, now_ms: int) -> None:
        # Keep one sample at or before the window's start: the total as the window opened.
        samples, start = self._samples, now_ms - self.window_ms
        while len(samples) > 1 and samples[1][0] <= start:
            samples.popleft()

    def committed_in_window(self, now_ms: int, drained: int) -> int:
        """Transactions of the pool committed over the last ``window_ms``."""
        self._trim(now_ms)
        return drained - self._samples[0][1]

    def room(self, now_ms: int, drained: int, waiting: int) -> int:
        """How many more transactions the pool takes now (0: answer busy)."""
        return max(0, max(self.floor, self.committed_in_window(now_ms, drained)) - waiting)
