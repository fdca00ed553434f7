"""The cascade engine: VAD → speech-to-text → dialog → text-to-speech, each part pluggable.

One engine per call; the heavy parts are process-wide (one Whisper model, one espeak instance,
one cache of synthesised sentences), so fifty calls do not load fifty models. Call
`await CascadeEngine.warm_up()` at process start so the first call does not pay for loading.

Inside, four named tasks, each owning one queue:
- `send_audio` (the bridge's task) runs the VAD inline (microseconds a frame), decides barge-in,
  and queues finished utterances (and, for the first utterance, partial snapshots used to spot a
  voicemail greeting early);
- the listener transcribes utterances in order (in a thread) and queues the text for the dialog;
- the brain feeds the dialog utterances, `say` lines and tool results one at a time and routes
  its actions: tool calls become events, speech goes to the speaker;
- the speaker synthesises each turn sentence by sentence (cached sentences cost nothing) and
  emits 20 ms `AudioOut` chunks, then `TranscriptOut`, `TurnComplete` and a `Usage` delta.

Time: the agent's audio is emitted faster than real time and the platform plays it out, so
"is the agent still speaking?" comes from a playout clock. The engine's clock is the larger of
wall time and the amount of lead audio received (the carrier streams 20 ms frames
continuously), so a test may feed audio faster than real time and the engine behaves the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import soxr

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
from bridge.engines.cascade.http_parts import LLMDialog, OpenAICompatibleSTT, OpenAICompatibleTTS
from bridge.engines.cascade.interviewer import Dialog, RuleInterviewer, Speak
from bridge.engines.cascade.stt import SpeechToText, WhisperSTT
from bridge.engines.cascade.tts import EspeakTTS, SpeechCache, TextToSpeech, shared_cache, split_sentences
from bridge.engines.cascade.vad import (
    SpeechStarted,
    UtteranceEnded,
    VadSettings,
    VoiceActivityDetector,
)

log = logging.getLogger("bridge.cascade")

_VAD_RATES = (8000, 16000, 32000, 48000)


# ── the event channel ─────────────────────────────────────────────────────────────────────────


class _EventChannel:
    """Bounded FIFO of engine events with one reader. `put` waits for room; `put_now` does not
    (interruptions, failures); `drop_audio` throws away agent audio the bridge has not read."""

    def __init__(self, limit: int) -> None:
        self._items: deque[EngineEvent] = deque()
        self._limit = limit
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self.closed = False

    async def put(self, item: EngineEvent) -> None:
        while len(self._items) >= self._limit and not self.closed:
            self._writable.clear()
            await self._writable.wait()
        self.put_now(item)

    def put_now(self, item: EngineEvent) -> None:
        if self.closed:
            return
        self._items.append(item)
        self._readable.set()

    def drop_audio(self) -> int:
        kept: deque[EngineEvent] = deque(e for e in self._items if not isinstance(e, AudioOut))
        dropped = len(self._items) - len(kept)
        self._items = kept
        if len(kept) < self._limit:
            self._writable.set()
        return dropped

    def close(self) -> None:
        self.closed = True
        self._readable.set()
        self._writable.set()

    async def get(self) -> EngineEvent | None:
        """The next event; what was queued before `close` is still delivered, then None."""
        while not self._items:
            if self.closed:
                return None
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        if len(self._items) < self._limit:
            self._writable.set()
        return item


# ── internal messages ─────────────────────────────────────────────────────────────────────────


@dataclass
class _Turn:
    text: str
    source: str  # "say" (the bridge) or "dialog"
    opening: bool = False
    spoken: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Heard:
    pcm: bytes
    partial: bool = False
    overlapped: bool = False


@dataclass(frozen=True)
class _AgentSaid:
    text: str


@dataclass(frozen=True)
class _UserText:
    text: str
    overlapped: bool


@dataclass(frozen=True)
class _PartialText:
    text: str


@dataclass(frozen=True)
class _ToolResult:
    call: ToolCall
    result: dict[str, Any]


_BrainInput = _AgentSaid | _UserText | _PartialText | _ToolResult


@dataclass
class CascadeStats:
    """What one call measured; the benchmark and the tests read it."""

    stt_ms: list[float] = field(default_factory=list)  # per final utterance
    partial_stt_ms: list[float] = field(default_factory=list)
    first_audio_ms: list[float] = field(default_factory=list)  # per turn: queued → first AudioOut
    utterances: int = 0
    barge_ins: int = 0
    truncations: list[int] = field(default_factory=list)
    dropped_utterances: int = 0


def opening_text(ctx: SessionContext) -> str:
    """The opening the bridge says (contracts: greeting with disclosure + the first question still
    open); pre-synthesised at start so `say(opening)` plays at once."""
    campaign, lead = ctx.campaign, ctx.lead
    greeting = campaign.render(campaign.lines.greeting, lead)
    if campaign.disclosure not in greeting:
        greeting = f"{greeting} {campaign.disclosure}"
    done = {a.question_id for a in ctx.answers}
    todo = [q for q in campaign.questions if q.id not in done] or campaign.questions
    return f"{greeting} {campaign.render(todo[0].ask, lead)}"


def fixed_lines(ctx: SessionContext) -> list[str]:
    """Lines this call will probably speak, opening first: worth synthesising ahead."""
    campaign, lead = ctx.campaign, ctx.lead
    lines = [opening_text(ctx)]
    lines += [campaign.render(q.ask, lead) for q in campaign.questions]
    texts = campaign.lines
    lines += [
        campaign.render(t, lead)
        for t in (
            texts.closing,
            texts.callback,
            texts.opt_out,
            texts.wrong_person,
            texts.fallback,
            campaign.transfer.handoff_line,
            campaign.transfer.fallback_line,
            campaign.voicemail.message,
        )
        if t
    ]
    lines += ["Got it.", "Thanks.", "Great, thank you.", "Okay."]
    return lines


def vocabulary_prompt(ctx: SessionContext) -> str:
    """A short prompt that biases speech-to-text towards this call's names and words.

    Off by default (`bias_vocabulary`): with tiny.en it cost more than it gave on our samples
    (word errors 2.1% → 4.1%, "By September" heard as "Bicep Denver"), and it lengthens decoding."""
    agent, lead = ctx.campaign.agent, ctx.lead
    names = ", ".join(n for n in (lead.first_name, lead.company, agent.name, agent.company) if n)
    return f"A phone call. {names}."


class CascadeEngine:
    """bridge.engines.base.Engine built from local (or self-hosted) parts."""

    name = "cascade"

    def __init__(
        self,
        stt: SpeechToText | None = None,
        tts: TextToSpeech | None = None,
        dialog: Dialog | None = None,
        *,
        vad: VadSettings | None = None,
        input_rate: int = 16000,
        output_rate: int = 16000,
        chunk_ms: int = 20,
        cache: SpeechCache | None = None,
        presynthesize: bool = True,
        bias_vocabulary: bool = False,
        max_queued_events: int = 4096,
    ) -> None:
        self.input_rate = input_rate
        self.output_rate = output_rate
        self.stt: SpeechToText = stt if stt is not None else WhisperSTT()
        self.tts: TextToSpeech = tts if tts is not None else EspeakTTS()
        self.dialog: Dialog = dialog if dialog is not None else RuleInterviewer()
        self.vad_settings = vad or VadSettings()
        self.stats = CascadeStats()
        self._chunk_bytes = max(2, output_rate * 2 * chunk_ms // 1000 // 2 * 2)
        self._cache_override = cache
        self._cache: SpeechCache | None = None
        self._presynthesize = presynthesize
        self._bias = bias_vocabulary
        self._events = _EventChannel(max_queued_events)
        self._vad_rate = input_rate if input_rate in _VAD_RATES else 16000
        self._resampler: Any = (
            None
            if self._vad_rate == input_rate
            else soxr.ResampleStream(input_rate, self._vad_rate, 1, dtype="int16", quality="QQ")
        )
        self._vad = VoiceActivityDetector(self._vad_rate, self.vad_settings)
        self._heard: asyncio.Queue[_Heard] = asyncio.Queue(maxsize=16)
        self._brain: asyncio.Queue[_BrainInput] = asyncio.Queue(maxsize=256)
        self._speech: asyncio.Queue[_Turn] = asyncio.Queue(maxsize=64)
        self._tasks: list[asyncio.Task[None]] = []
        self._turn_task: asyncio.Task[None] | None = None
        self._turn: _Turn | None = None
        self._ctx: SessionContext | None = None
        self._prompt = ""
        self._started = False
        self._closed = False
        self._says = 0
        self._t0 = 0.0
        self._in_bytes = 0
        self._play_end = 0.0  # engine seconds when the agent's emitted audio will have been heard
        self._playing_opening = False
        self._barged = False  # this utterance already interrupted the agent
        self._overlapped = False  # the agent spoke during this utterance
        self._utt_start_ms = 0
        self._probes_done = 0
        self._finished_utterances = 0
        self._usage_in = 0  # bytes not yet reported in a Usage event
        self._usage_out = 0
        self._ended_call = False
        self._owned: list[Any] = []  # parts made by from_settings, closed with the engine

    # ── construction from settings, and process-wide warm-up ─────────────────────────────────

    @classmethod
    def from_settings(cls, settings: Any) -> CascadeEngine:
        """The engine the bridge's settings describe (bridge.engines.engine_factory calls this).

        Reads optional attributes, so settings without them give the all-local default:
        `cascade_stt_url` / `cascade_stt_model` (OpenAI-compatible transcription),
        `cascade_tts_url` / `cascade_tts_model` / `cascade_tts_voice` (speech),
        `cascade_llm_url` / `cascade_llm_model` (chat with tools, instead of the rule interviewer),
        `cascade_api_key` (bearer token for all three), `cascade_voice` (espeak voice name).
        HTTP parts made here belong to this engine and are closed with it.
        """

        def opt(name: str) -> str | None:
            value = getattr(settings, name, None)
            getter = getattr(value, "get_secret_value", None)
            value = getter() if callable(getter) else value
            return str(value) if value else None

        key = opt("cascade_api_key") or ""
        stt: SpeechToText | None = None
        tts: TextToSpeech | None = None
        dialog: Dialog | None = None
        owned: list[Any] = []
        if url := opt("cascade_stt_url"):
            stt = OpenAICompatibleSTT(url, key, opt("cascade_stt_model") or "whisper-1")
            owned.append(stt)
        if url := opt("cascade_tts_url"):
            tts = OpenAICompatibleTTS(
                url, key, opt("cascade_tts_model") or "tts-1", opt("cascade_tts_voice") or "alloy"
            )
            owned.append(tts)
        elif voice := opt("cascade_voice"):
            tts = EspeakTTS(voice)
        if url := opt("cascade_llm_url"):
            dialog = LLMDialog(url, key, opt("cascade_llm_model") or "default")
        engine = cls(stt, tts, dialog)
        engine._owned = owned
        return engine

    @classmethod
    async def warm_up(
        cls, stt: SpeechToText | None = None, tts: TextToSpeech | None = None
    ) -> dict[str, float]:
        """Load the shared model and voice now (a few hundred ms), not on the first call."""
        stt = stt if stt is not None else WhisperSTT()
        tts = tts if tts is not None else EspeakTTS()
        started = time.perf_counter()
        await stt.warm_up()
        stt_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        await tts.warm_up()
        tts_ms = (time.perf_counter() - started) * 1000
        log.info("cascade warmed up", extra={"stt_ms": round(stt_ms), "tts_ms": round(tts_ms)})
        return {"stt_ms": stt_ms, "tts_ms": tts_ms}

    # ── Engine ──────────────────────────────────────────────────────────────────────────────

    async def start(self, ctx: SessionContext) -> None:
        if self._started:
            raise RuntimeError("engine already started")
        self._started = True
        self._ctx = ctx
        self._t0 = time.perf_counter()
        self._cache = self._cache_override or shared_cache()
        self._prompt = vocabulary_prompt(ctx) if self._bias else ""
        await self.dialog.start(ctx)
        self._spawn(self._speaker, "cascade-speaker")
        self._spawn(self._listener, "cascade-listener")
        self._spawn(self._think, "cascade-brain")
        if self._presynthesize:
            lines = fixed_lines(ctx)
            self._spawn(lambda: self._presynth(lines), "cascade-presynth", fatal=False)
        self._spawn(self.stt.warm_up, "cascade-stt-warm", fatal=False)

    async def send_audio(self, pcm: bytes) -> None:
        if self._closed or not self._started or not pcm:
            return
        self._in_bytes += len(pcm)
        self._usage_in += len(pcm)
        if self._resampler is not None:
            samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
            pcm = self._resampler.resample_chunk(samples).tobytes()
        for event in self._vad.push(pcm):
            if isinstance(event, SpeechStarted):
                self._barged = False
                self._overlapped = self._agent_speaking()
                self._utt_start_ms = event.offset_ms
                self._probes_done = 0
            elif isinstance(event, UtteranceEnded):
                self._finished_utterances += 1
                overlapped = self._overlapped and not self._barged
                self._queue_heard(_Heard(event.pcm, overlapped=overlapped))
        if self._vad.in_speech:
            self._during_speech()

    async def say(self, text: str) -> None:
        if self._closed or not self._started or not text.strip():
            return
        self._says += 1
        await self._brain.put(_AgentSaid(text))
        await self._speech.put(_Turn(text, "say", opening=self._says == 1))

    async def send_tool_result(self, call: ToolCall, result: dict[str, Any]) -> None:
        if self._closed or not self._started:
            return
        await self._brain.put(_ToolResult(call, result))

    async def truncate(self, played_ms: int) -> None:
        # Nothing to cut: the dialog keeps no audio context. Recorded for the call's metrics.
        self.stats.truncations.append(played_ms)

    async def events(self) -> AsyncIterator[EngineEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        tasks = [*self._tasks, *([self._turn_task] if self._turn_task is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self._turn_task = None
        with contextlib.suppress(Exception):
            await self.dialog.close()
        for part in self._owned:
            with contextlib.suppress(Exception):
                await part.aclose()
        if self._usage_in or self._usage_out:
            self._events.put_now(self._usage())
        self._events.close()

    # ── inbound: barge-in and partial transcripts ────────────────────────────────────────────

    def _now(self) -> float:
        """Engine seconds: wall time since start, or lead audio received if that ran ahead."""
        return max(time.perf_counter() - self._t0, self._in_bytes / (self.input_rate * 2))

    def _agent_speaking(self) -> bool:
        return self._turn is not None or self._now() < self._play_end

    def _during_speech(self) -> None:
        s = self.vad_settings
        speaking = self._agent_speaking()
        self._overlapped = self._overlapped or speaking
        if speaking and not self._barged:
            opening = self._playing_opening or (self._turn is not None and self._turn.opening)
            threshold = s.opening_barge_in_ms if opening else s.barge_in_ms
            if self._vad.speech_ms >= threshold:
                self._barge_in()
        # Only a first utterance said over the opening is probed: an answering machine starts
        # talking as it picks up, over the greeting, and at length. A person answering after the
        # greeting costs no extra transcriptions.
        if (
            self._finished_utterances == 0
            and self._overlapped
            and self._probes_done < len(s.probe_ms)
            and self._vad.stream_ms - self._utt_start_ms >= s.probe_ms[self._probes_done]
        ):
            self._probes_done += 1
            self._queue_heard(_Heard(self._vad.current_pcm(), partial=True))

    def _barge_in(self) -> None:
        self._barged = True
        self.stats.barge_ins += 1
        if self._turn_task is not None and not self._turn_task.done():
            self._turn_task.cancel()
        # Drop what the dialog queued to say next; keep the bridge's own lines (closings).
        kept = []
        while not self._speech.empty():
            turn = self._speech.get_nowait()
            if turn.source == "say":
                kept.append(turn)
        for turn in kept:
            self._speech.put_nowait(turn)
        self._events.drop_audio()
        self._events.put_now(Interrupted())
        self._play_end = self._now()
        self._playing_opening = False

    def _queue_heard(self, heard: _Heard) -> None:
        try:
            self._heard.put_nowait(heard)
        except asyncio.QueueFull:
            # Speech-to-text is far behind; losing a partial (or, rarely, an utterance) beats
            # blocking the audio path.
            self.stats.dropped_utterances += 1
            log.warning("cascade utterance dropped", extra={"partial": heard.partial})

    # ── tasks ────────────────────────────────────────────────────────────────────────────────

    def _spawn(self, job: Callable[[], Awaitable[None]], name: str, *, fatal: bool = True) -> None:
        # A factory, not a coroutine: a task cancelled before it first runs leaves no coroutine
        # behind that was never awaited.
        self._tasks.append(asyncio.create_task(self._guard(job, name, fatal), name=name))

    async def _guard(self, job: Callable[[], Awaitable[None]], name: str, fatal: bool) -> None:
        try:
            await job()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("cascade task failed", extra={"task": name})
            if fatal and not self._closed:
                self._events.put_now(EngineFailed(reason=f"{name}: {type(exc).__name__}: {exc}"))
                self._events.close()

    async def _presynth(self, lines: list[str]) -> None:
        assert self._cache is not None
        for line in lines:
            for sentence in split_sentences(line):
                await self._cache.get(self.tts, sentence, self.output_rate)

    async def _listener(self) -> None:
        while True:
            heard = await self._heard.get()
            if heard.partial and (self._finished_utterances > 0 or self._ended_call):
                continue  # the utterance ended meanwhile: its final transcript is on the way
            started = time.perf_counter()
            text = await self.stt.transcribe(heard.pcm, self._vad_rate, prompt=self._prompt)
            elapsed = (time.perf_counter() - started) * 1000
            (self.stats.partial_stt_ms if heard.partial else self.stats.stt_ms).append(elapsed)
            if not text:
                continue
            if heard.partial:
                await self._events.put(TranscriptIn(text=text, final=False))
                await self._brain.put(_PartialText(text))
            else:
                self.stats.utterances += 1
                await self._events.put(TranscriptIn(text=text, final=True))
                await self._brain.put(_UserText(text, heard.overlapped))

    async def _think(self) -> None:
        while True:
            item = await self._brain.get()
            if isinstance(item, _AgentSaid):
                await self.dialog.on_agent_said(item.text)
                continue
            if isinstance(item, _UserText):
                actions = await self.dialog.on_user_text(item.text, overlapped=item.overlapped)
            elif isinstance(item, _PartialText):
                actions = await self.dialog.on_partial_text(item.text)
            else:
                actions = await self.dialog.on_tool_result(item.call, item.result)
            for action in actions:
                if isinstance(action, Speak):
                    if action.text.strip():
                        await self._speech.put(_Turn(action.text, "dialog"))
                else:
                    if action.name == "end_call":
                        self._ended_call = True
                    await self._events.put(action)

    async def _speaker(self) -> None:
        while True:
            turn = await self._speech.get()
            self._turn = turn
            queued = time.perf_counter()
            task = asyncio.create_task(self._speak(turn, queued), name="cascade-turn")
            self._turn_task = task
            try:
                await asyncio.wait([task])
            finally:
                if not task.done():
                    task.cancel()  # the speaker itself is being cancelled (close)
                self._turn = None
                self._turn_task = None
            failure = None if task.cancelled() else task.exception()
            if failure is not None:
                raise failure  # _guard reports it as the engine's failure
            if turn.spoken:
                await self._events.put(TranscriptOut(text=" ".join(turn.spoken)))
            await self._events.put(TurnComplete())
            await self._events.put(self._usage())

    async def _speak(self, turn: _Turn, queued: float) -> None:
        assert self._cache is not None
        first = True
        for sentence in split_sentences(turn.text):
            pcm = self._cache.peek(self.tts, sentence, self.output_rate)
            if pcm is None:
                pcm = await self._cache.get(self.tts, sentence, self.output_rate)
            turn.spoken.append(sentence)
            size = self._chunk_bytes
            for i in range(0, len(pcm), size):
                chunk = pcm[i : i + size]
                now = self._now()
                self._play_end = max(self._play_end, now) + len(chunk) / (self.output_rate * 2)
                self._playing_opening = turn.opening
                self._usage_out += len(chunk)
                await self._events.put(AudioOut(pcm=chunk))
                if first:
                    first = False
                    self.stats.first_audio_ms.append((time.perf_counter() - queued) * 1000)

    def _usage(self) -> Usage:
        audio_in, self._usage_in = self._usage_in, 0
        audio_out, self._usage_out = self._usage_out, 0
        detail: dict[str, Any] = {"engine": self.name, "cost_usd": 0.0}
        if self.stats.stt_ms:
            detail["stt_ms_last"] = round(self.stats.stt_ms[-1], 1)
        return Usage(
            audio_seconds_in=audio_in / (self.input_rate * 2),
            audio_seconds_out=audio_out / (self.output_rate * 2),
            detail=detail,
        )


def _conforms(engine: CascadeEngine) -> Engine:
    return engine  # mypy checks the class against the Engine protocol here
