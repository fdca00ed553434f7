"""The dialer against moto (in-process) and a scripted carrier: compliance, deferral across a calling
window boundary, pacing, idempotent dials under redelivery and crashes, permanent vs transient failures."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from pipeline_fakes import (
    FROM,
    NAIROBI,
    Aws,
    Clock,
    FakeCarrier,
    FakeContext,
    MemoryDialStore,
    RecordingSink,
    once,
    payment_required,
    server_error,
    sqs_event,
)

from leadqual.carrier import CreatedCall
from leadqual.dialing import (
    BatchRunner,
    CampaignCatalog,
    Dialer,
    DialerConfig,
    DialStatus,
    IdempotentCarrier,
)
from leadqual.errors import SautikitError
from leadqual.models import CallState, Lead, LeadStatus, Outcome
from leadqual.queue import LeadMessage, LeadQueue, parse_message
from leadqual.store import DynamoStore

VOICE_URL = "https://api.example.com/voice"


def lead_body(lead_id: str = "lead-1", phone: str = "+254712345678", **extra: Any) -> str:
    data = {"lead_id": lead_id, "phone": phone, "name": "Wanjiku Kamau", "company": "Acme", "opt_in": True}
    data.update(extra)
    return json.dumps(data)


class Rig:
    """A dialer over moto with the Powertools idempotency layer in front of the scripted carrier."""

    def __init__(
        self,
        aws: Aws,
        store: DynamoStore,
        queue: LeadQueue,
        carrier: FakeCarrier,
        campaigns: CampaignCatalog,
        clock: Clock,
        sink: RecordingSink,
        *,
        limit: int = 10,
        idempotent: bool = True,
    ) -> None:
        self.aws, self.store, self.carrier, self.clock, self.sink = aws, store, carrier, clock, sink
        persistence = DynamoDBPersistenceLayer(
            table_name=aws.resources.idempotency_table_name, boto3_client=aws.dynamodb
        )
        self.dialer = Dialer(
            store=store,
            carrier=IdempotentCarrier(carrier, persistence) if idempotent else carrier,
            queue=queue,
            campaigns=campaigns,
            config=DialerConfig(from_number=FROM, voice_webhook_url=VOICE_URL, max_concurrent_calls=limit),
            metrics=sink,
            clock=clock,
            rand=lambda: 0.5,
        )

    def queued(self) -> list[tuple[LeadMessage, int]]:
        """(message, DelaySeconds) for everything sent back to the queue since the last look."""
        return [(parse_message(m["MessageBody"]), int(m["DelaySeconds"])) for m in self.aws.sqs.take()]


@pytest.fixture
def rig(
    aws: Aws,
    store: DynamoStore,
    queue: LeadQueue,
    carrier: FakeCarrier,
    campaigns: CampaignCatalog,
    clock: Clock,
    sink: RecordingSink,
) -> Rig:
    return Rig(aws, store, queue, carrier, campaigns, clock, sink)


def test_a_lead_in_its_window_is_dialled_once_with_the_attempt_label(rig: Rig) -> None:
    outcome = rig.dialer.handle_body(lead_body())

    assert outcome.status is DialStatus.DIALED
    [request] = rig.carrier.requests
    assert (request.from_, request.to, request.client_request_id) == (FROM, "+254712345678", "lq-lead-1-1")
    assert request.voice_callback_url == VOICE_URL
    call = rig.store.get_call("lead-1", 1)
    assert call is not None
    assert call.state is CallState.RINGING
    assert call.session_id == outcome.session_id == rig.carrier.placed["lq-lead-1-1"].session_id
    assert call.client_request_id == "lq-lead-1-1"
    assert rig.store.get_session(call.session_id) == ("lead-1", 1)
    profile = rig.store.get_lead("lead-1")
    assert profile is not None
    assert (profile.status, profile.attempts) == (LeadStatus.DIALING, 1)
    assert rig.sink.total("CallsPlaced") == 1


def test_a_201_without_call_id_keeps_the_call_id_an_event_recorded_first(rig: Rig) -> None:
    # SAUTIKIT §1: call_id may be absent from the 201; call.started (which names it) can reach the
    # events function before the dialer records the session. The dialer must not erase it.
    rig.carrier.placed["lq-lead-1-1"] = CreatedCall(
        call_id=None, session_id="HD_00000000abcd", status="ringing", client_request_id="lq-lead-1-1"
    )
    rig.dialer.fault_after_dial = lambda placed: rig.store.update_call("lead-1", 1, call_id="call-from-event")

    rig.dialer.handle_body(lead_body())

    call = rig.store.get_call("lead-1", 1)
    assert call is not None
    assert (call.session_id, call.call_id) == ("HD_00000000abcd", "call-from-event")


def test_local_phone_spellings_are_dialled_in_e164(rig: Rig) -> None:
    rig.dialer.handle_body(lead_body(phone="0712 345 678"))
    assert rig.carrier.requests[0].to == "+254712345678"


def test_the_same_message_delivered_twice_dials_once(rig: Rig) -> None:
    first = rig.dialer.handle_body(lead_body())
    second = rig.dialer.handle_body(lead_body())

    assert (first.status, second.status) == (DialStatus.DIALED, DialStatus.DUPLICATE)
    assert len(rig.carrier.requests) == 1
    assert len(rig.store.list_calls("lead-1")) == 1
    assert rig.sink.total("CallsPlaced") == 1


def test_a_crash_after_the_carrier_accepted_replays_the_stored_dial(rig: Rig) -> None:
    rig.dialer.fault_after_dial = once(RuntimeError("dialer killed right after POST /v1/calls"))
    with pytest.raises(RuntimeError):
        rig.dialer.handle_body(lead_body())
    call = rig.store.get_call("lead-1", 1)
    assert call is not None
    assert call.session_id is None  # the crash came before the session was recorded

    again = rig.dialer.handle_body(lead_body())  # SQS redelivers after the visibility timeout

    assert again.status is DialStatus.DIALED
    assert len(rig.carrier.requests) == 1, "Powertools replayed the stored response: no second POST"
    assert len(rig.carrier.placed) == 1
    [record] = rig.store.list_calls("lead-1")
    assert record.session_id == rig.carrier.placed["lq-lead-1-1"].session_id
    assert rig.sink.total("CallsPlaced") == 1
    assert rig.dialer.handle_body(lead_body()).status is DialStatus.DUPLICATE


@pytest.fixture
def crashed_without_record(
    aws: Aws,
    store: DynamoStore,
    queue: LeadQueue,
    carrier: FakeCarrier,
    campaigns: CampaignCatalog,
    clock: Clock,
    sink: RecordingSink,
) -> Rig:
    """A dialer with no Powertools idempotency record to fall back on, killed right after the
    carrier accepted lead-1's dial: what its SQS redelivery meets."""
    bare = Rig(aws, store, queue, carrier, campaigns, clock, sink, idempotent=False)
    bare.dialer.fault_after_dial = once(RuntimeError("crash"))
    with pytest.raises(RuntimeError):
        bare.dialer.handle_body(lead_body())
    return bare


