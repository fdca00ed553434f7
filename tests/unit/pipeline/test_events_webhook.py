"""The events function: dedupe, both body shapes and stream statuses, the call record from
GET /v1/calls, retries per campaign policy, slot release and the final outcome (moto in-process)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pipeline_fakes import FROM, Aws, Clock, FakeCarrier, FakeContext, RecordingSink, server_error

from functions.events import app as events_app
from leadqual.accounting import (
    ENDED_BEFORE_QUALIFICATION,
    NO_DIAL_COMPLETED,
    TRANSFER_NOT_CONFIRMED,
    Accountant,
    AccountingConfig,
    EventResult,
)
from leadqual.campaign import CampaignCatalog
from leadqual.carrier import CallDetails
from leadqual.models import CallRecord, CallState, Lead, LeadStatus, Outcome, Score, Verdict
from leadqual.queue import LeadQueue, parse_message
from leadqual.signing import sign_webhook
from leadqual.store import DynamoStore
from leadqual.webhooks import parse_event

EVENTS = Path(__file__).resolve().parents[3] / "events"
SECRET = "sample-webhook-secret"
CALL_ID = "0197391a-6c48-7d2e-9b1f-3a5c7e9d2b4f"
SESSION = "HD_3f9a1c2b7d4e"


class Sleeps:
    """The accountant's sleep: records each wait and advances its own monotonic clock by it, so a
    grace period passes at once; `during` runs on each sleep (something arriving meanwhile)."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.now = 1000.0
        self.during: Callable[[int], None] | None = None

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.now += seconds
        if self.during is not None:
            self.during(len(self.calls))

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def accountant(
    store: DynamoStore,
    carrier: FakeCarrier,
    queue: LeadQueue,
    campaigns: CampaignCatalog,
    sink: RecordingSink,
    clock: Clock,
    sleeps: Sleeps,
) -> Accountant:
    return Accountant(
        store=store,
        calls=carrier,
        queue=queue,
        campaigns=campaigns,
        metrics=sink,
        config=AccountingConfig(outcome_grace_s=0),
        clock=clock,
        sleep=sleeps,
        monotonic=sleeps.monotonic,
    )


def in_call(
    store: DynamoStore, lead_id: str = "lead-0001", attempt: int = 1, state: CallState = CallState.STREAMING
) -> None:
    """Where a lead stands mid-call: claimed attempts, a slot held, a call record with its session."""
    store.put_lead(
        Lead(lead_id=lead_id, phone="+254712345678", name="Wanjiku", company="Savannah", opt_in=True)
    )
    for n in range(1, attempt + 1):
        store.begin_attempt(lead_id, n)
    assert store.acquire_slot(1, f"lq-{lead_id}-{attempt}", 900)
    store.put_call(
        CallRecord(
            lead_id=lead_id,
            attempt=attempt,
            client_request_id=f"lq-{lead_id}-{attempt}",
            session_id=SESSION,
            call_id=CALL_ID,
            state=state,
        )
    )
    store.put_session(SESSION, lead_id, attempt)


def cdr(status: str, duration: int = 0, cost: int | None = None) -> CallDetails:
    return CallDetails.model_validate(
        {
            "id": CALL_ID,
            "session_id": SESSION,
            "status": status,
            "duration_seconds": duration,
            "cost_minor": cost,
            "cost_currency": "KES",
            "answered_at": "2025-06-04T07:00:08Z" if duration else None,
            "ended_at": "2025-06-04T07:01:44Z",
        }
    )


def envelope(
    kind: str,
    status: str,
    *,
    event_id: str = "evt_1",
    duration: int = 0,
    label: str | None = "lq-lead-0001-1",
) -> Any:
    data: dict[str, Any] = {
        "call_id": CALL_ID,
        "session_id": SESSION,
        "direction": "outbound",
        "from": FROM,
        "to": "+254712345678",
        "status": status,
        "duration_seconds": duration,
    }
    if label:
        data["clientRequestId"] = label
    body = json.dumps(
        {"kind": kind, "event_id": event_id, "occurred_at": "2025-06-04T07:01:45Z", "data": data}
    )
    return parse_event(body.encode(), "application/json", {})


