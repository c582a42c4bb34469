"""``emrp2p status | peers | head | block | verify | submit | tx-status | call``: the RPC, for people.

Each command talks to a running daemon's socket (``--socket PATH``, or
``--datadir D`` for ``D/emrp2pd.sock``) and prints JSON, so shell scripts can
pipe it to ``jq``. Errors print the JSON-RPC code and message and exit 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from emrp2p.node.config import SOCKET_NAME
from emrp2p.rpc.client import call_sync
from emrp2p.rpc.errors import RpcError


def _add_target(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--socket", type=Path, help="the daemon's RPC socket")
    g.add_argument("--datadir", type=Path, default=Path("."), help=f"the node's datadir (uses {SOCKET_NAME})")
    p.add_argument("--timeout", type=float, default=30.0)


def register(sub: Any) -> None:
    simple = {
        "status": ("node.status", "this node: role, term, leader, height, pool, peers"),
        "peers": ("node.peers", "the consortium's members and whether they are connected"),
        "head": ("chain.head", "the last committed block and its certificate"),
        "verify": ("chain.verify", "re-verify the daemon's whole chain from genesis"),
    }
    for name, (method, help_text) in simple.items():
        p = sub.add_parser(name, help=help_text)
        _add_target(p)
        p.set_defaults(func=_run, method=method, build=lambda a: None)

    p = sub.add_parser("block", help="a committed block by height")
    _add_target(p)
    p.add_argument("height", type=int)
    p.add_argument("--txs", action="store_true", help="include the transactions")
    p.set_defaults(func=_run, method="chain.block", build=lambda a: {"height": a.height, "with_txs": a.txs})

    p = sub.add_parser(
        "submit", help="submit a signed transaction (hex of its canonical CBOR, or a file of it)"
    )
    _add_target(p)
    p.add_argument("tx", help="hex, or @FILE holding raw CBOR bytes")
    p.add_argument("--wait", action="store_true", help="answer once durably committed")
    p.set_defaults(func=_run, method="tx.submit", build=_submit_params)

    p = sub.add_parser("tx-status", help="pending / committed / rejected / expired / unknown")
    _add_target(p)
    p.add_argument("tx_id")
    p.add_argument("--wait", action="store_true")
    p.set_defaults(
        func=_run,
        method="tx.status",
        build=lambda a: {"tx_id": a.tx_id, "wait": a.wait, "timeout": a.timeout},
    )

    p = sub.add_parser("call", help="any JSON-RPC method with JSON params")
    _add_target(p)
    p.add_argument("rpc_method")
    p.add_argument("params", nargs="?", default=None, help="a JSON object or array")
    p.set_defaults(func=_run, method=None, build=lambda a: json.loads(a.params) if a.params else None)


def _submit_params(a: argparse.Namespace) -> dict[str, Any]:
    tx = a.tx
    if tx.startswith("@"):
        tx = Path(tx[1:]).read_bytes().hex()
    return {"tx": tx, "wait": a.wait, "timeout": a.timeout}


def _socket(a: argparse.Namespace) -> Path:
    return Path(a.socket) if a.socket is not None else Path(a.datadir) / SOCKET_NAME


def _run(a: argparse.Namespace) -> int:
    method = a.method or a.rpc_method
    try:
        params = a.build(a)
        result = call_sync(_socket(a), method, params, timeout=a.timeout + 5)
    except RpcError as e:
        print(f"emrp2p: {method}: error {e.code}: {e.message}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"emrp2p: {method}: {e} (is the daemon running? socket {_socket(a)})", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0
