"""One simulated call, from `POST /v1/calls` to the last late callback.

Ringing follows the directory; an answered call runs a 20 ms media clock (the lead's mouth, what the
lead hears, the stereo recording, the stream's frames) while a verb runner executes what the app's
webhook answered. Everything observable lands in the call's timeline, its §1 record and, for app
mistakes, its violations.

A rep joins by `<Dial>` (bridged to the lead) or as a supervisor (`POST …/supervision`), whose mode
decides who hears them, frame by frame (REP_HEARD_BY): `listen` nobody, `whisper` the agent only
(the stream's inbound side), `barge` everyone (the lead's ear, so the recording's right channel).
The rep hears both sides in every mode. Supervisor status: ringing → active → ended.

With `transcribe_agent`, each `agent_turn` entry gets the words the lead heard (`text`), transcribed
off the audio loop after the turn closes; the call becomes final once they are in (bounded).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np

from local.sautikit import billing
from local.sautikit.audio import (
    FRAME_S,
    SILENCE,
    Clip,
    StereoWavWriter,
    decode_wav_bytes,
    is_speech,
    mix,
    ringback_cycle,
)
from local.sautikit.directory import DEFAULT_VOICEMAIL_GREETING, Answer, Person, Rep
from local.sautikit.media import OUTPUT_RATES, TRACKS, MediaStream
from local.sautikit.person import SimulatedPerson
from local.sautikit.stt import AgentTranscriber, TranscriptionUnavailable
from local.sautikit.verbs import Document, Verb, parse_document
from local.sautikit.violations import VIOLATIONS
from local.sautikit.webhooks import WebhookResult, add_query, encode, redact_url

if TYPE_CHECKING:
    from local.sautikit.simulator import Simulator

log = logging.getLogger("local.sautikit")

E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_UNSAFE_LABEL = re.compile(r"[\s,{}\[\]\"'`]")
FINAL = {"completed", "failed", "no_answer", "busy", "canceled"}
LIFECYCLE_STATES = {"StreamStarted", "StreamStopped", "DialCompleted", "Completed"}
REP_PICKUP_S = 0.3  # a rep starts talking this long after picking up
# A supervisor the lead cannot hear (listen, whisper) waits this long to be put through (barge),
# then gives up and hangs up their own leg; the call goes on.
SUPERVISOR_PATIENCE_S = 30.0
# Who hears a rep or supervisor, by mode (the agent is the stream): listen = nobody, whisper = the
# agent only, barge (and a <Dial>ed rep) = everyone. The rep hears both sides in every mode.
REP_HEARD_BY = {"listen": (), "whisper": ("agent",), "barge": ("lead", "agent")}
# How long a call that has ended waits for its turns' transcripts before it is final: a backlog on the
# one transcription thread must not hold up the record, the WAV and the timeline indefinitely.
TRANSCRIPT_WAIT_S = 10.0
_COUNTRY = {"+254": "KE", "+255": "TZ", "+256": "UG", "+250": "RW", "+251": "ET", "+234": "NG", "+27": "ZA"}


def iso(dt: datetime | None) -> str | None:
    return (
        None if dt is None else dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def now_utc() -> datetime:
    return datetime.now(UTC)


def label_is_callback_safe(label: str) -> bool:
    """§1: labels with whitespace, commas, braces or quotes are echoed but dropped from callbacks."""
    return not _UNSAFE_LABEL.search(label)


def country_of(e164: str) -> str | None:
    for prefix, cc in _COUNTRY.items():
        if e164.startswith(prefix):
            return cc
    return None


def first_lines(spec: Person) -> list[str]:
    """What a person may have to say first: the voicemail greeting, or hello and the first reply."""
    if spec.answer is Answer.VOICEMAIL:
        return [spec.voicemail_greeting or DEFAULT_VOICEMAIL_GREETING]
    return ([spec.hello] if spec.hello else []) + spec.says[:1]


def new_session_id() -> str:
    return f"HD_{secrets.token_hex(6)}"


@dataclass
class Leg:
    role: str  # lead | rep | supervisor
    number: str
    answered_mono: float | None = None
    ended_mono: float | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    billed_seconds: int = 0
    cost_minor: int = 0

    def answer(self) -> None:
        self.answered_mono, self.answered_at = time.monotonic(), now_utc()

    def end(self, rate_per_minute_minor: int) -> None:
        if self.ended_mono is not None:
            return
        self.ended_mono, self.ended_at = time.monotonic(), now_utc()
        if self.answered_mono is not None:
            self.billed_seconds = billing.billed_seconds(self.ended_mono - self.answered_mono)
            self.cost_minor = billing.leg_cost_minor(self.billed_seconds, rate_per_minute_minor)

    @property
    def live(self) -> bool:
        return self.answered_mono is not None and self.ended_mono is None

    def view(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "number": self.number,
            "answered_at": iso(self.answered_at),
            "ended_at": iso(self.ended_at),
            "billed_seconds": self.billed_seconds,
            "cost_minor": self.cost_minor,
        }


@dataclass
class RingResult:
    outcome: str  # answered | no_answer | busy | failed | canceled
    number: str | None
    after_s: float


class Call:
    def __init__(
        self,
        sim: Simulator,
        *,
        number: dict[str, Any],
        to: list[str],
        label: str | None,
        voice_callback_url: str | None,
        caller_id: str | None,
    ) -> None:
        self.sim = sim
        cfg = sim.config
        self.id = str(uuid.uuid4())
        self.session_id = new_session_id()
        self.number = number
        self.from_e164: str = number["e164"]
        self.to = to
        self.lead_e164 = to[0]
        self.label = label
        self.label_safe = label is not None and label_is_callback_safe(label)
        self.voice_callback_url = voice_callback_url
        self.caller_id = caller_id
        self.rate = cfg.rate_per_minute_minor
        self.created_mono = time.monotonic()
        self.created_at = now_utc()
        self.updated_at = self.created_at
        self.answered_at: datetime | None = None
        self.ended_at: datetime | None = None
        self.status = "ringing"
        self.failure_code: str | None = None
        self.hangup_cause: str | None = None
        self.hangup_by: str | None = None
        self.person_spec: Person | None = sim.directory.person(self.lead_e164)
        self.legs: list[Leg] = []
        self.transfers: list[dict[str, Any]] = []
        self.supervision: dict[str, Any] | None = None
        self.supervision_key: str | None = None
        self.events: list[dict[str, Any]] = []
        self.timeline: list[dict[str, Any]] = []
        self.violations: list[dict[str, Any]] = []
        self.verbs_run: list[dict[str, Any]] = []
        self.streams: list[dict[str, Any]] = []
        self.ended = asyncio.Event()
        self.finalized = asyncio.Event()
        self.wav_path: Path = sim.data_dir / "calls" / f"{self.session_id}.wav"
        self.timeline_path: Path = sim.data_dir / "calls" / f"{self.session_id}.json"
        self.recording_ready_mono: float | None = None
        # media
        self.person: SimulatedPerson | None = None
        self.stream: MediaStream | None = None
        self._wav: StereoWavWriter | None = None
        self._verb_clip: tuple[Clip, asyncio.Future[None]] | None = None
        self._rep_clips: list[Clip] = []  # the connected rep's mouth; who hears it: REP_HEARD_BY
        self._rep_mode: str | None = None  # the connected rep's mode; None while no rep is on the line
        self._rep_changed = asyncio.Event()  # the rep's mode changed or their supervision ended
        self._supervision_cancel: asyncio.Event | None = None  # DELETE while the supervisor rings
        self._ringback: Clip | None = None
        self._stream_count = 0
        self._document_url: str | None = None
        self._digits = list(self.person_spec.digits) if self.person_spec else []
        self._person_hangup_sent = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._transcripts: dict[asyncio.Task[None], dict[str, Any]] = {}  # pending: task → its agent_turn
        self.note("created", to=self.to, label=label, label_in_callbacks=self.label_safe)

    # -- small helpers ---------------------------------------------------------------------------------
    @property
    def duplicate(self) -> bool:
        return self.sim.config.duplicate_callbacks or bool(
            self.person_spec and self.person_spec.duplicate_callbacks
        )

    @property
    def bad_signature(self) -> bool:
        return bool(self.person_spec and self.person_spec.bad_signature)

    @property
    def live(self) -> bool:
        return self.status not in FINAL

    def elapsed(self) -> float:
        return time.monotonic() - self.created_mono

    def note(self, kind: str, ago_s: float = 0.0, **fields: Any) -> dict[str, Any]:
        t = max(0.0, self.elapsed() - ago_s)
        entry = {"t": round(t, 3), "kind": kind, **{k: v for k, v in fields.items() if v is not None}}
        self.timeline.append(entry)
        return entry

    def violation(self, reason: str, detail: str) -> None:
        if reason not in VIOLATIONS:
            self.sim.record_error(f"unregistered violation reason {reason!r}")
        v = {
            "id": str(uuid.uuid4()),
            "at": iso(now_utc()),
            "t": round(self.elapsed(), 3),
            "call_id": self.id,
            "session_id": self.session_id,
            "reason": reason,
            "detail": detail,
        }
        self.violations.append(v)
        self.sim.record_violation(v)
        self.note("violation", reason=reason, detail=detail)

    def record_event(self, kind: str, payload: dict[str, Any] | None = None) -> None:
        self.updated_at = now_utc()
        self.events.append(
            {
                "id": str(uuid.uuid4()),
                "call_id": self.id,
                "kind": kind,
                "payload": payload or {},
                "occurred_at": iso(self.updated_at),
            }
        )

    def spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        return self.sim.spawn(coro, name=f"{name}-{self.session_id}")

    @property
    def lead_leg(self) -> Leg | None:
        return next((leg for leg in self.legs if leg.role == "lead"), None)

    def total_cost(self) -> int:
        return sum(leg.cost_minor for leg in self.legs)

    # -- the §1 record ---------------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        lead = self.lead_leg
        final = not self.live
        transfer = self.transfers[-1] if self.transfers else None
        return {
            "id": self.id,
            "workspace_id": self.sim.config.workspace_id,
            "session_id": self.session_id,
            "direction": "outbound",
            "local_e164": self.from_e164,
            "remote_e164": self.lead_e164,
            "country": country_of(self.lead_e164),
            "started_at": iso(self.created_at),
            "answered_at": iso(self.answered_at),
            "ended_at": iso(self.ended_at),
            "duration_seconds": (lead.billed_seconds if lead else 0) if final else None,
            "billed_seconds": (sum(leg.billed_seconds for leg in self.legs)) if final else None,
            "status": self.status,
            "cost_minor": self.total_cost() if final else None,
            "cost_currency": self.sim.config.currency,
            "rate_per_minute_minor": self.rate,
            "failure_code": self.failure_code,
            "hangup_cause": self.hangup_cause,
            "hangup_by": self.hangup_by,
            "metadata": {"client_request_id": self.label} if self.label is not None else {},
            "legs": [leg.view() for leg in self.legs],
            "transfer": transfer,
            "transfers": list(self.transfers),
            "supervision": self.supervision,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "events": list(self.events),
        }

    def sim_view(self) -> dict[str, Any]:
        return {
            "call": self.record(),
            "from": self.from_e164,
            "to": self.to,
            "client_request_id": self.label,
            "label_in_callbacks": self.label_safe,
            "lead_said": list(self.person.said) if self.person else [],
            "verbs": list(self.verbs_run),
            "streams": list(self.streams),
            "timeline": list(self.timeline),
            "violations": list(self.violations),
            "recording_path": str(self.wav_path) if self._wav is not None else None,
            "timeline_path": str(self.timeline_path),
        }

    # -- callbacks -------------------------------------------------------------------------------------
    def callback_fields(self, state: str, *, active: bool, **extra: Any) -> dict[str, Any]:
        caller, dest = self.from_e164, self.lead_e164
        if self.person_spec and self.person_spec.swap_numbers:
            caller, dest = dest, caller
        lead = self.lead_leg
        duration = 0
        if lead and lead.answered_mono is not None:
            end = lead.ended_mono or time.monotonic()
            duration = int(end - lead.answered_mono)
        fields: dict[str, Any] = {
            "sessionId": self.session_id,
            "callerNumber": caller,
            "destinationNumber": dest,
            "callSessionState": state,
            "direction": "Outbound",
            "isActive": "1" if active else "0",
            "durationInSeconds": str(duration),
        }
        if self.label_safe:
            fields["clientRequestId"] = self.label
        fields.update({k: v for k, v in extra.items() if v is not None})
        return fields

    def voice_url(self) -> str | None:
        url = (
            self.voice_callback_url or self.number.get("routing_url") or self.number.get("voice_callback_url")
        )
        if not url:
            return None
        return add_query(url, clientRequestId=self.label) if self.label_safe and self.label else url

    async def _post_voice(
        self, url: str, state: str, *, purpose: str, active: bool, method: str = "POST", **extra: Any
    ) -> WebhookResult:
        body, ctype = encode(
            self.callback_fields(state, active=active, **extra), self.sim.config.callback_encoding
        )
        result = await self.sim.sender.send(
            url,
            body,
            ctype,
            purpose=purpose,
            violation=self.violation,
            session_id=self.session_id,
            bad_signature=self.bad_signature,
            method=method,
        )
        self.note(
            "webhook",
            purpose=purpose,
            state=state,
            url=redact_url(url),
            status=result.status,
            ms=round(result.elapsed_ms),
            error=result.error,
        )
        return result

    def _document_from(self, result: WebhookResult) -> Document | None:
        if not result.ok:
            return None
        doc = parse_document(result.body, result.content_type)
        for reason, detail in doc.problems:
            self.violation(reason, detail)
        return None if doc.fatal else doc

    async def reinvoke(self, state: str, *, active: bool = True, **extra: Any) -> None:
        """A lifecycle edge: re-POST the voice webhook (the answer must be empty) and forward the body
        to the number's events URL (the switch shape, §3)."""
        url = self.voice_url()
        copies = 2 if self.duplicate else 1
        for copy in range(copies):
            if copy:
                await asyncio.sleep(self.sim.config.duplicate_delay_s)
            if url:
                result = await self._post_voice(url, state, purpose="lifecycle", active=active, **extra)
                if result.ok:
                    self._check_reinvocation_answer(state, result)
        if self.sim.config.event_shapes in ("both", "switch"):
            fields = self.callback_fields(state, active=active, **extra)
            self.spawn(self._deliver_event(f"switch.{state}", fields, switch_shape=True), "switch-event")

    def _check_reinvocation_answer(self, state: str, result: WebhookResult) -> None:
        doc = parse_document(result.body, result.content_type)
        if doc.fatal:
            for reason, detail in doc.problems:
                self.violation(reason, f"answer to {state}: {detail}")
            return
        if any(v.name == "stream" for v in doc.verbs):
            self.violation(
                "second_stream",
                f"a <Stream> in the answer to the {state} re-invocation re-forks the call; ignored",
            )
        elif doc.verbs:
            names = ", ".join(v.name for v in doc.verbs)
            self.violation("reinvocation_not_empty", f"answer to {state} must be empty; got {names}; ignored")

    # -- events (§3) -----------------------------------------------------------------------------------
    def _envelope(self, kind: str) -> dict[str, Any]:
        lead = self.lead_leg
        data: dict[str, Any] = {
            "call_id": self.id,
            "session_id": self.session_id,
            "direction": "outbound",
            "from": self.from_e164,
            "to": self.lead_e164,
            "number_id": self.number["id"],
            "status": self.status,
            "duration_seconds": lead.billed_seconds if (lead and not self.live) else 0,
            "answered_at": iso(self.answered_at),
            "ended_at": iso(self.ended_at),
            "hangup_cause": self.hangup_cause,
        }
        if kind == "call.failed":
            data["failure_reason"] = self.failure_code or self.status
        if not self.live:
            data["cost_minor"] = self.total_cost()
            data["cost_currency"] = self.sim.config.currency
        if self.label_safe:
            data["clientRequestId"] = self.label
        body: dict[str, Any] = {
            "kind": kind,
            "event_id": str(uuid.uuid4()),
            "workspace_id": self.sim.config.workspace_id,
            "occurred_at": iso(now_utc()),
            "data": data,
        }
        if self.label_safe:
            body["clientRequestId"] = self.label
        return body

    def emit(self, kind: str) -> None:
        """A documented event (`call.*`) to the number's events URL, and into the call record."""
        self.record_event(kind, {"status": self.status})
        if self.sim.config.event_shapes in ("both", "envelope"):
            self.spawn(self._deliver_event(kind, self._envelope(kind)), "event")

    async def _deliver_event(self, kind: str, body: dict[str, Any], switch_shape: bool = False) -> None:
        url = self.number.get("events_url")
        if not url:
            return
        event_id = body.get("event_id") or str(uuid.uuid4())
        raw = json.dumps(body, separators=(",", ":")).encode()
        copies = 2 if self.duplicate else 1
        for copy in range(copies):
            if copy:
                await asyncio.sleep(self.sim.config.duplicate_delay_s)
            await self.sim.sender.deliver(
                url,
                raw,
                "application/json",
                purpose="event",
                violation=self.violation,
                session_id=self.session_id,
                event_id=event_id,
                event_kind=kind,
                bad_signature=self.bad_signature,
            )

    async def _stream_status(self, verb: Verb, event: str, **extra: Any) -> None:
        url = verb.get("statusCallback")
        if not isinstance(url, str) or not url:
            return
        wanted = verb.get("statusEvents")
        if isinstance(wanted, str) and wanted.strip():
            if event not in re.split(r"[\s,]+", wanted.strip()):
                return
        elif isinstance(wanted, list) and event not in wanted:
            return
        fields = {
            "sessionId": self.session_id,
            "streamSid": self.stream.stream_sid if self.stream else None,
            "streamName": verb.get("name"),
            "event": event,
            "timestamp": iso(now_utc()),
            **extra,
        }
        if self.label_safe:
            fields["clientRequestId"] = self.label
        body, ctype = encode(
            {k: v for k, v in fields.items() if v is not None}, self.sim.config.callback_encoding
        )
        event_id = str(uuid.uuid4())
        for copy in range(2 if self.duplicate else 1):
            if copy:
                await asyncio.sleep(self.sim.config.duplicate_delay_s)
            await self.sim.sender.deliver(
                url,
                body,
                ctype,
                purpose="stream_status",
                violation=self.violation,
                session_id=self.session_id,
                event_id=event_id,
                event_kind=event,
                bad_signature=self.bad_signature,
            )

    # -- the call's life -------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            self.emit("call.started")
            ring = await self._ring_lead()
            if ring.outcome == "answered":
                await self._answered()
                await self.ended.wait()
            else:
                self._end_unanswered(ring)
        except asyncio.CancelledError:
            if self.live:
                self.hangup("switch", "simulator_stopped")
            raise
        except Exception as exc:
            self.note("simulator_error", error=f"{type(exc).__name__}: {exc}")
            self.hangup("switch", "simulator_error")
            raise
        finally:
            try:
                await self._finalize()
            finally:
                self.finalized.set()

    async def _ring_lead(self) -> RingResult:
        cfg = self.sim.config
        timeout = cfg.ring_seconds * cfg.no_answer_after_rings
        self.note("ringing", number=self.lead_e164)
        # Warm the voice of whoever may pick up, so their first line is ready when it is due.
        for number in self.to:
            spec = self.sim.directory.person(number)
            if spec is not None:
                self.spawn(self.sim.voices.prefetch(first_lines(spec), priority=0), "voice-warm")
        targets = [(n, self.sim.directory.person(n)) for n in self.to]
        result = await self._race(targets, timeout)
        if result.outcome == "answered" and result.number is not None:
            self.lead_e164 = result.number
            self.person_spec = self.sim.directory.person(result.number)
            self._prepare_person()
        return result

    async def _until_ended_or(self, aw: asyncio.Future[Any]) -> bool:
        """Wait for `aw` unless the call ends first; True when `aw` finished."""
        ended = asyncio.ensure_future(self.ended.wait())
        try:
            await asyncio.wait({aw, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
        return aw.done()

    async def _race(
        self,
        targets: Sequence[tuple[str, Person | Rep | None]],
        limit_s: float,
        cancel: asyncio.Event | None = None,
    ) -> RingResult:
        """Ring all targets at once; the first to answer within `limit_s` wins (a hangup, or
        `cancel`, ends the ringing)."""
        timeout = limit_s
        ring_s = self.sim.config.ring_seconds
        best: RingResult | None = None
        endings: list[RingResult] = []
        for number, spec in targets:
            if spec is None or spec.answer is Answer.NO_ANSWER:
                endings.append(RingResult("no_answer", number, timeout))
            elif spec.answer is Answer.BUSY:
                endings.append(RingResult("busy", number, min(timeout, max(0.05, 0.5 * ring_s))))
            elif spec.answer is Answer.FAIL:
                endings.append(RingResult("failed", number, min(timeout, max(0.05, 0.2 * ring_s))))
            else:
                after = spec.rings * ring_s
                if after <= timeout and (best is None or after < best.after_s):
                    best = RingResult("answered", number, after)
        if best is not None:
            result = best
        elif len(endings) == len(targets) and (
            all(e.outcome == "busy" for e in endings) or all(e.outcome == "failed" for e in endings)
        ):
            result = max(endings, key=lambda e: e.after_s)
        else:
            result = RingResult("no_answer", None, timeout)
        stops = [asyncio.ensure_future(self.ended.wait())]
        if cancel is not None:
            stops.append(asyncio.ensure_future(cancel.wait()))
        try:
            done, _ = await asyncio.wait(stops, timeout=result.after_s)
        finally:
            for stop in stops:
                stop.cancel()
        if not done:
            return result
        return RingResult("canceled", None, self.elapsed())

    def _prepare_person(self) -> None:
        """The person exists from the first ring; their lines are synthesised in the background, the
        first ones they need most urgently. The phone rings on schedule either way: a line not ready
        when it is due just comes a moment later (`lead_thinking`)."""
        spec = self.person_spec
        if spec is None:
            return
        lines: dict[str, np.ndarray] = {}
        heard = self._turn_heard if self.sim.transcriber is not None else None
        self.person = SimulatedPerson(spec, lines.get, self.note, heard)
        first = first_lines(spec)
        later = [t for t in spec.says if t not in first] if spec.answer is not Answer.VOICEMAIL else []
        self.spawn(self._synthesise(lines, first, later), "person-voice")

    async def _synthesise(self, lines: dict[str, np.ndarray], first: list[str], later: list[str]) -> None:
        for priority, texts in ((0, first), (1, later)):
            for text in texts:
                if text not in lines:
                    lines[text] = await self.sim.voices.person(text, priority=priority)

    def _end_unanswered(self, ring: RingResult) -> None:
        if self.ended.is_set():
            return  # canceled from REST while ringing: hangup() already set everything
        self.status = ring.outcome
        if ring.outcome == "failed":
            spec = self.person_spec
            self.failure_code = spec.failure_code if spec else "unreachable"
        self.hangup_cause = {
            "no_answer": "NO_ANSWER",
            "busy": "USER_BUSY",
            "failed": "UNALLOCATED_NUMBER",
        }.get(ring.outcome, "NORMAL_CLEARING")
        self.ended_at = now_utc()
        self.note(ring.outcome, after_s=round(ring.after_s, 3))
        self.ended.set()

    async def _answered(self) -> None:
        self.status = "answered"
        self.answered_at = now_utc()
        leg = Leg("lead", self.lead_e164)
        leg.answer()
        self.legs.append(leg)
        self.note(
            "answered",
            number=self.lead_e164,
            voicemail=self.person_spec is not None and self.person_spec.answer is Answer.VOICEMAIL,
        )
        self.emit("call.answered")
        self._wav = StereoWavWriter(self.wav_path)
        self._tasks.add(self.spawn(self._guarded(self._media_clock()), "media-clock"))
        self._tasks.add(self.spawn(self._guarded(self._verb_flow()), "verb-flow"))
        self._tasks.add(self.spawn(self._max_duration(), "max-duration"))

    async def _guarded(self, coro: Any) -> None:
        """A bug in the simulator ends the call loudly instead of leaving it hanging forever."""
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("simulator error on call %s", self.session_id)
            self.note("simulator_error", error=f"{type(exc).__name__}: {exc}")
            self.hangup("switch", "simulator_error")

    async def _max_duration(self) -> None:
        await asyncio.sleep(self.sim.config.max_call_s)
        self.hangup("switch", "max_call_duration")

    def hangup(self, by: str, cause: str, **detail: Any) -> bool:
        """End the call now (idempotent). `by`: app | lead | rep | switch."""
        if self.ended.is_set():
            return False
        self.hangup_by, self.hangup_cause = by, cause
        self.ended_at = now_utc()
        if self.status == "ringing":
            self.status = "canceled"
        elif self.status == "answered":
            self.status = "completed"
        self.note("hangup", by=by, cause=cause, **detail)
        self.ended.set()
        return True

    async def _finalize(self) -> None:
        # Let the verb runner close the stream cleanly (1000) before anything is cancelled.
        running = {t for t in self._tasks if not t.done() and not t.get_name().startswith("max-duration")}
        if running:
            await asyncio.wait(running, timeout=2.0)
        for task in list(self._tasks):
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for leg in self.legs:
            leg.end(self.rate)
        if self.supervision and self.supervision.get("status") in ("ringing", "active"):
            self.supervision["status"], self.supervision["ended_at"] = "ended", iso(self.ended_at)
        for t in self.transfers:
            if t.get("status") == "answered":
                rep_leg = next(
                    (lg for lg in self.legs if lg.role in ("rep", "supervisor") and lg.number == t["number"]),
                    None,
                )
                if rep_leg is not None:
                    t.update(
                        billed_seconds=rep_leg.billed_seconds,
                        cost_minor=rep_leg.cost_minor,
                        ended_at=iso(rep_leg.ended_at),
                    )
        if self._wav is not None:
            self._wav.close()
        cost = self.total_cost()
        if cost:
            self.sim.debit(cost, self)
        self.updated_at = now_utc()
        if self.person is not None and self.person.voicemail:
            self.note("voicemail_message", speech_s=round(self.person.voicemail_speech_frames * FRAME_S, 2))
        self.note("billed", legs=[leg.view() for leg in self.legs], cost_minor=cost)
        kind = "call.completed" if self.status in ("completed", "canceled") else "call.failed"
        self.emit(kind)
        # Turns still being transcribed hold up only the inspection artefacts (timeline, `finalized`),
        # never what the carrier does next.
        transcribing = bool(self._transcripts)
        if transcribing:
            self._after_end()
        try:
            await self._await_transcripts()
        finally:
            self._write_timeline()
            self.finalized.set()
        if not transcribing:
            self._after_end()

    def _after_end(self) -> None:
        """The Completed re-invocation (possibly late, §2) and the recording becoming available (§1)."""
        cfg = self.sim.config
        late = cfg.late_completed_s + (self.person_spec.late_completed_s if self.person_spec else 0.0)
        state = {"no_answer": "no-answer", "busy": "busy", "failed": "failed"}.get(self.status, "Completed")
        self.spawn(self._late_reinvoke(state, late), "completed")
        if self.answered_at is not None:
            self.recording_ready_mono = time.monotonic() + cfg.recording_delay_s
            self.spawn(self._recording_ready(cfg.recording_delay_s), "recording")

    async def _late_reinvoke(self, state: str, delay: float) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        lead = self.lead_leg
        await self.reinvoke(
            state,
            active=False,
            hangupCause=self.hangup_cause,
            durationInSeconds=str(lead.billed_seconds if lead else 0),
            amount=f"{self.total_cost() / 100:.2f}",
            currencyCode=self.sim.config.currency,
        )

    async def _recording_ready(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.record_event("call.recording.ready", {})
        if self.sim.config.event_shapes in ("both", "envelope"):
            body = self._envelope("call.recording.ready")
            body["data"]["recording_url"] = f"{self.sim.url}/v1/calls/{self.id}/recording"
            await self._deliver_event("call.recording.ready", body)

    # -- what the agent said (transcribe_agent) --------------------------------------------------------
    def _turn_heard(self, entry: dict[str, Any], audio: np.ndarray) -> None:
        """An agent turn closed: transcribe what the lead heard in it, off the audio loop."""
        transcriber = self.sim.transcriber
        if transcriber is None:
            return
        entry["text"] = None
        entry["text_unavailable"] = "pending"  # readers mid-call: the words are on their way
        task = self.spawn(self._transcribe_turn(transcriber, entry, audio), "agent-words")
        self._transcripts[task] = entry
        task.add_done_callback(lambda t: self._transcripts.pop(t, None))

    async def _transcribe_turn(
        self, transcriber: AgentTranscriber, entry: dict[str, Any], audio: np.ndarray
    ) -> None:
        try:
            text = await transcriber.transcribe(audio)
        except asyncio.CancelledError:
            if entry.get("text_unavailable") == "pending":
                entry["text_unavailable"] = "not transcribed: the simulator stopped"
            raise
        except TranscriptionUnavailable as exc:
            entry["text_unavailable"] = str(exc)
            return
        except Exception as exc:  # never a crash: the entry says what went wrong
            entry["text_unavailable"] = f"transcription failed: {type(exc).__name__}: {exc}"
            return
        entry["text"] = text
        entry.pop("text_unavailable", None)

    async def _await_transcripts(self) -> None:
        """Let the last turns' words land before the timeline is final, for at most TRANSCRIPT_WAIT_S."""
        if not self._transcripts:
            return
        waiting = set(self._transcripts)
        try:
            await asyncio.wait(waiting, timeout=TRANSCRIPT_WAIT_S)
        finally:
            # Also on cancellation (the simulator stopping): nothing is left saying "pending".
            for task in waiting:
                if not task.done():
                    entry = self._transcripts.get(task)
                    if entry is not None:
                        entry["text_unavailable"] = (
                            f"not transcribed within {TRANSCRIPT_WAIT_S:g} s of the call's end"
                        )
                    task.cancel()

    def _write_timeline(self) -> None:
        self.timeline_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.timeline_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.sim_view(), indent=2, default=str), encoding="utf-8")
        tmp.replace(self.timeline_path)

    # -- the media clock -------------------------------------------------------------------------------
    async def _media_clock(self) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while not self.ended.is_set():
            self._tick()
            n += 1
            delay = start + n * FRAME_S - loop.time()
            if delay < -0.2:
                # Starved (an overloaded host): resynchronise instead of bursting to catch up.
                start = loop.time() - n * FRAME_S
                self.note("clock_slip", behind_ms=round(-delay * 1000))
                delay = 0
            await asyncio.sleep(max(0.0, delay))

    def _tick(self) -> None:
        person = self.person
        lead = person.mouth() if person is not None else SILENCE
        speech: list[np.ndarray] = []
        if self.stream is not None:
            frame = self.stream.pop_playback()
            if frame is not None:
                speech.append(frame)
        if self._verb_clip is not None:
            clip, done = self._verb_clip
            speech.append(clip.next_frame())
            if clip.finished:
                self._verb_clip = None
                if not done.done():
                    done.set_result(None)
        rep: np.ndarray | None = None
        rep_heard_by: tuple[str, ...] = ()
        if self._rep_clips:
            clip = self._rep_clips[0]
            rep = clip.next_frame()
            if clip.finished:
                self._rep_clips.pop(0)
            # Who hears this frame is the mode now: a PATCH mid-sentence changes it mid-sentence.
            rep_heard_by = REP_HEARD_BY.get(self._rep_mode or "", ())
            if "lead" in rep_heard_by:
                speech.append(rep)
        heard_speech = mix(speech)
        heard = heard_speech
        if self._ringback is not None:
            rb = self._ringback.next_frame()
            if self._ringback.finished:
                self._ringback.pos = 0
            heard = mix([heard_speech, rb])
        if person is not None:
            person.ear(bool(speech) and is_speech(heard_speech), heard_speech)
            if person.hangup_reason and not self._person_hangup_sent:
                self._person_hangup_sent = True
                self.hangup("lead", person.hangup_reason)
        if self._wav is not None:
            self._wav.write(lead, heard)
        if self.stream is not None:
            # The stream's inbound side is the far end of the call: the lead, plus a rep the agent
            # can hear (whisper, barge).
            far_end = mix([lead, rep]) if rep is not None and "agent" in rep_heard_by else lead
            self.stream.feed(far_end, heard)

    async def play(self, audio: np.ndarray, label: str) -> None:
        """Play a clip into the lead's ear (Say/Play); returns when it has been heard to the end."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._verb_clip = (Clip(audio, label), fut)
        try:
            await self._until_ended_or(fut)
        finally:
            if self._verb_clip is not None and self._verb_clip[1] is fut:
                self._verb_clip = None

    # -- verbs -----------------------------------------------------------------------------------------
    async def _verb_flow(self) -> None:
        if self.person is not None:
            self.person.media_started()
        url = self.voice_url()
        if url is None:
            self.violation("no_voice_url", "the number has no routing_url and the call no voice_callback_url")
            self.hangup("switch", "no_routing")
            return
        early = self.sim.config.early_completed or bool(self.person_spec and self.person_spec.early_completed)
        state = "Completed" if early else "Answered"
        result = await self._post_voice(url, state, purpose="voice", active=True)
        doc = self._document_from(result)
        if doc is None:
            self.hangup("switch", "application_error")
            return
        self._document_url = url
        await self._run_document(doc)

    async def _run_document(self, doc: Document) -> None:
        verbs = list(doc.verbs)
        if not verbs:
            self.note("empty_document")
        while verbs and not self.ended.is_set():
            verb = verbs.pop(0)
            self.verbs_run.append({"t": round(self.elapsed(), 3), **verb.summary()})
            self.note("verb", verb=verb.name)
            outcome = await self._run_verb(verb)
            if isinstance(outcome, Document):
                verbs = list(outcome.verbs)
                if not verbs:
                    self.note("empty_document")
            elif outcome == "stop":
                return
        if not self.ended.is_set():
            self.hangup("switch", "end_of_document")

    async def _run_verb(self, verb: Verb) -> Document | str | None:
        handler = {
            "say": self._verb_say,
            "play": self._verb_play,
            "stream": self._verb_stream,
            "dial": self._verb_dial,
            "hangup": self._verb_hangup,
            "reject": self._verb_reject,
            "redirect": self._verb_redirect,
            "getdigits": self._verb_getdigits,
        }.get(verb.name)
        if handler is None:
            self.note("unsupported_verb", verb=verb.name)
            return None
        return await handler(verb)

    def _loops(self, verb: Verb) -> int:
        n = verb.number("loop", 1) or 1
        return max(1, min(10, int(n)))

    async def _verb_say(self, verb: Verb) -> None:
        text = verb.text or str(verb.get("text") or "")
        if not text.strip():
            return
        language = str(verb.get("language") or "en-KE")
        audio = await self.sim.voices.switch(text, language)
        for _ in range(self._loops(verb)):
            self.note("say", text=text, duration_s=round(audio.size / 16000, 2), language=language)
            await self.play(audio, text)
            if self.ended.is_set():
                return

    async def _verb_play(self, verb: Verb) -> None:
        url = str(verb.get("url") or "")
        try:
            response = await self.sim.http.get(url, timeout=10)
            response.raise_for_status()
            audio = decode_wav_bytes(response.content)
        except (httpx.HTTPError, ValueError, EOFError) as exc:
            self.violation("play_failed", f"<Play> {redact_url(url)}: {type(exc).__name__}: {exc}")
            return
        for _ in range(self._loops(verb)):
            self.note("play", url=redact_url(url), duration_s=round(audio.size / 16000, 2))
            await self.play(audio, "play")
            if self.ended.is_set():
                return

    async def _verb_hangup(self, verb: Verb) -> str:
        self.hangup("app", "hangup_verb")
        return "stop"

    async def _verb_reject(self, verb: Verb) -> str:
        self.hangup("app", "rejected", reason=verb.get("reason"))
        return "stop"

    async def _fetch(self, url: str, state: str, method: str = "POST", **extra: Any) -> Document | None:
        result = await self._post_voice(url, state, purpose="redirect", active=True, method=method, **extra)
        doc = self._document_from(result)
        if doc is None:
            self.hangup("switch", "application_error")
        return doc

    async def _verb_redirect(self, verb: Verb) -> Document | str:
        url = str(verb.get("url") or verb.text or "")
        if not url.startswith(("http://", "https://")):
            self.violation("bad_redirect", f"<Redirect> to {url!r}")
            self.hangup("switch", "application_error")
            return "stop"
        doc = await self._fetch(url, "Redirected", method=str(verb.get("method") or "POST"))
        if doc is None:
            return "stop"
        self._document_url = url
        return doc

    async def _verb_getdigits(self, verb: Verb) -> Document | str | None:
        for child in verb.children:
            await self._run_verb(child)
            if self.ended.is_set():
                return "stop"
        timeout = verb.number("timeout", 5.0) or 5.0
        if not self._digits:
            self.note("digits_timeout", after_s=timeout)
            ended = asyncio.ensure_future(self.ended.wait())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended, timeout)
            return None
        digits = self._digits.pop(0)
        await asyncio.sleep(0.5)
        self.note("digits", digits=digits)
        url = str(verb.get("callbackUrl", "action") or self._document_url or self.voice_url() or "")
        if not url:
            return None
        doc = await self._fetch(url, "GetDigits", dtmfDigits=digits)
        return "stop" if doc is None else doc

    # -- Stream ----------------------------------------------------------------------------------------
    async def _verb_stream(self, verb: Verb) -> str | None:
        cfg = self.sim.config
        self._stream_count += 1
        url = str(verb.get("url") or "")
        if not url.startswith(("ws://", "wss://")):
            self.violation("bad_stream_url", f"<Stream url> must be ws:// or wss://, got {redact_url(url)!r}")
            self.hangup("switch", "stream_error")
            return "stop"
        track = str(verb.get("track") or "inbound_track")
        if track not in TRACKS:
            self.violation("bad_stream_track", f"track={track!r}; using inbound_track")
            track = "inbound_track"
        out_rate = int(verb.number("outputSamplingRate", 8000) or 8000)
        if out_rate not in OUTPUT_RATES:
            self.violation(
                "bad_sampling_rate", f"outputSamplingRate={out_rate}; must be 8000 or 16000, using 8000"
            )
            out_rate = 8000
        bidi = verb.number("bidirectionalSamplingRate")
        if bidi is None:
            # §4: playback is undefined without it; this switch guesses telephony 8 kHz.
            self.violation(
                "bidirectional_rate_missing", "no bidirectionalSamplingRate; playing back at 8000 Hz"
            )
            bidi_rate = 8000
        elif not 8000 <= bidi <= 48000:
            self.violation("bad_sampling_rate", f"bidirectionalSamplingRate={bidi:g}; using 8000")
            bidi_rate = 8000
        else:
            bidi_rate = int(bidi)
        headers = self._header_metadata(verb.get("headerMetadata"))
        connect_leg = verb.flag("connect")
        if not connect_leg:
            self.violation(
                "stream_missing_connect", 'Stream without connect="true": the leg drops in ~1 s (1006)'
            )
        metadata = {
            "callSid": self.session_id,
            "sessionId": self.session_id,
            "call_id": self.id,
            "streamSid": None,
            "name": verb.get("name"),
            "from": self.from_e164,
            "to": self.lead_e164,
            "direction": "outbound",
            "track": track,
            "sampleRate": out_rate,
            "bidirectionalSamplingRate": bidi_rate,
            "mixType": "stereo" if track == "both_tracks" else "mono",
            "channels": 2 if track == "both_tracks" else 1,
            "encoding": "L16",
            "headers": headers,
        }
        if self.label_safe:
            metadata["clientRequestId"] = self.label
        open_meta = verb.get("openMetadata")
        if open_meta is not None:
            metadata["metadata"] = open_meta
        stream = MediaStream(
            url=url,
            name=verb.get("name"),
            track=track,
            output_rate=out_rate,
            bidirectional_rate=bidi_rate,
            metadata=metadata,
            connect_leg=connect_leg,
            call_ended=self.ended,
            note=self.note,
            violation=self.violation,
            ssl_context=cfg.ws_ssl_context,
            on_open=lambda: self._on_stream_open(verb),
        )
        metadata["streamSid"] = stream.stream_sid
        self.stream = stream
        info: dict[str, Any] = {
            "url": redact_url(url),
            "track": track,
            "output_rate": out_rate,
            "bidirectional_rate": bidi_rate,
            "connect": connect_leg,
            "started_t": round(self.elapsed(), 3),
        }
        self.streams.append(info)
        try:
            end = await stream.run()
        finally:
            info.update(
                ended_t=round(self.elapsed(), 3),
                frames_sent=stream.frames_sent,
                frames_dropped=stream.frames_dropped,
                bytes_received=stream.bytes_received,
                kill_audio=stream.kill_audio_count,
                close_code=stream.close_code,
            )
            self.stream = None
        info["end"] = end
        if end == "failed":
            self.record_event("stream.error", {})
            self.spawn(self._stream_status(verb, "stream-error", reason="connect_failed"), "stream-status")
            self.hangup("switch", "stream_error")
            return "stop"
        self.record_event("stream.stopped", {"by": "app" if end == "app_closed" else "switch"})
        self.spawn(self._stream_status(verb, "stream-stopped", reason=end), "stream-status")
        if end == "no_connect":
            self.hangup("switch", "stream_not_connected")
        # Every fork that opened reports its end, whoever ended it (seen on the events URL, §3).
        self.spawn(self.reinvoke("StreamStopped", active=not self.ended.is_set()), "stream-stopped")
        if self.ended.is_set():
            return "stop"
        if not cfg.verbs_after_stream:
            # What a production user saw (§4): nothing after the fork runs; silence until hang-up.
            self.note("verbs_after_stream_suppressed")
            await self.ended.wait()
            return "stop"
        return None

    def _on_stream_open(self, verb: Verb) -> None:
        self.record_event("stream.started", {})
        self.spawn(self.reinvoke("StreamStarted"), "stream-started")
        self.spawn(self._stream_status(verb, "stream-started"), "stream-status")

    def _header_metadata(self, raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if isinstance(raw, dict):
            data: Any = raw
        else:
            try:
                data = json.loads(str(raw))
            except json.JSONDecodeError:
                self.violation(
                    "header_metadata_invalid", "headerMetadata is not a JSON object serialised as a string"
                )
                return {}
        if not isinstance(data, dict) or any(isinstance(v, (dict, list)) for v in data.values()):
            self.violation("header_metadata_invalid", "headerMetadata must be a flat JSON object")
            return (
                {k: v for k, v in data.items() if not isinstance(v, (dict, list))}
                if isinstance(data, dict)
                else {}
            )
        return data

    # -- Dial (transfer) -------------------------------------------------------------------------------
    async def _verb_dial(self, verb: Verb) -> str | None:
        numbers = [n for n in verb.numbers if E164.match(n)]
        for bad in (n for n in verb.numbers if not E164.match(n)):
            self.violation(
                "dial_target_unsupported", f"<Dial> target {bad!r} is not an E.164 number; skipped"
            )
        if not numbers:
            self.violation("dial_invalid", "<Dial> has no number to call")
            return None
        timeout = verb.number("timeout", 30.0) or 30.0
        outcome = await self.transfer(
            numbers, via="dial", ring_timeout_s=timeout, caller_id=verb.get("callerId")
        )
        if outcome["status"] == "answered":
            # The bridged call ends when the rep hangs up (or the lead does); the switch reports the
            # dial leg's end once the bridge is over.
            await self.ended.wait()
        leg = next((lg for lg in self.legs if lg.role == "rep" and lg.number == outcome.get("number")), None)
        self.spawn(
            self.reinvoke(
                "DialCompleted",
                active=not self.ended.is_set(),
                dialStatus=outcome["status"],
                dialDestinationNumber=outcome.get("number"),
                dialDurationInSeconds=str(leg.billed_seconds) if leg and leg.ended_mono else None,
            ),
            "dial-completed",
        )
        return "stop" if self.ended.is_set() else None

    async def transfer(
        self,
        numbers: list[str],
        *,
        via: str,
        ring_timeout_s: float,
        caller_id: Any = None,
        mode: str = "barge",
        cancel: asyncio.Event | None = None,
    ) -> dict[str, Any]:
        """Ring rep(s); on answer, bill their leg and let them talk. A <Dial>ed rep is bridged to
        the lead; a supervisor is heard as their mode says (REP_HEARD_BY), the mode at pickup
        being the latest PATCHed while they rang. `cancel` stops the ringing (DELETE)."""
        timeout = ring_timeout_s
        entry: dict[str, Any] = {
            "via": via,
            "numbers": numbers,
            "number": None,
            "status": "ringing",
            "started_at": iso(now_utc()),
            "timeout_s": timeout,
        }
        if via == "supervision":
            entry["mode"] = mode
        if caller_id:
            entry["caller_id"] = caller_id
        self.transfers.append(entry)
        self.record_event("transfer.ringing", {"numbers": numbers, "via": via})
        self.note("transfer_ringing", numbers=numbers, via=via, timeout_s=timeout)
        hear_ringback = via == "dial"
        if hear_ringback:
            self._ringback = Clip(ringback_cycle(), "ringback")
        targets = [(n, self.sim.directory.rep(n)) for n in numbers]
        try:
            ring = await self._race(targets, timeout, cancel)
        finally:
            if hear_ringback:
                self._ringback = None
        if ring.outcome == "canceled" or self.ended.is_set():
            entry["status"] = "canceled"
            return entry
        entry["number"] = ring.number
        entry["status"] = ring.outcome
        if ring.outcome != "answered" or ring.number is None:
            self.note("transfer_failed", status=ring.outcome, after_s=round(ring.after_s, 2))
            self.record_event("transfer.failed", {"status": ring.outcome})
            return entry
        rep = self.sim.directory.rep(ring.number)
        assert rep is not None
        leg = Leg("supervisor" if via == "supervision" else "rep", ring.number)
        leg.answer()
        self.legs.append(leg)
        entry["answered_at"] = iso(leg.answered_at)
        self.note("transfer_answered", number=ring.number, via=via, after_s=round(ring.after_s, 2))
        self.record_event("transfer.answered", {"number": ring.number, "via": via})
        self._rep_clips.clear()
        self._rep_mode = str(entry.get("mode") or "barge")
        self.spawn(self._rep_on_line(rep, leg, entry), "rep")
        return entry

    async def _rep_on_line(self, rep: Rep, leg: Leg, entry: dict[str, Any]) -> None:
        """The rep talks once someone can hear them: at pickup when the agent can (whisper), and
        from the start again once the lead can (barge, or a <Dial>). Heard by the lead, they talk
        for `talk_s` and hang up, which ends the call. A supervisor the lead never hears gives up
        after SUPERVISOR_PATIENCE_S and hangs up their own leg; the call goes on."""
        await asyncio.sleep(REP_PICKUP_S)
        give_up_at = time.monotonic() + SUPERVISOR_PATIENCE_S
        told_agent = False
        while not self.ended.is_set() and leg.live:
            self._rep_changed.clear()
            heard_by = REP_HEARD_BY.get(self._rep_mode or "", ())
            if "lead" in heard_by:
                self._rep_clips.clear()  # whatever the lead did not hear, the rep starts over
                await self._rep_says(rep, leg)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ended.wait(), timeout=rep.talk_s)
                if self.ended.is_set() or not leg.live:
                    return
                self._rep_leaves(leg, entry)
                self.hangup("rep", "normal_clearing")
                return
            if "agent" in heard_by and not told_agent:
                told_agent = True
                await self._rep_says(rep, leg)
                continue  # the mode may have changed while the voice was made
            remaining = give_up_at - time.monotonic()
            if remaining <= 0:
                self._rep_leaves(leg, entry)
                return
            waits = {
                asyncio.ensure_future(self._rep_changed.wait()),
                asyncio.ensure_future(self.ended.wait()),
            }
            try:
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def _rep_says(self, rep: Rep, leg: Leg) -> None:
        for line in rep.says:
            audio = await self.sim.voices.person(line)
            if self.ended.is_set() or not leg.live:
                return
            mode = self._rep_mode
            heard_by = REP_HEARD_BY.get(mode or "", ())
            self.note(
                "rep_says",
                text=line,
                mode=mode,
                heard_by=list(heard_by),
                audible_to_lead="lead" in heard_by,
                duration_s=round(audio.size / 16000, 2),
            )
            self._rep_clips.append(Clip(audio, line))

    def _rep_leaves(self, leg: Leg, entry: dict[str, Any]) -> None:
        """The rep hangs up their leg (billed to here); a supervision they held ends with it."""
        leg.end(self.rate)
        entry["ended_at"] = iso(leg.ended_at)
        heard = "lead" in REP_HEARD_BY.get(self._rep_mode or "", ())
        self._rep_mode = None
        self._rep_clips.clear()
        self.note("rep_hangup", number=leg.number, heard_by_lead=heard)
        sup = self.supervision
        if leg.role == "supervisor" and sup is not None and sup.get("status") in ("ringing", "active"):
            sup["status"], sup["ended_at"] = "ended", iso(leg.ended_at)
            self.note("supervision_ended", by="supervisor")

    # -- REST-driven actions ---------------------------------------------------------------------------
    def request_hangup(self) -> None:
        self.record_event("call.hangup_requested", {})
        self.hangup("app", "api_hangup")

    async def start_supervision(self, mode: str, supervisor: dict[str, Any]) -> None:
        """A supervisor's status: ringing → active when they pick up (the directory's rep) → ended
        (they hang up, DELETE, or the call ends); or no_answer | busy | failed | canceled."""
        sup = self.supervision
        assert sup is not None
        number = supervisor.get("number")
        if supervisor.get("type") != "phone" or not isinstance(number, str):
            sup["status"] = "active"
            self.note("supervision_active", mode=mode, supervisor_type=supervisor.get("type"))
            return
        cancel = asyncio.Event()
        self._supervision_cancel = cancel
        entry = await self.transfer(
            [number],
            via="supervision",
            ring_timeout_s=self.sim.config.supervision_ring_timeout_s,
            mode=mode,
            cancel=cancel,
        )
        if sup.get("status") != "ringing":
            return  # removed (DELETE) while it rang
        if entry["status"] == "answered":
            sup["status"], sup["answered_at"] = "active", entry.get("answered_at")
            self.note("supervision_active", mode=sup.get("mode"), number=number, supervisor_type="phone")
        else:
            sup["status"], sup["ended_at"] = entry["status"], iso(now_utc())

    def set_supervision_mode(self, mode: str) -> None:
        """PATCH: a new mode, also while the supervisor still rings (it applies when they pick up)."""
        sup = self.supervision
        assert sup is not None
        previous = sup.get("mode")
        sup["mode"] = mode
        transfer = next((t for t in reversed(self.transfers) if t.get("via") == "supervision"), None)
        if transfer is not None:
            transfer["mode"] = mode
        if sup.get("status") == "active" and self._rep_mode is not None:
            self._rep_mode = mode
        self.note("supervision_mode", mode=mode, previous=previous, status=sup.get("status"))
        self.record_event("supervision.updated", {"mode": mode})
        self._rep_changed.set()

    def end_supervision(self) -> None:
        """DELETE: the supervisor leaves (or stops ringing); the call goes on."""
        sup = self.supervision
        if sup is None:
            return
        was = sup.get("status")
        if was in ("ringing", "active"):
            sup["status"], sup["ended_at"] = "ended", iso(now_utc())
        if self._supervision_cancel is not None:
            self._supervision_cancel.set()
        for leg in self.legs:
            if leg.role == "supervisor" and leg.live:
                leg.end(self.rate)
                self._rep_mode = None
                self._rep_clips.clear()
        self._rep_changed.set()
        self.note("supervision_ended", by="app", was=was)


def fingerprint(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