def switch(state: str, *, event_id: str = "evt_switch", **fields: str) -> Any:
    body = {"sessionId": SESSION, "callSessionState": state, "isActive": "0", **fields}
    return parse_event(json.dumps(body).encode(), "application/json", {"X-Sautikit-Event-Id": event_id})


def test_the_end_of_a_call_stores_the_carriers_billing_and_frees_the_slot(
    accountant: Accountant, store: DynamoStore, carrier: FakeCarrier, sink: RecordingSink, sleeps: Sleeps
) -> None:
    in_call(store)
    carrier.details[CALL_ID] = [cdr("answered", 90), cdr("answered", 95), cdr("completed", 96, 480)]
    carrier.balance_minor = 99_520

    result = accountant.handle(envelope("call.completed", "completed", duration=96))

    assert result is EventResult.FINALIZED
    assert carrier.get_calls == [CALL_ID] * 3, "GET /v1/calls/{id} retried until the record was final"
    assert len(sleeps.calls) == 2
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.state, call.duration_seconds, call.billed_seconds) == (CallState.COMPLETED, 96, 96)
    assert (call.cost_minor, call.cost_currency) == (480, "KES")
    assert call.ended_at == datetime(2025, 6, 4, 7, 1, 44, tzinfo=UTC)
    assert store.acquire_slot(1, "next-call", 60), "the pacing slot was released"
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert (profile.status, profile.outcome, profile.reason) == (
        LeadStatus.DONE,
        Outcome.COLD_CLOSED,
        ENDED_BEFORE_QUALIFICATION,
    )
    assert ("BilledSeconds", 96, "Seconds") in sink.emitted
    assert ("CostKES", 4.8, "None") in sink.emitted
    assert ("WalletBalanceMinor", 99_520, "None") in sink.emitted
    assert sink.total("LeadsCold") == 1


def test_the_bridges_outcome_is_kept(
    accountant: Accountant, store: DynamoStore, carrier: FakeCarrier, sink: RecordingSink
) -> None:
    in_call(store)
    store.set_outcome("lead-0001", Outcome.HOT_TRANSFERRED, reason="qualified")
    store.update_call("lead-0001", 1, outcome=Outcome.HOT_TRANSFERRED, transferred_to="+254711999000")
    store.update_call("lead-0001", 1, transfer_status="answered", transfer_seconds=40)  # DialCompleted
    carrier.details[CALL_ID] = [cdr("completed", 120, 600)]

    assert accountant.handle(envelope("call.completed", "completed")) is EventResult.FINALIZED

    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert (profile.status, profile.outcome, profile.reason) == (
        LeadStatus.DONE,
        Outcome.HOT_TRANSFERRED,
        "qualified",
    )
    assert sink.total("LeadsCold") == 0  # the bridge counts the outcomes it decides


def test_the_same_event_twice_and_the_same_end_in_another_shape_are_accounted_once(
    accountant: Accountant, store: DynamoStore, carrier: FakeCarrier, sink: RecordingSink
) -> None:
    in_call(store)
    carrier.details[CALL_ID] = [cdr("completed", 96, 480)]
    event = envelope("call.completed", "completed")

    assert accountant.handle(event) is EventResult.FINALIZED
    assert accountant.handle(event) is EventResult.DUPLICATE
    late = switch(
        "Completed", event_id="evt_switch_completed", durationInSeconds="96", clientRequestId="lq-lead-0001-1"
    )
    assert accountant.handle(late) is EventResult.ALREADY_FINAL

    assert len(carrier.get_calls) == 1
    assert sink.total("BilledSeconds") == 96
    assert sink.total("LeadsCold") == 1


