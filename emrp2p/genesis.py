"""The genesis file: a readable JSON document whose canonical CBOR hash is the chain id.

Hospital IT teams exchange and inspect this file before the network starts, so
it is JSON (keys as hex); the chain id is always recomputed from the decoded
``Genesis`` value, never trusted from the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from emrp2p.ledger.types import Genesis, Member, Role


class GenesisFileError(ValueError):
    """The genesis file is missing, unreadable or malformed."""


def genesis_to_json(genesis: Genesis) -> str:
    doc = {
        "network": genesis.network,
        "timestamp_ms": genesis.timestamp_ms,
        "members": [
            {"node": m.node.hex(), "name": m.name, "role": m.role.name.lower()} for m in genesis.members
        ],
        "chain_id": genesis.chain_id.hex(),
    }
    return json.dumps(doc, indent=2) + "\n"


def genesis_from_json(text: str) -> Genesis:
    try:
        doc: dict[str, Any] = json.loads(text)
        members = tuple(
            Member(bytes.fromhex(m["node"]), str(m["name"]), Role[str(m["role"]).upper()])
            for m in doc["members"]
        )
        genesis = Genesis(str(doc["network"]), int(doc["timestamp_ms"]), members)
    except (ValueError, KeyError, TypeError) as e:
        raise GenesisFileError(f"malformed genesis: {e}") from None
    for m in genesis.members:
        if len(m.node) != 32:
            raise GenesisFileError(f"member {m.name!r}: node key must be 32 bytes")
    if not genesis.validators:
        raise GenesisFileError("genesis names no validator")
    if len({m.node for m in genesis.members}) != len(genesis.members):
        raise GenesisFileError("a node key appears twice in genesis")
    claimed = doc.get("chain_id")
    if claimed is not None and claimed != genesis.chain_id.hex():
        raise GenesisFileError(
            f"chain_id in file {claimed} does not match its contents {genesis.chain_id.hex()}"
        )
    return genesis


def load_genesis(path: str | os.PathLike[str]) -> Genesis:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise GenesisFileError(f"cannot read genesis file {path}: {e}") from None
    return genesis_from_json(text)


def save_genesis(genesis: Genesis, path: str | os.PathLike[str]) -> None:
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(genesis_to_json(genesis))
    os.replace(tmp, p)
