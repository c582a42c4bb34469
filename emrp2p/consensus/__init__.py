"""Ordering: a sans-IO, Raft-like state machine with a fixed leader per term.

No sockets, no clock, no threads, no randomness: the driver (``emrp2p.node``
over libp2p, ``emrp2p.sim`` over a simulated network) feeds inputs and carries
out outputs, in the shape of etcd's raft ``RawNode``.

Driver contract
---------------

::

    core = Core(identity, ledger, store, Config(...), now_ms)   # store.init_genesis(...) done before
    loop:
        core.step(sender_pubkey, message)     # a Message from an authenticated peer
        core.tick(now_ms)                     # when TickSchedule says (below)
        core.set_clock(now_ms)                # else, before stepping inputs: the time without the timers
        core.submit(txs) -> [SubmitResult]    # local intake (RPC)
        core.leader_traffic(sender, term)     # optional: a Propose arrived, stepped once checked
        core.step(sender, CommitNotice(term, cert))   # optional: that Propose's parent_cert, first
        if core.has_ready():
            rd = core.ready()
            if rd.proposals_first:            # 0. optional: the leader's proposals may go ahead
                send the Propose messages     #    of its write (see Ready), the rest waits
            store.write(rd.write)             # 1. persist FIRST (one atomic batch; may hold the vote)
            for dest, msg in rd.messages:     # 2. only then send (what 0. did not)
                send(dest, msg)
            apply(rd.committed, rd.events)    # 3. then notify / apply committed blocks
            core.advance(rd)                  # 4. acknowledge

``ready()`` must be persisted and ``advance``d before the next ``step``/``tick``/
``submit`` (a single-threaded driver does this naturally). A vote never goes
before its write. A leader's proposal may (``Ready.proposals_first``, Raft's
section 10.2.1): its own vote counts only once durable, since nothing more is
stepped before the write, and it is set only in a term the store holds as this
node's, which a restart moves on from, so a proposal lost with its write is
never followed by another at its height. Ticks: every
``tick_ms`` (20 in the daemon) while anything waits on the clock; a core with
nothing pending says how long it may go unticked (``quiet_ms``: until its
heartbeat, election or poll deadline), and a driver ticks first when an input
arrives after such a quiet spell, so the core's clock is current when it records
whom it heard; between ticks it only sets the core's clock before stepping inputs,
so that the intervals the core keeps between its own actions (forwarding,
proposing) are exact rather than rounded up to whole ticks (``TickSchedule`` does
this bookkeeping for both drivers). An idle
daemon then wakes for heartbeats, not 50 times a second. The core reads the
store only for what is durable (committed chain and state, accepted blocks and
the hard state at construction); it never writes to it. A restart is simply a
new ``Core`` over the same store.

Protocol (see DESIGN.md, "Ordering")
------------------------------------

* Terms; the leader of term ``t`` is ``validators[t % n]``, the validators in
  force after the committed tip (committed blocks are what every node can
  sync, so all agree). A validator entering a term fixes that leader for the
  whole term and persists both (``HardState.term``, ``HardState.leader``), then
  broadcasts ``TermVote(t, head, committed_height)``, so it backs one candidate
  per term even when a membership change moves the rotation mid-term; the leader of ``t`` is established when a majority
  (itself included) sent term votes whose head ``(term, height)`` is no more up
  to date than its own. It then re-sends (``Propose``) the accepted blocks it
  never saw certified, and proposes a block of its own term on top (empty if it
  must), whose certificate commits them all (Raft's figure-8 rule: only votes
  for a block of the current term are ever counted).
* ``Propose(term, block)`` from the term's leader -> follower checks signature,
  proposer (the sender for a block of this term, a validator at that height for
  a carried-forward one), hash links, timestamp (>= parent's, <= own clock +
  ``max_clock_drift_ms``), tx root, parent certificate, and executes
  (``ledger.execute``) for the state root; it persists the block as accepted and
  the vote in the hard state, then sends ``BlockVote``. At most one vote per
  (term, height), across restarts (``HardState``). Conflicting uncommitted
  accepted blocks are truncated.
* A majority of votes forms a ``Certificate``: that block and its ancestors are
  committed; the leader sends ``CommitNotice(term, cert)`` to every member and the
  next block carries it as ``parent_cert`` (a proposal made in the same step
  replaces the notice to the validators it goes to: a driver that checks a
  proposal's transactions before stepping it steps that certificate as a notice
  on arrival, so the parent commits without waiting for the check). One block of
  the current term is in flight at a time; at most one block per
  ``min_block_interval_ms``, at most ``max_txs_per_block`` transactions.
* ``Heartbeat`` every ``heartbeat_ms`` (counted from the last proposal when that
  reached every member) carries the leader's head and latest certificate; a
  follower whose head differs answers ``Status`` and the leader re-sends what it
  lacks. A follower hearing nothing for ``election_timeout_ms`` (a candidate
  not established by then) first asks ``PreVote(t+1)`` of the validators, every
  ``heartbeat_ms``, and moves to the next term once a majority answered
  ``PreVoteGrant``; a validator grants only while it has not heard a live
  leader for an election timeout less a heartbeat itself (a leader never
  grants, and answers with a heartbeat), and a pre-vote changes nothing at the
  receiver. So a node cut off alone, or paused, keeps its term and comes back
  as a follower instead of dragging a healthy majority into a new term and
  leader (Raft's pre-vote). A leader that receives ``PreVote(t+1)`` from so
  many validators that the others cannot form a quorum moves to ``t+1`` itself
  (they do not hear it lead: a one-way link, or they back another leader of the
  term, see Membership); one that votes for its block again is not counted.
  The leader hands over after ``max_blocks_per_term``
  blocks or ``max_term_ms``, once its last block is committed (and at once if
  voted out). Messages of a higher term move a validator to it, except from
  nodes outside the validator set (a voted-out node is answered with
  ``Status`` so it syncs and learns it is out).
* Membership: ``ledger.validators(state, height)`` decides, per height, on
  every node alike. Certificates count a majority of the set at the block's
  own height. Safety across a change relies on old and new majorities
  intersecting, i.e. one change in force at a time: the ledger's governance
  schedules one change per proposal at a future ``effective_height`` and refuses
  to schedule another until it took effect (``change_pending``). Validators
  that entered a term on different sides of a change can back different
  leaders of it: a leader that hears another leader of its term moves to the
  next (whose leader, from the committed chain both now share, is one), and a
  follower whose own leader stays silent forwards its apps' transactions to the
  one it hears leading, so they are not held back until the term ends.
* Catch-up: a node that learns of a committed height above its own (heartbeat,
  status, term vote, certificate for a block it lacks) sends
  ``SyncRequest(from_height, max_blocks)``; any node answers ``SyncResponse``
  with consecutive committed blocks and certificates (extended to the next
  certified block). The requester checks links, proposers, signatures, tx
  roots, executes each block for its state root and commits the prefix proven
  by a valid certificate (a majority of the validators in force at that height,
  valid vote signatures); it repeats until level. Observers (non-validator
  members) follow through heartbeats, commit notices, and polling sync. A synced
  certified block of a later term moves the node to that term (a leader cut off
  in its term learns that way that the term is over).
* A leader signs at most one block per (term, height): nodes that entered a term
  on different sides of a membership change may each see themselves as its
  leader; the one that syncs the other's committed blocks over heights it had
  proposed at hands over (next term) rather than propose there again. A leader
  (or candidate) that hears a heartbeat or proposal of its own term from
  another validator moves to the next term: the two sides' followers each hear
  a live leader and refuse pre-votes, so nothing else would break the tie.
* Evidence: two verified, conflicting votes or proposals by one validator for
  the same (term, height) are kept in ``core.evidence`` and reported as
  ``EvidenceFound``.

Transactions: ``submit`` checks statelessly (``ledger.check_tx``), dedupes
(pending and committed), bounds the pool (``BUSY`` past ``max_pending``); a
non-leader forwards pending transactions to the leader (``ForwardTxs``, batched once per tick) and
again after a term change or ``forward_retry_ms``. Transactions that fail at
selection are dropped and reported (``TxRejected``); pending ones older than
``pending_ttl_ms`` expire (``TxExpired``). ``core.tx_status(tx_id)`` answers
pending / committed (height) / rejected (code) / expired / unknown.
"""

