"""Both store backends answer every member of crm.store.interface.CallStore, with the same
parameters: the application talks to a store only through that Protocol, so a method one backend
renames, drops or gives other arguments breaks here before it breaks a running pbxcrm.

Nothing is type-checked at run time, so the members are compared one by one: present, a property
where the Protocol has one, async where the Protocol's is, and the same parameter names, kinds
and defaults (annotations differ on purpose: each backend names its own reader type).
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol

import pytest

from crm.store.interface import CallStore, DeliveryStore, LocalDeliveries, SharedDeliveries
from crm.store.postgres import PgStore
from crm.store.sqlite import Store

# What each backend must answer: the application's API plus its way of handing out deliveries.
BACKENDS = [(Store, (CallStore, LocalDeliveries)), (PgStore, (CallStore, SharedDeliveries))]


def protocol_members(protocol: type) -> dict[str, Any]:
    """The public members a Protocol declares, its own and those of the Protocols it extends."""
    members: dict[str, Any] = {}
    for base in reversed(protocol.__mro__):
        if base is Protocol or not getattr(base, "_is_protocol", False):
            continue
        members.update(
            {name: value for name, value in vars(base).items() if not name.startswith("_")}
        )
    return members


def parameters_of(function: Any) -> list[tuple[str, Any, Any]]:
    """(name, kind, default) of each parameter after self; annotations left out."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    return [(p.name, p.kind, p.default) for p in parameters]


def mismatches(cls: type, protocol: type) -> list[str]:
    problems = []
    for name, declared in protocol_members(protocol).items():
        found = inspect.getattr_static(cls, name, None)
        if found is None:
            problems.append(f"{cls.__name__}.{name} is missing")
        elif isinstance(declared, property):
            if not isinstance(found, property):
                problems.append(f"{cls.__name__}.{name} is not a property")
        elif not callable(found):
            problems.append(f"{cls.__name__}.{name} is not a method")
        elif inspect.iscoroutinefunction(declared) != inspect.iscoroutinefunction(found):
            problems.append(f"{cls.__name__}.{name}: async differs from {protocol.__name__}")
        elif parameters_of(declared) != parameters_of(found):
            problems.append(
                f"{cls.__name__}.{name}{inspect.signature(found)} does not take"
                f" {protocol.__name__}.{name}{inspect.signature(declared)}"
            )
    return problems


def test_call_store_declares_what_the_application_uses() -> None:
    # A guard on the helper itself: if it read no members, every backend would pass.
    members = protocol_members(CallStore)
    assert {
        "reader",
        "open_reader",
        "add_listener",
        "submit_record",
        "requeue_dead",
        "describe",
        "close",
        "claim_originates",
    } <= set(members)
    assert set(protocol_members(DeliveryStore)) < set(members)


@pytest.mark.parametrize(("cls", "protocols"), BACKENDS, ids=["sqlite", "postgresql"])
def test_each_backend_answers_every_member_of_its_protocols(
    cls: type, protocols: tuple[type, ...]
) -> None:
    problems = [problem for protocol in protocols for problem in mismatches(cls, protocol)]
    assert problems == []


def test_a_backend_dropping_or_changing_a_member_is_named() -> None:
    class Drifted(Store):
        requeue_dead = None  # dropped

        async def get_kv(self, name: str) -> str | None:  # a parameter renamed
            return None

        def now(self, *, precise: bool = False) -> float:  # a parameter added
            return 0.0

    problems = mismatches(Drifted, CallStore)
    assert len(problems) == 3, problems
    assert "Drifted.requeue_dead is missing" in problems
    assert any(p.startswith("Drifted.get_kv(self, name") for p in problems), problems
    assert any(p.startswith("Drifted.now(self, *, precise") for p in problems), problems
