"""One call: load the lead and campaign, open the engine, greet, relay audio, act on tools, end.

Three named tasks per call (DESIGN §6.9), all owned by `Conversation.run`:
- receive (`bridge-recv-<session>`): socket → engine. Cleans each frame, takes the lead's channel,
  resamples where the rates differ, notes when the lead speaks, feeds the engine.
- send (`bridge-send-<session>`): engine → socket. Resamples and frames agent audio, sends it
  unpaced, tracks what has been heard (PlayoutClock), sends killAudio on barge-in and drops the rest
  of the interrupted reply, runs tool calls (answers saved to the store as they are given).
- control (`bridge-control-<session>`): the decisions. Waits for an ending (hot, cold, end_call,
  model failure) or a limit (max call length, silence), speaks the last line through the engine,
  waits until the lead has heard it, then hangs up, transfers or falls silent.
`run` waits FIRST_COMPLETED on the three, cancels and awaits the rest, records the outcome and
writes one metrics line. No task outlives the call.

The call's transcript (`CallTranscript`: both sides, in order, bounded) is written to the call
record when the call is decided, before the hang-up or transfer, and again when it ends. It is
PII: it goes to the store only, never to a log or a metric (DESIGN §6.12).

Ending a call is never "just close the socket": with the `dial_after_stream` strategy a closed
socket lets the voice document's `<Dial>` run, i.e. transfers to a rep. Closing is the hot path's
transfer; every other ending hangs up through the REST API first.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from difflib import SequenceMatcher
from enum import StrEnum
from typing import Any, Literal

from websockets.exceptions import ConnectionClosed

from bridge.audio import (
    Framer,
    PlayoutClock,
    StreamResampler,
    deinterleave,
    frame_bytes,
    make_resampler,
    peak,
)
from bridge.engines.base import (
    AudioOut,
    Engine,
    EngineFailed,
    Interrupted,
    SessionContext,
    ToolCall,
    TranscriptIn,
    TranscriptOut,
    TurnComplete,
    Usage,
)
from bridge.metrics import CallMetrics, Writer
from bridge.ports import (
    BridgeConfig,
    CampaignSource,
    Carrier,
    EngineFactory,
    MediaSocket,
    Normaliser,
    Notifier,
    Scorer,
    Store,
    SupportsUpdateSupervision,
)
from bridge.prompt import NUDGE_LINE, build_instructions, opening_line
from bridge.protocol import KILL_AUDIO, FrameGuard
from bridge.tools import (
    END_CALL,
    RECORD_ANSWER,
    AnswerBook,
    Decision,
    DecisionKind,
    ToolResult,
    error,
    tool_specs,
)
from bridge.transfer import briefing, pick_rep, transfer_key, transfer_summary
from leadqual.campaign import Campaign, FallbackAction, TransferStrategy, VoicemailPolicy
from leadqual.errors import SautikitError
from leadqual.models import (
    TRANSCRIPT_MAX_ENTRIES,
    TRANSCRIPT_MAX_TEXT,
    Answer,
    CallState,
    EndReason,
    Lead,
    Outcome,
    Score,
    TranscriptEntry,
)

log = logging.getLogger("bridge")

SPEECH_PEAK = 1200  # peak sample above which an inbound frame counts as the lead speaking
DROP_GAP_S = 0.5  # after a barge-in, agent audio arriving within this gap is the interrupted reply
RELAY_LATE_S = 0.020
# A voicemail box records only after its greeting and beep: a message starts once the line has been
# quiet this long (the beep is sound too), or after the longest greeting we wait out.
VOICEMAIL_QUIET_S = 1.0
VOICEMAIL_WAIT_MAX_S = 20.0
LINE_TIMEOUT_MIN_S = 8.0  # how long a closing line may take to be generated before we act anyway
BARGE_PATCH_LIMIT_S = 5.0  # how long a 409 (a conflicting change in flight) may hold up the switch to barge
# A supervisor status that means the rep will not join (anything but ringing, active or unknown).
SUPERVISOR_GONE = {"ended", "failed", "no_answer", "busy", "canceled", "gone"}
_NOT_JOINED = {
    "timeout": "the rep did not answer",
    "no_answer": "the rep did not answer",
    "busy": "the rep was busy",
    "failed": "the rep could not be reached",
}

Synthesiser = Callable[[str, int, str], bytes | None]

_WORD = re.compile(r"[\w']+")
SAME_LINE_RATIO = 0.6  # an engine's transcript of a line the bridge gave it, allowing for its ASR
CUT_SHARE = 0.8  # an engine's transcript this much shorter than the line, and its start: cut off
PENDING_LINES = 4  # the bridge's lines still waiting for the engine's transcript of them


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _similar(a: list[str], b: list[str], ratio: float) -> bool:
    return SequenceMatcher(None, a, b, autojunk=False).ratio() >= ratio


class CallTranscript:
    """What was said on one call, both sides, in order of `t` (seconds since the stream opened).

    The lead's words come from final `TranscriptIn`s; the agent's from `TranscriptOut`s and from
    the lines the bridge makes it say. Those lines come back as `TranscriptOut` too (an engine
    transcribes its own speech): one that matches a line still pending is that line, not a new
    entry; the line keeps the bridge's exact words unless the engine's covers only its start
    (cut off by the lead), and moves to when the lead began hearing it. Bounded: the latest
    `max_entries`, texts cut at `max_text` characters."""

    def __init__(
        self, max_entries: int = TRANSCRIPT_MAX_ENTRIES, max_text: int = TRANSCRIPT_MAX_TEXT
    ) -> None:
        self._max_entries = max_entries
        self._max_text = max_text
        self._entries: list[TranscriptEntry] = []
        self._pending: list[tuple[TranscriptEntry, list[str]]] = []
        self.version = 0  # bumped on every change: a write with nothing new is skipped

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[TranscriptEntry]:
        """A copy, safe to hand to another thread."""
        return [{"t": e["t"], "who": e["who"], "text": e["text"]} for e in self._entries]

    def lead(self, t: float, text: str) -> None:
        self._add(t, "lead", text)

    def said(self, t: float, line: str) -> None:
        """A line the bridge asked the engine (or the local voice) to say."""
        entry = self._add(t, "agent", line)
        if entry is not None:
            self._pending.append((entry, _words(entry["text"])))
            del self._pending[:-PENDING_LINES]

    def agent(self, t: float, text: str) -> None:
        """The engine's transcript of what the agent said; `t` when the lead began hearing it."""
        words = _words(text)
        if not words:
            return
        for i, (entry, line) in enumerate(self._pending):
            cut = 3 <= len(words) <= CUT_SHARE * len(line) and _similar(words, line[: len(words)], 0.8)
            if not (cut or _similar(words, line, SAME_LINE_RATIO)):
                continue
            del self._pending[: i + 1]  # the engine speaks in order: earlier lines will not come back
            at = next((n for n, e in enumerate(self._entries) if e is entry), None)
            if at is None:
                return  # already dropped by the bound
            del self._entries[at]
            if cut:
                entry["text"] = text.strip()[: self._max_text]
            entry["t"] = max(entry["t"], round(t, 2))
            self._insert(entry)
            return
        self._add(t, "agent", text)

    def _add(self, t: float, who: Literal["agent", "lead"], text: str) -> TranscriptEntry | None:
        text = text.strip()[: self._max_text]
        if not text:
            return None
        entry: TranscriptEntry = {"t": round(max(t, 0.0), 2), "who": who, "text": text}
        self._insert(entry)
        if len(self._entries) > self._max_entries:
            del self._entries[: len(self._entries) - self._max_entries]
        return entry

    def _insert(self, entry: TranscriptEntry) -> None:
        # Transcripts arrive late (an engine sends the agent's at the end of its turn): keep `t` order.
        at = bisect.bisect_right(self._entries, entry["t"], key=lambda e: e["t"])
        self._entries.insert(at, entry)
        self.version += 1


