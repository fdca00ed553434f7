"""The calling pipeline against the carrier's other documented behaviours (SAUTIKIT.md §1–§3): a
201 without `call_id`, voice callbacks as JSON, events in only one of their two shapes. Each test
switches the simulator into a variant for one call, runs it end to end through the dialer, voice
and events functions, and expects what the default carrier gives: one stream, a cold close for a
lead who says nothing, the carrier's billing on the call record, accounted once."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pipeline_rig import Rig, finished, lead, unique, wait_for

from leadqual.accounting import ENDED_BEFORE_QUALIFICATION
from leadqual.models import CallRecord, CallState, LeadStatus, Outcome
from leadqual.sautikit import SautikitClient

pytestmark = pytest.mark.integration

PHONE = "+254712000101"  # answers after one ring, says nothing; calls are told apart by their label


@pytest.fixture
def carrier(pipeline: Rig) -> Iterator[Callable[..., None]]:
    """`carrier(**options)` switches the simulator's behaviour (it reads its config as calls run);
    the default comes back once this test's deliveries have landed."""
    sim = pipeline.sim.sim
    assert sim is not None
    default = sim.config

    def switch(**options: Any) -> None:
        sim.config = dataclasses.replace(default, **options)

    yield switch
    pipeline.sim.drain()
    sim.config = default


