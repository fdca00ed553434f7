"""OpenAIRealtimeEngine against the fake OpenAI Realtime server (GA wire protocol, loopback).

The tests play the bridge: they feed the lead's audio, answer tool calls the way bridge/tools.py
does (`continue` with the next question, or `wrap_up`), and read the engine's events.
"""

from __future__ import annotations

import asyncio
import time
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
from bridge.engines.openai_realtime import OpenAIRealtimeEngine, OpenAIRealtimeError, ReconnectPolicy
from leadqual.campaign import Campaign
from leadqual.models import Answer, EndReason, Lead
from local.fakes.openai_realtime import (
    FakeOpenAIRealtime,
    FakeOpenAIRealtimeThread,
    Reply,
    Script,
    ToolCallSpec,
    silence,
    tone,
)
from local.fakes.tls import make_loopback_tls

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]

KEY = "sk-test-key"
FAST_VAD = {
    "type": "server_vad",
    "threshold": 0.5,
    "prefix_padding_ms": 300,
    "silence_duration_ms": 200,
    "create_response": True,
    "interrupt_response": True,
}
QUICK_RETRY = ReconnectPolicy(max_attempts=2, initial_delay_s=0.01, max_delay_s=0.05, open_timeout_s=2.0)

RECORD_ANSWER = ToolSpec(
    name="record_answer",
    description="Record the lead's answer to one question.",
    parameters={
        "type": "object",
        "properties": {
            "question_id": {"type": "string"},
            "value": {"type": ["boolean", "number", "string", "null"]},
            "quote": {"type": "string"},
        },
        "required": ["question_id", "value", "quote"],
    },
)
END_CALL = ToolSpec(
    name="end_call",
    description="End the call early.",
    parameters={
        "type": "object",
        "properties": {"reason": {"type": "string", "enum": [r.value for r in EndReason]}},
        "required": ["reason"],
    },
)


def make_ctx(campaign: Campaign, answers: tuple[Answer, ...] = ()) -> SessionContext:
    lead = Lead(
        lead_id="L-0001", phone="+254711000001", name="Wanjiku Kamau", company="Duka Ltd", opt_in=True
    )
    instructions = (
        f"You are {campaign.agent.name} from {campaign.agent.company}. Ask the qualifying questions one at a time "
        "and call record_answer after each answer."
    )
    return SessionContext(
        session_id="HD_test_session",
        campaign=campaign,
        lead=lead,
        instructions=instructions,
        tools=(RECORD_ANSWER, END_CALL),
        answers=answers,
    )


def opening_line(ctx: SessionContext) -> str:
    c = ctx.campaign
    return c.render(c.lines.greeting, ctx.lead) + " " + c.render(c.questions[0].ask, ctx.lead)


class Tap:
    """Reads engine.events() in its own task, timestamping each event as the bridge would see it."""

    def __init__(self, engine: OpenAIRealtimeEngine) -> None:
        self.seen: list[tuple[float, EngineEvent]] = []
        self.ended = asyncio.Event()
        self._queue: asyncio.Queue[tuple[float, EngineEvent | None]] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(engine))

    async def _run(self, engine: OpenAIRealtimeEngine) -> None:
        async for event in engine.events():
            stamped = (time.monotonic(), event)
            self.seen.append(stamped)
            await self._queue.put(stamped)
        self.ended.set()
        await self._queue.put((time.monotonic(), None))

    async def next(self, kind: type[Any], within: float = 5.0) -> tuple[float, Any]:
        """The next event of this type; events of other types are skipped (they stay in `seen`)."""
        deadline = time.monotonic() + within
        while True:
            at, event = await asyncio.wait_for(self._queue.get(), max(0.01, deadline - time.monotonic()))
            if event is None:
                raise AssertionError(f"event stream ended while waiting for {kind.__name__}")
            if isinstance(event, kind):
                return at, event

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for _, e in self.seen if isinstance(e, kind)]

    async def stop(self) -> None:
        await asyncio.wait_for(self._task, 5.0)


