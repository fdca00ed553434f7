"""The cascade's HTTP parts against a loopback server speaking the OpenAI-compatible APIs
(`/v1/audio/transcriptions`, `/v1/audio/speech`, `/v1/chat/completions`): what they send, what
they make of the answers, retries, errors, and a whole engine built from them."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from bridge.engines.base import AudioOut, EngineFailed, SessionContext, ToolCall, TranscriptOut, TurnComplete
from bridge.engines.cascade import (
    CascadeEngine,
    HttpPartError,
    LLMDialog,
    OpenAICompatibleSTT,
    OpenAICompatibleTTS,
    Speak,
    SpeechCache,
    VadSettings,
)
from bridge.prompt import build_instructions
from bridge.tools import tool_specs
from leadqual.campaign import Campaign
from leadqual.models import Lead

pytestmark = pytest.mark.integration

LEAD = Lead(lead_id="L1", phone="+254711000001", name="Jane Wanjiru", company="Globex", opt_in=True)


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = None
    form: dict[str, bytes] = field(default_factory=dict)


class FakeOpenAI:
    """A threaded loopback server; `script[path]` holds responses to hand out in order
    (status, content type, body); without one, a default answer per endpoint."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.script: dict[str, list[tuple[int, str, bytes]]] = {}
        self.transcripts: list[str] = []
        self.speech_format = "pcm"
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                seen = Seen(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                ctype = self.headers.get("content-type", "")
                if ctype.startswith("application/json"):
                    seen.json = json.loads(body)
                elif ctype.startswith("multipart/form-data"):
                    msg = BytesParser(policy=HTTP).parsebytes(
                        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body
                    )
                    for part in msg.iter_parts():
                        name = part.get_param("name", header="content-disposition")
                        seen.form[str(name)] = part.get_payload(decode=True)
                fake.seen.append(seen)
                status, content_type, payload = fake.respond(seen)
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True
        )

    def respond(self, seen: Seen) -> tuple[int, str, bytes]:
        queue = self.script.get(seen.path)
        if queue:
            return queue.pop(0)
        if seen.path.endswith("/audio/transcriptions"):
            text = self.transcripts.pop(0) if self.transcripts else ""
            return 200, "application/json", json.dumps({"text": text}).encode()
        if seen.path.endswith("/audio/speech"):
            words = len(seen.json["input"].split())
            if self.speech_format == "wav":
                return 200, "audio/wav", wav_bytes(tone(22050, 100 * words), 22050, channels=2)
            return 200, "application/octet-stream", tone(24000, 100 * words)
        return 404, "text/plain", b"no route"

    def chat(self, *messages: dict[str, Any]) -> None:
        """Queue chat completion replies, one assistant message each."""
        queue = self.script.setdefault("/v1/chat/completions", [])
        for message in messages:
            body = {"id": "c", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}
            queue.append((200, "application/json", json.dumps(body).encode()))

    def paths(self) -> list[str]:
        return [s.path for s in self.seen]


def tone(rate: int, ms: int) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (np.sin(2 * np.pi * 300 * t) * 4000).astype("<i2").tobytes()


def wav_bytes(pcm: bytes, rate: int, channels: int = 1) -> bytes:
    if channels == 2:
        mono = np.frombuffer(pcm, dtype="<i2")
        pcm = np.repeat(mono, 2).tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def voiced(ms: int, rate: int = 16000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    x = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 20)) * (
        0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    )
    return (x / np.abs(x).max() * 10000).astype("<i2").tobytes()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()
    server.thread.join(5)


def tool_call(call_id: str, name: str, **args: Any) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def ctx(campaign: Campaign) -> SessionContext:
    return SessionContext(
        session_id="HD_http",
        campaign=campaign,
        lead=LEAD,
        instructions=build_instructions(campaign, LEAD),
        tools=tool_specs(campaign),
    )


# ── speech-to-text ────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("suffix", ["", "/v1", "/v1/"])
async def test_stt_posts_a_wav_and_returns_the_text(fake: FakeOpenAI, suffix: str) -> None:
    fake.transcripts = [" Yes, go ahead. "]
    stt = OpenAICompatibleSTT(fake.url + suffix, "sk-test", "whisper-large-v3")
    pcm = voiced(500, 8000)
    text = await stt.transcribe(pcm, 8000, prompt="Acme CRM")
    await stt.aclose()
    assert text == "Yes, go ahead."
    seen = fake.seen[0]
    assert seen.path == "/v1/audio/transcriptions"
    assert seen.headers["authorization"] == "Bearer sk-test"
    assert seen.form["model"] == b"whisper-large-v3"
    assert seen.form["language"] == b"en"
    assert seen.form["prompt"] == b"Acme CRM"
    with wave.open(io.BytesIO(seen.form["file"])) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        assert w.readframes(w.getnframes()) == pcm