@dataclass(frozen=True)
class CallIdentity:
    """The authenticated call and its stream format."""

    session_id: str
    call_id: str | None = None
    in_rate: int = 16000  # what Sautikit sends (outputSamplingRate)
    out_rate: int = 16000  # what we send back (bidirectionalSamplingRate)
    channels: int = 1


@dataclass
class Services:
    """What every conversation shares; built once by the server."""

    config: BridgeConfig
    engine_factory: EngineFactory
    store: Store
    carrier: Carrier
    notifier: Notifier
    campaigns: CampaignSource
    normalise: Normaliser
    score: Scorer
    write_metrics: Writer
    synthesise: Synthesiser | None = None


class EndKind(StrEnum):
    HOT = "hot"
    COLD = "cold"
    END_CALL = "end_call"
    TIME_LIMIT = "time_limit"
    SILENCE = "silence"
    FAILURE = "failure"


Action = Literal["hangup", "transfer"]


@dataclass(frozen=True)
class Ending:
    kind: EndKind
    outcome: Outcome
    reason: str
    action: Action
    line: str | None = None
    score: Score | None = None
    end_reason: EndReason | None = None


@dataclass
class _Result:
    outcome: Outcome | None = None
    reason: str = ""
    transferred_to: str | None = None
    hung_up: bool = False
    silent: bool = False  # handed over to a supervising rep; the socket stays until the carrier closes
    state: CallState | None = None


