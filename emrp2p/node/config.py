"""The daemon's configuration: TOML with documented defaults, every option overridable by flag.

Example (``emrp2p testnet`` writes one per node)::

    [node]
    name = "hospital-1"
    datadir = "."                 # relative paths resolve against this file's folder
    genesis = "../genesis.json"
    key = "node.key"

    [p2p]
    host = "127.0.0.1"
    port = 7701
    max_frame = 8388608           # bytes; larger frames reset the stream
    gossip_interval_ms = 1000     # newest commit notice gossiped at most this often
    compact_proposals = true      # the leader relays pending transactions; proposals carry their ids
    relay_interval_ms = 20        # the leader relays at most this often (and before each proposal)
    handshake_burst = 30          # failed inbound handshakes one address may make at once,
    handshake_refill_per_s = 2.0  # then per second; past that it is cut off before the handshake
    peers = [ { key = "<hex>", addr = "/ip4/127.0.0.1/tcp/7702/p2p/<peer id>" } ]

    [consensus]
    heartbeat_ms = 150
    election_timeout_ms = 1000
    max_txs_per_block = 3000      # a block is cut at this many (under light load blocks are far smaller)
    min_block_interval_ms = 30    # the leader proposes at most this often
    max_in_flight = 1             # blocks awaiting votes at once (pipelining)
    max_blocks_per_term = 200
    max_term_ms = 60000
    max_pending = 20000
    max_backlog_ms = 2000         # apps get "busy" once the pool holds what commits in this long (0: never)
    forward_interval_ms = 10      # forward to the leader at most this often (0: every tick)
    forward_retry_ms = 10000

    [rpc]
    socket = "emrp2pd.sock"       # in the datadir by default
    mode = 0                      # 0: 0o600, or 0o660 when a group is named
    group = ""                    # a group name, or "" for none

    [metrics]
    host = "127.0.0.1"
    port = 0                      # 0 disables the Prometheus endpoint

    [log]
    format = "console"            # or "json"
    level = "info"

Overrides: ``--set section.option=value`` (repeatable; the value is parsed as
TOML, falling back to a plain string), plus the shortcuts ``--datadir``,
``--p2p-port``, ``--rpc-socket``, ``--metrics-port``, ``--log-format`` and
``--log-level``.
"""

from __future__ import annotations

import argparse
import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

__all__ = [
    "ConfigError",
    "NodeConfig",
    "PeerConfig",
    "load_config",
    "dump_config",
    "apply_overrides",
    "add_override_arguments",
    "config_from_args",
]


CONFIG_NAME = "emrp2pd.toml"
"""The config file's name in a node folder (``emrp2p init`` / ``testnet`` write it there)."""
SOCKET_NAME = "emrp2pd.sock"
"""The RPC socket's default name, in the datadir."""


class ConfigError(ValueError):
    """The configuration file or an override is unreadable, unknown or of the wrong type."""


@dataclass
class NodeSection:
    name: str = "node"
    datadir: str = "."
    genesis: str = "genesis.json"
    key: str = "node.key"


@dataclass
class PeerConfig:
    key: str = ""
    addr: str = ""


@dataclass
class P2pSection:
    host: str = "127.0.0.1"
    port: int = 7700
    max_frame: int = 8 << 20
    gossip_interval_ms: int = 1000
    """The leader gossips its newest commit notice at most this often (members also get each
    notice directly; gossip is for nodes without a link to the leader)."""
    compact_proposals: bool = True
    """The leader relays pending transactions to the other validators as they come, and sends
    new proposals with transaction ids instead of transactions: followers check signatures
    while transactions wait for a block, not while a round waits (emrp2p.node.compact)."""
    relay_interval_ms: int = 20
    """The leader relays what entered its pool at most this often, and before each proposal."""
    handshake_burst: int = 30
    handshake_refill_per_s: float = 2.0
    """Failed inbound handshakes (strangers, broken handshakes) one source address may make at
    once, then per second; past that its connections are closed before the Noise handshake."""
    peers: list[PeerConfig] = field(default_factory=list)


@dataclass
class ConsensusSection:
    heartbeat_ms: int = 150
    election_timeout_ms: int = 1000
    max_txs_per_block: int = 3000
    min_block_interval_ms: int = 30
    """The leader proposes at most this often. Every block costs every node a fixed amount
    (messages, store writes and their thread hand-offs, wake-ups: about 4-5 ms of CPU per node
    on 4 daemons sharing 2 cores), so a shorter interval trades CPU for latency. On 4 daemons
    sharing 2 cores (bench/cluster.py, three runs each, compact proposals): p50 at 2,900 tx/s
    was 42-44 ms with 30 against 45-47 with 40 and 45-49 with 25, at 3,000 tx/s from fresh
    39-44 against 42-48; the peak did not drop, and each node spends 1-4 % of a core more."""
    max_in_flight: int = 1
    """Blocks the leader may have waiting for votes at once (pipelining)."""
    max_blocks_per_term: int = 200
    max_term_ms: int = 60_000
    max_pending: int = 20_000
    max_backlog_ms: int = 2000
    """Apps get ``busy`` (before any signature check) once the pool holds what the network
    committed of it over this long (at least its share of two full blocks), or its oldest
    transaction has waited longer (0: never): a transaction taken commits within about this
    long, and under overload intake keeps pace with commits."""
    forward_interval_ms: int = 10
    """Submitted transactions are forwarded to the leader at most this often (0: every tick):
    each message costs the leader a fixed amount beyond its transactions, and a transaction
    waits half this long on average (20 ms put 5-8 ms on p50 against 10, measured)."""
    forward_retry_ms: int = 10_000
    """A follower forwards a pending transaction to the leader again only after this long: a
    busy leader must not be flooded with copies of what it already has."""


