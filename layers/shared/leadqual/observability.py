"""The one place for Powertools logging, metrics and tracing, and for keeping phone numbers out
of logs.

`logger` and `metrics` are shared instances and `tracer()` the shared X-Ray tracer, made on
first use (Powertools reads POWERTOOLS_SERVICE_NAME and friends itself). Every record the `logger` writes goes through `MaskingFormatter`, which
masks phone numbers in the message, in extra fields (nested too) and in exception text.
Stdlib loggers (the bridge, libraries) get the same with `PhoneMaskFilter`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import IO, TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from aws_lambda_powertools.metrics import MetricUnit

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

NAMESPACE = "Leadqual"
# The one metric dimension the dashboard, alarms and autoscaling select on (template.yaml).
SERVICE = "leadqual"
MASK = "******"  # fixed width: the mask does not reveal how long the number was


class Metric(StrEnum):
    """Metric names (namespace `Leadqual`); the dashboard and alarms in template.yaml use these."""

    CALLS_PLACED = "CallsPlaced"
    CALLS_ANSWERED = "CallsAnswered"
    LEADS_HOT = "LeadsHot"
    LEADS_COLD = "LeadsCold"
    LEADS_DEFERRED = "LeadsDeferred"
    TRANSFERS = "Transfers"  # hand-offs the bridge made
    TRANSFERS_UNCONFIRMED = "TransfersUnconfirmed"  # of those, <Dial>s the carrier never confirmed
    BILLED_SECONDS = "BilledSeconds"
    COST_KES = "CostKES"
    TIME_TO_FIRST_WORD_MS = "TimeToFirstWordMs"
    BRIDGE_ACTIVE_SESSIONS = "BridgeActiveSessions"
    DIAL_FAILURES = "DialFailures"
    WEBHOOK_REJECTED = "WebhookRejected"
    WALLET_BALANCE_MINOR = "WalletBalanceMinor"  # a gauge: the low-wallet alarm reads its minimum


METRIC = Metric  # the name the contracts use
METRIC_UNITS: dict[Metric, MetricUnit] = {
    Metric.BILLED_SECONDS: MetricUnit.Seconds,
    Metric.COST_KES: MetricUnit.NoUnit,
    Metric.TIME_TO_FIRST_WORD_MS: MetricUnit.Milliseconds,
    Metric.WALLET_BALANCE_MINOR: MetricUnit.NoUnit,
}  # everything else counts


def unit_of(name: Metric) -> MetricUnit:
    return METRIC_UNITS.get(name, MetricUnit.Count)


# --- masking ---------------------------------------------------------------------------------

# "+" and 8-15 digits, allowing one or two separators between digits: +254 712 345 678, +1 (212) 555-0123.
_INTERNATIONAL = re.compile(r"\+\d(?:[\s\-().]{0,2}\d){7,14}(?!\d)")
# Kenyan local forms with separators: 0712 345 678, 0712-345-678, 254 712 345 678.
_LOCAL = re.compile(r"(?<![\w+])(?:0|254[ -]?)\d{3}[ -]?\d{3}[ -]?\d{3}(?!\w)")
# Any other run of 9 or more digits (bare national numbers, numbers inside ids or URLs).
_RUN = re.compile(r"(?<!\d)\d{9,}(?!\d)")


def _mask_international(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    keep = max(0, min(4, len(digits) - 7))  # never show more than 7 of the digits
    return f"+{digits[:keep]}{MASK}{digits[-3:]}"


def _mask_local(match: re.Match[str]) -> str:
    return MASK + re.sub(r"\D", "", match.group(0))[-3:]


def mask_phone(text: str) -> str:
    """Mask phone numbers and long digit runs, keeping the last 3 digits:
    "+254712345001" → "+2547******001", "0712 345 001" → "******001"."""
    if not any(ch.isdigit() for ch in text):
        return text
    text = _INTERNATIONAL.sub(_mask_international, text)
    text = _LOCAL.sub(_mask_local, text)
    return _RUN.sub(_mask_local, text)


def mask_fields(value: Any) -> Any:
    """`value` with every string inside it masked (dicts, lists and tuples are walked; keys kept).
    Other objects (an exception, a datetime) become their masked `str`, as JSON logging would."""
    if isinstance(value, str):
        return mask_phone(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        return {k: mask_fields(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_fields(v) for v in value]
    return mask_phone(str(value))


class MaskingFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter, masking every string field just before serialisation."""

    def serialize(self, log: Any) -> str:
        return super().serialize(log=mask_fields(log))


_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class PhoneMaskFilter(logging.Filter):
    """For stdlib handlers: masks the formatted message, extra fields and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_phone(record.getMessage())
            record.args = None
        else:
            record.msg = mask_fields(record.msg)
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRS:
                setattr(record, key, mask_fields(value))
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now, masked, so formatters use it instead of the raw exception.
            record.exc_text = mask_phone(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def install_masking(target: logging.Logger | logging.Handler) -> None:
    """Mask phone numbers in everything `target` (a stdlib logger's handlers, or one handler) emits."""
    handlers = target.handlers if isinstance(target, logging.Logger) else [target]
    for handler in handlers:
        if not any(isinstance(f, PhoneMaskFilter) for f in handler.filters):
            handler.addFilter(PhoneMaskFilter())


# --- the shared instances --------------------------------------------------------------------


def make_logger(service: str | None = None, *, stream: IO[str] | None = None, **kwargs: Any) -> Logger:
    """A Powertools Logger that masks phone numbers (tests pass `stream` to read what it writes)."""
    return Logger(service=service, stream=stream, logger_formatter=MaskingFormatter(), **kwargs)


logger = make_logger(SERVICE)
# Named here, not only through POWERTOOLS_SERVICE_NAME, so metrics carry service=leadqual wherever
# the module is imported first (the local stack, tests) and the dashboard still sees them.
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


@functools.cache
def tracer() -> Tracer:
    """The X-Ray tracer (inert outside Lambda: Powertools checks LAMBDA_TASK_ROOT itself).

    Made on first use, not at import: importing the X-Ray SDK builds its sampling clients, about
    a quarter of a second of a cold start. The voice webhook, which a lead waits on in silence,
    never makes one; Lambda's active tracing still records its invocations.
    """
    from aws_lambda_powertools import Tracer

    return Tracer()


def record_metric(name: Metric, value: float = 1, *, into: Metrics | None = None) -> None:
    """Add one metric value with its proper unit to `into` (default: the shared `metrics`)."""
    (into or metrics).add_metric(name=name.value, unit=unit_of(name), value=value)


class MetricsSink(Protocol):
    """What domain code needs to emit a metric (`unit` is a CloudWatch unit name). Functions pass
    `PowertoolsSink`; tests pass a recorder. Keeps the domain free of Powertools' global state."""

    def add(self, name: str, value: float = 1, unit: str = "Count") -> None: ...


class PowertoolsSink:
    """`MetricsSink` over the shared Powertools `Metrics` (flushed by `@metrics.log_metrics`)."""

    def __init__(self, into: Metrics | None = None) -> None:
        self._metrics = into if into is not None else metrics

    def add(self, name: str, value: float = 1, unit: str = "Count") -> None:
        self._metrics.add_metric(name=name, unit=MetricUnit(unit), value=value)
