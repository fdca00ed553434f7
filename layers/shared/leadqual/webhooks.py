"""Parsing what Sautikit sends us: voice callbacks (SAUTIKIT.md §2), events and stream statuses (§3).

Pure functions over bytes, content types, query strings and headers; the Lambda handlers stay
thin. The platform is loosely specified, so parsing is liberal in what it accepts (form or JSON,
camelCase or snake_case, two event shapes) and strict in what it returns (typed models). A body
we cannot read at all raises `WebhookError`; handlers answer 400 for it.

Classifying voice callbacks (`classify`), the rule we chose (§7 gotchas 2 and 4):
1. A lifecycle state name (StreamStarted, StreamStopped, StreamError, DialCompleted, busy,
   no-answer, failed, rejected, canceled, transferred…) → LIFECYCLE.
2. `isActive` explicitly false → LIFECYCLE: the call is over, nothing we return would run.
3. An end state (Completed, ended, hangup): the first callback can already say Completed while
   the call is being set up, so it is FIRST_SETUP when `isActive` is true; when `isActive` is
   missing, it is FIRST_SETUP only for an outbound leg (by `direction`, or, when that is
   missing, because one of our numbers is a party) that reports no talk time yet
   (`durationInSeconds` missing or 0). Otherwise LIFECYCLE.
4. Anything else (no state, Answered, Active, Ringing, unknown words) → FIRST_SETUP.
A second `<Stream>` on a live call re-forks it and errors, so the voice handler must also make
the first-setup reply once per session (a conditional write on the call record), not rely on
this classification alone.

The result of a `<Dial>` (`DialCompleted`, on the voice webhook and forwarded to the events URL):
`dial_result(fields)` reads `dialStatus`, `dialDestinationNumber`, `dialDurationInSeconds` in any
spelling; `dial_connected(status, seconds)` is the one rule for "the rep's leg connected": an
answered/completed status and no reported duration of 0.

Event ids (`CallEvent.event_id`): the `X-Sautikit-Event-Id` header, else the body's `event_id`,
else `sha256:<hex>` of the raw body. Redeliveries resend the same bytes (the signature travels in
a header), so the hash is stable across retries; two distinct events with byte-identical bodies
would carry the same facts, so collapsing them loses nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field

from leadqual.models import CallState, parse_client_request_id
from leadqual.signing import SIGNATURE_HEADER, SIGNATURE_TOLERANCE_S, verify_webhook

EVENT_ID_HEADER = "X-Sautikit-Event-Id"
EVENT_KIND_HEADER = "X-Sautikit-Event-Kind"


class WebhookError(ValueError):
    """A webhook body we cannot use (undecodable, not an object, no recognisable fields)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- low-level decoding ----------------------------------------------------------------------------


def get_header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """Case-insensitive header lookup (API Gateway v2 lowercases names; other hosts do not)."""
    if not headers:
        return None
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def decode_body(body: bytes | str, content_type: str | None) -> dict[str, Any]:
    """A webhook body as a flat-or-nested dict, from JSON or `application/x-www-form-urlencoded`.

    The declared content type wins; without a usable one the body is sniffed (`{` → JSON).
    """
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError as exc:
        raise WebhookError("body is not UTF-8") from exc
    media = (content_type or "").split(";")[0].strip().lower()
    stripped = text.strip()
    if not stripped:
        raise WebhookError("empty body")
    if media.endswith("json") or media.endswith("+json"):
        as_json = True
    elif media == "application/x-www-form-urlencoded":
        as_json = False
    else:
        as_json = stripped.startswith("{")
    if as_json:
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise WebhookError("body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise WebhookError("JSON body is not an object")
        return data
    pieces = [piece for piece in stripped.split("&") if piece]
    pairs = parse_qsl(stripped, keep_blank_values=True)
    if not pairs or any("=" not in piece for piece in pieces) or any(not key for key, _ in pairs):
        raise WebhookError("body is not form-encoded")
    return dict(pairs)  # a repeated field keeps its last value, as most frameworks do


def _norm_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _pick(data: Mapping[str, Any], *names: str) -> Any:
    """First present value among `names`, matching keys regardless of case, `_` or `-`."""
    index = {_norm_key(k): v for k, v in data.items()}
    for name in names:
        value = index.get(_norm_key(name))
        if value is not None and value != "":
            return value
    return None


def _str(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    text = _str(value)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "y", "t", "active"):
        return True
    if lowered in ("0", "false", "no", "n", "f", "inactive"):
        return False
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError, OverflowError):
        return None


