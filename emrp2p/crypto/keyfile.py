"""Key files: a node's Ed25519 seed, and a patient's passphrase-protected keystore.

A node key file holds the 32-byte seed, either as canonical CBOR
(``NodeKeyFile``) or as 64 hex digits and a newline (easy to provision from a
secrets manager). It is written atomically with mode 0600, and a file that the
group or others can read or write is refused: a leaked node key is a forged
hospital.

A patient keystore holds the seed encrypted with a key derived from a
passphrase by Argon2id (parameters and salt stored alongside, bounded on load)
under XSalsa20-Poly1305 (``nacl.secret.SecretBox``). The public key is kept in
clear so tools can show which pseudonym a keystore holds without asking for
the passphrase; it is checked against the decrypted seed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import nacl.exceptions
import nacl.pwhash.argon2id as argon2id
import nacl.secret
import nacl.utils

from emrp2p.codec import CodecError, Limits, decode, encode, wire
from emrp2p.crypto import Identity

__all__ = [
    "KeyFileError",
    "InsecureKeyFile",
    "MalformedKeyFile",
    "WrongPassphrase",
    "NodeKeyFile",
    "PatientKeystore",
    "write_node_key",
    "load_node_key",
    "write_patient_keystore",
    "load_patient_keystore",
    "keystore_public_key",
    "KDF_OPSLIMIT",
    "KDF_MEMLIMIT",
]

KDF_OPSLIMIT = argon2id.OPSLIMIT_INTERACTIVE
KDF_MEMLIMIT = argon2id.MEMLIMIT_INTERACTIVE
MAX_OPSLIMIT = 64
MAX_MEMLIMIT = 1 << 30


class KeyFileError(Exception):
    """A key file that cannot be used."""


class InsecureKeyFile(KeyFileError):
    """The key file is readable or writable by group or others."""


class MalformedKeyFile(KeyFileError):
    """Not a key file of the expected kind."""


class WrongPassphrase(KeyFileError):
    """The passphrase does not open this keystore."""


@wire(330)
@dataclass(frozen=True)
class NodeKeyFile:
    seed: bytes = field(metadata={"limits": Limits(exact_len=32)})


@wire(331)
@dataclass(frozen=True)
class PatientKeystore:
    public: bytes = field(metadata={"limits": Limits(exact_len=32)})
    salt: bytes = field(metadata={"limits": Limits(exact_len=argon2id.SALTBYTES)})
    opslimit: int = field(
        metadata={"limits": Limits(min_value=argon2id.OPSLIMIT_MIN, max_value=MAX_OPSLIMIT)}
    )
    memlimit: int = field(
        metadata={"limits": Limits(min_value=argon2id.MEMLIMIT_MIN, max_value=MAX_MEMLIMIT)}
    )
    sealed: bytes = field(metadata={"limits": Limits(max_len=256)})


def _write_private(path: Path, data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600 atomically: a crash leaves the old file or the new one."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; refusing to overwrite a key")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _read_private(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise MalformedKeyFile(f"{path} is not a regular file")
        if mode & 0o077:
            raise InsecureKeyFile(f"{path} has mode {stat.S_IMODE(mode):04o}; run: chmod 600 {path}")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(1 << 16)
    finally:
        os.close(fd)


def write_node_key(path: Path, seed: bytes, *, hex_format: bool = False, overwrite: bool = False) -> None:
    if len(seed) != 32:
        raise ValueError("a node key seed is 32 bytes")
    data = (seed.hex() + "\n").encode() if hex_format else encode(NodeKeyFile(seed))
    _write_private(path, data, overwrite=overwrite)


def load_node_key(path: Path) -> Identity:
    """The node identity in ``path`` (CBOR or hex), refusing files others may read."""
    data = _read_private(Path(path))
    text = data.strip()
    if len(text) == 64:
        try:
            return Identity(bytes.fromhex(text.decode("ascii")))
        except (UnicodeDecodeError, ValueError):
            pass
    try:
        return Identity(decode(NodeKeyFile, data).seed)
    except CodecError as e:
        raise MalformedKeyFile(f"{path} is not a node key file: {e}") from None


def _derive(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, opslimit=opslimit, memlimit=memlimit
    )


def write_patient_keystore(
    path: Path,
    seed: bytes,
    passphrase: bytes,
    *,
    opslimit: int = KDF_OPSLIMIT,
    memlimit: int = KDF_MEMLIMIT,
    overwrite: bool = False,
) -> None:
    if len(seed) != 32:
        raise ValueError("a patient key seed is 32 bytes")
    if not passphrase:
        raise ValueError("an empty passphrase protects nothing")
    salt = nacl.utils.random(argon2id.SALTBYTES)
    box = nacl.secret.SecretBox(_derive(passphrase, salt, opslimit, memlimit))
    sealed = bytes(box.encrypt(seed))
    ks = PatientKeystore(Identity(seed).public, salt, opslimit, memlimit, sealed)
    _write_private(path, encode(ks), overwrite=overwrite)


def _read_keystore(path: Path) -> PatientKeystore:
    data = _read_private(Path(path))
    try:
        return decode(PatientKeystore, data)
    except CodecError as e:
        raise MalformedKeyFile(f"{path} is not a patient keystore: {e}") from None


def keystore_public_key(path: Path) -> bytes:
    """The patient's public key (pseudonym), without the passphrase."""
    return _read_keystore(path).public


def load_patient_keystore(path: Path, passphrase: bytes) -> Identity:
    ks = _read_keystore(path)
    box = nacl.secret.SecretBox(_derive(passphrase, ks.salt, ks.opslimit, ks.memlimit))
    try:
        seed = bytes(box.decrypt(ks.sealed))
    except nacl.exceptions.CryptoError:
        raise WrongPassphrase(f"wrong passphrase for {path}") from None
    identity = Identity(seed)
    if identity.public != ks.public:
        raise MalformedKeyFile(f"{path}: stored public key does not match the sealed seed")
    return identity
