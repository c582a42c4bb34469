"""Block execution: nonces, signatures, select vs execute, deltas and roots."""

from __future__ import annotations

from ledger_chain import Chain

from emrp2p.crypto import Identity
from emrp2p.ledger import merkle
from emrp2p.ledger.errors import BadNonce, InvalidBlock, InvalidSignature
from emrp2p.ledger.execute import BlockContext
from emrp2p.ledger.state import MemoryKV, Overlay
from emrp2p.ledger.types import Noop, Tx


def test_noop_from_any_key_is_valid_and_bumps_the_nonce(chain: Chain) -> None:
    alice = Identity.from_test_name("alice")
    assert chain.ledger.next_nonce(chain.kv, alice.public) == 0
    chain.accept(alice, Noop(b"probe"))
    assert chain.ledger.next_nonce(chain.kv, alice.public) == 1


def test_consecutive_nonces_in_one_block_are_accepted(chain: Chain) -> None:
    alice = Identity.from_test_name("alice")
    txs = [chain.sign(alice, Noop(), nonce=n) for n in range(5)]
    chain.block(txs)
    assert chain.ledger.next_nonce(chain.kv, alice.public) == 5


def test_a_replayed_nonce_is_rejected(chain: Chain) -> None:
    alice = Identity.from_test_name("alice")
    tx = chain.accept(alice, Noop())
    ctx = chain.next_ctx()
    _, rejected, _ = chain.ledger.select(chain.kv, ctx, [tx])
    assert isinstance(rejected[0][1], BadNonce)
    assert rejected[0][1].code == "bad_nonce"


def test_a_nonce_gap_is_rejected(chain: Chain) -> None:
    alice = Identity.from_test_name("alice")
    tx = chain.sign(alice, Noop(), nonce=1)
    _, rejected, _ = chain.ledger.select(chain.kv, chain.next_ctx(), [tx])
    assert isinstance(rejected[0][1], BadNonce)


def test_out_of_order_nonces_in_one_block_drop_the_early_one(chain: Chain) -> None:
    alice = Identity.from_test_name("alice")
    t1 = chain.sign(alice, Noop(), nonce=1)
    t0 = chain.sign(alice, Noop(), nonce=0)
    included, rejected, _ = chain.ledger.select(chain.kv, chain.next_ctx(), [t1, t0])
    assert included == [t0] and rejected[0][0] == t1


def test_a_duplicate_tx_in_one_block_is_dropped(chain: Chain) -> None:
    alice = Identity.from_test_name("alice")
    tx = chain.sign(alice, Noop())
    included, rejected, _ = chain.ledger.select(chain.kv, chain.next_ctx(), [tx, tx])
    assert included == [tx] and isinstance(rejected[0][1], BadNonce)


def test_a_forged_signature_is_rejected_and_changes_nothing(chain: Chain) -> None:
    alice = Identity.from_test_name("alice")
    good = chain.sign(alice, Noop(b"a"))
    forged = Tx(good.sender, good.nonce, Noop(b"b"), good.signature)
    root_before = merkle.state_root(chain.kv)
    included, rejected, delta = chain.ledger.select(chain.kv, chain.next_ctx(), [forged])
    assert included == [] and isinstance(rejected[0][1], InvalidSignature)
    assert delta.root == root_before
    try:
        chain.ledger.check_tx(forged)
    except InvalidSignature:
        pass
    else:
        raise AssertionError("check_tx accepted a forged signature")
    chain.ledger.check_tx(good)


def test_a_tx_signed_for_another_chain_is_rejected(chain: Chain) -> None:
    from emrp2p.ledger.types import sign_tx

    alice = Identity.from_test_name("alice")
    tx = sign_tx(alice, b"\x00" * 32, 0, Noop())
    _, rejected, _ = chain.ledger.select(chain.kv, chain.next_ctx(), [tx])
    assert isinstance(rejected[0][1], InvalidSignature)


def test_execute_names_the_bad_tx_index(chain: Chain) -> None:
    alice = Identity.from_test_name("alice")
    txs = [chain.sign(alice, Noop(), nonce=0), chain.sign(alice, Noop(), nonce=0)]
    try:
        chain.ledger.execute(chain.kv, chain.next_ctx(), txs)
    except InvalidBlock as e:
        assert e.index == 1 and isinstance(e.cause, BadNonce)
        assert "tx 1" in str(e) and e.code == "invalid_block"
    else:
        raise AssertionError("execute accepted a block with a replayed nonce")


def test_signing_bytes_shortcut_matches_the_definition(chain: Chain) -> None:
    alice = Identity.from_test_name("alice")
    for n in (0, 23, 24, 255, 256, 70000, 2**40):
        tx = chain.sign(alice, Noop(b"x" * (n % 65)), nonce=n)
        assert chain.ledger.signing_bytes(tx) == tx.signing_bytes(chain.ledger.chain_id)


def test_an_empty_block_keeps_the_root(chain: Chain) -> None:
    before = merkle.state_root(chain.kv)
    assert chain.block([]) == before


def test_pipelined_blocks_over_an_overlay_match_sequential_execution(chain: Chain) -> None:
    """A leader executes block h+1 on an Overlay of uncommitted block h: same result as after committing h."""
    people = [Identity.from_test_name(f"p{i}") for i in range(20)]
    b1 = [chain.sign(p, Noop()) for p in people]
    b2 = [chain.sign(p, Noop(), nonce=1) for p in people[:10]]
    ctx1 = BlockContext(1, 1, chain.genesis.validators[0])
    ctx2 = BlockContext(2, 2, chain.genesis.validators[0])
    d1 = chain.ledger.execute(chain.kv, ctx1, b1)
    d2_pipelined = chain.ledger.execute(Overlay(chain.kv, d1.writes), ctx2, b2)
    committed = MemoryKV(chain.kv.data)
    committed.apply(d1.writes)
    d2 = chain.ledger.execute(committed, ctx2, b2)
    assert d2.root == d2_pipelined.root and d2.writes == d2_pipelined.writes


def test_check_tx_refuses_malformed_payloads_before_any_state_is_read(chain: Chain) -> None:
    from emrp2p.ledger.errors import InvalidPayload
    from emrp2p.ledger.types import RegisterRecord

    hospital = Identity.from_test_name("hospital-0")
    bad = RegisterRecord(b"r" * 16, b"p" * 32, "not-a-type", b"h" * 32, 0)
    try:
        chain.ledger.check_tx(chain.sign(hospital, bad))
    except InvalidPayload as e:
        assert e.code == "invalid_payload"
    else:
        raise AssertionError("check_tx accepted an invalid resource type")


def test_every_error_has_its_own_stable_code() -> None:
    from emrp2p.ledger import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.LedgerError)]
    codes = [c.code for c in classes]
    assert len(set(codes)) == len(codes)
    assert errors.ERROR_CODES["bad_nonce"] is errors.BadNonce
    assert set(errors.ERROR_CODES.values()) == set(classes)
