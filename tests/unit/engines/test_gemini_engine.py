"""GeminiLiveEngine's pure parts, without sockets: the reconnect policy, the session configuration,
and how server messages become events (fed as google-genai message objects to a recording session)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from google.genai import types
from pydantic import ValidationError

from bridge.engines.base import (
    AudioOut,
    EngineEvent,
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
    DEFAULT_VOICE,
    ActivityDetection,
    GeminiLiveEngine,
    ReconnectPolicy,
    _AudioRing,
    _EventChannel,
    _seconds,
    make_client,
)
from leadqual.campaign import Campaign
from leadqual.models import Lead

LEAD = Lead(lead_id="L-1", phone="+254711000001", name="Wanjiku Kamau", company="Kamau Traders", opt_in=True)
RECORD = ToolSpec("record_answer", "Record an answer.", {"type": "object", "properties": {}})


# ── the reconnect policy ──────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("code", "fatal"),
    [
        (1008, True),  # policy: bad key, quota, unknown handle
        (1007, True),  # invalid argument: the same setup fails again
        (1002, True),
        (1011, False),  # internal error: retry
        (1006, False),  # abrupt drop
        (1000, False),  # the server ended the session (e.g. after goAway)
        (1001, False),
        (401, True),  # handshake statuses
        (403, True),
        (429, False),
        (408, False),
        (503, False),
        (None, False),  # no code at all: a network error
    ],
)
def test_fatal_codes(code: int | None, fatal: bool) -> None:
    assert ReconnectPolicy().is_fatal(code) is fatal


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = ReconnectPolicy(backoff_initial_s=0.1, backoff_max_s=1.0)
    for failures, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (12, 1.0)]:
        delays = [policy.backoff_s(failures) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert max(delays) - min(delays) > ceiling / 10  # jittered, so calls do not reconnect in step


@pytest.mark.parametrize(
    "bad",
    [
        {"backoff_initial_s": 2.0, "backoff_max_s": 1.0},
        {"max_attempts": -1},
        {"max_attempts": 100},
        {"connect_timeout_s": 0},
        {"retry_forever": True},
    ],
)
def test_policy_is_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ReconnectPolicy(**bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.5s", 1.5), ("10s", 10.0), ("0.250s", 0.25), ("", 0.0), (None, 0.0), ("soon", 0.0)],
)
def test_go_away_time_left(text: str | None, seconds: float) -> None:
    assert _seconds(text) == seconds


def test_activity_detection_keeps_barge_in_on() -> None:
    config = ActivityDetection(start_sensitivity="high", silence_duration_ms=400).to_config()
    detection = config.automatic_activity_detection
    assert detection is not None
    assert detection.disabled is False
    assert detection.start_of_speech_sensitivity == types.StartSensitivity.START_SENSITIVITY_HIGH
    assert detection.end_of_speech_sensitivity == types.EndSensitivity.END_SENSITIVITY_HIGH
    assert detection.silence_duration_ms == 400
    assert config.activity_handling == types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS


# ── buffers ───────────────────────────────────────────────────────────────────────────────────


def test_audio_ring_keeps_the_newest_audio() -> None:
    ring = _AudioRing(limit=6)
    for i, chunk in enumerate([b"aa", b"bb", b"cc", b"dd"]):
        ring.append(chunk, at=float(i))
    assert ring.size == 6
    ring.drop_before(2.0)
    assert ring.take() == [b"cc", b"dd"]
    assert ring.take() == []
    off = _AudioRing(limit=0)
    off.append(b"aa")
    assert off.take() == []


async def test_event_channel_drops_unread_audio_on_barge_in_and_ends_after_close() -> None:
    channel = _EventChannel(maxsize=10)
    for event in [AudioOut(b"1"), TranscriptOut("hi"), AudioOut(b"2")]:
        await channel.put(event)
    dropped = await channel.put_urgent(Interrupted(), drop_audio=True)
    assert dropped == 2
    await channel.close()
    assert [await channel.get() for _ in range(3)] == [TranscriptOut("hi"), Interrupted(), None]


async def test_event_channel_is_bounded() -> None:
    channel = _EventChannel(maxsize=2)
    await channel.put(AudioOut(b"1"))
    await channel.put(AudioOut(b"2"))
    blocked = asyncio.create_task(channel.put(AudioOut(b"3")))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # backpressure: the receive loop waits for the reader
    assert await channel.get() == AudioOut(b"1")
    await asyncio.wait_for(blocked, 1)
    assert await channel.put_urgent(Interrupted()) == 0  # urgent events pass the bound


# ── the session configuration ─────────────────────────────────────────────────────────────────


def engine_with(campaign: Campaign, **kwargs: Any) -> GeminiLiveEngine:
    engine = GeminiLiveEngine(make_client("test-key"), **kwargs)
    engine._ctx = SessionContext(
        session_id="HD_1", campaign=campaign, lead=LEAD, instructions="Be Amina.", tools=(RECORD,)
    )
    return engine


def test_config_asks_for_audio_transcripts_resumption_and_compression(example_campaign: Campaign) -> None:
    config = engine_with(example_campaign, compression_trigger_tokens=20_000)._live_config()
    assert config.response_modalities == [types.Modality.AUDIO]
    assert config.input_audio_transcription is not None
    assert config.output_audio_transcription is not None
    assert config.session_resumption is not None
    assert config.session_resumption.handle is None
    assert config.context_window_compression is not None
    assert config.context_window_compression.sliding_window is not None
    assert config.context_window_compression.trigger_tokens == 20_000
    assert config.tools is not None
    declaration = config.tools[0].function_declarations[0]
    assert (declaration.name, declaration.parameters_json_schema) == ("record_answer", RECORD.parameters)
    assert config.system_instruction.parts[0].text.startswith("Be Amina.")


@pytest.mark.parametrize(
    ("wanted", "used"), [("Kore", "Kore"), ("", DEFAULT_VOICE), ("alloy", DEFAULT_VOICE)]
)
def test_voice_comes_from_the_campaign_when_gemini_has_it(
    example_campaign: Campaign, wanted: str, used: str
) -> None:
    campaign = example_campaign.model_copy(
        update={"agent": example_campaign.agent.model_copy(update={"voice": wanted})}
    )
    config = engine_with(campaign)._live_config()
    assert config.speech_config.voice_config.prebuilt_voice_config.voice_name == used


def test_reconnect_config_carries_the_handle_or_the_history(example_campaign: Campaign) -> None:
    engine = engine_with(example_campaign)
    engine._generation = 1
    engine._handle = "h-1"
    assert engine._live_config().session_resumption.handle == "h-1"
    engine._handle = None  # the session died before the service issued any handle
    text = engine._live_config().system_instruction.parts[0].text
    assert "do not greet again" in text


# ── server messages → events ──────────────────────────────────────────────────────────────────


class RecordingSession:
    """Stands in for google-genai's AsyncSession on the sending side; records what was sent."""

    def __init__(self) -> None:
        self.tool_responses: list[types.FunctionResponse] = []
        self.client_turns: list[str] = []

    async def send_tool_response(self, *, function_responses: list[types.FunctionResponse]) -> None:
        self.tool_responses.extend(function_responses)

    async def send_client_content(self, *, turns: types.Content, turn_complete: bool) -> None:
        self.client_turns.append(turns.parts[0].text or "")