def _time(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, int | float) or (isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value)):
            return datetime.fromtimestamp(float(value), tz=UTC)
        if isinstance(value, str):
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _state_key(state: str | None) -> str:
    return _norm_key(state or "")


# -- numbers ---------------------------------------------------------------------------------------


def _digits(number: str) -> str:
    return re.sub(r"\D", "", number)


def same_number(a: str | None, b: str | None) -> bool:
    """Whether two spellings name the same line: `+254711…`, `254711…`, `0711…`, spaces, dashes."""
    if not a or not b:
        return False
    da, db = _digits(a), _digits(b)
    if not da or not db:
        return False
    if da == db:
        return True
    # A national form drops the country code and adds a trunk 0; compare the subscriber part.
    short, long_ = sorted((da.lstrip("0"), db.lstrip("0")), key=len)
    return len(short) >= 9 and long_.endswith(short)


class Parties(BaseModel):
    """Who is who on a callback once numbers are matched against our own `from` numbers."""

    model_config = ConfigDict(frozen=True)

    lead_number: str | None
    our_number: str | None
    matched: bool  # exactly one party is ours, so the answer does not depend on field names
    swapped: bool  # the lead arrived as `callerNumber` (SAUTIKIT.md §7 gotcha 5)


# -- voice callbacks -------------------------------------------------------------------------------


class CallbackKind(StrEnum):
    FIRST_SETUP = "first_setup"
    LIFECYCLE = "lifecycle"


FIRST_SETUP = CallbackKind.FIRST_SETUP
LIFECYCLE = CallbackKind.LIFECYCLE

_LIFECYCLE_STATES = {
    "streamstarted",
    "streamstopped",
    "streamerror",
    "streamfailed",
    "dialcompleted",
    "dialstarted",
    "dialanswered",
    "dialfailed",
    "transferred",
    "transfercompleted",
    "busy",
    "noanswer",
    "failed",
    "rejected",
    "canceled",
    "cancelled",
    "recordingready",
}
_END_STATES = {"completed", "ended", "hangup", "hungup"}
_STATE_TO_CALL_STATE = {
    "streamstarted": CallState.STREAMING,
    "completed": CallState.COMPLETED,
    "ended": CallState.COMPLETED,
    "hangup": CallState.COMPLETED,
    "hungup": CallState.COMPLETED,
    "busy": CallState.BUSY,
    "noanswer": CallState.NO_ANSWER,
    "failed": CallState.FAILED,
    "rejected": CallState.FAILED,
    "canceled": CallState.CANCELED,
    "cancelled": CallState.CANCELED,
    "answered": CallState.ANSWERED,
    "active": CallState.ANSWERED,
    "ringing": CallState.RINGING,
}


class VoiceCallback(BaseModel):
    """One POST to the voice webhook. `fields` keeps everything that came, for logs and debugging."""

    model_config = ConfigDict(frozen=True)

    session_id: str
    caller_number: str | None = None
    destination_number: str | None = None
    call_session_state: str | None = None
    direction: str | None = None
    is_active: bool | None = None
    duration_s: int | None = None
    client_request_id: str | None = None
    # The `<Dial>` result a DialCompleted re-invocation carries (SAUTIKIT.md §2).
    dial_status: str | None = None
    dial_destination: str | None = None
    dial_duration_s: int | None = None
    fields: dict[str, Any] = Field(default_factory=dict)

    @property
    def lead_attempt(self) -> tuple[str, int] | None:
        """(lead_id, attempt) from our `lq-<lead>-<attempt>` label, when it came through."""
        return parse_client_request_id(self.client_request_id) if self.client_request_id else None

    @property
    def is_dial_completed(self) -> bool:
        """This callback reports the end of a `<Dial>`: by its state, or by carrying a dial status."""
        return _state_key(self.call_session_state) == "dialcompleted" or self.dial_status is not None

    @property
    def state(self) -> CallState | None:
        """The call state this callback reports, if it reports one we track."""
        return _STATE_TO_CALL_STATE.get(_state_key(self.call_session_state))

    def parties(self, own_numbers: Iterable[str]) -> Parties:
        return resolve_parties(self, own_numbers)


class DialResult(BaseModel):
    """What the carrier says a `<Dial>` came to: its status word as sent, the number, the leg's seconds."""

    model_config = ConfigDict(frozen=True)

    status: str | None = None
    destination: str | None = None
    duration_s: int | None = None

    @property
    def connected(self) -> bool:
        return dial_connected(self.status, self.duration_s)


# Dial status words that mean the dialled party picked up (normalised: case, `-`, `_` dropped).
_DIAL_CONNECTED = {"answered", "completed", "connected", "bridged"}


