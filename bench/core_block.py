"""Per-block CPU of the ordering core, the LMDB store and the codec, without the network.

    python bench/core_block.py [--txs 1000] [--blocks 8] [--validators 4]

``--validators`` cores, each over its own ``LmdbStore`` (durable writes) in a temporary
folder, wired by hand in one process: every message is encoded, decoded, and stepped
at its destination, each ``Ready`` is written before its messages go out, as the
daemon does. Signed ``Noop`` transactions are made and decoded up front (as they would
arrive from an app), and their signatures checked once (the process-wide cache then
answers every node, so signature checks, which bench/ledger.py measures, are left out).
Per block of ``--txs`` transactions submitted at the leader, the wall time of each part
on the leader and on a follower is printed in ms, then the whole per node.

The last line is ``follower_ms_per_1000_txs=<value>``: the CPU a follower spends on a
block of 1000 transactions (decoding the proposal, checking its signatures against the
cache, checking and executing it, writing it), the Python share of every node's cost
per transaction outside the network and the signature checks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emrp2p.codec import decode, encode  # noqa: E402
from emrp2p.consensus import Config, Core, Message, Propose  # noqa: E402
from emrp2p.crypto import Identity, verify_many  # noqa: E402
from emrp2p.ledger.execute import Ledger  # noqa: E402
from emrp2p.ledger.types import Genesis, Member, Noop, Tx, sign_tx  # noqa: E402
from emrp2p.store.lmdb_store import LmdbStore  # noqa: E402

T = TypeVar("T")


class Bench:
    def __init__(self, n: int, folder: Path) -> None:
        self.names = [f"core-{i}" for i in range(n)]
        self.ids = {name: Identity.from_test_name(f"bench-{name}") for name in self.names}
        self.genesis = Genesis("bench", 0, tuple(Member(i.public, name) for name, i in self.ids.items()))
        self.ledger = Ledger(self.genesis)
        self.stores = {name: LmdbStore(folder / name) for name in self.names}
        for store in self.stores.values():
            store.init_genesis(self.genesis, self.ledger.genesis_state())
        cfg = Config(min_block_interval_ms=0)
        self.cores = {
            name: Core(self.ids[name], self.ledger, self.stores[name], cfg, 0) for name in self.names
        }
        self.by_key = {i.public: name for name, i in self.ids.items()}
        self.now = 0
        self.parts: dict[str, float] = defaultdict(float)

    def _timed(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        t = time.perf_counter()
        out = fn(*args)
        self.parts[key] += time.perf_counter() - t
        return out

    def _flush(self, name: str) -> list[tuple[bytes, bytes]]:
        core, out = self.cores[name], []
        while core.has_ready():
            rd = core.ready()
            self._timed(f"{name} write", self.stores[name].write, rd.write)
            encoded: dict[int, bytes] = {}
            for dest, msg in rd.messages:
                data = encoded.get(id(msg))
                if data is None:
                    data = encoded[id(msg)] = self._timed(f"{name} encode", encode, msg)
                out.append((dest, data))
            core.advance(rd)
        return out

    def run(self, rounds: int) -> None:
        """Deliver until quiet, ``rounds`` times at most; time moves on 20 ms when nothing moved."""
        sb = self.ledger.signing_bytes
        for _ in range(rounds):
            moved = False
            for name in self.names:
                for dest, data in self._flush(name):
                    to = self.by_key[dest]
                    msg = self._timed(f"{to} decode", decode, Message, data)
                    if isinstance(msg, Propose):  # the node's pre-verification, all cache hits
                        items = [(tx.sender, sb(tx), tx.signature) for tx in msg.block.txs]
                        self._timed(f"{to} check signatures", verify_many, items)
                    self._timed(f"{to} step", self.cores[to].step, self.ids[name].public, msg)
                    moved = True
            if not moved:
                self.now += 20
                for core in self.cores.values():
                    core.tick(self.now)

    def leader(self) -> str:
        for name, core in self.cores.items():
            if core.leader == self.ids[name].public:
                return name
        raise RuntimeError("no leader")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--txs", type=int, default=1000, help="transactions per block")
    p.add_argument("--blocks", type=int, default=8)
    p.add_argument("--validators", type=int, default=4)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="emrp2p-core-bench-") as tmp:
        b = Bench(a.validators, Path(tmp))
        b.run(300)  # elect
        leader = b.leader()
        clients = [Identity.from_test_name(f"bench-client-{j}") for j in range(64)]
        total = a.txs * a.blocks
        signed = [sign_tx(clients[i % 64], b.genesis.chain_id, i // 64, Noop(b"x")) for i in range(total)]
        txs = [decode(Tx, tx.encoded) for tx in signed]
        verify_many([(tx.sender, b.ledger.signing_bytes(tx), tx.signature) for tx in txs])
        b.parts.clear()
        start = b.cores[leader].committed_height
        for k in range(a.blocks):
            b._timed(f"{leader} submit", b.cores[leader].submit, txs[k * a.txs : (k + 1) * a.txs])
            b.run(20)
        blocks = b.cores[leader].committed_height - start
        if b.leader() != leader or blocks < a.blocks:
            raise SystemExit(f"the leader changed or blocks went missing ({blocks} of {a.blocks}); run again")
        follower = next(name for name in b.names if name != leader)
        print(f"{a.validators} validators, {blocks} blocks of {a.txs} transactions; ms per block")
        per_node: dict[str, float] = defaultdict(float)
        for key, seconds in b.parts.items():
            per_node[key.split()[0]] += seconds
        for role, name in (("leader", leader), ("follower", follower)):
            for key in sorted(k for k in b.parts if k.startswith(name + " ")):
                print(f"  {role:8s} {key.split(' ', 1)[1]:18s} {b.parts[key] / blocks * 1e3:8.2f}")
        for name in b.names:
            tag = "leader" if name == leader else "follower"
            print(f"  {name} ({tag}) total {per_node[name] / blocks * 1e3:8.2f}")
        follower_ms = per_node[follower] / blocks * 1000 / a.txs
        print(f"follower_ms_per_1000_txs={follower_ms * 1000:.1f}")


if __name__ == "__main__":
    main()