@pytest.fixture
def carrier_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids the events function asked `GET /v1/calls/{id}` for (it is the only caller here)."""
    asked: list[str] = []
    original = SautikitClient.get_call

    def get_call(self: SautikitClient, call_or_session_id: str) -> Any:
        asked.append(call_or_session_id)
        return original(self, call_or_session_id)

    monkeypatch.setattr(SautikitClient, "get_call", get_call)
    return asked


def call_through(rig: Rig, prefix: str) -> tuple[str, dict[str, Any]]:
    """One lead from the queue to its accounted end; (lead id, the simulator's view of its call)."""
    lead_id = unique(prefix)
    rig.send(lead(lead_id, PHONE))
    assert rig.poll() == 1
    assert rig.failures() == []
    wait_for(lambda: finished(rig, lead_id))
    rig.sim.drain()
    [placed] = [c for c in rig.sim.calls() if c["client_request_id"] == f"lq-{lead_id}-1"]
    return lead_id, placed


def assert_cold_closed_and_billed(rig: Rig, lead_id: str, placed: dict[str, Any]) -> CallRecord:
    carrier = placed["call"]
    session = carrier["session_id"]
    assert carrier["status"] == "completed"
    call = rig.store.get_call(lead_id, 1)
    assert call is not None
    assert call.state is CallState.COMPLETED
    assert call.session_id == session
    assert call.duration_seconds == call.billed_seconds == carrier["duration_seconds"]
    assert carrier["duration_seconds"] > 0, "the lead was on the line for a while"
    assert (call.cost_minor, call.cost_currency) == (carrier["cost_minor"], "KES")
    profile = rig.store.get_lead(lead_id)
    assert profile is not None
    assert (profile.status, profile.outcome, profile.reason) == (
        LeadStatus.DONE,
        Outcome.COLD_CLOSED,
        ENDED_BEFORE_QUALIFICATION,
    )
    assert rig.sink.total("BilledSeconds") == call.billed_seconds, "the end was accounted once"
    assert rig.store.acquire_slot(5, "probe", 30), "the pacing slot came back"
    rig.store.release_slot("probe")
    assert len(placed["streams"]) == 1
    assert rig.sim.violations(session) == []
    assert rig.sim.sim is not None
    assert rig.sim.sim.errors() == []
    return call


def test_a_dial_answered_without_call_id_is_followed_by_its_session_to_a_billed_outcome(
    pipeline: Rig, carrier: Callable[..., None]
) -> None:
    rig = pipeline
    carrier(omit_call_id=True)
    created: list[Any] = []
    rig.dialer.fault_after_dial = created.append  # only looks at what the carrier answered

    lead_id, placed = call_through(rig, "nocallid")

    session = placed["call"]["session_id"]
    [answer] = created
    assert (answer.session_id, answer.call_id) == (session, None), "the 201 named the session only"
    assert rig.store.get_session(session) == (lead_id, 1)
    call = assert_cold_closed_and_billed(rig, lead_id, placed)
    assert call.call_id == placed["call"]["id"], "the events named the call later"


def test_with_only_a_session_id_anywhere_the_carrier_record_is_fetched_by_it(
    pipeline: Rig, carrier: Callable[..., None], carrier_reads: list[str]
) -> None:
    # No call id in the 201 and no envelopes: switch bodies carry `sessionId` only.
    rig = pipeline
    carrier(omit_call_id=True, event_shapes="switch")

    lead_id, placed = call_through(rig, "bysession")

    session = placed["call"]["session_id"]
    assert carrier_reads, "the billing came from the carrier's record"
    assert set(carrier_reads) == {session}
    call = assert_cold_closed_and_billed(rig, lead_id, placed)
    assert call.call_id == placed["call"]["id"], "learnt from the record fetched by session id"


def test_json_voice_callbacks_get_the_stream_once_and_empty_answers_after(
    pipeline: Rig, carrier: Callable[..., None]
) -> None:
    rig = pipeline
    carrier(callback_encoding="json")

    lead_id, placed = call_through(rig, "json")

    session = placed["call"]["session_id"]
    replies = [(json.loads(request), status, body) for request, status, body in rig.voice_log.bodies(session)]
    assert all(status == 200 for _, status, _ in replies)
    firsts = [body for request, _, body in replies if request["callSessionState"] == "Answered"]
    assert len(firsts) == 1
    assert "<Stream " in firsts[0]
    lifecycle = [body for request, _, body in replies if request["callSessionState"] != "Answered"]
    assert lifecycle, "the simulator re-invoked the webhook on lifecycle edges"
    assert all(body == "<Response/>" for body in lifecycle)
    [bridged] = [s for s in rig.bridge.sessions if s.session_id == session]
    assert bridged.token_ok
    assert bridged.metadata is not None
    assert bridged.metadata["headers"] == {"lead_id": lead_id, "attempt": 1, "campaign": "example"}
    # Stream statuses come as JSON too, to the events function.
    statuses = [
        (json.loads(r), status) for r, status, _ in rig.events_log.bodies(session) if "streamSid" in r
    ]
    assert statuses
    assert all(status == 200 for _, status in statuses)
    call = assert_cold_closed_and_billed(rig, lead_id, placed)
    assert call.call_id == placed["call"]["id"]


@pytest.mark.parametrize("shape", ["envelope", "switch"])
def test_events_in_one_shape_only_account_for_the_call_once(
    pipeline: Rig, carrier: Callable[..., None], shape: str
) -> None:
    rig = pipeline
    carrier(event_shapes=shape)

    lead_id, placed = call_through(rig, shape)

    session = placed["call"]["session_id"]
    # Events are JSON; stream statuses (form-encoded here) go to the same function.
    events = [
        (json.loads(request), status, json.loads(body)["result"])
        for request, status, body in rig.events_log.bodies(session)
        if request.startswith("{")
    ]
    assert all(status == 200 for _, status, _ in events)
    bodies = [body for body, _, _ in events]
    if shape == "envelope":
        assert all("data" in body and "callSessionState" not in body for body in bodies)
        assert "call.completed" in [body["kind"] for body in bodies]
    else:
        assert all("data" not in body and "callSessionState" in body for body in bodies)
        assert "Completed" in [body["callSessionState"] for body in bodies]
    assert [result for _, _, result in events].count("finalized") == 1
    call = assert_cold_closed_and_billed(rig, lead_id, placed)
    assert call.call_id == placed["call"]["id"]
