"""OpenAI Realtime engine: the GA WebSocket protocol behind `bridge.engines.base.Engine`.

Wire protocol (GA, no `OpenAI-Beta` header): connect to `<url>?model=<model>` with
`Authorization: Bearer <key>`, wait for `session.created` (proof the key works), send
`session.update` (24 kHz PCM in and out, server or semantic VAD, input transcription, voice, tools),
then stream `input_audio_buffer.append`. The server answers with `response.output_audio.delta`
(agent audio), transcripts, function calls (`response.output_item.done` of type `function_call`:
the GA `function_call_arguments.done` carries no function name) and `response.done` with usage.

Barge-in: `input_audio_buffer.speech_started` while the agent is (probably) still being heard emits
`Interrupted` at once, before anything else is read; later audio of that reply is dropped. The
bridge sends killAudio and calls `truncate(played_ms)`, which sends `conversation.item.truncate`
for that assistant item so the model's memory matches what the lead actually heard. With the
default turn detection (`interrupt_response: true`) the server itself cancels the reply.

Responses are serialised: the API allows one active response per conversation, so a
`response.create` asked for while one is active (a tool result arriving before `response.done`,
a `say` while the model talks) waits for `response.done`; `say` cancels the active reply first.

Drops: OpenAI has no session resumption. On an unexpected close the engine reconnects per
`ReconnectPolicy`, re-sends `session.update` with the instructions plus a short note of the answers
recorded so far (from `SessionContext.answers` and every `record_answer` result it relayed), then
either repeats a `say` line that was cut off or asks the model to pick up where it left off.
Fatal errors (bad key, no quota, unknown model; HTTP 401/403/404 on the handshake) are never
retried. When reconnects run out the engine emits `EngineFailed` and its event stream ends.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

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
from leadqual.errors import LeadqualError
from leadqual.models import AnswerValue

logger = logging.getLogger(__name__)

DEFAULT_URL = "wss://api.openai.com/v1/realtime"
DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "marin"
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
SAMPLE_RATE = 24_000
_BYTES_PER_MS = SAMPLE_RATE * 2 // 1000
# Built-in voices; a campaign voice outside this set (say, a Gemini voice) falls back to the default.
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
# `error` codes after which nothing will work on this key or model: never retried.
FATAL_ERROR_CODES = frozenset(
    {
        "invalid_api_key",
        "insufficient_quota",
        "model_not_found",
        "account_deactivated",
        "organization_deactivated",
    }
)
FATAL_HTTP_STATUSES = frozenset({400, 401, 403, 404})
# Errors that only mean a harmless race (cancelling a reply that just ended).
_BENIGN_ERROR_CODES = frozenset({"response_cancel_not_active"})
SAY_TEMPLATE = 'Say exactly this, word for word, and nothing else: "{text}"'
# How long after the last audio of a reply the lead may still be hearing it (bridge buffering).
PLAYBACK_SLACK_S = 0.75

VadType = Literal["server_vad", "semantic_vad"]


class OpenAIRealtimeError(LeadqualError):
    """The model session could not be opened; `retryable` is False for auth, quota and model errors."""

    def __init__(
        self, reason: str, *, retryable: bool, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(reason, retryable=retryable)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class ReconnectPolicy:
    """Bounded reconnects after a drop.

    `max_attempts` connection attempts per failure streak (0 disables reconnecting); the delay
    before attempt n is `initial_delay_s * 2**(n-1)`, capped at `max_delay_s`; a connection that
    stayed up for `stable_after_s` resets the streak. `open_timeout_s` bounds each attempt
    (handshake plus `session.created`). Fatal errors end the streak at once.
    """

    max_attempts: int = 2
    initial_delay_s: float = 0.2
    max_delay_s: float = 2.0
    stable_after_s: float = 20.0
    open_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0 <= self.max_attempts <= 5:
            raise ValueError("max_attempts must be between 0 and 5: a call cannot wait on many reconnects")
        if self.initial_delay_s < 0 or self.max_delay_s < self.initial_delay_s:
            raise ValueError("delays must satisfy 0 <= initial_delay_s <= max_delay_s")
        if self.stable_after_s <= 0 or self.open_timeout_s <= 0:
            raise ValueError("stable_after_s and open_timeout_s must be positive")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt `attempt` (1-based)."""
        return float(min(self.max_delay_s, self.initial_delay_s * 2 ** max(0, attempt - 1)))


