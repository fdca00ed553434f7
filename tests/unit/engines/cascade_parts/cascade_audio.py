"""Synthetic audio for the cascade's unit tests: a voiced, vowel-like sound (a 120 Hz pulse train
through three formants, at a syllable rate) that webrtcvad takes for speech, plus silence and
faint line hiss that it must not."""

from __future__ import annotations

import numpy as np

RATE = 16000


def voiced(ms: int, rate: int = RATE, f0: float = 120.0, level: float = 10000.0) -> bytes:
    n = rate * ms // 1000
    t = np.arange(n) / rate
    x = np.zeros(n)
    for k in range(1, 30):
        f = k * f0 * (1 + 0.02 * np.sin(2 * np.pi * 3 * t))
        amp = sum(1 / (1 + ((k * f0 - formant) / 100) ** 2) for formant in (700, 1200, 2500))
        x += amp * np.sin(2 * np.pi * np.cumsum(f) / rate)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)
    peak = float(np.abs(x).max()) or 1.0
    return (x / peak * level).astype("<i2").tobytes()


def silence(ms: int, rate: int = RATE) -> bytes:
    return bytes(rate * 2 * ms // 1000)


def hiss(ms: int, rate: int = RATE, rms: float = 40.0, seed: int = 0) -> bytes:
    noise = np.random.default_rng(seed).normal(0, rms, rate * ms // 1000)
    return noise.astype("<i2").tobytes()


def frames(pcm: bytes, ms: int = 20, rate: int = RATE) -> list[bytes]:
    size = rate * 2 * ms // 1000
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]
