"""GossipSub as emrp2p uses it: fan-out of loss-tolerant announcements among members.

Settings from the notes: V1.2 and V1.1 only, 1 s heartbeat, spam protection
off (it silently drops our own publishes above 10 msg/s, hazard 4), adaptive
gossip off (it stretches the heartbeat to 30 s, hazard 5), message id = sha256
of the data, strict signing on (every message carries its origin's Ed25519
signature, which libp2p checks before our validator runs).

The topic validator accepts (and so relays) only messages whose signer is a
member and whose payload is within the size cap. The validation cache is
disabled (ttl 0): with content-addressed ids, a rejected stranger's copy of
some bytes would otherwise be remembered and reject a member's later
publication of the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import Pubsub

__all__ = ["make_pubsub", "message_id", "member_validator"]


def message_id(msg: rpc_pb2.Message) -> bytes:
    return hashlib.sha256(msg.data).digest()


def make_pubsub(host: IHost, *, degree: int, degree_low: int, degree_high: int) -> tuple[GossipSub, Pubsub]:
    router = GossipSub(
        [PROTOCOL_ID_V12, PROTOCOL_ID_V11],
        degree,
        degree_low,
        degree_high,
        heartbeat_interval=1,
        spam_protection_enabled=False,
        adaptive_gossip_enabled=False,
        eclipse_protection_enabled=False,
    )
    pubsub = Pubsub(
        host,
        router,
        strict_signing=True,
        msg_id_constructor=message_id,
        validation_cache_ttl=0,
    )
    if not pubsub.strict_signing or pubsub.sign_key is None:
        raise RuntimeError("pubsub message signing is not on")
    return router, pubsub


def member_validator(
    origin_of: Callable[[ID], bytes | None], max_payload: int, on_reject: Callable[[str], None]
) -> Callable[[ID, rpc_pb2.Message], bool]:
    """A sync topic validator: signer is a member, payload within the cap.

    ``origin_of`` maps a peer id to the member's public key (None for non-members).
    The signature itself was checked by libp2p (strict signing) against the key
    embedded in ``from_id``; we also insist that any attached key is that same key.
    """

    def validate(forwarder: ID, msg: rpc_pb2.Message) -> bool:
        try:
            if len(msg.data) > max_payload:
                on_reject("oversize")
                return False
            if not msg.signature:
                on_reject("unsigned")
                return False
            origin = ID(msg.from_id)
            if origin_of(origin) is None:
                on_reject("stranger")
                return False
            if msg.key:
                from libp2p.crypto.serialization import deserialize_public_key

                if ID.from_pubkey(deserialize_public_key(msg.key)) != origin:
                    on_reject("key-mismatch")
                    return False
            return True
        except Exception:
            on_reject("malformed")
            return False

    return validate
