"""Voice verbs (SAUTIKIT.md §4) and the two reply formats of the voice webhook (§2).

XML is forwarded to the switch unvalidated, so everything we put in it is escaped here: a lead
whose name is `"/><Dial>+1…</Dial>` is text inside `<Say>`, never markup. JSON follows the SDK's
`{"actions": [{verb: {...}}]}` shape and its rules (≤ 50 actions, Dial targets exactly one of
`number`/`numbers`/`sip`).

    Response([Stream(url), Dial(["+254…"], caller_id=…)]).to_xml()
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

XML_CONTENT_TYPE = "application/xml"
JSON_CONTENT_TYPE = "application/json"
MAX_ACTIONS = 50

Track = Literal["inbound_track", "outbound_track", "both_tracks"]
MetadataValue = str | int | float | bool

# Characters XML 1.0 cannot carry at all, not even escaped: dropped so the document always parses.
_INVALID_XML = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
# Parsers normalise raw CR (and, in attributes, LF and TAB) away; character references survive.
_ATTR_ENTITIES = {'"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
_TEXT_ENTITIES = {"\r": "&#13;"}


class VerbError(ValueError):
    """A verb or response the platform would refuse (bad URL, too many actions, Dial without a target)."""


def _clean(value: str) -> str:
    return _INVALID_XML.sub("", value)


def _attr_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _element(
    tag: str,
    attrs: Sequence[tuple[str, str | int | float | bool | None]] = (),
    text: str | None = None,
    children: Sequence[str] = (),
) -> str:
    rendered = "".join(
        f' {name}="{escape(_clean(_attr_value(value)), _ATTR_ENTITIES)}"'
        for name, value in attrs
        if value is not None
    )
    body = (escape(_clean(text), _TEXT_ENTITIES) if text is not None else "") + "".join(children)
    return f"<{tag}{rendered}>{body}</{tag}>" if body else f"<{tag}{rendered}/>"


def _json_params(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    return {name: value for name, value in pairs if value is not None}


def _check_url(url: str, schemes: tuple[str, ...], what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.netloc:
        raise VerbError(f"{what} must be an absolute {'/'.join(schemes)} URL")


@dataclass(frozen=True)
class Say:
    text: str
    voice: str | None = None
    language: str | None = None  # BCP-47, e.g. en-KE, sw-KE
    loop: int | None = None

    def __post_init__(self) -> None:
        if self.loop is not None and self.loop < 0:
            raise VerbError("Say.loop must be >= 0")

    def to_xml(self) -> str:
        return _element(
            "Say", [("voice", self.voice), ("language", self.language), ("loop", self.loop)], self.text
        )

    def to_action(self) -> dict[str, Any]:
        params = [
            ("text", self.text),
            ("voice", self.voice),
            ("language", self.language),
            ("loop", self.loop),
        ]
        return {"say": _json_params(params)}


@dataclass(frozen=True)
class Play:
    url: str

    def __post_init__(self) -> None:
        _check_url(self.url, ("https", "http"), "Play.url")

    def to_xml(self) -> str:
        return _element("Play", [("url", self.url)])

    def to_action(self) -> dict[str, Any]:
        return {"play": {"url": self.url}}


@dataclass(frozen=True)
class Stream:
    """Fork the call's audio to our bridge. `connect=True` is what keeps the call up (§7 gotcha 1)."""

    url: str
    name: str | None = None
    track: Track = "inbound_track"
    connect: bool = True
    output_sampling_rate: Literal[8000, 16000] = 16000
    bidirectional_sampling_rate: int = 16000
    header_metadata: Mapping[str, MetadataValue] = field(default_factory=dict)
    open_metadata: str | None = None
    status_callback: str | None = None
    status_events: Sequence[str] | None = None

    def __post_init__(self) -> None:
        _check_url(self.url, ("wss", "ws"), "Stream.url")
        if self.track not in ("inbound_track", "outbound_track", "both_tracks"):
            raise VerbError(f"Stream.track {self.track!r} is not a track")
        if self.output_sampling_rate not in (8000, 16000):
            raise VerbError("Stream.output_sampling_rate must be 8000 or 16000")
        if not 8000 <= self.bidirectional_sampling_rate <= 48000:
            raise VerbError("Stream.bidirectional_sampling_rate must be between 8000 and 48000 Hz")
        for key, value in self.header_metadata.items():
            # The platform takes a flat object: nested values would not survive as headers.
            if not isinstance(key, str) or not isinstance(value, str | int | float | bool):
                raise VerbError("Stream.header_metadata must map strings to str/int/float/bool")
            if isinstance(value, float) and not math.isfinite(value):
                raise VerbError("Stream.header_metadata values must be finite numbers")
        if self.status_callback is not None:
            _check_url(self.status_callback, ("https", "http"), "Stream.status_callback")

    @property
    def header_metadata_string(self) -> str | None:
        """headerMetadata travels as a JSON object serialised into a string (§4)."""
        if not self.header_metadata:
            return None
        return json.dumps(dict(self.header_metadata), separators=(",", ":"), sort_keys=True)

    def _params(self) -> list[tuple[str, Any]]:
        return [
            ("url", self.url),
            ("name", self.name),
            ("track", self.track),
            # Absence and "false" mean the same to the switch; we only ever write the meaningful one.
            ("connect", True if self.connect else None),
            ("outputSamplingRate", self.output_sampling_rate),
            ("bidirectionalSamplingRate", self.bidirectional_sampling_rate),
            ("headerMetadata", self.header_metadata_string),
            ("openMetadata", self.open_metadata),
            ("statusCallback", self.status_callback),
            ("statusEvents", " ".join(self.status_events) if self.status_events else None),
        ]

    def to_xml(self) -> str:
        return _element("Stream", self._params())

    def to_action(self) -> dict[str, Any]:
        return {"stream": _json_params(self._params())}


