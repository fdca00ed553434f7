"""OpenAIRealtimeEngine without sockets: the pure helpers, and server events fed straight into the
engine's handler with a stub connection that records what the engine sends."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.engines import openai_realtime as oai
from bridge.engines.base import AudioOut, Interrupted, SessionContext, ToolCall, ToolSpec
from bridge.engines.openai_realtime import (
    OpenAIRealtimeEngine,
    ReconnectPolicy,
    default_turn_detection,
    pick_voice,
    resume_instructions,
    session_config,
)
from leadqual.campaign import Campaign
from leadqual.models import Lead

TOOL = ToolSpec("record_answer", "Record an answer.", {"type": "object", "properties": {}})


def make_ctx(campaign: Campaign) -> SessionContext:
    lead = Lead(lead_id="L1", phone="+254711000001", name="Wanjiku", company="Duka", opt_in=True)
    return SessionContext("HD_unit", campaign, lead, "Be brief.", (TOOL,))


class StubConnection:
    """Stands in for the WebSocket: records every client event the engine sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, data: str) -> None:
        self.sent.append(json.loads(data))

    async def close(self) -> None:
        return None

    def types(self) -> list[str]:
        return [e["type"] for e in self.sent]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(oai, "time", clock)
    return clock


@pytest.fixture
def engine(example_campaign: Campaign) -> tuple[OpenAIRealtimeEngine, StubConnection]:
    eng = OpenAIRealtimeEngine("sk-unit")
    conn = StubConnection()
    eng._ctx = make_ctx(example_campaign)
    eng._ws = conn  # type: ignore[assignment]
    return eng, conn


def drain(eng: OpenAIRealtimeEngine) -> list[Any]:
    out = []
    while not eng._events.empty():
        out.append(eng._events.get_nowait())
    return out


def delta(response_id: str, item_id: str, ms: int) -> dict[str, Any]:
    pcm = bytes(48 * ms)
    return {
        "type": "response.output_audio.delta",
        "response_id": response_id,
        "item_id": item_id,
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(pcm).decode(),
    }


def done(response_id: str, status: str = "completed") -> dict[str, Any]:
    usage = {"input_tokens": 5, "output_tokens": 7, "input_token_details": {}, "output_token_details": {}}
    return {
        "type": "response.done",
        "response": {"id": response_id, "status": status, "output": [], "usage": usage},
    }


def function_call(call_id: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    item = {"id": f"item_{call_id}", "type": "function_call", "status": status, "call_id": call_id}
    item |= {"name": "record_answer", "arguments": arguments}
    return {"type": "response.output_item.done", "response_id": "resp_1", "output_index": 0, "item": item}


# -- pure helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": -1},
        {"max_attempts": 6},
        {"initial_delay_s": -0.1},
        {"initial_delay_s": 3.0, "max_delay_s": 1.0},
        {"stable_after_s": 0},
        {"open_timeout_s": 0},
    ],
)
def test_reconnect_policy_rejects_unbounded_or_nonsense_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - every message differs; the type is the contract
        ReconnectPolicy(**kwargs)


