"""An SQS redelivery of a lead whose dial the carrier accepted but whose dialer died before recording
the session, with the Powertools record gone as well (as when Lambda kills the dialer between the
201 and saving it): what stands between the lead and a second call is the carrier (SAUTIKIT.md
§1: the Idempotency-Key replays only while the leg lives) and what our own functions recorded.

(a) the first call still rings → the carrier replays the key: no second call;
(b) the call ended and was recorded → our call record is final: the dial is not repeated;
(c) the call ended and nothing of it reached us yet → the key is free again; only the reused
    client_request_id collapses the request onto the first call, which the simulator always does
    and the real platform only "can" [ours, local/sautikit/README.md].
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from pipeline_rig import API_KEY, NUMBER_ID, Rig, finished, lead, unique, wait_for

from leadqual.models import CallState, LeadStatus
from leadqual.sautikit import SautikitClient
from local.sautikit import Directory
from local.sautikit.directory import Person

pytestmark = pytest.mark.integration

ANSWERS = "+254712000101"  # picks up after one ring, says nothing
RINGS_LONG = "+254712000121"  # added by `long_ringer`: rings for 6 s
AWAY = "+254712000122"  # in no list: rings out (no answer) after 3 rings of 0.1 s
UNREACHABLE = "http://127.0.0.1:9/down"  # connection refused: the platform's deliveries fail


@pytest.fixture
def dials(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(client_request_id, Idempotency-Key) of every POST /v1/calls the dialer sends."""
    sent: list[tuple[str, str]] = []
    original = SautikitClient.create_call

    def create_call(self: SautikitClient, **kwargs: Any) -> Any:
        sent.append((kwargs["client_request_id"], kwargs["idempotency_key"]))
        return original(self, **kwargs)

    monkeypatch.setattr(SautikitClient, "create_call", create_call)
    return sent


@pytest.fixture
def long_ringer(pipeline: Rig) -> Iterator[str]:
    sim = pipeline.sim.sim
    assert sim is not None
    default = sim.directory
    sim.directory = Directory(numbers={**default.numbers, RINGS_LONG: Person(rings=60)}, reps=default.reps)
    yield RINGS_LONG
    sim.directory = default


def crash_after_the_first_dial(rig: Rig) -> None:
    crashed: list[object] = []

    def crash_once(placed: object) -> None:
        if not crashed:
            crashed.append(placed)
            raise RuntimeError("dialer died after POST /v1/calls returned")

    rig.dialer.fault_after_dial = crash_once


def forget_stored_dials(rig: Rig) -> None:
    """Delete the Powertools records: the dialer died before saving the carrier's answer."""
    table = rig.resources.idempotency_table_name
    for page in rig.dynamodb.get_paginator("scan").paginate(TableName=table):
        for item in page["Items"]:
            rig.dynamodb.delete_item(TableName=table, Key={"id": item["id"]})


@contextmanager
def nothing_reaches_us(rig: Rig) -> Iterator[None]:
    """Voice callbacks and events fail while inside (each delivery reads the URL when it starts)."""
    sim = rig.sim.sim
    assert sim is not None
    sim.set_routing(NUMBER_ID, routing_url=UNREACHABLE, events_url=UNREACHABLE)
    try:
        yield
    finally:
        sim.set_routing(NUMBER_ID, routing_url=f"{rig.api.url}/voice", events_url=f"{rig.api.url}/events")


def labelled(rig: Rig, label: str) -> list[dict[str, Any]]:
    return [c for c in rig.sim.calls() if c["client_request_id"] == label]


def crash_then_redeliver(rig: Rig, lead_id: str, phone: str, before_redelivery: Callable[[], None]) -> str:
    """Dial with a crash after the carrier accepted; `before_redelivery`; forget the Powertools
    record and redeliver. Returns the first call's session id."""
    crash_after_the_first_dial(rig)
    rig.send(lead(lead_id, phone))
    rig.poll(redeliver_failures=True)
    assert len(rig.failures()) == 1, "the crashed record was reported failed, so SQS redelivers it"
    [first] = labelled(rig, f"lq-{lead_id}-1")
    before_redelivery()
    forget_stored_dials(rig)
    assert rig.poll() == 1  # the redelivery
    assert len(rig.failures()) == 1, "the redelivery succeeded"
    return str(first["call"]["session_id"])


