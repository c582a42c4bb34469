"""Crypto helpers, node key files, patient keystores and ``emrp2p keygen``."""

from __future__ import annotations

import os
from pathlib import Path

import nacl.pwhash.argon2id as argon2id
import pytest

from emrp2p.crypto import (
    Identity,
    InvalidSignature,
    box_public_key,
    open_sealed_key,
    seal_key,
    sha256,
    verify,
    verify_many,
)
from emrp2p.crypto.keyfile import (
    InsecureKeyFile,
    MalformedKeyFile,
    WrongPassphrase,
    keystore_public_key,
    load_node_key,
    load_patient_keystore,
    write_node_key,
    write_patient_keystore,
)

FAST_KDF = {"opslimit": argon2id.OPSLIMIT_MIN, "memlimit": argon2id.MEMLIMIT_MIN}


def test_sha256_is_sha256() -> None:
    assert sha256(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_signature_verifies_only_for_its_key_and_message() -> None:
    a, b = Identity.from_test_name("a"), Identity.from_test_name("b")
    sig = a.sign(b"msg")
    assert verify(a.public, b"msg", sig)
    assert verify(a.public, b"msg", sig), "a cached success stays a success"
    assert not verify(b.public, b"msg", sig)
    assert not verify(a.public, b"msh", sig)
    assert not verify(a.public, b"msg", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify(a.public[:31], b"msg", sig)


def test_verify_many_keeps_the_order_of_results() -> None:
    ids = [Identity.from_test_name(f"v{i}") for i in range(100)]
    items = [(i.public, b"m%d" % n, i.sign(b"m%d" % n)) for n, i in enumerate(ids)]
    bad = {3, 64, 99}
    for n in bad:
        pk, msg, _ = items[n]
        items[n] = (pk, msg, bytes(64))
    assert verify_many(items) == [n not in bad for n in range(100)]


def test_verify_many_answers_checked_signatures_from_the_cache_and_threads_only_the_misses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import emrp2p.crypto as crypto

    ids = [Identity.from_test_name(f"w{i}") for i in range(200)]
    items = [(i.public, b"w%d" % n, i.sign(b"w%d" % n)) for n, i in enumerate(ids)]
    assert verify_many(items[:150]) == [True] * 150

    class NoThreads:
        def map(self, *args: object) -> None:
            raise AssertionError("a thread hand-off for signatures already checked")

    monkeypatch.setattr(crypto, "_pool", NoThreads())
    assert verify_many(items[:150]) == [True] * 150
    # 50 misses (under the threading threshold) among hits: checked here, in order.
    forged = items[150:199] + [(items[199][0], items[199][1], bytes(64))]
    assert verify_many(items[:150] + forged) == [True] * 199 + [False]


def test_a_sealed_key_opens_only_for_its_recipient() -> None:
    alice, eve = Identity.from_test_name("alice"), Identity.from_test_name("eve")
    assert box_public_key(alice.public) == alice.box_public()
    sealed = seal_key(alice.public, b"k" * 32)
    assert open_sealed_key(alice, sealed) == b"k" * 32
    with pytest.raises(InvalidSignature):
        open_sealed_key(eve, sealed)


# ---------------------------------------------------------------- node key files


@pytest.mark.parametrize("hex_format", [False, True])
def test_a_node_key_file_round_trips_with_mode_0600(tmp_path: Path, hex_format: bool) -> None:
    seed = os.urandom(32)
    path = tmp_path / "node.key"
    write_node_key(path, seed, hex_format=hex_format)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_node_key(path).seed == seed
    assert [p.name for p in tmp_path.iterdir()] == ["node.key"], "no temporary file left behind"


def test_a_node_key_file_is_not_overwritten_without_asking(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    first, second = os.urandom(32), os.urandom(32)
    write_node_key(path, first)
    with pytest.raises(FileExistsError):
        write_node_key(path, second)
    write_node_key(path, second, overwrite=True)
    assert load_node_key(path).seed == second


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644])
def test_a_key_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    write_node_key(path, os.urandom(32))
    path.chmod(mode)
    with pytest.raises(InsecureKeyFile):
        load_node_key(path)


def test_garbage_is_not_a_node_key(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    path.write_bytes(b"not a key at all")
    path.chmod(0o600)
    with pytest.raises(MalformedKeyFile):
        load_node_key(path)


# ---------------------------------------------------------------- patient keystores


def test_a_patient_keystore_opens_with_its_passphrase(tmp_path: Path) -> None:
    seed = os.urandom(32)
    path = tmp_path / "patient.keystore"
    write_patient_keystore(path, seed, b"correct horse", **FAST_KDF)
    assert path.stat().st_mode & 0o777 == 0o600
    assert seed not in path.read_bytes()
    assert keystore_public_key(path) == Identity(seed).public
    assert load_patient_keystore(path, b"correct horse").seed == seed


def test_a_wrong_passphrase_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "patient.keystore"
    write_patient_keystore(path, os.urandom(32), b"correct horse", **FAST_KDF)
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        load_patient_keystore(path, b"battery staple")


def test_an_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_patient_keystore(tmp_path / "p", os.urandom(32), b"", **FAST_KDF)


def test_a_node_key_file_is_not_a_keystore(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_node_key(path, os.urandom(32))
    with pytest.raises(MalformedKeyFile):
        load_patient_keystore(path, b"x")


# ---------------------------------------------------------------- emrp2p keygen


def test_keygen_writes_a_node_key_and_prints_its_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emrp2p.cli.main import main

    out = tmp_path / "node.key"
    assert main(["keygen", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == load_node_key(out).public.hex()
    assert main(["keygen", "--out", str(out)]) == 1, "refuses to overwrite"
    assert main(["keygen", "--out", str(out), "--force", "--hex"]) == 0
    assert len(out.read_text().strip()) == 64


def test_keygen_writes_a_patient_keystore(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from emrp2p.cli.main import main

    pw = tmp_path / "pw"
    pw.write_text("s3cret phrase\n")
    out = tmp_path / "patient.keystore"
    assert main(["keygen", "--out", str(out), "--patient", "--passphrase-file", str(pw)]) == 0
    printed = capsys.readouterr().out.strip()
    assert load_patient_keystore(out, b"s3cret phrase").public.hex() == printed
    assert main(["keygen", "--out", str(tmp_path / "x"), "--passphrase-file", str(pw)]) == 2