async def test_stt_accepts_a_plain_text_answer(fake: FakeOpenAI) -> None:
    fake.script["/v1/audio/transcriptions"] = [(200, "text/plain", b"Give or take forty.\n")]
    stt = OpenAICompatibleSTT(fake.url, "", "m")
    assert await stt.transcribe(voiced(300), 16000) == "Give or take forty."
    assert "authorization" not in fake.seen[0].headers  # no key, no header
    await stt.aclose()


async def test_a_5xx_is_retried_once(fake: FakeOpenAI) -> None:
    fake.script["/v1/audio/transcriptions"] = [(503, "text/plain", b"busy")]
    fake.transcripts = ["Yes."]
    stt = OpenAICompatibleSTT(fake.url, "k", "m")
    assert await stt.transcribe(voiced(300), 16000) == "Yes."
    assert len(fake.seen) == 2
    await stt.aclose()


async def test_errors_say_whether_retrying_could_help(fake: FakeOpenAI) -> None:
    fake.script["/v1/audio/transcriptions"] = [(400, "text/plain", b"bad model")]
    stt = OpenAICompatibleSTT(fake.url, "k", "m")
    with pytest.raises(HttpPartError, match="HTTP 400") as err:
        await stt.transcribe(voiced(300), 16000)
    assert err.value.status == 400
    assert not err.value.retryable
    assert len(fake.seen) == 1  # a 4xx is not retried
    fake.script["/v1/audio/transcriptions"] = [(500, "text/plain", b"x"), (502, "text/plain", b"y")]
    with pytest.raises(HttpPartError) as err:
        await stt.transcribe(voiced(300), 16000)
    assert err.value.retryable
    await stt.aclose()
    closed = OpenAICompatibleSTT("http://127.0.0.1:9", "k", "m")  # nothing listens on port 9
    with pytest.raises(HttpPartError) as err:
        await closed.transcribe(voiced(300), 16000)
    assert err.value.retryable
    await closed.aclose()


# ── text-to-speech ────────────────────────────────────────────────────────────────────────────


async def test_tts_pcm_is_resampled_to_the_asked_rate(fake: FakeOpenAI) -> None:
    tts = OpenAICompatibleTTS(fake.url, "k", "kokoro", "af_heart", speed=1.1)
    pcm = await tts.synthesize("Three words here.", 16000)
    await tts.aclose()
    assert len(pcm) == pytest.approx(16000 * 2 * 0.3, abs=64)
    assert fake.seen[0].json == {
        "model": "kokoro",
        "input": "Three words here.",
        "voice": "af_heart",
        "response_format": "pcm",
        "speed": 1.1,
    }
    assert tts.key != OpenAICompatibleTTS(fake.url, "k", "kokoro", "other").key


async def test_tts_wav_carries_its_own_rate_and_stereo_is_mixed_down(fake: FakeOpenAI) -> None:
    fake.speech_format = "wav"
    tts = OpenAICompatibleTTS(fake.url, "k", "m", "v", response_format="wav")
    pcm = await tts.synthesize("Two words.", 8000)
    await tts.aclose()
    assert len(pcm) == pytest.approx(8000 * 2 * 0.2, abs=32)
    assert fake.seen[0].json["response_format"] == "wav"


# ── the chat dialog ───────────────────────────────────────────────────────────────────────────


async def test_llm_dialog_speaks_calls_tools_and_stops_after_wrap_up(
    fake: FakeOpenAI, example_campaign: Campaign
) -> None:
    fake.chat(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                tool_call("t1", "record_answer", question_id="good_time", value="yes", quote="Sure")
            ],
        },
        {"role": "assistant", "content": "Great. Are you the person who makes buying decisions?"},
        {"role": "assistant", "content": "", "tool_calls": [tool_call("t2", "end_call", reason="opt_out")]},
    )
    dialog = LLMDialog(fake.url, "k", "qwen2.5-7b-instruct")
    context = ctx(example_campaign)
    await dialog.start(context)
    await dialog.on_agent_said("Hi Jane, ... Is now a good time for three quick questions?")
    assert await dialog.on_partial_text("Sure") == []
    actions = await dialog.on_user_text("Sure.")
    assert actions == [
        ToolCall(
            call_id="t1",
            name="record_answer",
            args={"question_id": "good_time", "value": "yes", "quote": "Sure"},
        )
    ]
    # What the lead says while a result is outstanding waits for it (no request meanwhile).
    assert await dialog.on_user_text("Go on.") == []
    assert len(fake.seen) == 1
    actions = await dialog.on_tool_result(
        actions[0], {"status": "continue", "next_question_id": "decision_maker"}
    )
    assert actions == [Speak("Great. Are you the person who makes buying decisions?")]
    second = fake.seen[1].json
    assert second["model"] == "qwen2.5-7b-instruct"
    assert [m["role"] for m in second["messages"]] == [
        "system",
        "assistant",
        "user",
        "assistant",
        "tool",
        "user",
    ]
    assert second["messages"][0]["content"] == context.instructions
    assert second["messages"][3]["tool_calls"][0]["id"] == "t1"
    assert second["messages"][4]["tool_call_id"] == "t1"
    assert json.loads(second["messages"][4]["content"])["status"] == "continue"
    assert second["messages"][5]["content"] == "Go on."
    assert {t["function"]["name"] for t in second["tools"]} == {"record_answer", "end_call"}
    actions = await dialog.on_user_text("Actually, take me off your list.")
    assert actions == [ToolCall(call_id="t2", name="end_call", args={"reason": "opt_out"})]
    assert await dialog.on_tool_result(actions[0], {"status": "wrap_up"}) == []
    assert await dialog.on_user_text("Hello?") == []
    assert len(fake.seen) == 3  # no request after wrap_up
    await dialog.close()