def test_a_redelivery_while_the_first_call_still_rings_gets_the_carriers_replay(
    pipeline: Rig, long_ringer: str, dials: list[tuple[str, str]]
) -> None:
    rig, lead_id = pipeline, unique("ringing")
    label = f"lq-{lead_id}-1"
    with nothing_reaches_us(rig):  # no call.started: our records cannot know the session
        session = crash_then_redeliver(rig, lead_id, long_ringer, lambda: None)
        assert rig.sim.call(session)["call"]["status"] == "ringing", "redelivered while the leg lived"
    assert rig.events_log.bodies(session) == rig.voice_log.bodies(session) == []

    assert dials == [(label, label), (label, label)]  # the dial was repeated with the same key ...
    assert len(labelled(rig, label)) == 1  # ... and replayed: one call
    call = rig.store.get_call(lead_id, 1)
    assert call is not None
    assert call.session_id == session
    assert rig.sink.total("CallsPlaced") == 1
    # Ending it accounts for the attempt and gives the calling slot back.
    hangup = httpx.post(
        f"{rig.sim.url}/v1/calls/{session}/hangup",
        headers={"Authorization": f"Bearer {API_KEY}"},
        trust_env=False,
    )
    assert hangup.status_code == 200
    ended = wait_for(lambda: (c := rig.store.get_call(lead_id, 1)) and c.billed_seconds is not None and c)
    assert ended.state.is_final
    assert (ended.billed_seconds, ended.cost_minor) == (0, 0)


def test_a_redelivery_after_the_call_ended_and_was_recorded_does_not_dial(
    pipeline: Rig, dials: list[tuple[str, str]]
) -> None:
    rig, lead_id = pipeline, unique("recorded")
    label = f"lq-{lead_id}-1"
    session = crash_then_redeliver(rig, lead_id, ANSWERS, lambda: wait_for(lambda: finished(rig, lead_id)))

    assert dials == [(label, label)], "our final call record stopped the redelivery before the carrier"
    assert len(labelled(rig, label)) == 1
    call = rig.store.get_call(lead_id, 1)
    assert call is not None
    assert (call.session_id, call.state) == (session, CallState.COMPLETED)
    profile = rig.store.get_lead(lead_id)
    assert profile is not None
    assert profile.status is LeadStatus.DONE
    assert rig.sink.total("CallsPlaced") == 1


def test_a_redelivery_after_an_unrecorded_end_is_collapsed_only_by_the_reused_label(
    pipeline: Rig, dials: list[tuple[str, str]]
) -> None:
    rig, lead_id = pipeline, unique("unrecorded")
    label = f"lq-{lead_id}-1"

    def first_call_ended() -> None:
        [first] = labelled(rig, label)
        wait_for(lambda: rig.sim.call(first["call"]["session_id"])["call"]["status"] == "no_answer")

    try:
        with nothing_reaches_us(rig):  # neither the no-answer callback nor call.failed arrives in time
            session = crash_then_redeliver(rig, lead_id, AWAY, first_call_ended)
            rig.sim.drain()
        assert rig.events_log.bodies(session) == rig.voice_log.bodies(session) == []

        # The key was free again (its leg had ended), so the carrier saw a new request; it carried
        # the same client_request_id, which the simulator collapses onto the first call.
        assert dials == [(label, label), (label, label)]
        assert len(labelled(rig, label)) == 1
        call = rig.store.get_call(lead_id, 1)
        assert call is not None
        assert call.session_id == session
        assert call.state is CallState.RINGING  # the end is still on its way (here: lost)
        assert rig.sink.total("CallsPlaced") == 1
    finally:
        rig.store.release_slot(label)  # the lost end would have given it back
