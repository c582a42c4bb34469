"""JSON-RPC 2.0 between local applications and their daemon, over a Unix socket.

Wire protocol
-------------

- **Transport**: a Unix stream socket (``[rpc] socket``, by default
  ``DATADIR/emrp2pd.sock``), mode 0600, or 0660 with the group the admin
  names in ``[rpc] group``. Access to the socket is the authorization.
- **Framing**: newline-delimited JSON. Each line (UTF-8, ending in ``\\n``)
  holds exactly one JSON-RPC request, notification or batch; the server
  answers each line that needs an answer with exactly one line. JSON never
  needs a raw newline (encoders escape it in strings), so compact JSON
  (``json.dumps(obj)``) is always one line; blank lines are ignored; a last
  line without its newline before the client's end of stream still counts.
  Try it: ``echo '{"jsonrpc":"2.0","id":1,"method":"node.status"}' | nc -U emrp2pd.sock``.
- **Size limit**: a request line over ``max_request_bytes`` (16 MiB by
  default) is answered with -32600 (id null) and the connection is closed.
- **Order**: the requests of one connection are run one after the other and
  answered in order (batches too: their entries run in order). For
  parallelism open several connections; ``RpcClient`` pipelines calls from
  many tasks over one connection and matches answers by id.
- **Semantics**: JSON-RPC 2.0 exactly: no ``id`` means a notification (no
  answer, even on error); a batch is a JSON array, answered with an array
  holding no entries for its notifications (and no line at all when all are
  notifications); an empty array is -32600. Error codes: ``emrp2p.rpc.errors``.
- **Events**: ``events.subscribe {"topic": T}`` (``"*"`` for every topic)
  returns a subscription id; the server then sends, on that connection,
  notifications ``{"jsonrpc":"2.0","method":"events","params":{"subscription":
  ID,"topic":T,"event":{...}}}``, only after the subscribe response.
  ``events.unsubscribe {"subscription": ID}`` stops them (true if it existed).
  A subscriber too slow to keep up (its queue of 1024 events is full) is
  dropped: it receives ``{"method":"events.dropped","params":{"subscription":
  ID,"topic":T,"reason":...}}`` and nothing more for that subscription; a
  client that stops reading altogether is disconnected after 30 s.
  The node never waits for a subscriber.
- **Connections**: at most ``max_connections`` (256) at once; one more is
  answered -32000 (busy) and closed.
"""

from emrp2p.rpc.client import ClientSubscription, RpcClient, SyncRpcClient, call_sync
from emrp2p.rpc.dispatcher import Bytes16, Bytes32, Bytes64, Dispatcher, HexBytes
from emrp2p.rpc.errors import (
    Busy,
    NotFound,
    NotLeader,
    RpcError,
    SubscriptionDropped,
    Timeout,
    Unavailable,
)
from emrp2p.rpc.events import EventBus, Subscription
from emrp2p.rpc.server import RpcServer, SocketInUse

__all__ = [
    "Busy",
    "Bytes16",
    "Bytes32",
    "Bytes64",
    "ClientSubscription",
    "Dispatcher",
    "EventBus",
    "HexBytes",
    "NotFound",
    "NotLeader",
    "RpcClient",
    "RpcError",
    "RpcServer",
    "SocketInUse",
    "Subscription",
    "SubscriptionDropped",
    "SyncRpcClient",
    "Timeout",
    "Unavailable",
    "call_sync",
]