from emrp2p.consensus.config import Config
from emrp2p.consensus.core import (
    BlockRefused,
    Core,
    CoreNotInitialised,
    Event,
    EvidenceFound,
    LeaderChanged,
    Ready,
    Role,
    TermChanged,
    TickSchedule,
    TxExpired,
    TxRejected,
)
from emrp2p.consensus.messages import (
    BlockVote,
    CommitNotice,
    Evidence,
    ForwardTxs,
    HardState,
    Head,
    Heartbeat,
    Message,
    PreVote,
    PreVoteGrant,
    ProposalEquivocation,
    Propose,
    Status,
    SyncRequest,
    SyncResponse,
    TermVote,
    VoteEquivocation,
)
from emrp2p.consensus.pool import SubmitResult, SubmitStatus, TxState, TxStatus

__all__ = [
    "Config",
    "Core",
    "CoreNotInitialised",
    "TickSchedule",
    "Ready",
    "Role",
    "Event",
    "TermChanged",
    "LeaderChanged",
    "EvidenceFound",
    "TxRejected",
    "TxExpired",
    "BlockRefused",
    "Message",
    "Head",
    "Propose",
    "BlockVote",
    "CommitNotice",
    "TermVote",
    "PreVote",
    "PreVoteGrant",
    "Heartbeat",
    "Status",
    "SyncRequest",
    "SyncResponse",
    "ForwardTxs",
    "HardState",
    "Evidence",
    "VoteEquivocation",
    "ProposalEquivocation",
    "SubmitResult",
    "SubmitStatus",
    "TxState",
    "TxStatus",
]