@pytest.mark.parametrize(
    ("status", "after", "reason"),
    [
        ("no_answer", timedelta(minutes=120), "call ended no answer"),
        ("busy", timedelta(minutes=30), "call ended busy"),
    ],
)
def test_no_answer_and_busy_schedule_the_next_attempt_per_policy(
    accountant: Accountant,
    store: DynamoStore,
    carrier: FakeCarrier,
    clock: Clock,
    aws: Aws,
    status: str,
    after: timedelta,
    reason: str,
) -> None:
    in_call(store, state=CallState.RINGING)
    carrier.details[CALL_ID] = [cdr(status)]

    assert accountant.handle(envelope("call.failed", status)) is EventResult.FINALIZED

    [sent] = aws.sqs.take()
    message = parse_message(sent["MessageBody"])
    assert (message.lead.lead_id, message.attempt) == ("lead-0001", 2)
    assert message.not_before == clock() + after
    assert sent["DelaySeconds"] == 900
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert (profile.status, profile.outcome, profile.reason) == (LeadStatus.RETRY_SCHEDULED, None, reason)
    assert profile.next_attempt_at == clock() + after
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.state, call.billed_seconds, call.cost_minor) == (CallState(status), 0, 0)


def test_the_last_attempt_sets_the_final_outcome(
    accountant: Accountant, store: DynamoStore, carrier: FakeCarrier, aws: Aws
) -> None:
    in_call(store, attempt=3, state=CallState.RINGING)
    carrier.details[CALL_ID] = [cdr("no_answer")]

    accountant.handle(envelope("call.failed", "no_answer", label="lq-lead-0001-3"))

    assert aws.sqs.take() == []
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert (profile.status, profile.outcome) == (LeadStatus.DONE, Outcome.NO_ANSWER)


def test_a_callback_request_schedules_a_call_tomorrow(
    accountant: Accountant, store: DynamoStore, carrier: FakeCarrier, aws: Aws, clock: Clock
) -> None:
    in_call(store)
    store.update_call("lead-0001", 1, outcome=Outcome.CALLBACK_REQUESTED, outcome_reason="callback_requested")
    store.set_outcome("lead-0001", Outcome.CALLBACK_REQUESTED, reason="callback_requested")
    carrier.details[CALL_ID] = [cdr("completed", 20, 100)]

    accountant.handle(envelope("call.completed", "completed"))

    [sent] = aws.sqs.take()
    assert parse_message(sent["MessageBody"]).not_before == clock() + timedelta(days=1)
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert profile.status is LeadStatus.RETRY_SCHEDULED
    assert profile.reason == "the lead asked to be called back"


def test_a_failed_transfer_keeps_its_reason_through_the_callback_it_schedules(
    accountant: Accountant, store: DynamoStore, carrier: FakeCarrier, aws: Aws
) -> None:
    in_call(store)
    why = "transfer failed: the rep was busy"
    store.update_call("lead-0001", 1, outcome=Outcome.CALLBACK_REQUESTED, outcome_reason=why)
    store.set_outcome("lead-0001", Outcome.CALLBACK_REQUESTED, reason=why)
    carrier.details[CALL_ID] = [cdr("completed", 40, 200)]

    accountant.handle(envelope("call.completed", "completed"))

    [sent] = aws.sqs.take()
    assert parse_message(sent["MessageBody"]).reason == why
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert (profile.status, profile.outcome, profile.reason) == (
        LeadStatus.RETRY_SCHEDULED,
        Outcome.CALLBACK_REQUESTED,
        why,
    )


def test_progress_events_and_stream_statuses_update_the_call(
    accountant: Accountant, store: DynamoStore
) -> None:
    in_call(store, state=CallState.RINGING)
    assert accountant.handle(envelope("call.answered", "answered", event_id="evt_a")) is EventResult.RECORDED
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert call.state is CallState.ANSWERED

    started = parse_event(
        b"event=stream-started&sessionId=HD_3f9a1c2b7d4e&streamName=lq-lead-0001-1",
        "application/x-www-form-urlencoded",
        {"X-Sautikit-Event-Id": "evt_ss"},
    )
    assert accountant.handle(started) is EventResult.RECORDED
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert call.state is CallState.STREAMING
    # An "answered" that arrives late never moves a streaming call back.
    assert accountant.handle(envelope("call.answered", "answered", event_id="evt_a2")) is EventResult.RECORDED
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert call.state is CallState.STREAMING


