"""Streaming voice activity detection: WebRTC's VAD on fixed frames, with endpointing.

`VoiceActivityDetector.push(pcm)` takes the lead's audio in any chunk size and returns what
happened: `SpeechStarted` once a few voiced frames make speech likely, and `UtteranceEnded` with
the utterance's audio once `end_silence_ms` of quiet follows it. Bursts with less than
`min_speech_ms` of voiced audio (a click, a cough, line noise) end without an utterance.

The frame classifier is webrtcvad (a small GMM; microseconds a frame). A level floor in front of
it keeps faint line hiss, which the GMM sometimes calls voiced, out of the speech count.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

_VAD_RATES = (8000, 16000, 32000, 48000)
_I16 = np.dtype("<i2")


@dataclass(frozen=True)
class VadSettings:
    """Endpointing and barge-in knobs (milliseconds unless named otherwise)."""

    frame_ms: int = 20  # webrtcvad takes 10, 20 or 30 ms frames
    aggressiveness: int = 2  # 0 (lenient) .. 3 (strict about what counts as speech)
    start_ms: int = 60  # voiced audio within `start_window_ms` that starts an utterance
    start_window_ms: int = 100
    end_silence_ms: int = 500  # quiet after speech that ends the utterance
    min_speech_ms: int = 150  # voiced audio an utterance needs, or it is dropped as noise
    pre_roll_ms: int = 300  # audio kept from before the start, so first syllables are not clipped
    tail_ms: int = 200  # trailing quiet kept at the end of an utterance
    max_utterance_ms: int = 15_000  # a monologue is cut here so the interviewer can answer
    energy_floor: int = 120  # RMS (S16) under which a frame is never speech
    barge_in_ms: int = 200  # lead speech over the agent that interrupts it
    opening_barge_in_ms: int = 800  # during the greeting: a "Hello?" should not cut it short
    probe_ms: tuple[int, ...] = (1500, 2500)  # partial transcripts of the first utterance (voicemail)

    def __post_init__(self) -> None:
        if self.frame_ms not in (10, 20, 30):
            raise ValueError("frame_ms must be 10, 20 or 30")
        if not 0 <= self.aggressiveness <= 3:
            raise ValueError("aggressiveness must be 0..3")
        if self.start_window_ms < self.frame_ms or self.start_ms > self.start_window_ms:
            raise ValueError("start_ms must fit inside start_window_ms, which holds at least one frame")
        for name in ("end_silence_ms", "min_speech_ms", "max_utterance_ms", "barge_in_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True)
class SpeechStarted:
    """Speech began `offset_ms` into the stream (the start of its pre-roll excluded)."""

    offset_ms: int


@dataclass(frozen=True)
class UtteranceEnded:
    """An utterance and its audio (S16LE mono at the detector's rate, pre-roll and tail included)."""

    pcm: bytes
    offset_ms: int  # where speech started in the stream
    speech_ms: int  # voiced audio in it
    duration_ms: int  # audio in `pcm`
    cut: bool = False  # ended by max_utterance_ms, not by silence


@dataclass(frozen=True)
class SpeechDropped:
    """A burst too short to be speech ended; nothing to transcribe."""

    speech_ms: int


VadEvent = SpeechStarted | UtteranceEnded | SpeechDropped


class VoiceActivityDetector:
    """One call's inbound audio → speech start / utterance end events. Not thread-safe."""

    def __init__(self, rate: int = 16000, settings: VadSettings | None = None) -> None:
        if rate not in _VAD_RATES:
            raise ValueError(f"VAD rate must be one of {_VAD_RATES}, got {rate}")
        self.rate = rate
        self.settings = s = settings or VadSettings()
        self._vad = webrtcvad.Vad(s.aggressiveness)
        self._frame_bytes = rate * 2 * s.frame_ms // 1000
        self._carry = bytearray()
        self._window: deque[bool] = deque(maxlen=max(1, s.start_window_ms // s.frame_ms))
        self._pre_roll: deque[bytes] = deque(maxlen=max(1, s.pre_roll_ms // s.frame_ms))
        self._frames: list[bytes] = []  # the utterance so far
        self._in_speech = False
        self._voiced_ms = 0
        self._silence_ms = 0
        self._start_offset_ms = 0
        self._stream_ms = 0
        self._floor_sq = float(s.energy_floor) ** 2

    # ── state the engine reads ──────────────────────────────────────────────────────────────

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    @property
    def speech_ms(self) -> int:
        """Voiced audio in the utterance under way (0 outside speech)."""
        return self._voiced_ms if self._in_speech else 0

    @property
    def stream_ms(self) -> int:
        """Audio pushed so far, in whole frames."""
        return self._stream_ms

    def current_pcm(self) -> bytes:
        """The utterance under way (for a partial transcript); empty outside speech."""
        return b"".join(self._frames) if self._in_speech else b""

    # ── input ───────────────────────────────────────────────────────────────────────────────

    def push(self, pcm: bytes) -> list[VadEvent]:
        self._carry += pcm
        size = self._frame_bytes
        usable = len(self._carry) - len(self._carry) % size
        if not usable:
            return []
        events: list[VadEvent] = []
        view = memoryview(self._carry)
        try:
            for i in range(0, usable, size):
                event = self._frame(bytes(view[i : i + size]))
                if event is not None:
                    events.append(event)
        finally:
            view.release()
        del self._carry[:usable]
        return events

    def flush(self) -> list[VadEvent]:
        """End of stream: close an utterance under way as if silence followed."""
        if not self._in_speech:
            return []
        return [self._finish(cut=False)]

    def reset(self) -> None:
        self._carry.clear()
        self._window.clear()
        self._pre_roll.clear()
        self._frames = []
        self._in_speech = False
        self._voiced_ms = self._silence_ms = 0

    # ── per frame ───────────────────────────────────────────────────────────────────────────

    def _is_speech(self, frame: bytes) -> bool:
        samples = np.frombuffer(frame, dtype=_I16).astype(np.float32)
        if float(np.mean(samples * samples)) < self._floor_sq:
            return False
        return bool(self._vad.is_speech(frame, self.rate))

    def _frame(self, frame: bytes) -> VadEvent | None:
        s = self.settings
        voiced = self._is_speech(frame)
        self._stream_ms += s.frame_ms
        if not self._in_speech:
            self._window.append(voiced)
            self._pre_roll.append(frame)
            if sum(self._window) * s.frame_ms < s.start_ms:
                return None
            # Start: the window's voiced frames count as speech already heard.
            self._in_speech = True
            self._frames = list(self._pre_roll)
            self._voiced_ms = sum(self._window) * s.frame_ms
            self._silence_ms = 0
            self._start_offset_ms = self._stream_ms - len(self._window) * s.frame_ms
            self._window.clear()
            self._pre_roll.clear()
            return SpeechStarted(offset_ms=self._start_offset_ms)
        self._frames.append(frame)
        if voiced:
            self._voiced_ms += s.frame_ms
            self._silence_ms = 0
        else:
            self._silence_ms += s.frame_ms
        if self._silence_ms >= s.end_silence_ms:
            return self._finish(cut=False)
        if len(self._frames) * s.frame_ms >= s.max_utterance_ms:
            return self._finish(cut=True)
        return None

    def _finish(self, *, cut: bool) -> VadEvent:
        s = self.settings
        frames = self._frames
        # Keep `tail_ms` of the trailing quiet: enough for the last consonant, not the whole wait.
        drop = max(0, self._silence_ms - s.tail_ms) // s.frame_ms
        if drop:
            frames = frames[: len(frames) - drop]
        voiced = self._voiced_ms
        offset = self._start_offset_ms
        self._in_speech = False
        self._frames = []
        self._voiced_ms = self._silence_ms = 0
        if voiced < s.min_speech_ms:
            return SpeechDropped(speech_ms=voiced)
        pcm = b"".join(frames)
        return UtteranceEnded(
            pcm=pcm,
            offset_ms=offset,
            speech_ms=voiced,
            duration_ms=len(pcm) * 1000 // (self.rate * 2),
            cut=cut,
        )