def test_without_the_idempotency_record_a_redelivery_while_the_call_lives_is_replayed_by_the_carrier(
    crashed_without_record: Rig,
) -> None:
    # Sautikit replays a key only while the leg lives (§1); the fake's call never ends.
    bare = crashed_without_record
    assert bare.dialer.handle_body(lead_body()).status is DialStatus.DIALED

    assert len(bare.carrier.requests) == 2  # the request was repeated ...
    assert {r.client_request_id for r in bare.carrier.requests} == {"lq-lead-1-1"}  # ... with the same key
    assert len(bare.carrier.placed) == 1  # ... so the carrier replayed it: one call
    assert len(bare.store.list_calls("lead-1")) == 1


def test_without_the_idempotency_record_a_redelivery_after_the_recorded_end_does_not_ask_the_carrier(
    crashed_without_record: Rig,
) -> None:
    # Once the leg ended the carrier's key is free again: only our own record can stop a second call.
    bare = crashed_without_record
    # What the voice webhook's no-answer callback leaves: a final state, and no session on the record.
    bare.store.update_call("lead-1", 1, state=CallState.NO_ANSWER)

    again = bare.dialer.handle_body(lead_body())

    assert again.status is DialStatus.DUPLICATE
    assert len(bare.carrier.requests) == 1
    call = bare.store.get_call("lead-1", 1)
    assert call is not None
    assert (call.state, call.session_id) == (CallState.NO_ANSWER, None)


