"""The leads queue: the message format, deferral by re-sending with a delay, and batched sends.

Message body (SQS), either shape:
- a bare lead, as `aws sqs send-message --message-body` would send it:
  `{"lead_id": "lead-0001", "phone": "+254712345678", "name": "…", "company": "…", "opt_in": true,
    "timezone": "Africa/Nairobi", "campaign": "example"}` (timezone and campaign optional);
- an envelope, which is what our own code sends when it defers or retries a lead:
  `{"lead": {…}, "attempt": 2, "not_before": "2025-06-04T05:00:00+00:00", "reason": "…"}`.
A bare lead is attempt 1 with no `not_before`.

Deferral: SQS delays a message by at most 15 minutes, so a lead that must wait longer hops:
`LeadQueue.defer` re-sends the envelope with `DelaySeconds = min(900, seconds until not_before)`
and the caller acknowledges the original; a message that arrives before its `not_before` is
simply deferred again the same way. Nothing is dropped (the message only leaves the queue once a
new one carrying the lead is in it) and nothing is dialled early (the `not_before` check runs on
every arrival, whatever the queue did).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from leadqual.errors import InvalidLead, LeadqualError
from leadqual.models import Lead

MAX_DELAY_S = 900  # SQS's own ceiling for DelaySeconds
BATCH_SIZE = 10  # SQS's ceiling for SendMessageBatch


class QueueError(LeadqualError):
    """Sending to SQS failed; `retryable` for throttling, service and connection errors."""

    default_retryable = True


class LeadMessage(BaseModel):
    """One queued dial of one lead: which attempt, and not before when."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    lead: Lead
    attempt: int = Field(default=1, ge=1, le=100)
    not_before: datetime | None = None
    reason: str | None = None

    @field_validator("not_before")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # an ISO time without offset is read as UTC
        return value

    def body(self) -> str:
        """The envelope as JSON (what `parse_message` reads back)."""
        return self.model_dump_json(exclude_none=True)


def parse_message(body: str | bytes) -> LeadMessage:
    """A queue message body → LeadMessage. InvalidLead (permanent) for anything unusable; its
    reason names the bad field and never repeats the phone number."""
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InvalidLead("message body is not JSON") from exc
    if not isinstance(data, dict):
        raise InvalidLead("message body is not a JSON object")
    try:
        if isinstance(data.get("lead"), dict):
            return LeadMessage.model_validate(data)
        return LeadMessage(lead=Lead.model_validate(data))
    except ValidationError as exc:
        raise InvalidLead(describe_validation(exc), field=_first_field(exc)) from exc


def describe_validation(exc: ValidationError) -> str:
    """Pydantic errors as one line of `field: why`, without the rejected values (they may be PII)."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in err["loc"] if p != "lead") or "body"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def _first_field(exc: ValidationError) -> str | None:
    for err in exc.errors(include_input=False, include_url=False):
        names = [str(p) for p in err["loc"] if p != "lead"]
        if names:
            return names[0]
    return None


def delay_until(not_before: datetime, now: datetime, cap_s: int = MAX_DELAY_S) -> int:
    """Whole seconds to delay a message due at `not_before` (rounded up, so it never arrives early
    by a fraction), capped at `cap_s`; 0 when due."""
    seconds = (not_before - now).total_seconds()
    return max(0, min(cap_s, math.ceil(seconds)))


@dataclass
class BatchResult:
    """What a batched send achieved: ids sent, and per failed id the last error code."""

    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


class LeadQueue:
    """The leads queue over an injected boto3 SQS client."""

    def __init__(
        self,
        queue_url: str,
        client: Any = None,
        *,
        max_delay_s: int = MAX_DELAY_S,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.queue_url = queue_url
        self._client = client
        self.max_delay_s = min(MAX_DELAY_S, max(0, max_delay_s))
        self._sleep = sleep
        self._rand = rand

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # lazy: building a queue object touches no environment or network

            self._client = boto3.client("sqs")
        return self._client

    def send(self, message: LeadMessage, *, delay_s: int = 0) -> str:
        """Send one envelope; returns the SQS message id."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            response = self.client.send_message(
                QueueUrl=self.queue_url,
                MessageBody=message.body(),
                DelaySeconds=max(0, min(self.max_delay_s, delay_s)),
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise QueueError(f"sqs send_message failed: {code}", retryable=_retryable_code(code)) from exc
        except BotoCoreError as exc:
            raise QueueError(f"sqs send_message failed: {type(exc).__name__}") from exc
        return str(response.get("MessageId", ""))

    def defer(self, message: LeadMessage, now: datetime) -> int:
        """Re-send `message` (which carries its `not_before`) so it arrives when due or, for a long
        wait, after the longest delay SQS allows (it is then deferred again). Returns the delay."""
        due = message.not_before or now
        delay = delay_until(due, now, self.max_delay_s)
        self.send(message, delay_s=delay)
        return delay

    def send_batch(
        self,
        bodies: Sequence[tuple[str, str]],
        *,
        max_attempts: int = 5,
        base_delay_s: float = 0.2,
        on_sent: Callable[[int], None] | None = None,
    ) -> BatchResult:
        """Send `(id, body)` pairs with SendMessageBatch in chunks of 10, retrying the entries that
        failed (only those, with full-jitter backoff) up to `max_attempts` times per chunk.
        `on_sent(n)` reports progress as entries succeed."""
        from botocore.exceptions import BotoCoreError, ClientError

        result = BatchResult()
        for start in range(0, len(bodies), BATCH_SIZE):
            pending = dict(bodies[start : start + BATCH_SIZE])
            errors: dict[str, str] = {}
            for attempt in range(1, max_attempts + 1):
                # Entry ids by position: lead ids may hold characters SQS refuses in an entry id.
                by_entry = {f"e{n}": i for n, i in enumerate(pending)}
                entries = [{"Id": e, "MessageBody": pending[i]} for e, i in by_entry.items()]
                try:
                    response = self.client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "error")
                    errors = dict.fromkeys(pending, code)
                    if not _retryable_code(code):
                        break
                except BotoCoreError as exc:
                    errors = dict.fromkeys(pending, type(exc).__name__)
                else:
                    for ok in response.get("Successful", []):
                        original = by_entry[ok["Id"]]
                        pending.pop(original, None)
                        result.sent.append(original)
                    if on_sent and response.get("Successful"):
                        on_sent(len(response["Successful"]))
                    errors = {}
                    permanent = False
                    for bad in response.get("Failed", []):
                        original = by_entry[bad["Id"]]
                        errors[original] = str(bad.get("Code", "error"))
                        permanent = permanent or bool(bad.get("SenderFault"))
                    if permanent:
                        break  # the request itself is wrong (e.g. body too large): repeating cannot help
                if not pending:
                    break
                if attempt < max_attempts:
                    self._sleep(min(5.0, base_delay_s * 2 ** (attempt - 1)) * self._rand())
            result.failed.update({i: errors.get(i, "error") for i in pending})
        return result


def _retryable_code(code: str) -> bool:
    return code in {
        "ThrottlingException",
        "RequestThrottled",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
        "KmsThrottled",
    }


def utcnow() -> datetime:
    return datetime.now(UTC)