class Conversation:
    """Runs one authenticated media stream to its end. Create, then `await run()`."""

    def __init__(
        self,
        ws: MediaSocket,
        identity: CallIdentity,
        services: Services,
        *,
        opened_at: float | None = None,
    ) -> None:
        self._ws = ws
        self.identity = identity
        self._svc = services
        self._cfg = services.config
        self._loop = asyncio.get_running_loop()
        self.opened_at = self._loop.time() if opened_at is None else opened_at
        sid = identity.session_id
        self.session_id = sid
        self.metrics = CallMetrics(session_id=sid)

        # Filled by setup.
        self.lead: Lead | None = None
        self.attempt = 0
        self.campaign: Campaign | None = None
        self.book: AnswerBook | None = None
        self._engine: Engine | None = None
        self._engine_dead = False

        # Audio, both directions; streams created once per call.
        self._guard = FrameGuard(identity.channels, services.config.max_frame_bytes)
        self._in_rs: StreamResampler | None = None  # set once the engine's rates are known
        self._out_rs: StreamResampler | None = None
        self._framer = Framer(frame_bytes(identity.out_rate))
        self.clock = PlayoutClock(identity.out_rate)
        self._in_turn = False
        self._dropping = False
        self._drop_last = 0.0
        self._audio_seq = 0  # agent audio chunks forwarded
        self._turn_end_seq = 0
        self._turn_done = asyncio.Event()
        self._last_audio_at = 0.0
        self._silent = False
        self._deaf = False  # handing over to a rep: nothing from the call reaches the engine
        self._awaiting_beep = False  # deaf, but still timing the voicemail greeting's end

        # The lead's speech, for silence and model latency.
        self._last_speech = self.opened_at
        self._speech_end = 0.0
        self._lead_spoke = False
        self._nudged = False

        # What was said; the heard start of the agent's latest turn stamps its transcript.
        self.transcript = CallTranscript()
        self._saved_transcript = 0  # the transcript version last written to the call record
        self._turn_heard_at: float | None = None

        # Decisions.
        self._decisions: asyncio.Queue[Ending] = asyncio.Queue(maxsize=4)
        self._decided = False
        self.ending: Ending | None = None
        self.result = _Result()
        self._aborting = False
        self._tearing_down = False
        self._main: asyncio.Task[None] | None = None
        self._recv_task: asyncio.Task[None] | None = None
        self._send_task: asyncio.Task[None] | None = None
        self._control_task: asyncio.Task[None] | None = None
        self._side: set[asyncio.Task[None]] = set()
        self._reaped: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        self._main = asyncio.current_task()
        self._recv_task = asyncio.create_task(self._receive(), name=f"bridge-recv-{self.session_id}")
        try:
            if await self._setup():
                await self._converse()
        except asyncio.CancelledError:
            if not self._aborting:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await self._cancel_tasks()
            await self._shutdown_action()
        finally:
            self._tearing_down = True
            await self._cancel_tasks()
            await self._teardown()

    def abort(self) -> None:
        """End now (the drain deadline passed): skip lines, do the ending's action, record."""
        if self._aborting or self._tearing_down:
            return
        self._aborting = True
        if self._main is not None and not self._main.done():
            self._main.cancel()

    async def _cancel_tasks(self) -> None:
        tasks = [
            t
            for t in (self._recv_task, self._send_task, self._control_task)
            if t is not None and t not in self._reaped
        ]
        for t in tasks:
            if not t.done():
                t.cancel()
        if tasks:
            results = await asyncio.gather(*tasks, return_exceptions=True)
            self._reaped.update(tasks)
            for t, r in zip(tasks, results, strict=True):
                if isinstance(r, Exception):
                    log.error("call task failed", exc_info=r, extra={"task": t.get_name()})

    async def _setup(self) -> bool:
        store, sid = self._svc.store, self.session_id
        found = await asyncio.to_thread(store.get_session, sid)
        if found is None:
            log.warning("unknown session on the media stream", extra={"session_id": sid})
            await self._hangup_unknown()
            return False
        lead_id, attempt = found
        self.attempt = attempt
        profile, answers = await asyncio.gather(
            asyncio.to_thread(store.get_lead, lead_id), asyncio.to_thread(store.get_answers, lead_id)
        )
        if profile is None:
            log.warning("session points at a missing lead", extra={"session_id": sid})
            await self._hangup_unknown()
            return False
        lead = profile.lead
        self.lead = lead
        try:
            campaign = await asyncio.to_thread(self._svc.campaigns.load, lead.campaign)
        except Exception:
            log.exception("campaign failed to load", extra={"session_id": sid})
            await self._hangup_unknown()
            return False
        self.campaign = campaign
        self.book = AnswerBook(campaign, lead, answers, normalise=self._svc.normalise, score=self._svc.score)
        started: dict[str, Any] = {"state": CallState.STREAMING, "session_id": sid}
        if self.identity.call_id and self.identity.call_id != sid:
            started["call_id"] = self.identity.call_id
        self._track(self._save_call_fields(**started))

        ctx = SessionContext(
            session_id=sid,
            campaign=campaign,
            lead=lead,
            instructions=build_instructions(campaign, lead, answers),
            tools=tool_specs(campaign),
            answers=tuple(answers),
        )
        try:
            engine = self._svc.engine_factory()
            self.metrics.engine = engine.name
            self._in_rs = make_resampler(self.identity.in_rate, engine.input_rate)
            self._out_rs = make_resampler(engine.output_rate, self.identity.out_rate)
            self._engine = engine
            await asyncio.wait_for(engine.start(ctx), self._cfg.engine_start_timeout_s)
            self._send_task = asyncio.create_task(self._send(engine), name=f"bridge-send-{sid}")
            opening = opening_line(campaign, lead, answers)
            self._note_said(opening)
            await engine.say(opening)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("engine failed to start", extra={"session_id": sid})
            self._engine_failed(f"start: {type(exc).__name__}: {exc}")
        return True

    async def _converse(self) -> None:
        self._control_task = asyncio.create_task(self._control(), name=f"bridge-control-{self.session_id}")
        assert self._recv_task is not None
        pending: set[asyncio.Task[None]] = {self._recv_task, self._control_task}
        if self._send_task is not None:
            pending.add(self._send_task)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if self._recv_task in done or self._control_task in done:
                break
            # Only the send task ended (the engine is gone): control is handling the failure.

    # ------------------------------------------------------------------ receive: socket -> engine

    async def _receive(self) -> None:
        m = self.metrics
        guard = self._guard
        channels = self.identity.channels
        perf = time.perf_counter
        loop_time = self._loop.time
        try:
            async for msg in self._ws:
                if type(msg) is not bytes:
                    m.text_frames_in += 1  # drachtio events (mark, dtmf...) are not used
                    continue
                t0 = perf()
                data = guard.clean(msg)
                if data is None:
                    continue
                if channels != 1:
                    data = deinterleave(data, channels)
                engine = self._engine
                if engine is None or self._silent or self._engine_dead or self._deaf:
                    m.frames_not_relayed += 1
                    if self._awaiting_beep and peak(data) >= SPEECH_PEAK:
                        self._last_speech = loop_time()
                    continue
                rs = self._in_rs
                if rs is not None:
                    data = rs.process(data)
                if peak(data) >= SPEECH_PEAK:
                    now = loop_time()
                    self._last_speech = now
                    self._speech_end = now
                    self._lead_spoke = True
                    self._nudged = False
                try:
                    await engine.send_audio(data)
                except Exception as exc:
                    self._engine_failed(f"send_audio: {type(exc).__name__}: {exc}")
                    continue
                m.frames_in += 1
                dt = perf() - t0
                if dt > m.relay_max_ms / 1000.0:
                    m.relay_max_ms = dt * 1000.0
                if dt > RELAY_LATE_S:
                    m.relay_late += 1
        except ConnectionClosed:
            pass

    # ------------------------------------------------------------------ send: engine -> socket

    async def _send(self, engine: Engine) -> None:
        try:
            async for ev in engine.events():
                t = type(ev)
                if t is AudioOut:
                    await self._on_audio(ev.pcm)  # type: ignore[union-attr]  # narrowed by the type() test
                elif t is Interrupted:
                    await self._on_interrupted(engine)
                elif t is TurnComplete:
                    await self._on_turn_complete()
                elif t is ToolCall:
                    assert isinstance(ev, ToolCall)
                    await self._on_tool(engine, ev)
                elif t is TranscriptIn:
                    assert isinstance(ev, TranscriptIn)
                    self._last_speech = self._loop.time()
                    self._nudged = False
                    if ev.final:
                        self.transcript.lead(self._last_speech - self.opened_at, ev.text)
                        if self._dropping:
                            self._dropping = False
                elif t is TranscriptOut:
                    assert isinstance(ev, TranscriptOut)
                    self._on_agent_transcript(ev.text)
                elif t is Usage:
                    assert isinstance(ev, Usage)
                    self.metrics.usage(
                        ev.input_tokens,
                        ev.output_tokens,
                        ev.audio_seconds_in,
                        ev.audio_seconds_out,
                        ev.detail,
                    )
                elif t is EngineFailed:
                    assert isinstance(ev, EngineFailed)
                    self._engine_failed(ev.reason)
                    return
            if not self._silent:
                self._engine_failed("the engine's event stream ended")
        except ConnectionClosed:
            return  # the carrier (or our own transfer) closed the stream
        except Exception as exc:
            log.exception("send task failed", extra={"session_id": self.session_id})
            self._engine_failed(f"{type(exc).__name__}: {exc}")

    async def _on_audio(self, pcm: bytes) -> None:
        if self._silent:
            return
        now = self._loop.time()
        if self._dropping:
            if now - self._drop_last < DROP_GAP_S:
                self._drop_last = now
                self.metrics.dropped_audio_chunks += 1
                return
            self._dropping = False
        rs = self._out_rs
        if rs is not None:
            pcm = rs.process(pcm)
        frames = self._framer.push(pcm)
        if frames:
            await self._send_frames(frames, now)
        self._audio_seq += 1
        self._last_audio_at = now

    async def _send_frames(self, frames: list[bytes], now: float) -> None:
        if not self._in_turn:
            self._begin_agent_turn(now)
        send = self._ws.send
        total = 0
        for frame in frames:
            await send(frame)
            total += len(frame)
        self.clock.sent(total, now)
        self.metrics.frames_out += len(frames)

    def _begin_agent_turn(self, now: float) -> None:
        self._in_turn = True
        self.clock.begin_turn(now)
        self._turn_heard_at = self.clock.turn_start
        m = self.metrics
        m.turns += 1
        if m.ttfw_ms is None:
            m.ttfw_ms = (now - self.opened_at) * 1000.0
        if self._lead_spoke:
            m.model_latency_ms.append((now - self._speech_end) * 1000.0)
            self._lead_spoke = False

    def _on_agent_transcript(self, text: str) -> None:
        # Engines send the agent's transcript as its turn ends (or is cut): it belongs to the
        # turn that started last, heard from `_turn_heard_at`.
        heard = self._turn_heard_at
        self._turn_heard_at = None
        at = heard if heard is not None else self._loop.time()
        self.transcript.agent(at - self.opened_at, text)

    def _note_said(self, line: str) -> None:
        self.transcript.said(self._loop.time() - self.opened_at, line)

    async def _on_interrupted(self, engine: Engine) -> None:
        # killAudio first: every frame sent after this point would be heard over the lead.
        await self._ws.send(KILL_AUDIO)
        now = self._loop.time()
        played = self.clock.played_ms(now)
        self.clock.flush(now)
        self.clock.end_turn()
        self._framer.clear()
        if self._out_rs is not None:
            self._out_rs.reset()
        self._in_turn = False
        self._dropping = True
        self._drop_last = now
        self.metrics.interruptions += 1
        self._last_speech = now
        try:
            await engine.truncate(played)
        except Exception as exc:
            log.warning("engine.truncate failed", extra={"session_id": self.session_id, "error": str(exc)})

    async def _on_turn_complete(self) -> None:
        if self._dropping:
            self._dropping = False  # the interrupted reply is over
        elif not self._silent:
            frames: list[bytes] = []
            if self._out_rs is not None:
                frames = self._framer.push(self._out_rs.flush())
            rest = self._framer.flush()
            if rest:
                frames.append(rest)
            if frames:
                await self._send_frames(frames, self._loop.time())
        self._in_turn = False
        self.clock.end_turn()
        self._turn_end_seq = self._audio_seq
        self._turn_done.set()

    async def _on_tool(self, engine: Engine, call: ToolCall) -> None:
        book = self.book
        assert book is not None
        assert self.lead is not None
        self.metrics.tool_calls += 1
        self._last_speech = self._loop.time()  # the lead just answered something
        if call.name == RECORD_ANSWER:
            read = book.read_answer(call.args)
            if isinstance(read, Answer):
                await self._save_answer(read)
                outcome = book.add(read)
            else:
                outcome = read
        elif call.name == END_CALL:
            outcome = book.end_call(call.args)
        else:
            outcome = error(f"unknown tool {call.name!r}")
        if outcome.result.get("status") == "error":
            self.metrics.tool_errors += 1
        decision = outcome.decision
        if self._decided and outcome.result.get("status") != "error":
            outcome = ToolResult({"status": "wrap_up"})
        try:
            await engine.send_tool_result(call, outcome.result)
        except Exception as exc:
            self._engine_failed(f"send_tool_result: {type(exc).__name__}: {exc}")
            return
        if decision is not None:
            self._decide(self._ending_for(decision))

    async def _save_answer(self, answer: Answer) -> None:
        assert self.lead is not None
        try:
            await asyncio.to_thread(self._svc.store.save_answer, self.lead.lead_id, answer)
        except Exception:
            # The call goes on (the answer still counts); the outcome record carries the score.
            log.exception("saving an answer failed", extra={"session_id": self.session_id})

    # ------------------------------------------------------------------ decisions

    def _decide(self, ending: Ending) -> bool:
        if self._decided:
            return False
        self._decided = True
        self._decisions.put_nowait(ending)
        return True

    def _engine_failed(self, reason: str) -> None:
        if self._engine_dead:
            return
        self._engine_dead = True
        self.metrics.engine_failures += 1
        log.warning("engine failed", extra={"session_id": self.session_id, "reason": reason})
        self._turn_done.set()  # wake a control waiting for a line the engine will never speak
        if self._silent or self.campaign is None:
            return
        campaign = self.campaign
        action: Action = "transfer" if campaign.fallback_action is FallbackAction.TRANSFER else "hangup"
        self._decide(
            Ending(
                EndKind.FAILURE,
                Outcome.FAILED,
                f"model failure: {reason}"[:300],
                action,
                line=self._render(campaign.lines.fallback),
                score=self.book.score() if self.book else None,
            )
        )

    def _render(self, text: str) -> str:
        assert self.campaign is not None
        assert self.lead is not None
        return self.campaign.render(text, self.lead)

    def _ending_for(self, decision: Decision) -> Ending:
        campaign = self.campaign
        assert campaign is not None
        lines = campaign.lines
        if decision.kind is DecisionKind.HOT:
            return Ending(
                EndKind.HOT,
                Outcome.HOT_TRANSFERRED,
                decision.detail or "qualified",
                "transfer",
                line=self._render(campaign.transfer.handoff_line),
                score=decision.score,
            )
        if decision.kind is DecisionKind.COLD:
            return Ending(
                EndKind.COLD,
                Outcome.COLD_CLOSED,
                decision.detail or "not qualified",
                "hangup",
                line=self._render(lines.closing),
                score=decision.score,
            )
        reason = decision.reason or EndReason.NOT_INTERESTED
        line: str | None = {
            EndReason.NOT_INTERESTED: lines.closing,
            EndReason.WRONG_PERSON: lines.wrong_person,
            EndReason.CALLBACK_REQUESTED: lines.callback,
            EndReason.OPT_OUT: lines.opt_out,
            EndReason.VOICEMAIL: None,
        }[reason]
        if reason is EndReason.VOICEMAIL and campaign.voicemail.policy is VoicemailPolicy.LEAVE_MESSAGE:
            line = campaign.voicemail.message or None
        return Ending(
            EndKind.END_CALL,
            reason.outcome,
            reason.value,
            "hangup",
            line=self._render(line) if line else None,
            score=decision.score,
            end_reason=reason,
        )

    # ------------------------------------------------------------------ control

    async def _control(self) -> None:
        campaign = self.campaign
        assert campaign is not None
        limits = campaign.limits
        max_deadline = self.opened_at + limits.max_call_seconds
        ending: Ending | None = None
        while ending is None:
            now = self._loop.time()
            quiet_since = max(self._last_speech, self.clock.play_end, self._last_audio_at)
            wake = min(max_deadline, quiet_since + limits.silence_timeout_s)
            try:
                ending = await asyncio.wait_for(self._decisions.get(), max(0.0, wake - now) + 0.001)
            except TimeoutError:
                ending = await self._check_limits(max_deadline)
        self.ending = ending
        await self._finish(ending)

    async def _check_limits(self, max_deadline: float) -> Ending | None:
        campaign = self.campaign
        assert campaign is not None
        now = self._loop.time()
        score = self.book.score() if self.book else None
        if now >= max_deadline:
            self._decided = True
            return Ending(
                EndKind.TIME_LIMIT,
                Outcome.COLD_CLOSED,
                "max call length",
                "hangup",
                self._render(campaign.lines.closing),
                score,
            )
        quiet_since = max(self._last_speech, self.clock.play_end, self._last_audio_at)
        if now - quiet_since < campaign.limits.silence_timeout_s:
            return None
        if not self._nudged and not self._engine_dead and self._engine is not None:
            self._nudged = True
            self.metrics.nudges += 1
            self._last_speech = now  # the nudge starts a fresh silence window
            try:
                self._note_said(NUDGE_LINE)
                await self._engine.say(NUDGE_LINE)
            except Exception as exc:
                self._engine_failed(f"say: {type(exc).__name__}: {exc}")
            return None
        self._decided = True
        return Ending(
            EndKind.SILENCE,
            Outcome.COLD_CLOSED,
            "no response",
            "hangup",
            self._render(campaign.lines.closing),
            score,
        )

    async def _finish(self, ending: Ending) -> None:
        campaign = self.campaign
        lead = self.lead
        assert campaign is not None
        assert lead is not None
        res = self.result
        res.outcome, res.reason = ending.outcome, ending.reason
        if ending.end_reason is EndReason.OPT_OUT:
            # Compliance first: the number is on the do-not-call list before the goodbye is spoken.
            try:
                await asyncio.to_thread(self._svc.store.add_dnc, lead.phone, "opted out on a call")
            except Exception:
                log.exception("adding to the do-not-call list failed", extra={"session_id": self.session_id})
        if ending.kind is EndKind.HOT:
            self._track(self._notify_rep(ending))
        if ending.line:
            if ending.end_reason is EndReason.VOICEMAIL:
                await self._wait_for_the_beep()
            await self._speak(ending.line)
        # Decided: the transcript is on the call record before the call is handed on or hung up.
        await self._save_transcript()
        if ending.action == "hangup":
            await self._hangup()
        else:
            await self._transfer(ending)

    async def _wait_for_the_beep(self) -> None:
        """Hold a voicemail message until the box records: the greeting detected the machine early,
        and whatever is said before the beep is lost. The model hears nothing meanwhile."""
        self._deaf = self._awaiting_beep = True
        loop = self._loop
        deadline = loop.time() + VOICEMAIL_WAIT_MAX_S
        try:
            while (now := loop.time()) < deadline:
                quiet_for = now - max(self._last_speech, self.clock.play_end)
                if quiet_for >= VOICEMAIL_QUIET_S:
                    return
                await asyncio.sleep(min(VOICEMAIL_QUIET_S - quiet_for, deadline - now))
            log.warning(
                "voicemail greeting never ended; leaving the message anyway",
                extra={"session_id": self.session_id},
            )
        finally:
            self._awaiting_beep = False

    async def _speak(self, line: str) -> None:
        """Say a line through the engine (or the local voice when the engine is gone) and return
        once the lead has heard it."""
        self._note_said(line)
        engine = self._engine
        if engine is None or self._engine_dead:
            await self._play_local(line)
            return
        mark = self._audio_seq
        self._turn_done.clear()
        try:
            await engine.say(line)
        except Exception as exc:
            self._engine_failed(f"say: {type(exc).__name__}: {exc}")
            await self._play_local(line)
            return
        deadline = self._loop.time() + max(LINE_TIMEOUT_MIN_S, 0.12 * len(line))
        while not self._engine_dead:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                log.warning("line not finished in time; acting anyway", extra={"session_id": self.session_id})
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._turn_done.wait(), remaining)
            self._turn_done.clear()
            if self._turn_end_seq > mark:
                break
        if self._engine_dead and self._audio_seq == mark:
            await self._play_local(line)
            return
        await self._wait_heard()

    async def _play_local(self, line: str) -> None:
        """The engine cannot speak: play the line from the local voice, if there is one."""
        self._silent = True  # whatever the engine still emits must not mix with this
        synth = self._svc.synthesise
        if synth is None:
            return
        assert self.campaign is not None
        pcm = await asyncio.to_thread(synth, line, self.identity.out_rate, self.campaign.agent.language)
        if not pcm:
            return
        self.clock.end_turn()
        framer = Framer(frame_bytes(self.identity.out_rate))
        frames = framer.push(pcm)
        rest = framer.flush()
        if rest:
            frames.append(rest)
        self._in_turn = False
        with contextlib.suppress(ConnectionClosed):
            await self._send_frames(frames, self._loop.time())
        await self._wait_heard()

    async def _wait_heard(self) -> None:
        """Sleep until everything sent has been played, plus the network/jitter-buffer margin."""
        # Bounded: audio still arriving (an engine that keeps talking) moves play_end each round.
        for _ in range(20):
            remaining = self.clock.remaining(self._loop.time())
            if remaining <= 0:
                break
            await asyncio.sleep(remaining)
        await asyncio.sleep(self._cfg.playout_margin_s)

    async def _carrier(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.wait_for(asyncio.to_thread(fn, *args, **kwargs), self._cfg.carrier_timeout_s)

    async def _hangup(self) -> None:
        for attempt in range(2):
            try:
                await self._carrier(self._svc.carrier.hangup, self.session_id)
            except Exception as exc:
                log.warning(
                    "hangup failed",
                    extra={"session_id": self.session_id, "error": str(exc), "try": attempt + 1},
                )
                await asyncio.sleep(1.0)
                continue
            self.result.hung_up = True
            break
        self._silent = True
        if self.result.hung_up:
            # The carrier closes the socket when the call ends; close it ourselves if it does not.
            await self._wait_socket_closed(self._cfg.hangup_close_grace_s)
            with contextlib.suppress(ConnectionClosed):
                await self._ws.close(1000, "call ended")
            return
        # Closing the socket now could run the voice document's <Dial> (a transfer); wait for the
        # lead to hang up instead, as long as the call may last.
        assert self.campaign is not None
        left = self.opened_at + self.campaign.limits.max_call_seconds + 60 - self._loop.time()
        await self._wait_socket_closed(max(left, 1.0))

    async def _wait_socket_closed(self, limit_s: float) -> None:
        if self._recv_task is not None and not self._recv_task.done():
            await asyncio.wait({self._recv_task}, timeout=limit_s)

    async def _transfer(self, ending: Ending) -> None:
        campaign, lead = self.campaign, self.lead
        assert campaign is not None
        assert lead is not None
        rep = pick_rep(campaign, lead.lead_id)
        if campaign.transfer.strategy is TransferStrategy.DIAL_AFTER_STREAM:
            self._silent = True
            self.result.transferred_to = rep
            self.result.state = CallState.TRANSFERRING
            # The voice document's <Dial> runs when the stream ends.
            with contextlib.suppress(ConnectionClosed):
                await self._ws.close(1000, "transfer")
            return
        carrier = self._svc.carrier
        key = transfer_key(lead.lead_id, self.attempt)
        whisper = (
            campaign.transfer.whisper
            and isinstance(carrier, SupportsUpdateSupervision)
            and not self._engine_dead
            and ending.kind is EndKind.HOT
        )
        # From here the engine hears nobody: neither the rep's first words (whisper lets the agent
        # hear them) nor the lead's "hello?" may cut the summary or draw a reply.
        self._deaf = True
        # Not transferred until the rep is on the line: a call that ends before then is a callback.
        self.result.outcome = Outcome.CALLBACK_REQUESTED if ending.kind is EndKind.HOT else ending.outcome
        self.result.reason = "the call ended before the rep joined"
        try:
            await self._carrier(
                carrier.start_supervision,
                self.session_id,
                mode="whisper" if whisper else "barge",
                number=rep,
                idempotency_key=key,
            )
        except Exception as exc:
            await self._transfer_failed(ending, f"transfer failed: {exc}")
            return
        # Sautikit sends nothing when the rep picks up, and a PATCH succeeds while they still ring:
        # only the supervision's status says they are on the line.
        joined = await self._await_supervisor(carrier, campaign.transfer.ring_timeout_s)
        if joined == "call_ended":
            return  # the lead hung up while the rep rang: the pending callback stands
        if joined != "active":
            await self._stop_supervision()
            reason = _NOT_JOINED.get(joined, f"the rep did not join ({joined})")
            await self._transfer_failed(ending, f"transfer failed: {reason}")
            return
        if whisper:
            assert isinstance(carrier, SupportsUpdateSupervision)
            # The rep is on the line in whisper and hears the summary (the lead hears it too: see
            # bridge.transfer); barge then puts the rep through to the lead.
            await self._speak(transfer_summary(lead, ending.score))
            if not await self._patch_supervision(carrier, "barge", BARGE_PATCH_LIMIT_S):
                # The rep hears the lead but the lead cannot hear the rep: give the call back.
                await self._stop_supervision()
                await self._transfer_failed(ending, "transfer failed: could not switch the rep to barge")
                return
        self.result.outcome, self.result.reason = ending.outcome, ending.reason
        self.result.transferred_to = rep
        self.result.state = CallState.TRANSFERRING
        await self._fall_silent()

    async def _await_supervisor(self, carrier: Carrier, limit_s: float) -> str:
        """Poll the supervision until the rep is on the line (`active`), will not be (a status in
        SUPERVISOR_GONE), `limit_s` passes (`timeout`) or the call ends (`call_ended`)."""
        deadline = self._loop.time() + limit_s
        seen = False
        while True:
            status = await self._supervisor_status(carrier)
            if status == "active":
                return status
            if status in SUPERVISOR_GONE and (seen or status != "gone"):
                # A 404 before any status: the platform may not show a new supervisor at once.
                assert status is not None
                return status
            seen = seen or status not in (None, "gone")
            if self._recv_task is not None and self._recv_task.done():
                return "call_ended"
            left = deadline - self._loop.time()
            if left <= 0:
                return "timeout"
            await asyncio.sleep(min(self._cfg.supervision_poll_s, left))

    async def _supervisor_status(self, carrier: Carrier) -> str | None:
        """The supervision's canonical status; `gone` when the call has none, `unknown` for a word
        the client did not know, None when it could not be read."""
        try:
            sup = await self._carrier(carrier.get_supervision, self.session_id)
        except Exception as exc:
            log.warning(
                "reading the supervision failed", extra={"session_id": self.session_id, "error": str(exc)}
            )
            return None
        if sup is None:
            return "gone"
        status = sup.get("status")
        return status if isinstance(status, str) else "unknown"

    async def _patch_supervision(self, carrier: SupportsUpdateSupervision, mode: str, limit_s: float) -> bool:
        """Switch the supervisor's mode. A 409 is retried, within `limit_s`, only while the rep is
        still on the line: a conflicting change in flight, never a sign of pickup."""
        deadline = self._loop.time() + limit_s
        while True:
            try:
                await self._carrier(carrier.update_supervision, self.session_id, mode=mode)
                return True
            except SautikitError as exc:
                if exc.status != 409 or self._loop.time() >= deadline:
                    log.warning(
                        "supervision update failed",
                        extra={"session_id": self.session_id, "mode": mode, "error": str(exc)},
                    )
                    return False
            except Exception as exc:
                log.warning(
                    "supervision update failed", extra={"session_id": self.session_id, "error": str(exc)}
                )
                return False
            status = await self._supervisor_status(self._svc.carrier)
            if status is not None and status != "active":
                log.warning(
                    "the rep left before the switch",
                    extra={"session_id": self.session_id, "mode": mode, "status": status},
                )
                return False
            await asyncio.sleep(self._cfg.supervision_poll_s)

    async def _stop_supervision(self) -> None:
        stop = getattr(self._svc.carrier, "stop_supervision", None)
        if callable(stop):
            with contextlib.suppress(Exception):
                await self._carrier(stop, self.session_id)

    async def _transfer_failed(self, ending: Ending, reason: str) -> None:
        """No rep: say the campaign's fallback line and hang up; a hot lead is called back."""
        assert self.campaign is not None
        log.warning("transfer failed", extra={"session_id": self.session_id, "reason": reason})
        self.result.outcome = Outcome.CALLBACK_REQUESTED if ending.kind is EndKind.HOT else Outcome.FAILED
        self.result.reason = reason[:300]
        await self._speak(self._render(self.campaign.transfer.fallback_line))
        await self._hangup()

    async def _fall_silent(self) -> None:
        """The rep has the call: stop talking, close the model, keep the socket until it closes."""
        self._silent = True
        self.result.silent = True
        engine = self._engine
        if engine is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(engine.close(), 5.0)
        await self._wait_socket_closed(float("inf"))

    # ------------------------------------------------------------------ side effects and records

    def _track(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro, name=f"bridge-side-{self.session_id}")
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    async def _notify_rep(self, ending: Ending) -> None:
        campaign, lead, book = self.campaign, self.lead, self.book
        assert campaign is not None
        assert lead is not None
        assert book is not None
        message = briefing(
            session_id=self.session_id,
            campaign=campaign,
            lead=lead,
            attempt=self.attempt,
            answers=book.answers.values(),
            score=ending.score,
            rep=pick_rep(campaign, lead.lead_id),
        )
        try:
            await asyncio.to_thread(self._svc.notifier.publish, message)
        except Exception:
            log.exception("rep briefing failed", extra={"session_id": self.session_id})

    async def _save_call_fields(self, **fields: Any) -> bool:
        if self.lead is None:
            return False
        version = self.transcript.version
        try:
            await asyncio.to_thread(self._svc.store.update_call, self.lead.lead_id, self.attempt, **fields)
        except Exception:
            log.exception("updating the call record failed", extra={"session_id": self.session_id})
            return False
        if "transcript" in fields:
            self._saved_transcript = version
        return True

    async def _save_transcript(self) -> None:
        if self.transcript.version != self._saved_transcript:
            await self._save_call_fields(transcript=self.transcript.entries())

    async def _hangup_unknown(self) -> None:
        # Not our call to run, but closing would transfer it: hang up first (best effort).
        with contextlib.suppress(Exception):
            await self._carrier(self._svc.carrier.hangup, self.session_id)
            self.result.hung_up = True

    async def _shutdown_action(self) -> None:
        """The drain deadline passed mid-call: finish the decided ending without its line, or
        apply the campaign's fallback action."""
        res = self.result
        if self.campaign is None or res.hung_up or res.transferred_to or res.silent:
            return
        ending = self.ending
        if ending is None:
            res.outcome, res.reason = Outcome.FAILED, "bridge shutdown"
            transfer = self.campaign.fallback_action is FallbackAction.TRANSFER
        else:
            res.outcome, res.reason = ending.outcome, ending.reason
            transfer = ending.action == "transfer"
            if transfer and self.campaign.transfer.strategy is TransferStrategy.SUPERVISE_BARGE:
                # Hung up below, never handed to a rep (that would have made the call silent).
                res.outcome = Outcome.CALLBACK_REQUESTED if ending.kind is EndKind.HOT else Outcome.FAILED
                res.reason = "bridge shutdown before the rep joined"
        try:
            if transfer and self.campaign.transfer.strategy is TransferStrategy.DIAL_AFTER_STREAM:
                res.transferred_to = pick_rep(
                    self.campaign, self.campaign.id if self.lead is None else self.lead.lead_id
                )
                await self._ws.close(1000, "transfer")
            else:
                await self._carrier(self._svc.carrier.hangup, self.session_id)
                res.hung_up = True
        except Exception:
            log.exception("shutdown action failed", extra={"session_id": self.session_id})

    async def _teardown(self) -> None:
        engine = self._engine
        if engine is not None:
            try:
                await asyncio.wait_for(engine.close(), 5.0)
            except Exception:
                log.warning("engine.close failed", extra={"session_id": self.session_id})
        if self._side:
            await asyncio.wait(set(self._side), timeout=10.0)
        res = self.result
        if self.lead is not None and self.campaign is not None:
            if res.outcome is None:
                # The socket closed before any decision: the lead (or the network) hung up.
                res.outcome, res.reason = Outcome.COLD_CLOSED, "lead hung up"
            score = self.ending.score if self.ending else (self.book.score() if self.book else None)
            await self._record(res, score)
        self._write_metrics()

    async def _record(self, res: _Result, score: Score | None) -> None:
        assert self.lead is not None
        assert res.outcome is not None
        fields: dict[str, Any] = {"outcome": res.outcome, "outcome_reason": res.reason}
        if res.transferred_to:
            fields["transferred_to"] = res.transferred_to
        if res.state is not None:
            fields["state"] = res.state
        if self.metrics.ttfw_ms is not None:
            fields["time_to_first_word_ms"] = round(self.metrics.ttfw_ms, 1)
        try:
            await asyncio.to_thread(
                self._svc.store.set_outcome, self.lead.lead_id, res.outcome, score=score, reason=res.reason
            )
        except Exception:
            log.exception("recording the outcome failed", extra={"session_id": self.session_id})
        if self.transcript.version != self._saved_transcript:
            fields["transcript"] = self.transcript.entries()
        await self._save_call_fields(**fields)

    def _write_metrics(self) -> None:
        res = self.result
        self.metrics.guard = self._guard.counts()
        score = self.ending.score if self.ending else None
        verdict = score.verdict.value if score is not None else None
        extra = {
            "lead_id": self.lead.lead_id if self.lead else None,
            "attempt": self.attempt,
            "campaign": self.campaign.id if self.campaign else None,
            "ending": self.ending.kind.value if self.ending else None,
            "reason": res.reason,
            "duration_s": round(self._loop.time() - self.opened_at, 2),
        }
        try:
            self._svc.write_metrics(
                self.metrics.emf(
                    outcome=res.outcome.value if res.outcome else None,
                    verdict=verdict,
                    transferred=res.transferred_to is not None and res.outcome is Outcome.HOT_TRANSFERRED,
                    extra=extra,
                )
            )
        except Exception:
            log.exception("writing call metrics failed", extra={"session_id": self.session_id})