def test_deferral_across_the_evening_and_morning_window_boundaries(rig: Rig) -> None:
    """KE window mon-fri 08:00-19:00 Nairobi. At 19:00:30 on Wednesday the lead waits for Thursday
    08:00; every arrival before that (each SQS hop is at most 15 minutes) is deferred again, the
    last hop lands exactly on the opening, and only then is the lead dialled."""
    rig.clock.set(datetime(2025, 6, 4, 18, 59, 59, tzinfo=NAIROBI))
    rig.dialer.handle_body(lead_body("inside"))
    assert [r.client_request_id for r in rig.carrier.requests] == ["lq-inside-1"]  # still open at 18:59:59

    rig.clock.set(datetime(2025, 6, 4, 19, 0, 30, tzinfo=NAIROBI))
    outcome = rig.dialer.handle_body(lead_body())
    opening = datetime(2025, 6, 5, 8, 0, tzinfo=NAIROBI)
    assert outcome.status is DialStatus.DEFERRED
    assert outcome.not_before == opening.astimezone(UTC)
    [(message, delay)] = rig.queued()
    assert message.not_before == opening
    assert message.attempt == 1
    assert delay == 900
    profile = rig.store.get_lead("lead-1")
    assert profile is not None
    assert profile.status is LeadStatus.DEFERRED
    assert profile.next_attempt_at == opening
    assert profile.reason is not None
    assert "next window opens Thu 2025-06-05 08:00" in profile.reason
    assert rig.sink.total("LeadsDeferred") == 1

    hops = 0
    body = message.body()
    while True:
        rig.clock.advance(seconds=delay)
        result = rig.dialer.handle_body(body)
        if result.status is DialStatus.DIALED:
            break
        assert result.status is DialStatus.DEFERRED
        assert rig.clock() < opening, "deferred although the window was open"
        [(message, delay)] = rig.queued()
        assert message.not_before == opening
        body, hops = message.body(), hops + 1
    assert rig.clock() == opening, "dialled at the opening, not before and not later"
    assert hops == 51  # 12h59m30s in hops of at most 15 minutes
    assert [r.client_request_id for r in rig.carrier.requests] == ["lq-inside-1", "lq-lead-1-1"]


def test_an_early_arrival_one_minute_before_the_opening_is_not_dialled(rig: Rig) -> None:
    opening = datetime(2025, 6, 5, 8, 0, tzinfo=NAIROBI)
    rig.clock.set(opening - timedelta(seconds=59.5))
    body = LeadMessage(lead=parse_message(lead_body()).lead, not_before=opening).body()

    outcome = rig.dialer.handle_body(body)

    assert outcome.status is DialStatus.DEFERRED
    assert outcome.delay_s == 60  # rounded up: never a fraction early
    assert rig.carrier.requests == []


def test_a_full_pacing_limit_defers_and_a_released_slot_lets_the_lead_through(
    aws: Aws,
    store: DynamoStore,
    queue: LeadQueue,
    carrier: FakeCarrier,
    campaigns: CampaignCatalog,
    clock: Clock,
    sink: RecordingSink,
) -> None:
    one = Rig(aws, store, queue, carrier, campaigns, clock, sink, limit=1)
    assert one.dialer.handle_body(lead_body("a")).status is DialStatus.DIALED

    waiting = one.dialer.handle_body(lead_body("b", phone="+254712000002"))

    assert waiting.status is DialStatus.DEFERRED
    assert waiting.reason == "no free calling slot"
    [(message, delay)] = one.queued()
    assert delay == 45  # 30-60 s, jittered (rand fixed at 0.5 here)
    profile = store.get_lead("b")
    assert profile is not None
    assert profile.status is LeadStatus.DEFERRED

    store.release_slot("lq-a-1")  # the events function does this when a's call ends
    clock.advance(seconds=delay)
    assert one.dialer.handle_body(message.body()).status is DialStatus.DIALED
    assert [r.client_request_id for r in carrier.requests] == ["lq-a-1", "lq-b-1"]


@pytest.mark.parametrize(
    ("extra", "code_reason"),
    [
        ({"opt_in": False}, "not opted in"),
        ({"campaign": "nosuch"}, "unknown campaign 'nosuch'"),
    ],
)
def test_leads_that_must_not_be_called_are_recorded_and_not_dialled(
    rig: Rig, extra: dict[str, Any], code_reason: str
) -> None:
    outcome = rig.dialer.handle_body(lead_body(**extra))

    assert outcome.status in (DialStatus.REJECTED, DialStatus.FAILED)
    assert code_reason in outcome.reason
    profile = rig.store.get_lead("lead-1")
    assert profile is not None
    assert (profile.status, profile.outcome) == (LeadStatus.DONE, Outcome.REJECTED)
    assert profile.reason is not None
    assert code_reason in profile.reason
    assert rig.carrier.requests == []


