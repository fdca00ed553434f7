"""The voice webhook: the first callback gets one valid stream document, re-invocations never get a
second <Stream>, unknown calls are hung up, and unsigned requests change nothing (moto in-process)."""

from __future__ import annotations

import base64
import copy
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from pipeline_fakes import FROM, REP, Aws, Clock, FakeContext, RecordingSink

from functions.voice import app as voice_app
from leadqual.answering import VoiceAnswerer, VoiceConfig
from leadqual.campaign import CampaignCatalog
from leadqual.models import CallRecord, CallState, Lead, LeadStatus
from leadqual.signing import sign_webhook, verify_bridge_token
from leadqual.store import DynamoStore
from leadqual.webhooks import dial_connected, dial_result, parse_callback

EVENTS = Path(__file__).resolve().parents[3] / "events"
SECRET = "sample-webhook-secret"
BRIDGE_SECRET = "bridge-token-secret"
SESSION = "HD_3f9a1c2b7d4e"
LEAD = "+254712345678"


@pytest.fixture
def answerer(
    store: DynamoStore, campaigns: CampaignCatalog, clock: Clock, sink: RecordingSink
) -> VoiceAnswerer:
    return VoiceAnswerer(
        store=store,
        campaigns=campaigns,
        config=VoiceConfig(
            bridge_url="wss://bridge.example.com/stream",
            bridge_token_secret=BRIDGE_SECRET,
            own_numbers=(FROM,),
            token_ttl_s=900,
        ),
        metrics=sink,
        clock=clock,
    )


def placed(
    store: DynamoStore, lead_id: str = "lead-0001", campaign: str = "example", attempt: int = 1
) -> None:
    """What the dialer leaves behind for an attempt: the lead, the claimed attempt, a ringing call record."""
    store.put_lead(
        Lead(
            lead_id=lead_id,
            phone=LEAD,
            name="Wanjiku Kamau",
            company="Savannah",
            opt_in=True,
            campaign=campaign,
        )
    )
    for n in range(1, attempt + 1):
        store.begin_attempt(lead_id, n)
    store.put_call(
        CallRecord(
            lead_id=lead_id,
            attempt=attempt,
            client_request_id=f"lq-{lead_id}-{attempt}",
            state=CallState.RINGING,
        )
    )


def xml(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314 -- our own output, parsed to prove its structure


def form(**fields: str) -> bytes:
    base = {
        "sessionId": SESSION,
        "isActive": "1",
        "direction": "Outbound",
        "callerNumber": FROM,
        "destinationNumber": LEAD,
        "callSessionState": "Answered",
        "clientRequestId": "lq-lead-0001-1",
    }
    base.update(fields)
    return urlencode({k: v for k, v in base.items() if v != ""}).encode()


def answer(answerer: VoiceAnswerer, body: bytes, query: dict[str, str] | None = None) -> Any:
    cb = parse_callback(body, "application/x-www-form-urlencoded", query or {})
    return answerer.answer(cb, status_callback_url="https://api.example.com/stream-status")


def test_the_first_callback_gets_the_stream_then_the_transfer_step(
    answerer: VoiceAnswerer, store: DynamoStore, sink: RecordingSink, clock: Clock
) -> None:
    placed(store)
    reply = answer(answerer, form())

    assert reply.kind == "stream"
    assert reply.content_type == "application/xml"
    doc = xml(reply.body)
    assert doc.tag == "Response"
    assert [v.tag for v in doc] == ["Stream", "Dial", "Say", "Hangup"]
    stream, dial, say, _ = list(doc)
    assert stream.attrib["connect"] == "true"
    assert stream.attrib["track"] == "inbound_track"
    assert stream.attrib["outputSamplingRate"] == "16000"
    assert stream.attrib["bidirectionalSamplingRate"] == "16000"
    assert stream.attrib["statusCallback"] == "https://api.example.com/stream-status"
    assert stream.attrib["name"] == "lq-lead-0001-1"
    assert json.loads(stream.attrib["headerMetadata"]) == {
        "lead_id": "lead-0001",
        "attempt": 1,
        "campaign": "example",
    }
    url = urlsplit(stream.attrib["url"])
    assert (url.scheme, url.netloc, url.path) == ("wss", "bridge.example.com", "/stream")
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert query["session"] == SESSION
    token = verify_bridge_token(BRIDGE_SECRET, SESSION, query["token"], now=clock().timestamp())
    assert token.expires_at == int(clock().timestamp()) + 900
    with pytest.raises(ValueError, match=r"does not match this session"):
        verify_bridge_token(BRIDGE_SECRET, "HD_000000000000", query["token"], now=clock().timestamp())
    assert dial.attrib == {"callerId": FROM, "timeout": "20"}
    assert [n.text for n in dial] == [REP]
    assert say.text == "Sorry, my colleague is not available right now. We will call you back shortly."

    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.state, call.session_id, call.answered_at) == (CallState.ANSWERED, SESSION, clock())
    assert store.get_session(SESSION) == ("lead-0001", 1)
    profile = store.get_lead("lead-0001")
    assert profile is not None
    assert profile.status is LeadStatus.IN_CALL
    assert sink.total("CallsAnswered") == 1