async def speak(engine: OpenAIRealtimeEngine, ms: int = 300, trailing_silence_ms: int = 400) -> None:
    """The lead says something: loud audio, then the silence that ends the turn (in 20 ms frames)."""
    pcm = tone(ms, hz=220, amplitude=8000) + silence(trailing_silence_ms)
    frame = 24_000 * 2 * 20 // 1000
    for i in range(0, len(pcm), frame):
        await engine.send_audio(pcm[i : i + frame])


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_full_qualification_with_tool_calls(example_campaign: Campaign) -> None:
    ctx = make_ctx(example_campaign)
    questions = example_campaign.questions
    given = [
        ("good_time", True, "yes, now is fine"),
        ("decision_maker", True, "yes, I sign off on software"),
        ("seats", 25, "about twenty five people"),
        ("timeline", 2, "in the next two months"),
    ]
    replies: list[Reply] = []
    for i, (qid, value, quote) in enumerate(given):
        args = {"question_id": qid, "value": value, "quote": quote}
        # The tool call is slow to finish, so tool results reach the engine while the reply is active.
        replies.append(Reply(tool_calls=[ToolCallSpec("record_answer", args)], done_delay_s=0.05))
        if i + 1 < len(questions):
            replies.append(Reply(text="Thanks. " + example_campaign.render(questions[i + 1].ask, ctx.lead)))
    script = Script(replies=replies, heard=[quote for _, _, quote in given])
    handoff = example_campaign.transfer.handoff_line

    async with FakeOpenAIRealtime(script=script, api_key=KEY) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, turn_detection=FAST_VAD)
        await engine.start(ctx)
        tap = Tap(engine)
        await engine.say(opening_line(ctx))
        await tap.next(TurnComplete)

        recorded: dict[str, Any] = {}
        for qid, _, _ in given:
            await speak(engine)
            _, call = await tap.next(ToolCall)
            assert call.name == "record_answer"
            assert call.args["question_id"] == qid
            recorded[qid] = call.args["value"]
            remaining = [q for q in questions if q.id not in recorded]
            if remaining:
                nxt = remaining[0]
                ask = example_campaign.render(nxt.ask, ctx.lead)
                await engine.send_tool_result(
                    call, {"status": "continue", "next_question_id": nxt.id, "next_question": ask}
                )
                await tap.next(TurnComplete)  # the agent asked the next question
            else:
                await engine.send_tool_result(call, {"status": "wrap_up"})
        await engine.say(handoff)
        await tap.next(TurnComplete)
        await engine.close()
        await tap.stop()

        session = fake.sessions[0]
        assert fake.violations == []
        assert script.exhausted == 0
        assert script.replies == []

    assert recorded == {"good_time": True, "decision_maker": True, "seats": 25, "timeline": 2}
    outputs = [o["output"]["status"] for o in session.tool_outputs]
    assert outputs == ["continue", "continue", "continue", "wrap_up"]
    # The model spoke the opening, then alternated tool call / next question, and after wrap_up
    # said nothing of its own: the only reply left is the exact handoff line.
    kinds = [(r.kind, r.text) for r in session.responses]
    assert kinds[0] == ("say", opening_line(ctx))
    assert kinds[-1] == ("say", handoff)
    assert [k for k, _ in kinds] == ["say"] + ["script"] * 7 + ["say"]
    assert all(r.status == "completed" for r in session.responses)
    # A response.create sent while a reply was still active would have been refused.
    assert session.refused_creates == 0
    assert session.cancels == 0
    assert [t.text for t in tap.of(TranscriptIn)] == [quote for _, _, quote in given]
    spoken = [t.text for t in tap.of(TranscriptOut)]
    assert spoken[0] == opening_line(ctx)
    assert spoken[-1] == handoff
    usage = tap.of(Usage)
    assert len(usage) == len(session.responses)
    assert sum(u.output_tokens for u in usage) > 0
    assert sum(u.audio_seconds_in for u in usage) == pytest.approx(4 * 0.7, abs=0.05)
    audio_ms = sum(len(a.pcm) for a in tap.of(AudioOut)) / 48
    assert audio_ms == pytest.approx(sum(r.audio_ms for r in session.responses), abs=1)


