"""GeminiLiveEngine through the real google-genai client against the fake Gemini Live server.

Everything crosses a real TLS WebSocket on loopback: the fake speaks the BidiGenerateContent wire
protocol and records what the engine sent. The "bridge" here is a small driver that answers tool
calls the way bridge/tools.py does (contract shapes) and plays the lead's audio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.engines.base import (
    AudioOut,
    EngineEvent,
    EngineFailed,
    Interrupted,
    SessionContext,
    ToolCall,
    ToolSpec,
    TranscriptIn,
    TranscriptOut,
    TurnComplete,
    Usage,
)
from bridge.engines.gemini import (
    SAY_PREFIX,
    GeminiEngineError,
    GeminiLiveEngine,
    ReconnectPolicy,
    make_client,
)
from leadqual.campaign import Campaign
from leadqual.models import Lead
from local.fakes.gemini_live import (
    Call,
    CallTools,
    Close,
    Drop,
    FakeGeminiLive,
    GoAway,
    Hear,
    Interrupt,
    Reply,
    Sleep,
    WaitAudio,
    WaitClientTurn,
    WaitToolResponse,
    qualification_script,
    tone,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

MODEL = "gemini-test-native-audio"
API_KEY = "test-key"
LEAD = Lead(lead_id="L-1", phone="+254711000001", name="Wanjiku Kamau", company="Kamau Traders", opt_in=True)
TOOLS = (
    ToolSpec(
        name="record_answer",
        description="Record the lead's answer to one question.",
        parameters={
            "type": "object",
            "properties": {
                "question_id": {"type": "string"},
                "value": {"type": ["boolean", "number", "string"]},
                "quote": {"type": "string"},
            },
            "required": ["question_id", "value", "quote"],
        },
    ),
    ToolSpec(
        name="end_call",
        description="End the call early.",
        parameters={
            "type": "object",
            "properties": {"reason": {"type": "string", "enum": ["not_interested", "opt_out"]}},
            "required": ["reason"],
        },
    ),
)
ANSWERS: dict[str, Any] = {"good_time": True, "decision_maker": True, "seats": 40, "timeline": 2}
FAST = ReconnectPolicy(backoff_initial_s=0.05, backoff_max_s=0.2, connect_timeout_s=2.0)


def context(campaign: Campaign) -> SessionContext:
    return SessionContext(
        session_id="HD_test",
        campaign=campaign,
        lead=LEAD,
        instructions=f"You are {campaign.agent.name} from {campaign.agent.company}. Qualify {LEAD.name}.",
        tools=TOOLS,
    )


def opening(campaign: Campaign) -> str:
    return (
        campaign.render(campaign.lines.greeting, LEAD)
        + " "
        + campaign.render(campaign.questions[0].ask, LEAD)
    )


def engine_for(fake: FakeGeminiLive, policy: ReconnectPolicy = FAST, **kwargs: Any) -> GeminiLiveEngine:
    client = make_client(API_KEY, base_url=fake.base_url, ssl_context=fake.tls.client_context)
    return GeminiLiveEngine(client, model=MODEL, reconnect=policy, **kwargs)


@dataclass
class Driver:
    """Plays the bridge: answers tool calls (contract shapes), says the closing, speaks for the lead."""

    engine: GeminiLiveEngine
    campaign: Campaign
    answer_ms: int = 200
    before_result: Callable[[ToolCall], Any] | None = None  # awaited before each tool result
    events: list[EngineEvent] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    closing: str | None = None

    def result_for(self, call: ToolCall) -> dict[str, Any]:
        if call.name == "end_call":
            return {"status": "wrap_up", "reason": call.args["reason"]}
        self.answers[call.args["question_id"]] = call.args["value"]
        rest = [q for q in self.campaign.questions if q.id not in self.answers]
        if rest:
            return {"status": "continue", "next_question_id": rest[0].id, "next_question": rest[0].ask}
        return {"status": "wrap_up", "verdict": "hot"}

    async def speak(self, ms: int) -> None:
        pcm = tone(ms, 16_000, hz=300)
        for i in range(0, len(pcm), 640):  # 20 ms frames, as the bridge forwards them
            await self.engine.send_audio(pcm[i : i + 640])

    async def run(self, *, until: Callable[[EngineEvent], bool]) -> list[EngineEvent]:
        async for event in self.engine.events():
            self.events.append(event)
            if isinstance(event, ToolCall):
                if self.before_result is not None:
                    await self.before_result(event)
                result = self.result_for(event)
                self.results[event.call_id] = result
                await self.engine.send_tool_result(event, result)
                if result["status"] == "wrap_up":
                    self.closing = self.campaign.render(self.campaign.transfer.handoff_line, LEAD)
                    await self.engine.say(self.closing)
            elif (
                isinstance(event, TurnComplete) and self.closing is None and len(self.answers) < len(ANSWERS)
            ):
                await self.speak(self.answer_ms)
            if until(event):
                break
        return self.events

    def of(self, kind: type) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


def finished(driver: Driver) -> Callable[[EngineEvent], bool]:
    """Done when the agent completed the turn that spoke the closing line."""
    return lambda event: (
        isinstance(event, TurnComplete)
        and driver.closing is not None
        and any(driver.closing in t.text for t in driver.of(TranscriptOut))
    )


async def qualify(fake: FakeGeminiLive, campaign: Campaign, **driver_kwargs: Any) -> Driver:
    engine = engine_for(fake)
    driver = Driver(engine, campaign, **driver_kwargs)
    try:
        await engine.start(context(campaign))
        await engine.say(opening(campaign))
        async with asyncio.timeout(20):
            await driver.run(until=finished(driver))
    finally:
        await engine.close()
    return driver


def all_tool_responses(fake: FakeGeminiLive) -> list[dict[str, Any]]:
    return [r for s in fake.sessions for r in s.tool_responses]


async def test_full_qualification_with_tool_calls(example_campaign: Campaign) -> None:
    script = qualification_script(example_campaign, LEAD, ANSWERS, quotes={"seats": "give or take forty"})
    async with FakeGeminiLive(script, api_key=API_KEY, model=MODEL) as fake:
        driver = await qualify(fake, example_campaign)

    assert fake.violations == []
    assert len(fake.sessions) == 1
    session = fake.sessions[0]
    # The engine emitted one ToolCall per answer, in order, with the model's arguments.
    calls = driver.of(ToolCall)
    assert [(c.name, c.args["question_id"], c.args["value"]) for c in calls] == [
        ("record_answer", qid, value) for qid, value in ANSWERS.items()
    ]
    assert calls[2].args["quote"] == "give or take forty"
    assert len({c.call_id for c in calls}) == 4
    # ...and forwarded each result, under the call's id, to the session that asked.
    assert [(r["id"], r["response"]) for r in session.tool_responses] == [
        (c.call_id, driver.results[c.call_id]) for c in calls
    ]
    assert driver.answers == ANSWERS
    assert driver.results[calls[-1].call_id]["status"] == "wrap_up"
    # The opening and the closing went up as "say exactly" turns.
    assert session.client_turns[0] == SAY_PREFIX + opening(example_campaign)
    assert session.client_turns[-1] == SAY_PREFIX + driver.closing
    # Lead audio went up at 16 kHz; agent audio came back and was emitted.
    assert session.audio_mime_types == {"audio/pcm;rate=16000"}
    assert session.audio_ms >= 4 * 200
    audio_out = sum(len(e.pcm) for e in driver.of(AudioOut))
    assert audio_out == session.audio_ms_sent * 48  # every byte the fake sent, as 24 kHz S16
    # Transcripts: what the lead said, once per utterance; what the agent said, once per turn.
    assert [t.text for t in driver.of(TranscriptIn)] == ["Yes.", "Yes.", "give or take forty", "2."]
    said = [t.text for t in driver.of(TranscriptOut)]
    assert said[0] == SAY_PREFIX + opening(example_campaign)  # the fake repeats the line it was given
    assert example_campaign.render(example_campaign.questions[1].ask, LEAD) in said
    # Usage per turn, with modality detail, for cost.
    usage = driver.of(Usage)
    assert len(usage) == len(driver.of(TurnComplete)) >= 5
    assert sum(u.input_tokens for u in usage) > 0
    assert sum(u.output_tokens for u in usage) > 0
    assert usage[0].detail["prompt_by_modality"]["TEXT"] == 400
    assert sum(u.audio_seconds_out for u in usage) == pytest.approx(audio_out / 48_000)


async def test_setup_carries_the_call_configuration(example_campaign: Campaign) -> None:
    async with FakeGeminiLive([WaitClientTurn(), Reply(say_client_turn=True)], model=MODEL) as fake:
        # Trusting the fake through its CA file, as the local stack does.
        client = make_client(API_KEY, base_url=fake.base_url, ca_file=fake.tls.ca_path)
        engine = GeminiLiveEngine(client, model=MODEL)
        await engine.start(context(example_campaign))
        await engine.close()
    assert fake.violations == []
    setup = fake.sessions[0].setup
    assert setup["model"] == f"models/{MODEL}"
    assert fake.sessions[0].api_key == API_KEY
    generation = setup["generationConfig"]
    assert generation["responseModalities"] == ["AUDIO"]
    assert generation["speechConfig"]["voice_config"]["prebuilt_voice_config"]["voice_name"] == "Puck"
    instruction = setup["systemInstruction"]["parts"][0]["text"]
    assert instruction.startswith(context(example_campaign).instructions)
    assert SAY_PREFIX.strip() in instruction  # the engine explains its "say exactly" turns
    declarations = setup["tools"][0]["functionDeclarations"]
    assert [d["name"] for d in declarations] == ["record_answer", "end_call"]
    assert declarations[0]["parameters_json_schema"] == TOOLS[0].parameters
    assert setup["inputAudioTranscription"] == {}
    assert setup["outputAudioTranscription"] == {}
    detection = setup["realtimeInputConfig"]["automatic_activity_detection"]
    assert detection["disabled"] is False
    assert setup["realtimeInputConfig"]["activity_handling"] == "START_OF_ACTIVITY_INTERRUPTS"
    assert "sliding_window" in setup["contextWindowCompression"]
    assert setup["sessionResumption"] == {}  # resumption on, no handle yet


async def test_barge_in_emits_interrupted_at_once_and_drops_unplayed_audio(
    example_campaign: Campaign,
) -> None:
    script = [
        WaitClientTurn(),
        Reply("A long answer the lead will not wait for.", ms=3_000, complete=False),
        WaitAudio(100),
        Interrupt(),
        Hear("Sorry, who is this?"),
        Reply("This is Amina from Acme CRM."),
    ]
    async with FakeGeminiLive(script) as fake:
        engine = engine_for(fake)
        driver = Driver(engine, example_campaign)
        try:
            await engine.start(context(example_campaign))
            await engine.say(opening(example_campaign))
            # Nobody reads events while 3 s of agent audio arrives, as when the bridge's playback lags.
            await fake.wait_for(lambda: fake.sessions[0].audio_ms_sent >= 3_000)
            await asyncio.sleep(0.05)
            await driver.speak(100)  # the lead talks over the agent
            await fake.wait_for(lambda: fake.sessions[0].interrupted_at)
            await asyncio.sleep(0.05)  # the message crosses the socket; still nobody reads events
            first = await anext(engine.events())
            latency = time.monotonic() - fake.sessions[0].interrupted_at[0]
            driver.events.append(first)
            async with asyncio.timeout(5):
                await driver.run(until=lambda e: isinstance(e, TurnComplete))
        finally:
            await engine.close()

    # The queued 3 s of stale audio was dropped: Interrupted is the very next event, right away.
    assert isinstance(first, Interrupted)
    assert latency < 0.25
    after = driver.events[1:]
    assert [t.text for t in after if isinstance(t, TranscriptIn)] == ["Sorry, who is this?"]
    assert any(isinstance(e, AudioOut) for e in after)  # the new reply plays
    assert sum(len(e.pcm) for e in after if isinstance(e, AudioOut)) < 3_000 * 48
    said = [t.text for t in after if isinstance(t, TranscriptOut)]
    assert said == ["A long answer the lead will not wait for.", "This is Amina from Acme CRM."]


async def test_go_away_mid_call_resumes_with_the_handle_and_loses_no_answer(
    example_campaign: Campaign,
) -> None:
    script = qualification_script(example_campaign, LEAD, ANSWERS)
    # The server announces its end while the decision_maker tool call is still unanswered.
    call_index = [i for i, s in enumerate(script) if isinstance(s, CallTools)][1]
    script.insert(call_index + 1, GoAway(time_left_s=3.0))
    async with FakeGeminiLive(script, api_key=API_KEY, model=MODEL) as fake:
        started = time.monotonic()
        driver = await qualify(fake, example_campaign)
        elapsed = time.monotonic() - started

    assert fake.violations == []
    assert len(fake.sessions) == 2, "one proactive reconnect"
    first, second = fake.sessions
    assert second.conversation == first.conversation
    assert second.resumed_from == first.handles_sent[-1]  # the newest handle
    assert second.setup["sessionResumption"]["handle"] == second.resumed_from
    # The switch waited for the exchange in flight (tool result, then the next question) and did
    # not wait for the server's deadline.
    assert [r["response"]["status"] for r in first.tool_responses] == ["continue", "continue"]
    assert elapsed < 3.0
    # No tool call lost or duplicated; every result went to the session that issued its call.
    calls = driver.of(ToolCall)
    assert [c.args["question_id"] for c in calls] == list(ANSWERS)
    assert [r["id"] for r in all_tool_responses(fake)] == [c.call_id for c in calls]
    for session in fake.sessions:
        assert {r["id"] for r in session.tool_responses} <= {c["id"] for c in session.tool_calls_sent}
    assert driver.answers == ANSWERS
    # The lead's audio kept flowing on the new session, and the call finished there.
    assert second.audio_ms >= 2 * 200
    assert second.client_turns == [SAY_PREFIX + driver.closing]
    assert driver.of(EngineFailed) == []


@pytest.mark.parametrize("answer", ["after_resume", "during_outage"])
async def test_drop_during_a_tool_call_emits_it_once_and_answers_the_right_session(
    example_campaign: Campaign, answer: str
) -> None:
    script = qualification_script(example_campaign, LEAD, ANSWERS)
    # The connection dies right after the seats call, before its result can be sent.
    call_index = [i for i, s in enumerate(script) if isinstance(s, CallTools)][2]
    script.insert(call_index + 1, Drop(code=None))

    async with FakeGeminiLive(script) as fake:

        async def hold_seats_result(call: ToolCall) -> None:
            if call.args["question_id"] != "seats":
                return
            if answer == "after_resume":  # the bridge is slow: the resumed session asks again first
                await fake.wait_for(lambda: len(fake.sessions) > 1 and fake.sessions[1].tool_calls_sent)
                await asyncio.sleep(0.1)  # and the engine has taken the repeated call in
            else:  # the result is ready while no session is open
                await fake.sessions[0].closed.wait()

        driver = await qualify(fake, example_campaign, before_result=hold_seats_result)

    assert fake.violations == []
    assert len(fake.sessions) == 2
    first, second = fake.sessions
    assert first.close_code == 1006  # abrupt
    # The resumed session issued the seats call again (same id); the bridge saw it once.
    seats_id = first.tool_calls_sent[-1]["id"]
    assert second.tool_calls_sent[0]["id"] == seats_id
    calls = driver.of(ToolCall)
    assert [c.args["question_id"] for c in calls] == list(ANSWERS)
    assert len({c.call_id for c in calls}) == 4
    # The seats result reached only the session that was alive to use it.
    assert seats_id not in {r["id"] for r in first.tool_responses}
    assert next(r["id"] for r in second.tool_responses) == seats_id
    assert second.tool_responses[0]["response"] == driver.results[seats_id]
    assert driver.answers == ANSWERS


async def test_fatal_close_mid_call_fails_without_retrying(example_campaign: Campaign) -> None:
    script = [WaitClientTurn(), Reply("Hello."), WaitAudio(100), Close(1008, "quota exceeded")]
    async with FakeGeminiLive(script) as fake:
        engine = engine_for(fake)
        driver = Driver(engine, example_campaign)
        await engine.start(context(example_campaign))
        await engine.say(opening(example_campaign))
        async with asyncio.timeout(5):
            events = await driver.run(until=lambda e: False)  # runs until the engine ends its events
        await asyncio.sleep(0.3)  # long enough for several backoffs, were it retrying
        await engine.close()
    failed = [e for e in events if isinstance(e, EngineFailed)]
    assert len(failed) == 1
    assert events[-1] is failed[0]
    assert "1008" in failed[0].reason
    assert len(fake.sessions) == 1, "a fatal close is never retried"


async def test_bad_api_key_fails_start_with_a_permanent_error(example_campaign: Campaign) -> None:
    async with FakeGeminiLive([], api_key="the-right-key") as fake:
        engine = engine_for(fake)
        with pytest.raises(GeminiEngineError) as failure:
            await engine.start(context(example_campaign))
    assert failure.value.code == 1008
    assert failure.value.retryable is False
    assert len(fake.sessions) == 1


async def test_reconnects_are_bounded_when_the_service_stays_down(example_campaign: Campaign) -> None:
    policy = ReconnectPolicy(max_attempts=3, backoff_initial_s=0.05, backoff_max_s=0.1, connect_timeout_s=0.3)
    script = [WaitClientTurn(), Reply("Hello."), Drop(1011, "internal error")]
    async with FakeGeminiLive(script) as fake:
        engine = engine_for(fake, policy)
        await engine.start(context(example_campaign))
        fake.setup_delay_s = 5.0  # from now on every setup outlasts the connect timeout
        await engine.say(opening(example_campaign))
        events: list[EngineEvent] = []
        async with asyncio.timeout(10):
            events = [e async for e in engine.events()]
        await engine.close()
    assert isinstance(events[-1], EngineFailed)
    assert "3 reconnects failed" in events[-1].reason
    assert len(fake.sessions) == 1 + 3


async def test_drop_before_any_handle_reconnects_fresh_with_the_calls_so_far(
    example_campaign: Campaign,
) -> None:
    script = [
        WaitClientTurn(),
        Reply("Is now a good time?"),
        WaitAudio(100),
        CallTools((Call("record_answer", {"question_id": "good_time", "value": True, "quote": "yes"}),)),
        WaitToolResponse(),
        Sleep(0.05),
        Drop(1011, "internal error"),
    ]
    async with FakeGeminiLive(script, auto_handles=False) as fake:
        engine = engine_for(fake)
        driver = Driver(engine, example_campaign)
        await engine.start(context(example_campaign))
        await engine.say(opening(example_campaign))
        async with asyncio.timeout(5):
            await driver.run(until=lambda e: isinstance(e, ToolCall))
            await fake.wait_for(lambda: len(fake.sessions) > 1 and fake.sessions[1].client_turns)
        await engine.close()
    second = fake.sessions[1]
    assert second.resumed_from is None
    assert second.setup["sessionResumption"] == {}
    instruction = second.setup["systemInstruction"]["parts"][0]["text"]
    assert "do not greet again" in instruction
    assert '"question_id": "good_time"' in instruction
    assert '"status": "continue"' in instruction
    assert second.client_turns == ["(The line is back. Continue the call where it stopped.)"]
    assert second.conversation != fake.sessions[0].conversation


async def test_echo_mode_answers_each_utterance_and_serves_many_calls(example_campaign: Campaign) -> None:
    async with FakeGeminiLive() as fake:  # no script: echo, as the benchmark uses it

        async def one_call() -> tuple[int, float]:
            engine = engine_for(fake)
            try:
                await engine.start(context(example_campaign))
                speech = tone(400, 16_000, hz=300)
                silence = bytes(len(tone(400, 16_000)))
                sent = time.monotonic()
                for chunk in (speech, silence):
                    for i in range(0, len(chunk), 640):
                        await engine.send_audio(chunk[i : i + 640])
                first_audio = None
                audio = 0
                async with asyncio.timeout(5):
                    async for event in engine.events():
                        if isinstance(event, AudioOut):
                            first_audio = first_audio or time.monotonic()
                            audio += len(event.pcm)
                        if isinstance(event, TurnComplete):
                            break
                assert first_audio is not None
                return audio, first_audio - sent
            finally:
                await engine.close()

        results = await asyncio.gather(*(one_call() for _ in range(20)))
    assert fake.violations == []
    assert len(fake.conversations) == 20
    for audio, _latency in results:
        assert audio == pytest.approx(400 * 48, abs=20 * 48)  # the 400 ms utterance, echoed at 24 kHz


async def utterance(engine: GeminiLiveEngine, speech_ms: int = 400, silence_ms: int = 400) -> None:
    """The lead speaks, in real time: 20 ms frames, as the carrier delivers them."""
    started = time.monotonic()
    pcm = tone(speech_ms, 16_000, hz=300) + bytes(32 * silence_ms)
    for n, i in enumerate(range(0, len(pcm), 640)):
        await engine.send_audio(pcm[i : i + 640])
        await asyncio.sleep(max(0.0, started + (n + 1) * 0.02 - time.monotonic()))


async def next_of(engine: GeminiLiveEngine, kind: type, timeout_s: float = 5.0) -> list[EngineEvent]:
    """Events up to and including the next one of `kind`."""
    seen: list[EngineEvent] = []
    async with asyncio.timeout(timeout_s):
        async for event in engine.events():
            seen.append(event)
            if isinstance(event, kind):
                return seen
    raise AssertionError(f"the events ended before a {kind.__name__}")


async def test_echo_mode_barge_in_and_go_away(example_campaign: Campaign) -> None:
    async with FakeGeminiLive() as fake:
        engine = engine_for(fake)
        try:
            await engine.start(context(example_campaign))
            await utterance(engine)
            first = await next_of(engine, TurnComplete)
            assert any(isinstance(e, AudioOut) for e in first)
            # The lead speaks again while the 400 ms reply would still be playing: a barge-in.
            await utterance(engine, speech_ms=200, silence_ms=0)
            await next_of(engine, Interrupted)
            # The service announces its end; the engine moves to a resumed session that still echoes.
            await fake.go_away(0, time_left_s=5.0)
            await fake.wait_sessions(2)
            await utterance(engine, speech_ms=300, silence_ms=350)
            resumed = await next_of(engine, TurnComplete)
        finally:
            await engine.close()
    assert fake.violations == []
    assert fake.sessions[1].resumed_from == fake.sessions[0].handles_sent[-1]
    assert fake.sessions[1].conversation == 0
    assert sum(len(e.pcm) for e in resumed if isinstance(e, AudioOut)) >= 300 * 48
