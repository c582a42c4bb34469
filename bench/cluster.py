"""Cluster throughput and latency: real ``emrp2pd`` daemons on loopback, signed load offered at rising rates.

    python bench/cluster.py [--nodes 4] [--seconds 30] [--rates 1000,2000,4000,6000,8000,10000]
                            [--set consensus.max_txs_per_block=4000 ...] [--no-reference]
                            [--ref-seconds 13] [--profile DIR] [--keep]

1. ``emrp2p testnet`` + N daemons (``emrp2p.cluster.LocalCluster``) in a temporary folder;
   wait for a leader, let them idle, print each daemon's resident memory (VmRSS) and CPU.
2. Signed ``Noop`` transactions are made up front, in worker processes (one
   fresh set of client identities per chunk, so nonces never collide), while
   the daemons boot. Each node gets its own stream; a sender only ever talks
   to one node, in nonce order.
3. One submitter process per node offers its share of each step's rate
   through ``tx.submit_many`` on that node's socket (paced every 20 ms; a
   transaction answered ``busy`` is offered again first, after a pause that
   doubles, from 20 to 320 ms, while calls keep meeting ``busy``; what is still
   refused when the step ends is offered again before the next, not timed). One transaction in
   20 is timed by a pool of waiter threads (own connections) calling
   ``tx.status {wait: true}``: latency = submit call -> committed answer.
   Committed tx/s is read from the blocks a node committed during the step
   (heights read at the step's start, after a short warm-up, and at its end):
   the ``tx_count`` of all but the first, over the time between the first's and
   the last's header timestamps (``block_rate``). CPU per daemon is utime+stime from /proc over the step
   (% of one core), and its disk writes are ``write_bytes`` from /proc/PID/io (MB/s;
   page-cache writeback counts whole folios, so one 4 KiB LMDB page rewritten can cost a
   large folio's worth). Between steps the pools are left to drain (not timed).
   Stepping stops once committed tx/s grows by less than 5 %, or a step is
   saturated: busy answers outnumber a tenth of its offered transactions, or it
   committed less than 90 % of its rate. The load time the unused steps would have
   had (at least one step's) then goes to one long step flat out, whose committed
   tx/s is the peak reported, as PySyncObj's is its throughput flat out (near the
   peak a round takes 0.5-1 s, so a short step sees only a few blocks, and the best
   of several noisy steps would overstate it). It offers the best step's rate, and
   at least a quarter more than that step committed: a step that kept up with its
   rate measured the rate, not the network's capacity (offered 6,000, 4 daemons
   committed 5,700-5,900 tx/s; in long steps, offered 7,500 they committed 6,627,
   offered 10,000 6,365). Then one more step offers half the peak for latency.
4. Reference: PySyncObj with N processes, each replica verifying every
   transaction's Ed25519 signature as it applies it (``bench/pysyncobj_ref.py``).
5. Last line: ``cluster_tx_per_s=<peak committed tx/s>``.

``--profile DIR`` runs every daemon under a wrapper that accounts CPU during
each step (DIR/nodeI.prof.<step>.json) at a few percent of overhead (a
function-level profiler such as cProfile slows a loaded node so much that the
cluster's behaviour changes): the main thread's CPU per trio task (a trio
Instrument and ``time.thread_time``) and in the scheduler between task steps,
garbage collection pauses, the CPU of signature checks and store writes in
whatever thread runs them, the consensus messages each core emitted (and the
transactions they carried), hop delays (a core emits a Propose / BlockVote
-> the receiving core steps it; a proposal's hop also split where the receiving
driver decodes it: the sender's write and the network, then the receiver's
signature checks and inbox) and the life of one transaction in 32 (submitted
-> forwarded -> stepped by the leader -> proposed -> certified (the first core
to commit it, the leader) -> committed where it was submitted: where the commit
latency goes). For the peak step it prints these summed over
the nodes (the leader role rotates, so every node leads part of the time).
Every process started here is stopped (SIGTERM, then SIGKILL) on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from procstat import cpu_pct, cpu_ticks, disk_write_bytes, machine_busy, main_thread_ticks, pct, rss_mb  # noqa: E402

from emrp2p.cluster import LocalCluster, NodeProcess, wait_until  # noqa: E402
from emrp2p.genesis import load_genesis  # noqa: E402
from emrp2p.loadgen import MIN_PAUSE, back_off, offer  # noqa: E402
from emrp2p.rpc.client import SyncRpcClient  # noqa: E402
from emrp2p.rpc.errors import RpcError  # noqa: E402

DEFAULT_RATES = [1000, 2000, 3000, 4000, 6000, 8000, 10000]
SAMPLE_EVERY = 20
BATCH_INTERVAL = 0.02
MAX_BATCH = 2000
SATURATE = 1.25
"""The peak step offers at least this much more than the best step committed (flat out)."""
KEPT_UP = 0.9
"""A step that committed less than this share of its rate was saturated."""
BUSY_STOP = 0.1
"""Stepping stops once busy answers outnumber this share of a step's offered transactions: a
node's admission follows its commit rate over the last ``max_backlog_ms``, so while the load
steps up a few busy answers are the ramp, not the network's capacity."""
WAITERS_PER_NODE = 48
CHUNK = 5000
SENDERS_PER_CHUNK = 64
IDLE_SECONDS = 5.0