def test_a_redelivered_first_callback_gets_the_same_document_until_the_stream_starts(
    answerer: VoiceAnswerer, store: DynamoStore, sink: RecordingSink, clock: Clock
) -> None:
    placed(store)
    first = answer(answerer, form())
    clock.advance(seconds=3)
    again = answer(answerer, form())
    assert again.body == first.body
    assert sink.total("CallsAnswered") == 1

    started = answer(answerer, form(callSessionState="StreamStarted"))
    assert (started.kind, started.body) == ("empty", "<Response/>")
    late_first = answer(answerer, form())  # a first-looking callback after the stream started
    assert late_first.body == "<Response/>"
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert call.state is CallState.STREAMING


def test_lifecycle_callbacks_get_an_empty_response_and_their_state_is_recorded(
    answerer: VoiceAnswerer, store: DynamoStore
) -> None:
    placed(store)
    answer(answerer, form())
    completed = answer(answerer, form(callSessionState="Completed", isActive="0", durationInSeconds="96"))
    assert completed.body == "<Response/>"
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.state, call.duration_seconds) == (CallState.COMPLETED, 96)

    # A late StreamStarted never drags a finished call back, and still gets nothing to run.
    assert answer(answerer, form(callSessionState="StreamStarted")).body == "<Response/>"
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert call.state is CallState.COMPLETED


def test_dialcompleted_gets_an_empty_response_and_the_rep_legs_result_is_recorded(
    answerer: VoiceAnswerer, store: DynamoStore
) -> None:
    placed(store)
    answer(answerer, form())
    answer(answerer, form(callSessionState="StreamStarted"))
    dial_done = form(
        callSessionState="DialCompleted",
        dialStatus="answered",
        dialDestinationNumber=REP,
        dialDurationInSeconds="64",
    )

    reply = answer(answerer, dial_done)

    assert (reply.kind, reply.body) == ("empty", "<Response/>")
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.transfer_status, call.transfer_seconds) == ("answered", 64)
    assert call.state is CallState.STREAMING, "DialCompleted says nothing about the call's own state"

    # Redelivered: same answer, same record. A later unconnected report never replaces a connected one.
    assert answer(answerer, dial_done).body == "<Response/>"
    assert answer(answerer, form(callSessionState="DialCompleted", dialStatus="failed")).body == "<Response/>"
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.transfer_status, call.transfer_seconds) == ("answered", 64)


def test_dialcompleted_fields_are_read_in_any_spelling_and_a_failed_dial_is_recorded_as_sent(
    answerer: VoiceAnswerer, store: DynamoStore
) -> None:
    placed(store)
    answer(answerer, form())
    body = json.dumps(
        {
            "session_id": SESSION,
            "call_session_state": "DialCompleted",
            "is_active": False,
            "client_request_id": "lq-lead-0001-1",
            "dial_status": "no-answer",
            "dial_destination_number": REP,
        }
    ).encode()
    cb = parse_callback(body, "application/json", {})
    assert (cb.dial_status, cb.dial_destination, cb.dial_duration_s) == ("no-answer", REP, None)

    reply = answerer.answer(cb, status_callback_url="https://api.example.com/stream-status")

    assert reply.body == "<Response/>"
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert (call.transfer_status, call.transfer_seconds) == ("no-answer", None)
    # A DialCompleted with no status at all is recorded as such: it confirms nothing.
    answer(answerer, form(callSessionState="DialCompleted"))
    call = store.get_call("lead-0001", 1)
    assert call is not None
    assert call.transfer_status == "unknown"