def dial_result(data: Mapping[str, Any]) -> DialResult:
    """The dial fields of a DialCompleted body (voice callback or forwarded switch event), any spelling."""
    return DialResult(
        status=_str(_pick(data, "dialStatus", "dialCallStatus", "dialResult")),
        destination=_str(_pick(data, "dialDestinationNumber", "dialDestination", "dialNumber", "dialTo")),
        duration_s=_int(
            _pick(data, "dialDurationInSeconds", "dialDuration", "dialCallDuration", "dialDurationSeconds")
        ),
    )


def dial_connected(status: str | None, seconds: int | None) -> bool:
    """Whether a `<Dial>` connected the dialled party: an answered/completed status, and not a leg
    the carrier reports as 0 s long (a connected leg bills at least its first second)."""
    if _norm_key(status or "") not in _DIAL_CONNECTED:
        return False
    return seconds is None or seconds > 0


def resolve_parties(cb: VoiceCallback, own_numbers: Iterable[str]) -> Parties:
    """Match numbers against ours instead of trusting the field names, which can come swapped."""
    own = list(own_numbers)
    caller_ours = any(same_number(cb.caller_number, n) for n in own)
    dest_ours = any(same_number(cb.destination_number, n) for n in own)
    if caller_ours and not dest_ours:
        return Parties(
            lead_number=cb.destination_number, our_number=cb.caller_number, matched=True, swapped=False
        )
    if dest_ours and not caller_ours:
        return Parties(
            lead_number=cb.caller_number, our_number=cb.destination_number, matched=True, swapped=True
        )
    # Neither or both ours: fall back to the outbound reading of the field names.
    return Parties(
        lead_number=cb.destination_number,
        our_number=cb.caller_number if caller_ours else None,
        matched=False,
        swapped=False,
    )


def parse_callback(
    body: bytes | str, content_type: str | None, query: Mapping[str, str] | None = None
) -> VoiceCallback:
    """A voice webhook body (form or JSON) plus its query string → VoiceCallback.

    `clientRequestId` is read from the body first, then from the query string (the platform puts
    it on the voice URL too, §1).
    """
    data = decode_body(body, content_type)
    session_id = _str(_pick(data, "sessionId", "session_id", "callSessionId", "callSid"))
    if not session_id:
        raise WebhookError("callback has no sessionId")
    label = _str(_pick(data, "clientRequestId", "client_request_id"))
    if label is None and query:
        label = _str(_pick(query, "clientRequestId", "client_request_id"))
    dial = dial_result(data)
    return VoiceCallback(
        session_id=session_id,
        caller_number=_str(_pick(data, "callerNumber", "caller_number", "from", "callerId")),
        destination_number=_str(_pick(data, "destinationNumber", "destination_number", "to", "calledNumber")),
        call_session_state=_str(_pick(data, "callSessionState", "call_session_state", "state", "status")),
        direction=_str(_pick(data, "direction")),
        is_active=_bool(_pick(data, "isActive", "is_active")),
        duration_s=_int(
            _pick(data, "durationInSeconds", "duration_in_seconds", "duration_seconds", "duration")
        ),
        client_request_id=label,
        dial_status=dial.status,
        dial_destination=dial.destination,
        dial_duration_s=dial.duration_s,
        fields=data,
    )


def _is_outbound(cb: VoiceCallback, own_numbers: Iterable[str]) -> bool:
    if cb.direction:
        return _norm_key(cb.direction).startswith("out")
    return resolve_parties(cb, own_numbers).matched


def classify(cb: VoiceCallback, own_numbers: Iterable[str]) -> CallbackKind:
    """FIRST_SETUP (answer with the `<Stream>`) or LIFECYCLE (answer `<Response/>`); rule in the module doc."""
    state = _state_key(cb.call_session_state)
    if state in _LIFECYCLE_STATES:
        return LIFECYCLE
    if cb.is_active is False:
        return LIFECYCLE
    if state in _END_STATES:
        if cb.is_active is True:
            return FIRST_SETUP
        if not cb.duration_s and _is_outbound(cb, own_numbers):
            return FIRST_SETUP
        return LIFECYCLE
    return FIRST_SETUP


# -- events ----------------------------------------------------------------------------------------


class EventKind(StrEnum):
    CALL_STARTED = "call.started"
    CALL_ANSWERED = "call.answered"
    CALL_COMPLETED = "call.completed"
    CALL_FAILED = "call.failed"
    RECORDING_READY = "call.recording.ready"
    STREAM_STARTED = "stream.started"
    STREAM_STOPPED = "stream.stopped"
    STREAM_ERROR = "stream.error"
    DIAL_COMPLETED = "dial.completed"
    UNKNOWN = "unknown"


