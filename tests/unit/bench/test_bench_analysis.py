"""Latency matching, late-frame accounting and the results table, on synthetic numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench import report
from bench.analysis import Window, outbound_latencies_ms, spread_pct, summary_ms

MS = 1_000_000  # ns


def window(
    inbound: list[float], outbound: list[float], *, sent: int | None = None, calls: int = 2, cpu: float = 0.5
) -> Window:
    return Window(
        calls=calls,
        seconds=10.0,
        sent=len(inbound) if sent is None else sent,
        inbound_ms=np.array(inbound, dtype=float),
        outbound_ms=np.array(outbound, dtype=float),
        outbound_unmatched=0,
        cpu=cpu,
        loadgen_cpu=0.1,
        rss_mb=50.0,
    )


def test_outbound_frames_are_matched_to_the_latest_reply_before_them() -> None:
    replies = {"a": [100 * MS, 3000 * MS], "b": [500 * MS]}
    recv = [
        ("a", np.array([101 * MS, 102 * MS, 130 * MS, 3001 * MS])),
        ("b", np.array([505 * MS, 506 * MS])),
    ]
    lat, unmatched = outbound_latencies_ms(recv, replies, 0, 10_000 * MS)
    assert unmatched == 0
    assert sorted(lat.tolist()) == [1.0, 1.0, 2.0, 5.0, 6.0, 30.0]
    first, _ = outbound_latencies_ms(recv, replies, 0, 10_000 * MS, first_only=True)
    assert sorted(first.tolist()) == [1.0, 1.0, 5.0]  # one per reply


def test_frames_outside_the_window_or_without_a_reply_are_handled() -> None:
    replies = {"a": [100 * MS]}
    recv = [("a", np.array([50 * MS, 101 * MS, 900 * MS])), ("ghost", np.array([200 * MS]))]
    lat, unmatched = outbound_latencies_ms(recv, replies, 60 * MS, 800 * MS)
    assert lat.tolist() == [1.0]
    assert unmatched == 1  # the ghost session's frame: counted against the window, never silently dropped
    # A reply that began before the window does not contribute a "first frame" from inside it.
    first, _ = outbound_latencies_ms(
        [("a", np.array([150 * MS]))], replies, 120 * MS, 800 * MS, first_only=True
    )
    assert first.size == 0


def test_late_frames_and_frames_the_model_never_saw_fail_a_level() -> None:
    ok = window([1.0] * 2000, [2.0] * 1000)
    assert ok.ok()
    assert ok.late_fraction == 0.0
    # 4 late frames in 3000 is 0.13 %: above the 0.1 % limit.
    late = window([1.0] * 1996 + [25.0] * 4, [2.0] * 1000)
    assert late.late_in == 4
    assert not late.ok()
    # Frames sent but never received (a backlog) count as late, beyond one per call at the edges.
    lost = window([1.0] * 2000, [2.0] * 1000, sent=2010)
    assert lost.lost == 8
    assert not lost.ok()
    # A saturated core fails the level even with no late frame yet.
    assert not window([1.0] * 100, [1.0] * 100, cpu=0.99).ok()


def test_baseline_is_subtracted_before_judging_late() -> None:
    w = window([20.5] * 10, [])
    assert w.late_in == 10
    w.baseline_ms = 1.0
    assert w.late_in == 0


def test_summaries_and_spreads() -> None:
    s = summary_ms(np.arange(1, 101, dtype=float))
    assert s["n"] == 100
    assert s["p50"] == pytest.approx(50.5)
    assert s["max"] == 100.0
    assert summary_ms(np.zeros(0))["p99"] is None
    assert spread_pct([100.0, 110.0]) == pytest.approx(9.5, abs=0.1)
    assert spread_pct([5.0]) is None


def sample_results() -> dict[str, object]:
    return {
        "bridge_calls_per_core": report.metric(
            240,
            "calls/core",
            peer={"pipecat": 100},
            detail={"ratio_vs_pipecat": 2.4, "limited_by": "late frames"},
        ),
        "bridge_relay_p99_ms": report.metric(3.2, "ms", peer={"pipecat": 9.0}),
        "webhook_cold_ms": report.metric(None, "ms", detail={"error": "RuntimeError: boom"}),
        "dialer_batch_speedup": report.metric(6.0, "x"),
        "_seconds": 12.0,
    }


def test_closing_notes_say_by_how_much_and_what_limits() -> None:
    notes = report.closing_notes(sample_results())
    assert any("240 calls/core" in n and "missed by 20%" in n and "late frames" in n for n in notes)
    assert any("2.4x Pipecat" in n and "missed by 20%" in n for n in notes)
    assert any(n.startswith("webhook_cold_ms: not measured") and "boom" in n for n in notes)
    assert not any(n.startswith("dialer_batch_speedup") for n in notes)


def test_rows_mark_met_and_missed_goals_with_the_peer() -> None:
    rows = {r[0]: r for r in report.rows(sample_results())}
    assert rows["bridge_calls_per_core"][4] == "NO"
    assert "pipecat 100" in rows["bridge_calls_per_core"][5]
    assert rows["bridge_relay_p99_ms"][4] == "yes"
    assert rows["dialer_batch_speedup"][4] == "yes"
    assert rows["webhook_cold_ms"][1] == "—"


def test_written_results_have_the_contract_shape(tmp_path: Path) -> None:
    out, md = tmp_path / "results.json", tmp_path / "table.md"
    machine = {"cpu": "Test CPU", "cores": 2, "python": "3.12", "date": "today"}
    report.write(sample_results(), machine, out, md)
    doc = json.loads(out.read_text())
    assert "_seconds" not in doc
    for name, m in doc.items():
        assert set(m) <= {"value", "unit", "peer", "detail"}, name
        assert "value" in m
        assert "unit" in m
    assert doc["bridge_calls_per_core"]["peer"] == {"pipecat": 100}
    text = md.read_text()
    assert "| bridge_calls_per_core | 240 |" in text
    assert "Test CPU" in text
    assert "missed by 20%" in text


def test_goal_direction() -> None:
    assert report.GOALS["ttfw_p95_ms"].met(149.0)
    assert not report.GOALS["ttfw_p95_ms"].met(151.0)
    assert report.GOALS["dialer_batch_speedup"].met(5.0)
    assert report.GOALS["webhook_cold_ms"].miss_pct(500.0) == pytest.approx(100.0)


def test_capacity_is_the_largest_pass_below_every_failure() -> None:
    from bench.capacity import capacity_of

    def at(calls: int, ok: bool) -> Window:
        w = window([1.0] * 1000 if ok else [30.0] * 1000, [])
        w.calls = calls
        return w

    assert capacity_of([at(50, True), at(100, True), at(200, False), at(150, True)]) == 150
    # 250 passed once and failed once: it does not count, nor does anything above a failure.
    runs = [at(200, True), at(300, False), at(250, True), at(275, False), at(250, False), at(237, False)]
    assert capacity_of(runs) == 200
    assert capacity_of([at(50, True), at(100, True)]) == 100
    assert capacity_of([at(50, False)]) == 0


def test_a_long_full_collection_in_any_window_is_named_in_the_note() -> None:
    results = sample_results()
    detail = results["bridge_calls_per_core"]["detail"]  # type: ignore[index]
    detail["bridge"] = {
        "steps": [
            {"calls": 200, "sut_gc_pauses": {"max_ms": [1.0, 2.0, 0.0]}},
            {"calls": 250, "sut_gc_pauses": {"max_ms": [1.0, 2.0, 188.5]}},
        ]
    }
    notes = report.closing_notes(results)
    assert any("full garbage collection stopped the bridge for 188 ms at 250 calls" in n for n in notes)