def test_events_for_calls_we_do_not_know_are_acknowledged(accountant: Accountant, store: DynamoStore) -> None:
    assert accountant.handle(envelope("call.completed", "completed", label=None)) is EventResult.IGNORED
    assert (
        accountant.handle(envelope("call.completed", "completed", label="lq-ghost-1", event_id="e2"))
        is EventResult.IGNORED
    )


def test_a_carrier_outage_fails_the_event_so_its_redelivery_is_handled(
    accountant: Accountant, store: DynamoStore, carrier: FakeCarrier
) -> None:
    in_call(store)
    carrier.fail_next.extend([server_error()] * 6)
    event = envelope("call.completed", "completed")
    with pytest.raises(Exception, match="try again"):
        accountant.handle(event)
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert profile.outcome is None

    carrier.details[CALL_ID] = [cdr("completed", 96, 480)]
    assert accountant.handle(event) is EventResult.FINALIZED  # the same event id, redelivered


# -- dial_after_stream: a transfer counts once the carrier confirms the rep leg ------------------

REP = "+254711999000"
HOT = Score(verdict=Verdict.HOT, points=100, max_points=100, reasons=["makes buying decisions"])


def handed_over(store: DynamoStore, *, attempt: int = 1, **call: Any) -> None:
    """What the bridge leaves after a hot hand-off by closing the stream: outcome and rep on the
    lead and the call record (plus `call`, e.g. a recorded DialCompleted)."""
    in_call(store, attempt=attempt)
    store.set_outcome("lead-0001", Outcome.HOT_TRANSFERRED, score=HOT, reason="qualified")
    store.update_call("lead-0001", attempt, outcome=Outcome.HOT_TRANSFERRED, transferred_to=REP, **call)


def test_a_dial_transfer_without_dialcompleted_becomes_a_callback_after_a_bounded_grace(
    accountant: Accountant,
    store: DynamoStore,
    carrier: FakeCarrier,
    sink: RecordingSink,
    sleeps: Sleeps,
    aws: Aws,
    clock: Clock,
) -> None:
    handed_over(store)  # verbs after <Stream> never ran: no <Dial>, so no DialCompleted ever comes
    carrier.details[CALL_ID] = [cdr("completed", 31, 155)]

    assert accountant.handle(envelope("call.completed", "completed")) is EventResult.FINALIZED

    reason = f"{TRANSFER_NOT_CONFIRMED} ({NO_DIAL_COMPLETED})"
    assert "supervise_barge" in reason
    waited = sum(sleeps.calls)
    assert AccountingConfig().transfer_grace_s <= waited < AccountingConfig().transfer_grace_s + 0.5
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert (profile.outcome, profile.status, profile.reason) == (
        Outcome.CALLBACK_REQUESTED,
        LeadStatus.RETRY_SCHEDULED,
        reason,
    )
    assert profile.score == HOT, "the qualification stands; only the transfer did not happen"
    assert profile.next_attempt_at == clock() + timedelta(days=1)  # retries.callback_requested
    [sent] = aws.sqs.take()
    message = parse_message(sent["MessageBody"])
    assert (message.attempt, message.not_before, message.reason) == (2, clock() + timedelta(days=1), reason)
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.outcome, call.transferred_to, call.transfer_status) == (
        Outcome.CALLBACK_REQUESTED,
        REP,
        None,
    )
    assert (call.state, call.billed_seconds, call.cost_minor) == (CallState.COMPLETED, 31, 155)
    assert sink.total("TransfersUnconfirmed") == 1
    assert sink.total("RetriesScheduled") == 1


