"""VAD endpointing on synthetic audio: where utterances start and end, what is dropped."""

from __future__ import annotations

import pytest
from cascade_audio import frames, hiss, silence, voiced

from bridge.engines.cascade import (
    SpeechDropped,
    SpeechStarted,
    UtteranceEnded,
    VadSettings,
    VoiceActivityDetector,
)


def run(vad: VoiceActivityDetector, pcm: bytes, chunk_ms: int = 20) -> list[tuple[int, object]]:
    """Push `pcm` in chunks; each event with the stream position (ms) at which it came out."""
    out: list[tuple[int, object]] = []
    for chunk in frames(pcm, chunk_ms, vad.rate):
        out += [(vad.stream_ms, e) for e in vad.push(chunk)]
    return out


def utterances(events: list[tuple[int, object]]) -> list[UtteranceEnded]:
    return [e for _, e in events if isinstance(e, UtteranceEnded)]


def test_one_utterance_ends_500_ms_after_the_speech() -> None:
    vad = VoiceActivityDetector()
    events = run(vad, silence(300) + voiced(1000) + silence(1000))
    kinds = [type(e) for _, e in events]
    assert kinds == [SpeechStarted, UtteranceEnded]
    started_at, start = events[0]
    assert isinstance(start, SpeechStarted)
    assert 300 <= started_at <= 400  # a few voiced frames confirm it
    assert 240 <= start.offset_ms <= 320  # but the offset points at the first voiced frame
    ended_at, utt = events[1]
    assert isinstance(utt, UtteranceEnded)
    assert 1300 + 480 <= ended_at <= 1300 + 540
    assert 960 <= utt.speech_ms <= 1040
    # Pre-roll (up to 300 ms) + the speech + 200 ms of tail.
    assert 1200 <= utt.duration_ms <= 1500
    assert len(utt.pcm) == utt.duration_ms * 32
    assert not utt.cut
    assert not vad.in_speech


def test_end_silence_is_configurable() -> None:
    vad = VoiceActivityDetector(settings=VadSettings(end_silence_ms=300))
    events = run(vad, voiced(600) + silence(1000))
    ended_at = next(at for at, e in events if isinstance(e, UtteranceEnded))
    assert 600 + 280 <= ended_at <= 600 + 340


def test_a_short_pause_does_not_split_a_long_one_does() -> None:
    one = run(VoiceActivityDetector(), voiced(600) + silence(300) + voiced(600) + silence(800))
    assert len(utterances(one)) == 1
    two = run(VoiceActivityDetector(), voiced(600) + silence(700) + voiced(600) + silence(800))
    assert len(utterances(two)) == 2


def test_a_click_is_dropped_not_transcribed() -> None:
    events = run(VoiceActivityDetector(), silence(200) + voiced(100) + silence(800))
    assert [type(e) for _, e in events] == [SpeechStarted, SpeechDropped]
    assert utterances(events) == []


def test_minimum_speech_length_is_configurable() -> None:
    vad = VoiceActivityDetector(settings=VadSettings(min_speech_ms=60))
    assert len(utterances(run(vad, voiced(100) + silence(800)))) == 1


def test_line_hiss_is_never_speech() -> None:
    vad = VoiceActivityDetector()
    assert run(vad, hiss(3000)) == []
    assert not vad.in_speech


def test_a_monologue_is_cut_at_the_maximum_length() -> None:
    vad = VoiceActivityDetector(settings=VadSettings(max_utterance_ms=2000))
    events = run(vad, voiced(3000) + silence(800))
    utts = utterances(events)
    assert utts[0].cut
    assert utts[0].duration_ms <= 2000
    assert len(utts) == 2  # the rest is its own utterance


def test_speech_ms_grows_while_speaking_for_barge_in() -> None:
    vad = VoiceActivityDetector()
    run(vad, silence(200) + voiced(260))
    assert vad.in_speech
    assert vad.speech_ms >= 200
    assert len(vad.current_pcm()) > 0
    run(vad, silence(800))
    assert vad.speech_ms == 0
    assert vad.current_pcm() == b""


@pytest.mark.parametrize("chunk_ms", [7, 20, 333])
def test_chunk_size_does_not_matter(chunk_ms: int) -> None:
    pcm = silence(300) + voiced(800) + silence(400) + voiced(500) + silence(900)
    reference = utterances(run(VoiceActivityDetector(), pcm, 20))
    got = utterances(run(VoiceActivityDetector(), pcm, chunk_ms))
    assert [(u.offset_ms, u.speech_ms, u.pcm) for u in got] == [
        (u.offset_ms, u.speech_ms, u.pcm) for u in reference
    ]


@pytest.mark.parametrize(("rate", "frame_ms"), [(8000, 20), (16000, 30), (48000, 10)])
def test_other_rates_and_frame_sizes(rate: int, frame_ms: int) -> None:
    vad = VoiceActivityDetector(rate, VadSettings(frame_ms=frame_ms, start_window_ms=90))
    utts = utterances(run(vad, voiced(800, rate) + silence(900, rate), 10))
    assert len(utts) == 1
    assert len(utts[0].pcm) == utts[0].duration_ms * rate * 2 // 1000


def test_flush_closes_an_utterance_under_way() -> None:
    vad = VoiceActivityDetector()
    run(vad, voiced(500))
    assert [type(e) for e in vad.flush()] == [UtteranceEnded]
    assert vad.flush() == []


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        VoiceActivityDetector(22050)
    with pytest.raises(ValueError, match="frame_ms"):
        VadSettings(frame_ms=25)
    with pytest.raises(ValueError, match="aggressiveness"):
        VadSettings(aggressiveness=4)
    with pytest.raises(ValueError, match="end_silence_ms"):
        VadSettings(end_silence_ms=0)
