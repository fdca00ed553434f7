"""Speech-to-text part: the packaged model only, loop clean-up, silence is no words."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bridge.engines.cascade import STTError, WhisperSTT
from bridge.engines.cascade.stt import _collapse_loops, pcm_to_float


def test_only_a_folder_with_a_converted_model_is_accepted(tmp_path: Path) -> None:
    # A model *name* ("tiny.en") would make faster-whisper download it: refused up front.
    with pytest.raises(STTError, match="no CTranslate2 Whisper model"):
        WhisperSTT("tiny.en")
    with pytest.raises(STTError):
        WhisperSTT(tmp_path)
    assert (WhisperSTT().model_path / "model.bin").is_file()


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("Just me. Just me. Just me.", "Just me."),
        ("Yes. yes. No.", "Yes. No."),
        ("No, no, not now.", "No, no, not now."),
        ("Forty seats. Maybe fifty. Forty seats.", "Forty seats. Maybe fifty. Forty seats."),
        ("", ""),
    ],
)
def test_decoder_loops_are_collapsed(text: str, clean: str) -> None:
    assert _collapse_loops(text) == clean


def test_pcm_is_resampled_to_16k_floats() -> None:
    pcm = (np.ones(8000) * 16384).astype("<i2").tobytes()  # 1 s at 8 kHz, half scale
    audio = pcm_to_float(pcm, 8000)
    assert audio.dtype == np.float32
    assert audio.size == 16000
    assert float(np.median(audio)) == pytest.approx(0.5, abs=0.01)


async def test_silence_and_slivers_are_no_words() -> None:
    stt = WhisperSTT()
    assert await stt.transcribe(bytes(32000), 16000) == ""
    assert await stt.transcribe(bytes(1000), 16000) == ""  # under 0.1 s: not even decoded
