"""Audio plumbing for the simulated switch: one internal rate, 20 ms frames, buffers and a WAV writer.

Inside a call everything is mono S16 at 16 kHz (`RATE`) in 20 ms frames (`FRAME` samples); audio is
resampled (soxr) only at the edges: TTS output, and the media stream's two directions.
"""

from __future__ import annotations

import io
import wave
from collections import deque
from pathlib import Path

import numpy as np
import soxr

RATE = 16_000
FRAME_MS = 20
FRAME = RATE * FRAME_MS // 1000  # 320 samples
FRAME_S = FRAME_MS / 1000
SILENCE = np.zeros(FRAME, dtype=np.int16)

# Energy gate for "someone is speaking" on 20 ms frames: RMS ≈ -42 dBFS. TTS speech sits far above,
# digital silence and comfort noise far below.
SPEECH_RMS = 260.0


def rms(frame: np.ndarray) -> float:
    if frame.size == 0:
        return 0.0
    f = frame.astype(np.float32)
    return float(np.sqrt(np.mean(f * f)))


def is_speech(frame: np.ndarray) -> bool:
    return rms(frame) >= SPEECH_RMS


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def resample(samples: np.ndarray, in_rate: int, out_rate: int) -> np.ndarray:
    """Whole-clip resampling (TTS output, Play files)."""
    if in_rate == out_rate or samples.size == 0:
        return samples.astype(np.int16, copy=False)
    return to_int16(soxr.resample(samples.astype(np.float32), in_rate, out_rate))


def mix(frames: list[np.ndarray]) -> np.ndarray:
    if not frames:
        return SILENCE
    if len(frames) == 1:
        return frames[0]
    return to_int16(np.sum([f.astype(np.int32) for f in frames], axis=0))


def tone(freq_hz: float, seconds: float, amplitude: float = 8000.0, rate: int = RATE) -> np.ndarray:
    n = round(seconds * rate)
    t = np.arange(n, dtype=np.float32) / rate
    out = amplitude * np.sin(2 * np.pi * freq_hz * t)
    # 5 ms fades: no clicks at the edges.
    fade = min(n // 2, int(0.005 * rate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        out[:fade] *= ramp
        out[-fade:] *= ramp[::-1]
    return to_int16(out)


def beep() -> np.ndarray:
    """The voicemail beep: 1 kHz, 400 ms."""
    return tone(1000.0, 0.4, amplitude=9000.0)


def ringback_cycle() -> np.ndarray:
    """One cycle of Kenyan/UK-style ringback (425 Hz, 0.4 on, 0.2 off, 0.4 on, 2.0 off)."""
    on = tone(425.0, 0.4, amplitude=3000.0)
    return np.concatenate([on, np.zeros(int(0.2 * RATE), np.int16), on, np.zeros(int(2.0 * RATE), np.int16)])


class Clip:
    """A clip being played frame by frame; `done` resolves when its last frame went out."""

    def __init__(self, samples: np.ndarray, label: str = "") -> None:
        self.samples = samples.astype(np.int16, copy=False)
        self.pos = 0
        self.label = label
        self.stopped = False

    @property
    def finished(self) -> bool:
        return self.stopped or self.pos >= self.samples.size

    def next_frame(self) -> np.ndarray:
        chunk = self.samples[self.pos : self.pos + FRAME]
        self.pos += FRAME
        if chunk.size < FRAME:
            chunk = np.concatenate([chunk, np.zeros(FRAME - chunk.size, np.int16)])
        return chunk


class PlaybackBuffer:
    """What the app sent over the stream, played out in real time; `clear()` is killAudio."""

    def __init__(self, max_seconds: float = 600.0) -> None:
        self._chunks: deque[np.ndarray] = deque()
        self._size = 0
        self._max = int(max_seconds * RATE)
        self.dropped_samples = 0

    def __len__(self) -> int:
        return self._size

    def append(self, samples: np.ndarray) -> None:
        if samples.size == 0:
            return
        room = self._max - self._size
        if samples.size > room:
            self.dropped_samples += samples.size - max(room, 0)
            samples = samples[: max(room, 0)]
            if samples.size == 0:
                return
        self._chunks.append(samples)
        self._size += samples.size

    def clear(self) -> int:
        flushed = self._size
        self._chunks.clear()
        self._size = 0
        return flushed

    def pop_frame(self) -> np.ndarray | None:
        """The next 20 ms, zero-padded at the end of the buffer; None when nothing is buffered."""
        if self._size == 0:
            return None
        out = np.zeros(FRAME, np.int16)
        filled = 0
        while filled < FRAME and self._chunks:
            head = self._chunks[0]
            take = min(FRAME - filled, head.size)
            out[filled : filled + take] = head[:take]
            filled += take
            if take == head.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[take:]
        self._size -= filled
        return out


class StreamResampler:
    """Chunked resampling with state (soxr), for audio arriving or leaving in pieces."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate, self.out_rate = in_rate, out_rate
        self._rs = None if in_rate == out_rate else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16")

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self._rs is None:
            return samples
        return np.asarray(self._rs.resample_chunk(samples), dtype=np.int16)


class Reframer:
    """Turns 16 kHz ticks into exactly one frame per tick at `rate` (a fixed 40 ms of latency absorbs
    the resampler's start-up delay, so the output never stutters)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.frame = rate * FRAME_MS // 1000
        self._resample = StreamResampler(RATE, rate)
        self._buf = np.zeros(2 * self.frame, np.int16)

    def push(self, frame16k: np.ndarray) -> np.ndarray:
        self._buf = np.concatenate([self._buf, self._resample(frame16k)])
        if self._buf.size < self.frame:
            out = np.concatenate([self._buf, np.zeros(self.frame - self._buf.size, np.int16)])
            self._buf = np.zeros(0, np.int16)
            return out
        out, self._buf = self._buf[: self.frame], self._buf[self.frame :]
        return out


class StereoWavWriter:
    """The call's recording: left = the lead, right = what the lead heard. Written as it happens."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._w = wave.open(str(path), "wb")  # noqa: SIM115 - lives as long as the call
        self._w.setnchannels(2)
        self._w.setsampwidth(2)
        self._w.setframerate(RATE)
        self.frames = 0

    def write(self, left: np.ndarray, right: np.ndarray) -> None:
        inter = np.empty(FRAME * 2, np.int16)
        inter[0::2], inter[1::2] = left, right
        self._w.writeframesraw(inter.astype("<i2").tobytes())
        self.frames += FRAME

    def close(self) -> None:
        self._w.close()


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(samples[, channels], rate) of a 16-bit WAV; stereo comes back as shape (n, 2)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError("only 16-bit PCM WAV is supported")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
        ch = w.getnchannels()
        rate = w.getframerate()
    return (data.reshape(-1, ch) if ch > 1 else data), rate


def decode_wav_bytes(raw: bytes) -> np.ndarray:
    """A WAV file's audio as mono 16 kHz (for <Play>)."""
    with wave.open(io.BytesIO(raw), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError("only 16-bit PCM WAV is supported")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)
        ch, rate = w.getnchannels(), w.getframerate()
    if ch > 1:
        data = data.reshape(-1, ch).mean(axis=1).astype(np.int16)
    return resample(data, rate, RATE)
