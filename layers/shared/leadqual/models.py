"""Domain models shared by every process: leads, answers, scores, outcomes and call records."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, TypedDict

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

LeadId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
AnswerValue = bool | int | float | str | None


class Outcome(StrEnum):
    """A lead's final (or current) result; the report's `outcome` values (DESIGN.md §5)."""

    HOT_TRANSFERRED = "hot_transferred"
    COLD_CLOSED = "cold_closed"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    VOICEMAIL = "voicemail"
    CALLBACK_REQUESTED = "callback_requested"
    OPTED_OUT = "opted_out"
    REJECTED = "rejected"
    FAILED = "failed"
    DEFERRED = "deferred"


class EndReason(StrEnum):
    """Why the agent ended a call early (`end_call(reason)`); each maps to an outcome."""

    NOT_INTERESTED = "not_interested"
    WRONG_PERSON = "wrong_person"
    CALLBACK_REQUESTED = "callback_requested"
    VOICEMAIL = "voicemail"
    OPT_OUT = "opt_out"

    @property
    def outcome(self) -> Outcome:
        return {
            EndReason.NOT_INTERESTED: Outcome.COLD_CLOSED,
            EndReason.WRONG_PERSON: Outcome.COLD_CLOSED,
            EndReason.CALLBACK_REQUESTED: Outcome.CALLBACK_REQUESTED,
            EndReason.VOICEMAIL: Outcome.VOICEMAIL,
            EndReason.OPT_OUT: Outcome.OPTED_OUT,
        }[self]


class LeadStatus(StrEnum):
    """Where a lead is in the pipeline."""

    QUEUED = "queued"
    DEFERRED = "deferred"
    DIALING = "dialing"
    IN_CALL = "in_call"
    RETRY_SCHEDULED = "retry_scheduled"
    DONE = "done"


class Lead(BaseModel):
    """An opted-in contact to call. `phone` is E.164 once it has passed compliance.normalise_phone."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    lead_id: LeadId
    phone: str = Field(min_length=3, max_length=32)
    name: str = Field(default="", max_length=200)
    company: str = Field(default="", max_length=200)
    opt_in: bool
    timezone: str | None = None
    campaign: str = Field(default="example", pattern=r"^[A-Za-z0-9_-]{1,64}$")

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.strip() else ""


class Answer(BaseModel):
    """One answer as the lead gave it: the normalised value and the words it came from."""

    question_id: str
    value: AnswerValue
    quote: str = ""
    at: datetime | None = None


class Verdict(StrEnum):
    HOT = "hot"
    COLD = "cold"
    UNDECIDED = "undecided"


class Score(BaseModel):
    """Deterministic scoring result; `reasons` explain the verdict in plain words."""

    verdict: Verdict
    points: int
    max_points: int
    reasons: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)


class CallState(StrEnum):
    """Carrier-side state of one call attempt (SAUTIKIT.md status values, plus our own edges)."""

    RINGING = "ringing"
    ANSWERED = "answered"
    STREAMING = "streaming"
    TRANSFERRING = "transferring"
    COMPLETED = "completed"
    FAILED = "failed"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in _FINAL_STATES


_FINAL_STATES = {
    CallState.COMPLETED,
    CallState.FAILED,
    CallState.NO_ANSWER,
    CallState.BUSY,
    CallState.CANCELED,
}


# A call's transcript is bounded so the CALL# item stays far below DynamoDB's 400 KB item limit,
# whatever the language: at most this many entries (the latest kept), each text cut at this many
# characters, all the texts together at most this many UTF-8 bytes.
TRANSCRIPT_MAX_ENTRIES = 200
TRANSCRIPT_MAX_TEXT = 1000
TRANSCRIPT_MAX_BYTES = 256_000


class TranscriptEntry(TypedDict):
    """One line of a call's transcript: `t` seconds since the media stream opened."""

    t: float
    who: Literal["agent", "lead"]
    text: str


def bound_transcript(entries: list[TranscriptEntry]) -> list[TranscriptEntry]:
    """The latest entries that fit the bounds above (texts cut, oldest dropped first)."""
    kept: list[TranscriptEntry] = []
    size = 0
    for entry in reversed(entries[-TRANSCRIPT_MAX_ENTRIES:]):
        text = entry["text"][:TRANSCRIPT_MAX_TEXT]
        size += len(text.encode()) + 32  # the text, plus the entry's names, number and map overhead
        if size > TRANSCRIPT_MAX_BYTES:
            break
        kept.append({"t": round(entry["t"], 2), "who": entry["who"], "text": text})
    kept.reverse()
    return kept


Transcript = Annotated[list[TranscriptEntry], AfterValidator(bound_transcript)]


class CallRecord(BaseModel):
    """One dial attempt of one lead (`LEAD#<id>` / `CALL#<attempt>`)."""

    lead_id: str
    attempt: int = Field(ge=1)
    client_request_id: str
    session_id: str | None = None
    call_id: str | None = None
    state: CallState = CallState.RINGING
    created_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: int | None = None
    billed_seconds: int | None = None
    cost_minor: int | None = None
    cost_currency: str | None = None
    outcome: Outcome | None = None
    # Why this attempt ended as it did, in the bridge's (or the accountant's) words; the lead's
    # profile keeps only the latest reason, which a retry's scheduling replaces.
    outcome_reason: str | None = None
    transferred_to: str | None = None  # the rep the bridge handed over to (attempted, not confirmed)
    # The carrier's word on the rep leg of a `<Dial>` transfer (DialCompleted's dialStatus as sent,
    # and that leg's seconds); None while it has not reported. See leadqual.accounting.
    transfer_status: str | None = None
    transfer_seconds: int | None = None
    time_to_first_word_ms: float | None = None
    # What was said, in order (PII: kept only here, never logged). Written by the bridge.
    transcript: Transcript = Field(default_factory=list)


def client_request_id(lead_id: str, attempt: int) -> str:
    """The per-attempt label and idempotency key: unique per attempt, safe in callbacks (§1)."""
    return f"lq-{lead_id}-{attempt}"


def parse_client_request_id(label: str) -> tuple[str, int] | None:
    """Inverse of client_request_id; None for labels we did not make."""
    if not label.startswith("lq-"):
        return None
    lead_id, sep, attempt = label[3:].rpartition("-")
    if not sep or not lead_id or not attempt.isdigit():
        return None
    return lead_id, int(attempt)