def msg(**fields: Any) -> types.LiveServerMessage:
    return types.LiveServerMessage.model_validate(fields)


def call_msg(call_id: str, question: str) -> types.LiveServerMessage:
    args = {"question_id": question, "value": True, "quote": "yes"}
    return msg(tool_call={"function_calls": [{"id": call_id, "name": "record_answer", "args": args}]})


async def drain(engine: GeminiLiveEngine) -> list[EngineEvent]:
    await engine._events.close()
    return [e async for e in engine.events()]


async def attached(campaign: Campaign, generation: int = 1) -> tuple[GeminiLiveEngine, RecordingSession]:
    engine = engine_with(campaign)
    session = RecordingSession()
    engine._session = session
    engine._generation = generation
    return engine, session


async def test_transcripts_are_joined_per_utterance_and_per_turn(example_campaign: Campaign) -> None:
    engine, session = await attached(example_campaign)
    for message in [
        msg(server_content={"input_transcription": {"text": "Give or"}}),
        msg(server_content={"input_transcription": {"text": " take forty"}}),
        msg(
            server_content={
                "model_turn": {
                    "parts": [{"inline_data": {"data": b"\x01\x02", "mime_type": "audio/pcm;rate=24000"}}]
                }
            }
        ),
        msg(server_content={"output_transcription": {"text": "Forty"}}),
        msg(server_content={"output_transcription": {"text": " seats, noted."}}),
        msg(server_content={"turn_complete": True}),
    ]:
        await engine._on_message(session, 1, message)
    assert await drain(engine) == [
        TranscriptIn("Give or take forty"),
        AudioOut(b"\x01\x02"),
        TranscriptOut("Forty seats, noted."),
        TurnComplete(),
    ]


