"""The media WebSocket as Sautikit speaks it (SAUTIKIT.md §5, drachtio mod_audio_fork framing).

Sautikit connects as a client offering the `audio.drachtio.org` subprotocol. The first message is
one text frame of JSON metadata whose fields are not published, so `parse_metadata` looks for the
call id and rates under several names; then binary frames of S16LE audio. Text and binary are told
apart by the frame's opcode (websockets hands us `str` or `bytes`), never by content.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

SUBPROTOCOL = "audio.drachtio.org"
KILL_AUDIO = json.dumps({"type": "killAudio"})  # flush what the platform has buffered (barge-in)

# Where the unpublished metadata frame may carry the call id, in order of preference.
_CALL_ID_KEYS = ("callSid", "call_sid", "call_id", "callId", "sessionId", "session_id", "streamSid")
_SESSION_KEYS = ("sessionId", "session_id", "session")
_SESSION_PREFIX = "HD_"  # Sautikit's session ids; call uuids look different
_RATE_KEYS = ("sampleRate", "sample_rate", "outputSamplingRate", "samplingRate")
_REPLY_RATE_KEYS = ("bidirectionalSamplingRate", "bidirectional_sampling_rate", "replyRate")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_RATES = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})


class ProtocolError(ValueError):
    """A frame or request that breaks the protocol; `reason` is safe to send back."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _rate(value: Any) -> int | None:
    try:
        rate = int(value)
    except (TypeError, ValueError):
        return None
    return rate if rate in _RATES else None


def _clean_id(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value).strip()
        if _SESSION_ID.match(text):
            return text
    return None


@dataclass(frozen=True)
class CallQuery:
    """What the stream URL says: `/stream?session=HD_…&token=…[&in_rate=16000&out_rate=16000]`.

    The voice webhook writes this URL into `<Stream url>`; Sautikit keeps its query string."""

    path: str
    session_id: str | None
    token: str | None
    in_rate: int | None = None
    out_rate: int | None = None


def parse_query(path: str) -> CallQuery:
    parts = urlsplit(path)
    q = parse_qs(parts.query, keep_blank_values=False)

    def first(*names: str) -> str | None:
        for name in names:
            values = q.get(name)
            if values:
                return values[0]
        return None

    return CallQuery(
        path=parts.path or "/",
        session_id=_clean_id(first("session", "sessionId", "session_id")),
        token=first("token"),
        in_rate=_rate(first("in_rate", "outputSamplingRate")),
        out_rate=_rate(first("out_rate", "bidirectionalSamplingRate")),
    )


@dataclass(frozen=True)
class StreamMeta:
    """The first text frame, parsed liberally. Missing fields stay None."""

    call_id: str | None = None
    session_id: str | None = None
    sample_rate: int | None = None
    reply_rate: int | None = None
    channels: int = 1
    headers: dict[str, str] = field(default_factory=dict)
    present: bool = False  # False when the stream started without a metadata frame


def _flat_headers(value: Any) -> dict[str, str]:
    # headerMetadata is a flat JSON object serialised as a string (SAUTIKIT.md §4); accept both.
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _channels(doc: dict[str, Any]) -> int:
    raw = doc.get("channels", doc.get("numChannels"))
    if isinstance(raw, int) and not isinstance(raw, bool) and raw in (1, 2):
        return raw
    mix = doc.get("mixType", doc.get("mix_type"))
    if isinstance(mix, str) and mix.lower() == "stereo":
        return 2
    return 1


def parse_metadata(text: str) -> StreamMeta:
    """Parse the metadata frame. Anything that is not a JSON object gives an empty StreamMeta."""
    try:
        doc = json.loads(text)
    except ValueError:
        return StreamMeta(present=True)
    if not isinstance(doc, dict):
        return StreamMeta(present=True)
    nested = doc.get("metadata")
    scopes: list[dict[str, Any]] = [doc] + ([nested] if isinstance(nested, dict) else [])
    headers = _flat_headers(doc.get("headers", nested.get("headers") if isinstance(nested, dict) else None))

    def pick(keys: tuple[str, ...], conv: Any) -> Any:
        for scope in scopes:
            for key in keys:
                if key in scope:
                    value = conv(scope[key])
                    if value is not None:
                        return value
        return None

    channels = _channels(doc)
    if channels == 1 and isinstance(nested, dict):
        channels = _channels(nested)
    ids = [v for scope in scopes for k in _CALL_ID_KEYS if (v := _clean_id(scope.get(k))) is not None]
    session = (
        pick(_SESSION_KEYS, _clean_id)
        or next((v for v in ids if v.startswith(_SESSION_PREFIX)), None)
        or _clean_id(headers.get("session") or headers.get("sessionId"))
    )
    # The call's own id (a uuid) when the frame has one besides the session id, for the call record.
    call_id = next((v for v in ids if not v.startswith(_SESSION_PREFIX)), None) or (ids[0] if ids else None)
    return StreamMeta(
        call_id=call_id,
        session_id=session,
        sample_rate=pick(_RATE_KEYS, _rate),
        reply_rate=pick(_REPLY_RATE_KEYS, _rate),
        channels=channels,
        headers=headers,
        present=True,
    )


class FrameGuard:
    """Makes incoming binary frames safe to relay and counts what it had to fix.

    Empty frames and frames above `max_bytes` are dropped; a frame that is not a whole number of
    sample frames (odd length, or a torn stereo pair) is trimmed to the last whole one.
    """

    __slots__ = ("align", "dropped_empty", "dropped_oversized", "frames", "max_bytes", "trimmed")

    def __init__(self, channels: int = 1, max_bytes: int = 64_000) -> None:
        self.align = 2 * channels
        self.max_bytes = max_bytes
        self.frames = 0
        self.trimmed = 0
        self.dropped_empty = 0
        self.dropped_oversized = 0

    def clean(self, data: bytes) -> bytes | None:
        n = len(data)
        if n > self.max_bytes:
            self.dropped_oversized += 1
            return None
        extra = n % self.align
        if extra:
            self.trimmed += 1
            n -= extra
            data = data[:n]
        if n == 0:
            self.dropped_empty += 1
            return None
        self.frames += 1
        return data

    def counts(self) -> dict[str, int]:
        return {
            "frames": self.frames,
            "trimmed": self.trimmed,
            "dropped_empty": self.dropped_empty,
            "dropped_oversized": self.dropped_oversized,
        }