# --------------------------------------------------------------------------- signing (worker processes)


def _sign_chunk(job: tuple[bytes, str, int, int]) -> list[str]:
    from emrp2p.loadgen import TxFactory

    chain_id, prefix, senders, n = job
    return [tx.encoded.hex() for tx in TxFactory(chain_id, senders, prefix=prefix).make(n)]


def presign(chain_id: bytes, nodes: int, per_node: int, workers: int) -> list[list[str]]:
    chunks = (per_node + CHUNK - 1) // CHUNK
    jobs = [
        (chain_id, f"bench-{k}-{c}", SENDERS_PER_CHUNK, min(CHUNK, per_node - c * CHUNK))
        for c in range(chunks)
        for k in range(nodes)
    ]
    # Not "fork": this runs while the daemons boot, and a pool forked from a process with
    # threads can inherit a lock held mid-operation (a worker then hung, and the bench with it).
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(workers) as pool:
        out = pool.map(_sign_chunk, jobs, chunksize=1)
    streams: list[list[str]] = [[] for _ in range(nodes)]
    for (_, prefix, _, _), txs in zip(jobs, out, strict=True):
        streams[int(prefix.split("-")[1])].extend(txs)
    return streams


# --------------------------------------------------------------------------- submitter (one process per node)


class _Waiters:
    """Threads with their own connections, each waiting for one sampled transaction at a time."""

    def __init__(self, socket_path: str, n: int) -> None:
        self.q: queue.Queue[tuple[str, float, float] | None] = queue.Queue()
        self.results: list[tuple[float, float, str]] = []
        self.socket_path = socket_path
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        client: SyncRpcClient | None = None
        while True:
            item = self.q.get()
            if item is None:
                self.q.task_done()
                break
            tx_id, t_call, t_ret = item
            try:
                if client is None:
                    client = SyncRpcClient(self.socket_path, timeout=40)
                t_start = time.monotonic()
                r = client.call("tx.status", {"tx_id": tx_id, "wait": True, "timeout": 30})
                t_done = time.monotonic()
                self.results.append((t_done - t_call, t_start - t_ret, r.get("status", "?")))
            except (OSError, RpcError, ConnectionError, TimeoutError) as e:
                self.results.append((float("nan"), 0.0, f"error:{type(e).__name__}"))
                if client is not None:
                    client.close()
                client = None
            finally:
                self.q.task_done()

    def put(self, tx_id: str, t_call: float, t_ret: float) -> None:
        self.q.put((tx_id, t_call, t_ret))

    def drain(self, timeout: float) -> list[tuple[float, float, str]]:
        deadline = time.monotonic() + timeout
        while self.q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        out, self.results = self.results, []
        return out

    def close(self) -> None:
        for _ in self.threads:
            self.q.put(None)


def _submitter(conn: Any, socket_path: str, txs: list[str]) -> None:
    client = SyncRpcClient(socket_path, timeout=60)
    waiters = _Waiters(socket_path, WAITERS_PER_NODE)
    pos = 0
    retry: deque[int] = deque()
    try:
        while True:
            cmd = conn.recv()
            if cmd["op"] == "quit":
                break
            rate = float(cmd["rate"])
            seconds = float(cmd["seconds"])
            target = max(1, int(rate * BATCH_INTERVAL))
            st: dict[str, Any] = {
                "offered": 0,
                "accepted": 0,
                "duplicate": 0,
                "invalid": 0,
                "busy": 0,
                "calls": 0,
                "exhausted": False,
            }
            time.sleep(max(0.0, cmd["start_at"] - time.monotonic()))
            t0 = time.monotonic()
            end = t0 + seconds
            backoff = MIN_PAUSE
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                due = int(rate * (now - t0)) - st["offered"]
                if due < target and not retry:
                    time.sleep(max(0.0, min(end, t0 + (st["offered"] + target) / rate) - now))
                    continue
                batch: list[int] = []
                while retry and len(batch) < MAX_BATCH:
                    batch.append(retry.popleft())
                take = max(0, min(due, MAX_BATCH - len(batch), len(txs) - pos))
                batch.extend(range(pos, pos + take))
                pos += take
                st["offered"] += take
                if not batch:
                    st["exhausted"] = True
                    break
                t_call = time.monotonic()
                results = client.call("tx.submit_many", {"txs": [txs[i] for i in batch]})
                t_ret = time.monotonic()
                st["calls"] += 1
                refused: list[int] = []
                for i, r in zip(batch, results, strict=True):
                    s = r["status"]
                    if s == "accepted":
                        st["accepted"] += 1
                        if i % SAMPLE_EVERY == 0:
                            waiters.put(r["tx_id"], t_call, t_ret)
                    elif s == "busy":
                        st["busy"] += 1
                        refused.append(i)
                    elif s == "duplicate":
                        st["duplicate"] += 1
                    else:
                        st["invalid"] += 1
                _requeue(retry, refused)
                backoff = _back_off(refused, backoff)
            st["elapsed"] = time.monotonic() - t0
            st["retry_left"] = len(retry)
            _offer_again(client, txs, retry)
            st["samples"] = waiters.drain(timeout=35)
            conn.send(st)
    finally:
        waiters.close()
        client.close()


