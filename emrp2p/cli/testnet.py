"""``emrp2p init`` and ``emrp2p testnet``: keys, genesis and one config per hospital node.

``emrp2p testnet --nodes N --dir D`` writes ``D/genesis.json`` with N
validators and ``D/nodeI/{node.key, emrp2pd.toml}`` for I in 1..N, listening on
127.0.0.1 at consecutive ports (``--base-port``; 0 picks free ports), each
naming the others as persistent peers. ``emrp2p init --datadir D`` makes one
node's key and config; its operator then adds the consortium's genesis file
and peers.
"""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path
from typing import Any

from emrp2p.crypto import Identity
from emrp2p.crypto.keyfile import write_node_key
from emrp2p.genesis import save_genesis
from emrp2p.ledger.types import Genesis, Member, Role
from emrp2p.node.config import CONFIG_NAME, NodeConfig, NodeSection, P2pSection, PeerConfig, dump_config


def register(sub: Any) -> None:
    p = sub.add_parser("testnet", help="write keys, genesis and configs for a local network")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--base-port", type=int, default=0, help="first libp2p port; 0 picks free ports")
    p.add_argument("--metrics-base-port", type=int, default=0, help="first metrics port; 0 disables metrics")
    p.add_argument("--network", default="emrp2p-testnet")
    p.set_defaults(func=testnet_command)

    q = sub.add_parser("init", help="create a node key and a config in a datadir")
    q.add_argument("--datadir", type=Path, required=True)
    q.add_argument("--name", default="hospital")
    q.add_argument("--port", type=int, default=7700)
    q.set_defaults(func=init_command)


def peer_id(public_key: bytes) -> str:
    from emrp2p.net import Network

    return Network.peer_id_of(public_key)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports on 127.0.0.1 that are free right now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_testnet(
    directory: Path, n: int, base_port: int = 0, metrics_base_port: int = 0, network: str = "emrp2p-testnet"
) -> Genesis:
    if n < 1:
        raise ValueError("a network needs at least one node")
    directory.mkdir(parents=True, exist_ok=True)
    idents = [Identity.generate() for _ in range(n)]
    names = [f"hospital-{i + 1}" for i in range(n)]
    genesis = Genesis(
        network,
        int(time.time() * 1000),
        tuple(Member(i.public, name, Role.VALIDATOR) for i, name in zip(idents, names, strict=True)),
    )
    save_genesis(genesis, directory / "genesis.json")
    ports = [base_port + i for i in range(n)] if base_port else free_ports(n)
    metrics = [metrics_base_port + i for i in range(n)] if metrics_base_port else [0] * n
    addrs = [
        f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id(i.public)}" for i, port in zip(idents, ports, strict=True)
    ]
    for k, ident in enumerate(idents):
        node_dir = directory / f"node{k + 1}"
        node_dir.mkdir(exist_ok=True)
        write_node_key(node_dir / "node.key", ident.seed, overwrite=True)
        cfg = NodeConfig(
            node=NodeSection(name=names[k], datadir=".", genesis="../genesis.json", key="node.key"),
            p2p=P2pSection(
                port=ports[k],
                peers=[PeerConfig(idents[j].public.hex(), addrs[j]) for j in range(n) if j != k],
            ),
        )
        cfg.metrics.port = metrics[k]
        (node_dir / CONFIG_NAME).write_text(dump_config(cfg))
    return genesis


def testnet_command(args: argparse.Namespace) -> int:
    genesis = write_testnet(args.dir, args.nodes, args.base_port, args.metrics_base_port, args.network)
    print(f"wrote {args.nodes} nodes to {args.dir}; chain id {genesis.chain_id.hex()}")
    for k in range(args.nodes):
        print(f"  emrp2pd --config {args.dir / f'node{k + 1}' / CONFIG_NAME}")
    return 0


def init_command(args: argparse.Namespace) -> int:
    d: Path = args.datadir
    d.mkdir(parents=True, exist_ok=True)
    key_path = d / "node.key"
    if key_path.exists():
        print(f"emrp2p: {key_path} exists; refusing to overwrite a node key")
        return 1
    ident = Identity.generate()
    write_node_key(key_path, ident.seed)
    cfg = NodeConfig(node=NodeSection(name=args.name, datadir=".", genesis="genesis.json", key="node.key"))
    cfg.p2p.port = args.port
    (d / CONFIG_NAME).write_text(dump_config(cfg))
    print(f"node key {ident.public.hex()}")
    print(f"peer id  {peer_id(ident.public)}")
    print(f"config   {d / CONFIG_NAME} (add the consortium's genesis.json and [[p2p.peers]])")
    return 0
