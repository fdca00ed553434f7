"""A fake Gemini Live server that speaks the real wire protocol (BidiGenerateContent over wss).

google-genai's `client.aio.live.connect` dials it unchanged: point `HttpOptions.base_url` at
`fake.base_url` and trust the fake's CA (`fake.http_options()` does both). The fake checks the setup
message, answers `setupComplete` first, then plays a *script* — a list of steps — for each
conversation, and records everything it receives so tests can assert on it.

Conversations and resumption: a connection without a resumption handle starts a new conversation;
a connection carrying a handle the fake issued continues that conversation from the step the handle
points at (steps after it run again, as a resumed model would regenerate them). Fault steps
(`GoAway`, `Drop`, `Close`) fire once per conversation, so a resumed session does not fail again
at the same place. Handles are issued at turn boundaries (after a completed `Reply`, after the
awaited tool responses arrived) and by the `Handle` step.

Scripts: `Reply`, `Hear`, `CallTools`, `Interrupt`, `Usage`, `GoAway`, `Drop`, `Close`, `Sleep`,
`Handle`, and the waits `WaitClientTurn`, `WaitAudio`, `WaitToolResponse`. `Echo` answers every
utterance forever (the benchmark's mode; also the default when no script is given).
`qualification_script(campaign, lead, answers)` builds a whole qualification from a campaign.
Faults on demand: `await fake.go_away(session, time_left_s)`, `await fake.drop(session, code)`.

Records: `fake.sessions[i]` (a `SessionRecord` per connection: setup, audio received, client turns,
tool calls sent and responses received, handles, interruptions), `fake.violations` (protocol
mistakes the real service would reject), `await fake.wait_for(predicate)` to wait on them.

    async with FakeGeminiLive(script=[WaitClientTurn(), Reply("Hello!", ms=300)]) as fake:
        client = genai.Client(api_key="test", http_options=fake.http_options())
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from local.fakes.tls import LoopbackTLS, shared_loopback_tls

log = logging.getLogger(__name__)

WS_PATH = "/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
IN_RATE = 16_000  # what the client must send (audio/pcm;rate=16000)
OUT_RATE = 24_000  # what the fake sends back (audio/pcm;rate=24000)
_IN_BYTES_PER_MS = IN_RATE * 2 // 1000
_OUT_BYTES_PER_MS = OUT_RATE * 2 // 1000
_AUDIO_TOKENS_PER_S = 32  # Gemini's audio tokenisation rate, for plausible usageMetadata
INVALID_ARGUMENT = 1007  # what the real service closes with for a bad setup or message
POLICY_VIOLATION = 1008  # bad API key, unknown resumption handle


# ── script steps ──────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class WaitClientTurn:
    """Wait for a `clientContent` message with `turnComplete` (e.g. the engine's `say`)."""

    contains: str = ""  # only a turn whose text contains this (case-insensitive)
    timeout_s: float = 30.0


@dataclass(frozen=True)
class WaitAudio:
    """Wait until at least `ms` of lead audio arrived since this step began."""

    ms: int = 200
    timeout_s: float = 30.0


@dataclass(frozen=True)
class WaitToolResponse:
    """Wait until every tool call this conversation issued has its `toolResponse` on this connection."""

    timeout_s: float = 30.0


@dataclass(frozen=True)
class Reply:
    """The model speaks: audio (a tone of `ms`, or `pcm` at 24 kHz) and its output transcription.

    `realtime` paces the chunks at playback speed (the real service sends faster than real time);
    `complete=False` leaves the turn open (for an `Interrupt` to cut it); `say_client_turn` speaks
    the text of the client turn the last `WaitClientTurn` consumed (an engine's `say`)."""

    text: str = ""
    ms: int | None = None  # default: ~60 ms per word, at least 200 ms
    pcm: bytes | None = None
    chunk_ms: int = 40
    realtime: bool = False
    complete: bool = True
    say_client_turn: bool = False


@dataclass(frozen=True)
class Hear:
    """An input transcription: what the lead said."""

    text: str


@dataclass(frozen=True)
class Call:
    name: str
    args: Mapping[str, Any]
    id: str | None = None  # default: derived from the conversation and step, stable across resumption


@dataclass(frozen=True)
class CallTools:
    """A `toolCall` with one or more function calls."""

    calls: tuple[Call, ...]


@dataclass(frozen=True)
class Interrupt:
    """`serverContent.interrupted`: the lead barged in; the open model turn is over."""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    response_tokens: int
    prompt_by_modality: Mapping[str, int] | None = None
    response_by_modality: Mapping[str, int] | None = None


@dataclass(frozen=True)
class Handle:
    """Send a `sessionResumptionUpdate` with a new handle pointing after this step."""


@dataclass(frozen=True)
class GoAway:
    """`goAway` with `timeLeft`; the fake closes the connection (1000) when the time is up."""

    time_left_s: float = 1.0


@dataclass(frozen=True)
class Drop:
    """Lose the connection: close with `code`, or abort the TCP connection when `code` is None."""

    code: int | None = 1011
    reason: str = "internal error"


@dataclass(frozen=True)
class Close:
    """Close the connection with a code the client must not retry (e.g. 1008)."""

    code: int = POLICY_VIOLATION
    reason: str = "policy violation"


@dataclass(frozen=True)
class Sleep:
    """Slowness: do nothing for a while."""

    seconds: float


@dataclass(frozen=True)
class Echo:
    """Answer every lead utterance, forever: energy VAD on the incoming 16 kHz audio; after
    `silence_ms` of quiet following speech, reply with 24 kHz audio (the utterance itself,
    resampled, or a tone) then `turnComplete` and `usageMetadata`. Speech while the reply would
    still be playing is a barge-in: the fake sends `interrupted`."""

    silence_ms: int = 300
    min_speech_ms: int = 60
    threshold: int = 500  # RMS of S16 samples counted as speech
    reply: str = "echo"  # "echo" or "tone"
    max_reply_ms: int = 2_000
    reply_delay_s: float = 0.0  # model "thinking" time before the first audio


Step = (
    WaitClientTurn
    | WaitAudio
    | WaitToolResponse
    | Reply
    | Hear
    | CallTools
    | Interrupt
    | Usage
    | Handle
    | GoAway
    | Drop
    | Close
    | Sleep
    | Echo
)
_FAULTS = (GoAway, Drop, Close)
Script = Sequence[Step]
ScriptSource = Script | Callable[[dict[str, Any]], Script] | None


# ── records ───────────────────────────────────────────────────────────────────────────────────


@dataclass
class SessionRecord:
    """What one connection received and sent; tests assert on these."""

    index: int
    conversation: int = -1
    setup: dict[str, Any] = field(default_factory=dict)
    api_key: str | None = None
    path: str = ""
    resumed_from: str | None = None  # the handle the setup carried
    started_at: float = field(default_factory=time.monotonic)
    audio_bytes: int = 0
    audio_chunks: int = 0
    audio_mime_types: set[str] = field(default_factory=set)
    client_turns: list[str] = field(default_factory=list)  # text of clientContent turns
    tool_responses: list[dict[str, Any]] = field(default_factory=list)  # {id, name, response}
    tool_calls_sent: list[dict[str, Any]] = field(default_factory=list)  # {id, name, args}
    handles_sent: list[str] = field(default_factory=list)
    audio_ms_sent: int = 0
    interrupted_at: list[float] = field(default_factory=list)  # monotonic times `interrupted` was sent
    violations: list[str] = field(default_factory=list)
    close_code: int | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def audio_ms(self) -> float:
        return self.audio_bytes / _IN_BYTES_PER_MS


@dataclass
class _Conversation:
    id: int
    steps: Script
    pos: int = 0
    fired: set[int] = field(default_factory=set)
    outstanding: dict[str, str] = field(default_factory=dict)  # tool call id → name, not yet answered
    active: _Connection | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class _Connection:
    ws: ServerConnection
    record: SessionRecord
    conv: _Conversation | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    answered: dict[str, dict[str, Any]] = field(default_factory=dict)  # tool responses on this connection
    issued: set[str] = field(default_factory=set)  # tool call ids sent on this connection
    audio_sink: asyncio.Queue[bytes] | None = None  # set while an Echo step listens
    audio_heard: int = 0  # audio bytes already consumed by WaitAudio steps
    turns_taken: int = 0  # client turns already consumed by WaitClientTurn steps
    last_turn: str = ""


class _Superseded(Exception):
    """A newer connection resumed this conversation; this one stops playing the script."""


# ── the server ────────────────────────────────────────────────────────────────────────────────


class FakeGeminiLive:
    """A scriptable Gemini Live server on loopback, over TLS. Use as an async context manager."""

    def __init__(
        self,
        script: ScriptSource = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: LoopbackTLS | None = None,
        api_key: str | None = None,
        model: str | None = None,
        require_tools: bool = True,
        auto_handles: bool = True,
        auto_usage: bool = True,
        setup_delay_s: float = 0.0,
        api_version: str = "v1beta",
    ) -> None:
        self._script = script
        self._host = host
        self._port = port
        self.tls = tls or shared_loopback_tls()
        self.api_key = api_key  # when set, the x-goog-api-key header must match (else close 1008)
        self.model = model  # when set, the setup must name this model
        self.require_tools = require_tools
        self.auto_handles = auto_handles
        self.auto_usage = auto_usage
        self.setup_delay_s = setup_delay_s  # slowness before setupComplete
        self.api_version = api_version
        self.sessions: list[SessionRecord] = []
        self._connections: list[_Connection] = []
        self.conversations: list[_Conversation] = []
        self._handles: dict[str, tuple[_Conversation, int]] = {}
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._arrivals = asyncio.Condition()  # notified on every change wait_for() may be waiting on
        self._wakeup_scheduled = False

    # lifecycle

    async def __aenter__(self) -> FakeGeminiLive:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._server = await serve(
            self._handle,
            self._host,
            self._port,
            ssl=self.tls.server_context,
            compression=None,
            max_size=16 * 2**20,
            ping_interval=None,
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # what clients need

    @property
    def port(self) -> int:
        assert self._server is not None, "start the fake first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"https://{self._host}:{self.port}"

    def http_options(self) -> Any:
        """`google.genai.types.HttpOptions` that dial this fake and trust its CA."""
        from google.genai import types  # the fake itself does not need the SDK

        return types.HttpOptions(
            base_url=self.base_url,
            api_version=self.api_version,
            async_client_args={"ssl": self.tls.client_context},
        )

    # inspection

    @property
    def violations(self) -> list[str]:
        return [f"session {s.index}: {v}" for s in self.sessions for v in s.violations]

    async def wait_sessions(self, count: int, timeout_s: float = 5.0) -> None:
        """Wait until `count` connections have arrived."""
        await self.wait_for(lambda: len(self.sessions) >= count, timeout_s)

    async def wait_for(self, predicate: Callable[[], object], timeout_s: float = 5.0) -> None:
        """Wait until `predicate()` (typically over `sessions`) holds; it is re-checked after every
        message the fake sends or receives and every connection that comes or goes."""
        async with asyncio.timeout(timeout_s), self._arrivals:
            await self._arrivals.wait_for(lambda: bool(predicate()))

    # faults on demand (the benchmark, tests of long-running modes such as Echo)

    async def go_away(self, session: int = -1, time_left_s: float = 1.0) -> None:
        """Send `goAway` on a connection now; it is closed (1000) when the time is up."""
        conn = self._connections[session]
        await conn.ws.send(json.dumps({"goAway": {"timeLeft": f"{time_left_s:g}s"}}))
        closer = asyncio.create_task(_close_later(conn.ws, time_left_s), name="fake-gemini-goaway")
        self._tasks.add(closer)
        closer.add_done_callback(self._tasks.discard)

    async def drop(self, session: int = -1, code: int | None = None, reason: str = "") -> None:
        """Lose a connection now: close with `code`, or abort the TCP connection when None."""
        ws = self._connections[session].ws
        if code is None:
            ws.transport.abort()
        else:
            await ws.close(code, reason)

    def _progress(self) -> None:
        # Wake wait_for() callers without blocking the caller (a notify needs the lock).
        if not self._wakeup_scheduled:
            self._wakeup_scheduled = True
            asyncio.get_running_loop().call_soon(self._wake)

    def _wake(self) -> None:
        self._wakeup_scheduled = False
        task = asyncio.ensure_future(self._notify())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify(self) -> None:
        async with self._arrivals:
            self._arrivals.notify_all()

    async def wait_done(self, conversation: int = 0, timeout_s: float = 10.0) -> None:
        """Wait until a conversation has played its whole script."""
        async with asyncio.timeout(timeout_s):
            async with self._arrivals:
                await self._arrivals.wait_for(lambda: len(self.conversations) > conversation)
            await self.conversations[conversation].done.wait()

    # one connection

    async def _handle(self, ws: ServerConnection) -> None:
        record = SessionRecord(index=len(self.sessions))
        self.sessions.append(record)
        async with self._arrivals:
            self._arrivals.notify_all()
        conn = _Connection(ws=ws, record=record)
        self._connections.append(conn)
        record.path = ws.request.path if ws.request else ""
        record.api_key = ws.request.headers.get("x-goog-api-key") if ws.request else None
        try:
            if not await self._setup(conn):
                return
            reader = asyncio.create_task(self._read(conn), name=f"fake-gemini-read-{record.index}")
            runner = asyncio.create_task(self._play(conn), name=f"fake-gemini-play-{record.index}")
            self._tasks.update((reader, runner))
            try:
                await asyncio.wait({reader, runner}, return_when=asyncio.FIRST_COMPLETED)
                if runner.done() and not reader.done():
                    await (
                        reader
                    )  # the script ended (or was superseded): keep listening until the client leaves
            finally:
                for task in (reader, runner):
                    task.cancel()
                await asyncio.gather(reader, runner, return_exceptions=True)
                self._tasks.difference_update((reader, runner))
        finally:
            record.close_code = ws.close_code
            record.closed.set()
            self._progress()

    async def _setup(self, conn: _Connection) -> bool:
        record, ws = conn.record, conn.ws
        expected_path = WS_PATH.format(version=self.api_version)
        if record.path.split("?")[0] != expected_path:
            record.violations.append(f"unexpected path {record.path!r}")
            await ws.close(INVALID_ARGUMENT, "unknown method")
            return False
        if self.api_key is not None and record.api_key != self.api_key:
            await ws.close(POLICY_VIOLATION, "API key not valid. Please pass a valid API key.")
            return False
        try:
            async with asyncio.timeout(10):
                first = json.loads(await ws.recv())
        except (TimeoutError, ConnectionClosed, ValueError):
            record.violations.append("no setup message")
            return False
        setup = first.get("setup") if isinstance(first, dict) else None
        if not isinstance(setup, dict):
            record.violations.append("first message is not a setup")
            await ws.close(INVALID_ARGUMENT, "Request contains an invalid argument.")
            return False
        record.setup = setup
        problems = self._check_setup(setup)
        if problems:
            record.violations.extend(problems)
            await ws.close(INVALID_ARGUMENT, "Request contains an invalid argument.")
            return False
        resumption = _pick(setup, "sessionResumption") or {}
        handle = _pick(resumption, "handle")
        if handle:
            record.resumed_from = handle
            if handle not in self._handles:
                await ws.close(POLICY_VIOLATION, "Invalid session resumption handle.")
                return False
            conv, pos = self._handles[handle]
            # A connection still playing this conversation is superseded: its script stops.
            conv.pos = pos
            conv.active = conn
        else:
            conv = _Conversation(id=len(self.conversations), steps=self._steps_for(setup))
            self.conversations.append(conv)
            conv.active = conn
            async with self._arrivals:
                self._arrivals.notify_all()
        conn.conv = conv
        record.conversation = conv.id
        if self.setup_delay_s:
            # Slow to answer, but a client that gives up (closes) ends the wait.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.setup_delay_s):
                    await ws.wait_closed()
            if ws.close_code is not None:
                return False
        await self._send(conn, {"setupComplete": {"sessionId": f"fake-{conv.id}-{record.index}"}})
        return True

    def _steps_for(self, setup: dict[str, Any]) -> Script:
        if self._script is None:
            return [Echo()]
        if callable(self._script):
            return list(self._script(setup))
        return list(self._script)

    def _check_setup(self, setup: dict[str, Any]) -> list[str]:
        problems: list[str] = []
        model = setup.get("model")
        if not isinstance(model, str) or not model.startswith("models/"):
            problems.append(f"setup.model must be 'models/…', got {model!r}")
        elif self.model is not None and model.removeprefix("models/") != self.model.removeprefix("models/"):
            problems.append(f"setup.model {model!r} is not {self.model!r}")
        generation = _pick(setup, "generationConfig") or {}
        modalities = _pick(generation, "responseModalities")
        if modalities != ["AUDIO"]:
            problems.append(f"generationConfig.responseModalities must be ['AUDIO'], got {modalities!r}")
        tools = _pick(setup, "tools") or []
        declarations = [d for t in tools for d in (_pick(t, "functionDeclarations") or [])]
        if self.require_tools and not declarations:
            problems.append("setup.tools has no function declarations")
        for decl in declarations:
            if not decl.get("name"):
                problems.append("a function declaration has no name")
        return problems

    # receiving

    async def _read(self, conn: _Connection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self._read_messages(conn)

    async def _read_messages(self, conn: _Connection) -> None:
        record = conn.record
        async for raw in conn.ws:
            try:
                message = json.loads(raw)
            except ValueError:
                record.violations.append("a message that is not JSON")
                await conn.ws.close(INVALID_ARGUMENT, "Invalid JSON payload received.")
                return
            realtime = _pick(message, "realtimeInput")
            content = _pick(message, "clientContent")
            tool_response = _pick(message, "toolResponse")
            if realtime is not None:
                self._on_realtime(conn, realtime)
            elif content is not None:
                self._on_client_content(conn, content)
            elif tool_response is not None:
                self._on_tool_response(conn, tool_response)
            elif "setup" in message:
                record.violations.append("a second setup message")
            else:
                record.violations.append(f"unknown message keys {sorted(message)}")
            async with conn.changed:
                conn.changed.notify_all()
            self._progress()

    def _on_realtime(self, conn: _Connection, realtime: dict[str, Any]) -> None:
        record = conn.record
        blobs = [b for b in [_pick(realtime, "audio")] if b] + list(_pick(realtime, "mediaChunks") or [])
        for blob in blobs:
            mime = _pick(blob, "mimeType") or ""
            record.audio_mime_types.add(mime)
            if not mime.startswith("audio/pcm"):
                record.violations.append(f"audio with mime type {mime!r}")
                continue
            rate = re.search(r"rate=(\d+)", mime)
            if rate is None or int(rate.group(1)) != IN_RATE:
                record.violations.append(f"audio must be audio/pcm;rate={IN_RATE}, got {mime!r}")
            try:
                pcm = _b64decode(str(blob.get("data") or ""))
            except ValueError:
                record.violations.append("audio data that is not base64")
                continue
            if len(pcm) % 2:
                record.violations.append("an odd number of audio bytes")
            record.audio_bytes += len(pcm)
            record.audio_chunks += 1
            if conn.audio_sink is not None:
                conn.audio_sink.put_nowait(pcm)

    def _on_client_content(self, conn: _Connection, content: dict[str, Any]) -> None:
        texts: list[str] = []
        for turn in _pick(content, "turns") or []:
            texts.extend(str(p["text"]) for p in turn.get("parts", []) if "text" in p)
        if _pick(content, "turnComplete"):
            conn.record.client_turns.append(" ".join(texts))

    def _on_tool_response(self, conn: _Connection, tool_response: dict[str, Any]) -> None:
        record = conn.record
        for resp in _pick(tool_response, "functionResponses") or []:
            call_id = resp.get("id")
            entry = {"id": call_id, "name": resp.get("name"), "response": resp.get("response")}
            record.tool_responses.append(entry)
            if call_id not in conn.issued:
                # The real service rejects a response to a call this session never made.
                record.violations.append(f"tool response for unknown call id {call_id!r}")
                continue
            if call_id in conn.answered:
                record.violations.append(f"a second tool response for call id {call_id!r}")
            conn.answered[call_id] = entry
            if conn.conv is not None:
                conn.conv.outstanding.pop(call_id, None)

    # playing the script

    async def _play(self, conn: _Connection) -> None:
        conv = conn.conv
        assert conv is not None
        try:
            while conv.pos < len(conv.steps):
                if conv.active is not conn:
                    raise _Superseded
                index = conv.pos
                step = conv.steps[index]
                if isinstance(step, _FAULTS):
                    if index in conv.fired:
                        conv.pos += 1
                        continue
                    conv.fired.add(index)
                conv.pos += 1  # before running: a fault ends this connection; resuming goes on after it
                await self._run_step(conn, index, step)
            conv.done.set()
        except (_Superseded, ConnectionClosed):
            return

    async def _run_step(self, conn: _Connection, index: int, step: Step) -> None:
        conv = conn.conv
        assert conv is not None
        match step:
            case WaitClientTurn(contains=contains, timeout_s=timeout_s):
                await self._wait(
                    conn,
                    lambda: self._take_turn(conn, contains),
                    timeout_s,
                    f"a client turn with {contains!r}",
                )
            case WaitAudio(ms=ms, timeout_s=timeout_s):
                # Audio counts from the previous wait on, so an answer sent just before this step began is heard.
                await self._wait(
                    conn,
                    lambda: conn.record.audio_bytes - conn.audio_heard >= ms * _IN_BYTES_PER_MS,
                    timeout_s,
                    f"{ms} ms of audio",
                )
                conn.audio_heard = conn.record.audio_bytes
            case WaitToolResponse(timeout_s=timeout_s):
                await self._wait(
                    conn,
                    lambda: not any(cid in conv.outstanding for cid in conn.issued),
                    timeout_s,
                    "tool responses",
                )
                if self.auto_handles:
                    await self._send_handle(conn, conv.pos)
            case Reply():
                if step.say_client_turn:
                    step = dataclasses.replace(step, text=conn.last_turn)
                await self._reply(conn, step)
                if step.complete:
                    await self._complete_turn(conn, audio_ms=self._reply_ms(step), text=step.text)
            case Hear(text=text):
                await self._send(
                    conn, {"serverContent": {"inputTranscription": {"text": text, "finished": True}}}
                )
            case CallTools(calls=calls):
                function_calls = []
                for n, call in enumerate(calls):
                    call_id = call.id or f"fc-{conv.id}-{index}-{n}"
                    function_calls.append({"id": call_id, "name": call.name, "args": dict(call.args)})
                    conv.outstanding[call_id] = call.name
                    conn.issued.add(call_id)
                conn.record.tool_calls_sent.extend(function_calls)
                await self._send(conn, {"toolCall": {"functionCalls": function_calls}})
            case Interrupt():
                conn.record.interrupted_at.append(time.monotonic())
                await self._send(conn, {"serverContent": {"interrupted": True}})
            case Usage():
                await self._send(conn, {"usageMetadata": _usage(step)})
            case Handle():
                await self._send_handle(conn, conv.pos)
            case GoAway(time_left_s=time_left_s):
                await self._send(conn, {"goAway": {"timeLeft": f"{time_left_s:g}s"}})
                closer = asyncio.create_task(
                    _close_later(conn.ws, time_left_s), name=f"fake-gemini-goaway-{conn.record.index}"
                )
                self._tasks.add(closer)
                closer.add_done_callback(self._tasks.discard)
            case Drop(code=code, reason=reason):
                if code is None:
                    conn.ws.transport.abort()
                else:
                    await conn.ws.close(code, reason)
                raise ConnectionClosed(None, None)
            case Close(code=code, reason=reason):
                await conn.ws.close(code, reason)
                raise ConnectionClosed(None, None)
            case Sleep(seconds=seconds):
                await asyncio.sleep(seconds)
            case Echo():
                await self._echo(conn, step, index)

    async def _wait(self, conn: _Connection, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout_s), conn.changed:
                while not ready():
                    if conn.conv is None or conn.conv.active is not conn:
                        raise _Superseded
                    await conn.changed.wait()
        except TimeoutError:
            conn.record.violations.append(f"timed out waiting for {what}")
            raise ConnectionClosed(None, None) from None

    @staticmethod
    def _take_turn(conn: _Connection, contains: str) -> bool:
        """Consume the first client turn not yet waited for, if it contains `contains`."""
        turns = conn.record.client_turns
        for i in range(conn.turns_taken, len(turns)):
            if contains.lower() in turns[i].lower():
                conn.turns_taken = i + 1
                conn.last_turn = turns[i]
                return True
        return False

    @staticmethod
    def _reply_ms(step: Reply) -> int:
        if step.pcm is not None:
            return len(step.pcm) // _OUT_BYTES_PER_MS
        if step.ms is not None:
            return step.ms
        return max(200, 60 * len(step.text.split()))

    async def _reply(self, conn: _Connection, step: Reply) -> None:
        pcm = step.pcm if step.pcm is not None else tone(self._reply_ms(step), OUT_RATE)
        await self._send_audio(conn, pcm, chunk_ms=step.chunk_ms, realtime=step.realtime)
        if step.text:
            await self._send(conn, {"serverContent": {"outputTranscription": {"text": step.text}}})

    async def _send_audio(self, conn: _Connection, pcm: bytes, *, chunk_ms: int, realtime: bool) -> None:
        size = max(2, chunk_ms * _OUT_BYTES_PER_MS)
        started = time.monotonic()
        for offset in range(0, len(pcm), size):
            chunk = pcm[offset : offset + size]
            data = base64.b64encode(chunk).decode("ascii")
            part = {"inlineData": {"mimeType": f"audio/pcm;rate={OUT_RATE}", "data": data}}
            await self._send(conn, {"serverContent": {"modelTurn": {"parts": [part]}}})
            conn.record.audio_ms_sent += len(chunk) // _OUT_BYTES_PER_MS
            if realtime:
                due = started + (offset + len(chunk)) / (_OUT_BYTES_PER_MS * 1000)
                await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def _complete_turn(
        self, conn: _Connection, *, audio_ms: int, text: str, handle_pos: int | None = None
    ) -> None:
        await self._send(conn, {"serverContent": {"generationComplete": True}})
        message: dict[str, Any] = {"serverContent": {"turnComplete": True}}
        if self.auto_usage:
            heard_ms = conn.record.audio_bytes // _IN_BYTES_PER_MS
            audio_out = audio_ms * _AUDIO_TOKENS_PER_S // 1000
            text_out = len(text.split())
            audio_in = heard_ms * _AUDIO_TOKENS_PER_S // 1000
            message["usageMetadata"] = _usage(
                Usage(
                    prompt_tokens=audio_in + 400,
                    response_tokens=audio_out + text_out,
                    prompt_by_modality={"TEXT": 400, "AUDIO": audio_in},
                    response_by_modality={"AUDIO": audio_out, "TEXT": text_out},
                )
            )
        await self._send(conn, message)
        if self.auto_handles and conn.conv is not None:
            await self._send_handle(conn, conn.conv.pos if handle_pos is None else handle_pos)

    async def _send_handle(self, conn: _Connection, pos: int) -> None:
        assert conn.conv is not None
        handle = f"fake-handle-{conn.conv.id}-{pos}-{secrets.token_hex(4)}"
        self._handles[handle] = (conn.conv, pos)
        conn.record.handles_sent.append(handle)
        await self._send(conn, {"sessionResumptionUpdate": {"newHandle": handle, "resumable": True}})

    async def _send(self, conn: _Connection, message: dict[str, Any]) -> None:
        if conn.conv is not None and conn.conv.active is not conn and "setupComplete" not in message:
            raise _Superseded
        await conn.ws.send(json.dumps(message))
        self._progress()

    # echo mode

    async def _echo(self, conn: _Connection, step: Echo, index: int) -> None:
        sink: asyncio.Queue[bytes] = asyncio.Queue()
        conn.audio_sink = sink
        frame = 20 * _IN_BYTES_PER_MS
        pending = b""
        utterance = bytearray()
        speech_ms = silence_ms = 0
        speaking_until = 0.0
        in_speech = False
        try:
            while True:
                pending += await sink.get()
                while len(pending) >= frame:
                    chunk, pending = pending[:frame], pending[frame:]
                    loud = _rms(chunk) >= step.threshold
                    if loud:
                        if not in_speech and speech_ms == 0 and time.monotonic() < speaking_until:
                            conn.record.interrupted_at.append(time.monotonic())
                            await self._send(conn, {"serverContent": {"interrupted": True}})
                            speaking_until = 0.0
                        speech_ms += 20
                        silence_ms = 0
                        utterance += chunk
                        in_speech = speech_ms >= step.min_speech_ms
                        continue
                    if not in_speech:
                        speech_ms = 0
                        utterance.clear()
                        continue
                    silence_ms += 20
                    utterance += chunk
                    if silence_ms < step.silence_ms:
                        continue
                    heard = bytes(utterance[: len(utterance) - silence_ms * _IN_BYTES_PER_MS])
                    in_speech, speech_ms, silence_ms = False, 0, 0
                    utterance.clear()
                    reply_ms = await self._echo_reply(conn, step, heard, index)
                    speaking_until = time.monotonic() + reply_ms / 1000
        finally:
            conn.audio_sink = None

    async def _echo_reply(self, conn: _Connection, step: Echo, heard: bytes, index: int) -> int:
        heard_ms = len(heard) // _IN_BYTES_PER_MS
        if step.reply_delay_s:
            await asyncio.sleep(step.reply_delay_s)
        if step.reply == "echo":
            pcm = upsample_16k_to_24k(heard)[: step.max_reply_ms * _OUT_BYTES_PER_MS]
        else:
            pcm = tone(min(max(heard_ms, 200), step.max_reply_ms), OUT_RATE)
        n = len(conn.record.client_turns) + len(conn.record.interrupted_at)
        await self._send(
            conn, {"serverContent": {"inputTranscription": {"text": f"(utterance of {heard_ms} ms)"}}}
        )
        await self._send_audio(conn, pcm, chunk_ms=40, realtime=False)
        text = f"Echo reply {n}."
        await self._send(conn, {"serverContent": {"outputTranscription": {"text": text}}})
        reply_ms = len(pcm) // _OUT_BYTES_PER_MS
        # A session resumed from this handle goes on echoing.
        await self._complete_turn(conn, audio_ms=reply_ms, text=text, handle_pos=index)
        return reply_ms


# ── helpers ───────────────────────────────────────────────────────────────────────────────────


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _pick(obj: Any, camel_name: str) -> Any:
    """A field by its camelCase or snake_case name: google-genai sends a mix of both, and the real
    service (proto3 JSON) accepts either."""
    if not isinstance(obj, dict):
        return None
    if camel_name in obj:
        return obj[camel_name]
    return obj.get(_snake(camel_name))


def _b64decode(data: str) -> bytes:
    """Standard or URL-safe base64, padded or not: google-genai sends URL-safe, proto3 JSON takes both."""
    data = data.replace("-", "+").replace("_", "/")
    return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)


def _usage(step: Usage) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "promptTokenCount": step.prompt_tokens,
        "responseTokenCount": step.response_tokens,
        "totalTokenCount": step.prompt_tokens + step.response_tokens,
    }
    if step.prompt_by_modality:
        usage["promptTokensDetails"] = [
            {"modality": m, "tokenCount": n} for m, n in step.prompt_by_modality.items()
        ]
    if step.response_by_modality:
        usage["responseTokensDetails"] = [
            {"modality": m, "tokenCount": n} for m, n in step.response_by_modality.items()
        ]
    return usage


async def _close_later(ws: ServerConnection, delay_s: float) -> None:
    await asyncio.sleep(delay_s)
    with contextlib.suppress(ConnectionClosed):
        await ws.close(1000, "session ended after goAway")


def _rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples * samples))) if samples.size else 0.0