@pytest.mark.parametrize(
    ("status", "seconds"),
    [
        ("no-answer", None),
        ("no_answer", 0),
        ("busy", None),
        ("failed", None),
        ("canceled", None),
        ("answered", 0),
    ],
)
def test_a_dial_the_rep_never_connected_becomes_a_callback_naming_the_dial_status(
    accountant: Accountant,
    store: DynamoStore,
    carrier: FakeCarrier,
    sink: RecordingSink,
    sleeps: Sleeps,
    status: str,
    seconds: int | None,
) -> None:
    handed_over(store, transfer_status=status, transfer_seconds=seconds)
    carrier.details[CALL_ID] = [cdr("completed", 52, 260)]

    accountant.handle(envelope("call.completed", "completed"))

    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert profile.outcome is Outcome.CALLBACK_REQUESTED
    assert profile.reason == f"{TRANSFER_NOT_CONFIRMED} (dialStatus={status})"
    assert profile.status is LeadStatus.RETRY_SCHEDULED
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.outcome, call.outcome_reason) == (Outcome.CALLBACK_REQUESTED, profile.reason)
    assert sleeps.calls == [], "a reported result is final: no waiting"
    assert sink.total("TransfersUnconfirmed") == 1


@pytest.mark.parametrize(("status", "seconds"), [("answered", 40), ("completed", None), ("Answered", 1)])
def test_a_dial_the_carrier_confirms_stays_hot_transferred(
    accountant: Accountant,
    store: DynamoStore,
    carrier: FakeCarrier,
    sink: RecordingSink,
    aws: Aws,
    status: str,
    seconds: int | None,
) -> None:
    handed_over(store, transfer_status=status, transfer_seconds=seconds)
    carrier.details[CALL_ID] = [cdr("completed", 120, 800)]

    accountant.handle(envelope("call.completed", "completed"))

    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert (profile.outcome, profile.status, profile.reason) == (
        Outcome.HOT_TRANSFERRED,
        LeadStatus.DONE,
        "qualified",
    )
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.outcome, call.transferred_to) == (Outcome.HOT_TRANSFERRED, REP)
    assert aws.sqs.take() == []
    assert sink.total("TransfersUnconfirmed") == 0


def test_a_dialcompleted_arriving_during_the_grace_confirms_the_transfer(
    accountant: Accountant, store: DynamoStore, carrier: FakeCarrier, sink: RecordingSink, sleeps: Sleeps
) -> None:
    """The switch's DialCompleted races the end-of-call event: here it is forwarded to the events
    URL (the switch body) and handled while the end is being accounted."""
    handed_over(store)
    carrier.details[CALL_ID] = [cdr("completed", 120, 800)]
    dial_done = switch(
        "DialCompleted",
        event_id="evt_dial",
        clientRequestId="lq-lead-0001-1",
        dialStatus="answered",
        dialDestinationNumber=REP,
        dialDurationInSeconds="64",
    )

    def arrives(n: int) -> None:
        if n == 3:
            assert accountant.handle(dial_done) is EventResult.RECORDED

    sleeps.during = arrives
    accountant.handle(envelope("call.completed", "completed"))

    assert len(sleeps.calls) == 3
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert profile.outcome is Outcome.HOT_TRANSFERRED
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.transfer_status, call.transfer_seconds) == ("answered", 64)
    assert sink.total("TransfersUnconfirmed") == 0


def test_a_forwarded_dialcompleted_never_replaces_a_connected_result(
    accountant: Accountant, store: DynamoStore
) -> None:
    handed_over(store, transfer_status="answered", transfer_seconds=64)
    late = switch(
        "DialCompleted", event_id="evt_dial2", clientRequestId="lq-lead-0001-1", dial_status="failed"
    )
    assert accountant.handle(late) is EventResult.RECORDED
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.transfer_status, call.transfer_seconds) == ("answered", 64)


def test_an_unconfirmed_transfer_is_accounted_once_under_duplicate_events(
    accountant: Accountant, store: DynamoStore, carrier: FakeCarrier, sink: RecordingSink, aws: Aws
) -> None:
    handed_over(store, transfer_status="no-answer")
    carrier.details[CALL_ID] = [cdr("completed", 52, 260)]
    event = envelope("call.completed", "completed")

    assert accountant.handle(event) is EventResult.FINALIZED
    assert accountant.handle(event) is EventResult.DUPLICATE
    late = switch(
        "Completed", event_id="evt_switch_completed", durationInSeconds="52", clientRequestId="lq-lead-0001-1"
    )
    assert accountant.handle(late) is EventResult.ALREADY_FINAL

    assert len(aws.sqs.take()) == 1
    assert sink.total("TransfersUnconfirmed") == 1
    assert sink.total("RetriesScheduled") == 1
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert (profile.outcome, profile.status) == (Outcome.CALLBACK_REQUESTED, LeadStatus.RETRY_SCHEDULED)