@dataclass
class RpcSection:
    socket: str = SOCKET_NAME
    mode: int = 0
    """0 picks 0o600, or 0o660 when ``group`` is set."""
    group: str = ""


@dataclass
class MetricsSection:
    host: str = "127.0.0.1"
    port: int = 0


@dataclass
class LogSection:
    format: str = "console"
    level: str = "info"


@dataclass
class NodeConfig:
    node: NodeSection = field(default_factory=NodeSection)
    p2p: P2pSection = field(default_factory=P2pSection)
    consensus: ConsensusSection = field(default_factory=ConsensusSection)
    rpc: RpcSection = field(default_factory=RpcSection)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    log: LogSection = field(default_factory=LogSection)
    base_dir: Path = field(default=Path("."), metadata={"internal": True})

    def path(self, value: str) -> Path:
        """A path option resolved against the config file's folder (datadir-relative for the socket)."""
        p = Path(value)
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def datadir(self) -> Path:
        return self.path(self.node.datadir)

    @property
    def socket_path(self) -> Path:
        p = Path(self.rpc.socket)
        return p if p.is_absolute() else self.datadir / p


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        (item,) = typing.get_args(tp)
        return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is int and (type(value) is not int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str and not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if tp is bool and type(value) is not bool:
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is float:
        if type(value) not in (int, float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    return value


def _build(cls: Any, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown option {where + '.' if where else ''}{key}")
    kwargs = {k: _check(v, hints[k], f"{where + '.' if where else ''}{k}") for k, v in data.items()}
    return cls(**kwargs)


def _as_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            out[f.name] = _as_dict(v)
        elif isinstance(v, list):
            out[f.name] = [_as_dict(x) if dataclasses.is_dataclass(x) else x for x in v]
        else:
            out[f.name] = v
    return out


def parse_config(text: str, base_dir: Path) -> NodeConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}") from None
    cfg: NodeConfig = _build(NodeConfig, data, "")
    cfg.base_dir = base_dir
    validate(cfg)
    return cfg


def load_config(path: str | Path) -> NodeConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e}") from None
    return parse_config(text, p.resolve().parent)


def dump_config(cfg: NodeConfig) -> str:
    return tomli_w.dumps(_as_dict(cfg))


def validate(cfg: NodeConfig) -> None:
    if cfg.log.format not in ("console", "json"):
        raise ConfigError(f"log.format must be 'console' or 'json', not {cfg.log.format!r}")
    if not 0 <= cfg.p2p.port <= 65535 or not 0 <= cfg.metrics.port <= 65535:
        raise ConfigError("ports must be between 0 and 65535")
    c = cfg.consensus
    if c.heartbeat_ms <= 0 or c.election_timeout_ms <= 2 * c.heartbeat_ms:
        raise ConfigError("consensus.election_timeout_ms must exceed twice heartbeat_ms (> 0)")
    if c.max_backlog_ms < 0:
        raise ConfigError("consensus.max_backlog_ms must not be negative")
    if c.max_txs_per_block < 1 or c.max_pending < 1:
        raise ConfigError("consensus.max_txs_per_block and max_pending must be at least 1")
    if cfg.p2p.relay_interval_ms < 0:
        raise ConfigError("p2p.relay_interval_ms must not be negative")
    if cfg.p2p.handshake_burst < 1 or cfg.p2p.handshake_refill_per_s <= 0:
        raise ConfigError("p2p.handshake_burst must be at least 1 and handshake_refill_per_s above 0")
    for p in cfg.p2p.peers:
        try:
            if len(bytes.fromhex(p.key)) != 32:
                raise ValueError
        except ValueError:
            raise ConfigError(f"p2p.peers: key {p.key!r} is not 32 bytes of hex") from None


def apply_overrides(cfg: NodeConfig, overrides: list[str]) -> NodeConfig:
    """Apply ``section.option=value`` overrides (value parsed as TOML, else taken as a string)."""
    data = _as_dict(cfg)
    for item in overrides:
        name, sep, raw = item.partition("=")
        parts = name.strip().split(".")
        if not sep or len(parts) != 2:
            raise ConfigError(f"override {item!r} is not section.option=value")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        section, option = parts
        if section not in data or not isinstance(data[section], dict):
            raise ConfigError(f"unknown section {section!r} in override {item!r}")
        data[section][option] = value
    new: NodeConfig = _build(NodeConfig, data, "")
    new.base_dir = cfg.base_dir
    validate(new)
    return new


_SHORTCUTS = {
    "datadir": "node.datadir",
    "p2p_port": "p2p.port",
    "rpc_socket": "rpc.socket",
    "metrics_port": "metrics.port",
    "log_format": "log.format",
    "log_level": "log.level",
}


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.OPTION=VALUE", help="override")
    parser.add_argument("--datadir")
    parser.add_argument("--p2p-port", type=int)
    parser.add_argument("--rpc-socket")
    parser.add_argument("--metrics-port", type=int)
    parser.add_argument("--log-format", choices=["console", "json"])
    parser.add_argument("--log-level")


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    cfg = load_config(args.config)
    overrides = list(args.set)
    for attr, key in _SHORTCUTS.items():
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}")
    return apply_overrides(cfg, overrides) if overrides else cfg