@pytest.mark.parametrize(
    ("status", "seconds", "connected"),
    [
        ("answered", None, True),
        ("completed", 12, True),
        ("ANSWERED", 1, True),
        ("answered", 0, False),
        ("no-answer", None, False),
        ("no_answer", None, False),
        ("busy", None, False),
        ("failed", None, False),
        ("canceled", None, False),
        ("unknown", None, False),
        (None, 30, False),
    ],
)
def test_the_rule_for_a_connected_rep_leg(status: str | None, seconds: int | None, connected: bool) -> None:
    assert dial_connected(status, seconds) is connected
    fields = {"dialStatus": status, "dialDurationInSeconds": seconds}
    assert dial_result({k: v for k, v in fields.items() if v is not None}).connected is connected


def test_an_early_completed_first_callback_still_sets_the_call_up(
    answerer: VoiceAnswerer, store: DynamoStore
) -> None:
    placed(store)
    reply = answer(answerer, form(callSessionState="Completed", isActive="1"))
    assert reply.kind == "stream"


def test_an_unknown_call_is_hung_up_with_a_reason(answerer: VoiceAnswerer, store: DynamoStore) -> None:
    reply = answer(answerer, form(clientRequestId="lq-nobody-1"))
    assert (reply.kind, reply.body) == ("hangup", "<Response><Hangup/></Response>")
    assert "unknown call" in reply.reason

    reply = answer(answerer, form(clientRequestId="", sessionId="HD_999999999999"))
    assert reply.body == "<Response><Hangup/></Response>"
    assert store.get_session("HD_999999999999") is None


def test_the_lead_is_found_by_the_query_label_or_the_session_and_swapped_numbers_do_not_matter(
    answerer: VoiceAnswerer, store: DynamoStore
) -> None:
    placed(store)
    swapped = form(clientRequestId="", callerNumber=LEAD, destinationNumber=FROM)
    reply = answer(answerer, swapped, query={"clientRequestId": "lq-lead-0001-1"})
    assert reply.kind == "stream"
    dial = xml(reply.body).find("Dial")
    assert dial is not None
    assert dial.attrib["callerId"] == FROM

    placed(store, "lead-0002")
    store.put_session("HD_aaaaaaaaaaaa", "lead-0002", 1)  # the dialer wrote this when the call was placed
    reply = answer(answerer, form(clientRequestId="", sessionId="HD_aaaaaaaaaaaa"))
    assert reply.kind == "stream"
    assert reply.lead_id == "lead-0002"


def test_supervise_barge_ends_with_a_hangup_and_no_dial(answerer: VoiceAnswerer, store: DynamoStore) -> None:
    placed(store, campaign="barge")
    doc = xml(answer(answerer, form()).body)
    assert [v.tag for v in doc] == ["Stream", "Hangup"]


def test_a_campaign_intro_is_said_first_in_its_language(answerer: VoiceAnswerer, store: DynamoStore) -> None:
    placed(store, campaign="intro")
    doc = xml(answer(answerer, form()).body)
    assert [v.tag for v in doc] == ["Say", "Stream", "Dial", "Say", "Hangup"]
    intro = doc[0]
    assert intro.attrib == {"language": "sw-KE"}
    assert intro.text == "Simu hii inatumia msaada wa AI na inaweza kurekodiwa."


def test_hostile_lead_data_cannot_change_the_document(answerer: VoiceAnswerer, store: DynamoStore) -> None:
    store.put_lead(
        Lead(
            lead_id="evil",
            phone=LEAD,
            name='"/><Dial>+15551234567</Dial>',
            company="<x>",
            opt_in=True,
            campaign="intro",
        )
    )
    store.begin_attempt("evil", 1)
    doc = xml(answer(answerer, form(clientRequestId="lq-evil-1")).body)
    assert [n.text for n in doc.iter("Number")] == [REP]


