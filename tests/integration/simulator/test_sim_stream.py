"""The `<Stream>` fork: subprotocol, metadata, real-time frames, playback, killAudio and the §7 traps."""

from __future__ import annotations

import asyncio
import html
import json
import time

import httpx
import numpy as np
import pytest
from conftest import API_KEY, FakeApp, place_call, send_audio, tone16k

from local.sautikit.audio import read_wav

pytestmark = pytest.mark.integration

LEAD = "+254712000001"
SILENT = {"numbers": {LEAD: {"says": []}}}


async def place(sim, to: str = LEAD, label: str = "lq-s-1") -> dict:
    return await place_call(sim, to, label)


async def rest_hangup(sim, call_id: str) -> None:
    async with httpx.AsyncClient(trust_env=False) as c:
        r = await c.post(
            f"{sim.url}/v1/calls/{call_id}/hangup", headers={"Authorization": f"Bearer {API_KEY}"}
        )
    assert r.status_code == 200


def loud_frames(channel: np.ndarray, threshold: float = 500.0) -> np.ndarray:
    """Indexes of 20 ms frames (16 kHz) whose RMS is above the threshold."""
    n = channel.size // 320
    frames = channel[: n * 320].astype(np.float32).reshape(n, 320)
    return np.nonzero(np.sqrt((frames**2).mean(axis=1)) > threshold)[0]


async def test_stream_without_connect_drops_the_call_in_about_a_second(make_sim, fake_app):
    sim = await make_sim(SILENT)
    fake_app.answer_with(fake_app.stream_xml(connect=None, after="<Say>Never heard.</Say>"))
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 10)
    rec = fake_app.ws[0]
    assert rec.close_code == 1006  # no close frame: the TCP connection just died
    assert 0.8 < rec.closed_at - rec.opened_at < 1.6
    assert view["call"]["hangup_cause"] == "stream_not_connected"
    assert [v["verb"] for v in view["verbs"]] == ["stream"]
    assert [v["reason"] for v in view["violations"]] == ["stream_missing_connect"]


async def test_a_server_that_does_not_select_the_subprotocol_is_refused(make_sim, fake_app):
    plain = await FakeApp(select_subprotocol=False).start()
    try:
        sim = await make_sim(SILENT)
        fake_app.answer_with(fake_app.stream_xml(url=f"{plain.ws_url}/media"))
        created = await place(sim)
        view = await sim.wait_ended(created["session_id"], 10)
        await sim.drain()
    finally:
        await plain.stop()
    assert plain.ws[0].subprotocol is None
    assert plain.ws[0].close_code == 1002
    assert plain.ws[0].first_frame_was_text is None  # refused before any metadata or audio
    assert [v["reason"] for v in view["violations"]] == ["missing_subprotocol"]
    assert view["call"]["hangup_cause"] == "stream_error"
    assert [r.data["event"] for r in fake_app.stream_statuses()] == ["stream-error"]


async def test_metadata_first_then_paced_20ms_frames_and_pings_answered(make_sim, fake_app):
    sim = await make_sim(SILENT)
    headers = html.escape(json.dumps({"lead_id": "L-7", "token": "abc.def"}), quote=True)
    fake_app.answer_with(
        fake_app.stream_xml(headerMetadata=headers, name="agent", after="<Hangup/>").replace("&amp;", "&")
    )
    pings: list[float] = []

    async def behaviour(ws, rec):
        await asyncio.sleep(0.5)
        started = time.monotonic()
        await asyncio.wait_for(await ws.ping(), 1.0)
        pings.append(time.monotonic() - started)
        await asyncio.sleep(1.7)
        await ws.close()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 10)
    await sim.drain()
    rec = fake_app.ws[0]
    assert rec.subprotocol == "audio.drachtio.org"
    assert rec.path == "/media?token=abc"  # the query string is kept
    assert rec.first_frame_was_text is True
    meta = rec.metadata
    assert meta["callSid"] == created["session_id"]
    assert meta["call_id"] == created["call_id"]
    assert meta["headers"] == {"lead_id": "L-7", "token": "abc.def"}
    assert meta["sampleRate"] == 16000
    assert meta["channels"] == 1
    assert meta["track"] == "inbound_track"
    assert meta["clientRequestId"] == "lq-s-1"
    assert pings
    assert pings[0] < 0.5

    times = np.array([t for t, _ in rec.frames])
    assert {len(f) for _, f in rec.frames} == {640}  # 20 ms of S16LE at 16 kHz
    span = times[-1] - times[0]
    assert abs(len(times) / span - 50) < 3  # 50 frames a second, in real time
    window = (times >= times[0] + 0.2) & (times < times[0] + 1.7)
    assert 72 <= window.sum() <= 78
    assert np.diff(times).max() < 0.1
    per_100ms = np.histogram(times, bins=np.arange(times[0], times[-1], 0.1))[0]
    assert per_100ms.max() <= 7  # never a burst
    assert [r.data["event"] for r in fake_app.stream_statuses()] == ["stream-started", "stream-stopped"]
    assert [r.data["callSessionState"] for r in fake_app.voice()] == [
        "Answered",
        "StreamStarted",
        "StreamStopped",
        "Completed",
    ]
    assert view["violations"] == []


