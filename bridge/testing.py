"""Fakes for tests, benchmarks and smoke runs: an in-memory store, recording carrier and notifier,
and a media client that plays Sautikit's side of the WebSocket on loopback.

They implement the same ports as the real adapters (bridge.ports) and record every call, so tests
assert on what the bridge did, and can be told to fail.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bridge.audio import frame_bytes, silence, tone
from bridge.ports import BridgeConfig
from bridge.protocol import SUBPROTOCOL
from bridge.server import BridgeServer
from leadqual.campaign import Campaign
from leadqual.errors import SautikitError
from leadqual.models import Answer, Lead, Outcome, Score, Transcript, TranscriptEntry
from leadqual.signing import make_bridge_token

_TRANSCRIPT: TypeAdapter[list[TranscriptEntry]] = TypeAdapter(Transcript)


@dataclass
class MemoryProfile:
    lead: Lead


class MemoryStore:
    """The DynamoStore methods the bridge calls, in memory, thread-safe, recording every write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sessions: dict[str, tuple[str, int]] = {}
        self.leads: dict[str, MemoryProfile] = {}
        self.answers: dict[str, dict[str, Answer]] = {}
        self.calls: dict[tuple[str, int], dict[str, Any]] = {}
        self.outcomes: dict[str, tuple[Outcome, Score | None, str | None]] = {}
        self.dnc: dict[str, str] = {}
        self.writes: list[tuple[str, Any]] = []
        self.fail_saves = False
        self.fail_call_updates = 0  # how many of the next update_call writes raise

    def add_call(self, lead: Lead, session_id: str, attempt: int = 1) -> None:
        with self._lock:
            self.leads[lead.lead_id] = MemoryProfile(lead)
            self.sessions[session_id] = (lead.lead_id, attempt)
            self.calls.setdefault((lead.lead_id, attempt), {})

    def get_session(self, session_id: str) -> tuple[str, int] | None:
        return self.sessions.get(session_id)

    def get_lead(self, lead_id: str) -> MemoryProfile | None:
        return self.leads.get(lead_id)

    def get_answers(self, lead_id: str) -> list[Answer]:
        with self._lock:
            return list(self.answers.get(lead_id, {}).values())

    def save_answer(self, lead_id: str, answer: Answer) -> None:
        if self.fail_saves:
            raise RuntimeError("store told to fail")
        with self._lock:
            self.answers.setdefault(lead_id, {})[answer.question_id] = answer
            self.writes.append(("save_answer", (lead_id, answer.question_id, time.monotonic())))

    def update_call(self, lead_id: str, attempt: int, **fields: Any) -> None:
        if "transcript" in fields:
            # As DynamoStore stores it: validated, bounded, a copy of the caller's list.
            fields["transcript"] = _TRANSCRIPT.validate_python(fields["transcript"])
        with self._lock:
            if self.fail_call_updates > 0:
                self.fail_call_updates -= 1
                raise RuntimeError("store told to fail")
            self.calls.setdefault((lead_id, attempt), {}).update(fields)
            self.writes.append(("update_call", (lead_id, attempt, dict(fields))))

    def transcript(self, lead_id: str, attempt: int = 1) -> list[TranscriptEntry]:
        """The call's stored transcript ([] when none was written)."""
        with self._lock:
            return list(self.calls.get((lead_id, attempt), {}).get("transcript", []))

    def set_outcome(
        self, lead_id: str, outcome: Outcome, *, score: Score | None = None, reason: str | None = None
    ) -> None:
        with self._lock:
            self.outcomes[lead_id] = (outcome, score, reason)
            self.writes.append(("set_outcome", (lead_id, outcome, reason)))

    def add_dnc(self, e164: str, reason: str) -> None:
        with self._lock:
            self.dnc[e164] = reason
            self.writes.append(("add_dnc", e164))