_KIND_WORDS = {
    "callstarted": EventKind.CALL_STARTED,
    "started": EventKind.CALL_STARTED,
    "ringing": EventKind.CALL_STARTED,
    "callanswered": EventKind.CALL_ANSWERED,
    "answered": EventKind.CALL_ANSWERED,
    "active": EventKind.CALL_ANSWERED,
    "callcompleted": EventKind.CALL_COMPLETED,
    "completed": EventKind.CALL_COMPLETED,
    "ended": EventKind.CALL_COMPLETED,
    "hangup": EventKind.CALL_COMPLETED,
    "callfailed": EventKind.CALL_FAILED,
    "failed": EventKind.CALL_FAILED,
    "busy": EventKind.CALL_FAILED,
    "noanswer": EventKind.CALL_FAILED,
    "rejected": EventKind.CALL_FAILED,
    "canceled": EventKind.CALL_FAILED,
    "cancelled": EventKind.CALL_FAILED,
    "callrecordingready": EventKind.RECORDING_READY,
    "recordingready": EventKind.RECORDING_READY,
    "streamstarted": EventKind.STREAM_STARTED,
    "streamstopped": EventKind.STREAM_STOPPED,
    "streamerror": EventKind.STREAM_ERROR,
    "streamfailed": EventKind.STREAM_ERROR,
    "dialcompleted": EventKind.DIAL_COMPLETED,
}
# Carrier hangup causes that say more than "completed" when the status does not.
_CAUSE_TO_STATE = {
    "userbusy": CallState.BUSY,
    "busy": CallState.BUSY,
    "noanswer": CallState.NO_ANSWER,
    "nouserresponse": CallState.NO_ANSWER,
    "originatorcancel": CallState.CANCELED,
    "callrejected": CallState.FAILED,
    "unallocatednumber": CallState.FAILED,
}
_FINAL_WORDS = {
    "completed": CallState.COMPLETED,
    "ended": CallState.COMPLETED,
    "hangup": CallState.COMPLETED,
    "busy": CallState.BUSY,
    "noanswer": CallState.NO_ANSWER,
    "failed": CallState.FAILED,
    "rejected": CallState.FAILED,
    "canceled": CallState.CANCELED,
    "cancelled": CallState.CANCELED,
}


class CallEvent(BaseModel):
    """One event, whichever shape it came in. `final_state` is set only when the call is over."""

    model_config = ConfigDict(frozen=True)

    kind: EventKind
    raw_kind: str | None = None
    event_id: str
    event_id_source: Literal["header", "body", "hash"]
    shape: Literal["envelope", "switch", "stream"]
    call_id: str | None = None
    session_id: str | None = None
    client_request_id: str | None = None
    status: str | None = None
    final_state: CallState | None = None
    duration_seconds: int | None = None
    hangup_cause: str | None = None
    failure_reason: str | None = None
    occurred_at: datetime | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @property
    def is_final(self) -> bool:
        return self.final_state is not None

    @property
    def lead_attempt(self) -> tuple[str, int] | None:
        return parse_client_request_id(self.client_request_id) if self.client_request_id else None


def _kind_of(word: str | None) -> EventKind:
    return _KIND_WORDS.get(_norm_key(word or ""), EventKind.UNKNOWN)


