"""Gemini Live engine: one `client.aio.live.connect` session per call, kept alive across drops.

Audio: the lead's S16LE at 16 kHz goes up as `realtimeInput.audio` (`audio/pcm;rate=16000`); the
model answers with S16LE at 24 kHz. The session is configured for AUDIO responses with a prebuilt
voice, the call's system instruction and tools, input and output transcription, automatic activity
detection with barge-in (`START_OF_ACTIVITY_INTERRUPTS`), session resumption and sliding-window
context compression.

Staying up: the server sends `sessionResumptionUpdate` handles; on `goAway` the engine finishes the
exchange in flight (no tool call awaiting its result, no model turn half spoken) and reconnects with
the newest handle before the server's deadline; on a drop it reconnects with the handle under a
`ReconnectPolicy` (bounded retries with backoff, a failure counter that resets after a stable period,
fatal close codes never retried). While it reconnects, the lead's newest audio is kept (up to
`reconnect_buffer_ms`, older audio dropped) and sent first on the new session, after the audio sent
since the newest handle (which the resumed session never heard, so an answer given just before a
drop is not lost); `say` lines not yet answered by a model turn are sent again.

Tool calls are emitted exactly once per call id. A resumed session may issue again a call the old
session had already issued: the engine answers it from the stored result (or waits for the bridge's
result) instead of emitting it twice. A result is only ever sent to the session that issued the
call; results for calls the new session never re-issues are held, not sent elsewhere.

`say(text)`: Gemini has no "speak exactly this" primitive, so the engine sends a user turn
"Say exactly this, word for word, and nothing else: <text>" (`turnComplete`) and the system
instruction explains those turns. `truncate` is a no-op: the service cuts its own context when its
activity detection interrupts a reply.

Transcripts are emitted once per utterance (input) and once per model turn (output), not per
fragment. Every `Usage` event is a delta for one model turn: sum them for cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import ssl
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from google.genai.live import AsyncSession
from pydantic import BaseModel, ConfigDict, Field, model_validator
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.engines.base import (
    AudioOut,
    Engine,
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
from leadqual.errors import LeadqualError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-09-2025"
DEFAULT_VOICE = "Puck"
INPUT_RATE = 16_000
OUTPUT_RATE = 24_000
INPUT_MIME = f"audio/pcm;rate={INPUT_RATE}"
# Lead audio sent this shortly before a handle arrived may not be covered by it (still in flight):
# about a round trip, and shorter than the activity detection's end-of-speech silence, so the
# speech of a finished utterance is never sent twice.
HANDLE_OVERLAP_S = 0.25
SAY_PREFIX = "Say exactly this, word for word, and nothing else: "
# The prebuilt voices of the native-audio models; a campaign voice outside this list (another
# engine's voice name) falls back to the engine default instead of failing the setup.
GEMINI_VOICES = frozenset(
    [
        "Zephyr",
        "Puck",
        "Charon",
        "Kore",
        "Fenrir",
        "Leda",
        "Orus",
        "Aoede",
        "Callirrhoe",
        "Autonoe",
        "Enceladus",
        "Iapetus",
        "Umbriel",
        "Algieba",
        "Despina",
        "Erinome",
        "Algenib",
        "Rasalgethi",
        "Laomedeia",
        "Achernar",
        "Alnilam",
        "Schedar",
        "Gacrux",
        "Pulcherrima",
        "Achird",
        "Zubenelgenubi",
        "Vindemiatrix",
        "Sadachbia",
        "Sadaltager",
        "Sulafat",
    ]
)
_ENGINE_NOTE = (
    "\n\nCall system messages: a user turn that starts with "
    f'"{SAY_PREFIX.strip()}" comes from the call system, not from the person on the phone. '
    "Speak that line exactly as written, add nothing, then stop and listen."
)
_RESUMED_NOTE = (
    "\n\nThe phone line to the model dropped and this is a new session of the same call: do not greet "
    "again and do not repeat questions whose answers were already recorded."
)
_IN_BYTES_PER_S = INPUT_RATE * 2
_OUT_BYTES_PER_S = OUTPUT_RATE * 2


class GeminiEngineError(LeadqualError):
    """The Gemini Live session could not be opened; `code` is the close code or HTTP status."""

    def __init__(self, reason: str, *, code: int | None = None, retryable: bool = False) -> None:
        super().__init__(reason, retryable=retryable)
        self.code = code


class ReconnectPolicy(BaseModel):
    """How a call's model session survives drops (DESIGN.md §6.10)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=4, ge=0, le=20)  # consecutive failed (re)connects before giving up
    backoff_initial_s: float = Field(default=0.2, gt=0, le=10)
    backoff_max_s: float = Field(default=3.0, gt=0, le=60)
    stable_after_s: float = Field(default=20.0, ge=0)  # a session up this long resets the failure counter
    connect_timeout_s: float = Field(default=8.0, gt=0, le=60)
    goaway_margin_s: float = Field(default=0.5, ge=0)  # switch at the latest this long before the deadline
    # 1002 protocol error, 1003 unsupported data, 1007 invalid argument (bad setup or message),
    # 1008 policy (bad key, quota, unknown handle), 1009 too big, 1010 missing extension: a retry
    # gets the same answer. 1011 (internal), 1006 (abrupt), 1000/1001 (ended, going away) are retried.
    fatal_close_codes: frozenset[int] = frozenset({1002, 1003, 1007, 1008, 1009, 1010})

    @model_validator(mode="after")
    def _backoff_order(self) -> ReconnectPolicy:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("backoff_max_s must be at least backoff_initial_s")
        return self

    def is_fatal(self, code: int | None) -> bool:
        """Close codes in the fatal set, and HTTP handshake statuses that are permanent (4xx but 408/429)."""
        if code is None:
            return False
        if 400 <= code < 500:
            return code not in (408, 429)
        return code in self.fatal_close_codes

    def backoff_s(self, failures: int) -> float:
        """Exponential backoff with jitter (half fixed, half random) for the n-th consecutive failure."""
        ceiling = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** max(0, failures - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


class ActivityDetection(BaseModel):
    """The service's automatic activity detection (barge-in). Phone audio is noisy and echoes the
    agent, so speech starts are detected with low sensitivity; ends with high, for quick turns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start_sensitivity: Literal["low", "high"] = "low"
    end_sensitivity: Literal["low", "high"] = "high"
    prefix_padding_ms: int = Field(default=100, ge=0, le=2_000)
    silence_duration_ms: int = Field(default=600, ge=300, le=5_000)  # longer than HANDLE_OVERLAP_S

    def to_config(self) -> types.RealtimeInputConfig:
        start = {
            "low": types.StartSensitivity.START_SENSITIVITY_LOW,
            "high": types.StartSensitivity.START_SENSITIVITY_HIGH,
        }[self.start_sensitivity]
        end = {
            "low": types.EndSensitivity.END_SENSITIVITY_LOW,
            "high": types.EndSensitivity.END_SENSITIVITY_HIGH,
        }[self.end_sensitivity]
        return types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(
                disabled=False,
                start_of_speech_sensitivity=start,
                end_of_speech_sensitivity=end,
                prefix_padding_ms=self.prefix_padding_ms,
                silence_duration_ms=self.silence_duration_ms,
            ),
            activity_handling=types.ActivityHandling.START_OF_ACTIVITY_INTERRUPTS,
        )


def make_client(
    api_key: str,
    *,
    base_url: str | None = None,
    api_version: str = "v1beta",
    ssl_context: ssl.SSLContext | None = None,
    ca_file: str | os.PathLike[str] | None = None,
) -> genai.Client:
    """A google-genai client for the Gemini Developer API; share one across calls.

    `base_url` (https://…) points it elsewhere, e.g. at the fake server; trust that server's CA
    with `ssl_context` or `ca_file` (a PEM file). google-genai dials `wss://` on the base URL's host;
    without either it trusts certifi's bundle, or `SSL_CERT_FILE` when that is set.
    """
    options = types.HttpOptions(api_version=api_version)
    if base_url is not None:
        options.base_url = base_url
    if ssl_context is None and ca_file is not None:
        ssl_context = ssl.create_default_context(cafile=os.fspath(ca_file))
    if ssl_context is not None:
        options.async_client_args = {"ssl": ssl_context}
    return genai.Client(api_key=api_key, http_options=options)


# ── internals ─────────────────────────────────────────────────────────────────────────────────


class _AudioRing:
    """The newest `limit` bytes of audio, in timestamped chunks; the oldest go first when full."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: deque[tuple[float, bytes]] = deque()
        self.size = 0

    def append(self, pcm: bytes, at: float = 0.0) -> None:
        if self.limit <= 0:
            return
        self._chunks.append((at, pcm))
        self.size += len(pcm)
        while self.size > self.limit and self._chunks:
            self.size -= len(self._chunks.popleft()[1])

    def drop_before(self, at: float) -> None:
        while self._chunks and self._chunks[0][0] < at:
            self.size -= len(self._chunks.popleft()[1])

    def take(self) -> list[bytes]:
        chunks = [pcm for _, pcm in self._chunks]
        self._chunks.clear()
        self.size = 0
        return chunks


class _EventChannel:
    """A bounded FIFO of engine events whose queued audio can be dropped at once (barge-in)."""

    def __init__(self, maxsize: int) -> None:
        self._items: deque[EngineEvent] = deque()
        self._maxsize = maxsize
        self._changed = asyncio.Condition()
        self._closed = False

    async def put(self, event: EngineEvent) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._closed or len(self._items) < self._maxsize)
            if not self._closed:
                self._items.append(event)
                self._changed.notify_all()

    async def put_urgent(self, event: EngineEvent, *, drop_audio: bool = False) -> int:
        """Append past the bound; with `drop_audio`, first discard the audio nobody has read yet."""
        async with self._changed:
            dropped = 0
            if drop_audio:
                kept = [e for e in self._items if not isinstance(e, AudioOut)]
                dropped = len(self._items) - len(kept)
                self._items = deque(kept)
            if not self._closed:
                self._items.append(event)
            self._changed.notify_all()
            return dropped

    async def get(self) -> EngineEvent | None:
        """The next event, or None once closed and drained."""
        async with self._changed:
            await self._changed.wait_for(lambda: self._closed or bool(self._items))
            if self._items:
                event = self._items.popleft()
                self._changed.notify_all()
                return event
            return None

    async def close(self) -> None:
        async with self._changed:
            self._closed = True
            self._changed.notify_all()


@dataclass
class _Pending:
    name: str
    key: str
    generation: int  # the session that last issued it (a resumed session may issue it again)


@dataclass
class _Answered:
    name: str
    key: str
    result: dict[str, Any]
    generation: int
    claimed: bool = False  # re-issued (and answered) on a later session


def _args_key(name: str, args: dict[str, Any]) -> str:
    return name + json.dumps(args, sort_keys=True, default=str)


def _close_code(exc: BaseException) -> int | None:
    if isinstance(exc, genai_errors.APIError):
        return exc.code
    if isinstance(exc, ConnectionClosed):  # google-genai lets a close during its setup send through
        frame = exc.rcvd or exc.sent
        return frame.code if frame is not None else 1006
    if isinstance(exc, InvalidStatus):
        return exc.response.status_code
    if isinstance(exc, GeminiEngineError):
        return exc.code
    return None


def _seconds(duration: str | None) -> float:
    """A protobuf Duration in JSON ("1.5s") as seconds; 0 when absent or malformed."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)s?\s*", duration or "")
    return float(match.group(1)) if match else 0.0


def _rate_of(mime: str | None) -> int | None:
    match = re.search(r"rate=(\d+)", mime or "")
    return int(match.group(1)) if match else None


def _by_modality(details: list[types.ModalityTokenCount] | None) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in details or []:
        key = item.modality.value if item.modality is not None else "UNSPECIFIED"
        counts[key] = counts.get(key, 0) + (item.token_count or 0)
    return counts


# ── the engine ────────────────────────────────────────────────────────────────────────────────


class GeminiLiveEngine:
    """bridge.engines.base.Engine on Gemini Live (google-genai `client.aio.live.connect`)."""

    name = "gemini"
    input_rate = INPUT_RATE
    output_rate = OUTPUT_RATE

    def __init__(
        self,
        client: genai.Client,
        *,
        model: str = DEFAULT_MODEL,
        voice: str = DEFAULT_VOICE,
        reconnect: ReconnectPolicy | None = None,
        activity: ActivityDetection | None = None,
        compression_trigger_tokens: int | None = None,
        reconnect_buffer_ms: int = 2_000,
        max_queued_events: int = 4_096,
    ) -> None:
        self._client = client
        self._model = model
        self._default_voice = voice
        self.policy = reconnect or ReconnectPolicy()
        self._activity = activity or ActivityDetection()
        self._compression_trigger = compression_trigger_tokens  # None: the service's default
        buffer_limit = max(0, reconnect_buffer_ms) * _IN_BYTES_PER_S // 1000
        self._events = _EventChannel(max_queued_events)

        self._ctx: SessionContext | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self._send_lock = asyncio.Lock()
        self._session: AsyncSession | None = None
        self._generation = 0
        self._handle: str | None = None
        self._goaway_at: float | None = None
        self.reconnects = 0  # sessions opened after the first

        # Conversation state the engine needs across sessions.
        self._pending: dict[str, _Pending] = {}
        self._answered: OrderedDict[str, _Answered] = OrderedDict()
        self._cancelled: set[str] = set()
        self._replay_from: int | None = None  # answered calls of this generation may be re-issued
        self._unconfirmed_says: list[str] = []  # sent, but no model turn completed since
        self._queued_says: list[str] = []  # asked for while no session was open
        self._backlog = _AudioRing(buffer_limit)  # lead audio that found no open session
        self._unacked = _AudioRing(buffer_limit)  # lead audio sent since the newest resumption handle
        self._handle_fresh = False  # the newest handle was issued after the last exchange
        self._awaiting_model = False  # we sent a tool result or a line; the model will answer
        self._model_speaking = False
        self._heard: list[str] = []
        self._said: list[str] = []
        self._out_rate_warned = False
        self._audio_in_bytes = 0
        self._audio_out_bytes = 0

    # ── Engine interface ──────────────────────────────────────────────────────────────────────

    async def start(self, ctx: SessionContext) -> None:
        if self._runner is not None:
            raise RuntimeError("start() was already called")
        self._ctx = ctx
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._run(ready), name=f"gemini-live:{ctx.session_id}")
        try:
            await ready
        except BaseException:
            await self.close()
            raise

    async def send_audio(self, pcm: bytes) -> None:
        if self._closed or not pcm:
            return
        async with self._send_lock:
            session = self._session
            if session is None or not await self._send_audio(session, pcm):
                self._backlog.append(pcm)  # the receive side notices a drop and reconnects

    async def say(self, text: str) -> None:
        if self._closed:
            return
        async with self._send_lock:
            session = self._session
            if session is None or not await self._send_say(session, text):
                self._queued_says.append(text)

    async def send_tool_result(self, call: ToolCall, result: dict[str, Any]) -> None:
        if call.call_id in self._cancelled:
            log.info("gemini tool result dropped: the model cancelled the call", extra={"tool": call.name})
            return
        pending = self._pending.pop(call.call_id, None)
        if pending is None:
            log.warning("gemini tool result for an unknown call", extra={"tool": call.name})
            return
        self._answered[call.call_id] = _Answered(call.name, pending.key, result, pending.generation)
        while len(self._answered) > 256:
            self._answered.popitem(last=False)
        async with self._send_lock:
            session = self._session
            if session is not None and pending.generation == self._generation:
                await self._respond(session, call.call_id, call.name, result)
            else:
                # Issued by a session that is gone: the result waits for the new session to issue
                # the call again; it is never sent to a session that did not ask.
                log.info("gemini tool result held for the resumed session", extra={"tool": call.name})

    async def truncate(self, played_ms: int) -> None:
        # Gemini's own activity detection already cut the reply and its context; there is no
        # client-side truncation in the Live API.
        log.debug("gemini truncate is a no-op", extra={"played_ms": played_ms})

    async def events(self) -> AsyncIterator[EngineEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await session.close()
        runner = self._runner
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        await self._events.close()

    # ── session lifecycle ─────────────────────────────────────────────────────────────────────

    async def _run(self, ready: asyncio.Future[None]) -> None:
        """Open the session, pump it, and open it again (with the resumption handle) until closed."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._closed:
            up_since: float | None = None
            try:
                async with contextlib.AsyncExitStack() as stack:
                    session = await self._connect(stack)
                    up_since = loop.time()
                    generation = await self._attach(session)
                    if not ready.done():
                        ready.set_result(None)
                    await self._pump(session, generation)
                # Left on our own after a goAway: the old session is closed, open the next one now.
                self._session = None
                continue
            except asyncio.CancelledError:
                self._session = None
                if not ready.done():
                    ready.cancel()
                raise
            except Exception as exc:
                self._session = None
                if self._closed:
                    return
                code = _close_code(exc)
                if not ready.done():
                    retryable = not self.policy.is_fatal(code) and not isinstance(exc, ssl.SSLError)
                    ready.set_exception(
                        GeminiEngineError(
                            f"cannot open the Gemini Live session: {exc}", code=code, retryable=retryable
                        )
                    )
                    return
                if self.policy.is_fatal(code) or isinstance(exc, ssl.SSLError):
                    await self._fail(f"gemini session closed with fatal code {code}: {exc}")
                    return
                if self._goaway_at is not None:
                    # The server ended the session it had announced; not a failure.
                    self._goaway_at = None
                    log.info("gemini session ended after goAway", extra={"code": code})
                    continue
                if up_since is not None and loop.time() - up_since >= self.policy.stable_after_s:
                    failures = 0
                failures += 1
                if failures > self.policy.max_attempts:
                    await self._fail(f"gemini session lost and {failures - 1} reconnects failed: {exc}")
                    return
                delay = self.policy.backoff_s(failures)
                log.warning(
                    "gemini session lost, reconnecting",
                    extra={"code": code, "failures": failures, "delay_s": round(delay, 3)},
                )
                await asyncio.sleep(delay)

    async def _connect(self, stack: contextlib.AsyncExitStack) -> AsyncSession:
        config = self._live_config()
        async with asyncio.timeout(self.policy.connect_timeout_s):
            session = await stack.enter_async_context(
                self._client.aio.live.connect(model=self._model, config=config)
            )
        if session.setup_complete is None:
            raise GeminiEngineError("the server did not answer the setup with setupComplete", retryable=True)
        return session

    def _live_config(self) -> types.LiveConnectConfig:
        ctx = self._ctx
        assert ctx is not None
        instruction = ctx.instructions + _ENGINE_NOTE
        if self._generation > 0 and self._handle is None:
            instruction += _RESUMED_NOTE + self._history_note()
        tools: list[types.ToolUnion] = [
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name=spec.name, description=spec.description, parameters_json_schema=spec.parameters
                    )
                    for spec in ctx.tools
                ]
            )
        ]
        return types.LiveConnectConfig(
            response_modalities=[types.Modality.AUDIO],
            speech_config=types.SpeechConfig(
                voice_config=types.VoiceConfig(
                    prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=self._voice(ctx))
                )
            ),
            system_instruction=types.Content(role="user", parts=[types.Part(text=instruction)]),
            tools=tools if ctx.tools else None,
            input_audio_transcription=types.AudioTranscriptionConfig(),
            output_audio_transcription=types.AudioTranscriptionConfig(),
            realtime_input_config=self._activity.to_config(),
            session_resumption=types.SessionResumptionConfig(handle=self._handle),
            context_window_compression=types.ContextWindowCompressionConfig(
                trigger_tokens=self._compression_trigger, sliding_window=types.SlidingWindow()
            ),
        )

    def _voice(self, ctx: SessionContext) -> str:
        wanted = ctx.campaign.agent.voice
        if wanted and wanted in GEMINI_VOICES:
            return wanted
        if wanted:
            log.warning("campaign voice is not a Gemini voice, using the default", extra={"voice": wanted})
        return self._default_voice

    def _history_note(self) -> str:
        """For a new session without a handle: what the lost session had already recorded."""
        done = [
            f"- {a.name} {a.key.removeprefix(a.name)} -> {json.dumps(a.result)}"
            for a in self._answered.values()
        ]
        return "\nTool calls already made in this call:\n" + "\n".join(done) if done else ""

    async def _attach(self, session: AsyncSession) -> int:
        """Make `session` current; send what waited for it: queued lines, then the buffered audio."""
        resumed_without_handle = self._generation > 0 and self._handle is None
        async with self._send_lock:
            self._generation += 1
            if self._generation > 1:
                self.reconnects += 1
                # Calls answered since the last completed turn may come back, from any lost session.
                if self._replay_from is None:
                    self._replay_from = self._generation - 1
            self._session = session
            self._goaway_at = None
            self._model_speaking = False
            says, self._queued_says = self._unconfirmed_says + self._queued_says, []
            self._unconfirmed_says = []
            for text in says:
                if not await self._send_say(session, text):
                    self._queued_says.append(text)
            if resumed_without_handle and not says:
                await self._send_say(
                    session, "", note="(The line is back. Continue the call where it stopped.)"
                )
            # A resumed session knows only what its handle captured: the lead's audio sent after
            # that handle is sent again, then what arrived while no session was open.
            replay = _AudioRing(self._backlog.limit)
            for pcm in self._unacked.take() + self._backlog.take():
                replay.append(pcm)
            for pcm in replay.take():
                if not await self._send_audio(session, pcm):
                    break
            return self._generation

    async def _fail(self, reason: str) -> None:
        log.error("gemini engine failed", extra={"reason": reason})
        await self._events.put_urgent(EngineFailed(reason=reason))
        await self._events.close()

    # ── sending (callers hold _send_lock) ─────────────────────────────────────────────────────

    async def _send_audio(self, session: AsyncSession, pcm: bytes) -> bool:
        try:
            await session.send_realtime_input(audio=types.Blob(data=pcm, mime_type=INPUT_MIME))
        except (ConnectionClosed, genai_errors.APIError):
            return False
        self._unacked.append(pcm, asyncio.get_running_loop().time())
        self._audio_in_bytes += len(pcm)
        return True

    async def _send_say(self, session: AsyncSession, text: str, *, note: str | None = None) -> bool:
        line = note if note is not None else SAY_PREFIX + text
        try:
            await session.send_client_content(
                turns=types.Content(role="user", parts=[types.Part(text=line)]), turn_complete=True
            )
        except (ConnectionClosed, genai_errors.APIError):
            return False
        if note is None:
            self._unconfirmed_says.append(text)
        self._awaiting_model = True
        self._handle_fresh = False
        return True

    async def _respond(self, session: AsyncSession, call_id: str, name: str, result: dict[str, Any]) -> None:
        try:
            await session.send_tool_response(
                function_responses=[types.FunctionResponse(id=call_id, name=name, response=result)]
            )
        except (ConnectionClosed, genai_errors.APIError):
            # The result stays stored; a resumed session that issues the call again gets it.
            log.info("gemini tool result not delivered: session lost", extra={"tool": name})
            return
        self._awaiting_model = True
        self._handle_fresh = False

    # ── receiving ─────────────────────────────────────────────────────────────────────────────

    async def _pump(self, session: AsyncSession, generation: int) -> None:
        """Handle server messages until the session ends (raises) or a goAway switch is due (returns)."""
        loop = asyncio.get_running_loop()
        messages = self._messages(session)
        try:
            while True:
                deadline = self._goaway_at
                if deadline is None:
                    message = await anext(messages)
                else:
                    if self._ready_to_switch(generation) or loop.time() >= deadline:
                        log.info(
                            "gemini switching session after goAway", extra={"on_time": loop.time() < deadline}
                        )
                        return
                    try:
                        async with asyncio.timeout_at(deadline):
                            message = await anext(messages)
                    except TimeoutError:
                        return
                await self._on_message(session, generation, message)
        finally:
            await messages.aclose()

    @staticmethod
    async def _messages(session: AsyncSession) -> AsyncGenerator[types.LiveServerMessage]:
        while True:  # receive() stops after each completed turn
            async for message in session.receive():
                yield message

    def _ready_to_switch(self, generation: int) -> bool:
        """Nothing in flight on this session and a handle newer than the last exchange: the next
        session resumes exactly here."""
        in_flight = any(p.generation == generation for p in self._pending.values())
        return self._handle_fresh and not in_flight and not self._awaiting_model and not self._model_speaking

    async def _on_message(
        self, session: AsyncSession, generation: int, message: types.LiveServerMessage
    ) -> None:
        if message.session_resumption_update is not None:
            update = message.session_resumption_update
            if update.resumable and update.new_handle:
                self._handle = update.new_handle
                self._handle_fresh = True
                # The handle may not cover audio still in flight when it was issued: keep a little.
                self._unacked.drop_before(asyncio.get_running_loop().time() - HANDLE_OVERLAP_S)
        if message.go_away is not None:
            left = _seconds(message.go_away.time_left)
            self._goaway_at = asyncio.get_running_loop().time() + max(0.0, left - self.policy.goaway_margin_s)
            log.info("gemini goAway", extra={"time_left_s": left})
        if message.usage_metadata is not None:  # first: a turn's usage precedes its TurnComplete
            await self._on_usage(message.usage_metadata)
        if message.server_content is not None:
            await self._on_content(message.server_content)
        if message.tool_call is not None:
            self._handle_fresh = False
            await self._on_tool_call(session, generation, message.tool_call)
        if message.tool_call_cancellation is not None:
            for call_id in message.tool_call_cancellation.ids or []:
                self._cancelled.add(call_id)
                self._pending.pop(call_id, None)

    async def _on_content(self, content: types.LiveServerContent) -> None:
        if content.interrupted:
            # Barge-in: the lead must stop hearing the agent now, including audio not yet read.
            await self._events.put_urgent(Interrupted(), drop_audio=True)
            self._model_speaking = False
            self._awaiting_model = False
            await self._flush_said()
        if content.input_transcription is not None and content.input_transcription.text:
            self._heard.append(content.input_transcription.text)
            if content.input_transcription.finished:
                await self._flush_heard()
        if content.model_turn is not None:
            for part in content.model_turn.parts or []:
                blob = part.inline_data
                if blob is None or not blob.data or not (blob.mime_type or "").startswith("audio/"):
                    continue
                if not self._out_rate_warned and _rate_of(blob.mime_type) not in (None, OUTPUT_RATE):
                    self._out_rate_warned = True
                    log.warning("gemini audio at an unexpected rate", extra={"mime_type": blob.mime_type})
                await self._flush_heard()
                self._model_speaking = True
                self._handle_fresh = False
                self._audio_out_bytes += len(blob.data)
                await self._events.put(AudioOut(pcm=blob.data))
        if content.output_transcription is not None and content.output_transcription.text:
            await self._flush_heard()
            self._model_speaking = True
            self._said.append(content.output_transcription.text)
        if content.generation_complete:
            await self._flush_said()
        if content.turn_complete:
            self._handle_fresh = False
            await self._flush_heard()
            await self._flush_said()
            self._model_speaking = False
            self._awaiting_model = False
            self._unconfirmed_says.clear()
            self._replay_from = None  # the resumed session has moved on: no more re-issued calls
            await self._events.put(TurnComplete())

    async def _on_tool_call(
        self, session: AsyncSession, generation: int, tool_call: types.LiveServerToolCall
    ) -> None:
        await self._flush_heard()
        await self._flush_said()
        for fc in tool_call.function_calls or []:
            call_id = fc.id or f"call-{uuid.uuid4().hex[:12]}"
            name = fc.name or ""
            args = dict(fc.args or {})
            key = _args_key(name, args)
            answered = self._answered.get(call_id) or self._twin(key, generation)
            if answered is not None:
                # Issued again by a resumed session: answer from the stored result, emit nothing.
                answered.claimed = True
                async with self._send_lock:
                    if self._session is session:
                        await self._respond(session, call_id, answered.name, answered.result)
                continue
            pending = self._pending.get(call_id)
            if pending is not None:
                pending.generation = generation  # the bridge's result will go to this session
                continue
            self._pending[call_id] = _Pending(name, key, generation)
            await self._events.put(ToolCall(call_id=call_id, name=name, args=args))

    def _twin(self, key: str, generation: int) -> _Answered | None:
        """A call the previous session had answered, issued again under a new id by the resumed one."""
        if self._replay_from is None:
            return None
        for answered in self._answered.values():
            if (
                answered.key == key
                and not answered.claimed
                and self._replay_from <= answered.generation < generation
            ):
                return answered
        return None

    async def _on_usage(self, usage: types.UsageMetadata) -> None:
        thoughts = usage.thoughts_token_count or 0
        audio_in, self._audio_in_bytes = self._audio_in_bytes, 0
        audio_out, self._audio_out_bytes = self._audio_out_bytes, 0
        detail: dict[str, Any] = {
            "prompt_tokens": usage.prompt_token_count or 0,
            "response_tokens": usage.response_token_count or 0,
            "thoughts_tokens": thoughts,
            "cached_tokens": usage.cached_content_token_count or 0,
            "tool_use_prompt_tokens": usage.tool_use_prompt_token_count or 0,
            "total_tokens": usage.total_token_count or 0,
            "prompt_by_modality": _by_modality(usage.prompt_tokens_details),
            "response_by_modality": _by_modality(usage.response_tokens_details),
            "model": self._model,
        }
        await self._events.put(
            Usage(
                input_tokens=(usage.prompt_token_count or 0) + (usage.tool_use_prompt_token_count or 0),
                output_tokens=(usage.response_token_count or 0) + thoughts,  # thinking is billed as output
                audio_seconds_in=audio_in / _IN_BYTES_PER_S,
                audio_seconds_out=audio_out / _OUT_BYTES_PER_S,
                detail=detail,
            )
        )

    async def _flush_heard(self) -> None:
        if self._heard:
            text = "".join(self._heard).strip()
            self._heard.clear()
            if text:
                await self._events.put(TranscriptIn(text=text, final=True))

    async def _flush_said(self) -> None:
        if self._said:
            text = "".join(self._said).strip()
            self._said.clear()
            if text:
                await self._events.put(TranscriptOut(text=text))


def _conforms(engine: GeminiLiveEngine) -> Engine:
    return engine  # mypy checks the class against the Engine protocol here
