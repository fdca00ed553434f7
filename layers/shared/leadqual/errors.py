"""Domain error types shared by every process.

Each error carries data, not just a message: `reason` (plain words, safe to store on a lead and
to log: no phone numbers) and `retryable`, which decides whether a caller retries (SQS redelivery,
backoff) or records a permanent failure. Adapters translate library errors into these with
`raise … from exc`; handlers map them to statuses in one place.
"""

from __future__ import annotations


class LeadqualError(Exception):
    """Base of every domain error. `retryable` defaults to the class's own default."""

    default_retryable: bool = False

    def __init__(self, reason: str, *, retryable: bool | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = self.default_retryable if retryable is None else retryable

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, retryable={self.retryable})"


class InvalidLead(LeadqualError):
    """A lead that can never be called as given (bad number, missing field). Permanent."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        super().__init__(reason, retryable=False)
        self.field = field


class ConfigError(LeadqualError):
    """Our own configuration is broken (e.g. a campaign file that does not validate). Retryable:
    the message waits (and ends in the DLQ) until the configuration is fixed and redeployed."""

    default_retryable = True


class ComplianceError(LeadqualError):
    """A lead that must not be called (no opt-in, do-not-call, unknown time zone). Permanent."""


class AnswerError(LeadqualError):
    """An answer that cannot be turned into the question's type; the message says why."""

    def __init__(self, reason: str, *, question_id: str | None = None) -> None:
        super().__init__(reason, retryable=False)
        self.question_id = question_id


class SettingsError(LeadqualError):
    """Missing or malformed configuration; `variable` names the environment variable."""

    def __init__(self, reason: str, *, variable: str | None = None) -> None:
        super().__init__(reason, retryable=False)
        self.variable = variable


def is_retryable_status(status: int | None) -> bool:
    """HTTP statuses worth retrying: no response at all, 408, 429 and 5xx. Other 4xx are permanent."""
    if status is None:
        return True
    return status in (408, 429) or status >= 500


class SautikitError(LeadqualError):
    """A failed Sautikit API call (SAUTIKIT.md §1). `status` is None when no response came back
    (timeout, connection error); `code` is the platform's error code, e.g. `wallet.insufficient_funds`."""

    def __init__(
        self,
        status: int | None,
        code: str | None,
        message: str,
        retryable: bool,
        request_id: str | None = None,
        *,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.retry_after_s = retry_after_s

    @classmethod
    def from_status(
        cls,
        status: int | None,
        code: str | None = None,
        message: str = "",
        request_id: str | None = None,
        *,
        retry_after_s: float | None = None,
    ) -> SautikitError:
        """Build the error with `retryable` decided by the status (4xx permanent except 408/429)."""
        text = message or (f"HTTP {status}" if status is not None else "no response")
        return cls(status, code, text, is_retryable_status(status), request_id, retry_after_s=retry_after_s)

    def __str__(self) -> str:
        parts = [f"sautikit {self.status if self.status is not None else 'no response'}"]
        if self.code:
            parts.append(self.code)
        parts.append(self.message)
        text = ": ".join(parts)
        return f"{text} (request {self.request_id})" if self.request_id else text

    def __repr__(self) -> str:
        return (
            f"SautikitError(status={self.status!r}, code={self.code!r}, message={self.message!r}, "
            f"retryable={self.retryable}, request_id={self.request_id!r})"
        )
