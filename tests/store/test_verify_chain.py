"""verify-chain: a sound chain verifies; any tampering or forgery is reported at its first height."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from store_ledgerchain import LedgerChain, flip_byte, height_key, raw_update

from emrp2p.cli.main import main
from emrp2p.codec import encode
from emrp2p.crypto import Identity
from emrp2p.ledger import merkle
from emrp2p.ledger.types import Certificate, Noop, Signature, sign_vote
from emrp2p.store import lmdb_store
from emrp2p.store.lmdb_store import CHAIN_DIR, LmdbStore
from emrp2p.store.verify import VerifyReport, verify_chain


@pytest.fixture
def datadir(tmp_path: Path) -> Path:
    return tmp_path / "node"


@pytest.fixture
def chain(datadir: Path) -> Iterator[LedgerChain]:
    store = LmdbStore(datadir / CHAIN_DIR)
    yield LedgerChain(store)
    store.close()


def build(chain: LedgerChain, blocks: int = 5) -> None:
    for i in range(blocks):
        txs = chain.noops(4) + ((chain.patient(f"patient-{i}"),) if i % 2 else ())
        chain.extend(txs)


def verify(chain: LedgerChain) -> VerifyReport:
    return verify_chain(chain.store)


def reopen_after(chain: LedgerChain, db: bytes, key: bytes, change: object) -> LmdbStore:
    path = chain.store.path
    chain.store.close()
    raw_update(str(path), db, key, change)
    chain.store = LmdbStore(path)
    return chain.store


def test_a_sound_chain_verifies_to_its_head_and_state_root(chain: LedgerChain) -> None:
    build(chain, 6)
    report = verify(chain)
    assert report.ok, report.reason
    assert report.height == 6
    assert report.state_root == chain.store.state_root() == chain.last.header.state_root  # type: ignore[union-attr]
    assert report.txs == 6 * 4 + 3
    assert report.summary() == f"ok height=6 state_root={report.state_root.hex()}"


def test_a_genesis_only_store_verifies_at_height_zero(chain: LedgerChain) -> None:
    report = verify(chain)
    assert report.ok and report.height == 0
    assert report.state_root == chain.ledger.genesis_state().root


def test_a_store_without_genesis_is_bad_at_height_zero(tmp_path: Path) -> None:
    with LmdbStore(tmp_path / "empty") as store:
        report = verify_chain(store)
    assert not report.ok and report.height == 0 and "genesis" in report.reason


@pytest.mark.parametrize("seed", range(12))
def test_a_flipped_byte_in_a_stored_block_is_reported_at_that_height(chain: LedgerChain, seed: int) -> None:
    build(chain, 5)
    raw = chain.store.block_bytes(3)
    assert raw is not None
    index = random.Random(seed).randrange(len(raw))
    reopen_after(chain, b"blocks", height_key(3), lambda old: flip_byte(old, index))
    report = verify(chain)
    assert not report.ok
    assert report.height == 3, report.summary()
    assert report.summary().startswith("bad height=3: ")


def test_a_flipped_byte_in_a_vote_signature_is_reported_at_that_height(chain: LedgerChain) -> None:
    build(chain, 4)
    raw = chain.store.certificate_bytes(2)
    assert raw is not None
    reopen_after(chain, b"certs", height_key(2), lambda old: flip_byte(old, len(old) - 5))
    report = verify(chain)
    assert (report.ok, report.height) == (False, 2)
    assert "vote signature" in report.reason


def test_a_missing_certificate_is_fine_when_the_next_block_carries_it(chain: LedgerChain) -> None:
    build(chain, 4)
    reopen_after(chain, b"certs", height_key(2), lambda old: None)
    assert verify(chain).ok


def test_a_head_block_without_any_certificate_is_reported(chain: LedgerChain) -> None:
    build(chain, 4)
    reopen_after(chain, b"certs", height_key(4), lambda old: None)
    report = verify(chain)
    assert (report.ok, report.height) == (False, 4)
    assert "no certificate" in report.reason


def test_blocks_committed_through_a_later_certificate_verify(chain: LedgerChain) -> None:
    build(chain, 2)
    chain.extend(cert=False, carry=False)
    chain.extend(cert=False, carry=False)
    chain.extend()
    report = verify(chain)
    assert report.ok and report.height == 5


def test_a_chain_ending_in_uncertified_blocks_is_reported_at_the_first(chain: LedgerChain) -> None:
    build(chain, 2)
    chain.extend(cert=False, carry=False)
    chain.extend(cert=False, carry=False)
    report = verify(chain)
    assert (report.ok, report.height) == (False, 3)


def test_a_certificate_without_a_majority_is_reported(chain: LedgerChain) -> None:
    build(chain, 2)
    block, commit = chain.make_block(chain.noops(2))
    chain.commit(block, commit, chain.certify(block, signers=2))
    report = verify(chain)
    assert (report.ok, report.height) == (False, 3)
    assert "majority" in report.reason


def test_a_certificate_with_a_repeated_signer_is_reported(chain: LedgerChain) -> None:
    build(chain, 1)
    block, commit = chain.make_block(chain.noops(2))
    good = chain.certify(block, signers=2)
    doubled = Certificate(good.term, good.height, good.block_hash, good.signatures + good.signatures[-1:])
    chain.commit(block, commit, doubled)
    report = verify(chain)
    assert (report.ok, report.height) == (False, 2)
    assert "distinct" in report.reason


def test_a_certificate_signed_by_an_outsider_is_reported(chain: LedgerChain) -> None:
    build(chain, 1)
    block, commit = chain.make_block(chain.noops(2))
    outsider = Identity.from_test_name("not-a-validator")
    cert = chain.certify(block, signers=3)
    vote = sign_vote(outsider, chain.chain_id, block.term, block.height, block.block_hash)
    sigs = tuple(
        sorted(cert.signatures + (Signature(outsider.public, vote.signature),), key=lambda s: s.signer)
    )
    chain.commit(block, commit, Certificate(cert.term, cert.height, cert.block_hash, sigs))
    report = verify(chain)
    assert (report.ok, report.height) == (False, 2)
    assert "not a validator" in report.reason


def test_a_certificate_of_another_term_is_reported(chain: LedgerChain) -> None:
    build(chain, 1)
    block, commit = chain.make_block(chain.noops(2))
    chain.commit(block, commit, chain.certify(block, term=block.term + 1))
    report = verify(chain)
    assert (report.ok, report.height) == (False, 2)
    assert "term" in report.reason


def test_a_parent_certificate_that_does_not_verify_is_reported_at_the_carrying_block(
    chain: LedgerChain,
) -> None:
    build(chain, 2)
    bad = chain.certify(chain.last, signers=2)  # type: ignore[arg-type]
    chain.last_cert = bad
    chain.extend()
    report = verify(chain)
    assert (report.ok, report.height) == (False, 3)
    assert "parent certificate" in report.reason


def test_a_block_by_a_validator_that_is_not_the_leader_is_reported(chain: LedgerChain) -> None:
    build(chain, 2)
    wrong = chain.idents[(chain.term + 1) % 4]
    block, commit = chain.make_block(chain.noops(2), signer=wrong)
    chain.commit(block, commit, chain.certify(block))
    report = verify(chain)
    assert (report.ok, report.height) == (False, 3)
    assert "leader" in report.reason


def test_a_block_whose_signature_is_not_the_proposers_is_reported(chain: LedgerChain) -> None:
    build(chain, 2)
    block, commit = chain.make_block(chain.noops(2), signer=chain.idents[0], proposer=chain.leader().public)
    chain.commit(block, commit, chain.certify(block))
    report = verify(chain)
    assert (report.ok, report.height) == (False, 3)
    assert "block signature" in report.reason


def test_a_timestamp_before_the_parents_is_reported(chain: LedgerChain) -> None:
    build(chain, 3)
    block, commit = chain.make_block(chain.noops(2), timestamp_ms=chain.last.header.timestamp_ms - 1)  # type: ignore[union-attr]
    chain.commit(block, commit, chain.certify(block))
    report = verify(chain)
    assert (report.ok, report.height) == (False, 4)
    assert "timestamp" in report.reason


def test_a_header_state_root_that_differs_from_the_replay_is_reported(chain: LedgerChain) -> None:
    build(chain, 2)
    block, commit = chain.make_block(chain.noops(2), state_root=b"\x07" * 32)
    chain.commit(block, commit, chain.certify(block))
    report = verify(chain)
    assert (report.ok, report.height) == (False, 3)
    assert "state root" in report.reason


def test_a_transaction_the_ledger_rejects_is_reported_at_its_block(chain: LedgerChain) -> None:
    build(chain, 2)
    sender = Identity.from_test_name("sender-0")
    replay = chain.tx(sender, Noop(b"replayed"), nonce=0)
    valid = chain.noops(1)
    forged, commit = chain.make_block((*valid, replay), executed=valid)
    chain.commit(forged, commit, chain.certify(forged))
    report = verify(chain)
    assert (report.ok, report.height) == (False, 3)
    assert "rejected on replay" in report.reason


def test_a_tx_root_that_does_not_match_is_reported(chain: LedgerChain) -> None:
    build(chain, 1)
    block, commit = chain.make_block(chain.noops(3), tx_root=b"\x01" * 32)
    chain.commit(block, commit, chain.certify(block))
    report = verify(chain)
    assert (report.ok, report.height) == (False, 2)
    assert "tx root" in report.reason


def test_tampered_committed_state_is_reported(chain: LedgerChain) -> None:
    build(chain, 3)
    key, _ = next(iter(chain.store.state.items(merkle.STATE_PREFIX)))
    reopen_after(chain, b"state", key, lambda old: old + b"!")
    report = verify(chain)
    assert (report.ok, report.height) == (False, 3)
    assert "stored state differs" in report.reason


def test_a_tampered_tx_index_is_reported(chain: LedgerChain, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lmdb_store, "INDEX_FLUSH_ENTRIES", 1)  # every commit writes its entries
    build(chain, 3)
    tx_id = chain.store.block(2).txs[0].tx_id  # type: ignore[union-attr]
    reopen_after(chain, b"tx_index", tx_id, lambda old: height_key(1))
    report = verify(chain)
    assert (report.ok, report.height) == (False, 2)
    assert "tx index" in report.reason


def test_the_cli_prints_ok_and_exits_zero(
    chain: LedgerChain, datadir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(chain, 3)
    root = chain.store.state_root()
    chain.store.close()
    assert main(["verify-chain", str(datadir)]) == 0
    assert capsys.readouterr().out.strip() == f"ok height=3 state_root={root.hex()}"
    chain.store = LmdbStore(datadir / CHAIN_DIR)


def test_the_cli_names_a_tampered_height_and_exits_one(
    chain: LedgerChain, datadir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build(chain, 4)
    raw = chain.store.block_bytes(2)
    assert raw is not None
    reopen_after(chain, b"blocks", height_key(2), lambda old: flip_byte(old, len(old) // 2))
    chain.store.close()
    assert main(["verify-chain", str(datadir)]) == 1
    assert capsys.readouterr().out.startswith("bad height=2: ")
    chain.store = LmdbStore(datadir / CHAIN_DIR)


def test_the_cli_exits_two_without_a_chain_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify-chain", str(tmp_path / "nowhere")]) == 2
    assert "no chain store" in capsys.readouterr().err


def test_block_bytes_are_what_verify_decodes(chain: LedgerChain) -> None:
    build(chain, 1)
    assert chain.store.block_bytes(1) == encode(chain.last)


def test_verification_reads_one_snapshot_while_blocks_keep_being_committed(chain: LedgerChain) -> None:
    build(chain, 3)
    root = chain.store.state_root()

    def commit_meanwhile(height: int, head: int) -> None:
        chain.extend()

    report = verify_chain(chain.store, progress=commit_meanwhile)
    assert report.ok, report.reason
    assert (report.height, report.state_root) == (3, root)
    assert chain.store.committed_height() == 6
    assert verify(chain).ok