def _ids(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(call_id, session_id): a value shaped like `HD_…` is a session id wherever it appears."""
    call_id = _str(_pick(data, "call_id", "callId"))
    session_id = _str(_pick(data, "session_id", "sessionId", "pbx_call_id", "callSessionId"))
    if session_id is None:
        sid = _str(_pick(data, "callSid", "call_sid", "streamSid"))
        session_id = sid if sid and sid.startswith("HD_") else None
    if call_id and call_id.startswith("HD_") and session_id is None:
        call_id, session_id = None, call_id
    return call_id, session_id


def _final_state(kind: EventKind, status: str | None, cause: str | None) -> CallState | None:
    if kind not in (EventKind.CALL_COMPLETED, EventKind.CALL_FAILED):
        return None
    from_status = _FINAL_WORDS.get(_norm_key(status or ""))
    from_cause = _CAUSE_TO_STATE.get(_norm_key(cause or ""))
    if from_status is not None and from_status is not CallState.COMPLETED:
        return from_status
    if from_cause is not None:
        return from_cause
    if from_status is not None:
        return from_status
    return CallState.FAILED if kind is EventKind.CALL_FAILED else CallState.COMPLETED


_STREAM_VALUE = re.compile(r"^stream[-_.]?(started|stopped|error|failed)$", re.IGNORECASE)


def _stream_word(data: Mapping[str, Any]) -> str | None:
    for name in ("event", "streamEvent", "status", "type", "kind", "name", "state", "callSessionState"):
        value = _str(_pick(data, name))
        if value and _STREAM_VALUE.match(value):
            return value
    return None


def _event_id(raw: bytes, headers: Mapping[str, str] | None, data: Mapping[str, Any]) -> tuple[str, Any]:
    header = _str(get_header(headers, EVENT_ID_HEADER))
    if header:
        return header, "header"
    body_id = _str(_pick(data, "event_id", "eventId"))
    if body_id:
        return body_id, "body"
    return "sha256:" + hashlib.sha256(raw).hexdigest(), "hash"


def parse_event(
    body: bytes | str,
    content_type: str | None = "application/json",
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> CallEvent:
    """An events-URL or stream-status body → CallEvent, from any of the three shapes we know."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    data = decode_body(raw, content_type or get_header(headers, "content-type"))
    event_id, id_source = _event_id(raw, headers, data)
    header_kind = _str(get_header(headers, EVENT_KIND_HEADER))
    label = _str(_pick(data, "clientRequestId", "client_request_id"))
    if label is None and query:
        label = _str(_pick(query, "clientRequestId", "client_request_id"))

    envelope = data.get("data")
    if isinstance(envelope, dict) and (_pick(data, "kind", "type") or header_kind):
        raw_kind = _str(_pick(data, "kind", "type")) or header_kind
        kind = _kind_of(raw_kind)
        call_id, session_id = _ids(envelope)
        status = _str(_pick(envelope, "status"))
        cause = _str(_pick(envelope, "hangup_cause", "hangupCause"))
        return CallEvent(
            kind=kind,
            raw_kind=raw_kind,
            event_id=event_id,
            event_id_source=id_source,
            shape="envelope",
            call_id=call_id,
            session_id=session_id,
            client_request_id=_str(_pick(envelope, "clientRequestId", "client_request_id")) or label,
            status=status,
            final_state=_final_state(kind, status, cause),
            duration_seconds=_int(_pick(envelope, "duration_seconds", "durationInSeconds")),
            hangup_cause=cause,
            failure_reason=_str(_pick(envelope, "failure_reason", "failureReason")),
            occurred_at=_time(_pick(data, "occurred_at"))
            or _time(_pick(envelope, "ended_at", "answered_at")),
            data=envelope,
        )

    call_id, session_id = _ids(data)
    state = _str(_pick(data, "callSessionState", "call_session_state"))
    shape: Literal["switch", "stream"]
    if state is not None:  # the raw switch body, forwarded "exactly as the switch sent it"
        shape, raw_kind = "switch", state
    elif (stream_word := _stream_word(data)) is not None:
        shape, raw_kind = "stream", stream_word
    elif header_kind is not None and (call_id or session_id or label):
        shape, raw_kind = "switch", header_kind
    else:
        raise WebhookError("body is neither an event envelope, a switch callback nor a stream status")
    if shape == "stream" and label is None:
        # We name each stream after its call's label, and stream statuses echo the name.
        name = _str(_pick(data, "name", "streamName"))
        label = name if name and parse_client_request_id(name) else None
    if shape == "switch" and not (call_id or session_id or label):
        raise WebhookError("switch event names no call")
    kind = _kind_of(raw_kind)
    cause = _str(_pick(data, "hangupCause", "hangup_cause"))
    return CallEvent(
        kind=kind,
        raw_kind=raw_kind,
        event_id=event_id,
        event_id_source=id_source,
        shape=shape,
        call_id=call_id,
        session_id=session_id,
        client_request_id=label,
        status=state or _str(_pick(data, "status")),
        final_state=_final_state(kind, raw_kind, cause),
        duration_seconds=_int(_pick(data, "durationInSeconds", "duration_in_seconds", "duration_seconds")),
        hangup_cause=cause,
        failure_reason=_str(_pick(data, "failureReason", "failure_reason", "error", "errorMessage")),
        occurred_at=_time(_pick(data, "occurred_at", "timestamp", "time")),
        data=data,
    )


# -- signatures ------------------------------------------------------------------------------------


def verify_request(
    secret: str,
    raw_body: bytes,
    headers: Mapping[str, str] | None,
    now: float | None = None,
    tolerance_s: int = SIGNATURE_TOLERANCE_S,
) -> None:
    """Check `X-Sautikit-Signature` over the raw body; raises signing.SignatureError (→ 401)."""
    verify_webhook(secret, raw_body, get_header(headers, SIGNATURE_HEADER), now=now, tolerance_s=tolerance_s)
