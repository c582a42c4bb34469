"""Gossip among members, and what is kept out of it."""

from __future__ import annotations

import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.validators import PUBSUB_SIGNING_PREFIX
from libp2p.utils import encode_varint_prefixed
from net_hostile import HostilePeer
from netfixtures import Cluster, StartMesh, identities, wait_until

from emrp2p.crypto import Identity
from emrp2p.net import NetConfig, Network


async def gossip_ready(nets: list[Network]) -> None:
    with trio.fail_after(10):
        for net in nets:
            await net.wait_gossip_peers(len(nets) - 1)


def signed_message(signer: Identity, topic: str, data: bytes, seqno: int = 1) -> rpc_pb2.Message:
    """A gossip message correctly signed by ``signer`` (as libp2p's strict signing does it)."""
    kp = create_new_key_pair(signer.seed)
    msg = rpc_pb2.Message(
        data=data,
        topicIDs=[topic],
        from_id=ID.from_pubkey(kp.public_key).to_bytes(),
        seqno=seqno.to_bytes(8, "big"),
    )
    msg.signature = kp.private_key.sign(PUBSUB_SIGNING_PREFIX.encode() + msg.SerializeToString())
    msg.key = kp.public_key.serialize()
    return msg


async def test_gossip_reaches_every_member(start_mesh: StartMesh) -> None:
    nets = await start_mesh(3)
    await gossip_ready(nets)
    for i, net in enumerate(nets):
        await net.publish(b"announcement %d" % i)
    for i, net in enumerate(nets):
        got = set()
        with trio.fail_after(5):
            while len(got) < 2:
                got.add(await net.gossip_incoming.receive())
        assert got == {
            (other.identity.public, b"announcement %d" % j) for j, other in enumerate(nets) if j != i
        }


async def test_gossip_signed_by_a_stranger_or_oversize_is_neither_delivered_nor_relayed(
    start_mesh: StartMesh, cluster: Cluster
) -> None:
    rogue_id = identities(1, "rogue-member")[0]
    nets = await start_mesh(3, config=NetConfig(max_gossip=1024), extra_members=(rogue_id.public,))
    await gossip_ready(nets)
    rogue = HostilePeer(rogue_id)
    await cluster.nursery.start(rogue.run)
    topic = nets[0].gossip_topic
    stranger = identities(1, "stranger")[0]

    # A member's connection relays a stranger's (validly signed) message and an oversize one of its own.
    rpc = rpc_pb2.RPC(
        subscriptions=[rpc_pb2.RPC.SubOpts(subscribe=True, topicid=topic)],
        publish=[
            signed_message(stranger, topic, b"from a stranger"),
            signed_message(rogue_id, topic, b"x" * 2048, seqno=2),
        ],
    )
    await rogue.send_raw(
        nets[0].listen_addrs[0], PROTOCOL_ID_V11, encode_varint_prefixed(rpc.SerializeToString())
    )
    await wait_until(lambda: nets[0].stats.gossip_rejected >= 2)

    await nets[1].publish(b"from a member")
    for net in (nets[0], nets[2]):
        with trio.fail_after(5):
            assert await net.gossip_incoming.receive() == (nets[1].identity.public, b"from a member")
    for net in nets:
        assert net.stats.gossip_in <= 1


async def test_publish_refuses_a_payload_over_the_gossip_cap(start_mesh: StartMesh) -> None:
    (net,) = await start_mesh(1, config=NetConfig(max_gossip=100))
    try:
        await net.publish(b"x" * 101)
        raise AssertionError("accepted an oversize payload")
    except ValueError:
        pass
    assert net.stats.gossip_out == 0