async def test_session_update_declares_ga_audio_formats_vad_and_tools(example_campaign: Campaign) -> None:
    ctx = make_ctx(example_campaign)
    async with FakeOpenAIRealtime(api_key=KEY) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, model="gpt-realtime", vad="semantic_vad")
        await engine.start(ctx)
        await wait_for(lambda: engine.session_config != {})
        await engine.close()
        session = fake.sessions[0]
        assert fake.violations == []

    assert session.model == "gpt-realtime"
    assert "OpenAI-Beta" not in session.headers
    assert session.headers["Authorization"] == "Bearer ***"  # checked by the fake, masked in its record
    [update] = session.session_updates
    assert update["type"] == "realtime"
    assert update["instructions"] == ctx.instructions
    assert update["output_modalities"] == ["audio"]
    audio_in, audio_out = update["audio"]["input"], update["audio"]["output"]
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_out["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_in["turn_detection"]["type"] == "semantic_vad"
    assert audio_in["turn_detection"]["interrupt_response"] is True
    assert audio_in["transcription"] == {"model": "gpt-4o-mini-transcribe", "language": "en"}
    assert audio_out["voice"] == "marin"  # the campaign names no voice
    assert update["tool_choice"] == "auto"
    assert [(t["type"], t["name"]) for t in update["tools"]] == [
        ("function", "record_answer"),
        ("function", "end_call"),
    ]
    assert update["tools"][0]["parameters"] == RECORD_ANSWER.parameters
    # The server's confirmation is kept for inspection.
    assert engine.session_config["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"


async def test_barge_in_interrupts_within_a_frame_and_truncates_what_was_played(
    example_campaign: Campaign,
) -> None:
    ctx = make_ctx(example_campaign)
    script = Script(
        replies=[Reply(text="Oh, sorry. I am Amina from Acme CRM.")], heard=["sorry, who is this?"]
    )
    # Paced like a real model: 20 ms chunks in real time, so the lead can talk over the opening;
    # like a real server it still delivers the audio it had in flight when it cancelled.
    async with FakeOpenAIRealtime(
        script=script, api_key=KEY, chunk_ms=20, realtime_factor=1.0, cancel_lag_chunks=3
    ) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, turn_detection=FAST_VAD)
        await engine.start(ctx)
        tap = Tap(engine)
        await engine.say(opening_line(ctx))
        heard_ms = 0
        while heard_ms < 300:
            _, chunk = await tap.next(AudioOut)
            heard_ms += len(chunk.pcm) // 48

        await engine.send_audio(tone(60, hz=220, amplitude=8000))  # the lead starts talking
        t_interrupted, _ = await tap.next(Interrupted)
        session = fake.sessions[0]
        [t_speech_started] = session.sent_times("input_audio_buffer.speech_started")
        latency_ms = (t_interrupted - t_speech_started) * 1000
        assert latency_ms < 20, f"Interrupted {latency_ms:.1f} ms after speech_started"
        print(f"barge-in: Interrupted {latency_ms:.2f} ms after the server's speech_started")

        await engine.truncate(played_ms=280)
        await engine.send_audio(tone(240, hz=220, amplitude=8000) + silence(300))
        await tap.next(TurnComplete)  # the cancelled opening
        await tap.next(TurnComplete)  # the reply to what the lead said
        await wait_for(lambda: session.truncations != [])
        await engine.close()
        await tap.stop()
        assert fake.violations == []

    opening, reply = session.responses
    assert (opening.kind, opening.status, opening.reason) == ("say", "cancelled", "turn_detected")
    assert session.truncations == [{"item_id": opening.item_id, "content_index": 0, "audio_end_ms": 280}]
    assert reply.status == "completed"
    # Nothing of the interrupted opening reached the bridge after Interrupted.
    assert reply.first_audio_at is not None
    late = [at for at, e in tap.seen if isinstance(e, AudioOut) and t_interrupted < at < reply.first_audio_at]
    assert late == []


async def test_truncate_never_claims_more_than_was_sent(example_campaign: Campaign) -> None:
    ctx = make_ctx(example_campaign)
    script = Script(replies=[Reply(text="Okay.")], heard=["hello?"])
    async with FakeOpenAIRealtime(script=script, api_key=KEY, ms_per_char=10) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, turn_detection=FAST_VAD)
        await engine.start(ctx)
        tap = Tap(engine)
        await engine.say("Hello there.")  # 200 ms of audio, all sent at once
        await tap.next(TurnComplete)
        await engine.send_audio(tone(100, hz=220, amplitude=8000))
        await tap.next(Interrupted)  # the lead is still hearing it
        await engine.truncate(played_ms=10_000)  # the bridge's clock ran past the audio
        await wait_for(lambda: fake.sessions[0].truncations != [])
        await engine.close()
        await tap.stop()
        assert fake.violations == []
        assert fake.sessions[0].truncations[0]["audio_end_ms"] == 200