async def test_playback_is_real_time_from_a_buffer_and_killaudio_flushes_it(make_sim, fake_app):
    sim = await make_sim(SILENT)
    fake_app.answer_with(fake_app.stream_xml(after="<Hangup/>"))

    async def behaviour(ws, rec):
        await send_audio(ws, tone16k(3.0))  # a whole reply at once, unpaced
        await asyncio.sleep(1.0)
        await ws.send(json.dumps({"type": "killAudio"}))
        await asyncio.sleep(0.8)
        await ws.close()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 10)
    audio, _ = read_wav(sim.call_object(created["session_id"]).wav_path)
    loud = loud_frames(audio[:, 1])
    heard_s = (loud[-1] - loud[0] + 1) * 0.02
    assert 0.8 < heard_s < 1.3  # played in real time, then cut off by killAudio (not 3 s, not 0 s)
    assert len(loud) == loud[-1] - loud[0] + 1  # continuous, no gaps
    kill = next(e for e in view["timeline"] if e["kind"] == "kill_audio")
    assert 1700 < kill["flushed_ms"] < 2300
    assert view["streams"][0]["kill_audio"] == 1


async def test_both_tracks_at_8k_carry_the_lead_and_what_the_lead_hears(make_sim, fake_app):
    sim = await make_sim(SILENT)
    fake_app.answer_with(
        fake_app.stream_xml(track="both_tracks", outputSamplingRate="8000", bidirectionalSamplingRate="8000")
    )
    tone8k = (8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype("<i2").tobytes()

    async def behaviour(ws, rec):
        await send_audio(ws, tone8k, chunk=320)  # 1 s at 8 kHz
        await asyncio.sleep(2.0)
        await ws.close()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    await asyncio.sleep(0)
    view_task = asyncio.create_task(sim.wait_ended(created["session_id"], 10))
    await view_task
    rec = fake_app.ws[0]
    assert rec.metadata["channels"] == 2
    assert rec.metadata["mixType"] == "stereo"
    assert {len(f) for _, f in rec.frames} == {640}  # 160 samples × 2 channels × 2 bytes
    both = rec.audio().reshape(-1, 2)
    lead, heard = both[:, 0], both[:, 1]
    assert np.abs(lead).max() < 50  # the silent person
    n = heard.size // 160
    energy = np.sqrt((heard[: n * 160].astype(np.float32).reshape(n, 160) ** 2).mean(axis=1))
    assert 0.85 < (energy > 500).sum() * 0.02 < 1.15  # the 1 s tone came back, at the right speed


async def test_missing_bidirectional_rate_and_bad_header_metadata_are_recorded(make_sim, fake_app):
    sim = await make_sim(SILENT)
    fake_app.answer_with(
        fake_app.stream_xml(bidirectionalSamplingRate=None, headerMetadata="not json", after="<Hangup/>")
    )

    async def behaviour(ws, rec):
        await asyncio.sleep(0.3)
        await ws.close()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 10)
    assert {v["reason"] for v in view["violations"]} == {
        "bidirectional_rate_missing",
        "header_metadata_invalid",
    }
    assert fake_app.ws[0].metadata["headers"] == {}


async def test_a_second_stream_on_a_reinvocation_is_a_violation(make_sim, fake_app):
    sim = await make_sim(SILENT)
    xml = fake_app.stream_xml(after="<Hangup/>")
    fake_app.answer_with(xml)
    fake_app.lifecycle_reply = lambda _r: (200, "application/xml", xml)  # a careless app

    async def behaviour(ws, rec):
        await asyncio.sleep(0.6)
        await ws.close()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    await sim.wait_ended(created["session_id"], 10)
    await sim.drain()
    reasons = [v["reason"] for v in sim.violations(created["call_id"])]
    # StreamStarted, StreamStopped and Completed each answered with a Stream.
    assert reasons == ["second_stream"] * 3
    assert len(fake_app.ws) == 1  # never re-forked


async def test_after_the_app_closes_the_stream_the_next_verb_runs(make_sim, fake_app):
    sim = await make_sim(SILENT)
    fake_app.answer_with(fake_app.stream_xml(after="<Say>Thanks for your time.</Say><Hangup/>"))

    async def behaviour(ws, rec):
        await asyncio.sleep(0.4)
        await ws.close()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 10)
    assert [v["verb"] for v in view["verbs"]] == ["stream", "say", "hangup"]
    assert view["call"]["hangup_cause"] == "hangup_verb"
    assert any(e["kind"] == "say" and e["text"] == "Thanks for your time." for e in view["timeline"])


async def test_with_verbs_after_stream_off_the_lead_sits_in_silence_until_hangup(make_sim, fake_app):
    sim = await make_sim(SILENT, verbs_after_stream=False)
    fake_app.answer_with(fake_app.stream_xml(after="<Dial><Number>+254711999000</Number></Dial>"))

    async def behaviour(ws, rec):
        await asyncio.sleep(0.4)
        await ws.close()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    await asyncio.sleep(2.0)
    live = sim.call(created["session_id"])
    assert live["call"]["status"] == "answered"  # still connected, nothing running
    assert [v["verb"] for v in live["verbs"]] == ["stream"]
    assert any(e["kind"] == "verbs_after_stream_suppressed" for e in live["timeline"])
    await rest_hangup(sim, created["call_id"])
    view = await sim.wait_ended(created["session_id"], 10)
    assert view["call"]["hangup_cause"] == "api_hangup"
    assert view["call"]["transfers"] == []
    audio, _ = read_wav(sim.call_object(created["session_id"]).wav_path)
    assert np.abs(audio[-16000:, 1]).max() == 0  # the last second: silence
