"""A local voice for the lines the bridge must speak when the model cannot (model failure).

It is the cascade engine's espeak voice (libespeak-ng from the espeakng-loader package): a line
in a few milliseconds, no network, no model download. Clips are cached per text and rate, so a
campaign's fallback line is synthesised once per process.
"""

from __future__ import annotations

import logging

log = logging.getLogger("bridge")

_cache: dict[tuple[str, int, str], bytes] = {}


def _voice_for(language: str) -> str:
    # espeak voices are language codes; "en-KE" has none, so fall back to the base language.
    return language.split("-")[0].lower() or "en"


def synthesise(text: str, rate: int, language: str = "en") -> bytes | None:
    """`text` as S16LE mono at `rate`, or None when the local voice is unavailable. Blocking."""
    key = (text, rate, language)
    clip = _cache.get(key)
    if clip is not None:
        return clip
    try:
        # Imported on use: only a failing call ever needs the local voice.
        from bridge.engines.cascade.tts import EspeakTTS

        pcm = EspeakTTS(voice=_voice_for(language)).synthesize_blocking(text, rate)
    except (OSError, RuntimeError, ImportError) as exc:
        log.warning("local voice unavailable", extra={"error": str(exc)})
        return None
    if len(_cache) > 256:  # campaigns' fixed lines only; bound it anyway
        _cache.clear()
    _cache[key] = pcm
    return pcm