class RecordingCarrier:
    """The SautikitClient methods the bridge calls. `on_hangup` lets a test close the media socket
    the way the platform does when a call ends.

    A supervision started here rings for `rings` status reads (`get_supervision` says `ringing`),
    then reads as `supervisor`: `"active"` (the rep picked up), `"no_answer"`, `"busy"`, ..., or
    None for a phone that rings for ever."""

    def __init__(self, *, rings: int = 0, supervisor: str | None = "active") -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.fail: dict[str, SautikitError] = {}
        self.on_hangup: Callable[[str], None] | None = None
        self.rings = rings
        self.supervisor = supervisor
        self.supervision: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _record(self, method: str, call_id: str, **kwargs: Any) -> None:
        with self._lock:
            self.calls.append((method, call_id, kwargs))
        error = self.fail.get(method)
        if error is not None:
            raise error

    def hangup(self, call_or_session_id: str) -> None:
        self._record("hangup", call_or_session_id)
        if self.on_hangup is not None:
            self.on_hangup(call_or_session_id)

    def start_supervision(
        self, call_or_session_id: str, *, mode: str, number: str, idempotency_key: str
    ) -> dict[str, Any]:
        self._record("start_supervision", call_or_session_id, mode=mode, number=number, key=idempotency_key)
        with self._lock:
            self.supervision = {
                "call_id": call_or_session_id,
                "mode": mode,
                "supervisor": {"type": "phone", "number": number},
                "status": "ringing",
            }
            return {"supervision": dict(self.supervision)}

    def get_supervision(self, call_or_session_id: str) -> dict[str, Any] | None:
        self._record("get_supervision", call_or_session_id)
        with self._lock:
            sup = self.supervision
            if sup is None:
                return None
            if sup["status"] == "ringing":
                if self.rings > 0:
                    self.rings -= 1
                elif self.supervisor is not None:
                    sup["status"] = self.supervisor
            return dict(sup)

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.calls]

    def actions(self) -> list[str]:
        """`methods()` without the status reads."""
        return [m for m in self.methods() if m != "get_supervision"]


class PatchingCarrier(RecordingCarrier):
    """A carrier client that can also PATCH (and DELETE) a supervision. The first `conflicts`
    PATCHes answer 409 (a conflicting change in flight), the only 409 a PATCH gets; a PATCH of a
    supervision that has ended answers 409 `calls.supervision_ended`, as the simulator does."""

    def __init__(self, *, rings: int = 0, supervisor: str | None = "active", conflicts: int = 0) -> None:
        super().__init__(rings=rings, supervisor=supervisor)
        self.conflicts = conflicts

    def update_supervision(self, call_or_session_id: str, *, mode: str) -> dict[str, Any]:
        self._record("update_supervision", call_or_session_id, mode=mode)
        with self._lock:
            sup = self.supervision
            if sup is None:
                raise SautikitError(404, "supervision.not_found", "no supervisor on this call", False)
            if sup["status"] not in ("ringing", "active"):
                raise SautikitError(
                    409, "calls.supervision_ended", "the supervisor has left this call", False
                )
            if self.conflicts > 0:
                self.conflicts -= 1
                raise SautikitError(409, "calls.supervision_in_progress", "a change is in progress", False)
            sup["mode"] = mode
            return {"supervision": dict(sup)}

    def stop_supervision(self, call_or_session_id: str) -> None:
        self._record("stop_supervision", call_or_session_id)
        with self._lock:
            if self.supervision is not None and self.supervision["status"] in ("ringing", "active"):
                self.supervision["status"] = "ended"


class RecordingNotifier:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    def publish(self, message: dict[str, Any]) -> None:
        self.messages.append(json.loads(json.dumps(message, default=str)))


@dataclass
class Received:
    at: float
    data: str | bytes


