"""What the agent said over the stream, in the timeline: each `agent_turn` gets the words the lead
heard (the cascade's offline Whisper, off the audio loop), when the simulator is asked to."""

from __future__ import annotations

import asyncio
import json
import re
import time

import numpy as np
import pytest
from conftest import place_call, send_audio, tone16k

pytestmark = pytest.mark.integration

LEAD = "+254712000001"
# Lines tiny.en reliably gets right in espeak's voice (it garbles names and some phrasings).
FIRST = "Good morning. I am calling about your electricity bill. Do you have two minutes to talk?"
SECOND = "Thank you. When would be a good time to call you back next week?"


async def place(sim, to: str = LEAD) -> dict:
    return await place_call(sim, to, "lq-words-1")


async def one_short_turn(ws, rec):
    """The agent says one 0.6 s turn (a tone), then the app closes the stream."""
    await asyncio.sleep(0.2)
    await send_audio(ws, tone16k(0.6))
    await asyncio.sleep(2.0)
    await ws.close()


def agent_turns(view: dict) -> list[dict]:
    return [e for e in view["timeline"] if e["kind"] == "agent_turn"]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def mostly_the_same_words(heard: str, said: str) -> bool:
    """Most of the words said are in what was transcribed (tiny.en may slip on one or two)."""
    got = set(words(heard))
    wanted = words(said)
    return sum(w in got for w in wanted) >= 0.8 * len(wanted)


async def espeak(text: str) -> bytes:
    """The agent's voice: the cascade engine's espeak driver, 16 kHz S16LE."""
    from bridge.engines.cascade.tts import EspeakTTS

    return await asyncio.to_thread(EspeakTTS("en").synthesize_blocking, text, 16000)


@pytest.mark.slow
async def test_each_agent_turn_carries_the_words_the_lead_heard_once_the_call_has_ended(
    make_sim, fake_app, monkeypatch
):
    from local.sautikit.stt import AgentTranscriber

    real = AgentTranscriber.transcribe
    decoding: list[tuple[float, float]] = []  # when the recogniser ran, on the clock the app's frames use

    async def late(self, audio):
        await asyncio.sleep(1.0)  # a backlog: the last turn's words come after the hang-up
        started = time.monotonic()
        try:
            return await real(self, audio)
        finally:
            decoding.append((started, time.monotonic()))

    monkeypatch.setattr(AgentTranscriber, "transcribe", late)
    first, second = await espeak(FIRST), await espeak(SECOND)
    sim = await make_sim(
        {"numbers": {LEAD: {"says": ["Yes, go ahead.", "Yes, that is me."]}}}, transcribe_agent=True
    )
    fake_app.answer_with(fake_app.stream_xml(after="<Hangup/>"))

    async def behaviour(ws, rec):
        await asyncio.sleep(0.2)
        await send_audio(ws, first)  # all at once: the switch plays it in real time
        await asyncio.sleep(len(first) / 32000 + 2.5)  # the turn, its end, the lead's answer
        await send_audio(ws, second)
        await asyncio.sleep(len(second) / 32000 + 0.7)  # hang up just after the turn closes
        await ws.close()

    fake_app.ws_behaviour = behaviour
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 30)
    turns = agent_turns(view)
    assert [t["turn"] for t in turns] == [1, 2]
    assert all("text_unavailable" not in t for t in turns), turns
    assert mostly_the_same_words(turns[0]["text"], FIRST), turns[0]["text"]
    assert mostly_the_same_words(turns[1]["text"], SECOND), turns[1]["text"]
    hangup = next(e for e in view["timeline"] if e["kind"] == "hangup")
    assert hangup["t"] < turns[1]["t"] + turns[1]["duration_s"] + 1.6  # ended before the words were in
    # The call became final with them: the view wait_ended gave and the written timeline have them.
    written = json.loads(sim.call_object(created["session_id"]).timeline_path.read_text())
    assert [e.get("text") for e in agent_turns(written)] == [t["text"] for t in turns]
    # Transcribing (~0.15 s a turn, done inline it would stall the loop that long) never held up the
    # media clock: while the first turn was decoded, mid-call, frames kept coming every 20 ms.
    assert not [e for e in view["timeline"] if e["kind"] == "clock_slip"]
    times = np.array([t for t, _ in fake_app.ws[0].frames])
    start, end = decoding[0]
    during = times[(times >= start - 0.1) & (times <= end + 0.1)]
    assert during.size >= 10
    assert np.diff(during).max() < 0.1


async def test_agent_turns_have_no_text_unless_transcription_is_asked_for(make_sim, fake_app):
    sim = await make_sim({"numbers": {LEAD: {"says": ["Yes."]}}})
    fake_app.answer_with(fake_app.stream_xml(after="<Hangup/>"))

    fake_app.ws_behaviour = one_short_turn
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 15)
    (turn,) = agent_turns(view)
    assert sim.transcriber is None
    assert "text" not in turn
    assert "text_unavailable" not in turn


async def _raises(self, audio):
    raise RuntimeError("decoder exploded")


async def _never_done(self, audio):
    await asyncio.Future()


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        ("no model", "model unavailable: STTError: no CTranslate2 Whisper model in"),
        ("decoder fails", "transcription failed: RuntimeError: decoder exploded"),
        ("stuck", "not transcribed within 0.3 s of the call's end"),
    ],
)
async def test_without_a_working_recogniser_a_turn_says_why_it_has_no_text_and_the_call_goes_on(
    make_sim, fake_app, tmp_path, monkeypatch, broken, reason
):
    if broken == "decoder fails":
        monkeypatch.setattr("local.sautikit.stt.AgentTranscriber.transcribe", _raises)
    if broken == "stuck":
        monkeypatch.setattr("local.sautikit.stt.AgentTranscriber.transcribe", _never_done)
        monkeypatch.setattr("local.sautikit.call.TRANSCRIPT_WAIT_S", 0.3)
    sim = await make_sim(
        {"numbers": {LEAD: {"says": ["Yes."]}}},
        transcribe_agent=True,
        transcribe_model=tmp_path / "no-model-here",
    )
    fake_app.answer_with(fake_app.stream_xml(after="<Hangup/>"))

    fake_app.ws_behaviour = one_short_turn
    created = await place(sim)
    view = await sim.wait_ended(created["session_id"], 5)  # a stuck recogniser holds the end 0.3 s at most
    (turn,) = agent_turns(view)
    assert turn["text"] is None
    assert turn["text_unavailable"].startswith(reason), turn
    assert view["lead_said"] == ["Yes."]  # the person answered the turn as ever
    assert view["call"]["status"] == "completed"
    # make_sim checks at teardown that no simulator task crashed
