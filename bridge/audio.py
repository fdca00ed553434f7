"""Pure audio helpers for the relay: channel split, streaming resampling, framing, playout clock.

Everything here runs on the per-frame hot path (one call = 50 frames a second each way, hundreds
of calls per core), so the helpers avoid Python loops over samples and allocate as little as the
work allows. numpy is used where it pays (channel split, level checks); soxr does the resampling.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import soxr

SAMPLE_WIDTH = 2  # S16LE
FRAME_MS = 20

# soxr's "quick" cubic interpolator. In streaming mode with 20 ms chunks the other qualities hold
# back output to compensate their filters: measured 20-61 ms for LQ and 37-115 ms for HQ/VHQ
# (16k<->24k and 8k<->16k), against < 0.3 ms for QQ. Phone audio is band-limited to 4 or 8 kHz
# anyway, so the relay takes QQ's slight aliasing over tens of milliseconds of added delay.
# tests/unit/bridge/test_audio.py measures the delay and asserts it.
RESAMPLE_QUALITY = "QQ"

_I16 = np.dtype("<i2")
_NATIVE_LE = sys.byteorder == "little"  # memoryview.cast("h") reads native order; S16LE matches it
_EMPTY_I16 = np.zeros(0, dtype=_I16)


def frame_bytes(rate: int, ms: int = FRAME_MS) -> int:
    """Bytes in one `ms` frame of mono S16LE at `rate` (640 at 16 kHz, 320 at 8 kHz)."""
    return rate * SAMPLE_WIDTH * ms // 1000


def pcm_ms(nbytes: int, rate: int) -> float:
    """Duration in milliseconds of `nbytes` of mono S16LE at `rate`."""
    return nbytes * 1000.0 / (rate * SAMPLE_WIDTH)


def deinterleave(pcm: bytes, channels: int, channel: int = 0) -> bytes:
    """One channel out of interleaved S16LE. A trailing partial sample frame is dropped."""
    if channels == 1:
        return pcm
    samples = np.frombuffer(pcm, dtype=_I16, count=len(pcm) // SAMPLE_WIDTH)
    usable = len(samples) - len(samples) % channels
    return samples[channel:usable:channels].tobytes()


def peak(pcm: bytes | bytearray | memoryview) -> int:
    """Peak absolute sample value over every 8th sample: enough to tell speech from quiet, and at
    ~3 µs per 20 ms frame (a strided memoryview and the builtins) cheaper than numpy's reductions."""
    if len(pcm) < 2 * SAMPLE_WIDTH:
        return 0
    if _NATIVE_LE:
        samples = memoryview(pcm).cast("B")[: len(pcm) - len(pcm) % 2].cast("h")[::8]
        hi, lo = max(samples), min(samples)
    else:  # pragma: no cover - big-endian hosts
        arr = np.frombuffer(pcm, dtype=_I16, count=len(pcm) // SAMPLE_WIDTH)[::8]
        hi, lo = int(arr.max()), int(arr.min())
    return hi if hi >= -lo else -lo


class StreamResampler:
    """A soxr stream for one direction of one call: created once, reused across turns.

    `process` returns whatever output the input produced; `flush` drains the few samples the
    interpolator still holds (at the end of a reply) and readies the stream for the next one.
    """

    __slots__ = ("_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int, quality: str = RESAMPLE_QUALITY) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm: bytes | bytearray | memoryview) -> bytes:
        samples = np.frombuffer(pcm, dtype=_I16, count=len(pcm) // SAMPLE_WIDTH)
        out: np.ndarray = self._stream.resample_chunk(samples)
        return out.tobytes()

    def flush(self) -> bytes:
        out: np.ndarray = self._stream.resample_chunk(_EMPTY_I16, last=True)
        self._stream.clear()
        return out.tobytes()

    def reset(self) -> None:
        """Forget buffered input (after a barge-in the rest of the reply is thrown away)."""
        self._stream.clear()

    def pending_ms(self) -> float:
        """Output the stream is holding back right now, in milliseconds (its own delay)."""
        return float(self._stream.delay()) * 1000.0 / self.out_rate


def make_resampler(in_rate: int, out_rate: int) -> StreamResampler | None:
    """A resampler only where the rates differ; None means pass the bytes through untouched."""
    return None if in_rate == out_rate else StreamResampler(in_rate, out_rate)


class Framer:
    """Cuts a byte stream into fixed-size frames, carrying the remainder to the next push."""

    __slots__ = ("_carry", "frame_size")

    def __init__(self, frame_size: int) -> None:
        if frame_size <= 0 or frame_size % SAMPLE_WIDTH:
            raise ValueError("frame size must be a positive whole number of samples")
        self.frame_size = frame_size
        self._carry = bytearray()

    def push(self, pcm: bytes) -> list[bytes]:
        size = self.frame_size
        if self._carry:
            self._carry += pcm
            data: bytes | bytearray = self._carry
        else:
            data = pcm
        n = len(data)
        full = n - n % size
        # A whole reply arrives as a few large chunks: slicing bytes copies each frame once,
        # which is the copy the socket write needs anyway.
        frames = [bytes(data[i : i + size]) for i in range(0, full, size)] if full else []
        if full == n:
            self._carry = bytearray()
        elif data is self._carry:
            del self._carry[:full]
        else:
            self._carry = bytearray(data[full:])
        return frames

    def flush(self) -> bytes:
        """The partial frame left over at the end of a reply (may be empty)."""
        rest = bytes(self._carry)
        self._carry = bytearray()
        return rest

    def clear(self) -> None:
        self._carry = bytearray()

    @property
    def pending(self) -> int:
        return len(self._carry)


class PlayoutClock:
    """Where the lead's playback is, by wall clock.

    Replies go out unpaced (the platform buffers and plays them, SAUTIKIT.md §5), so "sent" is not
    "heard". The clock assumes playback starts when a frame is sent, or when earlier audio ends,
    and runs in real time. It answers: how much of the current reply has been heard
    (`played_ms`, for engine.truncate on barge-in) and when the last byte will have been heard
    (`play_end`, before hanging up or transferring).
    """

    __slots__ = ("_bytes_per_s", "play_end", "turn_bytes", "turn_start")

    def __init__(self, rate: int) -> None:
        self._bytes_per_s = float(rate * SAMPLE_WIDTH)
        self.play_end = 0.0
        self.turn_start: float | None = None
        self.turn_bytes = 0

    def begin_turn(self, now: float) -> None:
        self.turn_start = max(now, self.play_end)
        self.turn_bytes = 0

    def sent(self, nbytes: int, now: float) -> None:
        if self.turn_start is None:
            self.begin_turn(now)
        start = self.play_end if self.play_end > now else now
        self.play_end = start + nbytes / self._bytes_per_s
        self.turn_bytes += nbytes

    def played_ms(self, now: float) -> int:
        """Milliseconds of the current reply the lead has heard by `now`."""
        if self.turn_start is None:
            return 0
        elapsed = (now - self.turn_start) * 1000.0
        total = self.turn_bytes * 1000.0 / self._bytes_per_s
        return int(min(max(elapsed, 0.0), total))

    def flush(self, now: float) -> None:
        """The platform dropped what it had buffered (killAudio): nothing is left to play."""
        if self.play_end > now:
            self.play_end = now

    def end_turn(self) -> None:
        self.turn_start = None

    def remaining(self, now: float) -> float:
        """Seconds until everything sent so far has been heard."""
        return self.play_end - now if self.play_end > now else 0.0


def tone(freq_hz: float, ms: int, rate: int, amplitude: int = 8000) -> bytes:
    """A sine tone as S16LE mono: test signals and the fake engine's "speech"."""
    n = rate * ms // 1000
    t = np.arange(n, dtype=np.float64) / rate
    return (np.sin(2.0 * math.pi * freq_hz * t) * amplitude).astype(_I16).tobytes()


def silence(ms: int, rate: int) -> bytes:
    return bytes(rate * SAMPLE_WIDTH * ms // 1000)
