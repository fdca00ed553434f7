"""The cascade engine (VAD → speech-to-text → dialog → text-to-speech) and its pluggable parts.

Local parts ship their models in packages (nothing downloads): `WhisperSTT` (faster-whisper,
tiny.en), `EspeakTTS` / `PiperTTS`, `RuleInterviewer`. Self-hosted HTTP parts speak the
OpenAI-compatible APIs: `OpenAICompatibleSTT`, `OpenAICompatibleTTS`, `LLMDialog`.
"""

from bridge.engines.cascade.engine import CascadeEngine, CascadeStats, fixed_lines, opening_text
from bridge.engines.cascade.http_parts import (
    HttpPartError,
    LLMDialog,
    OpenAICompatibleSTT,
    OpenAICompatibleTTS,
)
from bridge.engines.cascade.interviewer import (
    Dialog,
    DialogAction,
    RuleInterviewer,
    Speak,
    detect_end_intent,
    extract_answer,
)
from bridge.engines.cascade.stt import SpeechToText, STTError, WhisperSTT
from bridge.engines.cascade.tts import (
    EspeakTTS,
    PiperTTS,
    SpeechCache,
    TextToSpeech,
    TTSError,
    shared_cache,
    split_sentences,
)
from bridge.engines.cascade.vad import (
    SpeechDropped,
    SpeechStarted,
    UtteranceEnded,
    VadSettings,
    VoiceActivityDetector,
)

__all__ = [
    "CascadeEngine",
    "CascadeStats",
    "Dialog",
    "DialogAction",
    "EspeakTTS",
    "HttpPartError",
    "LLMDialog",
    "OpenAICompatibleSTT",
    "OpenAICompatibleTTS",
    "PiperTTS",
    "RuleInterviewer",
    "STTError",
    "Speak",
    "SpeechCache",
    "SpeechDropped",
    "SpeechStarted",
    "SpeechToText",
    "TTSError",
    "TextToSpeech",
    "UtteranceEnded",
    "VadSettings",
    "VoiceActivityDetector",
    "WhisperSTT",
    "detect_end_intent",
    "extract_answer",
    "fixed_lines",
    "opening_text",
    "shared_cache",
    "split_sentences",
]
