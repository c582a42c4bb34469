"""Ledger throughput: validate, execute and durably commit signed transactions in certified blocks.

    python bench/ledger.py [--txs 20000] [--block-size 2000] [--senders 1000] [--mix] [--profile]

Transactions are built and signed in a separate (spawned) process, so this
process starts with a cold verified-signature cache, as a node receiving them
would. Then, timed: strict decoding of every encoded transaction, batch
signature verification (``crypto.verify_many``), and per block of
``--block-size``: ``Ledger.execute`` against the store's committed state,
block assembly (tx root, header, proposer signature, a 4-validator
certificate), and one durable ``LmdbStore.write``. The last line is
``ledger_tx_per_s=<value>`` over the timed stages.

``--mix`` replaces the Noop load with contract calls in a clinical pattern:
each patient registers, a hospital registers a record, the patient grants
consent to a second hospital, the author grants it the key, and the second
hospital reads it (audit entry).
"""

from __future__ import annotations

import argparse
import cProfile
import multiprocessing
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emrp2p.codec import decode  # noqa: E402
from emrp2p.consensus import Config  # noqa: E402
from emrp2p.crypto import Identity, sha256, verify_many  # noqa: E402
from emrp2p.ledger.execute import BlockContext, Ledger  # noqa: E402
from emrp2p.ledger.types import (  # noqa: E402
    AccessEvent,
    BlockHeader,
    Genesis,
    GrantConsent,
    KeyGrant,
    Member,
    Noop,
    Payload,
    RegisterPatient,
    RegisterRecord,
    Role,
    Tx,
    make_certificate,
    sign_block,
    sign_tx,
    sign_vote,
    tx_root,
)
from emrp2p.store.api import Commit, WriteBatch  # noqa: E402
from emrp2p.store.lmdb_store import LmdbStore  # noqa: E402

VALIDATORS = ("bench-hospital-a", "bench-hospital-b", "bench-hospital-c", "bench-hospital-d")
GENESIS_TIME_MS = 1_700_000_000_000
BLOCK_INTERVAL_MS = 500


def make_genesis() -> Genesis:
    members = tuple(Member(Identity.from_test_name(n).public, n, Role.VALIDATOR) for n in VALIDATORS)
    return Genesis("bench-ledger", GENESIS_TIME_MS, members)


def _noop_load(chain_id: bytes, count: int, senders: int) -> list[Tx]:
    idents = [Identity.from_test_name(f"bench-sender-{i}") for i in range(senders)]
    nonces = [0] * senders
    out = []
    for i in range(count):
        s = i % senders
        out.append(sign_tx(idents[s], chain_id, nonces[s], Noop(i.to_bytes(8, "big"))))
        nonces[s] += 1
    return out


def _mix_load(chain_id: bytes, count: int) -> list[Tx]:
    hospitals = [Identity.from_test_name(n) for n in VALIDATORS]
    nonces: dict[bytes, int] = {}

    def tx(ident: Identity, payload: Payload) -> Tx:
        n = nonces.get(ident.public, 0)
        nonces[ident.public] = n + 1
        return sign_tx(ident, chain_id, n, payload)

    out: list[Tx] = []
    p = 0
    far_future = GENESIS_TIME_MS + 10 * 365 * 86_400_000
    while len(out) < count:
        patient = Identity.from_test_name(f"bench-patient-{p}")
        author, reader = hospitals[p % 4], hospitals[(p + 1) % 4]
        record_id = sha256(b"record" + p.to_bytes(8, "big"))[:16]
        consent_id = sha256(b"consent" + p.to_bytes(8, "big"))[:16]
        steps: list[tuple[Identity, Payload]] = [
            (patient, RegisterPatient()),
            (author, RegisterRecord(record_id, patient.public, "Observation", sha256(record_id), 1)),
            (patient, GrantConsent(consent_id, patient.public, reader.public, "treatment", far_future)),
            (author, KeyGrant(record_id, reader.public, sha256(consent_id), consent_id=consent_id)),
            (reader, AccessEvent(record_id, "treatment", consent_id=consent_id)),
        ]
        for ident, payload in steps[: count - len(out)]:
            out.append(tx(ident, payload))
        p += 1
    return out


def build_load(count: int, senders: int, mix: bool) -> list[bytes]:
    """Runs in a spawned process: the signed transactions, encoded."""
    chain_id = make_genesis().chain_id
    txs = _mix_load(chain_id, count) if mix else _noop_load(chain_id, count, senders)
    return [tx.encoded for tx in txs]


