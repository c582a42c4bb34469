"""Fixtures: three validator hospitals and one observer on a fresh in-memory chain."""

from __future__ import annotations

import pytest
from ledger_chain import T0, Chain

from emrp2p.crypto import Identity
from emrp2p.ledger.types import Genesis, Member, Role


@pytest.fixture
def hospitals() -> list[Identity]:
    return [Identity.from_test_name(f"hospital-{i}") for i in range(4)]


@pytest.fixture
def genesis(hospitals: list[Identity]) -> Genesis:
    members = tuple(Member(h.public, f"Hospital {i}") for i, h in enumerate(hospitals[:3]))
    observer = Member(hospitals[3].public, "Observer Hospital", Role.OBSERVER)
    return Genesis("test-net", T0, (*members, observer))


@pytest.fixture
def chain(genesis: Genesis) -> Chain:
    return Chain(genesis)
