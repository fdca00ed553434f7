"""`python -m bench` orchestration: sections run in order, a failing section is recorded, not fatal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import bench.__main__ as cli
from bench import report


@pytest.fixture(autouse=True)
def no_process_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    # main() pins and prioritises the process it runs in; not the test runner's.
    monkeypatch.setattr(cli, "cores", lambda: (0, {0}))
    monkeypatch.setattr(cli, "raise_priority", lambda: False)
    monkeypatch.setattr(cli, "realtime", lambda on=True: False)
    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda pid: {0})


def test_sections_fill_results_and_a_failure_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []

    def ok(cfg: cli.Config, cpu: int | None) -> dict[str, Any]:
        ran.append("ttfw")
        assert cfg.ttfw_calls == 3  # --quick
        return {"ttfw_p95_ms": report.metric(42.0, "ms")}

    def boom(cfg: cli.Config, cpu: int | None) -> dict[str, Any]:
        ran.append("dialer")
        raise RuntimeError("moto went away")

    monkeypatch.setattr(cli, "RUNNERS", {**cli.RUNNERS, "ttfw": ok, "dialer": boom})
    out, table = tmp_path / "results.json", tmp_path / "table.md"
    out.write_text(json.dumps({"ttfw_p95_ms": {"value": 40.0, "unit": "ms"}}))  # a previous run
    code = cli.main(["--quick", "--only", "ttfw,dialer", "--out", str(out), "--table", str(table)])
    assert code == 1
    assert ran == ["ttfw", "dialer"]
    doc = json.loads(out.read_text())
    assert doc["ttfw_p95_ms"]["value"] == 42.0
    assert doc["ttfw_p95_ms"]["detail"]["change_vs_previous_run_pct"] == 5.0
    assert doc["dialer_batch_speedup"]["value"] is None
    assert "moto went away" in doc["dialer_batch_speedup"]["detail"]["error"]
    assert "dialer_batch_speedup: not measured" in table.read_text()


def test_unknown_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--only", "nope", "--out", str(tmp_path / "r.json")])
