"""Call lifecycle against the directory: outcomes, signed callbacks, events, billing and the §7 traps."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from datetime import datetime

import numpy as np
import pytest
from conftest import FROM, place_call

from local.sautikit.audio import read_wav, rms

pytestmark = pytest.mark.integration

LEAD = "+254712000001"


async def place(sim, to: str, label: str | None = "lq-lead-1", **extra) -> dict:
    return await place_call(sim, to, label, **extra)


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_unanswered_outcomes_follow_the_directory_and_cost_nothing(make_sim, fake_app):
    sim = await make_sim(
        {
            "numbers": {
                "+254712000003": {"answer": "no_answer"},
                "+254712000004": {"answer": "busy"},
                "+254712000011": {"answer": "fail", "failure_code": "unreachable"},
            }
        }
    )
    numbers = {
        "+254712000003": "no_answer",
        "+254712000004": "busy",
        "+254712000011": "failed",
        "+254799000000": "no_answer",
    }
    created = {n: await place(sim, n, label=f"lq-{n[-2:]}-1") for n in numbers}
    views = {n: await sim.wait_ended(c["session_id"], 5) for n, c in created.items()}
    await sim.drain()
    for number, status in numbers.items():
        call = views[number]["call"]
        assert call["status"] == status, number
        assert call["answered_at"] is None
        assert call["cost_minor"] == 0
        assert call["duration_seconds"] == 0
    assert views["+254712000011"]["call"]["failure_code"] == "unreachable"
    assert sim.wallet_minor == 100_000
    # The voice URL is told about each ending (in code: busy, no-answer, failed), never "answered".
    states = {r.data["sessionId"]: r.data["callSessionState"] for r in fake_app.voice()}
    assert sorted(states.values()) == ["busy", "failed", "no-answer", "no-answer"]
    assert all(r.data["isActive"] == "0" for r in fake_app.voice())
    # Events: call.started then call.failed with the reason.
    kinds = Counter(json.loads(r.body)["kind"] for r in fake_app.events() if "kind" in json.loads(r.body))
    assert kinds["call.started"] == 4
    assert kinds["call.failed"] == 4
    failed = [
        json.loads(r.body) for r in fake_app.events() if json.loads(r.body).get("kind") == "call.failed"
    ]
    assert {e["data"]["failure_reason"] for e in failed} == {"no_answer", "busy", "unreachable"}
    assert all(r.signature_ok for r in fake_app.requests)


async def test_answered_call_bills_per_second_and_signs_every_callback(make_sim, fake_app):
    sim = await make_sim({"numbers": {LEAD: {"rings": 2}}}, rate_per_minute_minor=300)
    fake_app.answer_with("<Response><Say>Hello, this is a short test call.</Say><Hangup/></Response>")
    created = await place(sim, LEAD, label="lq-L9-1")
    view = await sim.wait_ended(created["session_id"], 15)
    await sim.drain()
    call = view["call"]
    assert call["status"] == "completed"
    assert call["hangup_cause"] == "hangup_verb"
    connected = (ts(call["ended_at"]) - ts(call["answered_at"])).total_seconds()
    assert 1.5 < connected < 6  # the Say played in real time
    assert call["duration_seconds"] == math.ceil(round(connected, 3))
    assert call["cost_minor"] == call["duration_seconds"] * 5  # KES 3.00/min = 5 minor/s
    assert call["cost_currency"] == "KES"
    assert call["rate_per_minute_minor"] == 300
    assert sim.wallet_minor == 100_000 - call["cost_minor"]
    assert sim.debits()[0]["amount_minor"] == call["cost_minor"]
    assert [v["verb"] for v in view["verbs"]] == ["say", "hangup"]

    first = fake_app.voice("Answered")[0]
    assert first.query == {"clientRequestId": "lq-L9-1"}
    assert first.data["clientRequestId"] == "lq-L9-1"
    assert first.data["sessionId"] == created["session_id"]
    assert (first.data["callerNumber"], first.data["destinationNumber"]) == (FROM, LEAD)
    assert first.data["direction"] == "Outbound"
    assert first.data["isActive"] == "1"
    assert first.headers["Content-Type"] == "application/x-www-form-urlencoded"
    completed = fake_app.voice("Completed")
    assert len(completed) == 1
    assert completed[0].data["isActive"] == "0"
    assert completed[0].data["durationInSeconds"] == str(call["duration_seconds"])

    envelopes = [json.loads(r.body) for r in fake_app.events() if "kind" in json.loads(r.body)]
    kinds = [e["kind"] for e in envelopes]
    assert kinds == ["call.started", "call.answered", "call.completed", "call.recording.ready"]
    done = envelopes[2]
    assert set(done) >= {"kind", "event_id", "workspace_id", "occurred_at", "data"}
    assert done["data"]["call_id"] == created["call_id"]
    assert done["data"]["number_id"] == "num_test_1"
    assert done["data"]["duration_seconds"] == call["duration_seconds"]
    assert done["data"]["clientRequestId"] == "lq-L9-1"
    # The other documented shape: the switch's own body forwarded to the events URL.
    switch = [json.loads(r.body) for r in fake_app.events() if "callSessionState" in json.loads(r.body)]
    assert [b["callSessionState"] for b in switch] == ["Completed"]
    for r in fake_app.events():
        assert r.headers["X-Sautikit-Event-Id"]
        assert r.headers["X-Sautikit-Event-Kind"]

    assert fake_app.requests
    assert all(r.signature_ok for r in fake_app.requests)
    assert all(d["status"] == 200 for d in sim.deliveries())
    assert sim.violations() == []

    audio, rate = read_wav(sim.call_object(created["session_id"]).wav_path)
    assert rate == 16000
    assert audio.shape[1] == 2
    assert rms(audio[:, 1]) > 300  # the lead heard the Say
    assert rms(audio[:, 0]) < 5  # and, with no lines to say, said nothing
    assert abs(audio.shape[0] / 16000 - connected) < 0.3


async def test_unsafe_label_is_echoed_but_dropped_from_callbacks(make_sim, fake_app):
    sim = await make_sim()
    label = 'lead 42, {"x"}'
    created = await place(sim, "+254799000000", label=label)
    assert created["client_request_id"] == label
    await sim.wait_ended(created["session_id"], 5)
    await sim.drain()
    assert fake_app.voice()
    assert fake_app.events()
    for r in fake_app.requests:
        assert "clientRequestId" not in r.query
        assert b"clientRequestId" not in r.body
    assert sim.call(created["session_id"])["call"]["metadata"] == {"client_request_id": label}


async def test_swapped_numbers_early_completed_and_duplicate_deliveries(make_sim, fake_app):
    sim = await make_sim(
        {"numbers": {LEAD: {"swap_numbers": True, "early_completed": True, "duplicate_callbacks": True}}}
    )
    fake_app.answer_with("<Response><Hangup/></Response>")
    created = await place(sim, LEAD, label="lq-dup-1")
    await sim.wait_ended(created["session_id"], 10)
    await sim.drain()
    setup = [r for r in fake_app.voice() if r.data["isActive"] == "1"]
    assert len(setup) == 1  # the set-up callback is never duplicated
    assert setup[0].data["callSessionState"] == "Completed"  # §7.4, told apart by isActive
    assert (setup[0].data["callerNumber"], setup[0].data["destinationNumber"]) == (LEAD, FROM)  # §7.5
    finals = [r for r in fake_app.voice() if r.data["isActive"] == "0"]
    assert len(finals) == 2
    assert finals[0].body == finals[1].body
    ids = Counter(r.headers["X-Sautikit-Event-Id"] for r in fake_app.events())
    assert ids
    assert set(ids.values()) == {2}
    assert all(r.signature_ok for r in fake_app.requests)


async def test_events_are_retried_with_backoff_and_non_2xx_is_recorded(make_sim, fake_app):
    sim = await make_sim()
    fake_app.event_statuses = [500, 503]
    created = await place(sim, "+254799000000", label="lq-retry-1")
    await sim.wait_ended(created["session_id"], 5)
    await sim.drain()
    started = [d for d in sim.deliveries(purpose="event") if d["event_kind"] == "call.started"]
    assert [d["status"] for d in started] == [500, 503, 200]
    assert [d["attempt"] for d in started] == [1, 2, 3]
    assert len({d["event_id"] for d in started}) == 1
    assert [v["reason"] for v in sim.violations()] == ["webhook_non_2xx", "webhook_non_2xx"]


async def test_signature_problems_on_both_sides_are_recorded(make_sim, fake_app):
    fake_app.expect_valid_signatures = False
    # 1. The app rejects a correctly signed callback: its verification is broken.
    sim = await make_sim({"numbers": {LEAD: {}, "+254712000002": {"bad_signature": True}}})
    fake_app.secret = "a-different-secret"
    created = await place(sim, LEAD, label="lq-sig-1")
    view = await sim.wait_ended(created["session_id"], 10)
    assert view["call"]["hangup_cause"] == "application_error"
    assert "bad_signature_response" in {v["reason"] for v in view["violations"]}

    # 2. The simulator mis-signs on purpose; a verifying app answers 401 and that is correct.
    fake_app.secret = "whsec_test_secret"
    created = await place(sim, "+254712000002", label="lq-sig-2")
    view = await sim.wait_ended(created["session_id"], 10)
    assert view["violations"] == []
    assert view["call"]["hangup_cause"] == "application_error"

    # 3. An app that does not verify accepts the wrong signature: recorded.
    fake_app.verify = False
    fake_app.answer_with("<Response><Hangup/></Response>")
    created = await place(sim, "+254712000002", label="lq-sig-3")
    view = await sim.wait_ended(created["session_id"], 10)
    assert "accepted_bad_signature" in {v["reason"] for v in view["violations"]}


async def test_slow_webhook_is_recorded_and_the_call_dropped(make_sim, fake_app):
    sim = await make_sim({"numbers": {LEAD: {}}}, webhook_timeout_s=0.3)
    fake_app.voice_delay_s = 0.6
    created = await place(sim, LEAD, label="lq-slow-1")
    view = await sim.wait_ended(created["session_id"], 10)
    assert [v["reason"] for v in view["violations"]] == ["webhook_slow"]
    assert view["call"]["hangup_cause"] == "application_error"


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("text/plain", "OK", "unparseable_document"),
        ("application/xml", "<Response><Say>unclosed</Response>", "unparseable_document"),
        ("application/xml", "<Reply><Hangup/></Reply>", "unparseable_document"),
        (
            "application/json",
            json.dumps({"actions": [{"dial": {"number": "+254711999000", "numbers": ["+254711999001"]}}]}),
            "invalid_json_actions",
        ),
        ("application/json", json.dumps({"actions": [{"say": {"text": "x"}}] * 51}), "invalid_json_actions"),
    ],
)
async def test_unusable_documents_are_violations_and_end_the_call(
    make_sim, fake_app, content_type, body, reason
):
    sim = await make_sim({"numbers": {LEAD: {}}})
    fake_app.voice_reply = lambda _r: (200, content_type, body)
    created = await place(sim, LEAD)
    view = await sim.wait_ended(created["session_id"], 10)
    assert [v["reason"] for v in view["violations"]] == [reason]
    assert view["call"]["hangup_cause"] == "application_error"
    assert view["verbs"] == []


async def test_json_actions_run_and_unknown_xml_verbs_are_skipped(make_sim, fake_app):
    sim = await make_sim({"numbers": {LEAD: {}, "+254712000002": {}}})
    fake_app.voice_reply = lambda _r: (
        200,
        "application/json",
        json.dumps({"actions": [{"say": {"text": "Hi.", "language": "en-KE"}}, {"hangup": {}}]}),
    )
    created = await place(sim, LEAD, label="lq-json-1")
    view = await sim.wait_ended(created["session_id"], 10)
    assert [v["verb"] for v in view["verbs"]] == ["say", "hangup"]
    assert view["violations"] == []

    fake_app.answer_with("<Response><Pause length='1'/><Say>Hi.</Say><Hangup/></Response>")
    created = await place(sim, "+254712000002", label="lq-xml-1")
    view = await sim.wait_ended(created["session_id"], 10)
    assert [v["verb"] for v in view["verbs"]] == ["say", "hangup"]
    assert [v["reason"] for v in view["violations"]] == ["unknown_verb"]


async def test_completed_can_arrive_late(make_sim, fake_app):
    sim = await make_sim({"numbers": {LEAD: {"late_completed_s": 1.0}}})
    fake_app.answer_with("<Response><Hangup/></Response>")
    created = await place(sim, LEAD, label="lq-late-1")
    await sim.wait_ended(created["session_id"], 10)
    ended = time.monotonic()
    await sim.drain()
    completed = fake_app.voice("Completed")
    assert len(completed) == 1
    assert completed[0].t - ended >= 0.9
    # The events URL already had call.completed, well before the late callback.
    done = next(r for r in fake_app.events() if json.loads(r.body).get("kind") == "call.completed")
    assert done.t < completed[0].t - 0.5


async def test_recording_is_stereo_lead_left_heard_right(make_sim, fake_app):
    """A person's hello lands on the left channel only; the switch's Say on the right only."""
    sim = await make_sim({"numbers": {LEAD: {"hello": "Hello?"}}})
    fake_app.answer_with("<Response><Say>One moment.</Say><Say>Okay then.</Say><Hangup/></Response>")
    created = await place(sim, LEAD)
    await sim.wait_ended(created["session_id"], 15)
    audio, _ = read_wav(sim.call_object(created["session_id"]).wav_path)
    left, right = audio[:, 0].astype(np.float32), audio[:, 1].astype(np.float32)
    assert rms(left.astype(np.int16)) > 200
    assert rms(right.astype(np.int16)) > 200
    # Not the same signal copied to both channels.
    assert float(np.corrcoef(left, right)[0, 1]) < 0.5
    await asyncio.sleep(0)


def wav_bytes(seconds: float, freq: float = 600.0, rate: int = 8000) -> bytes:
    import io
    import wave

    t = np.arange(int(seconds * rate)) / rate
    pcm = (7000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


async def test_play_getdigits_redirect_and_reject(make_sim, fake_app):
    sim = await make_sim({"numbers": {LEAD: {"digits": ["1"]}}})
    base = fake_app.http_url
    fake_app.routes["/hold.wav"] = (200, "audio/wav", wav_bytes(0.5))
    fake_app.routes["/digits"] = (
        200,
        "application/xml",
        f"<Response><Redirect>{base}/next</Redirect></Response>".encode(),
    )
    fake_app.routes["/next"] = (200, "application/xml", b'<Response><Reject reason="busy"/></Response>')
    fake_app.answer_with(
        f'<Response><Play>{base}/hold.wav</Play><GetDigits timeout="3" numDigits="1" callbackUrl="{base}/digits">'
        "<Say>Press one.</Say></GetDigits><Say>Not reached.</Say></Response>"
    )
    created = await place(sim, LEAD, label="lq-v-1")
    view = await sim.wait_ended(created["session_id"], 15)
    assert [v["verb"] for v in view["verbs"]] == ["play", "getdigits", "redirect", "reject"]
    assert view["call"]["hangup_cause"] == "rejected"
    play = entries(view, "play")[0]
    assert abs(play["duration_s"] - 0.5) < 0.05  # the 8 kHz file resampled, not sped up
    digits = [r for r in fake_app.requests if r.path == "/digits"]
    assert len(digits) == 1
    assert digits[0].data["dtmfDigits"] == "1"
    assert digits[0].data["sessionId"] == created["session_id"]
    assert [r.data["callSessionState"] for r in fake_app.requests if r.path == "/next"] == ["Redirected"]
    assert view["violations"] == []
    saved = json.loads(sim.call_object(created["session_id"]).timeline_path.read_text())
    assert saved["call"]["status"] == "completed"
    assert [e["kind"] for e in saved["timeline"]] == [e["kind"] for e in view["timeline"]]


def entries(view: dict, kind: str) -> list[dict]:
    return [e for e in view["timeline"] if e["kind"] == kind]
