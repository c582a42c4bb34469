"""Membership: validators propose and approve; changes take effect at their effective height."""

from __future__ import annotations

from ledger_chain import Chain, new_id

from emrp2p.crypto import Identity
from emrp2p.ledger.errors import (
    AlreadyMember,
    ChangePending,
    DuplicateApproval,
    DuplicateId,
    InvalidPayload,
    LastValidator,
    NotAuthorized,
    ProposalClosed,
    ProposalExpired,
    UnknownMember,
    UnknownProposal,
)
from emrp2p.ledger.state import get_proposal
from emrp2p.ledger.types import Action, ApproveMembership, Genesis, Member, ProposeMembership, Role

NEW = Identity.from_test_name("new-hospital")


def add(node: bytes, at: int, role: Role = Role.VALIDATOR, pid: bytes | None = None) -> ProposeMembership:
    return ProposeMembership(pid or new_id(), Action.ADD, node, "New Hospital", role, at)


def remove(node: bytes, at: int) -> ProposeMembership:
    return ProposeMembership(new_id(), Action.REMOVE, node, "", Role.VALIDATOR, at)


def test_genesis_validators_exclude_observers(chain: Chain, hospitals: list[Identity]) -> None:
    assert chain.ledger.validators(chain.kv, 1) == tuple(h.public for h in hospitals[:3])
    assert [m.node for m in chain.ledger.members(chain.kv)] == [h.public for h in hospitals]


def test_a_majority_schedules_an_addition_that_takes_effect_exactly_at_its_height(
    chain: Chain, hospitals: list[Identity]
) -> None:
    p = add(NEW.public, at=5)
    chain.accept(hospitals[0], p)
    assert not get_proposal(chain.kv, p.proposal_id).scheduled  # type: ignore[union-attr]
    chain.accept(hospitals[1], ApproveMembership(p.proposal_id))  # 2 of 3
    assert get_proposal(chain.kv, p.proposal_id).scheduled  # type: ignore[union-attr]
    assert chain.height == 2
    assert NEW.public not in chain.ledger.validators(chain.kv, 3)
    assert NEW.public not in chain.ledger.validators(chain.kv, 4)
    assert chain.ledger.validators(chain.kv, 5)[-1] == NEW.public
    chain.empty_blocks(2)  # blocks 3, 4
    assert NEW.public not in [m.node for m in chain.ledger.members(chain.kv)]
    assert chain.ledger.validators(chain.kv, 5)[-1] == NEW.public
    chain.empty_blocks(1)  # block 5 applies it
    assert chain.ledger.validators(chain.kv, 6) == (*(h.public for h in hospitals[:3]), NEW.public)
    assert chain.ledger.members(chain.kv)[-1] == Member(NEW.public, "New Hospital", Role.VALIDATOR)


def test_the_new_validator_can_act_from_its_effective_height(chain: Chain, hospitals: list[Identity]) -> None:
    p = add(NEW.public, at=3)
    chain.accept(hospitals[0], p)
    chain.accept(hospitals[1], ApproveMembership(p.proposal_id))
    chain.empty_blocks(1)
    assert chain.ledger.validators(chain.kv, 4)[-1] == NEW.public
    chain.accept(NEW, add(Identity.from_test_name("x").public, at=10))


def test_one_approval_of_three_does_not_schedule(chain: Chain, hospitals: list[Identity]) -> None:
    p = add(NEW.public, at=3)
    chain.accept(hospitals[0], p)
    chain.empty_blocks(3)
    assert NEW.public not in chain.ledger.validators(chain.kv, chain.height + 1)


def test_only_validators_may_propose(chain: Chain, hospitals: list[Identity]) -> None:
    assert isinstance(chain.reject(hospitals[3], add(NEW.public, at=5)), NotAuthorized)  # observer
    assert isinstance(chain.reject(NEW, add(NEW.public, at=5)), NotAuthorized)


def test_only_validators_may_approve(chain: Chain, hospitals: list[Identity]) -> None:
    p = add(NEW.public, at=5)
    chain.accept(hospitals[0], p)
    assert isinstance(chain.reject(hospitals[3], ApproveMembership(p.proposal_id)), NotAuthorized)


def test_effective_height_must_be_after_the_current_block(chain: Chain, hospitals: list[Identity]) -> None:
    assert isinstance(chain.reject(hospitals[0], add(NEW.public, at=1)), ProposalExpired)
    chain.accept(hospitals[0], add(NEW.public, at=2))


def test_approving_after_the_effective_height_is_rejected(chain: Chain, hospitals: list[Identity]) -> None:
    p = add(NEW.public, at=3)
    chain.accept(hospitals[0], p)
    chain.empty_blocks(1)
    assert isinstance(chain.reject(hospitals[1], ApproveMembership(p.proposal_id)), ProposalExpired)


def test_approvals_are_counted_once_and_close_at_majority(chain: Chain, hospitals: list[Identity]) -> None:
    p = add(NEW.public, at=9)
    chain.accept(hospitals[0], p)
    assert isinstance(chain.reject(hospitals[0], ApproveMembership(p.proposal_id)), DuplicateApproval)
    chain.accept(hospitals[1], ApproveMembership(p.proposal_id))
    assert isinstance(chain.reject(hospitals[2], ApproveMembership(p.proposal_id)), ProposalClosed)


