"""The daemon's TOML configuration (emrp2p.node.config): defaults, round trip, errors, overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from emrp2p.cli.daemon import net_config
from emrp2p.node.config import (
    ConfigError,
    NodeConfig,
    PeerConfig,
    add_override_arguments,
    apply_overrides,
    config_from_args,
    dump_config,
    load_config,
)

KEY = "ab" * 32


def write(tmp_path: Path, text: str, name: str = "emrp2pd.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_an_empty_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""))
    assert cfg.consensus.election_timeout_ms == 1000 and cfg.consensus.heartbeat_ms == 150
    assert cfg.rpc.mode == 0 and cfg.rpc.group == ""
    assert cfg.metrics.host == "127.0.0.1" and cfg.metrics.port == 0
    assert cfg.log.format == "console" and cfg.p2p.peers == []
    assert cfg.p2p.handshake_burst == 30 and cfg.p2p.handshake_refill_per_s == 2.0


def test_the_handshake_limits_reach_the_network_layer(tmp_path: Path) -> None:
    cfg = apply_overrides(
        load_config(write(tmp_path, "[p2p]\nhandshake_refill_per_s = 5\n")), ["p2p.handshake_burst=4"]
    )
    assert cfg.p2p.handshake_refill_per_s == 5.0  # an integer is taken for a number
    net = net_config(cfg, b"\x01" * 32)
    assert (net.handshake_burst, net.handshake_refill_per_s) == (4, 5.0)


def test_relative_paths_resolve_against_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    monkeypatch.chdir("/")
    cfg = load_config(write(tmp_path / "conf", '[node]\ndatadir = "../data"\ngenesis = "g.json"\n'))
    assert cfg.datadir.resolve() == (tmp_path / "data").resolve()
    assert cfg.path(cfg.node.genesis).resolve() == (tmp_path / "conf" / "g.json").resolve()
    assert cfg.socket_path.resolve() == (tmp_path / "data" / "emrp2pd.sock").resolve()


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, '[node]\ndatadir = "/srv/emrp2p"\n[rpc]\nsocket = "/run/emrp2p.sock"\n')
    )
    assert cfg.datadir == Path("/srv/emrp2p") and cfg.socket_path == Path("/run/emrp2p.sock")


def test_a_config_survives_a_dump_and_load_round_trip(tmp_path: Path) -> None:
    cfg = NodeConfig()
    cfg.node.name = "hospital-7"
    cfg.p2p.port = 7707
    cfg.p2p.peers = [PeerConfig(key=KEY, addr="/ip4/10.0.0.2/tcp/7702")]
    cfg.consensus.max_pending = 5
    cfg.rpc.group = "emrp2p"
    cfg.log.format = "json"
    again = load_config(write(tmp_path, dump_config(cfg)))
    assert dump_config(again) == dump_config(cfg)
    assert again.p2p.peers == [PeerConfig(key=KEY, addr="/ip4/10.0.0.2/tcp/7702")]
    assert again.base_dir == tmp_path.resolve()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[nodes]\nname = 'x'\n", "nodes"),
        ("[consensus]\nelection_timeout = 800\n", "consensus.election_timeout"),
        (f"[p2p]\npeers = [{{ key = '{KEY}', address = 'x' }}]\n", "address"),
    ],
)
def test_an_unknown_key_is_an_error_naming_it(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[p2p]\nport = '7700'\n", "p2p.port"),
        ("[consensus]\nmax_pending = true\n", "consensus.max_pending"),
        ("[node]\nname = 3\n", "node.name"),
        ("[p2p]\npeers = 'none'\n", "p2p.peers"),
        ("node = 1\n", "node"),
    ],
)
def test_a_value_of_the_wrong_type_is_an_error_naming_the_option(
    tmp_path: Path, text: str, named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(write(tmp_path, text))


@pytest.mark.parametrize(
    "text",
    [
        "[log]\nformat = 'xml'\n",
        "[p2p]\nport = 70000\n",
        "[consensus]\nheartbeat_ms = 500\nelection_timeout_ms = 800\n",
        "[p2p]\npeers = [{ key = 'zz', addr = 'x' }]\n",
        "[p2p]\nhandshake_burst = 0\n",
        "[p2p]\nhandshake_refill_per_s = 'fast'\n",
        "[consensus]\nmax_backlog_ms = -1\n",
        "[p2p]\nrelay_interval_ms = -5\n",
        "[p2p]\ncompact_proposals = 'yes'\n",
        "this is not toml",
    ],
)
def test_invalid_values_and_broken_toml_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_config(write(tmp_path, text))


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml")


def test_overrides_set_any_option_with_toml_typed_values(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""))
    new = apply_overrides(
        cfg,
        ["consensus.election_timeout_ms=800", "node.name=hospital-2", "rpc.mode=0o660", 'rpc.group="staff"'],
    )
    assert new.consensus.election_timeout_ms == 800 and new.node.name == "hospital-2"
    assert new.rpc.mode == 0o660 and new.rpc.group == "staff"
    assert cfg.consensus.election_timeout_ms == 1000, "the original is left alone"
    assert new.base_dir == cfg.base_dir


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("consensus.election_timeout=800", "consensus.election_timeout"),
        ("nosuch.option=1", "nosuch"),
        ("p2p.port=seven", "p2p.port"),
        ("p2p.port", "section.option=value"),
        ("port=1", "section.option=value"),
    ],
)
def test_a_bad_override_is_an_error_naming_it(tmp_path: Path, override: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        apply_overrides(load_config(write(tmp_path, "")), [override])


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[p2p]\nport = 7701\n[metrics]\nport = 9100\n")
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    add_override_arguments(parser)
    args = parser.parse_args(
        [
            str(path),
            "--p2p-port",
            "7800",
            "--datadir",
            "/var/lib/emrp2p",
            "--rpc-socket",
            "/run/e.sock",
            "--metrics-port",
            "0",
            "--log-format",
            "json",
            "--set",
            "consensus.max_pending=99",
            "--set",
            "log.level=debug",
        ]
    )
    cfg = config_from_args(args)
    assert cfg.p2p.port == 7800 and cfg.metrics.port == 0
    assert cfg.datadir == Path("/var/lib/emrp2p") and cfg.socket_path == Path("/run/e.sock")
    assert cfg.log.format == "json" and cfg.log.level == "debug" and cfg.consensus.max_pending == 99
    with pytest.raises(SystemExit):
        parser.parse_args([str(path), "--log-format", "xml"])
