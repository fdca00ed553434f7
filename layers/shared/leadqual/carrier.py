"""What the carrier answers us (SAUTIKIT.md §1): the REST results as typed values, and its status words.

Pure: no httpx, no I/O. `leadqual.sautikit` (the httpx adapter) builds these from responses; the
domain (`dialing`, `accounting`) and test fakes use them without loading an HTTP client. They are
the carrier's shapes, not ours: unknown fields are kept and statuses stay in its spelling, which
`call_state_of` and `supervision_status` map to our words. Our own records live in
`leadqual.models`; what the carrier sends to our webhooks is parsed in `leadqual.webhooks`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from leadqual.models import CallState


class CreatedCall(BaseModel):
    """`201` body of `POST /v1/calls`. `call_id` may be absent; `session_id` is what callbacks carry."""

    model_config = ConfigDict(extra="allow")

    call_id: str | None = None
    session_id: str
    status: str = "ringing"
    client_request_id: str | None = None


class CallEventEntry(BaseModel):
    """One entry of a call record's `events` list."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    call_id: str | None = None
    kind: str | None = None
    payload: dict[str, Any] | None = None
    occurred_at: datetime | None = None


_STATUS_TO_STATE = {
    "ringing": CallState.RINGING,
    "answered": CallState.ANSWERED,
    "in_progress": CallState.ANSWERED,
    "completed": CallState.COMPLETED,
    "failed": CallState.FAILED,
    "no_answer": CallState.NO_ANSWER,
    "busy": CallState.BUSY,
    "canceled": CallState.CANCELED,
    "cancelled": CallState.CANCELED,
}


def call_state_of(status: str | None) -> CallState | None:
    """Map a platform status string (`no_answer`, `no-answer`, `Busy`, …) to our CallState."""
    if not status:
        return None
    return _STATUS_TO_STATE.get(status.strip().lower().replace("-", "_").replace(" ", "_"))


# A supervisor's status, however the platform spells it (the simulator says ringing|active|ended;
# the SDK's examples and other switches use answered, in-progress, connecting, completed, ...).
SupervisionStatus = Literal["ringing", "active", "ended", "failed", "no_answer", "busy", "canceled"]
_SUPERVISION_STATUS: dict[str, SupervisionStatus] = {
    **dict.fromkeys(
        (
            "ringing",
            "queued",
            "initiated",
            "initiating",
            "dialing",
            "dialling",
            "calling",
            "connecting",
            "pending",
            "requested",
            "created",
            "starting",
        ),
        "ringing",
    ),
    **dict.fromkeys(
        (
            "active",
            "answered",
            "in_progress",
            "inprogress",
            "connected",
            "joined",
            "live",
            "started",
            "bridged",
        ),
        "active",
    ),
    **dict.fromkeys(
        (
            "ended",
            "completed",
            "complete",
            "stopped",
            "hung_up",
            "hungup",
            "hangup",
            "finished",
            "left",
            "removed",
            "deleted",
            "disconnected",
        ),
        "ended",
    ),
    **dict.fromkeys(("failed", "failure", "error", "errored", "rejected", "unreachable"), "failed"),
    **dict.fromkeys(
        ("no_answer", "noanswer", "not_answered", "unanswered", "timeout", "timed_out"), "no_answer"
    ),
    "busy": "busy",
    **dict.fromkeys(("canceled", "cancelled", "aborted"), "canceled"),
}


def supervision_status(status: Any) -> SupervisionStatus | None:
    """Map a supervisor status (`in-progress`, `Answered`, `no answer`, …) to one canonical word:
    ringing | active | ended | failed | no_answer | busy | canceled. None when unknown."""
    if not isinstance(status, str) or not status.strip():
        return None
    key = status.strip().lower().replace("-", "_").replace(" ", "_")
    return _SUPERVISION_STATUS.get(key)


class CallDetails(BaseModel):
    """The `call` object of `GET /v1/calls/{id}`; every field optional, unknown fields kept."""

    model_config = ConfigDict(extra="allow")

    id: str | None = None
    workspace_id: str | None = None
    session_id: str | None = None
    direction: str | None = None
    local_e164: str | None = None
    remote_e164: str | None = None
    country: str | None = None
    started_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: int | None = None
    status: str | None = None
    cost_minor: int | None = None
    cost_currency: str | None = None
    rate_per_minute_minor: int | None = None
    failure_code: str | None = None
    metadata: dict[str, Any] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    events: list[CallEventEntry] = Field(default_factory=list)

    @field_validator("events", mode="before")
    @classmethod
    def _null_events(cls, value: Any) -> Any:
        return [] if value is None else value

    @property
    def state(self) -> CallState | None:
        return call_state_of(self.status)


class WalletBalance(BaseModel):
    """The `wallet` object of `GET /v1/wallet/balance`, in minor units."""

    model_config = ConfigDict(extra="allow")

    balance_minor: int
    currency: str = "KES"
    low_balance_threshold_minor: int | None = None