def _requeue(retry: deque[int], refused: list[int]) -> None:
    """Transactions answered busy go back to the front of the queue, in order: a sender's later
    nonce must not overtake an earlier one (it would wait, parked, until that one arrives)."""
    retry.extendleft(reversed(refused))


def _back_off(refused: list[int], pause: float) -> float:
    """After a call with ``refused`` transactions, the load generator's pause
    (``emrp2p.loadgen.back_off``); returns the pause for the next call, back to the first
    after a call that met no busy answer."""
    return back_off(pause) if refused else MIN_PAUSE


def _offer_again(client: SyncRpcClient, txs: list[str], retry: deque[int], limit_s: float = 30.0) -> None:
    """Not timed, after a step: what was answered busy is offered again, in order, until taken,
    so that the next step does not start behind it (and no sender's skipped nonce holds back
    its later transactions)."""
    deadline = time.monotonic() + limit_s
    while retry and time.monotonic() < deadline:
        batch = [retry.popleft() for _ in range(min(len(retry), MAX_BATCH))]
        results = offer(client, [txs[i] for i in batch], busy_for=deadline - time.monotonic())
        refused = [i for i, r in zip(batch, results, strict=True) if r["status"] == "busy"]
        _requeue(retry, refused)


class Submitter:
    def __init__(self, socket_path: str, txs: list[str]) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_submitter, args=(child, socket_path, txs), daemon=True)
        self.proc.start()
        child.close()

    def stop(self) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self.conn.send({"op": "quit"})
        self.proc.join(3)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# --------------------------------------------------------------------------- profiled daemons


