"""``emrp2pd --config FILE``: run one hospital's node until SIGINT or SIGTERM.

On either signal the node's nursery is cancelled: the core loop finishes the
LMDB write in progress (writes are atomic and never abandoned), the libp2p host
and its listener close, the RPC socket file is removed, and the process exits
0. Logging is configured before libp2p is imported (see ``emrp2p.logs``).
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from typing import TYPE_CHECKING

import trio

from emrp2p.logs import configure_logging, get_logger
from emrp2p.node.config import ConfigError, NodeConfig, add_override_arguments, config_from_args
from emrp2p.node.node import NodeSettings

if TYPE_CHECKING:
    from emrp2p.net import NetConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emrp2pd", description="emrp2p node daemon")
    parser.add_argument("--config", required=True, help="the node's TOML configuration file")
    add_override_arguments(parser)
    return parser


def net_config(cfg: NodeConfig, chain_id: bytes) -> NetConfig:
    """The network layer's settings from ``[p2p]`` (the rest are ``NetConfig``'s defaults)."""
    from emrp2p.net import NetConfig

    return NetConfig(
        chain_id=chain_id.hex()[:16],
        max_frame=cfg.p2p.max_frame,
        handshake_burst=cfg.p2p.handshake_burst,
        handshake_refill_per_s=cfg.p2p.handshake_refill_per_s,
    )


def node_settings(cfg: NodeConfig) -> NodeSettings:
    """The ``NodeSettings`` described by a loaded configuration (imports libp2p)."""
    from emrp2p.consensus import Config
    from emrp2p.crypto.keyfile import load_node_key
    from emrp2p.genesis import load_genesis

    genesis = load_genesis(cfg.path(cfg.node.genesis))
    c = cfg.consensus
    return NodeSettings(
        identity=load_node_key(cfg.path(cfg.node.key)),
        genesis=genesis,
        datadir=cfg.datadir,
        listen=(cfg.p2p.host, cfg.p2p.port),
        peers={bytes.fromhex(p.key): p.addr for p in cfg.p2p.peers},
        name=cfg.node.name,
        consensus=Config(
            heartbeat_ms=c.heartbeat_ms,
            election_timeout_ms=c.election_timeout_ms,
            max_txs_per_block=c.max_txs_per_block,
            min_block_interval_ms=c.min_block_interval_ms,
            max_in_flight=c.max_in_flight,
            forward_interval_ms=c.forward_interval_ms,
            max_blocks_per_term=c.max_blocks_per_term,
            max_term_ms=c.max_term_ms,
            max_pending=c.max_pending,
            forward_retry_ms=c.forward_retry_ms,
        ),
        net=net_config(cfg, genesis.chain_id),
        max_backlog_ms=c.max_backlog_ms,
        gossip_interval_ms=cfg.p2p.gossip_interval_ms,
        compact_proposals=cfg.p2p.compact_proposals,
        relay_interval_ms=cfg.p2p.relay_interval_ms,
        rpc_socket=cfg.socket_path,
        rpc_mode=cfg.rpc.mode or None,
        rpc_group=cfg.rpc.group or None,
        metrics_listen=(cfg.metrics.host, cfg.metrics.port) if cfg.metrics.port else None,
    )


async def run_node(settings: NodeSettings) -> None:
    from emrp2p.node.node import Node

    node = Node(settings)
    # The receiver restores the handlers it found when it exits: with these ignored, a second
    # SIGTERM during the last steps of shutdown cannot kill the process half-way.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            # Everything built so far (libp2p, modules, the node) lives as long as the process:
            # out of the collector's sight, a full collection only walks what came since.
            gc.freeze()

            async def stop_on_signal() -> None:
                async for signum in signals:
                    get_logger("emrp2pd").info("shutting down", signal=signal.Signals(signum).name)
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)


GC_THRESHOLDS = (5000, 20, 100)
"""(allocations per young collection, young per middle, middle per full); CPython's are (700, 10, 10)."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"emrp2pd: {e}", file=sys.stderr)
        return 2
    configure_logging(json=cfg.log.format == "json", level=cfg.log.level)
    # Signature checks run in worker threads and take the GIL back after every libsodium
    # call; a short switch interval keeps them from queueing behind the event loop.
    sys.setswitchinterval(0.0005)
    # Fewer, not longer, collections: a full one stops the event loop for up to 200 ms on a
    # loaded node (measured), so the oldest generation is collected 10 times less often.
    gc.set_threshold(*GC_THRESHOLDS)
    from emrp2p.crypto.keyfile import KeyFileError
    from emrp2p.genesis import GenesisFileError
    from emrp2p.net import PortInUse
    from emrp2p.rpc.server import SocketInUse
    from emrp2p.store.lmdb_store import StoreError

    startup_errors = (KeyFileError, GenesisFileError, PortInUse, SocketInUse, StoreError, ValueError)
    try:
        trio.run(run_node, node_settings(cfg))
    except KeyboardInterrupt:
        return 0
    except startup_errors as error:
        print(f"emrp2pd: cannot run: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        matched, rest = group.split(startup_errors)
        if matched is None or rest is not None:
            raise
        for exc in matched.exceptions:
            print(f"emrp2pd: cannot run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