@dataclass
class MediaClient:
    """Sautikit's side of one media stream: connects, sends metadata and audio, records replies."""

    url: str
    session_id: str | None
    token: str | None
    in_rate: int = 16000  # what we send (outputSamplingRate)
    out_rate: int = 16000  # what we expect back (bidirectionalSamplingRate)
    metadata: dict[str, Any] | str | None = None
    subprotocols: list[str] | None = None
    path: str = "/stream"
    received: list[Received] = field(default_factory=list)
    ws: ClientConnection | None = None
    close_code: int | None = None
    close_reason: str = ""
    _reader: asyncio.Task[None] | None = None
    _closed: asyncio.Event = field(default_factory=asyncio.Event)
    _got: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def for_session(cls, base_url: str, secret: str, session_id: str, **kwargs: Any) -> MediaClient:
        return cls(base_url, session_id, make_bridge_token(secret, session_id), **kwargs)

    def stream_url(self) -> str:
        query = []
        if self.session_id is not None:
            query.append(f"session={self.session_id}")
        if self.token is not None:
            query.append(f"token={self.token}")
        query.append(f"out_rate={self.out_rate}")
        return f"{self.url}{self.path}?{'&'.join(query)}"

    async def connect(self, *, send_metadata: bool = True) -> None:
        protos = [SUBPROTOCOL] if self.subprotocols is None else self.subprotocols
        self.ws = await connect(
            self.stream_url(),
            subprotocols=[Subprotocol(p) for p in protos] or None,
            compression=None,
            open_timeout=5,
            max_size=None,
        )
        self._reader = asyncio.create_task(self._read(), name="media-client-read")
        if send_metadata:
            meta = self.metadata
            if meta is None:
                meta = {"callSid": self.session_id, "sampleRate": self.in_rate, "mixType": "mono"}
            await self.ws.send(meta if isinstance(meta, str) else json.dumps(meta))

    async def _read(self) -> None:
        assert self.ws is not None
        loop = asyncio.get_running_loop()
        try:
            async for msg in self.ws:
                self.received.append(Received(loop.time(), msg))
                self._got.set()
        except ConnectionClosed:
            pass
        finally:
            if self.ws.close_code is not None:
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason or ""
            self._closed.set()

    async def send(self, data: str | bytes) -> None:
        assert self.ws is not None
        await self.ws.send(data)

    async def send_audio(self, pcm: bytes, *, pace: bool = False) -> None:
        """Send `pcm` in 20 ms frames, as fast as possible or in real time."""
        assert self.ws is not None
        size = frame_bytes(self.in_rate)
        for i in range(0, len(pcm), size):
            await self.ws.send(pcm[i : i + size])
            if pace:
                await asyncio.sleep(0.02)

    async def speak(self, ms: int = 300, quiet_ms: int = 400, *, pace: bool = False) -> None:
        """One utterance: a tone, then quiet so the far end hears it end."""
        await self.send_audio(tone(220.0, ms, self.in_rate) + silence(quiet_ms, self.in_rate), pace=pace)

    def audio(self) -> list[Received]:
        return [r for r in self.received if isinstance(r.data, bytes)]

    def texts(self) -> list[Received]:
        return [r for r in self.received if isinstance(r.data, str)]

    def audio_bytes(self) -> int:
        return sum(len(r.data) for r in self.audio())

    async def wait_for(self, predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
        async with asyncio.timeout(limit_s):
            while not predicate():
                self._got.clear()
                if self._closed.is_set():
                    if predicate():
                        return
                    raise AssertionError("socket closed before the condition held")
                closed = asyncio.create_task(self._closed.wait())
                got = asyncio.create_task(self._got.wait())
                try:
                    await asyncio.wait({closed, got}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closed.cancel()
                    got.cancel()

    async def wait_closed(self, limit_s: float = 10.0) -> int | None:
        async with asyncio.timeout(limit_s):
            await self._closed.wait()
        return self.close_code

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def close(self, code: int = 1000) -> None:
        if self.ws is not None:
            await self.ws.close(code)
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)


class FixedCampaigns:
    """The campaigns port serving one campaign whatever id is asked for (tests run one campaign)."""

    def __init__(self, campaign: Campaign) -> None:
        self.campaign = campaign

    def load(self, campaign_id: str) -> Campaign:
        return self.campaign


async def loopback_bridge(
    campaign: Campaign,
    engine_factory: Callable[[], Any],
    store: MemoryStore,
    *,
    secret: str,
    carrier: RecordingCarrier | None = None,
    metrics_writer: Callable[[str], None] | None = None,
    **config: Any,
) -> BridgeServer:
    """A started BridgeServer on 127.0.0.1 (an ephemeral port) with timings short enough for tests;
    a 200 ms tone stands in for the local fallback voice. `config` overrides BridgeConfig fields."""
    settings = BridgeConfig(
        bridge_token_secret=secret,
        host="127.0.0.1",
        port=0,
        drain_seconds=5,
        playout_margin_s=0.02,
        hangup_close_grace_s=0.3,
        gauge_interval_s=0,
        **config,
    )
    server = BridgeServer(
        settings,
        engine_factory,
        store,
        carrier or RecordingCarrier(),
        RecordingNotifier(),
        campaigns=FixedCampaigns(campaign),
        metrics_writer=metrics_writer or (lambda line: None),
        synthesise=lambda text, rate, lang: tone(330.0, 200, rate),
    )
    await server.start()
    return server