async def test_say_while_the_model_talks_cancels_it_and_speaks_the_line_next(
    example_campaign: Campaign,
) -> None:
    ctx = make_ctx(example_campaign)
    script = Script(
        replies=[Reply(text="Let me tell you all about our wonderful product " * 3)], heard=["hmm"]
    )
    async with FakeOpenAIRealtime(script=script, api_key=KEY, chunk_ms=20, realtime_factor=1.0) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, turn_detection=FAST_VAD)
        await engine.start(ctx)
        tap = Tap(engine)
        await speak(engine)
        await tap.next(AudioOut)
        closing = example_campaign.render(example_campaign.lines.closing, ctx.lead)
        await engine.say(closing)
        await tap.next(TurnComplete)
        await tap.next(TurnComplete)
        await engine.close()
        await tap.stop()
        session = fake.sessions[0]
        assert fake.violations == []

    assert [(r.kind, r.status) for r in session.responses] == [("script", "cancelled"), ("say", "completed")]
    assert session.responses[1].text == closing
    assert session.cancels == 1
    assert session.refused_creates == 0


async def test_drop_mid_reply_reconnects_with_a_summary_and_continues(example_campaign: Campaign) -> None:
    ctx = make_ctx(example_campaign)
    ask = example_campaign.render(example_campaign.questions[1].ask, ctx.lead)
    script = Script(
        replies=[
            Reply(
                tool_calls=[
                    ToolCallSpec("record_answer", {"question_id": "good_time", "value": True, "quote": "yes"})
                ]
            ),
            Reply(text="Great. " + ask, drop_after_chunks=2),
            Reply(text="Sorry, the line dropped. " + ask),
        ],
        heard=["yes"],
    )
    async with FakeOpenAIRealtime(script=script, api_key=KEY) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, turn_detection=FAST_VAD, reconnect=QUICK_RETRY)
        await engine.start(ctx)
        tap = Tap(engine)
        await engine.say(opening_line(ctx))
        await tap.next(TurnComplete)
        await speak(engine)
        _, call = await tap.next(ToolCall)
        await engine.send_tool_result(
            call, {"status": "continue", "next_question_id": "decision_maker", "next_question": ask}
        )
        await tap.next(TurnComplete)  # the apology and question on the new connection
        await engine.close()
        await tap.stop()
        assert fake.violations == []

    assert len(fake.sessions) == 2
    assert engine.reconnects == 1
    assert tap.of(EngineFailed) == []
    [update] = fake.sessions[1].session_updates
    resumed = update["instructions"]
    assert resumed.startswith(ctx.instructions)
    assert "do not greet" in resumed
    assert "- good_time: yes" in resumed
    assert ask in resumed
    assert [(r.kind, r.text) for r in fake.sessions[1].responses] == [
        ("script", "Sorry, the line dropped. " + ask)
    ]
    assert fake.sessions[0].responses[-1].status == "dropped"


async def test_a_say_cut_off_by_a_drop_is_spoken_again_after_reconnect(example_campaign: Campaign) -> None:
    ctx = make_ctx(example_campaign, answers=(Answer(question_id="good_time", value=True),))
    handoff = example_campaign.transfer.handoff_line
    async with FakeOpenAIRealtime(api_key=KEY, chunk_ms=20, realtime_factor=1.0) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, turn_detection=FAST_VAD, reconnect=QUICK_RETRY)
        await engine.start(ctx)
        tap = Tap(engine)
        await engine.say(handoff)
        await tap.next(AudioOut)
        await fake.drop_all()
        await tap.next(TurnComplete)
        await engine.close()
        await tap.stop()
        assert fake.violations == []

    assert len(fake.sessions) == 2
    assert "- good_time: yes" in fake.sessions[1].session_updates[0]["instructions"]  # from ctx.answers
    assert [(r.kind, r.text, r.status) for r in fake.sessions[1].responses] == [("say", handoff, "completed")]