def test_unknown_and_duplicate_proposals_are_rejected(chain: Chain, hospitals: list[Identity]) -> None:
    assert isinstance(chain.reject(hospitals[0], ApproveMembership(new_id())), UnknownProposal)
    p = add(NEW.public, at=9)
    chain.accept(hospitals[0], p)
    again = add(Identity.from_test_name("y").public, at=9, pid=p.proposal_id)
    assert isinstance(chain.reject(hospitals[1], again), DuplicateId)


def test_adding_an_existing_member_with_its_role_is_rejected(chain: Chain, hospitals: list[Identity]) -> None:
    assert isinstance(chain.reject(hospitals[0], add(hospitals[1].public, at=5)), AlreadyMember)
    assert isinstance(
        chain.reject(hospitals[0], add(hospitals[3].public, at=5, role=Role.OBSERVER)), AlreadyMember
    )


def test_an_observer_can_be_promoted_in_place(chain: Chain, hospitals: list[Identity]) -> None:
    p = add(hospitals[3].public, at=3)
    chain.accept(hospitals[0], p)
    chain.accept(hospitals[2], ApproveMembership(p.proposal_id))
    chain.empty_blocks(1)
    assert chain.ledger.validators(chain.kv, 4) == tuple(h.public for h in hospitals)


def test_a_removal_takes_effect_at_its_height(chain: Chain, hospitals: list[Identity]) -> None:
    p = remove(hospitals[2].public, at=4)
    chain.accept(hospitals[0], p)
    chain.accept(hospitals[1], ApproveMembership(p.proposal_id))
    assert hospitals[2].public in chain.ledger.validators(chain.kv, 3)
    assert hospitals[2].public not in chain.ledger.validators(chain.kv, 4)
    chain.empty_blocks(2)
    assert [m.node for m in chain.ledger.members(chain.kv)] == [hospitals[i].public for i in (0, 1, 3)]


def test_removing_a_non_member_is_rejected(chain: Chain, hospitals: list[Identity]) -> None:
    assert isinstance(chain.reject(hospitals[0], remove(NEW.public, at=5)), UnknownMember)


def test_a_new_member_needs_a_name(chain: Chain, hospitals: list[Identity]) -> None:
    p = ProposeMembership(new_id(), Action.ADD, NEW.public, " ", Role.VALIDATOR, 5)
    assert isinstance(chain.reject(hospitals[0], p), InvalidPayload)


def test_the_last_validator_can_never_be_removed(hospitals: list[Identity]) -> None:
    solo = Chain(
        Genesis(
            "solo",
            0,
            (Member(hospitals[0].public, "Only"), Member(hospitals[3].public, "Obs", Role.OBSERVER)),
        )
    )
    assert isinstance(solo.reject(hospitals[0], remove(hospitals[0].public, at=3)), LastValidator)
    # A single validator is its own majority: an addition is scheduled at once.
    p = add(NEW.public, at=3)
    solo.accept(hospitals[0], p)
    assert solo.ledger.validators(solo.kv, 3) == (hospitals[0].public, NEW.public)


def test_a_second_change_waits_until_the_scheduled_one_took_effect(
    chain: Chain, hospitals: list[Identity]
) -> None:
    """One change in force at a time: every majority before it then meets every majority after."""
    p = add(NEW.public, at=5)
    chain.accept(hospitals[0], p)
    chain.accept(hospitals[1], ApproveMembership(p.proposal_id))  # scheduled for block 5
    other = Identity.from_test_name("other-hospital").public
    err = chain.reject(hospitals[0], add(other, at=9))
    assert isinstance(err, ChangePending) and "height 5" in str(err)
    chain.empty_blocks(3)  # blocks 3, 4 and 5 (which applies the addition)
    assert chain.ledger.validators(chain.kv, 6)[-1] == NEW.public
    chain.accept(hospitals[0], add(other, at=9))


def test_an_open_proposal_cannot_reach_its_majority_while_another_change_is_scheduled(
    chain: Chain, hospitals: list[Identity]
) -> None:
    first, second = add(NEW.public, at=6), remove(hospitals[2].public, at=12)
    chain.accept(hospitals[0], first)
    chain.accept(hospitals[1], second)  # both open: nothing scheduled yet
    chain.accept(hospitals[1], ApproveMembership(first.proposal_id))  # first scheduled
    assert isinstance(chain.reject(hospitals[0], ApproveMembership(second.proposal_id)), ChangePending)
    assert not get_proposal(chain.kv, second.proposal_id).scheduled  # type: ignore[union-attr]
    chain.empty_blocks(3)  # block 6 applies the first; the second's height 12 is still ahead
    chain.accept(hospitals[0], ApproveMembership(second.proposal_id))  # 2 of the 4 validators now
    assert not get_proposal(chain.kv, second.proposal_id).scheduled  # type: ignore[union-attr]
    chain.accept(NEW, ApproveMembership(second.proposal_id))
    assert get_proposal(chain.kv, second.proposal_id).scheduled  # type: ignore[union-attr]
