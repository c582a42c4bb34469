"""Reference point for ``bench/cluster.py``: PySyncObj (pure-Python Raft) replicating signed transactions.

N processes on 127.0.0.1 ports, PySyncObj's default settings (``SyncObjConf()``:
batched append entries, log compaction after 5,000 entries or 300 s, no fsync).
The replicated method verifies one Ed25519-signed transaction of the same kind
``emrp2pd`` orders (``VerifyKey(sender).verify(signing_bytes, signature)``) on
every replica as it is applied, and counts it. Load comes from the node
processes themselves (``sync=False`` calls with callbacks, a bounded number in
flight per process): first flat out, then paced at half the leader's applied
rate, where latency (call -> callback once applied on the calling node) is read.

Used as a library by ``bench/cluster.py`` (``run_reference``); each node runs
as ``python bench/pysyncobj_ref.py --child I --ports P0,P1,.. --data FILE``
and talks JSON lines over stdin/stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from procstat import cpu_pct, cpu_ticks, machine_busy, pct

SAMPLE_EVERY = 20
WINDOW = 2000
"""Calls in flight per process (well under PySyncObj's 100,000-command queue)."""


# --------------------------------------------------------------------------- the node process


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _child(idx: int, ports: list[int], data_path: str) -> None:
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey
    from pysyncobj import SyncObj, SyncObjConf, replicated

    with open(data_path, "rb") as f:
        all_samples: list[tuple[bytes, bytes, bytes]] = pickle.load(f)
    per = max(1, len(all_samples) // len(ports))
    samples = all_samples[idx * per : (idx + 1) * per] or all_samples
    del all_samples

    class SignedLog(SyncObj):  # type: ignore[misc]
        def __init__(self, me: str, others: list[str]) -> None:
            super().__init__(me, others, conf=SyncObjConf())
            # State (pickled by log compaction): two counters.
            self.applied = 0
            self.bad = 0

        @replicated  # type: ignore[misc,untyped-decorator]
        def apply_tx(self, sender: bytes, message: bytes, signature: bytes) -> bool:
            try:
                VerifyKey(sender).verify(message, signature)
            except BadSignatureError:
                self.bad += 1
                return False
            self.applied += 1
            return True

    me = f"127.0.0.1:{ports[idx]}"
    others = [f"127.0.0.1:{p}" for i, p in enumerate(ports) if i != idx]
    obj = SignedLog(me, others)
    deadline = time.monotonic() + 60
    while not (obj._getLeader() is not None and obj.isReady()):
        if time.monotonic() > deadline:
            _emit({"event": "error", "error": "no leader within 60 s"})
            return
        time.sleep(0.05)
    _emit({"event": "ready", "leader": str(obj._getLeader()), "is_leader": obj._isLeader()})

    state = {"i": 0}
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        if cmd["op"] == "run":
            _emit(_run_phase(obj, samples, state, cmd))
    obj.destroy()


def _run_phase(
    obj: Any, samples: list[tuple[bytes, bytes, bytes]], state: dict[str, int], cmd: dict[str, Any]
) -> dict[str, Any]:
    """Offer load (``rate`` calls/s from this process, 0 = flat out) from ``start_at`` for ``seconds``."""
    rate = float(cmd["rate"])
    seconds = float(cmd["seconds"])
    start_at = float(cmd["start_at"])
    n = len(samples)
    done = [0]  # written only by PySyncObj's thread (callbacks)
    ok = [0]
    fails: Counter[int] = Counter()
    latencies: list[float] = []

    def cb(result: Any, err: int) -> None:
        done[0] += 1
        if err == 0:
            ok[0] += 1
        else:
            fails[err] += 1

    def sampled(t0: float) -> Any:
        def cb_s(result: Any, err: int) -> None:
            if err == 0:
                latencies.append(time.monotonic() - t0)
            cb(result, err)

        return cb_s

    series: list[tuple[float, int]] = []
    submitted = 0
    i = state["i"]
    while time.monotonic() < start_at:
        time.sleep(0.001)
    t0 = time.monotonic()
    end = t0 + seconds
    next_mark = t0
    apply_tx = obj.apply_tx
    while True:
        now = time.monotonic()
        if now >= next_mark:
            series.append((now, obj.applied))
            next_mark = now + 0.1
        if now >= end:
            break
        room = WINDOW - (submitted - done[0])
        want = room if rate <= 0 else min(room, int(rate * (now - t0)) - submitted)
        if want <= 0:
            time.sleep(0.002)
            continue
        for _ in range(min(want, 500)):
            s = samples[i % n]
            i += 1
            if submitted % SAMPLE_EVERY == 0:
                apply_tx(s[0], s[1], s[2], callback=sampled(time.monotonic()))
            else:
                apply_tx(s[0], s[1], s[2], callback=cb)
            submitted += 1
    state["i"] = i
    drain_end = time.monotonic() + 10
    while done[0] < submitted and time.monotonic() < drain_end:
        time.sleep(0.01)
    series.append((time.monotonic(), obj.applied))
    return {
        "event": "result",
        "t0": t0,
        "t_end": end,
        "submitted": submitted,
        "done": done[0],
        "ok": ok[0],
        "fails": dict(fails),
        "latencies": latencies,
        "series": series,
        "applied": obj.applied,
        "bad": obj.bad,
        "is_leader": obj._isLeader(),
        "leader": str(obj._getLeader()),
    }


# --------------------------------------------------------------------------- the driver


class _Child:
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.buf = b""

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def recv(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("PySyncObj node did not answer in time")
            r, _, _ = select.select([fd], [], [], remaining)
            if r:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise ConnectionError(f"PySyncObj node exited ({self.proc.poll()})")
                self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return json.loads(line)  # type: ignore[no-any-return]


def _leader_rate(results: list[dict[str, Any]], warm: float) -> tuple[float, int]:
    """Applied ops/s on the leader (falls back to the fastest replica) over [t0 + warm, t_end]."""

    def rate(r: dict[str, Any]) -> float:
        series = r["series"]
        t_a = r["t0"] + warm
        a = next(((t, c) for t, c in series if t >= t_a), series[0])
        b = next(((t, c) for t, c in reversed(series) if t <= r["t_end"] + 0.05), series[-1])
        return (b[1] - a[1]) / (b[0] - a[0]) if b[0] > a[0] else 0.0

    leaders = [i for i, r in enumerate(results) if r["is_leader"]]
    if len(leaders) == 1:
        return rate(results[leaders[0]]), leaders[0]
    rates = [rate(r) for r in results]
    best = max(range(len(rates)), key=rates.__getitem__)
    return rates[best], best


def _reasons(results: list[dict[str, Any]]) -> dict[str, int]:
    from pysyncobj import FAIL_REASON

    names = {v: k for k, v in vars(FAIL_REASON).items() if isinstance(v, int)}
    total: Counter[str] = Counter()
    for r in results:
        for code, count in r["fails"].items():
            total[names.get(int(code), str(code))] += count
    return dict(total)


def run_reference(
    samples: list[tuple[bytes, bytes, bytes]],
    workdir: Path,
    *,
    nodes: int = 4,
    flat_seconds: float = 8.0,
    half_seconds: float = 5.0,
    log: Any = print,
) -> dict[str, Any]:
    """Run the reference; every process it starts is killed before it returns."""
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "pysyncobj-txs.pickle"
    data.write_bytes(pickle.dumps(samples))
    from emrp2p.cli.testnet import free_ports

    ports = free_ports(nodes)
    children: list[_Child] = []
    out: dict[str, Any] = {}
    try:
        for i in range(nodes):
            err = open(workdir / f"pysyncobj-{i}.log", "ab")  # noqa: SIM115 - handed to the child
            proc = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(i),
                    "--ports",
                    ",".join(map(str, ports)),
                    "--data",
                    str(data),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=workdir,
            )
            err.close()
            children.append(_Child(proc))
        for c in children:
            msg = c.recv(70)
            if msg.get("event") != "ready":
                raise RuntimeError(f"PySyncObj node failed: {msg}")

        others: list[float] = []

        def phase(rate_per_node: float, seconds: float) -> tuple[list[dict[str, Any]], list[float]]:
            start_at = time.monotonic() + 0.3
            for c in children:
                c.send({"op": "run", "rate": rate_per_node, "seconds": seconds, "start_at": start_at})
            time.sleep(max(0.0, start_at - time.monotonic()))
            t_cpu0 = [cpu_ticks(c.proc.pid) for c in children]
            m0 = machine_busy()
            w0 = time.monotonic()
            time.sleep(seconds)
            t_cpu1 = [cpu_ticks(c.proc.pid) for c in children]
            m1 = machine_busy()
            w1 = time.monotonic()
            cpu = [cpu_pct(b - a, w1 - w0) for a, b in zip(t_cpu0, t_cpu1, strict=True)]
            machine = 100.0 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * (os.cpu_count() or 1)
            others.append(max(0.0, machine - sum(cpu)))
            return [c.recv(seconds + 30) for c in children], cpu

        warm = min(1.0, flat_seconds / 5)
        res, cpu = phase(0, flat_seconds)
        peak, leader = _leader_rate(res, warm)
        lat = [x for r in res for x in r["latencies"]]
        out["peak_ops_per_s"] = peak
        out["leader_index"] = leader
        out["flat"] = {
            "submitted": sum(r["submitted"] for r in res),
            "ok": sum(r["ok"] for r in res),
            "fails": sum(sum(r["fails"].values()) for r in res),
            "fail_reasons": _reasons(res),
            "bad": sum(r["bad"] for r in res),
            "p50_ms": 1000 * pct(lat, 0.5),
            "p99_ms": 1000 * pct(lat, 0.99),
            "cpu_pct": cpu,
        }
        log(
            f"pysyncobj flat-out: applied_on_leader={peak:.0f} ops/s  p50={out['flat']['p50_ms']:.0f} ms"
            f" p99={out['flat']['p99_ms']:.0f} ms  failed={out['flat']['fails']} {out['flat']['fail_reasons']}"
            f"  cpu%/node={[round(x) for x in cpu]}  others={others[-1]:.0f}%"
        )
        half = peak / 2
        res, cpu = phase(half / nodes, half_seconds)
        hrate, _ = _leader_rate(res, min(0.5, half_seconds / 5))
        lat = [x for r in res for x in r["latencies"]]
        out["others_cpu"] = others
        out["half"] = {
            "offered": half,
            "applied": hrate,
            "p50_ms": 1000 * pct(lat, 0.5),
            "p99_ms": 1000 * pct(lat, 0.99),
            "samples": len(lat),
            "fails": sum(sum(r["fails"].values()) for r in res),
            "cpu_pct": cpu,
        }
        log(
            f"pysyncobj half-peak: offered={half:.0f} applied={hrate:.0f} ops/s"
            f"  p50={out['half']['p50_ms']:.0f} ms p99={out['half']['p99_ms']:.0f} ms"
            f" (samples={len(lat)})  cpu%/node={[round(x) for x in cpu]}  others={others[-1]:.0f}%"
        )
        for c in children:
            c.send({"op": "quit"})
        for c in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(5)
    finally:
        for c in children:
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()
            for f in (c.proc.stdin, c.proc.stdout):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", type=int, required=True)
    p.add_argument("--ports", required=True)
    p.add_argument("--data", required=True)
    a = p.parse_args()
    _child(a.child, [int(x) for x in a.ports.split(",")], a.data)


if __name__ == "__main__":
    main()