# -- the Lambda handler -------------------------------------------------------------------------


def sample(name: str) -> dict[str, Any]:
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


def stamp(event: dict[str, Any]) -> int:
    return int(event["headers"]["x-sautikit-signature"].split(",")[0].removeprefix("t="))


def handler_deps(answerer: VoiceAnswerer, sink: RecordingSink, now: float) -> voice_app.Deps:
    return voice_app.Deps(answerer=answerer, webhook_secret=SECRET, metrics=sink, now=lambda: now)


def test_the_handler_answers_the_sample_first_callback(
    answerer: VoiceAnswerer, store: DynamoStore, sink: RecordingSink
) -> None:
    placed(store)
    event = sample("voice_answer_form")
    response = voice_app.handle(event, FakeContext(), deps=handler_deps(answerer, sink, stamp(event)))

    assert response["statusCode"] == 200
    assert response["headers"]["Content-Type"] == "application/xml"
    stream = xml(response["body"]).find("Stream")
    assert stream is not None
    # Without a configured status URL, the callback goes to this API's own /stream-status route.
    assert (
        stream.attrib["statusCallback"]
        == "https://a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com/stream-status"
    )

    lifecycle = sample("voice_lifecycle_completed")
    response = voice_app.handle(lifecycle, FakeContext(), deps=handler_deps(answerer, sink, stamp(lifecycle)))
    assert (response["statusCode"], response["body"]) == (200, "<Response/>")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda e, t: e["headers"].update({"x-sautikit-signature": sign_webhook("wrong", _raw(e), t)}),
            id="forged",
        ),
        pytest.param(
            lambda e, t: e["headers"].update(
                {"x-sautikit-signature": sign_webhook(SECRET, _raw(e), t - 301)}
            ),
            id="stale",
        ),
        pytest.param(lambda e, t: e["headers"].pop("x-sautikit-signature"), id="missing"),
        pytest.param(
            lambda e, t: e.update(
                {"body": base64.b64encode(_raw(e).replace(b"Answered", b"Completed")).decode()}
            ),
            id="body-changed",
        ),
    ],
)
def test_unsigned_callbacks_get_401_and_change_nothing(
    answerer: VoiceAnswerer, store: DynamoStore, sink: RecordingSink, aws: Aws, tamper: Any
) -> None:
    placed(store)
    before = aws.dynamodb.scan(TableName=aws.resources.table_name)["Items"]
    event = sample("voice_answer_form")
    t = stamp(event)
    tamper(event, t)

    response = voice_app.handle(event, FakeContext(), deps=handler_deps(answerer, sink, t))

    assert response["statusCode"] == 401
    assert "Stream" not in response["body"]
    assert aws.dynamodb.scan(TableName=aws.resources.table_name)["Items"] == before
    assert sink.total("WebhookRejected") == 1


def test_an_unreadable_body_is_a_400(answerer: VoiceAnswerer, sink: RecordingSink) -> None:
    event = sample("voice_answer_form")
    raw = b"not a form"
    t = stamp(event)
    event.update(body=base64.b64encode(raw).decode())
    event["headers"]["x-sautikit-signature"] = sign_webhook(SECRET, raw, t)
    response = voice_app.handle(event, FakeContext(), deps=handler_deps(answerer, sink, t))
    assert response["statusCode"] == 400


def _raw(event: dict[str, Any]) -> bytes:
    return base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()


def test_the_voice_function_loads_without_the_xray_sdk_or_the_carrier_client() -> None:
    """The lead waits in silence for this function; on a cold start every import is theirs to hear.
    The X-Ray SDK (a quarter of a second: it builds sampling clients) and the dialer's modules
    (httpx, phonenumbers' time zones) are not needed to answer."""
    import subprocess
    import sys

    heavy = ["aws_xray_sdk", "httpx", "leadqual.dialing", "leadqual.sautikit", "leadqual.compliance"]
    code = f"import sys, functions.voice.app; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
