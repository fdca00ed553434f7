"""CascadeEngine with scripted speech-to-text and a deterministic voice: events, barge-in,
streaming, caching, partial transcripts, failure and shutdown. No sockets, no models."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from cascade_audio import frames, silence, voiced

from bridge.engines.base import (
    AudioOut,
    EngineEvent,
    EngineFailed,
    Interrupted,
    SessionContext,
    ToolCall,
    TranscriptIn,
    TranscriptOut,
    TurnComplete,
    Usage,
)
from bridge.engines.cascade import (
    CascadeEngine,
    EspeakTTS,
    RuleInterviewer,
    SpeechCache,
    VadSettings,
    opening_text,
)
from leadqual.campaign import Campaign
from leadqual.models import Lead

NOW = datetime(2025, 6, 4, 7, 0, tzinfo=UTC)
LEAD = Lead(lead_id="L1", phone="+254711000001", name="Jane Wanjiru", company="Globex", opt_in=True)
WORD_MS = 150


class ScriptedSTT:
    """Returns scripted texts in order (or `fn(pcm)`), and records what it was asked."""

    def __init__(self, texts: list[str] | None = None, fn: Callable[[bytes], str] | None = None) -> None:
        self.texts = list(texts or [])
        self.fn = fn
        self.calls: list[tuple[int, int, str]] = []  # (bytes, rate, prompt)
        self.fail: Exception | None = None

    async def transcribe(self, pcm: bytes, rate: int, *, prompt: str = "") -> str:
        self.calls.append((len(pcm), rate, prompt))
        await asyncio.sleep(0.005)
        if self.fail is not None:
            raise self.fail
        if self.fn is not None:
            return self.fn(pcm)
        return self.texts.pop(0) if self.texts else ""

    async def warm_up(self) -> None:
        return None


class ToneTTS:
    """WORD_MS of tone per word, so durations are predictable; can hold a sentence back."""

    key = "tone"

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}

    async def synthesize(self, text: str, rate: int) -> bytes:
        self.calls.append(text)
        gate = self.gates.get(text)
        if gate is not None:
            await gate.wait()
        n = rate * WORD_MS * len(text.split()) // 1000
        t = np.arange(n) / rate
        return (np.sin(2 * np.pi * 220 * t) * 3000).astype("<i2").tobytes()

    async def warm_up(self) -> None:
        return None


class Recorder:
    """Consumes engine events in the background; tests wait for what they expect."""

    def __init__(self, engine: CascadeEngine) -> None:
        self.engine = engine
        self.events: list[EngineEvent] = []
        self.answers: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Event()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for event in self.engine.events():
            self.events.append(event)
            self._changed.set()

    async def wait_for(self, predicate: Callable[[list[EngineEvent]], bool], limit_s: float = 3.0) -> None:
        async def loop() -> None:
            while not predicate(self.events):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), limit_s)

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_count(self, kind: type, n: int, limit_s: float = 3.0) -> None:
        await self.wait_for(lambda evs: sum(isinstance(e, kind) for e in evs) >= n, limit_s)


def ctx(campaign: Campaign) -> SessionContext:
    return SessionContext(session_id="HD_1", campaign=campaign, lead=LEAD, instructions="", tools=())


async def started(
    campaign: Campaign,
    stt: ScriptedSTT,
    tts: Any | None = None,
    vad: VadSettings | None = None,
    **kwargs: Any,
) -> tuple[CascadeEngine, Recorder]:
    engine = CascadeEngine(
        stt,
        tts or ToneTTS(),
        RuleInterviewer(now=lambda: NOW),
        vad=vad or VadSettings(probe_ms=()),
        cache=SpeechCache(),
        **kwargs,
    )
    recorder = Recorder(engine)
    await engine.start(ctx(campaign))
    return engine, recorder


async def feed(engine: CascadeEngine, pcm: bytes, rate: int = 16000) -> None:
    for frame in frames(pcm, 20, rate):
        await engine.send_audio(frame)
        await asyncio.sleep(0)


def opening_ms(campaign: Campaign) -> int:
    return len(opening_text(ctx(campaign)).split()) * WORD_MS


async def test_say_streams_20_ms_chunks_then_transcript_turn_complete_and_usage(
    example_campaign: Campaign,
) -> None:
    engine, rec = await started(example_campaign, ScriptedSTT())
    await engine.say("Hello there. How are you today?")
    await rec.wait_count(Usage, 1)
    audio = rec.of(AudioOut)
    assert all(len(a.pcm) == 640 for a in audio[:-1])
    total = sum(len(a.pcm) for a in audio)
    assert total == 16000 * 2 * WORD_MS * 6 // 1000
    kinds = [type(e) for e in rec.events]
    assert kinds[-3:] == [TranscriptOut, TurnComplete, Usage]
    assert rec.of(TranscriptOut)[0].text == "Hello there. How are you today?"
    assert rec.of(Usage)[0].audio_seconds_out == pytest.approx(total / 32000)
    await engine.close()


async def test_an_answer_by_voice_becomes_a_tool_call_and_the_next_question(
    example_campaign: Campaign,
) -> None:
    stt = ScriptedSTT(["Yes, go ahead."])
    engine, rec = await started(example_campaign, stt, bias_vocabulary=True)
    await engine.say(opening_text(ctx(example_campaign)))
    await rec.wait_count(TurnComplete, 1)
    await feed(engine, silence(opening_ms(example_campaign) + 300) + voiced(700) + silence(700))
    await rec.wait_count(ToolCall, 1)
    call = rec.of(ToolCall)[0]
    assert call.name == "record_answer"
    assert call.args == {"question_id": "good_time", "value": "yes", "quote": "Yes, go ahead."}
    assert rec.of(TranscriptIn) == [TranscriptIn(text="Yes, go ahead.", final=True)]
    # Whisper gets the utterance at 16 kHz and (when asked for) a prompt with the call's names.
    nbytes, rate, prompt = stt.calls[0]
    assert rate == 16000
    assert 700 * 32 <= nbytes <= (700 + 300 + 200 + 40) * 32
    assert "Acme CRM" in prompt
    assert "Jane" in prompt
    await engine.send_tool_result(
        call, {"status": "continue", "next_question_id": "decision_maker", "next_question": "Do you decide?"}
    )
    await rec.wait_count(TurnComplete, 2)
    assert rec.of(TranscriptOut)[-1].text == "Got it. Do you decide?"
    assert rec.of(Interrupted) == []
    await engine.close()


async def _second_turn(example_campaign: Campaign) -> tuple[CascadeEngine, Recorder]:
    engine, rec = await started(example_campaign, ScriptedSTT(["Yes.", "Yes, that's me."]))
    await engine.say(opening_text(ctx(example_campaign)))
    await rec.wait_count(TurnComplete, 1)
    await feed(engine, silence(opening_ms(example_campaign) + 300) + voiced(500) + silence(700))
    await rec.wait_count(ToolCall, 1)
    await engine.send_tool_result(
        rec.of(ToolCall)[0],
        {
            "status": "continue",
            "next_question_id": "decision_maker",
            "next_question": "Are you the one who decides?",
        },
    )
    await rec.wait_count(TurnComplete, 2)
    return engine, rec


async def test_lead_speech_over_the_agent_interrupts_after_200_ms(example_campaign: Campaign) -> None:
    engine, rec = await _second_turn(example_campaign)
    fed_ms = 0
    for frame in frames(voiced(600)):
        await engine.send_audio(frame)
        fed_ms += 20
        await asyncio.sleep(0)
        if rec.of(Interrupted):
            break
    assert rec.of(Interrupted)
    assert 200 <= fed_ms <= 320  # start confirmation + 200 ms of speech
    assert engine.stats.barge_ins == 1
    # The answer after the interruption is still heard and recorded.
    await feed(engine, voiced(300) + silence(700))
    await rec.wait_count(ToolCall, 2)
    assert rec.of(ToolCall)[1].args["question_id"] == "decision_maker"
    await engine.close()


async def test_interrupting_drops_audio_the_bridge_has_not_read(example_campaign: Campaign) -> None:
    tts = ToneTTS()
    engine = CascadeEngine(
        ScriptedSTT(), tts, RuleInterviewer(), vad=VadSettings(probe_ms=()), cache=SpeechCache()
    )
    await engine.start(ctx(example_campaign))
    await engine.say("One two three four five six seven eight nine ten.")
    await asyncio.sleep(0.05)  # emitted, not read: nobody consumes events yet
    await feed(engine, voiced(1200))
    seen = []
    async for event in engine.events():
        seen.append(type(event))
        if event == Interrupted():
            break
    # The line's audio was thrown away unread; the rest of the turn's events are kept.
    assert seen == [TranscriptOut, TurnComplete, Usage, Interrupted]
    await engine.close()


async def test_the_greeting_is_not_cut_by_a_short_hello(example_campaign: Campaign) -> None:
    stt = ScriptedSTT(["Hello?"])
    engine, rec = await started(example_campaign, stt)
    await engine.say(opening_text(ctx(example_campaign)))
    await rec.wait_count(TurnComplete, 1)
    await feed(engine, silence(300) + voiced(500) + silence(700))
    await rec.wait_count(TranscriptIn, 1)
    await asyncio.sleep(0.05)
    assert rec.of(Interrupted) == []
    # Said over the greeting: the interviewer lets the agent finish instead of answering it.
    assert len(rec.of(TranscriptOut)) == 1
    # A longer stretch of speech over the greeting does cut it.
    await feed(engine, voiced(1000))
    assert len(rec.of(Interrupted)) == 1
    await engine.close()


async def test_time_is_kept_by_the_audio_received_not_the_wall_clock(example_campaign: Campaign) -> None:
    engine, rec = await started(example_campaign, ScriptedSTT(["Yes."]))
    await engine.say("One two three four five six seven eight nine ten.")  # 1.5 s
    await rec.wait_count(TurnComplete, 1)
    # 1.7 s of silence fed in a few milliseconds: the line has been heard by now.
    await feed(engine, silence(1700) + voiced(600) + silence(700))
    await rec.wait_count(TranscriptIn, 1)
    assert rec.of(Interrupted) == []
    await engine.close()


async def test_long_replies_start_playing_before_the_rest_is_synthesised(example_campaign: Campaign) -> None:
    tts = ToneTTS()
    second = "This one is held back."
    tts.gates[second] = asyncio.Event()
    engine, rec = await started(example_campaign, ScriptedSTT(), tts=tts, presynthesize=False)
    await engine.say(f"First sentence here. {second}")
    await rec.wait_count(AudioOut, 1)
    assert tts.calls == ["First sentence here.", second]
    assert rec.of(TurnComplete) == []
    tts.gates[second].set()
    await rec.wait_count(TurnComplete, 1)
    assert sum(len(a.pcm) for a in rec.of(AudioOut)) == 32 * WORD_MS * 8
    await engine.close()


async def test_fixed_lines_are_synthesised_ahead_and_the_opening_plays_from_the_cache(
    example_campaign: Campaign,
) -> None:
    tts = ToneTTS()
    engine, rec = await started(example_campaign, ScriptedSTT(), tts=tts)
    # The opening question, and the closing rendered for this lead.
    ahead = {"Is now a good time for three quick questions?", "Thanks for your time, Jane."}
    for _ in range(300):  # presynthesis runs in the background: give it up to 3 s
        if ahead <= set(tts.calls):
            break
        await asyncio.sleep(0.01)
    before = list(tts.calls)
    assert ahead <= set(before)
    await engine.say(opening_text(ctx(example_campaign)))
    await rec.wait_count(TurnComplete, 1)
    assert tts.calls == before  # nothing new to synthesise
    await engine.close()


async def test_a_voicemail_greeting_is_caught_from_a_partial_transcript(example_campaign: Campaign) -> None:
    stt = ScriptedSTT(fn=lambda pcm: "Hi, you've reached Jane, please leave a message")
    engine, rec = await started(example_campaign, stt, vad=VadSettings(probe_ms=(1000, 2000)))
    await engine.say(opening_text(ctx(example_campaign)))
    await feed(engine, voiced(1100))  # still talking: the utterance has not ended
    await rec.wait_count(ToolCall, 1)
    assert rec.of(ToolCall)[0].args == {"reason": "voicemail"}
    assert [t.final for t in rec.of(TranscriptIn)] == [False]
    assert stt.calls[0][0] < 1100 * 32  # transcribed from the first second or so
    # The utterance's final transcript changes nothing: the call is ending.
    await feed(engine, silence(700))
    await asyncio.sleep(0.05)
    assert len(rec.of(ToolCall)) == 1
    await engine.close()


async def test_a_first_answer_after_the_greeting_is_not_probed(example_campaign: Campaign) -> None:
    stt = ScriptedSTT(["Yes, now is fine, go ahead with your questions."])
    engine, rec = await started(example_campaign, stt, vad=VadSettings(probe_ms=(1000, 2000)))
    await engine.say(opening_text(ctx(example_campaign)))
    await rec.wait_count(TurnComplete, 1)
    await feed(engine, silence(opening_ms(example_campaign) + 300) + voiced(2500) + silence(700))
    await rec.wait_count(ToolCall, 1)
    assert len(stt.calls) == 1  # the final transcript only
    assert [t.final for t in rec.of(TranscriptIn)] == [True]
    await engine.close()


async def test_a_failing_part_fails_the_engine(example_campaign: Campaign) -> None:
    stt = ScriptedSTT()
    stt.fail = RuntimeError("model crashed")
    engine, rec = await started(example_campaign, stt)
    await feed(engine, voiced(500) + silence(700))
    await asyncio.wait_for(rec.task, 3)  # the event stream ends after the failure
    failed = rec.of(EngineFailed)
    assert len(failed) == 1
    assert "model crashed" in failed[0].reason
    await engine.close()


async def test_close_is_idempotent_and_leaves_no_tasks(example_campaign: Campaign) -> None:
    engine, rec = await started(example_campaign, ScriptedSTT(["Yes."]))
    await engine.say("Hello there.")
    await feed(engine, voiced(500))
    await engine.close()
    await engine.close()
    await asyncio.wait_for(rec.task, 1)
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("cascade")]
    assert left == []
    # After close everything is a quiet no-op.
    await engine.send_audio(voiced(100))
    await engine.say("Anyone?")
    await engine.truncate(100)
    assert [e async for e in engine.events()] == []


async def test_usage_adds_up_to_the_audio_in_and_out(example_campaign: Campaign) -> None:
    engine, rec = await started(example_campaign, ScriptedSTT(["Yes."]))
    await engine.say("Hello there.")
    pcm = silence(500) + voiced(500) + silence(700)
    await feed(engine, pcm)
    await rec.wait_count(TurnComplete, 2)  # "Hello there." was not the question: it is asked again
    await engine.close()
    await asyncio.wait_for(rec.task, 1)
    usage = rec.of(Usage)
    assert sum(u.audio_seconds_in for u in usage) == pytest.approx(len(pcm) / 32000)
    assert sum(u.audio_seconds_out for u in usage) == pytest.approx(
        sum(len(a.pcm) for a in rec.of(AudioOut)) / 32000
    )
    assert all(u.detail["engine"] == "cascade" for u in usage)


@pytest.mark.parametrize(("rate", "stt_rate"), [(8000, 8000), (24000, 16000)])
async def test_other_input_rates(example_campaign: Campaign, rate: int, stt_rate: int) -> None:
    stt = ScriptedSTT(["Yes."])
    engine, rec = await started(example_campaign, stt, input_rate=rate)
    await feed(engine, voiced(600, rate) + silence(700, rate), rate)
    await rec.wait_count(ToolCall, 1)
    assert stt.calls[0][1] == stt_rate
    await engine.close()


async def test_truncate_is_recorded(example_campaign: Campaign) -> None:
    engine, _ = await started(example_campaign, ScriptedSTT())
    await engine.truncate(1234)
    assert engine.stats.truncations == [1234]
    await engine.close()


async def test_the_real_espeak_voice_through_the_engine(example_campaign: Campaign) -> None:
    engine, rec = await started(example_campaign, ScriptedSTT(), tts=EspeakTTS())
    await engine.say(opening_text(ctx(example_campaign)))
    await rec.wait_count(TurnComplete, 1)
    seconds = sum(len(a.pcm) for a in rec.of(AudioOut)) / 32000
    assert 4.0 < seconds < 15.0  # ~30 words
    samples = np.frombuffer(b"".join(a.pcm for a in rec.of(AudioOut)), dtype="<i2")
    assert int(np.abs(samples).max()) > 3000
    await engine.close()


def test_from_settings_defaults_to_the_local_parts() -> None:
    from types import SimpleNamespace

    from bridge.engines.cascade import WhisperSTT

    engine = CascadeEngine.from_settings(SimpleNamespace(engine="local"))
    assert isinstance(engine.stt, WhisperSTT)
    assert isinstance(engine.tts, EspeakTTS)
    assert isinstance(engine.dialog, RuleInterviewer)
    voiced_engine = CascadeEngine.from_settings(SimpleNamespace(cascade_voice="en-gb"))
    assert isinstance(voiced_engine.tts, EspeakTTS)
    assert voiced_engine.tts.voice == "en-gb"


async def test_from_settings_builds_http_parts_and_closes_them(example_campaign: Campaign) -> None:
    from types import SimpleNamespace

    from bridge.engines.cascade import LLMDialog, OpenAICompatibleSTT, OpenAICompatibleTTS

    settings = SimpleNamespace(
        cascade_stt_url="http://127.0.0.1:1/v1",
        cascade_stt_model="whisper-large-v3",
        cascade_tts_url="http://127.0.0.1:1",
        cascade_tts_voice="af_heart",
        cascade_llm_url="http://127.0.0.1:1",
        cascade_llm_model="qwen",
        cascade_api_key="sk-1",
    )
    engine = CascadeEngine.from_settings(settings)
    assert isinstance(engine.stt, OpenAICompatibleSTT)
    assert engine.stt.model == "whisper-large-v3"
    assert isinstance(engine.tts, OpenAICompatibleTTS)
    assert engine.tts.voice == "af_heart"
    assert isinstance(engine.dialog, LLMDialog)
    assert engine.dialog.model == "qwen"
    engine.stt._http()  # a client exists (no request is made)
    await engine.close()
    assert engine.stt._client is None