async def test_reconnects_exhausted_emit_engine_failed(example_campaign: Campaign) -> None:
    async with FakeOpenAIRealtime(api_key=KEY) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, reconnect=QUICK_RETRY)
        await engine.start(make_ctx(example_campaign))
        tap = Tap(engine)
        fake.fail_next_connections(5, status=503)
        await fake.drop_all()
        _, failed = await tap.next(EngineFailed)
        await asyncio.wait_for(tap.ended.wait(), 2)
        await engine.close()

    assert "503" in failed.reason
    assert fake.connection_attempts == 1 + QUICK_RETRY.max_attempts
    assert fake.rejected == [503, 503]


@pytest.mark.parametrize("auth_failure", ["error_event", "http_401"])
async def test_bad_key_fails_start_without_retrying(example_campaign: Campaign, auth_failure: str) -> None:
    async with FakeOpenAIRealtime(api_key=KEY, auth_failure=auth_failure) as fake:  # type: ignore[arg-type]
        engine = OpenAIRealtimeEngine("sk-wrong", url=fake.url, reconnect=QUICK_RETRY)
        with pytest.raises(OpenAIRealtimeError) as caught:
            await engine.start(make_ctx(example_campaign))
        await engine.close()

    assert caught.value.retryable is False
    assert caught.value.code == "invalid_api_key" or caught.value.status == 401
    assert fake.connection_attempts == 1
    assert fake.sessions == []


async def test_key_revoked_mid_call_fails_after_one_attempt(example_campaign: Campaign) -> None:
    async with FakeOpenAIRealtime(api_key=KEY) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, reconnect=QUICK_RETRY)
        await engine.start(make_ctx(example_campaign))
        tap = Tap(engine)
        fake.api_key = "sk-rotated"
        await fake.drop_all()
        _, failed = await tap.next(EngineFailed)
        await asyncio.wait_for(tap.ended.wait(), 2)
        await engine.close()

    assert "invalid_api_key" in failed.reason
    assert fake.connection_attempts == 2  # the fatal answer is not retried


async def test_server_errors_are_surfaced_and_fatal_ones_end_the_session(example_campaign: Campaign) -> None:
    script = Script(
        replies=[
            Reply(error={"type": "server_error", "code": None, "message": "The server had an error."}),
            Reply(text="Sorry, could you say that again?"),
            Reply(
                error={
                    "type": "insufficient_quota",
                    "code": "insufficient_quota",
                    "message": "Quota exceeded.",
                }
            ),
        ],
        heard=["yes", "yes", "yes"],
    )
    async with FakeOpenAIRealtime(script=script, api_key=KEY) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, turn_detection=FAST_VAD, reconnect=QUICK_RETRY)
        await engine.start(make_ctx(example_campaign))
        tap = Tap(engine)
        await speak(engine)  # → a recoverable server error, the session stays up
        await wait_for(lambda: len(engine.server_errors) == 1)
        assert tap.of(EngineFailed) == []
        await speak(engine)
        await tap.next(TurnComplete)
        await speak(engine)  # → out of quota: fatal
        _, failed = await tap.next(EngineFailed)
        await asyncio.wait_for(tap.ended.wait(), 2)
        await engine.close()

    assert failed.reason == "openai realtime error: insufficient_quota"
    assert [e["code"] for e in engine.server_errors] == [None, "insufficient_quota"]
    assert fake.connection_attempts == 1


async def test_slow_first_byte_and_slow_stream_still_deliver_in_order(example_campaign: Campaign) -> None:
    script = Script(
        replies=[Reply(text="Take your time.", first_delay_s=0.3, chunk_delay_s=0.01)], heard=["uh"]
    )
    async with FakeOpenAIRealtime(script=script, api_key=KEY, ms_per_char=20) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, turn_detection=FAST_VAD)
        await engine.start(make_ctx(example_campaign))
        tap = Tap(engine)
        started = time.monotonic()
        await speak(engine)
        first_audio, _ = await tap.next(AudioOut)
        await tap.next(TurnComplete)
        await engine.close()
        await tap.stop()

    assert first_audio - started >= 0.3
    assert sum(len(a.pcm) for a in tap.of(AudioOut)) == 300 * 48  # 15 characters at 20 ms each


