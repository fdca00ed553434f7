"""The one interface every realtime engine implements, and the events it emits.

The bridge feeds the lead's audio in with `send_audio` (S16LE mono at `input_rate`) and consumes
`events()`: agent audio (S16LE mono at `output_rate`), transcripts, tool calls, interruptions and
usage. Engines know nothing about Sautikit, DynamoDB or scoring; the conversation does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from leadqual.campaign import Campaign
from leadqual.models import Answer, Lead


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call; `parameters` is a JSON Schema object."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True)
class SessionContext:
    """What an engine needs to open a session for one call."""

    session_id: str
    campaign: Campaign
    lead: Lead
    instructions: str
    tools: tuple[ToolSpec, ...]
    answers: tuple[Answer, ...] = ()  # already given (a resumed or retried call)


@dataclass(frozen=True)
class AudioOut:
    pcm: bytes  # S16LE mono at the engine's output_rate


@dataclass(frozen=True)
class TranscriptIn:
    """What the lead said (speech-to-text)."""

    text: str
    final: bool = True


@dataclass(frozen=True)
class TranscriptOut:
    """What the agent said."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    call_id: str
    name: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Interrupted:
    """The lead started speaking over the agent: stop playback now (barge-in)."""


@dataclass(frozen=True)
class TurnComplete:
    """The agent finished a turn (all of its audio for this turn has been emitted)."""


@dataclass(frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds_in: float = 0.0
    audio_seconds_out: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineFailed:
    """The model session is gone for good (reconnects exhausted, fatal close code)."""

    reason: str


EngineEvent = (
    AudioOut | TranscriptIn | TranscriptOut | ToolCall | Interrupted | TurnComplete | Usage | EngineFailed
)


class Engine(Protocol):
    """A realtime conversational model session for one call."""

    name: str
    input_rate: int  # Hz of the audio send_audio expects
    output_rate: int  # Hz of AudioOut

    async def start(self, ctx: SessionContext) -> None:
        """Open the model session; raise on failure. The agent should greet at once."""

    async def send_audio(self, pcm: bytes) -> None:
        """Lead audio, S16LE mono at input_rate, in any chunk size."""

    async def say(self, text: str) -> None:
        """Make the agent speak this exact line next (handoff, closing, fallback)."""

    async def send_tool_result(self, call: ToolCall, result: dict[str, Any]) -> None:
        """Answer a ToolCall so the model can go on."""

    async def truncate(self, played_ms: int) -> None:
        """After an interruption: only `played_ms` of the last reply reached the lead."""

    def events(self) -> AsyncIterator[EngineEvent]:
        """The engine's events, in order, until the session ends."""
        ...

    async def close(self) -> None:
        """End the session and release its resources; idempotent."""
