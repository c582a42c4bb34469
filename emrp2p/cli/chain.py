"""``emrp2p verify-chain DATADIR``: verify a node's stored chain offline, from genesis.

Opens ``DATADIR/chain`` read-only (the daemon may keep running), replays the
whole chain and prints ``ok height=N state_root=HEX`` (exit 0) or
``bad height=N: reason`` (exit 1). Exit 2 when there is no chain store to read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from emrp2p.store.lmdb_store import CHAIN_DIR, StoreError, open_chain_store

EXIT_OK = 0
EXIT_BAD = 1
EXIT_NO_STORE = 2


def register(sub: Any) -> None:
    p = sub.add_parser(
        "verify-chain",
        help="verify a node's stored chain offline from genesis",
        description="Re-check every block, certificate and state root stored in DATADIR/chain.",
    )
    p.add_argument("datadir", type=Path, help="the node's data directory (holding chain/)")
    p.add_argument("--progress", action="store_true", help="report progress on stderr")
    p.set_defaults(func=verify_chain_command)


def verify_chain_command(args: argparse.Namespace) -> int:
    from emrp2p.store.verify import verify_chain

    datadir: Path = args.datadir
    if not (datadir / CHAIN_DIR / "data.mdb").exists():
        print(f"no chain store at {datadir / CHAIN_DIR}", file=sys.stderr)
        return EXIT_NO_STORE
    try:
        store = open_chain_store(datadir, readonly=True)
    except StoreError as e:
        print(str(e), file=sys.stderr)
        return EXIT_NO_STORE

    def progress(height: int, head: int) -> None:
        if height == head or height % 1000 == 0:
            print(f"verified {height}/{head}", file=sys.stderr)

    try:
        report = verify_chain(store, progress=progress if args.progress else None)
    finally:
        store.close()
    print(report.summary())
    if args.progress:
        print(f"{report.blocks} blocks, {report.txs} transactions in {report.seconds:.2f} s", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_BAD