async def test_echo_mode_serves_many_concurrent_sessions(example_campaign: Campaign) -> None:
    async with FakeOpenAIRealtime(api_key=KEY, mode="echo") as fake:

        async def one_call(n: int) -> float:
            engine = OpenAIRealtimeEngine(KEY, url=fake.url, turn_detection=FAST_VAD)
            await engine.start(make_ctx(example_campaign))
            tap = Tap(engine)
            await speak(engine, ms=300, trailing_silence_ms=300)
            await tap.next(TurnComplete)
            await engine.close()
            await tap.stop()
            return sum(len(a.pcm) for a in tap.of(AudioOut)) / 48

        echoed = await asyncio.gather(*(one_call(n) for n in range(16)))
        assert len(fake.sessions) == 16
        assert fake.violations == []

    # The echo is the utterance as the VAD cut it: 300 ms of speech plus the 200 ms of silence
    # that ended the turn.
    assert echoed == [pytest.approx(500, abs=10)] * 16


async def test_a_stable_connection_earns_its_reconnects_back(example_campaign: Campaign) -> None:
    policy = ReconnectPolicy(max_attempts=1, initial_delay_s=0.01, max_delay_s=0.01, stable_after_s=0.2)
    async with FakeOpenAIRealtime(api_key=KEY) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, reconnect=policy)
        await engine.start(make_ctx(example_campaign))
        tap = Tap(engine)
        await fake.drop_all()
        await wait_for(lambda: len(fake.sessions) == 2)
        await asyncio.sleep(0.3)  # up longer than stable_after_s: the streak starts over
        await fake.drop_all()
        await wait_for(lambda: len(fake.sessions) == 3)
        await fake.drop_all()  # at once again: the one attempt of this streak is used up
        _, failed = await tap.next(EngineFailed)
        await engine.close()

    assert engine.reconnects == 2
    assert "connection dropped" in failed.reason


async def test_the_engine_speaks_tls_like_the_real_endpoint(example_campaign: Campaign) -> None:
    tls = make_loopback_tls()
    async with FakeOpenAIRealtime(api_key=KEY, ssl_context=tls.server_context) as fake:
        assert fake.url.startswith("wss://")
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, ssl_context=tls.client_context)
        await engine.start(make_ctx(example_campaign))
        tap = Tap(engine)
        await engine.say("Hello over TLS.")
        await tap.next(TurnComplete)
        await engine.close()
        await tap.stop()
        assert fake.violations == []
    assert fake.sessions[0].responses[0].text == "Hello over TLS."


def test_the_threaded_fake_serves_sync_callers(example_campaign: Campaign) -> None:
    async def call(url: str) -> int:
        engine = OpenAIRealtimeEngine(KEY, url=url, turn_detection=FAST_VAD)
        await engine.start(make_ctx(example_campaign))
        tap = Tap(engine)
        await speak(engine, ms=200, trailing_silence_ms=300)
        await tap.next(TurnComplete)
        await engine.close()
        await tap.stop()
        return sum(len(a.pcm) for a in tap.of(AudioOut)) // 48

    with FakeOpenAIRealtimeThread(api_key=KEY, mode="echo") as served:
        echoed_ms = asyncio.run(call(served.url))
        assert len(served.fake.sessions) == 1
    assert echoed_ms == 400  # 200 ms of speech and the 200 ms of silence that ended it


async def test_close_during_a_reconnect_ends_cleanly(example_campaign: Campaign) -> None:
    policy = ReconnectPolicy(max_attempts=2, initial_delay_s=0.5, max_delay_s=0.5)
    async with FakeOpenAIRealtime(api_key=KEY) as fake:
        engine = OpenAIRealtimeEngine(KEY, url=fake.url, reconnect=policy)
        await engine.start(make_ctx(example_campaign))
        tap = Tap(engine)
        await fake.drop_all()
        await asyncio.sleep(0.05)  # the engine is waiting to reconnect
        started = time.monotonic()
        await engine.close()
        await asyncio.wait_for(tap.ended.wait(), 1)
        assert time.monotonic() - started < 0.3
        await engine.send_audio(silence(20))  # after close: ignored, no error
        await asyncio.sleep(0.6)

    assert tap.of(EngineFailed) == []
    assert fake.connection_attempts == 1
