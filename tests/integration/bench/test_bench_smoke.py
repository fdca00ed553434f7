"""A short run of every bench section at tiny loads, on loopback: proves the harness measures what it
says (frames both ways, matched replies, latencies, memory, TTFW, webhook and dialer numbers)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench import procs
from bench.capacity import find_capacity, measure_window
from bench.loadgen import LoadGenerator
from bench.procs import SutProcess
from bench.sut import SECRET

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def no_realtime(monkeypatch: pytest.MonkeyPatch) -> None:
    # Test runs share the machine: no real-time scheduling for the SUTs they start.
    monkeypatch.setattr(procs, "RT_DEFAULT", False)


@pytest.mark.parametrize("kind", ["bridge", "pipecat"])
async def test_a_window_measures_both_directions_against_each_system(kind: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with (
            SutProcess(kind, None) as sut,
            LoadGenerator("127.0.0.1", sut.port, secret=SECRET, spread=False) as lg,
        ):
            # Streams start in step: greeting, 1 s of speech, 300 ms of quiet -> a reply ~3.2 s in.
            w = await measure_window(lg, sut, 3, window_s=3.0, settle_s=2.0, workdir=Path(tmp))
    assert w.calls == 3
    # 3 calls x 50 frames/s x 3 s, all stamped and seen by the model, none lost.
    assert w.inbound_ms.size >= 3 * 50 * 3 * 0.9
    assert w.lost == 0
    assert 0 < float(np.median(w.inbound_ms)) < 50
    # Every reply frame the leads got is matched to the reply the model started.
    assert w.outbound_unmatched == 0
    assert w.outbound_ms.size >= 3 * 60  # each call's 1.2 s reply is 60 frames of 20 ms
    assert w.first_out_ms.size == 3
    assert 0 < float(np.median(w.outbound_ms)) < 200
    assert w.cpu > 0
    assert w.rss_mb > 10
    assert w.describe()["sut_live"] == 3


async def test_capacity_search_steps_and_reports() -> None:
    lines: list[str] = []
    result = await find_capacity(
        "bridge",
        None,
        ladder=[2, 4],
        window_s=1.0,
        settle_s=0.5,
        refine=0,
        baseline_ms=0.0,
        budget_s=30.0,
        log=lines.append,
        confirm=0,
    )
    assert [w.calls for w in result.windows][:1] == [2]
    assert len(lines) == len(result.windows)
    doc = result.describe()
    assert doc["steps"][0]["frames_in"] > 0
    if result.capacity == 4:
        assert "no failure" in result.limited_by
    else:  # a loaded test machine may fail a level; the search must then say why
        assert result.limited_by


async def test_time_to_first_word_is_measured_from_stream_open() -> None:
    from bench.ttfw import measure_ttfw

    r = await measure_ttfw("bridge", None, calls=2, gap_s=0.1)
    assert r["failures"] == []
    assert r["open_ms"]["n"] == 2
    assert 0 < r["open_ms"]["p50"] < 2000
    assert r["connect_ms"]["p50"] >= r["open_ms"]["p50"]


def test_webhook_cold_start_and_warm_calls() -> None:
    from bench.webhook import cold_starts, warm_calls

    cold = cold_starts(1, lambda _: None)
    assert cold["median_ms"] > cold["bare_interpreter_ms"] > 0
    assert cold["slowest_imports"]  # the -X importtime run was parsed
    warm = warm_calls(30, lambda _: None)
    assert warm["in_memory_store_ms"]["n"] == 30
    assert 0 < warm["in_memory_store_ms"]["p50"] < 100


def test_dialer_batch_against_moto_and_the_simulator() -> None:
    from bench.dialer import dialer_section

    cfg = SimpleNamespace(dialer_repeats=1, dialer_latency_s=0.05)
    out = dialer_section(cfg, lambda _: None)
    m = out["dialer_batch_speedup"]
    run = m["detail"]["runs"][0]
    # Ten single-lead batches each wait for the carrier's 50 ms at least once.
    assert run["serial_s"] >= 10 * 0.05
    assert m["value"] == pytest.approx(run["serial_s"] / run["batch_s"], rel=0.02)
    assert m["detail"]["calls_placed_on_simulator"] >= 21  # warm-up + 10 singles + the batch of 10
