"""Voice callbacks, events and stream statuses as Sautikit sends them, quirks included."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from leadqual.models import CallState
from leadqual.signing import SignatureError, sign_webhook
from leadqual.webhooks import (
    FIRST_SETUP,
    LIFECYCLE,
    CallEvent,
    EventKind,
    WebhookError,
    classify,
    parse_callback,
    parse_event,
    same_number,
    verify_request,
)

FORM = "application/x-www-form-urlencoded"
OURS = "+254711000001"
LEAD = "+254722000002"
OWN = [OURS, "+254711000099"]
SID = "HD_0123456789ab"


def form(**fields: object) -> bytes:
    return urlencode({k: str(v) for k, v in fields.items()}).encode()


def first_callback(**overrides: object) -> bytes:
    fields: dict[str, object] = {
        "sessionId": SID,
        "callerNumber": OURS,
        "destinationNumber": LEAD,
        "direction": "Outbound",
        "isActive": "1",
        "clientRequestId": "lq-lead-7-2",
    }
    fields.update(overrides)
    return form(**{k: v for k, v in fields.items() if v is not None})


# -- voice callbacks -------------------------------------------------------------------------------


def test_form_first_callback() -> None:
    cb = parse_callback(first_callback(), FORM, {"clientRequestId": "lq-lead-7-2"})
    assert cb.session_id == SID
    assert cb.is_active is True
    assert cb.direction == "Outbound"
    assert cb.client_request_id == "lq-lead-7-2"
    assert cb.lead_attempt == ("lead-7", 2)
    assert cb.call_session_state is None
    assert classify(cb, OWN) is FIRST_SETUP
    parties = cb.parties(OWN)
    assert (parties.lead_number, parties.our_number, parties.matched, parties.swapped) == (
        LEAD,
        OURS,
        True,
        False,
    )


def test_json_callback_with_content_type_parameters() -> None:
    body = json.dumps(
        {
            "sessionId": SID,
            "callerNumber": OURS,
            "destinationNumber": LEAD,
            "callSessionState": "Answered",
            "isActive": True,
            "durationInSeconds": "0",
            "clientRequestId": "lq-lead-7-2",
        }
    ).encode()
    cb = parse_callback(body, "application/json; charset=utf-8", None)
    assert (cb.is_active, cb.duration_s, cb.state) == (True, 0, CallState.ANSWERED)
    assert classify(cb, OWN) is FIRST_SETUP


def test_swapped_numbers_are_resolved_against_our_own() -> None:
    cb = parse_callback(first_callback(callerNumber=LEAD, destinationNumber=OURS), FORM, {})
    parties = cb.parties(OWN)
    assert parties.lead_number == LEAD
    assert parties.our_number == OURS
    assert parties.swapped is True
    assert parties.matched is True


def test_numbers_match_across_spellings() -> None:
    cb = parse_callback(
        first_callback(callerNumber="254711000001", destinationNumber="0722 000 002"), FORM, {}
    )
    parties = cb.parties(OWN)
    assert (parties.lead_number, parties.our_number, parties.swapped) == (
        "0722 000 002",
        "254711000001",
        False,
    )
    assert same_number("+254711000001", "0711-000-001")
    assert not same_number("+254711000001", "+254711000002")
    assert not same_number("+1 555 0100", "0100")  # too short to be a subscriber number
    assert not same_number(None, OURS)


def test_unmatched_numbers_fall_back_to_field_names() -> None:
    cb = parse_callback(first_callback(callerNumber="+254733000000"), FORM, {})
    parties = cb.parties(OWN)
    assert (parties.lead_number, parties.our_number, parties.matched) == (LEAD, None, False)


def test_label_from_query_when_the_body_dropped_it() -> None:
    cb = parse_callback(first_callback(clientRequestId=None), FORM, {"clientRequestId": "lq-lead-7-2"})
    assert cb.client_request_id == "lq-lead-7-2"
    # The body wins when both came.
    cb = parse_callback(first_callback(), FORM, {"clientRequestId": "lq-other-1"})
    assert cb.client_request_id == "lq-lead-7-2"


def test_labels_that_are_not_ours() -> None:
    cb = parse_callback(first_callback(clientRequestId=None), FORM, None)
    assert cb.client_request_id is None
    assert cb.lead_attempt is None
    cb = parse_callback(first_callback(clientRequestId="order-55"), FORM, None)
    assert cb.lead_attempt is None


def test_callback_keeps_every_field() -> None:
    cb = parse_callback(first_callback(callSessionState="Active", extra="x"), FORM, None)
    assert cb.fields["extra"] == "x"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, FIRST_SETUP),
        ({"callSessionState": "Answered"}, FIRST_SETUP),
        ({"callSessionState": "Ringing"}, FIRST_SETUP),
        ({"callSessionState": "SomethingNew"}, FIRST_SETUP),
        ({"callSessionState": "StreamStarted"}, LIFECYCLE),
        ({"callSessionState": "StreamStopped"}, LIFECYCLE),
        ({"callSessionState": "DialCompleted"}, LIFECYCLE),
        ({"callSessionState": "busy"}, LIFECYCLE),
        ({"callSessionState": "no-answer"}, LIFECYCLE),
        ({"callSessionState": "NoAnswer"}, LIFECYCLE),
        ({"callSessionState": "failed"}, LIFECYCLE),
        ({"callSessionState": "Ringing", "isActive": "0"}, LIFECYCLE),
        # Gotcha 4: Completed during set-up, told apart by isActive / direction.
        ({"callSessionState": "Completed", "isActive": "1"}, FIRST_SETUP),
        ({"callSessionState": "Completed", "isActive": "0", "durationInSeconds": "42"}, LIFECYCLE),
        ({"callSessionState": "Completed", "isActive": "0"}, LIFECYCLE),
        ({"callSessionState": "Completed", "isActive": None}, FIRST_SETUP),
        ({"callSessionState": "Completed", "isActive": None, "durationInSeconds": "42"}, LIFECYCLE),
        ({"callSessionState": "Completed", "isActive": None, "direction": "Inbound"}, LIFECYCLE),
        ({"callSessionState": "Completed", "isActive": None, "direction": None}, FIRST_SETUP),
        (
            {
                "callSessionState": "Completed",
                "isActive": None,
                "direction": None,
                "callerNumber": "+254733000000",
            },
            LIFECYCLE,
        ),
    ],
)
def test_classify(overrides: dict[str, object], expected: object) -> None:
    cb = parse_callback(first_callback(**overrides), FORM, None)
    assert classify(cb, OWN) is expected


def test_lifecycle_states_map_to_call_states() -> None:
    def state(word: str) -> CallState | None:
        return parse_callback(first_callback(callSessionState=word), FORM, None).state

    assert state("StreamStarted") is CallState.STREAMING
    assert state("Completed") is CallState.COMPLETED
    assert state("busy") is CallState.BUSY
    assert state("no-answer") is CallState.NO_ANSWER
    assert state("failed") is CallState.FAILED
    assert state("StreamStopped") is None
    assert state("DialCompleted") is None


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        (b"", FORM, "empty"),
        (b"   ", None, "empty"),
        (b"\xff\xfe\x00", FORM, "UTF-8"),
        (b"{not json", "application/json", "JSON"),
        (b"[1, 2]", "application/json", "not an object"),
        (b"just some words", None, "form-encoded"),
        (b"=x&=y", FORM, "form-encoded"),
        (form(callerNumber=OURS, isActive=1), FORM, "sessionId"),
        (b'{"sessionId": ""}', "application/json", "sessionId"),
        (b'{"sessionId": {"nested": 1}}', "application/json", "sessionId"),
    ],
)
def test_garbage_callbacks(body: bytes, content_type: str | None, match: str) -> None:
    with pytest.raises(WebhookError, match=match):
        parse_callback(body, content_type, None)


def test_undeclared_content_type_is_sniffed() -> None:
    assert parse_callback(json.dumps({"sessionId": SID}).encode(), None, None).session_id == SID
    assert parse_callback(first_callback(), "text/plain", None).session_id == SID


# -- events ----------------------------------------------------------------------------------------

ENVELOPE = {
    "kind": "call.completed",
    "event_id": "evt_01J0000000000000000000",
    "workspace_id": "ws_1",
    "occurred_at": "2025-06-04T07:03:10Z",
    "data": {
        "call_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "pbx_call_id": SID,
        "direction": "outbound",
        "from": OURS,
        "to": LEAD,
        "number_id": "0190-number",
        "status": "completed",
        "duration_seconds": 95,
        "answered_at": "2025-06-04T07:01:35Z",
        "ended_at": "2025-06-04T07:03:10Z",
        "hangup_cause": "NORMAL_CLEARING",
        "clientRequestId": "lq-lead-7-2",
    },
}


def test_documented_envelope() -> None:
    event = parse_event(json.dumps(ENVELOPE).encode(), "application/json")
    assert isinstance(event, CallEvent)
    assert event.shape == "envelope"
    assert event.kind is EventKind.CALL_COMPLETED
    assert event.event_id == "evt_01J0000000000000000000"
    assert event.event_id_source == "body"
    assert event.call_id == ENVELOPE["data"]["call_id"]  # type: ignore[index]
    assert event.session_id == SID
    assert event.final_state is CallState.COMPLETED
    assert event.is_final
    assert event.duration_seconds == 95
    assert event.hangup_cause == "NORMAL_CLEARING"
    assert event.occurred_at == datetime(2025, 6, 4, 7, 3, 10, tzinfo=UTC)
    assert event.lead_attempt == ("lead-7", 2)


def test_header_event_id_wins_and_lookup_is_case_insensitive() -> None:
    body = json.dumps(ENVELOPE).encode()
    event = parse_event(body, "application/json", {"x-sautikit-event-id": "hdr-1"})
    assert (event.event_id, event.event_id_source) == ("hdr-1", "header")
    event = parse_event(body, "application/json", {"X-SAUTIKIT-EVENT-ID": "hdr-2"})
    assert event.event_id == "hdr-2"


@pytest.mark.parametrize(
    ("kind", "status", "cause", "expected_kind", "expected_state"),
    [
        ("call.failed", "busy", None, EventKind.CALL_FAILED, CallState.BUSY),
        ("call.failed", "no_answer", None, EventKind.CALL_FAILED, CallState.NO_ANSWER),
        ("call.failed", None, None, EventKind.CALL_FAILED, CallState.FAILED),
        ("call.completed", None, "USER_BUSY", EventKind.CALL_COMPLETED, CallState.BUSY),
        ("call.completed", "completed", "NO_ANSWER", EventKind.CALL_COMPLETED, CallState.NO_ANSWER),
        ("call.completed", "canceled", None, EventKind.CALL_COMPLETED, CallState.CANCELED),
        ("call.answered", "answered", None, EventKind.CALL_ANSWERED, None),
        ("call.started", "ringing", None, EventKind.CALL_STARTED, None),
        ("call.recording.ready", None, None, EventKind.RECORDING_READY, None),
        ("call.transcribed", None, None, EventKind.UNKNOWN, None),
    ],
)
def test_envelope_kinds_and_final_states(
    kind: str,
    status: str | None,
    cause: str | None,
    expected_kind: EventKind,
    expected_state: CallState | None,
) -> None:
    data: dict[str, object] = {"call_id": "c1"}
    if status:
        data["status"] = status
    if cause:
        data["hangup_cause"] = cause
    event = parse_event(json.dumps({"kind": kind, "event_id": "e", "data": data}).encode())
    assert (event.kind, event.final_state) == (expected_kind, expected_state)


def test_envelope_kind_from_header_when_the_body_has_none() -> None:
    body = json.dumps({"data": {"call_id": "c1", "status": "busy"}}).encode()
    event = parse_event(body, "application/json", {"X-Sautikit-Event-Kind": "call.failed"})
    assert (event.shape, event.kind, event.final_state) == ("envelope", EventKind.CALL_FAILED, CallState.BUSY)


@pytest.mark.parametrize(
    ("state", "expected_kind", "expected_final"),
    [
        ("StreamStarted", EventKind.STREAM_STARTED, None),
        ("StreamStopped", EventKind.STREAM_STOPPED, None),
        ("Completed", EventKind.CALL_COMPLETED, CallState.COMPLETED),
        ("DialCompleted", EventKind.DIAL_COMPLETED, None),
        ("busy", EventKind.CALL_FAILED, CallState.BUSY),
        ("no-answer", EventKind.CALL_FAILED, CallState.NO_ANSWER),
        ("failed", EventKind.CALL_FAILED, CallState.FAILED),
        ("Mystery", EventKind.UNKNOWN, None),
    ],
)
def test_raw_switch_bodies_on_the_events_url(
    state: str, expected_kind: EventKind, expected_final: CallState | None
) -> None:
    body = form(
        sessionId=SID,
        callerNumber=OURS,
        destinationNumber=LEAD,
        callSessionState=state,
        isActive=0,
        durationInSeconds=37,
        clientRequestId="lq-lead-7-2",
    )
    event = parse_event(body, FORM)
    assert event.shape == "switch"
    assert (event.kind, event.final_state) == (expected_kind, expected_final)
    assert event.session_id == SID
    assert event.call_id is None
    assert event.status == state
    assert event.duration_seconds == 37
    assert event.client_request_id == "lq-lead-7-2"
    assert event.event_id_source == "hash"


def test_switch_body_completed_with_busy_cause() -> None:
    event = parse_event(form(sessionId=SID, callSessionState="Completed", hangupCause="USER_BUSY"), FORM)
    assert event.final_state is CallState.BUSY


def test_hash_event_id_is_stable_per_body() -> None:
    body = form(sessionId=SID, callSessionState="Completed")
    first, again = parse_event(body, FORM), parse_event(body, FORM)
    other = parse_event(form(sessionId=SID, callSessionState="StreamStopped"), FORM)
    assert first.event_id == again.event_id
    assert first.event_id.startswith("sha256:")
    assert other.event_id != first.event_id


@pytest.mark.parametrize(
    ("body", "content_type", "query", "kind"),
    [
        (
            json.dumps(
                {"event": "stream-started", "name": "lq-lead-7-2", "callSid": SID, "streamSid": "MZ1"}
            ).encode(),
            "application/json",
            None,
            EventKind.STREAM_STARTED,
        ),
        (form(StreamEvent="stream-stopped", sessionId=SID), FORM, None, EventKind.STREAM_STOPPED),
        (
            form(status="stream-error", error="websocket 1006"),
            FORM,
            {"clientRequestId": "lq-lead-7-2"},
            EventKind.STREAM_ERROR,
        ),
        (
            json.dumps({"type": "STREAM_STOPPED", "call_id": SID}).encode(),
            None,
            None,
            EventKind.STREAM_STOPPED,
        ),
    ],
)
def test_stream_status_callbacks(
    body: bytes, content_type: str | None, query: dict[str, str] | None, kind: EventKind
) -> None:
    event = parse_event(body, content_type, None, query)
    assert event.shape == "stream"
    assert event.kind is kind
    assert event.final_state is None
    assert event.session_id == SID or event.client_request_id == "lq-lead-7-2"


def test_stream_error_detail_and_label_from_name() -> None:
    body = json.dumps({"event": "stream-error", "name": "lq-lead-7-2", "error": "connect refused"}).encode()
    event = parse_event(body)
    assert event.failure_reason == "connect refused"
    assert event.lead_attempt == ("lead-7", 2)


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        (b"", "application/json", "empty"),
        (b"\x00\xff", "application/json", "UTF-8"),
        (b'"call.completed"', "application/json", "not an object"),
        (b'{"hello": "world"}', "application/json", "neither"),
        (form(callSessionState="Completed"), FORM, "names no call"),
        (b"<xml/>", "application/xml", "form-encoded"),
    ],
)
def test_garbage_events(body: bytes, content_type: str, match: str) -> None:
    with pytest.raises(WebhookError, match=match):
        parse_event(body, content_type)


# -- signatures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["X-Sautikit-Signature", "x-sautikit-signature", "X-SAUTIKIT-SIGNATURE"])
def test_verify_request_header_lookup_is_case_insensitive(name: str) -> None:
    body = first_callback()
    headers = {"content-type": FORM, name: sign_webhook("whsec", body, timestamp=1_750_000_000)}
    verify_request("whsec", body, headers, now=1_750_000_010)


def test_verify_request_rejects_missing_and_tampered() -> None:
    body = first_callback()
    with pytest.raises(SignatureError, match="missing"):
        verify_request("whsec", body, {"content-type": FORM}, now=1_750_000_000)
    with pytest.raises(SignatureError, match="missing"):
        verify_request("whsec", body, None, now=1_750_000_000)
    header = sign_webhook("whsec", body, timestamp=1_750_000_000)
    with pytest.raises(SignatureError, match="mismatch"):
        verify_request("whsec", body + b"&isActive=0", {"x-sautikit-signature": header}, now=1_750_000_000)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_request("whsec", body, {"x-sautikit-signature": header}, now=1_750_000_000 + 301)
