"""CPU, memory and percentile helpers for the benchmarks, read from /proc (Linux)."""

from __future__ import annotations

import os

HZ = os.sysconf("SC_CLK_TCK")


def _stat_ticks(path: str) -> int:
    """utime + stime from a /proc stat file; 0 once the process is gone."""
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0


def cpu_ticks(pid: int) -> int:
    return _stat_ticks(f"/proc/{pid}/stat")


def cpu_pct(ticks: float, seconds: float) -> float:
    """CPU ticks over ``seconds`` of wall time, in % of one core."""
    return 100.0 * ticks / HZ / seconds


def main_thread_ticks(pid: int) -> int:
    """CPU ticks of a process's main thread (the rest of ``cpu_ticks`` is its other threads)."""
    return _stat_ticks(f"/proc/{pid}/task/{pid}/stat")


def disk_write_bytes(pid: int) -> int:
    """Bytes a process caused to be written to storage (``write_bytes`` of /proc/PID/io: page
    cache writeback included, so it counts whole folios); 0 once the process is gone."""
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return total - idle, total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]