PROFILE_WRAPPER = """
import gc, json, runpy, signal, sys, threading, time
import trio
import emrp2p.crypto as crypto
from emrp2p.store.lmdb_store import LmdbStore

out = sys.argv.pop(1)
n = [0]
lock = threading.RLock()  # re-entered by the SIGUSR handlers, which run on the main thread
acc = {}
on_flag = [False]

def add(name, dt):
    c = acc.setdefault(name, [0, 0.0])
    c[0] += 1
    c[1] += dt

class TaskClock(trio.abc.Instrument):
    # Main-thread CPU (thread_time: preemption is not counted) per trio task, and between steps.
    last = None
    t0 = 0.0
    def before_task_step(self, task):
        self.t0 = time.thread_time()
        if on_flag[0] and self.last is not None:
            with lock:
                add("main thread: trio scheduler, between task steps", self.t0 - self.last)
    def after_task_step(self, task):
        t1 = time.thread_time()
        if on_flag[0]:
            with lock:
                add("main thread: task " + task.name.rsplit(".", 1)[-1].split("[")[0], t1 - self.t0)
        self.last = t1

_run = trio.run
def run(*args, **kwargs):
    kwargs.setdefault("instruments", []).append(TaskClock())
    return _run(*args, **kwargs)
trio.run = run

gc_start = [0.0]
def gc_clock(phase, info):
    if phase == "start":
        gc_start[0] = time.perf_counter()
    elif on_flag[0]:
        with lock:
            add(f"garbage collection, generation {info['generation']} (wall)", time.perf_counter() - gc_start[0])
gc.callbacks.append(gc_clock)

def timed(name, fn, wall_name=None):
    def wrapper(*args, **kwargs):
        t, w = time.thread_time(), time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt, dw = time.thread_time() - t, time.perf_counter() - w
            with lock:
                add(name, dt)
                if wall_name is not None:
                    add(wall_name, dw)
    return wrapper

# CPU of whichever thread runs them (signature checks run in worker threads or inline; store
# writes in a trio worker thread, whose fsync wait is not CPU).
crypto._check = timed("signature checks, cache misses (thread CPU)", crypto._check)
_write_commits = timed("LmdbStore.write commits (thread CPU)", LmdbStore.write, "LmdbStore.write commits (wall, fsync and writer lock included)")
_write_promises = timed("LmdbStore.write votes/accepts (thread CPU)", LmdbStore.write, "LmdbStore.write votes/accepts (wall, fsync and writer lock included)")
def write(self, batch):
    return (_write_commits if batch.commit else _write_promises)(self, batch)
LmdbStore.write = write

from emrp2p.consensus.core import Core
from emrp2p.consensus.messages import BlockVote, ForwardTxs, Propose, ProposeCompact

_ready = Core.ready
_step = Core.step
hops = {"sent": {}, "recv": {}}

def _hop_key(msg, dest):
    if isinstance(msg, BlockVote):
        v = msg.vote
        return f"vote {v.voter.hex()[:8]} {v.height} {v.block_hash.hex()[:8]}"
    if isinstance(msg, (Propose, ProposeCompact)):
        h = msg.block.header if isinstance(msg, Propose) else msg.header
        return f"propose {dest.hex()[:8]} {h.height} {h.block_hash.hex()[:8]}"
    return None

# The life of one transaction in 32 (by its id): first time each stage is seen on any node.
from emrp2p.node.node import Node
lives = {}

def stage(txs, name, now):
    if on_flag[0]:
        for tx in txs:
            if tx.tx_id[0] < 8:
                lives.setdefault(tx.tx_id.hex(), {}).setdefault(name, now)

_submit = Node.submit_admitted
async def submit(self, txs):
    with lock:
        stage(txs, "0 submitted", time.time())
    return await _submit(self, txs)

_acknowledge = Node._acknowledge
def acknowledge(self, blocks):
    now = time.time()
    with lock:
        for b in blocks:
            stage([tx for tx in b.txs if self._submit_times.get(tx.tx_id) is not None], "5 committed where submitted", now)
    return _acknowledge(self, blocks)

Node.submit_admitted = submit
Node._acknowledge = acknowledge

_decode = Node._decode
def decode_timed(self, sender, payload):
    msg = _decode(self, sender, payload)
    if type(msg) is Propose or type(msg) is ProposeCompact:
        key = _hop_key(msg, self.identity.public)
        with lock:
            hops.setdefault("arrived", {}).setdefault(key, time.time())
    return msg
Node._decode = decode_timed

def ready(self):
    rd = _ready(self)
    now = time.time()
    with lock:
        for dest, msg in rd.messages:
            txs = getattr(msg, "txs", None)
            if txs is None:
                block = getattr(msg, "block", None)
                txs = block.txs if block is not None else ()
            if type(msg) is ForwardTxs:
                stage(txs, "1 forwarded", now)
            elif type(msg) is Propose:
                stage(txs, "3 proposed", now)
            c = acc.setdefault(f"sent {type(msg).__name__} (total = txs carried)", [0, 0.0])
            c[0] += 1
            c[1] += len(txs)
            key = _hop_key(msg, dest)
            if key is not None:
                hops["sent"].setdefault(key, now)
        for b in rd.committed:
            stage(b.txs, "4 certified", now)
    return rd

def step(self, sender, msg):
    if type(msg) is ForwardTxs:
        with lock:
            stage(msg.txs, "2 stepped by the leader", time.time())
    key = _hop_key(msg, self.me)
    if key is not None:
        with lock:
            hops["recv"].setdefault(key, time.time())
    return _step(self, sender, msg)

Core.ready = ready
Core.step = step

def on(*_):
    with lock:
        acc.clear()
        for part in hops.values():
            part.clear()
        lives.clear()
    on_flag[0] = True
    TaskClock.last = None

def off(*_):
    on_flag[0] = False
    with lock:
        with open(f"{out}.{n[0]}.json", "w") as f:
            json.dump(dict(acc, hops=hops, lives=lives), f)
    n[0] += 1

signal.signal(signal.SIGUSR1, on)
signal.signal(signal.SIGUSR2, off)
sys.argv[0] = "emrp2pd"
runpy.run_module("emrp2p.cli.daemon", run_name="__main__", alter_sys=True)
"""