async def test_llm_dialog_keeps_overlapped_speech_as_context_only(
    fake: FakeOpenAI, example_campaign: Campaign
) -> None:
    fake.chat({"role": "assistant", "content": "Sure."})
    dialog = LLMDialog(fake.url, "k", "m")
    await dialog.start(ctx(example_campaign))
    assert await dialog.on_user_text("Hello?", overlapped=True) == []
    assert fake.seen == []
    assert await dialog.on_user_text("Who is this?") == [Speak("Sure.")]
    assert [m["content"] for m in fake.seen[0].json["messages"][1:]] == ["Hello?", "Who is this?"]
    await dialog.close()


# ── a whole engine from HTTP parts ────────────────────────────────────────────────────────────


async def test_engine_built_from_http_parts(fake: FakeOpenAI, example_campaign: Campaign) -> None:
    fake.transcripts = ["Yes, go ahead."]
    fake.chat(
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                tool_call("c1", "record_answer", question_id="good_time", value="yes", quote="Yes, go ahead.")
            ],
        },
        {"role": "assistant", "content": "Thanks. Are you the one who decides?"},
    )
    engine = CascadeEngine(
        OpenAICompatibleSTT(fake.url, "k", "stt"),
        OpenAICompatibleTTS(fake.url, "k", "tts", "v"),
        LLMDialog(fake.url, "k", "llm"),
        vad=VadSettings(probe_ms=()),
        cache=SpeechCache(),
        presynthesize=False,
    )
    context = ctx(example_campaign)
    await engine.start(context)
    events: list[Any] = []
    opened = asyncio.Event()

    async def consume() -> None:
        async for event in engine.events():
            events.append(event)
            if isinstance(event, TurnComplete):
                opened.set()
            if isinstance(event, ToolCall):
                await engine.send_tool_result(
                    event, {"status": "continue", "next_question_id": "decision_maker"}
                )
            if (
                isinstance(event, TurnComplete)
                and len([e for e in events if isinstance(e, TurnComplete)]) == 2
            ):
                return

    consumer = asyncio.create_task(consume())
    await engine.say("Hi Jane. Is now a good time for three quick questions?")
    await asyncio.wait_for(opened.wait(), 5)
    # The lead listens to the opening (1 s in the fake voice), then answers.
    pcm = bytes(32000 * 12 // 10) + voiced(600) + bytes(32000)
    for i in range(0, len(pcm), 640):
        await engine.send_audio(pcm[i : i + 640])
        await asyncio.sleep(0)
    await asyncio.wait_for(consumer, 10)
    await engine.close()
    assert not [e for e in events if isinstance(e, EngineFailed)]
    assert [e.name for e in events if isinstance(e, ToolCall)] == ["record_answer"]
    assert [e.text for e in events if isinstance(e, TranscriptOut)][
        -1
    ] == "Thanks. Are you the one who decides?"
    assert sum(len(e.pcm) for e in events if isinstance(e, AudioOut)) > 0
    assert fake.paths().count("/v1/audio/speech") == 4  # two sentences per turn, sentence by sentence
    assert fake.paths().count("/v1/chat/completions") == 2
    # The bridge's opening is the first assistant message the model sees.
    chat = [s.json for s in fake.seen if s.path == "/v1/chat/completions"]
    assert chat[0]["messages"][1] == {
        "role": "assistant",
        "content": "Hi Jane. Is now a good time for three quick questions?",
    }


async def test_a_failing_backend_fails_the_engine(fake: FakeOpenAI, example_campaign: Campaign) -> None:
    fake.transcripts = ["Yes."]
    fake.script["/v1/chat/completions"] = [(500, "text/plain", b"boom"), (500, "text/plain", b"boom")]
    engine = CascadeEngine(
        OpenAICompatibleSTT(fake.url, "k", "stt"),
        OpenAICompatibleTTS(fake.url, "k", "tts", "v"),
        LLMDialog(fake.url, "k", "llm"),
        vad=VadSettings(probe_ms=()),
        cache=SpeechCache(),
        presynthesize=False,
    )
    await engine.start(ctx(example_campaign))
    pcm = voiced(600) + bytes(32000)
    for i in range(0, len(pcm), 640):
        await engine.send_audio(pcm[i : i + 640])
    events = [e async for e in engine.events()]
    failed = [e for e in events if isinstance(e, EngineFailed)]
    assert len(failed) == 1
    assert "HTTP 500" in failed[0].reason
    await engine.close()