def test_do_not_call_and_the_attempt_cap_reject(rig: Rig) -> None:
    rig.store.add_dnc("+254712345678", "asked to be removed")
    assert rig.dialer.handle_body(lead_body()).status is DialStatus.REJECTED

    over_cap = LeadMessage(
        lead=Lead.model_validate_json(lead_body("capped", phone="+254712000009")), attempt=4
    )
    rig.store.put_lead(over_cap.lead)
    for attempt in (1, 2, 3):
        assert rig.store.begin_attempt("capped", attempt)
    outcome = rig.dialer.handle(over_cap)
    assert outcome.status is DialStatus.REJECTED
    assert "attempt cap reached (3 of 3)" in outcome.reason
    assert rig.carrier.requests == []
    assert rig.sink.total("LeadsRejected") == 2


def test_an_invalid_number_is_a_permanent_failure_with_its_reason(rig: Rig) -> None:
    outcome = rig.dialer.handle_body(lead_body(phone="+25471234"))

    assert outcome.status is DialStatus.FAILED
    profile = rig.store.get_lead("lead-1")
    assert profile is not None
    assert profile.outcome is Outcome.REJECTED
    assert profile.reason is not None
    assert profile.reason.startswith("invalid phone number: ")
    assert "25471234" not in profile.reason
    assert rig.sink.total("DialFailures") == 1


def test_an_unusable_body_is_acknowledged_and_counted(rig: Rig) -> None:
    for body in ("not json", '{"lead_id": "x"}', "[1, 2]"):
        outcome = rig.dialer.handle_body(body)
        assert outcome.status is DialStatus.FAILED
    assert rig.sink.total("DialFailures") == 3
    assert "opt_in: required" in rig.dialer.handle_body('{"lead_id": "x", "phone": "+254712345678"}').reason


def test_an_empty_wallet_is_recorded_once_with_the_balance(rig: Rig) -> None:
    rig.carrier.fail_next.append(payment_required())

    outcome = rig.dialer.handle_body(lead_body())
    again = rig.dialer.handle_body(lead_body())  # a duplicate delivery of the same message

    assert outcome.status is DialStatus.FAILED
    assert again.status is DialStatus.DUPLICATE
    profile = rig.store.get_lead("lead-1")
    assert profile is not None
    assert (profile.status, profile.outcome) == (LeadStatus.DONE, Outcome.FAILED)
    assert profile.reason == (
        "wallet has insufficient funds (402 wallet.insufficient_funds: wallet balance is zero)"
    )
    [call] = rig.store.list_calls("lead-1")
    assert call.state is CallState.FAILED
    assert rig.sink.total("DialFailures") == 1
    assert ("WalletBalanceMinor", 0, "None") in rig.sink.emitted
    assert rig.carrier.placed == {}
    assert rig.store.acquire_slot(1, "someone-else", 60), "the slot was given back"


def test_other_client_errors_are_permanent(rig: Rig) -> None:
    rig.carrier.fail_next.append(SautikitError.from_status(403, "api_key.scope_denied", "no calls scope"))
    outcome = rig.dialer.handle_body(lead_body())
    assert outcome.status is DialStatus.FAILED
    assert "403 api_key.scope_denied" in outcome.reason


@pytest.mark.parametrize("error", [server_error(), SautikitError.from_status(429, None, "slow down")])
def test_transient_errors_raise_for_sqs_then_the_retry_dials(rig: Rig, error: SautikitError) -> None:
    rig.carrier.fail_next.append(error)
    with pytest.raises(SautikitError):
        rig.dialer.handle_body(lead_body())
    assert rig.store.acquire_slot(1, "probe", 60), "a failed dial gives its slot back"
    rig.store.release_slot("probe")
    profile = rig.store.get_lead("lead-1")
    assert profile is not None
    assert profile.outcome is None

    assert rig.dialer.handle_body(lead_body()).status is DialStatus.DIALED
    assert len(rig.carrier.placed) == 1
    assert len(rig.store.list_calls("lead-1")) == 1