def default_turn_detection(vad: VadType = "server_vad") -> dict[str, Any]:
    """Turn detection tuned for phone calls: quick turn ends, barge-in cancels the reply."""
    if vad == "semantic_vad":
        return {
            "type": "semantic_vad",
            "eagerness": "high",
            "create_response": True,
            "interrupt_response": True,
        }
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }


def tool_schema(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "function",
        "name": tool.name,
        "description": tool.description,
        "parameters": tool.parameters,
    }


def session_config(
    ctx: SessionContext,
    *,
    model: str,
    voice: str,
    turn_detection: Mapping[str, Any] | None,
    transcription_model: str | None,
    instructions: str | None = None,
) -> dict[str, Any]:
    """The `session` object of `session.update` for this call (pure; tests assert on it)."""
    audio_in: dict[str, Any] = {
        "format": {"type": "audio/pcm", "rate": SAMPLE_RATE},
        "turn_detection": dict(turn_detection) if turn_detection is not None else None,
    }
    if transcription_model:
        transcription: dict[str, Any] = {"model": transcription_model}
        language = ctx.campaign.agent.language.split("-")[0].lower()
        if language:
            transcription["language"] = language
        audio_in["transcription"] = transcription
    return {
        "type": "realtime",
        "model": model,
        "instructions": ctx.instructions if instructions is None else instructions,
        "output_modalities": ["audio"],
        "audio": {
            "input": audio_in,
            "output": {"format": {"type": "audio/pcm", "rate": SAMPLE_RATE}, "voice": voice},
        },
        "tools": [tool_schema(t) for t in ctx.tools],
        "tool_choice": "auto",
    }


def pick_voice(configured: str | None, campaign_voice: str) -> str:
    """The engine's own setting wins; a campaign voice is used only if OpenAI has it (campaigns
    may name another engine's voice), else the default."""
    if configured:
        return configured
    return campaign_voice if campaign_voice in OPENAI_VOICES else DEFAULT_VOICE


def _render_value(value: AnswerValue) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "unknown" if value is None else str(value)


def resume_instructions(base: str, answers: Mapping[str, AnswerValue], next_question: str | None) -> str:
    """Instructions for a session opened after a drop: no memory survives, so say what happened."""
    lines = [
        base,
        "",
        "CALL RESUMED: the connection dropped for a moment and this is the same phone call continuing.",
        "You have already greeted the lead and given the disclosure; do not greet or introduce yourself again.",
    ]
    if answers:
        lines.append("Answers already recorded (do not ask these again):")
        lines.extend(f"- {qid}: {_render_value(value)}" for qid, value in answers.items())
    else:
        lines.append("No answers have been recorded yet.")
    if next_question:
        lines.append(
            f"When you speak next, apologise briefly for the interruption, then ask: {next_question}"
        )
    else:
        lines.append("When you speak next, apologise briefly for the interruption, then continue.")
    return "\n".join(lines)


def _is_say(create: Mapping[str, Any]) -> bool:
    response = create.get("response")
    return isinstance(response, dict) and "instructions" in response


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


@dataclass
class _AudioItem:
    item_id: str
    response_id: str
    ms: float = 0.0
    first_at: float = 0.0
    last_at: float = 0.0
    interrupted: bool = False
    truncated: bool = False