async def test_usage_is_a_per_turn_delta_with_modalities(example_campaign: Campaign) -> None:
    engine, session = await attached(example_campaign)
    engine._audio_in_bytes = 32_000  # one second of lead audio since the last usage report
    usage = {
        "prompt_token_count": 500,
        "response_token_count": 60,
        "thoughts_token_count": 40,
        "prompt_tokens_details": [
            {"modality": "AUDIO", "token_count": 32},
            {"modality": "TEXT", "token_count": 468},
        ],
        "response_tokens_details": [{"modality": "AUDIO", "token_count": 60}],
    }
    await engine._on_message(session, 1, msg(usage_metadata=usage, server_content={"turn_complete": True}))
    events = await drain(engine)
    assert isinstance(events[0], Usage), "a turn's usage comes before its TurnComplete"
    assert events[1] == TurnComplete()
    report = events[0]
    assert (report.input_tokens, report.output_tokens) == (500, 100)  # thinking is billed as output
    assert report.audio_seconds_in == 1.0
    assert report.detail["prompt_by_modality"] == {"AUDIO": 32, "TEXT": 468}
    assert report.detail["response_by_modality"] == {"AUDIO": 60}
    assert engine._audio_in_bytes == 0


async def test_a_cancelled_call_gets_no_result(example_campaign: Campaign) -> None:
    engine, session = await attached(example_campaign)
    await engine._on_message(session, 1, call_msg("c1", "good_time"))
    await engine._on_message(session, 1, msg(tool_call_cancellation={"ids": ["c1"]}))
    (call,) = await drain(engine)
    assert isinstance(call, ToolCall)
    await engine.send_tool_result(call, {"status": "continue"})
    assert session.tool_responses == []


async def test_a_resumed_session_repeating_an_answered_call_under_a_new_id_is_answered_from_the_store(
    example_campaign: Campaign,
) -> None:
    engine, old = await attached(example_campaign)
    await engine._on_message(old, 1, call_msg("c1", "good_time"))
    call = await engine._events.get()
    assert isinstance(call, ToolCall)
    await engine.send_tool_result(call, {"status": "continue", "next_question_id": "decision_maker"})
    assert [r.id for r in old.tool_responses] == ["c1"]

    # The session dies before a handle covered the result; the resumed one regenerates the call.
    new = RecordingSession()
    engine._session, engine._generation, engine._replay_from = new, 2, 1
    await engine._on_message(new, 2, call_msg("c1-again", "good_time"))
    assert [(r.id, r.response) for r in new.tool_responses] == [
        ("c1-again", {"status": "continue", "next_question_id": "decision_maker"})
    ]
    # Once the resumed session has completed a turn, an identical call is a new call again.
    await engine._on_message(new, 2, msg(server_content={"turn_complete": True}))
    await engine._on_message(new, 2, call_msg("c2", "good_time"))
    events = await drain(engine)
    assert [e.call_id for e in events if isinstance(e, ToolCall)] == ["c2"]


async def test_say_is_queued_while_no_session_is_open_and_sent_first_on_the_next(
    example_campaign: Campaign,
) -> None:
    engine = engine_with(example_campaign)
    await engine.say("Goodbye.")
    session = RecordingSession()
    await engine._attach(session)
    assert session.client_turns == ["Say exactly this, word for word, and nothing else: Goodbye."]
