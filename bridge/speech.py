"""A local voice for the lines the bridge must speak when the model cannot (model failure).

libespeak-ng (shipped by the espeakng-loader package, driven through ctypes) synthesises a line
in a few milliseconds without a network or a model download. Clips are cached per text and rate,
so a campaign's fallback line is synthesised once per process.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import soxr

log = logging.getLogger("bridge")

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Espeak:
    """libespeak-ng is one global synthesiser per process: every use goes through `_lock`."""

    def __init__(self) -> None:
        import espeakng_loader  # imported here: only a failing call ever needs it

        self._lock = threading.Lock()
        self._chunks: list[bytes] = []
        lib: Any = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
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
        data_parent = str(Path(espeakng_loader.get_data_path()).parent).encode()
        self.rate = int(lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_parent, 0))
        if self.rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        self._callback = _CALLBACK(self._on_audio)  # kept referenced: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib
        self._voice = b""

    def _on_audio(self, wav: Any, count: int, _events: Any) -> int:
        if count > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, count * 2))
        return 0

    def synth(self, text: str, voice: str = "en") -> bytes:
        raw = text.encode("utf-8") + b"\0"
        with self._lock:
            if voice.encode() != self._voice:
                if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    self._lib.espeak_SetVoiceByName(b"en")
                self._voice = voice.encode()
            self._chunks = []
            self._lib.espeak_Synth(raw, len(raw), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            return b"".join(self._chunks)


_engine: _Espeak | None = None
_engine_lock = threading.Lock()
_cache: dict[tuple[str, int], bytes] = {}


def _espeak() -> _Espeak:
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Espeak()
        return _engine


def _voice_for(language: str) -> str:
    # espeak voices are language codes; "en-KE" has none, so fall back to the base language.
    return language.split("-")[0].lower() or "en"


def synthesise(text: str, rate: int, language: str = "en") -> bytes | None:
    """`text` as S16LE mono at `rate`, or None when the local voice is unavailable. Blocking."""
    key = (text, rate)
    clip = _cache.get(key)
    if clip is not None:
        return clip
    try:
        engine = _espeak()
        pcm = engine.synth(text, _voice_for(language))
    except (OSError, RuntimeError, ImportError) as exc:
        log.warning("local voice unavailable", extra={"error": str(exc)})
        return None
    if engine.rate != rate and pcm:
        samples = np.frombuffer(pcm, dtype="<i2")
        pcm = soxr.resample(samples, engine.rate, rate, quality="HQ").astype("<i2").tobytes()
    if len(_cache) > 256:  # campaigns' fixed lines only; bound it anyway
        _cache.clear()
    _cache[key] = pcm
    return pcm
