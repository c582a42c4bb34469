"""A whole cluster in one process: real ``Core``, real ``Ledger``, ``MemoryStore`` per node,
a simulated network and a virtual clock, all driven by one seeded ``random.Random``.

Events are processed in (time, sequence) order, so a run is a pure function of
its seed and its script. Every node follows the driver contract of
``emrp2p.consensus``: persist the ready batch, then (after the simulated disk
delay) send, then apply; a batch whose proposals may go first (``Ready``) sends
them at once, and is durable only when the disk is done. A crash drops the
node's ``Core`` and everything it had not persisted or sent; a restart builds a
new ``Core`` from its store.

All nodes share one ``MemoLedger`` (``emrp2p.sim.memo``): a block is executed
once per cluster, not once per node, since execution is a pure function of the
pre-state, the block context and the transactions.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from emrp2p.consensus import (
    BlockRefused,
    BlockVote,
    CommitNotice,
    Config,
    Core,
    EvidenceFound,
    Heartbeat,
    LeaderChanged,
    Message,
    Ready,
    Role,
    SubmitStatus,
    TermChanged,
    TickSchedule,
    TxRejected,
)
from emrp2p.crypto import Identity
from emrp2p.ledger.types import Block, Certificate, Genesis, Member, Noop, Payload, Tx, Vote, sign_tx
from emrp2p.ledger.types import Role as MemberRole
from emrp2p.sim.memo import MemoLedger
from emrp2p.sim.network import LinkProfile, Network
from emrp2p.store.memory import MemoryStore

__all__ = ["Cluster", "SimNode", "Client", "Observations"]

TICK_MS = 50
_NO_CLIENTS: list[Client] = []


@dataclass
class SimNode:
    index: int
    identity: Identity
    store: MemoryStore
    core: Core | None = None
    incarnation: int = 0
    paused: bool = False
    skew_ms: int = 0
    disk_ms: int = 0
    busy_until: float = 0.0
    backlog: list[tuple[str, Any]] = field(default_factory=list)
    """Inputs that arrived while paused, processed on resume."""
    schedule: TickSchedule = field(default_factory=lambda: TickSchedule(TICK_MS, 0.0))
    tick_at: float = 0.0
    """When the pending tick event fires; a tick event of an older ``tick_gen`` is void."""
    tick_gen: int = 0

    @property
    def up(self) -> bool:
        return self.core is not None


@dataclass
class Client:
    identity: Identity
    next_nonce: int = 0
    outstanding: dict[int, Tx] = field(default_factory=dict)
    last_resubmit: float = 0.0
    presigned: dict[int, Tx] = field(default_factory=dict)
    noop_load: bool = True
    """False for a governance client (a validator's key): it only resends what it sent."""


@dataclass
class Observations:
    """What the checkers need, recorded independently of the cores' own bookkeeping."""

    committed: dict[int, bytes] = field(default_factory=dict)
    """height -> hash of the first block committed there anywhere."""
    roots: dict[int, bytes] = field(default_factory=dict)
    certified: dict[int, bytes] = field(default_factory=dict)
    node_heights: dict[int, int] = field(default_factory=dict)
    votes: dict[tuple[bytes, int, int], bytes] = field(default_factory=dict)
    submitted: set[bytes] = field(default_factory=set)
    tx_height: dict[bytes, int] = field(default_factory=dict)
    commit_times: list[float] = field(default_factory=list)
    """Virtual time of each new height's first commit."""
    submit_time: dict[bytes, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    rejected: int = 0


class Cluster:
    def __init__(
        self,
        n_validators: int,
        seed: int,
        *,
        config: Config | None = None,
        n_observers: int = 0,
        n_clients: int = 4,
        trace: Callable[[str], None] | None = None,
        link: LinkProfile | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.cfg = config or Config()
        self.now = 0.0
        self._seq = 0
        self._queue: list[tuple[float, int, str, Any]] = []
        self._trace = trace
        self._hash = hashlib.sha256()
        self.events = 0
        identities = [Identity.from_test_name(f"node-{i}") for i in range(n_validators + n_observers)]
        members = tuple(
            Member(
                ident.public,
                f"hospital-{i}",
                MemberRole.VALIDATOR if i < n_validators else MemberRole.OBSERVER,
            )
            for i, ident in enumerate(identities)
        )
        self.genesis = Genesis("sim", 0, members)
        self.ledger = MemoLedger(self.genesis)
        self.chain_id = self.ledger.chain_id
        self.net = Network(self.rng, len(identities), default=link or LinkProfile())
        self.nodes = [SimNode(i, ident, MemoryStore()) for i, ident in enumerate(identities)]
        self.by_key = {node.identity.public: node.index for node in self.nodes}
        self.clients = [Client(Identity.from_test_name(f"client-{i}")) for i in range(n_clients)]
        self.obs = Observations()
        self._clean_certs: dict[int, Certificate] = {}
        self._client_index: tuple[int, Client | None, dict[bytes, list[Client]]] | None = None
        genesis_state = self.ledger.genesis_state()
        for node in self.nodes:
            node.store.init_genesis(self.genesis, genesis_state)
            self._start(node)

    # ------------------------------------------------------------------ event loop

    def _push(self, at: float, kind: str, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, kind, payload))

    def at(self, time_ms: float, action: Callable[[], None], label: str = "script") -> None:
        """Run ``action`` at virtual time ``time_ms`` (faults, scripted steps)."""
        self._push(time_ms, "call", (action, label))

    def run_until(self, time_ms: float) -> None:
        q = self._queue
        while q and q[0][0] <= time_ms:
            at, _, kind, payload = heapq.heappop(q)
            self.now = at
            self.events += 1
            if kind == "deliver":
                self._deliver(*payload)
            elif kind == "tick":
                self._tick(*payload)
            elif kind == "send":
                self._send_batch(*payload)
            elif kind == "persist":
                self._persist(*payload)
            elif kind == "call":
                action, label = payload
                self.log(f"-- {label}")
                action()
        self.now = max(self.now, time_ms)

    def log(self, line: str) -> None:
        self._hash.update(f"{self.now:.3f} {line}\n".encode())
        if self._trace is not None:
            self._trace(f"{self.now:10.1f} {line}")

    def trace_hash(self) -> str:
        return self._hash.hexdigest()

    # ------------------------------------------------------------------ nodes

    def _start(self, node: SimNode) -> None:
        node.incarnation += 1
        node.core = Core(node.identity, self.ledger, node.store, self.cfg, self._local_now(node))
        node.busy_until = self.now
        node.backlog.clear()
        first = self.now + self.rng.uniform(0, TICK_MS)
        node.schedule = TickSchedule(TICK_MS, first - TICK_MS)
        self._drain(node)
        self._schedule_tick(node, first)

    def _local_now(self, node: SimNode) -> int:
        return max(0, int(self.now) + node.skew_ms)

    def _schedule_tick(self, node: SimNode, at: float) -> None:
        node.tick_gen += 1
        node.tick_at = at
        self._push(at, "tick", (node.index, node.incarnation, node.tick_gen))

    def _tick(self, i: int, incarnation: int, gen: int) -> None:
        node = self.nodes[i]
        if node.core is None or node.incarnation != incarnation or node.tick_gen != gen:
            return
        self._input(node, "tick", None)
        if node.core is not None:
            # A tick held back (paused, or busy with its disk) leaves the core's deadlines due:
            # try again at the regular pace.
            self._schedule_tick(node, max(node.schedule.wake_at(node.core), self.now + TICK_MS))

    def _tick_sooner(self, node: SimNode) -> None:
        """An input may have made the core busy: move its next tick earlier if it now wants one."""
        if node.core is not None:
            want = max(node.schedule.wake_at(node.core), self.now)
            if want < node.tick_at:
                self._schedule_tick(node, want)

    def _deliver(self, dst: int, src: int, msg: Message) -> None:
        node = self.nodes[dst]
        if node.core is None:
            return
        self._input(node, "msg", (src, msg))

    def _input(self, node: SimNode, kind: str, payload: Any) -> None:
        if node.paused:
            if len(node.backlog) < 10_000:
                node.backlog.append((kind, payload))
            return
        if self.now < node.busy_until:
            # The node is still writing to its slow disk: handle this after.
            if kind == "msg":
                self._push(node.busy_until, "deliver", (node.index, payload[0], payload[1]))
            return
        core = node.core
        assert core is not None
        node.schedule.catch_up(core, self.now, self._local_now(node), force=kind == "tick")
        if kind == "msg":
            src, msg = payload
            core.step(self.nodes[src].identity.public, msg)
        self._drain(node)
        if kind == "msg":
            self._tick_sooner(node)

    def _drain(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        if not core.has_ready():
            return
        rd = core.ready()
        if rd.proposals_first and node.disk_ms and not rd.write.empty():
            # The proposals go now; the write is durable only once the disk is done (a crash
            # before then loses it), and the rest goes after it.
            node.busy_until = self.now + node.disk_ms
            first, rest = rd.split_messages()
            self._send_batch(node.index, node.incarnation, first)
            self._push(node.busy_until, "persist", (node.index, node.incarnation, rd))
            if rest:
                self._push(node.busy_until, "send", (node.index, node.incarnation, rest))
            core.advance(rd)
            return
        if not rd.write.empty():
            node.store.write(rd.write)  # durable now; nothing is sent before this
            if node.disk_ms:
                node.busy_until = self.now + node.disk_ms
        self._observe(node, rd)
        if rd.messages:
            if node.disk_ms and not rd.write.empty():
                self._push(node.busy_until, "send", (node.index, node.incarnation, rd.messages))
            else:
                self._send_batch(node.index, node.incarnation, rd.messages)
        core.advance(rd)

    def _persist(self, i: int, incarnation: int, rd: Ready) -> None:
        node = self.nodes[i]
        if node.incarnation != incarnation or node.core is None:
            return  # crashed before its disk write completed: lost
        node.store.write(rd.write)
        self._observe(node, rd)

    def _send_batch(self, i: int, incarnation: int, messages: list[tuple[bytes, Message]]) -> None:
        node = self.nodes[i]
        if node.incarnation != incarnation or node.core is None:
            return  # crashed before its disk write completed: never sent
        for dest, msg in messages:
            j = self.by_key.get(dest)
            if j is None:
                continue
            self._record_sent(msg)
            for t in self.net.arrivals(i, j, self.now):
                self._push(t, "deliver", (j, i, msg))

    # ------------------------------------------------------------------ faults

    def crash(self, i: int) -> None:
        node = self.nodes[i]
        node.core = None
        node.paused = False
        node.backlog.clear()
        self.log(f"n{i} CRASH")

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        if node.core is None:
            self._start(node)
            self.log(
                f"n{i} RESTART term={node.core.term if node.core else '?'} h={node.store.committed_height()}"
            )

    def pause(self, i: int) -> None:
        if self.nodes[i].core is not None:
            self.nodes[i].paused = True
            self.log(f"n{i} PAUSE")

    def resume(self, i: int) -> None:
        node = self.nodes[i]
        if not node.paused:
            return
        node.paused = False
        self.log(f"n{i} RESUME backlog={len(node.backlog)}")
        backlog, node.backlog = node.backlog, []
        for kind, payload in backlog:
            if node.core is None:
                break
            self._input(node, kind, payload)

    def skew(self, i: int, delta_ms: int) -> None:
        self.nodes[i].skew_ms += delta_ms
        self.log(f"n{i} CLOCK {delta_ms:+d}ms")

    def slow_disk(self, i: int, ms: int) -> None:
        self.nodes[i].disk_ms = ms
        self.log(f"n{i} DISK {ms}ms")

    def partition(self, groups: list[set[int]]) -> None:
        self.net.partition(groups)
        self.log(f"PARTITION {[sorted(g) for g in groups]}")

    def cut(self, a: int, b: int) -> None:
        self.net.blocked.add((a, b))
        self.log(f"CUT n{a}->n{b}")

    def heal(self) -> None:
        self.net.heal()
        self.log("HEAL")

    # ------------------------------------------------------------------ clients

    def presign(self, per_client: int) -> None:
        """Sign clients' future Noop transactions now (load generation kept out of a timed run)."""
        for client in self.clients:
            for nonce in range(client.next_nonce, client.next_nonce + per_client):
                tx = sign_tx(client.identity, self.chain_id, nonce, Noop(b"%d" % nonce))
                _ = tx.tx_id  # the client's encoding and id of what it signed: load generation too
                client.presigned[nonce] = tx

    def new_tx(self, client: Client, payload: Payload | None = None) -> Tx:
        nonce = client.next_nonce
        tx = client.presigned.pop(nonce, None) if payload is None else None
        if tx is None:
            tx = sign_tx(client.identity, self.chain_id, nonce, payload or Noop(b"%d" % nonce))
        client.outstanding[client.next_nonce] = tx
        client.next_nonce += 1
        self.obs.submitted.add(tx.tx_id)
        self.obs.submit_time.setdefault(tx.tx_id, self.now)
        return tx

    def submit(self, i: int, txs: list[Tx]) -> list[SubmitStatus]:
        """Submit at node ``i`` as a local application would (nothing if the node is down or paused)."""
        node = self.nodes[i]
        if node.core is None or node.paused:
            return []
        node.schedule.catch_up(node.core, self.now, self._local_now(node))
        results = node.core.submit(txs)
        self._drain(node)
        self._tick_sooner(node)
        return [r.status for r in results]

    def client_load(self, rate_per_s: float, until_ms: float, *, max_outstanding: int = 64) -> None:
        """Clients send Noop txs at ``rate_per_s`` in total to random live nodes, and resubmit
        what is not committed after a while (as a real client would after a lost reply)."""
        period = 1000.0 / rate_per_s

        def fire() -> None:
            if self.now > until_ms:
                return
            self._push(self.now + self.rng.expovariate(1.0 / period), "call", (fire, "client"))
            client = self.rng.choice(self.clients)
            live = [n.index for n in self.nodes if n.core is not None and not n.paused]
            if not live:
                return
            target = self.rng.choice(live)
            batch: list[Tx] = []
            if client.noop_load and len(client.outstanding) < max_outstanding:
                batch.append(self.new_tx(client))
            if self.now - client.last_resubmit > 3 * self.cfg.election_timeout_ms:
                client.last_resubmit = self.now
                batch.extend(tx for n, tx in sorted(client.outstanding.items()) if tx not in batch)
            if batch:
                self.submit(target, batch)

        self._push(self.now + period, "call", (fire, "client"))

    def governance(self, signer: int, payload: Payload) -> None:
        """A validator's governance transaction, resent like any client's until committed."""
        key = self.nodes[signer].identity.public
        client = next((c for c in self.clients if c.identity.public == key), None)
        if client is None:
            client = Client(self.nodes[signer].identity, noop_load=False)
            self.clients.append(client)
        tx = self.new_tx(client, payload)
        self.log(f"n{signer} GOVERNANCE {type(payload).__name__}")
        live = [n.index for n in self.nodes if n.up and not n.paused]
        if live:
            self.submit(self.rng.choice(live), [tx])

    # ------------------------------------------------------------------ observation

    def _record_sent(self, msg: Message) -> None:
        if isinstance(msg, BlockVote):
            self._record_vote(msg.vote)
        elif isinstance(msg, (CommitNotice, Heartbeat)) and msg.cert is not None:
            self._record_cert(msg.cert)

    def _record_vote(self, v: Vote) -> None:
        key = (v.voter, v.term, v.height)
        seen = self.obs.votes.setdefault(key, v.block_hash)
        if seen != v.block_hash:
            self.obs.violations.append(
                f"double vote by n{self.by_key.get(v.voter)} in term {v.term} at height {v.height}"
            )

    def _record_cert(self, cert: Certificate) -> None:
        # Recording a certificate again changes nothing unless the first time found a violation
        # (then it is reported again, as before): skip the certificate objects that were clean.
        # Heartbeats carry the same tip certificate object over and over.
        clean = self._clean_certs
        if clean.get(id(cert)) is cert:
            return
        obs = self.obs
        before = len(obs.violations)
        seen = obs.certified.setdefault(cert.height, cert.block_hash)
        if seen != cert.block_hash:
            obs.violations.append(f"two different blocks certified at height {cert.height}")
        for v in cert.votes():
            self._record_vote(v)
        if len(obs.violations) == before:
            if len(clean) >= 1024:
                del clean[next(iter(clean))]
            clean[id(cert)] = cert  # holding the object keeps its id from being reused

    def _observe(self, node: SimNode, rd: Ready) -> None:
        obs = self.obs
        for c in rd.write.commit:
            if c.cert is not None:
                self._record_cert(c.cert)
            if c.delta.root != c.block.header.state_root:
                obs.violations.append(
                    f"n{node.index} committed height {c.block.height} with a different state root"
                )
        for block in rd.committed:
            self._observe_commit(node, block)
        for ev in rd.events:
            if isinstance(ev, EvidenceFound):
                obs.evidence.append(f"n{node.index} found {type(ev.evidence).__name__}")
                obs.violations.append(f"evidence of equivocation at n{node.index}: {ev.evidence}")
            elif isinstance(ev, LeaderChanged) and ev.leader == node.identity.public:
                self.log(f"n{node.index} LEADER term={ev.term}")
            elif isinstance(ev, TermChanged):
                self.log(f"n{node.index} term -> {ev.term}")
            elif isinstance(ev, TxRejected):
                obs.rejected += 1
            elif isinstance(ev, BlockRefused):
                self.log(f"n{node.index} REFUSED h={ev.height} {ev.block_hash.hex()[:8]}: {ev.reason}")

    def _observe_commit(self, node: SimNode, block: Block) -> None:
        obs = self.obs
        h = block.height
        prev = obs.node_heights.get(node.index, 0)
        if h != prev + 1:
            obs.violations.append(f"n{node.index} committed height {h} after {prev}")
        obs.node_heights[node.index] = h
        seen = obs.committed.get(h)
        if seen is None:
            obs.committed[h] = block.block_hash
            obs.commit_times.append(self.now)
            self.log(
                f"n{node.index} COMMIT h={h} term={block.term} txs={len(block.txs)} {block.block_hash.hex()[:8]}"
            )
            for tx in block.txs:
                tx_id = tx.tx_id
                if tx_id not in obs.submitted:
                    obs.violations.append(f"height {h} commits a tx never submitted")
                if tx_id in obs.tx_height:
                    obs.violations.append(f"tx committed twice (heights {obs.tx_height[tx_id]} and {h})")
                obs.tx_height[tx_id] = h
                t0 = obs.submit_time.get(tx_id)
                if t0 is not None:
                    obs.latencies.append(self.now - t0)
                for client in self._clients_of(tx.sender):
                    client.outstanding.pop(tx.nonce, None)
        elif seen != block.block_hash:
            obs.violations.append(f"n{node.index} committed a different block at height {h}")

    def _clients_of(self, sender: bytes) -> list[Client]:
        """The clients signing as ``sender`` (in list order), indexed again whenever the list changes."""
        clients = self.clients
        index = self._client_index
        if index is None or index[0] != len(clients) or index[1] is not (clients[-1] if clients else None):
            by_key: dict[bytes, list[Client]] = {}
            for client in clients:
                by_key.setdefault(client.identity.public, []).append(client)
            index = self._client_index = (len(clients), clients[-1] if clients else None, by_key)
        return index[2].get(sender, _NO_CLIENTS)

    # ------------------------------------------------------------------ queries

    def leaders(self) -> list[int]:
        return [n.index for n in self.nodes if n.core is not None and n.core.role is Role.LEADER]

    def heights(self) -> list[int]:
        return [n.store.committed_height() for n in self.nodes]

    def max_height(self) -> int:
        return max(self.heights())