def test_reconnect_delays_double_up_to_the_cap() -> None:
    policy = ReconnectPolicy(max_attempts=5, initial_delay_s=0.2, max_delay_s=1.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_session_config_is_the_ga_shape(example_campaign: Campaign) -> None:
    ctx = make_ctx(example_campaign)
    config = session_config(
        ctx, model="gpt-realtime", voice="cedar", turn_detection=None, transcription_model=None
    )
    assert config == {
        "type": "realtime",
        "model": "gpt-realtime",
        "instructions": "Be brief.",
        "output_modalities": ["audio"],
        "audio": {
            "input": {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None},
            "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "cedar"},
        },
        "tools": [
            {
                "type": "function",
                "name": "record_answer",
                "description": "Record an answer.",
                "parameters": TOOL.parameters,
            }
        ],
        "tool_choice": "auto",
    }


def test_turn_detection_defaults_suit_a_phone_call() -> None:
    server = default_turn_detection("server_vad")
    assert server["type"] == "server_vad"
    assert server["interrupt_response"] is True
    assert server["create_response"] is True
    semantic = default_turn_detection("semantic_vad")
    assert set(semantic) == {"type", "eagerness", "create_response", "interrupt_response"}


def test_resume_instructions_carry_the_answers_and_the_next_question() -> None:
    text = resume_instructions("BASE", {"good_time": True, "decision_maker": False, "seats": 12}, "When?")
    assert text.startswith("BASE\n")
    assert "- good_time: yes" in text
    assert "- decision_maker: no" in text
    assert "- seats: 12" in text
    assert text.rstrip().endswith("then ask: When?")
    assert "No answers have been recorded yet." in resume_instructions("BASE", {}, None)


def test_constructor_puts_the_model_in_the_url_and_needs_a_key() -> None:
    eng = OpenAIRealtimeEngine("sk-x", model="gpt-realtime-mini", url="wss://example.invalid/v1/realtime")
    assert eng._url == "wss://example.invalid/v1/realtime?model=gpt-realtime-mini"
    assert (eng.input_rate, eng.output_rate) == (24000, 24000)
    with pytest.raises(ValueError, match="API key"):
        OpenAIRealtimeEngine("")


# -- event handling ----------------------------------------------------------------------------


async def test_speech_after_the_reply_was_heard_is_not_a_barge_in(engine: Any, clock: Clock) -> None:
    eng, _ = engine
    await eng._handle({"type": "response.created", "response": {"id": "resp_1"}})
    await eng._handle(delta("resp_1", "item_1", 500))
    await eng._handle(done("resp_1"))
    clock.now += 0.5 + oai.PLAYBACK_SLACK_S + 0.01  # the lead heard all of it, then spoke
    await eng._handle({"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0})
    assert not any(isinstance(e, Interrupted) for e in drain(eng))


async def test_speech_while_the_reply_plays_interrupts_and_mutes_the_rest(engine: Any, clock: Clock) -> None:
    eng, conn = engine
    await eng._handle({"type": "response.created", "response": {"id": "resp_1"}})
    await eng._handle(delta("resp_1", "item_1", 400))
    await eng._handle(done("resp_1"))
    clock.now += 0.2  # still playing at the lead's end
    await eng._handle({"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0})
    await eng._handle(delta("resp_1", "item_1", 40))  # late audio of the interrupted reply
    events = drain(eng)
    assert isinstance(events[-1], Interrupted)
    assert sum(len(e.pcm) for e in events if isinstance(e, AudioOut)) == 400 * 48
    await eng.truncate(150)
    await eng.truncate(150)  # once per item
    truncates = [e for e in conn.sent if e["type"] == "conversation.item.truncate"]
    assert truncates == [
        {"type": "conversation.item.truncate", "item_id": "item_1", "content_index": 0, "audio_end_ms": 150}
    ]


async def test_without_server_interruption_the_engine_cancels_the_reply(example_campaign: Campaign) -> None:
    vad = default_turn_detection() | {"interrupt_response": False}
    eng = OpenAIRealtimeEngine("sk-unit", turn_detection=vad)
    conn = StubConnection()
    eng._ctx, eng._ws = make_ctx(example_campaign), conn  # type: ignore[assignment]
    await eng._handle({"type": "response.created", "response": {"id": "resp_1"}})
    await eng._handle(delta("resp_1", "item_1", 400))
    await eng._handle({"type": "input_audio_buffer.speech_started", "item_id": "u1", "audio_start_ms": 0})
    assert conn.types() == ["response.cancel"]


async def test_arguments_that_are_not_json_go_back_to_the_model(engine: Any) -> None:
    eng, conn = engine
    await eng._handle({"type": "response.created", "response": {"id": "resp_1"}})
    await eng._handle(function_call("call_1", '{"question_id": "seats", '))
    assert not any(isinstance(e, ToolCall) for e in drain(eng))
    [create_item] = conn.sent
    assert create_item["item"]["call_id"] == "call_1"
    assert json.loads(create_item["item"]["output"])["status"] == "error"
    await eng._handle(done("resp_1"))
    assert conn.types() == ["conversation.item.create", "response.create"]


async def test_an_incomplete_function_call_is_ignored(engine: Any) -> None:
    eng, conn = engine
    await eng._handle(function_call("call_1", "{}", status="incomplete"))
    assert drain(eng) == []
    assert conn.sent == []


async def test_parallel_calls_get_one_response_after_both_results(engine: Any) -> None:
    eng, conn = engine
    await eng._handle({"type": "response.created", "response": {"id": "resp_1"}})
    await eng._handle(function_call("call_a", '{"question_id": "seats", "value": 12, "quote": "12"}'))
    await eng._handle(function_call("call_b", '{"question_id": "timeline", "value": 2, "quote": "soon"}'))
    calls = [e for e in drain(eng) if isinstance(e, ToolCall)]
    assert [c.call_id for c in calls] == ["call_a", "call_b"]
    await eng.send_tool_result(calls[0], {"status": "continue", "next_question": "When?"})
    await eng._handle(done("resp_1"))
    assert conn.types() == ["conversation.item.create"]  # still waiting for call_b
    await eng.send_tool_result(calls[1], {"status": "continue", "next_question": "Anything else?"})
    assert conn.types() == ["conversation.item.create", "conversation.item.create", "response.create"]
    assert eng._answers == {"seats": 12, "timeline": 2}


async def test_wrap_up_keeps_the_model_quiet(engine: Any) -> None:
    eng, conn = engine
    await eng._handle(function_call("call_1", '{"question_id": "timeline", "value": 1, "quote": "now"}'))
    [call] = [e for e in drain(eng) if isinstance(e, ToolCall)]
    await eng.send_tool_result(call, {"status": "wrap_up"})
    assert conn.types() == ["conversation.item.create"]


async def test_a_refused_create_is_sent_again_after_the_reply_that_beat_it(engine: Any) -> None:
    eng, conn = engine
    await eng.say("Thank you, goodbye.")
    create = conn.sent[-1]
    # A VAD turn got in first; the server refuses our create, naming its event id.
    await eng._handle({"type": "response.created", "response": {"id": "resp_vad"}})
    error = {"type": "invalid_request_error", "code": "conversation_already_has_active_response"}
    await eng._handle({"type": "error", "error": error | {"message": "busy", "event_id": create["event_id"]}})
    assert conn.types() == ["response.create"]
    await eng._handle(done("resp_vad"))
    assert conn.types() == ["response.create", "response.create"]
    assert conn.sent[-1]["response"] == create["response"]
    assert eng.server_errors[-1]["code"] == "conversation_already_has_active_response"


async def test_turn_complete_only_for_replies_that_spoke(engine: Any) -> None:
    eng, _ = engine
    await eng._handle({"type": "response.created", "response": {"id": "resp_1"}})
    await eng._handle(done("resp_1"))  # a tool-call-only reply
    await eng._handle({"type": "response.created", "response": {"id": "resp_2"}})
    await eng._handle(delta("resp_2", "item_2", 100))
    await eng._handle(done("resp_2"))
    kinds = [type(e).__name__ for e in drain(eng)]
    assert kinds == ["Usage", "AudioOut", "Usage", "TurnComplete"]


def test_voice_comes_from_the_engine_then_the_campaign_if_openai_has_it() -> None:
    assert pick_voice("ash", "cedar") == "ash"
    assert pick_voice(None, "cedar") == "cedar"
    assert pick_voice(None, "Kore") == oai.DEFAULT_VOICE  # a Gemini voice
    assert pick_voice(None, "") == oai.DEFAULT_VOICE
