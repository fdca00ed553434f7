"""A fake OpenAI Realtime server that speaks the GA wire protocol over a WebSocket on loopback.

Engines are tested through it, not mocked: it checks `Authorization: Bearer …`, sends
`session.created`, validates and applies `session.update` (audio formats, turn detection, tools),
runs a small energy VAD on appended audio (`input_audio_buffer.speech_started` / `speech_stopped`
/ `committed`, barge-in cancels the active response), answers with audio deltas, transcripts and
function calls from a script, waits for `function_call_output` + `response.create`, handles
`conversation.item.truncate` (records `audio_end_ms`) and `response.cancel`, reports usage in
`response.done`, and drops connections, fails handshakes or sends errors on demand.

Usage::

    script = Script(replies=[Reply(tool_calls=[ToolCallSpec("record_answer", {...})]),
                             Reply(text="Great. And how many seats?")],
                    heard=["yes, go ahead"])
    async with FakeOpenAIRealtime(script=script, api_key="sk-test") as fake:
        engine = OpenAIRealtimeEngine("sk-test", url=fake.url)
        ...
        fake.sessions[0].truncations  # what the engine truncated

A `response.create` whose instructions hold `Say exactly …: "<text>"` is answered by speaking that
text (this is how engines implement `say`); every other response takes the next scripted `Reply`.
`mode="echo"` answers each user utterance with its own audio (benchmarks, many sessions).
Everything each session saw and did is recorded on `FakeSession`; protocol mistakes by the client
are collected in `violations` so tests can assert there were none.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import itertools
import json
import math
import re
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

RATE = 24_000
BYTES_PER_MS = RATE * 2 // 1000  # S16LE mono
VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"})
AUDIO_FORMATS = frozenset({"audio/pcm", "audio/pcmu", "audio/pcma"})
TURN_DETECTION_TYPES = frozenset({"server_vad", "semantic_vad"})
# Keys a GA `session.update` may carry for a realtime session; anything else is rejected, as the
# real API rejects unknown parameters (notably the beta's `input_audio_format`, `modalities`, `voice`).
SESSION_KEYS = frozenset(
    {
        "type",
        "model",
        "instructions",
        "output_modalities",
        "audio",
        "tools",
        "tool_choice",
        "max_output_tokens",
        "include",
        "tracing",
        "truncation",
        "prompt",
    }
)
SAY_PATTERN = re.compile(r'Say exactly[^"]*"(?P<text>.*)"\s*$', re.DOTALL)


@dataclass
class ToolCallSpec:
    """A function call the fake model makes; `arguments` are sent as a JSON string."""

    name: str
    arguments: dict[str, Any]
    call_id: str | None = None


@dataclass
class Reply:
    """One scripted model response.

    `text` is the spoken transcript; the audio is `audio` (S16LE 24 kHz) or a tone whose length
    follows the text (or `audio_ms`). Function calls follow the audio in the same response.
    Failure knobs: `first_delay_s` (slow first byte), `chunk_delay_s` (slow stream),
    `drop_after_chunks` (abort the TCP connection mid-reply), `error` (send this `error` event
    instead of a response), `barge_in_after_chunks` (the simulated lead starts talking mid-reply),
    `done_delay_s` (a pause before `response.done`, so client events race the end of the reply).
    """

    text: str = ""
    audio: bytes | None = None
    audio_ms: int | None = None
    tool_calls: Sequence[ToolCallSpec] = ()
    first_delay_s: float = 0.0
    chunk_delay_s: float | None = None
    drop_after_chunks: int | None = None
    error: dict[str, Any] | None = None
    barge_in_after_chunks: int | None = None
    done_delay_s: float = 0.0


@dataclass
class Script:
    """Replies in the order the model gives them, and what the model 'heard' in each user turn."""

    replies: list[Reply] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    exhausted: int = 0  # responses asked for after the replies ran out

    def next_reply(self) -> Reply:
        if self.replies:
            return self.replies.pop(0)
        self.exhausted += 1
        return Reply(text="Mm-hmm.")

    def next_heard(self) -> str:
        return self.heard.pop(0) if self.heard else ""


@dataclass
class FakeResponse:
    """What one response did, for assertions."""

    id: str
    kind: Literal["say", "script", "echo"]
    text: str
    instructions: str | None
    status: str = "in_progress"
    reason: str | None = None
    audio_ms: int = 0
    item_id: str | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    created_at: float = 0.0
    first_audio_at: float | None = None


@dataclass
class FakeSession:
    """Everything one WebSocket session saw and did."""

    id: str
    model: str
    headers: dict[str, str]
    config: dict[str, Any]
    session_updates: list[dict[str, Any]] = field(default_factory=list)
    client_events: list[dict[str, Any]] = field(default_factory=list)  # appends without their audio
    sent: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, event type)
    audio_in_bytes: int = 0
    responses: list[FakeResponse] = field(default_factory=list)
    truncations: list[dict[str, Any]] = field(default_factory=list)
    cancels: int = 0
    refused_creates: int = 0  # response.create sent while a response was active
    tool_outputs: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    heard: list[str] = field(default_factory=list)
    errors_sent: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    def sent_times(self, event_type: str) -> list[float]:
        return [t for t, kind in self.sent if kind == event_type]

    @property
    def instructions(self) -> str:
        return str(self.config.get("instructions", ""))


def tone(ms: int, hz: float = 440.0, amplitude: int = 6000) -> bytes:
    """A sine tone, S16LE mono at 24 kHz: the fake model's 'voice' and the tests' 'speech'."""
    n = RATE * ms // 1000
    t = np.arange(n, dtype=np.float64) / RATE
    return (amplitude * np.sin(2 * math.pi * hz * t)).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(RATE * ms // 1000 * 2)


class FakeOpenAIRealtime:
    """The fake server: an async context manager listening on `url` (ws:// or wss:// on loopback).

    `script` is shared by every session of this server (a reconnecting engine continues the same
    conversation) unless it is a callable, which makes a fresh script per session.
    """

    def __init__(
        self,
        script: Script | Callable[[], Script] | None = None,
        *,
        api_key: str = "sk-test",
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        mode: Literal["script", "echo"] = "script",
        auth_failure: Literal["error_event", "http_401"] = "error_event",
        chunk_ms: int = 40,
        realtime_factor: float = 0.0,
        ms_per_char: int = 20,
        vad_rms_threshold: float = 500.0,
        echo_max_ms: int = 10_000,
        cancel_lag_chunks: int = 0,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.mode = mode
        self.auth_failure = auth_failure
        self.chunk_ms = chunk_ms
        self.realtime_factor = realtime_factor
        self.ms_per_char = ms_per_char
        self.vad_rms_threshold = vad_rms_threshold
        self.echo_max_ms = echo_max_ms
        # Audio chunks a cancelled reply still delivers: a real server has them in flight already.
        self.cancel_lag_chunks = cancel_lag_chunks
        self._script_source = script
        self._shared_script = script if isinstance(script, Script) else None
        self._ssl = ssl_context
        self._server: Server | None = None
        self._conns: set[_Connection] = set()
        self._ids = itertools.count(1)
        self._fail_next: list[int] = []
        self.sessions: list[FakeSession] = []
        self.connection_attempts = 0
        self.rejected: list[int] = []  # HTTP statuses of refused handshakes
        self.violations: list[str] = []

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            ssl=self._ssl,
            process_request=self._process_request,
            compression=None,
            max_size=2**24,
            ping_interval=None,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        for conn in list(self._conns):
            conn.abort()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeOpenAIRealtime:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        scheme = "wss" if self._ssl is not None else "ws"
        return f"{scheme}://{self.host}:{self.port}/v1/realtime"

    # -- failure injection -----------------------------------------------------------------------

    def fail_next_connections(self, count: int, status: int = 503) -> None:
        """Refuse the next `count` handshakes with this HTTP status."""
        self._fail_next.extend([status] * count)

    async def drop_all(self) -> None:
        """Abort every live connection without a close frame, as a network drop does."""
        for conn in list(self._conns):
            conn.abort()

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    # -- handshake -------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.connection_attempts += 1
        if self._fail_next:
            status = self._fail_next.pop(0)
            self.rejected.append(status)
            return connection.respond(HTTPStatus(status), "unavailable\n")
        path = urlsplit(request.path)
        if path.path != "/v1/realtime":
            self.rejected.append(404)
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if request.headers.get("OpenAI-Beta"):
            # The beta header switches the real server to the beta protocol this fake does not speak.
            self.violations.append("OpenAI-Beta header sent to a GA endpoint")
        if self.auth_failure == "http_401" and not self._authorized(request.headers):
            self.rejected.append(401)
            body = json.dumps({"error": {"type": "invalid_request_error", "code": "invalid_api_key"}})
            return connection.respond(HTTPStatus.UNAUTHORIZED, body + "\n")
        return None

    def _authorized(self, headers: Headers) -> bool:
        return headers.get("Authorization", "") == f"Bearer {self.api_key}"

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        if not self._authorized(request.headers):
            event = {
                "type": "error",
                "event_id": self.new_id("event"),
                "error": {
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "message": "Incorrect API key provided.",
                    "param": None,
                    "event_id": None,
                },
            }
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps(event))
                await ws.close(1008, "invalid api key")
            return
        query = parse_qs(urlsplit(request.path).query)
        model = (query.get("model") or [""])[0]
        if not model:
            self.violations.append("connected without ?model=")
        script = self._session_script()
        session = FakeSession(
            id=self.new_id("sess"),
            model=model,
            headers={
                k: ("Bearer ***" if k.lower() == "authorization" else v)
                for k, v in request.headers.raw_items()
            },
            config=_default_config(model),
        )
        self.sessions.append(session)
        conn = _Connection(self, ws, session, script)
        self._conns.add(conn)
        try:
            await conn.run()
        finally:
            self._conns.discard(conn)
            session.closed = True

    def _session_script(self) -> Script:
        if self._shared_script is not None:
            return self._shared_script
        if callable(self._script_source):
            return self._script_source()
        return Script()


class FakeOpenAIRealtimeThread:
    """The fake on its own event loop in a daemon thread, for sync callers (local stack, bench).

    `with FakeOpenAIRealtimeThread(mode="echo") as t: ... t.url ... t.fake.sessions`; keyword
    arguments go to FakeOpenAIRealtime. Read `t.fake` records after the calls are over.
    """

    def __init__(self, script: Script | Callable[[], Script] | None = None, **kwargs: Any) -> None:
        self.fake = FakeOpenAIRealtime(script, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-openai-realtime", daemon=True
        )

    @property
    def url(self) -> str:
        return self.fake.url

    def __enter__(self) -> FakeOpenAIRealtimeThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self.fake.stop(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


def _default_config(model: str) -> dict[str, Any]:
    pcm = {"type": "audio/pcm", "rate": RATE}
    return {
        "type": "realtime",
        "object": "realtime.session",
        "model": model,
        "output_modalities": ["audio"],
        "instructions": "You are a helpful assistant.",
        "tools": [],
        "tool_choice": "auto",
        "max_output_tokens": "inf",
        "audio": {
            "input": {
                "format": dict(pcm),
                "transcription": None,
                "noise_reduction": None,
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": 0.5,
                    "prefix_padding_ms": 300,
                    "silence_duration_ms": 200,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": dict(pcm), "voice": "alloy", "speed": 1.0},
        },
    }


class _Connection:
    """One client session: reads client events, runs VAD, streams responses."""

    def __init__(
        self, server: FakeOpenAIRealtime, ws: ServerConnection, session: FakeSession, script: Script
    ):
        self.server = server
        self.ws = ws
        self.session = session
        self.script = script
        self.items: dict[str, dict[str, Any]] = {}
        self.item_audio_ms: dict[str, int] = {}
        self.call_ids: set[str] = set()
        self.last_item_id: str | None = None
        self.active: FakeResponse | None = None
        self.active_task: asyncio.Task[None] | None = None
        self.audio_out_once = False
        # VAD state, in audio time (ms of audio appended since the session began)
        self.buffer_ms = 0.0
        self.speaking = False
        self.silence_ms = 0.0
        self.speech_item: str | None = None
        self.utterance = bytearray()
        self.input_audio_ms_since_response = 0.0
        self._send_lock = asyncio.Lock()

    # -- plumbing --------------------------------------------------------------------------------

    def abort(self) -> None:
        transport = getattr(self.ws, "transport", None)
        if transport is not None:
            transport.abort()

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.server.new_id("event"))
        if event["type"] == "error":
            self.session.errors_sent.append(event["error"])
        async with self._send_lock:
            self.session.sent.append((time.monotonic(), event["type"]))
            await self.ws.send(json.dumps(event))

    async def error(
        self, message: str, *, code: str | None = None, param: str | None = None, event_id: str | None = None
    ) -> None:
        error = {"type": "invalid_request_error", "code": code, "message": message, "param": param}
        error["event_id"] = event_id
        await self.send({"type": "error", "error": error})

    def violation(self, text: str) -> None:
        self.server.violations.append(f"{self.session.id}: {text}")

    async def run(self) -> None:
        try:
            await self.send(
                {"type": "session.created", "session": {"id": self.session.id, **self.session.config}}
            )
            async for raw in self.ws:
                try:
                    event = json.loads(raw)
                except (TypeError, ValueError):
                    self.violation("a client frame that is not JSON")
                    await self.error("Invalid JSON", code="invalid_json")
                    continue
                if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                    self.violation("a client event without a type")
                    await self.error("Missing event type", code="invalid_event")
                    continue
                await self.dispatch(event)
        except ConnectionClosed:
            pass
        finally:
            if self.active_task is not None:
                self.active_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                    await self.active_task

    async def dispatch(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "input_audio_buffer.append":
            self.session.client_events.append({"type": kind, "bytes": len(str(event.get("audio", "")))})
            await self.on_append(event)
            return
        self.session.client_events.append(event)
        handler = {
            "session.update": self.on_session_update,
            "response.create": self.on_response_create,
            "response.cancel": self.on_response_cancel,
            "conversation.item.create": self.on_item_create,
            "conversation.item.truncate": self.on_truncate,
            "input_audio_buffer.commit": self.on_commit,
            "input_audio_buffer.clear": self.on_clear,
        }.get(kind)
        if handler is None:
            self.violation(f"unknown client event {kind!r}")
            await self.error(
                f"Invalid value: '{kind}'", code="invalid_value", param="type", event_id=event.get("event_id")
            )
            return
        await handler(event)

    # -- session ---------------------------------------------------------------------------------

    async def on_session_update(self, event: dict[str, Any]) -> None:
        update = event.get("session")
        eid = event.get("event_id")
        if not isinstance(update, dict):
            self.violation("session.update without a session object")
            await self.error(
                "Missing required parameter: 'session'.", code="missing_required_parameter", event_id=eid
            )
            return
        self.session.session_updates.append(copy.deepcopy(update))
        problem = self.validate_session(update)
        if problem is not None:
            param, message = problem
            self.violation(f"session.update rejected: {param}: {message}")
            await self.error(message, code="invalid_value", param=param, event_id=eid)
            return
        _merge(self.session.config, update)
        await self.send(
            {"type": "session.updated", "session": {"id": self.session.id, **self.session.config}}
        )

    def validate_session(self, s: dict[str, Any]) -> tuple[str, str] | None:
        if s.get("type") != "realtime":
            return "session.type", "session.type must be 'realtime'"
        for key in s:
            if key not in SESSION_KEYS:
                return f"session.{key}", f"Unknown parameter: 'session.{key}'."
        if "model" in s and s["model"] != self.session.config["model"]:
            return "session.model", "model cannot be changed"
        mods = s.get("output_modalities")
        if mods is not None and mods not in (["audio"], ["text"]):
            return "session.output_modalities", "output_modalities must be ['audio'] or ['text']"
        audio = s.get("audio", {})
        if not isinstance(audio, dict) or set(audio) - {"input", "output"}:
            return "session.audio", "audio takes 'input' and 'output'"
        inp = audio.get("input", {})
        out = audio.get("output", {})
        if set(inp) - {"format", "transcription", "noise_reduction", "turn_detection"}:
            return "session.audio.input", f"Unknown parameter in audio.input: {sorted(inp)}"
        if set(out) - {"format", "voice", "speed"}:
            return "session.audio.output", f"Unknown parameter in audio.output: {sorted(out)}"
        for where, fmt in (("input", inp.get("format")), ("output", out.get("format"))):
            if fmt is None:
                continue
            if not isinstance(fmt, dict) or fmt.get("type") not in AUDIO_FORMATS:
                return (
                    f"session.audio.{where}.format",
                    "format.type must be audio/pcm, audio/pcmu or audio/pcma",
                )
            if fmt["type"] == "audio/pcm" and fmt.get("rate", RATE) != RATE:
                return f"session.audio.{where}.format.rate", "audio/pcm rate must be 24000"
        td = inp.get("turn_detection", "absent")
        if td not in ("absent", None):
            if not isinstance(td, dict) or td.get("type") not in TURN_DETECTION_TYPES:
                return (
                    "session.audio.input.turn_detection.type",
                    "turn_detection.type must be server_vad or semantic_vad",
                )
            allowed = {"type", "create_response", "interrupt_response", "idle_timeout_ms"}
            allowed |= (
                {"threshold", "prefix_padding_ms", "silence_duration_ms"}
                if td["type"] == "server_vad"
                else {"eagerness"}
            )
            if set(td) - allowed:
                return "session.audio.input.turn_detection", f"Unknown parameter: {sorted(set(td) - allowed)}"
        tr = inp.get("transcription")
        if tr is not None and (not isinstance(tr, dict) or not tr.get("model")):
            return "session.audio.input.transcription.model", "transcription needs a model"
        voice = out.get("voice")
        if voice is not None:
            if voice not in VOICES:
                return "session.audio.output.voice", f"Invalid voice {voice!r}"
            if self.audio_out_once and voice != self.session.config["audio"]["output"]["voice"]:
                return "session.audio.output.voice", "voice cannot be changed after the model has spoken"
        tools = s.get("tools")
        if tools is not None:
            if not isinstance(tools, list):
                return "session.tools", "tools must be an array"
            for i, tool in enumerate(tools):
                if not isinstance(tool, dict) or tool.get("type") != "function" or not tool.get("name"):
                    return f"session.tools[{i}]", "each tool needs type 'function' and a name"
                params = tool.get("parameters")
                if not isinstance(params, dict) or params.get("type") != "object":
                    return f"session.tools[{i}].parameters", "parameters must be a JSON Schema object"
        choice = s.get("tool_choice")
        if choice is not None and choice not in ("auto", "none", "required") and not isinstance(choice, dict):
            return "session.tool_choice", "tool_choice must be auto, none, required or a function"
        return None

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        td = self.session.config["audio"]["input"].get("turn_detection")
        return td if isinstance(td, dict) else None

    # -- input audio and VAD ---------------------------------------------------------------------

    async def on_append(self, event: dict[str, Any]) -> None:
        try:
            pcm = base64.b64decode(str(event.get("audio", "")), validate=True)
        except (binascii.Error, ValueError):
            self.violation("input_audio_buffer.append with invalid base64")
            await self.error("Invalid base64 audio", code="invalid_value", param="audio")
            return
        if len(pcm) % 2:
            self.violation("input_audio_buffer.append with an odd number of bytes")
        self.session.audio_in_bytes += len(pcm)
        self.input_audio_ms_since_response += len(pcm) / BYTES_PER_MS
        td = self.turn_detection
        if td is None:
            self.utterance.extend(pcm)
            self.buffer_ms += len(pcm) / BYTES_PER_MS
            return
        frame = BYTES_PER_MS * 10
        for start in range(0, len(pcm) - len(pcm) % 2, frame):
            chunk = pcm[start : start + frame]
            await self.vad_frame(chunk, td)

    async def vad_frame(self, chunk: bytes, td: dict[str, Any]) -> None:
        ms = len(chunk) / BYTES_PER_MS
        samples = np.frombuffer(chunk[: len(chunk) - len(chunk) % 2], dtype="<i2").astype(np.float64)
        rms = float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0
        loud = rms >= self.server.vad_rms_threshold
        self.buffer_ms += ms
        if self.speaking:
            self.utterance.extend(chunk)
            self.silence_ms = 0.0 if loud else self.silence_ms + ms
            if self.silence_ms >= float(td.get("silence_duration_ms", 500)):
                await self.speech_stopped(td)
        elif loud:
            prefix = float(td.get("prefix_padding_ms", 300))
            await self.speech_started(audio_start_ms=max(0.0, self.buffer_ms - ms - prefix), td=td)
            self.utterance.extend(chunk)

    async def speech_started(self, *, audio_start_ms: float, td: dict[str, Any]) -> None:
        self.speaking = True
        self.silence_ms = 0.0
        self.utterance = bytearray()
        self.speech_item = self.server.new_id("item")
        await self.send(
            {
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": int(audio_start_ms),
                "item_id": self.speech_item,
            }
        )
        if self.active is not None and td.get("interrupt_response", True):
            await self.cancel_active("turn_detected")

    async def speech_stopped(self, td: dict[str, Any]) -> None:
        self.speaking = False
        item_id = self.speech_item or self.server.new_id("item")
        self.speech_item = None
        await self.send(
            {
                "type": "input_audio_buffer.speech_stopped",
                "audio_end_ms": int(self.buffer_ms),
                "item_id": item_id,
            }
        )
        await self.commit_user_item(item_id)
        if self.active is not None and self.active.reason is not None and self.active_task is not None:
            # A barge-in cancelled the reply; it ends within one chunk, then the new turn starts.
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await self.active_task
        if td.get("create_response", True) and self.active is None:
            await self.start_response(instructions=None)

    async def on_commit(self, event: dict[str, Any]) -> None:
        if not self.utterance:
            await self.error(
                "Error committing input audio buffer: buffer too small.",
                code="input_audio_buffer_commit_empty",
            )
            return
        await self.commit_user_item(self.server.new_id("item"))

    async def on_clear(self, event: dict[str, Any]) -> None:
        self.utterance = bytearray()
        await self.send({"type": "input_audio_buffer.cleared"})

    async def commit_user_item(self, item_id: str) -> None:
        await self.send(
            {
                "type": "input_audio_buffer.committed",
                "item_id": item_id,
                "previous_item_id": self.last_item_id,
            }
        )
        heard = self.script.next_heard() if self.server.mode == "script" else ""
        self.session.heard.append(heard)
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        await self.add_item(item)
        if self.session.config["audio"]["input"].get("transcription"):
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "content_index": 0,
                    "transcript": heard,
                    "usage": {"type": "duration", "seconds": round(len(self.utterance) / (RATE * 2), 3)},
                }
            )

    async def add_item(self, item: dict[str, Any]) -> None:
        self.items[item["id"]] = item
        await self.send(
            {"type": "conversation.item.added", "previous_item_id": self.last_item_id, "item": item}
        )
        await self.send(
            {"type": "conversation.item.done", "previous_item_id": self.last_item_id, "item": item}
        )
        self.last_item_id = item["id"]

    # -- conversation items ----------------------------------------------------------------------

    async def on_item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        eid = event.get("event_id")
        if not isinstance(item, dict):
            self.violation("conversation.item.create without an item")
            await self.error(
                "Missing required parameter: 'item'.", code="missing_required_parameter", event_id=eid
            )
            return
        kind = item.get("type")
        if kind == "function_call_output":
            call_id = item.get("call_id")
            output = item.get("output")
            if call_id not in self.call_ids:
                self.violation(f"function_call_output for unknown call_id {call_id!r}")
                await self.error(
                    f"Tool call ID '{call_id}' not found in conversation.",
                    code="invalid_tool_call_id",
                    event_id=eid,
                )
                return
            if not isinstance(output, str):
                self.violation("function_call_output.output is not a string")
                await self.error(
                    "output must be a string", code="invalid_type", param="item.output", event_id=eid
                )
                return
            try:
                parsed: Any = json.loads(output)
            except ValueError:
                parsed = output
            self.session.tool_outputs.append({"call_id": call_id, "output": parsed})
        elif kind == "message":
            if item.get("role") not in ("user", "system", "assistant") or not isinstance(
                item.get("content"), list
            ):
                self.violation("message item without a role or content")
                await self.error("Invalid message item", code="invalid_value", param="item", event_id=eid)
                return
            self.session.messages.append(copy.deepcopy(item))
        else:
            self.violation(f"conversation.item.create of type {kind!r}")
            await self.error(
                f"Invalid item type {kind!r}", code="invalid_value", param="item.type", event_id=eid
            )
            return
        stored = {
            "id": item.get("id") or self.server.new_id("item"),
            "object": "realtime.item",
            "status": "completed",
        }
        stored.update({k: v for k, v in item.items() if k != "id"})
        await self.add_item(stored)

    async def on_truncate(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        eid = event.get("event_id")
        item = self.items.get(str(item_id))
        if item is None or item.get("role") != "assistant":
            self.violation(f"truncate of unknown or non-assistant item {item_id!r}")
            await self.error(
                f"Item {item_id} not found or not an assistant message", code="invalid_value", event_id=eid
            )
            return
        end_ms = event.get("audio_end_ms")
        if event.get("content_index") != 0 or not isinstance(end_ms, int) or end_ms < 0:
            self.violation("truncate with a bad content_index or audio_end_ms")
            await self.error("Invalid truncate", code="invalid_value", event_id=eid)
            return
        if end_ms > self.item_audio_ms.get(str(item_id), 0):
            self.violation(f"truncate past the end of the audio ({end_ms} ms)")
            await self.error(
                "audio_end_ms is longer than the audio",
                code="invalid_value",
                param="audio_end_ms",
                event_id=eid,
            )
            return
        self.session.truncations.append({"item_id": item_id, "content_index": 0, "audio_end_ms": end_ms})
        await self.send(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": end_ms,
            }
        )

    # -- responses -------------------------------------------------------------------------------

    async def on_response_create(self, event: dict[str, Any]) -> None:
        eid = event.get("event_id")
        if self.active is not None:
            self.session.refused_creates += 1
            await self.error(
                f"Conversation already has an active response in progress: {self.active.id}. "
                "Wait until the response is finished before creating a new one.",
                code="conversation_already_has_active_response",
                event_id=eid,
            )
            return
        params = event.get("response") or {}
        instructions = params.get("instructions") if isinstance(params, dict) else None
        await self.start_response(instructions=instructions if isinstance(instructions, str) else None)

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        self.session.cancels += 1
        if self.active is None:
            await self.error(
                "Cancellation failed: no active response found",
                code="response_cancel_not_active",
                event_id=event.get("event_id"),
            )
            return
        await self.cancel_active("client_cancelled")

    async def cancel_active(self, reason: str) -> None:
        resp = self.active
        if resp is None or resp.reason is not None:
            return
        resp.reason = reason
        # The streaming task notices between chunks and finishes the response as cancelled.

    async def start_response(self, *, instructions: str | None) -> None:
        say = SAY_PATTERN.search(instructions or "")
        echo_pcm: bytes | None = None
        if say is not None:
            reply = Reply(text=say.group("text"))
            kind: Literal["say", "script", "echo"] = "say"
        elif self.server.mode == "echo":
            echo_pcm = bytes(self.utterance[: self.server.echo_max_ms * BYTES_PER_MS])
            reply = Reply(text="(echo)", audio=echo_pcm or tone(200))
            kind = "echo"
        else:
            reply = self.script.next_reply()
            kind = "script"
        if reply.error is not None:
            await self.send({"type": "error", "error": dict(reply.error)})
            return
        resp = FakeResponse(
            id=self.server.new_id("resp"),
            kind=kind,
            text=reply.text,
            instructions=instructions,
            created_at=time.monotonic(),
        )
        self.session.responses.append(resp)
        self.active = resp
        self.active_task = asyncio.create_task(self.stream(resp, reply), name=f"fake-openai-{resp.id}")

    async def stream(self, resp: FakeResponse, reply: Reply) -> None:
        try:
            await self._stream(resp, reply)
        except ConnectionClosed:
            pass
        finally:
            if self.active is resp:
                self.active = None

    async def _pause(self, reply: Reply) -> None:
        if reply.chunk_delay_s is not None:
            delay = reply.chunk_delay_s
        else:
            delay = self.server.chunk_ms / 1000 * self.server.realtime_factor
        await asyncio.sleep(delay)

    async def _stream(self, resp: FakeResponse, reply: Reply) -> None:
        base = {"object": "realtime.response", "conversation_id": "conv_fake", "output_modalities": ["audio"]}
        await self.send(
            {
                "type": "response.created",
                "response": {"id": resp.id, "status": "in_progress", "output": [], **base},
            }
        )
        if reply.first_delay_s:
            await asyncio.sleep(reply.first_delay_s)
        output: list[dict[str, Any]] = []
        audio = reply.audio
        if audio is None and (reply.text or reply.audio_ms):
            ms = reply.audio_ms or min(6000, max(200, len(reply.text) * self.server.ms_per_char))
            audio = tone(ms)
        out_tokens_audio = 0
        if audio:
            item_id = self.server.new_id("item")
            resp.item_id = item_id
            item: dict[str, Any] = {
                "id": item_id,
                "object": "realtime.item",
                "type": "message",
                "role": "assistant",
                "status": "in_progress",
                "content": [],
            }
            self.items[item_id] = item
            self.item_audio_ms[item_id] = 0
            ids = {"response_id": resp.id, "item_id": item_id, "output_index": 0}
            await self.send(
                {
                    "type": "response.output_item.added",
                    "response_id": resp.id,
                    "output_index": 0,
                    "item": item,
                }
            )
            await self.send(
                {"type": "conversation.item.added", "previous_item_id": self.last_item_id, "item": item}
            )
            self.last_item_id = item_id
            await self.send(
                {
                    "type": "response.content_part.added",
                    **ids,
                    "content_index": 0,
                    "part": {"type": "audio", "transcript": ""},
                }
            )
            step = self.server.chunk_ms * BYTES_PER_MS
            chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
            sent_ms = 0
            in_flight = self.server.cancel_lag_chunks
            for n, chunk in enumerate(chunks):
                if resp.reason is not None:
                    if in_flight <= 0:
                        break
                    in_flight -= 1
                if reply.drop_after_chunks is not None and n >= reply.drop_after_chunks:
                    resp.status = "dropped"
                    self.abort()
                    return
                if reply.barge_in_after_chunks is not None and n == reply.barge_in_after_chunks:
                    td = self.turn_detection or {}
                    await self.speech_started(audio_start_ms=self.buffer_ms, td=td)
                    if resp.reason is not None:
                        break
                await self.send(
                    {
                        "type": "response.output_audio.delta",
                        **ids,
                        "content_index": 0,
                        "delta": base64.b64encode(chunk).decode(),
                    }
                )
                if resp.first_audio_at is None:
                    resp.first_audio_at = time.monotonic()
                    await self.send(
                        {
                            "type": "response.output_audio_transcript.delta",
                            **ids,
                            "content_index": 0,
                            "delta": reply.text,
                        }
                    )
                sent_ms += len(chunk) // BYTES_PER_MS
                self.item_audio_ms[item_id] = sent_ms
                resp.audio_ms = sent_ms
                self.audio_out_once = True
                await self._pause(reply)
            cancelled = resp.reason is not None
            heard_text = (
                reply.text
                if not cancelled
                else reply.text[: int(len(reply.text) * sent_ms / max(1, len(audio) // BYTES_PER_MS))]
            )
            await self.send({"type": "response.output_audio.done", **ids, "content_index": 0})
            await self.send(
                {
                    "type": "response.output_audio_transcript.done",
                    **ids,
                    "content_index": 0,
                    "transcript": heard_text,
                }
            )
            part = {"type": "audio", "transcript": heard_text}
            await self.send({"type": "response.content_part.done", **ids, "content_index": 0, "part": part})
            item["status"] = "incomplete" if cancelled else "completed"
            item["content"] = [{"type": "output_audio", "transcript": heard_text}]
            await self.send(
                {"type": "response.output_item.done", "response_id": resp.id, "output_index": 0, "item": item}
            )
            await self.send({"type": "conversation.item.done", "previous_item_id": None, "item": item})
            output.append(item)
            out_tokens_audio = math.ceil(sent_ms / 50)
        if resp.reason is None:
            known = {t.get("name") for t in self.session.config.get("tools", []) if isinstance(t, dict)}
            for spec in reply.tool_calls:
                if spec.name not in known:
                    self.violation(f"scripted call to {spec.name!r}, which the session did not declare")
                output.append(await self._function_call(resp, spec, len(output)))
        if reply.done_delay_s:
            await asyncio.sleep(reply.done_delay_s)
        status = "cancelled" if resp.reason is not None else "completed"
        resp.status = status
        in_audio = math.ceil(self.input_audio_ms_since_response / 100)
        self.input_audio_ms_since_response = 0.0
        in_text = len(self.session.instructions) // 4 + len(resp.instructions or "") // 4
        out_text = max(1, len(reply.text) // 4) if reply.text else 0
        usage = {
            "total_tokens": in_audio + in_text + out_text + out_tokens_audio,
            "input_tokens": in_audio + in_text,
            "output_tokens": out_text + out_tokens_audio,
            "input_token_details": {"text_tokens": in_text, "audio_tokens": in_audio, "cached_tokens": 0},
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_tokens_audio},
        }
        details = {"type": "cancelled", "reason": resp.reason} if resp.reason is not None else None
        self.active = None
        await self.send(
            {
                "type": "response.done",
                "response": {
                    "id": resp.id,
                    "status": status,
                    "status_details": details,
                    "output": output,
                    "usage": usage,
                    **base,
                },
            }
        )

    async def _function_call(
        self, resp: FakeResponse, spec: ToolCallSpec, output_index: int
    ) -> dict[str, Any]:
        call_id = spec.call_id or self.server.new_id("call")
        self.call_ids.add(call_id)
        args = json.dumps(spec.arguments)
        item = {
            "id": self.server.new_id("item"),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": spec.name,
            "arguments": "",
        }
        self.items[item["id"]] = item
        ids = {
            "response_id": resp.id,
            "item_id": item["id"],
            "output_index": output_index,
            "call_id": call_id,
        }
        await self.send(
            {
                "type": "response.output_item.added",
                "response_id": resp.id,
                "output_index": output_index,
                "item": item,
            }
        )
        await self.send(
            {"type": "conversation.item.added", "previous_item_id": self.last_item_id, "item": item}
        )
        self.last_item_id = item["id"]
        half = len(args) // 2
        for piece in (args[:half], args[half:]):
            await self.send({"type": "response.function_call_arguments.delta", **ids, "delta": piece})
        await self.send({"type": "response.function_call_arguments.done", **ids, "arguments": args})
        item = {**item, "status": "completed", "arguments": args}
        self.items[item["id"]] = item
        await self.send(
            {
                "type": "response.output_item.done",
                "response_id": resp.id,
                "output_index": output_index,
                "item": item,
            }
        )
        await self.send({"type": "conversation.item.done", "previous_item_id": None, "item": item})
        resp.tool_calls.append({"call_id": call_id, "name": spec.name, "arguments": spec.arguments})
        return item


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    """Apply a partial session update: objects merge, everything else (including null) replaces."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