class ProfiledNode(NodeProcess):
    """The daemon ``NodeProcess.start`` runs, with CPU accounting switched on by SIGUSR1 and off
    (dumped to ``OUT.<k>.json``, k counting from 0) by SIGUSR2: only the timed steps are seen."""

    def __init__(self, base: NodeProcess, out: Path) -> None:
        super().__init__(base.dir, extra_args=base.extra_args, log_level=base.log_level)
        self.out = out

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child process
        cmd = [
            sys.executable, "-c", PROFILE_WRAPPER, str(self.out),
            "--config", str(self.config), "--log-format", "json", "--log-level", self.log_level,
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()


def print_profile(files: list[Path], seconds: float) -> None:
    """Per-daemon CPU accounting of the step, then the summed counters and hop delays."""
    sides = [Path(f"{f}.json") for f in files]
    present = [p for p in sides if p.exists()]
    if not present:
        print("profile: no output written")
        return
    acc: dict[str, list[float]] = {}
    sent: dict[str, float] = {}
    recv: dict[str, float] = {}
    arrived: dict[str, float] = {}
    lives: dict[str, dict[str, float]] = {}
    for side in present:
        data = json.loads(side.read_text())
        hops = data.pop("hops", {"sent": {}, "recv": {}})
        sent.update(hops["sent"])
        recv.update(hops["recv"])
        arrived.update(hops.get("arrived", {}))
        for tx_id, stages in data.pop("lives", {}).items():
            life = lives.setdefault(tx_id, {})
            for name, t in stages.items():
                life[name] = min(t, life.get(name, t))
        for name, (count, total) in data.items():
            a = acc.setdefault(name, [0, 0.0])
            a[0] += count
            a[1] += total
    print(
        f"--- summed over {len(present)} daemons, {seconds:.1f} s step: CPU by trio task, thread and GC ---"
    )
    for name, (count, total) in sorted(acc.items(), key=lambda kv: -kv[1][1]):
        if name.startswith("sent "):
            continue
        per = 1e6 * total / count if count else 0.0
        print(
            f"{name:>60}: {total:8.3f} s  {100 * total / (seconds * len(present)):5.1f} % of a core/node"
            f"  n={int(count):>8}  {per:9.1f} us each"
        )
    for name, (count, total) in sorted(acc.items()):
        if name.startswith("sent "):
            print(f"{name:>60}: count {int(count):>8}  total {int(total):>9}")
    for kind in ("propose", "vote"):
        # (A negative gap means the receiver had an earlier copy, sent before the window: skipped.)
        d = [1000 * (recv[k] - t) for k, t in sent.items() if k.startswith(kind) and recv.get(k, -1.0) >= t]
        if d:
            print(
                f"{kind + ' hop (core emits -> receiver core steps it)':>60}: n={len(d)}"
                f"  p50 {pct(d, 0.5):.0f} ms  p99 {pct(d, 0.99):.0f} ms  max {max(d):.0f} ms"
            )
    # A proposal's hop in two: emitted -> decoded by the receiver's driver (the leader's write,
    # the network) -> stepped (its signature checks, the wait in the receiver's inbox).
    parts = [
        (arrived[k] - t, recv[k] - arrived[k])
        for k, t in sent.items()
        if recv.get(k, -1.0) >= arrived.get(k, 1e18) >= t
    ]
    if parts:
        a, b = ([1000 * x[i] for x in parts] for i in (0, 1))
        print(
            f"{'propose hop: emitted -> arrived, arrived -> stepped':>60}: n={len(parts)}"
            f"  p50 {pct(a, 0.5):.0f} / {pct(b, 0.5):.0f} ms  p90 {pct(a, 0.9):.0f} / {pct(b, 0.9):.0f} ms"
        )
    print_lives(lives)


def print_lives(lives: dict[str, dict[str, float]]) -> None:
    """Where a committed transaction's latency goes, stage by stage (p50 / p90 in ms), for those
    submitted to a follower (forwarded to the leader) and those submitted to the leader."""
    names = [
        "0 submitted",
        "1 forwarded",
        "2 stepped by the leader",
        "3 proposed",
        "4 certified",
        "5 committed where submitted",
    ]
    for label, path in (("forwarded", names), ("leader's own", [names[0], *names[3:]])):
        done = [life for life in lives.values() if all(n in life for n in path)]
        if label != "forwarded":
            done = [life for life in done if names[1] not in life]
        if not done:
            continue
        parts = []
        for a, b in zip(path, path[1:], strict=False):
            d = [1000 * (life[b] - life[a]) for life in done]
            parts.append(f"{b[2:]} +{pct(d, 0.5):.0f}/{pct(d, 0.9):.0f}")
        total = [1000 * (life[path[-1]] - life[path[0]]) for life in done]
        print(
            f"{'life of a transaction, ' + label + ' (p50/p90 ms)':>60}: n={len(done)}  "
            + ", ".join(parts)
            + f"; total {pct(total, 0.5):.0f}/{pct(total, 0.9):.0f}"
        )


# --------------------------------------------------------------------------- the benchmark


class Bench:
    def __init__(self, cluster: LocalCluster, subs: list[Submitter], measure: NodeProcess) -> None:
        self.cluster = cluster
        self.subs = subs
        self.measure = measure
        self.client = SyncRpcClient(measure.socket, timeout=30)
        self.clients = [SyncRpcClient(n.socket, timeout=30) for n in cluster.nodes]

    def signal_profilers(self, sig: int) -> None:
        for nd in self.cluster.nodes:
            if isinstance(nd, ProfiledNode):
                nd.signal(sig)

    def height(self) -> int:
        return int(self.client.call("node.status")["height"])

    def net_and_term(self) -> tuple[int, int]:
        """Bytes sent by all nodes so far, and the highest term any node is in."""
        st = [c.call("node.status") for c in self.clients]
        return sum(int(x["net"]["bytes_out"]) for x in st), max(int(x["term"]) for x in st)

    def pending(self) -> list[int]:
        return [int(c.call("node.status")["pending"]) for c in self.clients]

    def step(self, rate: float, seconds: float) -> dict[str, Any]:
        n = len(self.subs)
        start_at = time.monotonic() + 0.3
        for s in self.subs:
            s.conn.send({"op": "step", "rate": rate / n, "seconds": seconds, "start_at": start_at})
        daemons = [nd.pid for nd in self.cluster.nodes]
        clients = [s.proc.pid for s in self.subs if s.proc.pid is not None] + [os.getpid()]
        time.sleep(max(0.0, start_at - time.monotonic()))
        self.signal_profilers(signal.SIGUSR1)
        c0 = [cpu_ticks(p) for p in daemons]
        t0m = [main_thread_ticks(p) for p in daemons]
        d0 = [disk_write_bytes(p) for p in daemons]
        k0 = sum(cpu_ticks(p) for p in clients)
        m0 = machine_busy()
        w0 = time.monotonic()
        warm = min(0.5, seconds / 5)
        time.sleep(max(0.0, start_at + warm - time.monotonic()))
        h0, t_h0 = self.height(), time.monotonic()
        b0, term0 = self.net_and_term()
        time.sleep(max(0.0, start_at + seconds - time.monotonic()))
        h1, t_h1 = self.height(), time.monotonic()
        b1, term1 = self.net_and_term()
        c1 = [cpu_ticks(p) for p in daemons]
        t1m = [main_thread_ticks(p) for p in daemons]
        d1 = [disk_write_bytes(p) for p in daemons]
        self.signal_profilers(signal.SIGUSR2)
        k1 = sum(cpu_ticks(p) for p in clients)
        m1 = machine_busy()
        w1 = time.monotonic()
        results = []
        for s in self.subs:
            if not s.conn.poll(seconds + 60):
                raise TimeoutError("a submitter did not report")
            results.append(s.conn.recv())
        blocks = [self.client.call("chain.block", {"height": h}) for h in range(h0 + 1, h1 + 1)]
        committed = sum(int(b["tx_count"]) for b in blocks)
        # Let the pools drain before the next step (not timed).
        t_drain = time.monotonic()
        left = self.pending()
        while sum(left) and time.monotonic() - t_drain < 15:
            time.sleep(0.1)
            left = self.pending()
        wall = w1 - w0
        samples = [x for r in results for x in r["samples"]]
        lat = [x[0] for x in samples if x[2] == "committed"]
        ours = sum(c1) - sum(c0) + (k1 - k0)
        cpu_machine = 100.0 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * (os.cpu_count() or 1)
        return {
            "rate": rate,
            "seconds": seconds,
            "offered": sum(r["offered"] for r in results) / max(r["elapsed"] for r in results),
            "committed": block_rate(blocks, committed / (t_h1 - t_h0)),
            "blocks": h1 - h0,
            "term_changes": term1 - term0,
            "wire_per_tx": (b1 - b0) / committed if committed else float("nan"),
            "p50_ms": 1000 * pct(lat, 0.5),
            "p99_ms": 1000 * pct(lat, 0.99),
            "samples": len(lat),
            "not_committed": len(samples) - len(lat),
            "late": sum(1 for x in samples if x[1] > 0.02),
            "busy": sum(r["busy"] for r in results),
            "invalid": sum(r["invalid"] for r in results),
            "duplicate": sum(r["duplicate"] for r in results),
            "exhausted": any(r["exhausted"] for r in results),
            "cpu": [cpu_pct(b - a, wall) for a, b in zip(c0, c1, strict=True)],
            "main_cpu": [cpu_pct(b - a, wall) for a, b in zip(t0m, t1m, strict=True)],
            "disk_mb_s": [(b - a) / 1e6 / wall for a, b in zip(d0, d1, strict=True)],
            "client_cpu": cpu_pct(k1 - k0, wall),
            "others_cpu": max(0.0, cpu_machine - cpu_pct(ours, wall)),
            "drain_s": time.monotonic() - t_drain,
            "left": sum(left),
        }


def saturated(step: dict[str, Any]) -> bool:
    """Whether a step offered more than the network took: busy answers past BUSY_STOP of what
    it offered, or committed under KEPT_UP of its rate."""
    busy = step["busy"] > BUSY_STOP * step["offered"] * step["seconds"]
    return bool(busy or step["committed"] < KEPT_UP * step["rate"])


def block_rate(blocks: list[dict[str, Any]], fallback: float) -> float:
    """Committed tx/s from the blocks a step committed: those after the first, over the time
    between the first's and the last's proposal (their header timestamps, one machine's
    clock). Counting whole blocks in the step's window is off by up to a block, and near the
    peak a 4 s step holds only 6-8 blocks of ~1,000 transactions (+-15 %); with fewer than 3
    blocks, ``fallback`` (the count over the window)."""
    if len(blocks) < 3:
        return fallback
    span = (int(blocks[-1]["timestamp_ms"]) - int(blocks[0]["timestamp_ms"])) / 1000
    if span <= 0:
        return fallback
    return sum(int(b["tx_count"]) for b in blocks[1:]) / span


def fmt_step(label: str, r: dict[str, Any]) -> str:
    return (
        f"{label:>9} offered={r['rate']:>6.0f} tx/s (actual {r['offered']:.0f})  committed={r['committed']:>6.0f} tx/s"
        f" ({r['blocks']} blocks, {r['term_changes']} term changes, {r['wire_per_tx']:.0f} B sent/tx)  p50={r['p50_ms']:.0f} ms p99={r['p99_ms']:.0f} ms (n={r['samples']}, late={r['late']},"
        f" not_committed={r['not_committed']})  busy={r['busy']}  invalid={r['invalid']}"
        f"  cpu%/node={[round(x) for x in r['cpu']]} (main thread {[round(x) for x in r['main_cpu']]})  client={r['client_cpu']:.0f}%"
        f"  others={r['others_cpu']:.0f}%  disk MB/s/node={[round(x) for x in r['disk_mb_s']]}  drain={r['drain_s']:.1f}s"
        + (f" left={r['left']}" if r["left"] else "")
        + (" EXHAUSTED" if r["exhausted"] else "")
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--seconds", type=float, default=30.0, help="load time, split over the steps")
    p.add_argument("--rates", default=",".join(map(str, DEFAULT_RATES)))
    p.add_argument(
        "--set", action="append", default=[], metavar="SECTION.OPTION=VALUE", help="daemon override"
    )
    p.add_argument("--no-reference", action="store_true", help="skip the PySyncObj reference")
    p.add_argument(
        "--ref-seconds", type=float, default=13.0, help="PySyncObj load time (flat out, then half)"
    )
    p.add_argument(
        "--profile", type=Path, help="account the daemons' CPU per task, writing DIR/nodeI.prof.<step>.json"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = p.parse_args()
    if not 1 <= a.nodes <= 16 or not 1 <= a.seconds <= 600:
        p.error("--nodes 1..16, --seconds 1..600")
    rates = [float(x) for x in a.rates.split(",") if x.strip()]
    step_s = a.seconds / (len(rates) + 2)  # the steps, the peak step (at least one long), half the peak
    extra: list[str] = []
    for s in a.set:
        extra += ["--set", s]
    t_begin = time.monotonic()
    # SIGTERM unwinds like Ctrl-C, so the finally below stops every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="emrp2p-bench-"))
    cluster: LocalCluster | None = None
    subs: list[Submitter] = []
    steps: list[dict[str, Any]] = []
    ref: dict[str, Any] = {}
    try:
        cluster = LocalCluster(tmp / "net", a.nodes, extra_args=extra)
        if a.profile is not None:
            a.profile.mkdir(parents=True, exist_ok=True)
            cluster.nodes = [
                ProfiledNode(nd, a.profile.resolve() / f"{nd.name}.prof") for nd in cluster.nodes
            ]
        chain_id = load_genesis(tmp / "net" / "genesis.json").chain_id
        for nd in cluster.nodes:
            nd.start()
        # Sign while the daemons boot; nothing is timed yet.
        # Enough for every step (the peak step offers up to SATURATE x a rate, for the time of
        # the steps it replaces and one more) and the half step.
        budget = SATURATE * (sum(rates) + max(rates)) + max(rates) / 2
        per_node = int(step_s * budget / a.nodes * 1.1) + 500
        t = time.monotonic()
        streams = presign(chain_id, a.nodes, per_node, max(1, os.cpu_count() or 1))
        print(
            f"pre-signed {per_node * a.nodes} transactions ({per_node} per node) in {time.monotonic() - t:.1f} s",
            flush=True,
        )
        for nd in cluster.nodes:
            nd.wait_ready(60)
        leader = wait_until(cluster.leader, 60, "a leader", interval=0.1)
        print(
            f"{a.nodes} daemons up, leader {leader.name} ({time.monotonic() - t_begin:.1f} s since start)",
            flush=True,
        )
        idle0 = [cpu_ticks(nd.pid) for nd in cluster.nodes]
        time.sleep(IDLE_SECONDS)
        idle_cpu = [
            cpu_pct(cpu_ticks(nd.pid) - t0, IDLE_SECONDS) for nd, t0 in zip(cluster.nodes, idle0, strict=True)
        ]
        rss = [rss_mb(nd.pid) for nd in cluster.nodes]
        print(f"idle_rss_mb={[round(x, 1) for x in rss]} max={max(rss):.1f} (target <= 150)", flush=True)
        print(f"idle_cpu_pct={[round(x, 1) for x in idle_cpu]} (% of one core, no load)", flush=True)

        subs = [Submitter(str(nd.socket), streams[k]) for k, nd in enumerate(cluster.nodes)]
        samples_for_ref = streams[0][:20000]
        del streams
        bench = Bench(cluster, subs, cluster.nodes[0])
        print(
            f"steps of {step_s:.1f} s; latency sampled 1 in {SAMPLE_EVERY}; CPU in % of one core", flush=True
        )
        best = 0.0
        for i, rate in enumerate(rates):
            r = bench.step(rate, step_s)
            steps.append(r)
            print(fmt_step(f"step {i + 1}", r), flush=True)
            grew = r["committed"] >= best * 1.05
            best = max(best, r["committed"])
            if saturated(r) or not grew or r["exhausted"]:
                break
        top = max(steps, key=lambda r: r["committed"])
        # step_s leaves room for at least one step more than the rates: the peak step always runs.
        left = a.seconds - (len(steps) + 1) * step_s
        peak = bench.step(max(top["rate"], SATURATE * top["committed"]), left)
        steps.append(peak)
        print(fmt_step("peak", peak), flush=True)
        half = bench.step(round(peak["committed"] / 2), step_s)
        print(fmt_step("half-peak", half), flush=True)
        rss_after = [rss_mb(nd.pid) for nd in cluster.nodes]
        print(f"rss_after_load_mb={[round(x, 1) for x in rss_after]}", flush=True)
        for s in subs:
            s.stop()
        subs = []
        for c in [bench.client, *bench.clients]:
            c.close()
        cluster.stop()
        if a.profile is not None:
            k = steps.index(peak)
            print(f"profile of the peak step (step {k + 1}, {peak['rate']:.0f} tx/s offered):")
            print_profile(
                [Path(f"{nd.out}.{k}") for nd in cluster.nodes if isinstance(nd, ProfiledNode)],
                peak["seconds"],
            )
        elif not a.no_reference:
            from emrp2p.codec import decode
            from emrp2p.ledger.types import Tx

            triples = []
            for h in samples_for_ref:
                tx = decode(Tx, bytes.fromhex(h))
                triples.append((tx.sender, tx.signing_bytes(chain_id), tx.signature))
            from pysyncobj_ref import run_reference

            ref = run_reference(
                triples, tmp / "pysyncobj", nodes=a.nodes, flat_seconds=a.ref_seconds * 0.6,
                half_seconds=a.ref_seconds * 0.4, log=lambda m: print(m, flush=True),
            )  # fmt: skip
        # ------------------------------------------------------------------ summary
        ours = peak["committed"]
        print("--- summary ---")
        print(
            f"emrp2pd x{a.nodes}: peak committed {ours:.0f} tx/s at offered {peak['rate']:.0f}"
            f" (p50 {peak['p50_ms']:.0f} ms, p99 {peak['p99_ms']:.0f} ms, cpu%/node {[round(x) for x in peak['cpu']]});"
            f" at half peak ({half['rate']:.0f} tx/s): p50 {half['p50_ms']:.0f} ms, p99 {half['p99_ms']:.0f} ms"
            f" (targets <= 50 / <= 250 ms: {'met' if half['p50_ms'] <= 50 and half['p99_ms'] <= 250 else 'NOT met'});"
            f" idle RSS max {max(rss):.0f} MB ({'met' if max(rss) <= 150 else 'NOT met'})"
        )
        noise = [r["others_cpu"] for r in [*steps, half]]
        print(
            f"other processes on the machine used {min(noise):.0f}-{max(noise):.0f}% CPU (of"
            f" {100 * (os.cpu_count() or 1)}%) during our steps"
            + (
                f", {min(ref['others_cpu']):.0f}-{max(ref['others_cpu']):.0f}% during PySyncObj's"
                if ref
                else ""
            )
        )
        if ref:
            theirs = ref["peak_ops_per_s"]
            print(
                f"pysyncobj x{a.nodes} (Ed25519 verify per replica, defaults): {theirs:.0f} ops/s applied on the leader;"
                f" half peak p50 {ref['half']['p50_ms']:.0f} ms, p99 {ref['half']['p99_ms']:.0f} ms"
            )
            if ref["flat"]["fails"]:
                print(
                    f"note: {ref['flat']['fails']} PySyncObj calls failed flat-out {ref['flat']['fail_reasons']}"
                    " (leader lost or calls discarded while saturated): its figure, and the ratio, vary"
                    " from run to run"
                )
            print(f"ratio_vs_pysyncobj={ours / theirs:.2f}" if theirs > 0 else "ratio_vs_pysyncobj=nan")
        print(f"total wall time {time.monotonic() - t_begin:.0f} s")
        print(f"cluster_tx_per_s={ours:.0f}", flush=True)
    finally:
        for s in subs:
            with contextlib.suppress(Exception):
                s.stop()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.stop()
            cluster.kill_all()
        if a.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
