"""DynamoStore against moto's DynamoDB, on a table built from the contract's key schema."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws
from moto_locking import serialised_dynamodb

from leadqual.models import Answer, CallRecord, CallState, Lead, LeadStatus, Outcome, Score, Verdict
from leadqual.store import DynamoStore, LeadProfile, NotFound, StoreError

pytestmark = pytest.mark.integration

TABLE = "leadqual-test"
T0 = 1_750_000_000.0


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def aws() -> Iterator[Any]:
    """One in-process moto for the module; each test gets its own fresh table.

    moto's item operations run one at a time (tests/moto_locking.py), so the race tests below test
    our conditions, not moto's thread safety.
    """
    with serialised_dynamodb(), mock_aws():
        yield boto3.client(
            "dynamodb",
            region_name="eu-west-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


@pytest.fixture
def client(aws: Any) -> Iterator[Any]:
    aws.create_table(
        TableName=TABLE,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[
            {"AttributeName": name, "AttributeType": "S"} for name in ("PK", "SK", "GSI1PK", "GSI1SK")
        ],
        KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "GSI1",
                "KeySchema": [
                    {"AttributeName": "GSI1PK", "KeyType": "HASH"},
                    {"AttributeName": "GSI1SK", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    aws.update_time_to_live(
        TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"}
    )
    try:
        yield aws
    finally:
        aws.delete_table(TableName=TABLE)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(client: Any, clock: Clock) -> DynamoStore:
    return DynamoStore(TABLE, client, clock=clock)


def lead(lead_id: str = "lead-1", campaign: str = "example", **kw: Any) -> Lead:
    fields: dict[str, Any] = {"phone": "+254722000002", "name": "Wanjiru Kamau", "opt_in": True} | kw
    return Lead(lead_id=lead_id, campaign=campaign, **fields)


def raw(client: Any, pk: str, sk: str) -> dict[str, Any]:
    return client.get_item(TableName=TABLE, Key={"PK": {"S": pk}, "SK": {"S": sk}}, ConsistentRead=True)[
        "Item"
    ]


def race(n: int, fn: Callable[[int], bool]) -> list[bool]:
    """Run fn(i) in n threads released together; return their results."""
    barrier = threading.Barrier(n)
    results: list[bool | None] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    return [bool(r) for r in results]


# -- leads -----------------------------------------------------------------------------------------


def test_lead_round_trip_and_duplicate(store: DynamoStore, client: Any) -> None:
    assert store.put_lead(lead(timezone="Africa/Nairobi")) is True
    assert store.put_lead(lead(name="Someone Else")) is False
    profile = store.get_lead("lead-1")
    assert isinstance(profile, LeadProfile)
    assert profile.lead == lead(timezone="Africa/Nairobi")
    assert (profile.status, profile.attempts, profile.outcome, profile.score) == (
        LeadStatus.QUEUED,
        0,
        None,
        None,
    )
    assert profile.created_at == datetime.fromtimestamp(T0, tz=UTC)
    item = raw(client, "LEAD#lead-1", "PROFILE")
    assert item["GSI1PK"] == {"S": "CAMPAIGN#example"}
    assert item["GSI1SK"] == {"S": "queued#lead-1"}
    assert store.get_lead("nobody") is None


def test_put_lead_race_has_one_winner(store: DynamoStore) -> None:
    assert race(12, lambda i: store.put_lead(lead(name=f"Writer {i}"))).count(True) == 1


def test_begin_attempt_is_a_compare_and_set(store: DynamoStore, client: Any) -> None:
    store.put_lead(lead())
    store.set_status("lead-1", LeadStatus.DEFERRED, next_attempt_at=datetime(2025, 6, 5, 6, tzinfo=UTC))
    assert store.begin_attempt("lead-1", 2) is False  # skipping an attempt
    assert store.begin_attempt("lead-1", 1) is True
    assert store.begin_attempt("lead-1", 1) is False  # the SQS redelivery loses
    profile = store.get_lead("lead-1")
    assert profile is not None
    assert (profile.attempts, profile.status, profile.next_attempt_at) == (1, LeadStatus.DIALING, None)
    assert raw(client, "LEAD#lead-1", "PROFILE")["GSI1SK"] == {"S": "dialing#lead-1"}
    assert store.begin_attempt("lead-1", 2) is True
    with pytest.raises(NotFound):
        store.begin_attempt("ghost", 1)


def test_begin_attempt_race_has_one_winner(store: DynamoStore) -> None:
    store.put_lead(lead())
    assert race(12, lambda _: store.begin_attempt("lead-1", 1)).count(True) == 1
    profile = store.get_lead("lead-1")
    assert profile is not None
    assert profile.attempts == 1


def test_status_outcome_and_the_campaign_index(store: DynamoStore, client: Any, clock: Clock) -> None:
    for lead_id in ("a", "b", "c"):
        store.put_lead(lead(lead_id))
    store.put_lead(lead("z", campaign="other"))
    store.begin_attempt("a", 1)
    clock.now += 5
    score = Score(verdict=Verdict.HOT, points=9, max_points=10, reasons=["decides", "40 seats"], missing=[])
    store.set_outcome("a", Outcome.HOT_TRANSFERRED, score=score, reason="qualified")
    store.set_status("a", LeadStatus.DONE)
    store.set_status(
        "b",
        LeadStatus.RETRY_SCHEDULED,
        reason="no answer",
        next_attempt_at=datetime(2025, 6, 4, 12, tzinfo=UTC),
    )
    store.set_outcome("b", Outcome.NO_ANSWER)

    a = store.get_lead("a")
    assert a is not None
    assert (a.status, a.outcome, a.score, a.reason) == (
        LeadStatus.DONE,
        Outcome.HOT_TRANSFERRED,
        score,
        "qualified",
    )
    assert a.updated_at == datetime.fromtimestamp(T0 + 5, tz=UTC)
    # Once there is an outcome the index keys on it, whatever the status does next.
    assert raw(client, "LEAD#a", "PROFILE")["GSI1SK"] == {"S": "hot_transferred#a"}
    b = store.get_lead("b")
    assert b is not None
    assert (b.status, b.reason, b.next_attempt_at) == (
        LeadStatus.RETRY_SCHEDULED,
        "no answer",
        datetime(2025, 6, 4, 12, tzinfo=UTC),
    )
    store.set_status("b", LeadStatus.DIALING)
    b = store.get_lead("b")
    assert b is not None
    assert (b.reason, b.next_attempt_at) == ("no answer", None)

    assert sorted(p.lead.lead_id for p in store.leads_by_campaign("example")) == ["a", "b", "c"]
    assert [p.lead.lead_id for p in store.leads_by_campaign("example", state="hot_transferred")] == ["a"]
    assert [p.lead.lead_id for p in store.leads_by_campaign("example", state="queued")] == ["c"]
    assert [p.lead.lead_id for p in store.leads_by_campaign("other")] == ["z"]
    assert store.leads_by_campaign("nothing") == []
    with pytest.raises(NotFound):
        store.set_status("ghost", LeadStatus.DONE)
    with pytest.raises(NotFound):
        store.set_outcome("ghost", Outcome.FAILED)
    assert store.get_lead("ghost") is None  # an update never creates a half lead


def test_queries_follow_every_page(client: Any) -> None:
    store = DynamoStore(TABLE, client, page_size=4)
    for i in range(11):
        store.put_lead(lead(f"bulk-{i:02d}"))
        store.save_answer("bulk-00", Answer(question_id=f"q{i:02d}", value=i))
        store.put_call(CallRecord(lead_id="bulk-00", attempt=i + 1, client_request_id=f"lq-bulk-00-{i + 1}"))
    assert sorted(p.lead.lead_id for p in store.leads_by_campaign("example")) == [
        f"bulk-{i:02d}" for i in range(11)
    ]
    assert [a.value for a in store.get_answers("bulk-00")] == list(range(11))
    assert [c.attempt for c in store.list_calls("bulk-00")] == list(range(1, 12))


# -- calls -----------------------------------------------------------------------------------------


def test_calls_round_trip_and_updates(store: DynamoStore) -> None:
    record = CallRecord(
        lead_id="lead-1",
        attempt=1,
        client_request_id="lq-lead-1-1",
        created_at=datetime(2025, 6, 4, 7, 0, tzinfo=UTC),
        time_to_first_word_ms=412.75,
    )
    assert store.put_call(record) is True
    assert store.put_call(record.model_copy(update={"state": CallState.FAILED})) is False
    assert store.get_call("lead-1", 1) == record
    store.update_call("lead-1", 1, session_id="HD_0123456789ab", state="answered")
    answered = store.get_call("lead-1", 1)
    assert answered is not None
    assert (answered.state, answered.session_id) == (CallState.ANSWERED, "HD_0123456789ab")
    store.update_call(
        "lead-1",
        1,
        state=CallState.COMPLETED,
        billed_seconds=95,
        cost_minor=475,
        ended_at=datetime(2025, 6, 4, 7, 3, tzinfo=UTC),
        outcome=Outcome.COLD_CLOSED,
    )
    # A late non-final state does not reopen the call; the other fields still land.
    store.update_call("lead-1", 1, state=CallState.STREAMING, transferred_to="+254733000003")
    call = store.get_call("lead-1", 1)
    assert call is not None
    assert (call.state, call.session_id, call.billed_seconds, call.cost_minor, call.outcome) == (
        CallState.COMPLETED,
        "HD_0123456789ab",
        95,
        475,
        Outcome.COLD_CLOSED,
    )
    assert call.transferred_to == "+254733000003"
    assert call.time_to_first_word_ms == 412.75
    assert call.ended_at == datetime(2025, 6, 4, 7, 3, tzinfo=UTC)
    # A final state may still be corrected by the carrier's record.
    store.update_call("lead-1", 1, state=CallState.NO_ANSWER)
    store.update_call("lead-1", 1, transferred_to=None)
    call = store.get_call("lead-1", 1)
    assert call is not None
    assert (call.state, call.transferred_to) == (CallState.NO_ANSWER, None)

    store.put_call(CallRecord(lead_id="lead-1", attempt=2, client_request_id="lq-lead-1-2"))
    store.put_call(CallRecord(lead_id="lead-10", attempt=1, client_request_id="lq-lead-10-1"))
    assert [c.attempt for c in store.list_calls("lead-1")] == [1, 2]
    assert store.get_call("lead-1", 3) is None
    with pytest.raises(NotFound):
        store.update_call("lead-1", 3, state="answered")
    with pytest.raises(ValueError, match="unknown call fields"):
        store.update_call("lead-1", 1, client_id="other")
    with pytest.raises(ValueError, match="'state'"):
        store.update_call("lead-1", 1, state="exploded")


def test_put_call_race_has_one_winner(store: DynamoStore) -> None:
    def put(i: int) -> bool:
        return store.put_call(CallRecord(lead_id="lead-1", attempt=1, client_request_id=f"lq-lead-1-1-{i}"))

    assert race(10, put).count(True) == 1


def test_a_calls_transcript_round_trips_as_a_list_of_maps(store: DynamoStore, client: Any) -> None:
    store.put_call(CallRecord(lead_id="lead-1", attempt=1, client_request_id="lq-lead-1-1"))
    fresh = store.get_call("lead-1", 1)
    assert fresh is not None
    assert fresh.transcript == []  # a record without a transcript reads as an empty one
    transcript = [
        {"t": 0.05, "who": "agent", "text": "Hi Wanjiru, this is Amina from Acme CRM."},
        {"t": 6.5, "who": "lead", "text": "Yes, now is fine — asante."},
        {"t": 7, "who": "agent", "text": ""},
    ]
    store.update_call("lead-1", 1, transcript=transcript, state=CallState.STREAMING)
    call = store.get_call("lead-1", 1)
    assert call is not None
    assert call.transcript == [
        {"t": 0.05, "who": "agent", "text": "Hi Wanjiru, this is Amina from Acme CRM."},
        {"t": 6.5, "who": "lead", "text": "Yes, now is fine — asante."},
        {"t": 7.0, "who": "agent", "text": ""},
    ]
    assert all(type(e["t"]) is float for e in call.transcript)
    stored = raw(client, "LEAD#lead-1", "CALL#001")["transcript"]
    assert stored["L"][1] == {
        "M": {"t": {"N": "6.5"}, "who": {"S": "lead"}, "text": {"S": "Yes, now is fine — asante."}}
    }
    # A later write replaces it (the bridge writes the whole transcript each time); lists too.
    assert [c.transcript for c in store.list_calls("lead-1")] == [call.transcript]
    store.update_call("lead-1", 1, transcript=[*transcript, {"t": 9.1, "who": "lead", "text": "Bye."}])
    again = store.get_call("lead-1", 1)
    assert again is not None
    assert [e["text"] for e in again.transcript][-2:] == ["", "Bye."]
    with pytest.raises(ValueError, match="'transcript'"):
        store.update_call("lead-1", 1, transcript=[{"t": 1.0, "who": "narrator", "text": "x"}])


def test_a_long_transcript_is_bounded_below_the_item_size_limit(store: DynamoStore, client: Any) -> None:
    store.put_call(CallRecord(lead_id="lead-1", attempt=1, client_request_id="lq-lead-1-1"))
    # 300 entries of 1,500 four-byte characters: 1.8 MB unbounded, far over DynamoDB's 400 KB.
    long = [{"t": i * 1.0, "who": "lead", "text": f"{i:04d}" + "𝄞" * 1500} for i in range(300)]
    store.update_call("lead-1", 1, transcript=long, state=CallState.COMPLETED)
    call = store.get_call("lead-1", 1)
    assert call is not None
    assert call.state is CallState.COMPLETED
    texts = [e["text"] for e in call.transcript]
    assert all(len(text) == 1000 for text in texts)  # each cut at 1,000 characters
    assert texts[-1].startswith("0299")  # the latest kept, oldest dropped
    assert [int(text[:4]) for text in texts] == list(range(300 - len(texts), 300))
    assert 50 < len(texts) < 200
    item = raw(client, "LEAD#lead-1", "CALL#001")
    assert sum(len(e["M"]["text"]["S"].encode()) for e in item["transcript"]["L"]) <= 256_000


# -- sessions, answers, DNC ------------------------------------------------------------------------


def test_session_pointer(store: DynamoStore) -> None:
    store.put_session("HD_0123456789ab", "lead-1", 2)
    store.put_session("HD_0123456789ab", "lead-1", 2)  # a redelivered first callback
    assert store.get_session("HD_0123456789ab") == ("lead-1", 2)
    with pytest.raises(StoreError, match="another lead"):
        store.put_session("HD_0123456789ab", "lead-2", 1)
    assert store.get_session("HD_0123456789ab") == ("lead-1", 2)
    assert store.get_session("HD_ffffffffffff") is None


@pytest.mark.parametrize(
    "value", [True, False, 0, 42, -7, 10**20, 3.0, 2.5, 1e-7, 0.1, "yes, about forty", "", None]
)
def test_answers_keep_their_type(store: DynamoStore, value: Any) -> None:
    at = datetime(2025, 6, 4, 7, 1, 30, tzinfo=UTC)
    store.save_answer("lead-1", Answer(question_id="q", value=value, quote="she said so", at=at))
    (answer,) = store.get_answers("lead-1")
    assert answer == Answer(question_id="q", value=value, quote="she said so", at=at)
    assert type(answer.value) is type(value)


def test_answers_overwrite_and_default_time(store: DynamoStore, clock: Clock) -> None:
    store.save_answer("lead-1", Answer(question_id="seats", value=40, quote="give or take forty"))
    store.save_answer("lead-1", Answer(question_id="decision_maker", value=True, quote="yes, I sign off"))
    store.save_answer("lead-1", Answer(question_id="seats", value=45, quote="actually forty-five"))
    store.save_answer("lead-2", Answer(question_id="seats", value=3))
    answers = {a.question_id: a for a in store.get_answers("lead-1")}
    assert set(answers) == {"seats", "decision_maker"}
    assert (answers["seats"].value, answers["seats"].quote) == (45, "actually forty-five")
    assert answers["seats"].at == datetime.fromtimestamp(T0, tz=UTC)
    assert store.get_answers("nobody") == []


def test_dnc(store: DynamoStore, client: Any, clock: Clock) -> None:
    assert store.is_dnc("+254722000002") is False
    store.add_dnc("+254722000002", "opt_out")
    clock.now += 100
    store.add_dnc("+254722000002", "asked again")
    assert store.is_dnc("+254722000002") is True
    assert store.is_dnc("+254722000003") is False
    item = raw(client, "DNC#+254722000002", "DNC")
    assert item["reason"] == {"S": "asked again"}
    assert item["added_at"] == {"S": datetime.fromtimestamp(T0, tz=UTC).isoformat()}  # first time kept


# -- pacing ----------------------------------------------------------------------------------------


def test_slots_are_limited_and_released(store: DynamoStore) -> None:
    assert [store.acquire_slot(3, h, 300, now=T0) for h in ("a", "b", "c")] == [True, True, True]
    assert store.acquire_slot(3, "d", 300, now=T0) is False
    store.release_slot("b")
    store.release_slot("b")  # twice is harmless
    assert store.acquire_slot(3, "d", 300, now=T0 + 1) is True
    assert store.acquire_slot(3, "e", 300, now=T0 + 1) is False
    store.release_slot("never-held")
    assert store.acquire_slot(3, "e", 300, now=T0 + 1) is False
    assert store.acquire_slot(0, "f", 300, now=T0) is False


def test_acquire_is_reentrant_for_the_same_holder(store: DynamoStore) -> None:
    assert store.acquire_slot(2, "lq-a-1", 60, now=T0) is True
    assert store.acquire_slot(2, "lq-a-1", 60, now=T0 + 10) is True  # renewal, not a second slot
    assert store.acquire_slot(2, "lq-b-1", 60, now=T0 + 10) is True
    assert store.acquire_slot(2, "lq-c-1", 60, now=T0 + 65) is False  # a's lease was renewed to T0+70


def test_a_crashed_holders_slot_frees_itself(store: DynamoStore, client: Any) -> None:
    assert store.acquire_slot(1, "crashed", 60, now=T0) is True
    assert store.acquire_slot(1, "next", 60, now=T0 + 59) is False
    assert store.acquire_slot(1, "next", 60, now=T0 + 61) is True
    # The crashed holder waking up cannot free the slot someone else now holds.
    store.release_slot("crashed")
    assert raw(client, "PACING#0", "SLOT")["holder"] == {"S": "next"}
    assert store.acquire_slot(1, "third", 60, now=T0 + 62) is False
    store.release_slot("next")
    assert store.acquire_slot(1, "third", 60, now=T0 + 63) is True


def test_slot_race_never_exceeds_the_limit(store: DynamoStore, client: Any) -> None:
    results = race(20, lambda i: store.acquire_slot(5, f"holder-{i}", 300, now=T0))
    assert results.count(True) == 5
    items = client.scan(TableName=TABLE)["Items"]
    holders = [i["holder"]["S"] for i in items if i["PK"]["S"].startswith("PACING#")]
    assert len(holders) == 5
    assert {f"holder-{i}" for i, ok in enumerate(results) if ok} == set(holders)


# -- events ----------------------------------------------------------------------------------------


def test_mark_event_dedupes_until_the_window_ends(store: DynamoStore, clock: Clock) -> None:
    assert store.mark_event("evt-1", ttl_s=3600) is True
    assert store.mark_event("evt-1", ttl_s=3600) is False
    assert store.mark_event("evt-2") is True
    clock.now += 3601  # TTL deletion can lag; an expired marker counts as gone
    assert store.mark_event("evt-1", ttl_s=3600) is True
    assert store.mark_event("evt-1", ttl_s=3600) is False


def test_mark_event_race_has_one_winner(store: DynamoStore) -> None:
    assert race(16, lambda _: store.mark_event("evt-race")).count(True) == 1


# -- errors ----------------------------------------------------------------------------------------


def test_missing_table_is_a_store_error_from_the_client_error(client: Any) -> None:
    store = DynamoStore("no-such-table", client)
    with pytest.raises(StoreError) as info:
        store.get_lead("lead-1")
    assert info.value.code == "ResourceNotFoundException"
    assert info.value.retryable is False
    assert isinstance(info.value.__cause__, ClientError)


def test_throttling_is_retryable(client: Any) -> None:
    store = DynamoStore(TABLE, client)
    with Stubber(client) as stub:
        stub.add_client_error("put_item", service_error_code="ProvisionedThroughputExceededException")
        with pytest.raises(StoreError) as info:
            store.mark_event("evt-1")
    assert info.value.retryable is True
    assert isinstance(info.value.__cause__, ClientError)


def test_client_is_created_lazily() -> None:
    store = DynamoStore(TABLE)
    assert store._client is None  # constructing a store touches nothing
