"""The ``emrp2p`` command: one subcommand module per area, each with ``register(subparsers)``.

A subcommand module defines ``register(sub)`` which adds its parsers and sets
``func`` (taking the parsed ``argparse.Namespace``, returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMAND_MODULES = [
    "emrp2p.cli.keys",
    "emrp2p.cli.chain",
    "emrp2p.cli.testnet",
    "emrp2p.cli.node_commands",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emrp2p", description="emrp2p: hospital record-sharing network")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
