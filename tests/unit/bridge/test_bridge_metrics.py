"""The per-call EMF line: valid Embedded Metric Format, the names the dashboard and autoscaling use."""

from __future__ import annotations

import json

from bridge.metrics import CallMetrics, gauge_line
from leadqual.observability import NAMESPACE, Metric


def test_call_line_is_emf_with_the_shared_metric_names() -> None:
    m = CallMetrics(session_id="HD_1", engine="openai", ttfw_ms=412.34, turns=5, interruptions=1)
    m.model_latency_ms += [640.0, 820.5]
    m.usage(1000, 500, 10.0, 8.0, {})
    doc = json.loads(
        m.emf(outcome="hot_transferred", verdict="hot", transferred=True, extra={"lead_id": "L1"})
    )
    directive = doc["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == NAMESPACE
    assert directive["Dimensions"] == [["service"]]
    assert doc["service"] == "leadqual"
    names = {d["Name"] for d in directive["Metrics"]}
    for shared in (Metric.TIME_TO_FIRST_WORD_MS, Metric.LEADS_HOT, Metric.TRANSFERS):
        assert shared.value in names
    assert all(name in doc for name in names)  # every declared metric has its value
    assert doc[Metric.TIME_TO_FIRST_WORD_MS.value] == 412.3
    assert doc["ModelLatencyMs"] == [640.0, 820.5]
    assert doc["ModelCostUSD"] == round((1000 * 32 + 500 * 64) / 1e6, 6)
    assert (doc["outcome"], doc["lead_id"], doc["session_id"]) == ("hot_transferred", "L1", "HD_1")


def test_reported_cost_wins_over_list_prices() -> None:
    m = CallMetrics(session_id="HD_2", engine="gemini")
    m.usage(10, 10, 0, 0, {"cost_usd": 0.0123})
    assert m.model_cost_usd() == 0.0123
    doc = json.loads(m.emf(outcome="cold_closed", verdict="cold", transferred=False, extra={}))
    assert doc["LeadsCold"] == 1
    assert "Transfers" not in doc
    assert "TimeToFirstWordMs" not in doc  # never spoke: no sample rather than a zero


def test_active_sessions_gauge_feeds_autoscaling() -> None:
    doc = json.loads(gauge_line(Metric.BRIDGE_ACTIVE_SESSIONS.value, 17))
    assert doc["BridgeActiveSessions"] == 17
    assert doc["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "BridgeActiveSessions", "Unit": "Count"}
    ]