class OpenAIRealtimeEngine:
    """One OpenAI Realtime session per call. 24 kHz PCM in and out; the bridge resamples."""

    name = "openai"
    input_rate = SAMPLE_RATE
    output_rate = SAMPLE_RATE

    def __init__(
        self,
        api_key: str,
        *,
        model: str = DEFAULT_MODEL,
        url: str = DEFAULT_URL,
        voice: str | None = None,
        vad: VadType = "server_vad",
        turn_detection: Mapping[str, Any] | None = None,
        transcription_model: str | None = DEFAULT_TRANSCRIPTION_MODEL,
        reconnect: ReconnectPolicy | None = None,
        ssl_context: ssl.SSLContext | None = None,
        max_queued_events: int = 1024,
    ) -> None:
        if not api_key:
            raise ValueError("an OpenAI API key is required")
        self._api_key = api_key
        self.model = model
        self._url = f"{url}{'&' if '?' in url else '?'}{urlencode({'model': model})}"
        self._voice = voice
        self._turn_detection = (
            dict(turn_detection) if turn_detection is not None else default_turn_detection(vad)
        )
        self._transcription_model = transcription_model
        self.policy = reconnect or ReconnectPolicy()
        self._ssl = ssl_context
        self._events: asyncio.Queue[EngineEvent | None] = asyncio.Queue(max_queued_events)
        self._ctx: SessionContext | None = None
        self._ws: ClientConnection | None = None
        self._recv_task: asyncio.Task[None] | None = None
        self._closing = False
        self._finished = False
        self._connected_at = 0.0
        self._streak = 0
        self._event_seq = 0
        # per-connection state
        self._session_call_ids: set[str] = set()
        self._active_response: str | None = None  # a response id, or "" while our create is unanswered
        self._last_create: tuple[str, dict[str, Any]] | None = None  # (event_id, payload) of our last create
        self._pending_create: dict[str, Any] | None = None
        self._awaiting_say_created = False
        self._say_response_id: str | None = None
        self._audio: _AudioItem | None = None
        self._interrupted: _AudioItem | None = None
        self._muted_responses: set[str] = set()
        self._response_had_audio: set[str] = set()
        # across connections
        self._answers: dict[str, AnswerValue] = {}
        self._next_question: str | None = None
        self._pending_calls: set[str] = set()
        self._batch_wrap_up = False
        self._say_in_flight: str | None = None
        self._audio_in_bytes = 0
        self.audio_dropped_ms = 0.0
        self.reconnects = 0
        self.session_config: dict[str, Any] = {}  # as the server last confirmed it (session.updated)
        self.server_errors: deque[dict[str, Any]] = deque(maxlen=50)

    # -- Engine interface ------------------------------------------------------------------------

    async def start(self, ctx: SessionContext) -> None:
        if self._ctx is not None:
            raise RuntimeError("start() called twice")
        self._ctx = ctx
        for answer in ctx.answers:
            self._answers[answer.question_id] = answer.value
        attempt = 0
        while True:
            try:
                await self._open(resume=False)
                break
            except OpenAIRealtimeError as exc:
                attempt += 1
                if not exc.retryable or attempt > self.policy.max_attempts:
                    raise
                logger.warning(
                    "openai realtime connect failed, retrying",
                    extra={"session_id": ctx.session_id, "reason": exc.reason, "attempt": attempt},
                )
                await asyncio.sleep(self.policy.delay(attempt))
        self._recv_task = asyncio.create_task(
            self._receive_loop(), name=f"openai-realtime-recv-{ctx.session_id}"
        )

    async def send_audio(self, pcm: bytes) -> None:
        if not pcm:
            return
        ws = self._ws
        if ws is None:
            # Reconnecting: the lead's words in this gap are lost; the resume note covers context.
            self.audio_dropped_ms += len(pcm) / _BYTES_PER_MS
            return
        self._audio_in_bytes += len(pcm)
        await self._send(
            {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode("ascii")}
        )

    async def say(self, text: str) -> None:
        self._say_in_flight = text
        create = {"type": "response.create", "response": {"instructions": SAY_TEMPLATE.format(text=text)}}
        if self._active_response and self._active_response in self._response_had_audio:
            # Speak this line next, not after whatever the model is saying now. A reply that is
            # only finishing a tool call is left to end by itself.
            await self._send({"type": "response.cancel"})
        await self._request_response(create, replace=True)

    async def send_tool_result(self, call: ToolCall, result: dict[str, Any]) -> None:
        status = result.get("status")
        if call.name == "record_answer" and status != "error":
            qid = call.args.get("question_id")
            if isinstance(qid, str):
                value = result.get("value", call.args.get("value"))
                self._answers[qid] = value if isinstance(value, bool | int | float | str) else None
        if status == "continue" and isinstance(result.get("next_question"), str):
            self._next_question = str(result["next_question"])
        output = json.dumps(result, default=str)
        if call.call_id in self._session_call_ids:
            item: dict[str, Any] = {"type": "function_call_output", "call_id": call.call_id, "output": output}
        else:
            # The call was made on a connection that dropped; the new session never saw it.
            text = f"Result of your earlier {call.name} call: {output}"
            item = {"type": "message", "role": "system", "content": [{"type": "input_text", "text": text}]}
        await self._send({"type": "conversation.item.create", "item": item})
        self._pending_calls.discard(call.call_id)
        if status == "wrap_up":
            # The bridge says the exact closing or handoff line next; the model must stay quiet.
            self._batch_wrap_up = True
        if self._pending_calls:
            return  # answer every call of this reply before the model speaks again
        wrap_up, self._batch_wrap_up = self._batch_wrap_up, False
        if not wrap_up:
            await self._request_response({"type": "response.create"}, replace=False)

    async def truncate(self, played_ms: int) -> None:
        target = self._interrupted or self._audio
        if target is None or target.truncated:
            return
        target.truncated = True
        self._interrupted = None
        end_ms = max(0, min(int(played_ms), int(target.ms)))
        await self._send(
            {
                "type": "conversation.item.truncate",
                "item_id": target.item_id,
                "content_index": 0,
                "audio_end_ms": end_ms,
            }
        )

    async def events(self) -> AsyncIterator[EngineEvent]:
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), timeout=2.0)
        task = self._recv_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._finish()

    # -- connection ------------------------------------------------------------------------------

    async def _open(self, *, resume: bool) -> None:
        """Connect, wait for session.created, configure the session. Raises OpenAIRealtimeError."""
        ctx = self._require_ctx()
        try:
            ws = await asyncio.wait_for(self._connect(), timeout=self.policy.open_timeout_s)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise OpenAIRealtimeError(
                f"openai realtime handshake refused: HTTP {status}",
                retryable=status not in FATAL_HTTP_STATUSES,
                status=status,
            ) from exc
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise OpenAIRealtimeError(
                f"openai realtime connect failed: {type(exc).__name__}", retryable=True
            ) from exc
        try:
            first = await asyncio.wait_for(ws.recv(), timeout=self.policy.open_timeout_s)
            event = json.loads(first)
        except asyncio.CancelledError:
            ws.transport.abort()  # close() cancelled us mid-open: leave no socket behind
            raise
        except (ConnectionClosed, TimeoutError, ValueError) as exc:
            await ws.close()
            raise OpenAIRealtimeError(
                f"openai realtime: no session.created ({type(exc).__name__})", retryable=True
            ) from exc
        if not isinstance(event, dict) or event.get("type") != "session.created":
            await ws.close()
            error = event.get("error") if isinstance(event, dict) else None
            error = error if isinstance(error, dict) else {}
            code = error.get("code")
            self._log_server_error(error)
            raise OpenAIRealtimeError(
                f"openai realtime refused the session: {code or error.get('type') or 'unexpected first event'}",
                retryable=code not in FATAL_ERROR_CODES,
                code=code if isinstance(code, str) else None,
            )
        self._reset_connection_state()
        self._ws = ws
        self._connected_at = time.monotonic()
        instructions = (
            resume_instructions(ctx.instructions, self._answers, self._next_question) if resume else None
        )
        voice = pick_voice(self._voice, ctx.campaign.agent.voice)
        config = session_config(
            ctx,
            model=self.model,
            voice=voice,
            turn_detection=self._turn_detection,
            transcription_model=self._transcription_model,
            instructions=instructions,
        )
        await self._send({"type": "session.update", "session": config})
        logger.info(
            "openai realtime session open",
            extra={"session_id": ctx.session_id, "model": self.model, "resumed": resume},
        )

    async def _connect(self) -> ClientConnection:
        kwargs: dict[str, Any] = {}
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        if _is_loopback(self._url):
            kwargs["proxy"] = None
        return await connect(
            self._url,
            additional_headers={"Authorization": f"Bearer {self._api_key}"},
            compression=None,  # audio is incompressible; deflate only costs CPU
            max_size=2**24,
            open_timeout=self.policy.open_timeout_s,
            close_timeout=2.0,
            **kwargs,
        )

    def _reset_connection_state(self) -> None:
        self._session_call_ids = set()
        self._active_response = None
        self._last_create = None
        self._pending_create = None
        self._awaiting_say_created = False
        self._say_response_id = None
        self._audio = None
        self._interrupted = None
        self._muted_responses = set()
        self._response_had_audio = set()

    async def _receive_loop(self) -> None:
        ctx = self._require_ctx()
        try:
            while not self._finished:
                ws = self._ws
                if ws is None:
                    break
                try:
                    async for raw in ws:
                        await self._handle_raw(raw)
                        if self._finished:
                            return
                    code = ws.close_code
                except ConnectionClosed as exc:
                    code = exc.rcvd.code if exc.rcvd is not None else None
                if self._closing or self._finished:
                    return
                self._ws = None
                logger.warning(
                    "openai realtime connection dropped", extra={"session_id": ctx.session_id, "code": code}
                )
                if not await self._reconnect():
                    return
        finally:
            self._finish()

    async def _reconnect(self) -> bool:
        """Reconnect per policy; emit EngineFailed and return False when that is not possible."""
        ctx = self._require_ctx()
        if time.monotonic() - self._connected_at >= self.policy.stable_after_s:
            self._streak = 0
        reason = "connection dropped"
        while self._streak < self.policy.max_attempts:
            self._streak += 1
            await asyncio.sleep(self.policy.delay(self._streak))
            if self._closing:
                return False
            try:
                await self._open(resume=True)
            except OpenAIRealtimeError as exc:
                reason = exc.reason
                logger.warning(
                    "openai realtime reconnect failed",
                    extra={"session_id": ctx.session_id, "attempt": self._streak, "reason": exc.reason},
                )
                if not exc.retryable:
                    break
                continue
            self.reconnects += 1
            await self._after_resume()
            return True
        await self._fail(f"openai realtime session lost: {reason}")
        return False

    async def _after_resume(self) -> None:
        if self._say_in_flight is not None:
            await self.say(self._say_in_flight)  # a closing or handoff line must be heard whole
        elif not self._pending_calls:
            # No tool result is on its way to trigger the next turn: let the model pick up now.
            await self._request_response({"type": "response.create"}, replace=False)

    async def _fail(self, reason: str) -> None:
        ctx = self._ctx
        logger.error(
            "openai realtime engine failed",
            extra={"session_id": ctx.session_id if ctx else None, "reason": reason},
        )
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), timeout=2.0)
        if not self._finished:
            await self._events.put(EngineFailed(reason))
        self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        with contextlib.suppress(asyncio.QueueFull):
            self._events.put_nowait(None)
        if self._events.full():
            # The consumer is far behind; make room so that it still sees the end of the stream.
            with contextlib.suppress(asyncio.QueueEmpty):
                self._events.get_nowait()
            self._events.put_nowait(None)

    # -- sending ---------------------------------------------------------------------------------

    def _next_event_id(self) -> str:
        self._event_seq += 1
        return f"evt_lq_{self._event_seq}"

    async def _send(self, event: dict[str, Any]) -> bool:
        ws = self._ws
        if ws is None:
            return False
        try:
            await ws.send(json.dumps(event))
        except ConnectionClosed:
            return False  # the receive loop sees the close and reconnects
        return True

    async def _request_response(self, create: dict[str, Any], *, replace: bool) -> None:
        """Send response.create now, or after the active response is done (one at a time)."""
        if self._active_response is not None:
            if replace or self._pending_create is None:
                self._pending_create = create
            return
        event_id = self._next_event_id()
        self._active_response = ""
        self._last_create = (event_id, create)
        if _is_say(create):
            self._awaiting_say_created = True
        if not await self._send({**create, "event_id": event_id}):
            self._active_response = None

    async def _response_finished(self) -> None:
        self._active_response = None
        pending, self._pending_create = self._pending_create, None
        if pending is not None:
            await self._request_response(pending, replace=True)

    # -- receiving -------------------------------------------------------------------------------

    async def _emit(self, event: EngineEvent) -> None:
        await self._events.put(event)

    async def _handle_raw(self, raw: str | bytes) -> None:
        try:
            event = json.loads(raw)
        except ValueError:
            logger.warning("openai realtime sent a frame that is not JSON")
            return
        if isinstance(event, dict) and isinstance(event.get("type"), str):
            await self._handle(event)

    async def _handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "input_audio_buffer.speech_started":
            await self._on_speech_started()
        elif kind == "response.output_audio.delta":
            await self._on_audio_delta(event)
        elif kind == "response.created":
            response = event.get("response") or {}
            self._active_response = str(response.get("id") or "")
            if self._awaiting_say_created:
                self._awaiting_say_created = False
                self._say_response_id = self._active_response
        elif kind == "response.output_audio_transcript.done":
            transcript = event.get("transcript")
            if isinstance(transcript, str) and transcript:
                await self._emit(TranscriptOut(transcript))
        elif kind == "conversation.item.input_audio_transcription.completed":
            transcript = event.get("transcript")
            if isinstance(transcript, str) and transcript.strip():
                await self._emit(TranscriptIn(transcript.strip(), final=True))
        elif kind == "response.output_item.done":
            item = event.get("item") or {}
            if isinstance(item, dict) and item.get("type") == "function_call":
                await self._on_function_call(item)
        elif kind == "response.done":
            await self._on_response_done(event.get("response") or {})
        elif kind == "error":
            await self._on_error(event.get("error") or {})
        elif kind == "session.updated":
            session = event.get("session")
            if isinstance(session, dict):
                self.session_config = session

    async def _on_speech_started(self) -> None:
        audio = self._audio
        if audio is None or audio.interrupted or audio.truncated:
            return
        still_heard = time.monotonic() < audio.first_at + audio.ms / 1000 + PLAYBACK_SLACK_S
        if self._active_response != audio.response_id and not still_heard:
            return  # the lead is answering after the agent finished: not a barge-in
        audio.interrupted = True
        self._interrupted = audio
        self._muted_responses.add(audio.response_id)
        await self._emit(Interrupted())
        if (
            not self._turn_detection.get("interrupt_response", True)
            and self._active_response == audio.response_id
        ):
            await self._send({"type": "response.cancel"})

    async def _on_audio_delta(self, event: dict[str, Any]) -> None:
        response_id = str(event.get("response_id") or "")
        item_id = str(event.get("item_id") or "")
        if response_id in self._muted_responses:
            return
        try:
            pcm = base64.b64decode(str(event.get("delta") or ""), validate=True)
        except (binascii.Error, ValueError):
            logger.warning("openai realtime sent audio that is not base64")
            return
        if not pcm:
            return
        now = time.monotonic()
        audio = self._audio
        if audio is None or audio.item_id != item_id:
            audio = self._audio = _AudioItem(item_id=item_id, response_id=response_id, first_at=now)
        audio.ms += len(pcm) / _BYTES_PER_MS
        audio.last_at = now
        self._response_had_audio.add(response_id)
        await self._emit(AudioOut(pcm))

    async def _on_function_call(self, item: dict[str, Any]) -> None:
        if item.get("status") == "incomplete":
            return  # cut off by a barge-in or cancel: the model will ask again
        call_id = str(item.get("call_id") or "")
        name = str(item.get("name") or "")
        try:
            args = json.loads(str(item.get("arguments") or "{}"))
        except ValueError:
            args = None
        self._session_call_ids.add(call_id)
        if not isinstance(args, dict):
            error = {"status": "error", "error": "arguments were not a JSON object; call the function again"}
            await self._send(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "function_call_output", "call_id": call_id, "output": json.dumps(error)},
                }
            )
            if not self._pending_calls:
                await self._request_response({"type": "response.create"}, replace=False)
            return
        self._pending_calls.add(call_id)
        await self._emit(ToolCall(call_id=call_id, name=name, args=args))

    async def _on_response_done(self, response: dict[str, Any]) -> None:
        response_id = str(response.get("id") or "")
        status = response.get("status")
        if status == "failed":
            details = response.get("status_details") or {}
            error = details.get("error") if isinstance(details, dict) else None
            self._log_server_error(error if isinstance(error, dict) else {"type": "response_failed"})
        if response_id and response_id == self._say_response_id:
            self._say_in_flight = None  # spoken (or talked over, which the bridge handles)
            self._say_response_id = None
        usage = response.get("usage")
        if isinstance(usage, dict):
            audio_out_ms = self._audio.ms if self._audio and self._audio.response_id == response_id else 0.0
            await self._emit(
                Usage(
                    input_tokens=int(usage.get("input_tokens") or 0),
                    output_tokens=int(usage.get("output_tokens") or 0),
                    audio_seconds_in=self._audio_in_bytes / (SAMPLE_RATE * 2),
                    audio_seconds_out=audio_out_ms / 1000,
                    detail={
                        "response_id": response_id,
                        "status": status,
                        "input_token_details": usage.get("input_token_details") or {},
                        "output_token_details": usage.get("output_token_details") or {},
                    },
                )
            )
            self._audio_in_bytes = 0
        if response_id in self._response_had_audio:
            self._response_had_audio.discard(response_id)
            await self._emit(TurnComplete())
        self._muted_responses.discard(response_id)
        await self._response_finished()

    async def _on_error(self, error: dict[str, Any]) -> None:
        code = error.get("code")
        self._log_server_error(error)
        if code in FATAL_ERROR_CODES:
            await self._fail(f"openai realtime error: {code}")
            return
        last = self._last_create
        if last is not None and error.get("event_id") == last[0]:
            # Our response.create was refused. If another reply (a VAD turn) got in first, go
            # again after it; any other refusal is final for that request.
            self._last_create = None
            if _is_say(last[1]):
                self._awaiting_say_created = False
            if self._active_response == "":
                self._active_response = None
            if code == "conversation_already_has_active_response":
                await self._request_response(last[1], replace=_is_say(last[1]))

    def _log_server_error(self, error: Mapping[str, Any]) -> None:
        record = {k: error.get(k) for k in ("type", "code", "message", "param", "event_id")}
        self.server_errors.append(record)
        ctx = self._ctx
        level = logging.DEBUG if record["code"] in _BENIGN_ERROR_CODES else logging.WARNING
        fields = {f"error_{k}": v for k, v in record.items()}  # LogRecord reserves `message`
        logger.log(
            level,
            "openai realtime error event",
            extra={"session_id": ctx.session_id if ctx else None, **fields},
        )

    def _require_ctx(self) -> SessionContext:
        if self._ctx is None:
            raise RuntimeError("start() has not been called")
        return self._ctx
