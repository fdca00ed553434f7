"""The calling pipeline over real HTTP: SQS (moto server) → dialer → Sautikit simulator → voice
webhook → stream to a stand-in bridge → REST hangup → events → a billed call record; and the
duplicates, crashes, forged webhooks, window boundaries and empty wallets that must not double
anything or lose a lead."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pipeline_rig import API_KEY, FROM, NAIROBI, SECRET, Rig, finished, lead, unique, wait_for

from leadqual.accounting import ENDED_BEFORE_QUALIFICATION
from leadqual.cli import main
from leadqual.models import CallState, Lead, LeadStatus, Outcome
from leadqual.signing import sign_webhook

pytestmark = pytest.mark.integration


def xml(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314 -- our own handler's output, parsed to check its structure


def test_a_lead_goes_from_the_queue_to_a_billed_call_record(pipeline: Rig) -> None:
    rig, lead_id, phone = pipeline, unique("flow"), "+254712000101"
    rig.send(lead(lead_id, phone))

    assert rig.poll() == 1
    assert rig.failures() == []
    wait_for(lambda: finished(rig, lead_id))
    rig.sim.drain()

    [placed] = rig.calls_to(phone)
    session = placed["call"]["session_id"]
    assert placed["client_request_id"] == f"lq-{lead_id}-1"
    # The voice webhook: the first callback got one valid stream document, every re-invocation an empty one.
    replies = rig.voice_log.bodies(session)
    firsts = [body for request, status, body in replies if "callSessionState=Answered" in request]
    assert len(firsts) == 1
    doc = xml(firsts[0])
    assert [v.tag for v in doc] == ["Stream", "Dial", "Say", "Hangup"]
    stream = doc[0].attrib
    assert (stream["connect"], stream["track"]) == ("true", "inbound_track")
    assert json.loads(stream["headerMetadata"]) == {"lead_id": lead_id, "attempt": 1, "campaign": "example"}
    lifecycle = [body for request, _, body in replies if "callSessionState=Answered" not in request]
    assert lifecycle, "the simulator re-invoked the webhook on lifecycle edges"
    assert all(body == "<Response/>" for body in lifecycle)
    assert all(status == 200 for _, status, _ in replies)
    # The stand-in bridge got the socket with a valid token bound to this session, and the metadata.
    [bridged] = [s for s in rig.bridge.sessions if s.session_id == session]
    assert bridged.token_ok
    assert bridged.hung_up
    assert bridged.metadata is not None
    assert bridged.metadata["headers"] == {"lead_id": lead_id, "attempt": 1, "campaign": "example"}
    assert bridged.frames > 20  # about a second of 20 ms frames
    # The stored call record carries the simulator's billing.
    record = placed["call"] if placed["call"]["status"] == "completed" else rig.sim.call(session)["call"]
    call = rig.store.get_call(lead_id, 1)
    assert call is not None
    assert call.state is CallState.COMPLETED
    assert call.session_id == session
    assert call.call_id == record["id"]
    assert call.duration_seconds == call.billed_seconds == record["duration_seconds"]
    assert call.cost_minor == record["cost_minor"]
    assert call.cost_currency == "KES"
    profile = rig.store.get_lead(lead_id)
    assert profile is not None
    assert (profile.outcome, profile.reason) == (Outcome.COLD_CLOSED, ENDED_BEFORE_QUALIFICATION)
    assert rig.sim.violations(session) == []
    assert len(rig.sim.call(session)["streams"]) == 1
    assert rig.sink.total("CallsPlaced") == rig.sink.total("CallsAnswered") == 1
    assert rig.store.acquire_slot(5, "probe", 30), "the pacing slot came back"
    rig.store.release_slot("probe")


def test_the_same_sqs_message_twice_dials_once(pipeline: Rig) -> None:
    rig, lead_id, phone = pipeline, unique("twice"), "+254712000103"
    body = json.dumps(lead(lead_id, phone))
    rig.send(body)
    rig.send(body)  # at-least-once delivery: the same body arrives again

    while rig.poll():
        pass
    wait_for(lambda: finished(rig, lead_id))

    assert len(rig.calls_to(phone)) == 1
    assert len(rig.store.list_calls(lead_id)) == 1
    assert rig.sink.total("CallsPlaced") == 1


def test_duplicated_webhooks_give_one_stream_and_one_call_record(pipeline: Rig) -> None:
    rig, lead_id, phone = pipeline, unique("dupes"), "+254712000102"  # this phone's callbacks come twice
    rig.send(lead(lead_id, phone))
    rig.poll()
    wait_for(lambda: finished(rig, lead_id))
    rig.sim.drain()

    [placed] = rig.calls_to(phone)
    session = placed["call"]["session_id"]
    replies = rig.voice_log.bodies(session)
    lifecycle = [
        (request, body) for request, _, body in replies if "callSessionState=Answered" not in request
    ]
    states = [r.split("callSessionState=")[1].split("&")[0] for r, _ in lifecycle]
    assert states.count("Completed") == 2, "the simulator delivered each re-invocation twice"
    assert all(body == "<Response/>" for _, body in lifecycle)
    events = [json.loads(body)["result"] for _, _, body in rig.events_log.bodies(session)]
    assert events.count("duplicate") >= 3
    assert events.count("finalized") == 1
    assert len(rig.sim.call(session)["streams"]) == 1
    assert rig.sim.violations(session) == []

    # The first callback delivered once more (same bytes, same signature) after the call: no second stream.
    [(first, _)] = [(e, r) for e, r in rig.voice_log.calls if session in _raw(e) and "Answered" in _raw(e)]
    again = httpx.post(
        f"{rig.api.url}/voice?{first['rawQueryString']}",
        content=_raw(first).encode(),
        headers={k: v for k, v in first["headers"].items() if k in ("content-type", "x-sautikit-signature")},
        trust_env=False,
    )
    assert (again.status_code, again.text) == (200, "<Response/>")
    assert len(rig.store.list_calls(lead_id)) == 1
    assert rig.sink.total("BilledSeconds") == rig.store.list_calls(lead_id)[0].billed_seconds
    assert rig.sink.total("CallsAnswered") == 1


def _raw(event: dict[str, Any]) -> str:
    return (
        base64.b64decode(event["body"]).decode()
        if event.get("isBase64Encoded")
        else str(event.get("body", ""))
    )


def test_a_dialer_crash_after_the_carrier_accepted_still_makes_one_call(pipeline: Rig) -> None:
    rig, lead_id, phone = pipeline, unique("crash"), "+254712000104"
    crashed: list[str] = []

    def crash_once(placed: object) -> None:
        if not crashed:
            crashed.append("boom")
            raise RuntimeError("dialer died after POST /v1/calls returned")

    rig.dialer.fault_after_dial = crash_once
    rig.send(lead(lead_id, phone))

    rig.poll(redeliver_failures=True)
    assert len(rig.failures()) == 1, "the crashed record was reported failed, so SQS redelivers it"
    rig.poll()  # the redelivery
    wait_for(lambda: finished(rig, lead_id))

    assert len(rig.calls_to(phone)) == 1
    [call] = rig.store.list_calls(lead_id)
    assert call.session_id == rig.calls_to(phone)[0]["call"]["session_id"]
    assert rig.sink.total("CallsPlaced") == 1


@pytest.mark.parametrize("path", ["/voice", "/events", "/stream-status"])
@pytest.mark.parametrize("how", ["forged", "stale", "missing"])
def test_forged_stale_and_missing_signatures_get_401_and_change_nothing(
    pipeline: Rig, path: str, how: str
) -> None:
    rig = pipeline
    lead_id = unique("forged")
    rig.store.put_lead(Lead.model_validate(lead(lead_id, "+254712000108")))
    rig.store.begin_attempt(lead_id, 1)
    before = rig.table_items()
    body = (
        f"sessionId=HD_000000000001&callSessionState=Answered&isActive=1&clientRequestId=lq-{lead_id}-1"
        if path == "/voice"
        else json.dumps(
            {
                "kind": "call.completed",
                "event_id": "e1",
                "data": {"status": "completed", "clientRequestId": f"lq-{lead_id}-1"},
            }
        )
    )
    raw = body.encode()
    headers = {
        "content-type": "application/x-www-form-urlencoded" if path == "/voice" else "application/json"
    }
    if how == "forged":
        headers["X-Sautikit-Signature"] = sign_webhook("not-" + SECRET, raw)
    elif how == "stale":
        headers["X-Sautikit-Signature"] = sign_webhook(
            SECRET, raw, timestamp=int(datetime.now().timestamp()) - 301
        )

    response = httpx.post(f"{rig.api.url}{path}", content=raw, headers=headers, trust_env=False)

    assert response.status_code == 401
    assert rig.table_items() == before
    assert rig.sink.total("WebhookRejected") == 1


def test_deferral_across_the_calling_window_boundary(pipeline: Rig) -> None:
    rig, lead_id, phone = pipeline, unique("window"), "+254712000105"
    opening = datetime(2025, 6, 5, 8, 0, tzinfo=NAIROBI)
    rig.clock.set(datetime(2025, 6, 4, 19, 0, 30, tzinfo=NAIROBI))  # the KE window closed at 19:00
    rig.send(lead(lead_id, phone))

    rig.poll()
    profile = rig.store.get_lead(lead_id)
    assert profile is not None
    assert (profile.status, profile.next_attempt_at) == (LeadStatus.DEFERRED, opening)
    rig.clock.set(datetime(2025, 6, 5, 7, 59, 59, tzinfo=NAIROBI))
    assert wait_for(rig.poll, timeout=5), "the deferred lead came back through the queue"
    assert rig.calls_to(phone) == [], "one second before the opening is too early"

    rig.clock.set(opening)
    assert wait_for(rig.poll, timeout=5)
    wait_for(lambda: finished(rig, lead_id))
    assert len(rig.calls_to(phone)) == 1
    assert rig.sink.total("LeadsDeferred") == 1  # one deferral; the early arrival was only sent on again


def test_an_empty_wallet_is_recorded_once(pipeline: Rig) -> None:
    rig, lead_id, phone = pipeline, unique("broke"), "+254712000107"
    rig.sim.set_wallet(0)
    body = json.dumps(lead(lead_id, phone))
    rig.send(body)
    rig.send(body)

    while rig.poll():
        pass

    assert rig.calls_to(phone) == []
    assert rig.failures() == [], "a 402 is permanent: acknowledged, not retried"
    profile = rig.store.get_lead(lead_id)
    assert profile is not None
    assert (profile.status, profile.outcome) == (LeadStatus.DONE, Outcome.FAILED)
    assert profile.reason is not None
    assert profile.reason.startswith("wallet has insufficient funds (402 wallet.insufficient_funds")
    [call] = rig.store.list_calls(lead_id)
    assert call.state is CallState.FAILED
    assert rig.sink.total("DialFailures") == 1
    assert ("WalletBalanceMinor", 0, "None") in rig.sink.emitted


def test_a_busy_line_schedules_the_next_attempt(pipeline: Rig) -> None:
    rig, lead_id, phone = pipeline, unique("busy"), "+254712000106"
    rig.send(lead(lead_id, phone))
    rig.poll()

    profile = wait_for(
        lambda: (p := rig.store.get_lead(lead_id)) and p.status is LeadStatus.RETRY_SCHEDULED and p
    )
    assert profile.outcome is None
    assert profile.reason == "call ended busy"
    call = rig.store.get_call(lead_id, 1)
    assert call is not None
    assert (call.state, call.billed_seconds, call.cost_minor) == (CallState.BUSY, 0, 0)
    assert rig.store.acquire_slot(5, "probe", 30)
    rig.store.release_slot("probe")


def test_the_api_key_and_number_are_the_simulators(pipeline: Rig) -> None:
    # Guard for the rest of the module: the pieces really talk to each other, not to defaults.
    numbers = httpx.get(
        f"{pipeline.sim.url}/v1/numbers", headers={"Authorization": f"Bearer {API_KEY}"}, trust_env=False
    )
    assert [n["e164"] for n in numbers.json()["numbers"]] == [FROM]
    assert numbers.json()["numbers"][0]["routing_url"] == f"{pipeline.api.url}/voice"


def test_enqueue_and_report_commands_against_the_stack(
    pipeline: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rig = pipeline
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(key, value)
    answers, away = unique("cli"), unique("cli")
    leads_csv = tmp_path / "leads.csv"
    leads_csv.write_text(
        "lead_id,phone,name,company,opt_in,campaign\n"
        f"{answers},0712 000 109,Wanjiru,Acme,yes,reportcheck\n"
        f"{away},+254712000110,Kamau,Acme,yes,reportcheck\n"
        "broken,12,Nobody,Acme,yes,reportcheck\n"
    )

    code = main(
        [
            "enqueue",
            str(leads_csv),
            "--queue-url",
            rig.resources.queue_url,
            "--endpoint-url",
            rig.endpoint,
            "--campaigns-dir",
            str(rig.campaigns_dir),
            "--no-progress",
        ]
    )
    assert code == 1  # one invalid row, reported; the valid ones were sent
    assert "invalid: line 4: broken: phone: " in capsys.readouterr().err
    while rig.poll():
        pass
    wait_for(lambda: finished(rig, answers))
    wait_for(lambda: (p := rig.store.get_lead(away)) and p.status is LeadStatus.RETRY_SCHEDULED)

    out = tmp_path / "report.json"
    assert (
        main(
            [
                "report",
                "--table",
                rig.resources.table_name,
                "--endpoint-url",
                rig.endpoint,
                "--campaign",
                "reportcheck",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    call = rig.store.get_call(answers, 1)
    assert call is not None
    assert call.billed_seconds is not None
    assert call.cost_minor is not None
    assert report["totals"] == {
        "leads": 2,
        "dialed": 2,
        "answered": 1,
        "hot": 0,
        "cold": 1,
        "transferred": 0,
        "billed_seconds": call.billed_seconds,
        "kes": round(call.cost_minor / 100, 2),
        "cost_per_qualified_lead_kes": None,
    }
    assert {r["lead_id"]: r["status"] for r in report["leads"]} == {answers: "done", away: "retry_scheduled"}
