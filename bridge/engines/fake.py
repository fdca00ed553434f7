"""A tiny scripted engine for tests, the local stack's smoke runs and the benchmark (ENGINE=fake).

It hears with an energy detector (an utterance = speech, then `end_silence_ms` of quiet) and
"speaks" 24 kHz tones, so the whole relay (resampling 24k -> the stream's rate, framing, playout
tracking, barge-in) runs without a model. By default every utterance gets a short tone reply.
A script makes it behave like an interviewer: step N runs after the lead's N-th utterance, calls
the tools it lists, then speaks the next question when the bridge says "continue".
It records what the bridge asked of it (`said`, `tool_results`, `truncations`, `started`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.audio import pcm_ms, peak, tone
from bridge.engines.base import (
    AudioOut,
    EngineEvent,
    Interrupted,
    SessionContext,
    ToolCall,
    TranscriptIn,
    TranscriptOut,
    TurnComplete,
    Usage,
)


@dataclass(frozen=True)
class FakeStep:
    """What the agent does after one lead utterance: call these tools, then speak.

    `say` None means: the next question if the last tool said "continue", nothing after
    "wrap_up", a tone reply when there were no tools."""

    tools: tuple[tuple[str, dict[str, Any]], ...] = ()
    say: str | None = None
    heard: str = "(lead speech)"


@dataclass(frozen=True)
class _Speak:
    text: str


@dataclass(frozen=True)
class _Utterance:
    index: int


class FakeEngine:
    name = "fake"

    def __init__(
        self,
        *,
        input_rate: int = 16000,
        output_rate: int = 24000,
        script: Sequence[FakeStep] = (),
        reply_ms: int = 600,
        ms_per_word: int = 60,
        min_reply_ms: int = 300,
        chunk_ms: int = 100,
        pace_s: float = 0.0,
        tone_hz: float = 440.0,
        speech_peak: int = 1200,
        min_speech_ms: int = 100,
        end_silence_ms: int = 300,
        start_delay_s: float = 0.0,
        fail_on_start: bool = False,
        stop_on_interrupt: bool = True,
    ) -> None:
        self.input_rate = input_rate
        self.output_rate = output_rate
        self._script = list(script)
        self._reply_ms = reply_ms
        self._ms_per_word = ms_per_word
        self._min_reply_ms = min_reply_ms
        self._chunk_ms = chunk_ms
        self._pace_s = pace_s
        self._tone_hz = tone_hz
        self._speech_peak = speech_peak
        self._min_speech_ms = min_speech_ms
        self._end_silence_ms = end_silence_ms
        self._start_delay_s = start_delay_s
        self._fail_on_start = fail_on_start
        self._stop_on_interrupt = stop_on_interrupt  # False: like a model whose stream lags the cut

        self._events: asyncio.Queue[EngineEvent | None] = asyncio.Queue()
        self._jobs: asyncio.Queue[_Speak | _Utterance] = asyncio.Queue()
        self._results: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._worker: asyncio.Task[None] | None = None
        self._voiced_ms = 0.0
        self._quiet_ms = 0.0
        self._utterances = 0
        self._speaking_until = 0.0
        self._interrupted_this_turn = False
        self._closed = False

        self.started: SessionContext | None = None
        self.said: list[str] = []
        self.tool_results: list[tuple[ToolCall, dict[str, Any]]] = []
        self.truncations: list[int] = []
        self.audio_in_bytes = 0
        self.interrupted_at: list[float] = []  # loop time of each Interrupted it emitted

    @classmethod
    def from_settings(cls, settings: Any) -> FakeEngine:
        return cls()

    # ------------------------------------------------------------------ Engine

    async def start(self, ctx: SessionContext) -> None:
        if self._start_delay_s:
            await asyncio.sleep(self._start_delay_s)
        if self._fail_on_start:
            raise ConnectionError("fake engine told to fail on start")
        self.started = ctx
        self._worker = asyncio.create_task(self._work(), name=f"fake-engine-{ctx.session_id}")

    async def send_audio(self, pcm: bytes) -> None:
        self.audio_in_bytes += len(pcm)
        ms = pcm_ms(len(pcm), self.input_rate)
        loop_time = asyncio.get_running_loop().time()
        if peak(pcm) >= self._speech_peak:
            self._voiced_ms += ms
            self._quiet_ms = 0.0
            if (
                loop_time < self._speaking_until
                and self._voiced_ms >= self._min_speech_ms
                and not self._interrupted_this_turn
            ):
                self._interrupted_this_turn = True
                self._speaking_until = 0.0
                self.interrupted_at.append(loop_time)
                self.emit(Interrupted())
            return
        if self._voiced_ms >= self._min_speech_ms:
            self._quiet_ms += ms
            if self._quiet_ms >= self._end_silence_ms:
                self._voiced_ms = self._quiet_ms = 0.0
                self._utterances += 1
                self._jobs.put_nowait(_Utterance(self._utterances))
        else:
            self._voiced_ms = 0.0

    async def say(self, text: str) -> None:
        self.said.append(text)
        self._jobs.put_nowait(_Speak(text))

    async def send_tool_result(self, call: ToolCall, result: dict[str, Any]) -> None:
        self.tool_results.append((call, result))
        fut = self._results.pop(call.call_id, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    async def truncate(self, played_ms: int) -> None:
        self.truncations.append(played_ms)

    async def events(self) -> AsyncIterator[EngineEvent]:
        while True:
            ev = await self._events.get()
            if ev is None:
                return
            yield ev

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for fut in self._results.values():
            fut.cancel()
        self._events.put_nowait(None)

    # ------------------------------------------------------------------ test hooks

    def emit(self, event: EngineEvent | None) -> None:
        """Push an event as if the model had sent it (None ends the event stream)."""
        self._events.put_nowait(event)

    # ------------------------------------------------------------------ behaviour

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            if isinstance(job, _Speak):
                await self._speak(job.text)
            else:
                await self._answer(job.index)

    async def _answer(self, index: int) -> None:
        step = self._script[index - 1] if index - 1 < len(self._script) else None
        self.emit(TranscriptIn(step.heard if step else "(lead speech)", final=True))
        if step is None:
            if self._script:
                return  # the script is over: listen only
            await self._speak("", ms=self._reply_ms)
            return
        last: dict[str, Any] | None = None
        for name, args in step.tools:
            call = ToolCall(call_id=f"fake-{next(self._ids)}", name=name, args=dict(args))
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._results[call.call_id] = fut
            self.emit(call)
            last = await fut
        if step.say is not None:
            await self._speak(step.say)
        elif last is None:
            await self._speak("", ms=self._reply_ms)
        elif last.get("status") == "continue":
            await self._speak(str(last.get("next_question", "")))
        elif last.get("status") == "error":
            await self._speak("Sorry, could you say that again?")
        # "wrap_up": say nothing, the bridge speaks the closing line.

    async def _speak(self, text: str, ms: int | None = None) -> None:
        if ms is None:
            ms = min(4000, max(self._min_reply_ms, self._ms_per_word * max(1, len(text.split()))))
        pcm = tone(self._tone_hz, ms, self.output_rate)
        step = self.output_rate * 2 * self._chunk_ms // 1000
        loop = asyncio.get_running_loop()
        self._interrupted_this_turn = False
        self._speaking_until = loop.time() + ms / 1000.0
        for i in range(0, len(pcm), step):
            if self._interrupted_this_turn and self._stop_on_interrupt:
                break
            self.emit(AudioOut(pcm[i : i + step]))
            if self._pace_s:
                await asyncio.sleep(self._pace_s)
        if text:
            self.emit(TranscriptOut(text))
        self.emit(Usage(input_tokens=10, output_tokens=len(text.split()) or 1, audio_seconds_out=ms / 1000.0))
        self.emit(TurnComplete())
