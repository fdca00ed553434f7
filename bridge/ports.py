"""What the bridge needs from the outside world, as small protocols, plus its configuration.

The conversation talks to the store, the carrier, the rep notifier and the engine only through
these shapes; `bridge.__main__` builds the real adapters (DynamoStore, SautikitClient, SNS) and
tests pass fakes that record calls. The store and carrier methods are synchronous (boto3, httpx);
the bridge calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from bridge.engines.base import Engine
from leadqual.campaign import Campaign
from leadqual.models import Answer, AnswerValue, Lead, Outcome, Score


class HasLead(Protocol):
    """The part of `leadqual.store.LeadProfile` the bridge reads."""

    @property
    def lead(self) -> Lead: ...


class Store(Protocol):
    """The subset of `leadqual.store.DynamoStore` the bridge calls.

    `update_call` takes `CallRecord` field names; the bridge writes `state`, `session_id`,
    `call_id`, `outcome`, `transferred_to`, `time_to_first_word_ms` and `transcript` (a list of
    `leadqual.models.TranscriptEntry`, the whole transcript each time: the store replaces it and
    applies the bounds in `leadqual.models`)."""

    def get_session(self, session_id: str) -> tuple[str, int] | None: ...
    def get_lead(self, lead_id: str) -> HasLead | None: ...
    def get_answers(self, lead_id: str) -> list[Answer]: ...
    def save_answer(self, lead_id: str, answer: Answer) -> None: ...
    def update_call(self, lead_id: str, attempt: int, **fields: Any) -> None: ...
    def set_outcome(
        self, lead_id: str, outcome: Outcome, *, score: Score | None = None, reason: str | None = None
    ) -> None: ...
    def add_dnc(self, e164: str, reason: str) -> None: ...


class Carrier(Protocol):
    """The subset of `leadqual.sautikit.SautikitClient` the bridge calls.

    `get_supervision` is how the bridge learns that a rep picked up: `None` when the call has no
    supervisor (404), else the supervisor object with `status` canonical (ringing | active | ended
    | failed | no_answer | busy | canceled; None when the platform's word is unknown)."""

    def hangup(self, call_or_session_id: str) -> None: ...
    def start_supervision(
        self, call_or_session_id: str, *, mode: str, number: str, idempotency_key: str
    ) -> dict[str, Any]: ...
    def get_supervision(self, call_or_session_id: str) -> dict[str, Any] | None: ...


@runtime_checkable
class SupportsUpdateSupervision(Protocol):
    """`PATCH /v1/calls/{id}/supervision` (SAUTIKIT.md §1): switch a supervisor's mode. Its success
    says nothing about whether the rep has picked up (`Carrier.get_supervision` does)."""

    def update_supervision(self, call_or_session_id: str, *, mode: str) -> dict[str, Any]: ...


class Notifier(Protocol):
    """Tells the rep about a hot lead before they pick up (SNS in production)."""

    def publish(self, message: dict[str, Any]) -> None: ...


class CampaignSource(Protocol):
    def load(self, campaign_id: str) -> Campaign: ...


class MediaSocket(Protocol):
    """The media WebSocket as the conversation sees it (websockets' ServerConnection fits)."""

    def __aiter__(self) -> AsyncIterator[str | bytes]: ...
    async def recv(self) -> str | bytes: ...
    async def send(self, message: str | bytes) -> None: ...
    async def close(self, code: int = 1000, reason: str = "") -> None: ...


EngineFactory = Callable[[], Engine]
Normaliser = Callable[[Any, Any], AnswerValue]  # (Question, raw) -> value; raises AnswerError
Scorer = Callable[[Campaign, list[Answer]], Score]


def _secret(value: Any) -> str:
    # pydantic's SecretStr keeps the value out of reprs and logs; unwrap it only here.
    getter = getattr(value, "get_secret_value", None)
    return str(getter() if callable(getter) else value or "")


@dataclass(frozen=True)
class BridgeConfig:
    """Everything the server and conversations read from settings, resolved once at the edge.

    `from_settings` accepts `leadqual.settings.BridgeSettings` (or any object with these attribute
    names); fields it lacks keep their defaults.
    """

    bridge_token_secret: str
    host: str = "0.0.0.0"  # noqa: S104 - a container listens on every interface
    port: int = 8080
    engine: str = "fake"
    drain_seconds: float = 110.0
    campaigns_dir: Path | None = None
    default_in_rate: int = 16000
    default_out_rate: int = 16000
    ping_interval_s: float = 15.0
    ping_timeout_s: float = 15.0
    close_timeout_s: float = 2.0  # a dead peer is dropped within ping interval + ping timeout + this
    metadata_timeout_s: float = 3.0
    engine_start_timeout_s: float = 10.0
    max_frame_bytes: int = 64_000
    max_sessions: int = 0  # 0 = no limit; above it new upgrades get 503
    playout_margin_s: float = 0.3  # network and jitter buffer between "sent" and "heard"
    carrier_timeout_s: float = 15.0
    supervision_poll_s: float = 0.5  # how often to ask whether a rep being transferred to picked up
    hangup_close_grace_s: float = 5.0  # after a REST hangup, how long the carrier has to close the socket
    gauge_interval_s: float = 60.0  # BridgeActiveSessions, the autoscaling metric
    rep_notify_topic_arn: str | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> BridgeConfig:
        if isinstance(settings, BridgeConfig):
            return settings
        values: dict[str, Any] = {}
        for f in fields(cls):
            if hasattr(settings, f.name):
                value = getattr(settings, f.name)
                if value is not None or f.name in ("campaigns_dir", "rep_notify_topic_arn"):
                    values[f.name] = value
        values["bridge_token_secret"] = _secret(values.get("bridge_token_secret"))
        if values.get("campaigns_dir") is not None:
            values["campaigns_dir"] = Path(values["campaigns_dir"])
        return cls(**values)
