"""The node's JSON-RPC methods (``node.*``, ``chain.*``, ``tx.*``).

Transactions travel as the hex of their canonical CBOR encoding: an app signs
with its own key (``emrp2p.ledger.types.sign_tx``) and the node never sees it.
Submitting many transactions is a JSON-RPC batch of ``tx.submit`` calls, or one
``tx.submit_many``. Later areas (records, consent, audit) add their own modules
registering on the same dispatcher.

"committed" (``tx.status``, ``tx.submit`` with ``wait``) is answered as soon as
the node knows the block's certificate; the node writes the block a moment
later. Methods that read the chain or its state first wait for that write
(``Node.settled``), so a read that follows a "committed" answer sees the block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from emrp2p.codec import CodecError, decode, to_plain
from emrp2p.consensus import SubmitResult, SubmitStatus
from emrp2p.crypto import sha256
from emrp2p.ledger.errors import ERROR_CODES, InvalidPayload
from emrp2p.ledger.types import Block, Tx
from emrp2p.rpc.dispatcher import Bytes32, Dispatcher
from emrp2p.rpc.errors import Busy, NotFound, Timeout
from emrp2p.store.verify import verify_chain

if TYPE_CHECKING:
    from emrp2p.node.node import Node

__all__ = ["build_dispatcher"]

MAX_WAIT_S = 60.0
MAX_SUBMIT_MANY = 10_000
BUSY_MESSAGE = "the node is busy (its pool is full for now); retry later"


def _decode_tx(tx: bytes) -> Tx:
    try:
        return decode(Tx, tx, max_size=1 << 20)
    except CodecError as e:
        raise InvalidPayload(f"not a canonical transaction: {e}") from None


def _raise_for(result: SubmitResult) -> None:
    if result.status is SubmitStatus.BUSY:
        raise Busy(BUSY_MESSAGE)
    if result.status is SubmitStatus.INVALID:
        cls = ERROR_CODES.get(result.code or "", InvalidPayload)
        raise cls(f"transaction {result.tx_id.hex()} refused")


def _result_json(result: SubmitResult) -> dict[str, Any]:
    return _status_json(result.tx_id, result.status.value, None, result.code)


def _status_json(tx_id: bytes, state: str, height: int | None, code: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"tx_id": tx_id.hex(), "status": state}
    if height is not None:
        out["height"] = height
    if code is not None:
        out["code"] = code
    return out


def block_json(block: Block, *, with_txs: bool) -> dict[str, Any]:
    h = block.header
    out: dict[str, Any] = {
        "height": h.height,
        "hash": block.block_hash.hex(),
        "term": h.term,
        "parent": h.parent.hex(),
        "proposer": h.proposer.hex(),
        "timestamp_ms": h.timestamp_ms,
        "tx_root": h.tx_root.hex(),
        "state_root": h.state_root.hex(),
        "tx_count": h.tx_count,
        "parent_cert": to_plain(h.parent_cert) if h.parent_cert is not None else None,
    }
    if with_txs:
        out["txs"] = [dict(to_plain(tx), tx_id=tx.tx_id.hex()) for tx in block.txs]
    return out


def build_dispatcher(node: Node) -> Dispatcher:
    d = Dispatcher()
    core = node.core
    store = node.store

    @d.method("node.status")
    async def status() -> dict[str, Any]:
        """Who this node is and what it sees: role, term, leader, heights, pool, peers."""
        await node.settled()
        leader = core.leader
        head = core.head()
        return {
            "name": node.settings.name,
            "public_key": node.identity.public.hex(),
            "peer_id": str(node.net.peer_id),
            "chain_id": node.chain_id.hex(),
            "role": core.role.name.lower(),
            "term": core.term,
            "leader": leader.hex() if leader is not None else None,
            "height": store.committed_height(),
            "head": {"term": head.term, "height": head.height, "hash": head.block_hash.hex()},
            "pending": len(core.pool),
            "validators": [v.hex() for v in core.validators()],
            "peers_connected": len(node.net.connected_peers()),
            "evidence": len(core.evidence),
            "net": node.net.stats.snapshot(),
        }

    @d.method("node.peers")
    async def peers() -> list[dict[str, Any]]:
        """Every consortium member, with its libp2p peer id and whether it is connected now."""
        await node.settled()
        connected = set(node.net.connected_peers())
        out = []
        for m in node.ledger.members(store.state):
            if m.node == node.identity.public:
                continue
            out.append(
                {
                    "public_key": m.node.hex(),
                    "name": m.name,
                    "role": m.role.name.lower(),
                    "peer_id": node.net.peer_id_of(m.node),
                    "address": node.settings.peers.get(m.node),
                    "connected": m.node in connected,
                }
            )
        return out

    @d.method("chain.head")
    async def head() -> dict[str, Any]:
        """The last committed block's header summary and its certificate."""
        await node.settled()
        height = store.committed_height()
        block = store.block(height)
        cert = store.certificate(height)
        out: dict[str, Any] = {"height": height, "state_root": store.state_root().hex()}
        if block is not None:
            out.update(hash=block.block_hash.hex(), term=block.term, timestamp_ms=block.header.timestamp_ms)
        else:
            out.update(hash=node.chain_id.hex(), term=0, timestamp_ms=node.genesis.timestamp_ms)
        out["cert"] = to_plain(cert) if cert is not None else None
        return out

    @d.method("chain.block")
    async def block(height: int, with_txs: bool = False, raw: bool = False) -> dict[str, Any]:
        """A committed block by height (``raw`` adds its canonical CBOR as hex)."""
        await node.settled()
        b = store.block(height)
        if b is None:
            raise NotFound(f"no committed block at height {height}")
        out = block_json(b, with_txs=with_txs)
        cert = store.certificate(height)
        out["cert"] = to_plain(cert) if cert is not None else None
        if raw:
            out["raw"] = (store.block_bytes(height) or b"").hex()
        return out

    @d.method("chain.verify")
    async def verify() -> dict[str, Any]:
        """Re-verify the whole local chain from genesis (links, certificates, state roots)."""
        await node.settled()
        report = await trio.to_thread.run_sync(verify_chain, store)
        return {
            "ok": report.ok,
            "height": report.height,
            "state_root": report.state_root.hex(),
            "reason": report.reason,
            "blocks": report.blocks,
            "txs": report.txs,
            "seconds": round(report.seconds, 3),
            "summary": report.summary(),
        }

    async def _wait(tx_id: bytes, timeout: float) -> dict[str, Any]:
        try:
            w = await node.wait_committed(tx_id, min(timeout, MAX_WAIT_S))
        except trio.TooSlowError:
            raise Timeout(f"transaction {tx_id.hex()} not committed within {timeout} s") from None
        return _status_json(tx_id, w.state, w.height, w.code)

    @d.method("tx.submit")
    async def submit(tx: bytes, wait: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        """Submit one signed transaction. With ``wait``, answer once it is durably committed
        (or rejected / expired); otherwise as soon as the pool took it."""
        if not node.intake_room(1):
            raise Busy(BUSY_MESSAGE)
        result = (await node.submit_admitted([_decode_tx(tx)]))[0]
        _raise_for(result)
        if wait:
            return await _wait(result.tx_id, timeout)
        return _result_json(result)

    @d.method("tx.submit_many")
    async def submit_many(txs: list[bytes]) -> list[dict[str, Any]]:
        """Submit many signed transactions at once; one result per transaction, never an error
        for a single bad one (``status`` says accepted / duplicate / invalid / busy)."""
        if len(txs) > MAX_SUBMIT_MANY:
            raise Busy(f"at most {MAX_SUBMIT_MANY} transactions per call")
        # What finds no room is answered busy with nothing decoded: a transaction's id is the
        # hash of its canonical encoding, which is what an app sends (anything else is
        # answered invalid once the node takes it).
        take = node.intake_room(len(txs))
        refused = [{"tx_id": sha256(raw_tx).hex(), "status": "busy"} for raw_tx in txs[take:]]
        decoded: list[Tx] = []
        bad: dict[int, dict[str, Any]] = {}
        for i, raw_tx in enumerate(txs[:take]):
            try:
                decoded.append(_decode_tx(raw_tx))
            except InvalidPayload as e:
                bad[i] = {"tx_id": None, "status": "invalid", "code": e.code, "message": str(e)}
        results = iter(await node.submit_admitted(decoded)) if decoded else iter(())
        return [bad[i] if i in bad else _result_json(next(results)) for i in range(take)] + refused

    @d.method("tx.status")
    async def tx_status(tx_id: Bytes32, wait: bool = False, timeout: float = 30.0) -> dict[str, Any]:
        """pending / committed (with height) / rejected (with code) / expired / unknown."""
        if wait:
            return await _wait(tx_id, timeout)
        s = core.tx_status(tx_id)
        return _status_json(tx_id, s.state.value, s.height, s.code)

    return d
