"""Pure audio helpers: channel split, streaming resampling (and its delay), framing, playout clock."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.audio import (
    RESAMPLE_QUALITY,
    Framer,
    PlayoutClock,
    StreamResampler,
    deinterleave,
    frame_bytes,
    make_resampler,
    peak,
    silence,
    tone,
)

RATE_PAIRS = [(8000, 16000), (16000, 8000), (16000, 24000), (24000, 16000), (24000, 8000), (8000, 24000)]


def test_frame_size_follows_the_rate() -> None:
    assert frame_bytes(16000) == 640
    assert frame_bytes(8000) == 320
    assert frame_bytes(24000) == 960


def test_deinterleave_takes_the_leads_channel() -> None:
    lead = np.arange(100, dtype="<i2")
    agent = -np.arange(100, dtype="<i2") - 1
    stereo = np.empty(200, dtype="<i2")
    stereo[0::2], stereo[1::2] = lead, agent
    assert deinterleave(stereo.tobytes(), 2) == lead.tobytes()
    assert deinterleave(stereo.tobytes(), 2, channel=1) == agent.tobytes()
    # A torn pair at the end is dropped, not half-read.
    assert deinterleave(stereo.tobytes() + b"\x01\x00", 2) == lead.tobytes()
    mono = lead.tobytes()
    assert deinterleave(mono, 1) is mono


def test_peak_tells_speech_from_quiet() -> None:
    assert peak(silence(20, 16000)) == 0
    assert peak(tone(440, 20, 16000, amplitude=8000)) > 7000
    extreme = np.zeros(16, dtype="<i2")
    extreme[8] = -32768
    assert peak(extreme.tobytes()) == 32768  # no int16 overflow
    assert peak(bytes(641)) == 0  # a torn sample is ignored
    assert peak(b"") == 0


def test_make_resampler_only_where_rates_differ() -> None:
    assert make_resampler(16000, 16000) is None
    rs = make_resampler(24000, 16000)
    assert isinstance(rs, StreamResampler)


@pytest.mark.parametrize(("src", "dst"), RATE_PAIRS)
def test_streaming_resampler_delay_stays_within_a_few_ms(src: int, dst: int) -> None:
    """Fed 20 ms at a time (as the relay does), the stream must not hold output back for long:
    lag = input time consumed - output time produced, measured after every chunk."""
    rs = StreamResampler(src, dst)
    chunk = tone(300, 20, src)
    produced = 0
    worst_ms = 0.0
    for i in range(1, 101):
        produced += len(rs.process(chunk)) // 2
        lag_ms = (i * 20) - produced * 1000 / dst
        worst_ms = max(worst_ms, lag_ms)
        assert rs.pending_ms() < 3.0
    assert worst_ms < 3.0, f"{RESAMPLE_QUALITY} {src}->{dst} held back {worst_ms:.2f} ms"


@pytest.mark.parametrize(("src", "dst"), [(24000, 16000), (16000, 8000), (8000, 16000)])
def test_resampler_keeps_speech_band_tone(src: int, dst: int) -> None:
    """A 1 kHz tone survives the resampling: right length, right frequency, little distortion."""
    rs = StreamResampler(src, dst)
    pcm = tone(1000, 1000, src, amplitude=10000)
    step = frame_bytes(src)
    out = b"".join(rs.process(pcm[i : i + step]) for i in range(0, len(pcm), step)) + rs.flush()
    y = np.frombuffer(out, dtype="<i2").astype(np.float64)
    assert abs(len(y) - dst) <= 4
    spectrum = np.abs(np.fft.rfft(y[: dst // 2] * np.hanning(dst // 2)))
    freqs = np.fft.rfftfreq(dst // 2, 1 / dst)
    assert abs(freqs[int(np.argmax(spectrum))] - 1000) < 5
    # Energy away from the tone (> 50 Hz off) stays well below it: at least 30 dB down.
    tone_band = np.abs(freqs - 1000) <= 50
    ratio = spectrum[tone_band].max() / max(spectrum[~tone_band].max(), 1e-9)
    assert 20 * np.log10(ratio) > 30


def test_resampler_flush_then_reuse_for_the_next_reply() -> None:
    rs = StreamResampler(24000, 16000)
    total = 0
    for _ in range(2):  # two replies through one stream
        pcm = tone(440, 300, 24000)
        total = len(rs.process(pcm)) + len(rs.flush())
        assert abs(total // 2 - 4800) <= 2  # 300 ms at 16 kHz, nothing carried into the next reply
    rs.process(tone(440, 100, 24000))
    rs.reset()
    assert rs.pending_ms() < 0.5


def test_framer_cuts_fixed_frames_and_carries_the_rest() -> None:
    framer = Framer(640)
    assert framer.push(bytes(600)) == []
    assert framer.pending == 600
    frames = framer.push(bytes(1000))  # 1600 bytes buffered -> 2 frames, 320 left
    assert [len(f) for f in frames] == [640, 640]
    assert framer.pending == 320
    assert [len(f) for f in framer.push(bytes(1280))] == [640, 640]
    assert len(framer.flush()) == 320
    assert framer.pending == 0
    data = bytes(range(256)) * 10
    got = b"".join(framer.push(data)) + framer.flush()
    assert got == data
    with pytest.raises(ValueError, match="whole number"):
        Framer(641)


def test_playout_clock_tracks_what_was_heard() -> None:
    clock = PlayoutClock(16000)  # 32000 bytes per second
    clock.sent(32000 * 2, now=100.0)  # a 2 s reply sent at once
    assert clock.play_end == pytest.approx(102.0)
    assert clock.played_ms(100.5) == 500
    assert clock.played_ms(105.0) == 2000  # never more than was sent
    assert clock.remaining(101.0) == pytest.approx(1.0)
    clock.flush(100.5)  # killAudio: the rest is gone
    assert clock.remaining(100.5) == 0.0
    clock.end_turn()
    # The next reply starts when the previous one ends, not when it is sent.
    clock.sent(32000, now=200.0)
    clock.end_turn()
    clock.begin_turn(200.2)
    clock.sent(32000, now=200.2)
    assert clock.turn_start == pytest.approx(201.0)
    assert clock.played_ms(200.9) == 0
    assert clock.played_ms(201.25) == 250
    assert clock.play_end == pytest.approx(202.0)