@dataclass(frozen=True)
class Dial:
    """Connect the caller to `numbers` (or one `sip` URI). JSON needs exactly one target kind."""

    numbers: Sequence[str] = ()
    caller_id: str | None = None
    timeout: int | None = None
    record: bool | str | None = None
    sip: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.numbers, str):
            object.__setattr__(self, "numbers", (self.numbers,))
        if bool(self.numbers) == bool(self.sip):
            raise VerbError("Dial needs exactly one of numbers or sip")
        if any(not n.strip() for n in self.numbers):
            raise VerbError("Dial numbers must not be empty")
        if self.timeout is not None and self.timeout <= 0:
            raise VerbError("Dial.timeout must be positive seconds")

    def _attrs(self) -> list[tuple[str, Any]]:
        record = _attr_value(self.record) if self.record is not None else None
        return [("callerId", self.caller_id), ("timeout", self.timeout), ("record", record)]

    def to_xml(self) -> str:
        children = [_element("Number", text=n) for n in self.numbers]
        if self.sip:
            children.append(_element("Sip", text=self.sip))
        return _element("Dial", self._attrs(), children=children)

    def to_action(self) -> dict[str, Any]:
        target: tuple[str, Any]
        if self.sip:
            target = ("sip", self.sip)
        elif len(self.numbers) == 1:
            target = ("number", self.numbers[0])
        else:
            target = ("numbers", list(self.numbers))
        return {"dial": _json_params([target, *self._attrs()])}


@dataclass(frozen=True)
class Hangup:
    def to_xml(self) -> str:
        return _element("Hangup")

    def to_action(self) -> dict[str, Any]:
        return {"hangup": {}}


@dataclass(frozen=True)
class Reject:
    reason: Literal["rejected", "busy"] | None = None

    def __post_init__(self) -> None:
        if self.reason not in (None, "rejected", "busy"):
            raise VerbError("Reject.reason must be 'rejected' or 'busy'")

    def to_xml(self) -> str:
        return _element("Reject", [("reason", self.reason)])

    def to_action(self) -> dict[str, Any]:
        return {"reject": _json_params([("reason", self.reason)])}


@dataclass(frozen=True)
class Redirect:
    url: str
    method: Literal["GET", "POST"] | None = None

    def __post_init__(self) -> None:
        _check_url(self.url, ("https", "http"), "Redirect.url")
        if self.method not in (None, "GET", "POST"):
            raise VerbError("Redirect.method must be GET or POST")

    def to_xml(self) -> str:
        return _element("Redirect", [("method", self.method)], self.url)

    def to_action(self) -> dict[str, Any]:
        return {"redirect": _json_params([("url", self.url), ("method", self.method)])}


Verb = Say | Play | Stream | Dial | Hangup | Reject | Redirect


@dataclass(frozen=True)
class Response:
    """A reply to the voice webhook. `Response([])` is the empty reply for lifecycle callbacks."""

    verbs: Sequence[Verb] = ()

    def to_xml(self) -> str:
        return _element("Response", children=[verb.to_xml() for verb in self.verbs])

    def to_dict(self) -> dict[str, Any]:
        if len(self.verbs) > MAX_ACTIONS:
            raise VerbError(f"{len(self.verbs)} actions exceed the platform's limit of {MAX_ACTIONS}")
        return {"actions": [verb.to_action() for verb in self.verbs]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    def render(self, fmt: Literal["xml", "json"] = "xml") -> tuple[str, str]:
        """(body, content type) for a webhook reply."""
        if fmt == "json":
            return self.to_json(), JSON_CONTENT_TYPE
        return self.to_xml(), XML_CONTENT_TYPE
