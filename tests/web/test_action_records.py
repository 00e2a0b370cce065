"""Responders' actions share the incidents topic with the incidents: every reader tells them apart."""

from __future__ import annotations

from datetime import UTC, datetime

from contract.records import RECORDS, IncidentAction, dumps, is_action, json_schemas
from streams.compose import Components
from streams.runtime import Message, Runtime
from tests.streams.test_runtime import ListOutbox, components, fresh  # noqa: F401 - the fixture is used by name
from tests.web.conftest import make_incident

ACTION = IncidentAction(
    action_id="a1", action="acknowledge", incident_id="inc-1", entity="northwind", who="alice", at=datetime.now(UTC)
)


def test_an_action_is_told_from_an_incident_and_has_a_schema() -> None:
    assert is_action(dumps(ACTION)) and not is_action(dumps(make_incident())) and not is_action(b"\xff")
    assert RECORDS["incident_action"] is IncidentAction
    assert json_schemas()["incident_action"]["properties"]["kind"]["const"] == "action"


async def test_the_worker_skips_actions_and_still_dead_letters_garbage(components: Components) -> None:  # noqa: F811
    out = ListOutbox()
    rt = Runtime(fresh(components), out)  # memory components: no dispatcher, so only a skip gets through
    await rt.on_incident(Message(value=dumps(ACTION), topic="repmon.incidents", offset=1))
    assert out.values("deadletter") == []
    await rt.on_incident(Message(value=b'{"kind": "nonsense"}', topic="repmon.incidents", offset=2))
    assert len(out.values("deadletter")) == 1