def tone(ms: int, rate: int = OUT_RATE, hz: float = 440.0, amplitude: int = 6000) -> bytes:
    """A sine tone, S16LE mono."""
    n = rate * ms // 1000
    t = np.arange(n, dtype=np.float64) / rate
    return (amplitude * np.sin(2 * math.pi * hz * t)).astype("<i2").tobytes()


def upsample_16k_to_24k(pcm: bytes) -> bytes:
    """Linear-interpolation resampling, good enough for an echo."""
    src = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if src.size == 0:
        return b""
    n_out = src.size * OUT_RATE // IN_RATE
    positions = np.arange(n_out, dtype=np.float64) * (IN_RATE / OUT_RATE)
    return np.interp(positions, np.arange(src.size), src).astype("<i2").tobytes()


# ── a whole qualification ─────────────────────────────────────────────────────────────────────


def qualification_script(
    campaign: Any,
    lead: Any,
    answers: Mapping[str, Any],
    *,
    quotes: Mapping[str, str] | None = None,
    closing_contains: str = "",
    answer_ms: int = 200,
) -> list[Step]:
    """The model's side of a qualification that goes as planned.

    The engine opens with `say(greeting + first question)`; for each question in `answers` (in the
    campaign's order) the fake waits for the lead's audio, hears the quote, calls `record_answer`,
    waits for the tool response and asks the next question; after the last answer it waits for the
    engine's `say` of the closing or handoff line and speaks it. `campaign` is a
    `leadqual.campaign.Campaign`, `lead` a `leadqual.models.Lead`.
    """
    quotes = quotes or {}
    questions = [q for q in campaign.questions if q.id in answers]
    steps: list[Step] = [WaitClientTurn(), Reply(say_client_turn=True)]
    for i, question in enumerate(questions):
        value = answers[question.id]
        quote = quotes.get(question.id) or _default_quote(value)
        steps += [
            WaitAudio(answer_ms),
            Hear(quote),
            CallTools((Call("record_answer", {"question_id": question.id, "value": value, "quote": quote}),)),
            WaitToolResponse(),
        ]
        if i + 1 < len(questions):
            steps.append(Reply(campaign.render(questions[i + 1].ask, lead)))
    steps += [WaitClientTurn(contains=closing_contains), Reply(say_client_turn=True)]
    return steps


def _default_quote(value: Any) -> str:
    if value is True:
        return "Yes."
    if value is False:
        return "No."
    return f"{value}."