def test_a_batch_dials_all_its_leads_at_once(
    aws: Aws,
    store: DynamoStore,
    queue: LeadQueue,
    campaigns: CampaignCatalog,
    clock: Clock,
    sink: RecordingSink,
) -> None:
    def run(carrier: FakeCarrier, prefix: str) -> tuple[float, dict[str, Any]]:
        rig = Rig(aws, store, queue, carrier, campaigns, clock, sink, limit=100)
        event = sqs_event([lead_body(f"{prefix}{i}", phone=f"+2547120000{i:02d}") for i in range(10)])
        started = time.perf_counter()
        response = BatchRunner(rig.dialer).process(event, FakeContext())
        return time.perf_counter() - started, response

    # Proof of overlap: no dial may finish before all ten have started (a serial loop breaks the barrier).
    gathered = FakeCarrier(barrier=threading.Barrier(10, timeout=5))
    _, response = run(gathered, "b")
    assert response == {"batchItemFailures": []}
    assert len(gathered.placed) == 10
    assert gathered.max_in_flight == 10


def test_ten_dials_of_50_ms_take_about_one_latency_not_ten(
    campaigns: CampaignCatalog, clock: Clock, sink: RecordingSink
) -> None:
    latency = 0.05

    def run(carrier: FakeCarrier) -> float:
        dialer = Dialer(
            store=MemoryDialStore(),
            carrier=carrier,
            queue=LeadQueue("http://unused"),
            campaigns=campaigns,
            config=DialerConfig(from_number=FROM, max_concurrent_calls=100),
            metrics=sink,
            clock=clock,
        )
        event = sqs_event([lead_body(f"t{i}", phone=f"+2547120000{i:02d}") for i in range(10)])
        runner = BatchRunner(dialer)
        started = time.perf_counter()
        assert runner.process(event, FakeContext()) == {"batchItemFailures": []}
        return time.perf_counter() - started

    run(FakeCarrier())  # warm the pool and the imports
    elapsed = min(run(FakeCarrier(latency_s=latency)) for _ in range(2))
    # Serial would be 10 latencies; a margin of 5 keeps a loaded CI machine from flaking while still
    # failing any serial or two-wave dialer. The speedup itself is `make bench`'s dialer_batch_speedup.
    assert latency <= elapsed < 5 * latency, f"{elapsed:.3f}s for ten 50 ms dials (serial: 0.5 s)"


def test_a_batch_reports_only_the_records_that_failed(
    aws: Aws,
    store: DynamoStore,
    queue: LeadQueue,
    campaigns: CampaignCatalog,
    clock: Clock,
    sink: RecordingSink,
) -> None:
    flaky = FakeCarrier()
    flaky.fail_next.append(server_error())
    rig = Rig(aws, store, queue, flaky, campaigns, clock, sink, limit=100)
    event = sqs_event([lead_body("solo", phone="+254712000077")])
    response = BatchRunner(rig.dialer).process(event, FakeContext())
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}

    bodies = [lead_body("ok", phone="+254712000078"), "not json", lead_body("boom", phone="+254712000079")]
    flaky.fail_next.append(server_error())  # the first dial to reach the carrier fails
    rig.dialer.fault_after_dial = None
    event = sqs_event(bodies)
    response = BatchRunner(rig.dialer).process(event, FakeContext())
    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    assert len(failed) == 1, "one transient failure; the unusable body is acknowledged, not retried"
    assert failed < {r["messageId"] for r in event["Records"]}
    assert event["Records"][1]["messageId"] not in failed


def test_a_stale_attempt_is_acknowledged_without_dialling(rig: Rig) -> None:
    lead = Lead.model_validate_json(lead_body())
    rig.store.put_lead(lead)
    assert rig.store.begin_attempt("lead-1", 1)
    assert rig.store.begin_attempt("lead-1", 2)  # the lead has moved on to its second attempt

    outcome = rig.dialer.handle(LeadMessage(lead=lead, attempt=1))  # a late copy of the first

    assert outcome.status is DialStatus.DUPLICATE
    assert outcome.reason == "stale: the lead is at attempt 2"
    assert rig.carrier.requests == []


def test_two_copies_racing_in_one_batch_dial_once(rig: Rig) -> None:
    rig.carrier.latency_s = 0.05  # keep the first dial in flight while the copy arrives
    event = sqs_event([lead_body(), lead_body()])

    response = BatchRunner(rig.dialer).process(event, FakeContext())

    assert len(rig.carrier.requests) == 1, "only one copy reached the carrier"
    assert len(rig.store.list_calls("lead-1")) == 1
    # The loser either saw the claimed attempt (acknowledged) or met the in-progress dial (retried later).
    assert len(response["batchItemFailures"]) <= 1
    assert rig.sink.total("CallsPlaced") == 1
