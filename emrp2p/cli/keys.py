"""``emrp2p keygen``: create a node key file or a passphrase-protected patient keystore.

Prints the new public key in hex on stdout (the node's member key, or the
patient's pseudonym), so scripts can capture it. Never overwrites a key file
unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any

from emrp2p.crypto import Identity
from emrp2p.crypto.keyfile import write_node_key, write_patient_keystore


def register(sub: Any) -> None:
    p = sub.add_parser(
        "keygen",
        help="create a node key file or a patient keystore",
        description="Generate a new Ed25519 key, write it with mode 0600 and print its public key in hex.",
    )
    p.add_argument("--out", type=Path, required=True, help="where to write the key file")
    p.add_argument("--hex", action="store_true", help="node key as 64 hex digits instead of CBOR")
    p.add_argument("--patient", action="store_true", help="a patient keystore, encrypted with a passphrase")
    p.add_argument(
        "--passphrase-file", type=Path, help="read the patient passphrase from this file (first line)"
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=keygen_command)


def _passphrase(args: argparse.Namespace) -> bytes:
    if args.passphrase_file is not None:
        lines = args.passphrase_file.read_bytes().splitlines()
        return lines[0] if lines else b""
    first = getpass.getpass("passphrase: ")
    if getpass.getpass("again: ") != first:
        raise ValueError("passphrases differ")
    return first.encode()


def keygen_command(args: argparse.Namespace) -> int:
    if args.passphrase_file is not None and not args.patient:
        print("--passphrase-file is for --patient keystores", file=sys.stderr)
        return 2
    identity = Identity.generate()
    try:
        if args.patient:
            if args.hex:
                print("--hex is for node keys", file=sys.stderr)
                return 2
            write_patient_keystore(args.out, identity.seed, _passphrase(args), overwrite=args.force)
        else:
            write_node_key(args.out, identity.seed, hex_format=args.hex, overwrite=args.force)
    except (OSError, ValueError) as e:
        print(f"keygen: {e}", file=sys.stderr)
        return 1
    print(identity.public.hex())
    return 0