class Timer:
    """Wall and process CPU seconds per stage (CPU above wall means threads ran in parallel;
    well below it, that other processes had the cores)."""

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0


def run(encoded: list[bytes], block_size: int, datadir: Path, timer: Timer) -> int:
    genesis = make_genesis()
    ledger = Ledger(genesis)
    chain_id = genesis.chain_id
    validators = [Identity.from_test_name(n) for n in VALIDATORS]
    store = LmdbStore(datadir / "chain")
    try:
        store.init_genesis(genesis, ledger.genesis_state())

        with timer.stage("decode"):
            txs = [decode(Tx, raw) for raw in encoded]
        with timer.stage("verify"):
            sb = ledger.signing_bytes
            oks = verify_many([(tx.sender, sb(tx), tx.signature) for tx in txs])
        if not all(oks):
            raise SystemExit(f"{oks.count(False)} signatures did not verify")

        parent = chain_id
        parent_cert = None
        term = 1
        for start in range(0, len(txs), block_size):
            batch = tuple(txs[start : start + block_size])
            height = store.committed_height() + 1
            proposer = validators[term % len(validators)]
            ts = GENESIS_TIME_MS + height * BLOCK_INTERVAL_MS
            with timer.stage("execute"), store.snapshot() as state:
                delta = ledger.execute(state, BlockContext(height, ts, proposer.public), batch)
            with timer.stage("assemble"):
                header = BlockHeader(
                    chain_id=chain_id,
                    height=height,
                    term=term,
                    parent=parent,
                    proposer=proposer.public,
                    timestamp_ms=ts,
                    tx_root=tx_root(batch),
                    state_root=delta.root,
                    tx_count=len(batch),
                    parent_cert=parent_cert,
                )
                block = sign_block(proposer, header, batch)
                cert = make_certificate(
                    [sign_vote(v, chain_id, term, height, block.block_hash) for v in validators]
                )
            with timer.stage("commit"):
                store.write(WriteBatch(commit=[Commit(block, delta, cert)]))
            parent, parent_cert = block.block_hash, cert
        return store.committed_height()
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--txs", type=int, default=20_000)
    ap.add_argument(
        "--block-size",
        type=int,
        default=Config().max_txs_per_block,
        help="transactions per block (default: the consensus block cap, as the daemon fills them)",
    )
    ap.add_argument("--senders", type=int, default=1_000, help="distinct senders of the Noop load")
    ap.add_argument("--mix", action="store_true", help="contract calls instead of Noops")
    ap.add_argument("--datadir", type=Path, help="where to put the store (default: a fresh temporary dir)")
    ap.add_argument("--profile", action="store_true", help="cProfile the timed stages, print the top entries")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        encoded = pool.apply(build_load, (args.txs, args.senders, args.mix))
    build_s = time.perf_counter() - t0
    load = "contract mix" if args.mix else f"Noop from {args.senders} senders"
    print(f"built {len(encoded)} signed txs ({load}) in a fresh process: {build_s:.2f} s")

    tmp = None
    if args.datadir is None:
        tmp = tempfile.mkdtemp(prefix="bench-ledger-")
        datadir = Path(tmp)
    else:
        datadir = args.datadir
        if (datadir / "chain").exists():
            raise SystemExit(f"{datadir / 'chain'} exists; give a fresh --datadir")
    timer = Timer()
    profiler = cProfile.Profile() if args.profile else None
    try:
        work: Callable[[], int] = lambda: run(encoded, args.block_size, datadir, timer)  # noqa: E731
        t1 = time.perf_counter()
        height = profiler.runcall(work) if profiler is not None else work()
        total = time.perf_counter() - t1
        size = (datadir / "chain" / "data.mdb").stat().st_size
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    n = len(encoded)
    print(f"committed {height} blocks of up to {args.block_size} txs; store file {size / 1e6:.1f} MB")
    print(f"  {'stage':<9} {'wall':>8} {'cpu':>8} {'tx/s':>12}")
    for name, secs in timer.stages.items():
        rate = n / secs if secs else float("inf")
        print(f"  {name:<9} {secs:7.3f}s {timer.cpu[name]:7.3f}s {rate:>12,.0f}")
    print(f"  {'total':<9} {total:7.3f}s  (cpus: {os.cpu_count()}, load average {os.getloadavg()[0]:.2f})")
    if profiler is not None:
        stats = pstats.Stats(profiler, stream=sys.stdout)
        stats.sort_stats("tottime").print_stats(25)
    print(f"ledger_tx_per_s={n / total:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
