"""Observability: phone numbers never reach log output; metric names and units are the contract."""

from __future__ import annotations

import io
import json
import logging
import re
from typing import Any

import pytest
from aws_lambda_powertools import Logger, Metrics, Tracer

from leadqual.observability import (
    METRIC,
    MaskingFormatter,
    Metric,
    PhoneMaskFilter,
    install_masking,
    logger,
    make_logger,
    mask_fields,
    mask_phone,
    metrics,
    record_metric,
    tracer,
    unit_of,
)

# Every way the same number shows up; none of their digit runs may appear in a log line.
SAME_NUMBER = ["+254712345678", "+254 712 345 678", "254712345678", "0712345678", "0712 345 678", "712345678"]


def assert_no_phone(text: str) -> None:
    digits_only = re.sub(r"[^\d*]", "", text)
    for needle in ("712345", "2345678", "254712"):
        assert needle not in digits_only, f"phone digits leaked: {text}"


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("+254712345001", "+2547******001"),
        ("call +254 712 345 001 now", "call +2547******001 now"),
        ("+1 (212) 555-0123", "+1212******123"),
        ("+44 20 7946 0018", "+4420******018"),
        ("0712 345 001", "******001"),
        ("0712-345-001", "******001"),
        ("254 712 345 001", "******001"),
        ("712345001", "******001"),
        ("lead0712345678", "lead******678"),
        ("to=%2B254712345678", "to=%2B******678"),
        ("arn:aws:sqs:eu-west-1:123456789012:leads", "arn:aws:sqs:eu-west-1:******012:leads"),
    ],
)
def test_mask_phone(raw: str, masked: str) -> None:
    assert mask_phone(raw) == masked


@pytest.mark.parametrize(
    "text",
    [
        "seats 40, timeline 3",
        "2025-06-04 10:00:00,123+0000",
        "HD_a1b2c3d4e5f6",
        "lq-lead-42-3",
        "status 201 after 1234 ms",
        "+2547",  # too short to be a number
        "",
    ],
)
def test_mask_phone_leaves_ordinary_text_alone(text: str) -> None:
    assert mask_phone(text) == text


def test_a_short_international_number_never_shows_more_than_seven_digits() -> None:
    masked = mask_phone("+12345678")  # 8 digits
    assert masked == "+1******678"


def test_mask_fields_walks_structures_and_keeps_numbers() -> None:
    data = {"to": ["+254712345678", ("0712345678",)], "n": 123456789012, "ok": True, "none": None, "x": 1.5}
    assert mask_fields(data) == {
        "to": ["+2547******678", ["******678"]],
        "n": 123456789012,
        "ok": True,
        "none": None,
        "x": 1.5,
    }
    assert mask_fields(ValueError("bad +254712345678")) == "bad +2547******678"


@pytest.fixture
def captured() -> tuple[io.StringIO, Logger]:
    stream = io.StringIO()
    return stream, make_logger("leadqual-test", stream=stream)


def test_no_phone_number_reaches_the_powertools_log(captured: tuple[io.StringIO, Logger]) -> None:
    stream, log = captured
    for number in SAME_NUMBER:
        log.info(f"dialing {number}", extra={"phone": number, "nested": {"to": [number]}, "billed_ms": 1234})
    log.info({"message": "dict message", "lead": {"phone": "+254712345678"}})
    try:
        raise ValueError("Sautikit refused +254712345678")
    except ValueError:
        log.exception("dial failed for 0712 345 678")
    output = stream.getvalue()
    assert_no_phone(output)
    lines = [json.loads(line) for line in output.splitlines()]
    assert lines[0]["message"] == "dialing +2547******678"
    assert lines[0]["phone"] == "+2547******678"
    assert lines[0]["nested"] == {"to": ["+2547******678"]}
    assert lines[0]["billed_ms"] == 1234
    assert lines[-1]["message"] == "dial failed for ******678"
    assert "ValueError: Sautikit refused +2547******678" in lines[-1]["exception"]
    assert lines[-1]["stack_trace"]["value"] == "Sautikit refused +2547******678"


def test_the_shared_logger_masks() -> None:
    assert isinstance(logger.registered_formatter, MaskingFormatter)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    try:
        logger.warning("callback for +254712345678", extra={"caller": "0712345678"})
    finally:
        logger.removeHandler(handler)  # type: ignore[attr-defined]  # Powertools forwards it
    assert_no_phone(stream.getvalue())
    assert "+2547******678" in stream.getvalue()


def test_stdlib_loggers_get_the_same_filter() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s phone=%(phone)s"))
    std = logging.getLogger("leadqual-test-stdlib")
    std.propagate = False
    std.addHandler(handler)
    install_masking(std)
    install_masking(std)  # idempotent
    assert sum(isinstance(f, PhoneMaskFilter) for f in handler.filters) == 1
    try:
        std.warning("to %s", "+254712345678", extra={"phone": "0712 345 678"})
        try:
            raise RuntimeError("busy: 254712345678")
        except RuntimeError:
            std.exception("hangup %s", "712345678", extra={"phone": ["+254712345678"]})
    finally:
        std.removeHandler(handler)
    output = stream.getvalue()
    assert_no_phone(output)
    assert "WARNING to +2547******678 phone=******678" in output
    assert "RuntimeError: busy: ******678" in output


def test_metric_names_are_the_contract() -> None:
    assert METRIC is Metric
    assert {m.value for m in Metric} == {
        "CallsPlaced",
        "CallsAnswered",
        "LeadsHot",
        "LeadsCold",
        "Transfers",
        "TransfersUnconfirmed",
        "BilledSeconds",
        "CostKES",
        "TimeToFirstWordMs",
        "BridgeActiveSessions",
        "DialFailures",
        "WebhookRejected",
        "LeadsDeferred",
        "WalletBalanceMinor",
    }
    assert unit_of(Metric.BILLED_SECONDS).value == "Seconds"
    assert unit_of(Metric.TIME_TO_FIRST_WORD_MS).value == "Milliseconds"
    assert unit_of(Metric.COST_KES).value == "None"
    assert unit_of(Metric.CALLS_PLACED).value == "Count"


def test_record_metric_uses_the_namespace_and_units() -> None:
    assert isinstance(metrics, Metrics)
    own = Metrics(namespace="Leadqual", service="leadqual-test")
    try:
        record_metric(Metric.CALLS_PLACED, into=own)
        record_metric(Metric.BILLED_SECONDS, 42, into=own)
        doc: dict[str, Any] = dict(own.serialize_metric_set())
    finally:
        own.clear_metrics()
    definitions = doc["_aws"]["CloudWatchMetrics"][0]
    assert definitions["Namespace"] == "Leadqual"
    assert {"Name": "BilledSeconds", "Unit": "Seconds"} in definitions["Metrics"]
    assert doc["CallsPlaced"] == [1.0]
    assert doc["BilledSeconds"] == [42.0]


def test_tracer_is_inert_outside_lambda() -> None:
    assert isinstance(tracer(), Tracer)
    assert tracer() is tracer()

    @tracer().capture_method
    def work() -> int:
        return 7

    assert work() == 7


def test_metrics_carry_the_service_dimension_the_dashboard_selects() -> None:
    from leadqual.observability import SERVICE, metrics

    assert SERVICE == "leadqual"
    metrics.add_metric(name="CallsPlaced", unit="Count", value=1)
    blob = metrics.serialize_metric_set()
    metrics.clear_metrics()
    assert blob["service"] == "leadqual"
    assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