def test_an_unconfirmed_transfer_on_the_last_attempt_ends_as_callback_requested(
    accountant: Accountant, store: DynamoStore, carrier: FakeCarrier, aws: Aws
) -> None:
    handed_over(store, attempt=3, transfer_status="busy")
    carrier.details[CALL_ID] = [cdr("completed", 52, 260)]

    accountant.handle(envelope("call.completed", "completed", label="lq-lead-0001-3"))

    assert aws.sqs.take() == []
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert (profile.outcome, profile.status) == (Outcome.CALLBACK_REQUESTED, LeadStatus.DONE)
    assert profile.reason == f"{TRANSFER_NOT_CONFIRMED} (dialStatus=busy)"


def test_a_supervise_barge_transfer_is_not_checked_for_a_dial(
    accountant: Accountant, store: DynamoStore, carrier: FakeCarrier, sink: RecordingSink, sleeps: Sleeps
) -> None:
    store.put_lead(
        Lead(
            lead_id="lead-0001",
            phone="+254712345678",
            name="Wanjiku",
            company="Savannah",
            opt_in=True,
            campaign="barge",
        )
    )
    handed_over(store)  # put_lead inside is a no-op: the lead above (campaign barge) stays
    carrier.details[CALL_ID] = [cdr("completed", 120, 800)]

    accountant.handle(envelope("call.completed", "completed"))

    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert (profile.lead.campaign, profile.outcome) == ("barge", Outcome.HOT_TRANSFERRED)
    assert sleeps.calls == []
    assert sink.total("TransfersUnconfirmed") == 0


# -- the Lambda handler -------------------------------------------------------------------------


def sample(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


def stamp(event: dict[str, Any]) -> int:
    return int(event["headers"]["x-sautikit-signature"].split(",")[0].removeprefix("t="))


def deps(accountant: Accountant, sink: RecordingSink, now: float) -> events_app.Deps:
    return events_app.Deps(accountant=accountant, webhook_secret=SECRET, metrics=sink, now=lambda: now)


@pytest.mark.parametrize(
    ("name", "result"),
    [
        ("events_envelope_completed", "finalized"),
        ("events_switch_body", "recorded"),
        ("stream_status", "recorded"),
    ],
)
def test_the_handler_accepts_every_sample_shape(
    accountant: Accountant,
    store: DynamoStore,
    carrier: FakeCarrier,
    sink: RecordingSink,
    name: str,
    result: str,
) -> None:
    in_call(store)
    carrier.details[CALL_ID] = [cdr("completed", 96, 480)]
    event = sample(name)
    response = events_app.handle(event, FakeContext(), deps=deps(accountant, sink, stamp(event)))
    assert response["statusCode"] == 200
    assert json.loads(response["body"]) == {"result": result}


@pytest.mark.parametrize("how", ["forged", "stale", "missing"])
def test_unsigned_events_get_401_and_change_nothing(
    accountant: Accountant, store: DynamoStore, sink: RecordingSink, aws: Aws, carrier: FakeCarrier, how: str
) -> None:
    in_call(store)
    before = aws.dynamodb.scan(TableName=aws.resources.table_name)["Items"]
    event = sample("events_envelope_completed")
    t = stamp(event)
    if how == "forged":
        event["headers"]["x-sautikit-signature"] = sign_webhook("not-the-secret", event["body"].encode(), t)
    elif how == "stale":
        t += 301
    else:
        del event["headers"]["x-sautikit-signature"]

    response = events_app.handle(event, FakeContext(), deps=deps(accountant, sink, t))

    assert response["statusCode"] == 401
    assert aws.dynamodb.scan(TableName=aws.resources.table_name)["Items"] == before
    assert carrier.get_calls == []
    assert sink.total("WebhookRejected") == 1
