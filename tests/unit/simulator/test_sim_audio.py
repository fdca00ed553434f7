"""Audio plumbing: one output frame per tick at any stream rate, a flushable playback buffer."""

from __future__ import annotations

import numpy as np

from local.sautikit.audio import FRAME, PlaybackBuffer, Reframer, StreamResampler, beep, tone


def test_reframer_emits_exactly_one_frame_per_tick_and_keeps_the_signal():
    for rate, size in ((8000, 160), (16000, 320)):
        rf = Reframer(rate)
        sig = tone(440, 2.0)
        out = [rf.push(sig[i : i + FRAME]) for i in range(0, sig.size, FRAME)]
        assert {o.size for o in out} == {size}
        joined = np.concatenate(out).astype(np.float32)
        spectrum = np.abs(np.fft.rfft(joined[rate // 5 :]))
        assert abs(np.argmax(spectrum) * rate / (joined.size - rate // 5) - 440) < 5


def test_playback_buffer_plays_in_frames_and_clears_on_kill_audio():
    buf = PlaybackBuffer()
    buf.append(np.ones(500, np.int16))
    buf.append(np.ones(500, np.int16) * 2)
    first = buf.pop_frame()
    assert first.size == FRAME
    assert (first == 1).all()
    second = buf.pop_frame()
    assert list(second[178:182]) == [1, 1, 2, 2]
    assert buf.clear() == 1000 - 2 * FRAME
    assert buf.pop_frame() is None


def test_stream_resampler_keeps_duration():
    rs = StreamResampler(8000, 16000)
    chunks = [rs(np.zeros(160, np.int16)) for _ in range(100)]
    # Everything comes out but the resampler's fixed latency (a few tens of ms stay buffered).
    assert 0 <= 32000 - sum(c.size for c in chunks) < 800


def test_beep_is_400ms_of_1khz():
    b = beep().astype(np.float32)
    assert b.size == 6400
    assert abs(np.argmax(np.abs(np.fft.rfft(b))) * 16000 / b.size - 1000) < 5
