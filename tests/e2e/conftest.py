"""The whole local stack, driven the way a user drives it: `leadqual demo` and `leadqual local up` as
processes (the same console script `make demo` runs), with a temporary output folder."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "local" / "data"
LEADQUAL = Path(sys.executable).with_name("leadqual")
DEMO_TIMEOUT_S = 420


@dataclass
class DemoRun:
    returncode: int
    output: str
    out_dir: Path
    report: dict[str, Any]
    sim_calls: list[dict[str, Any]]
    violations: list[dict[str, Any]]

    def lead(self, lead_id: str) -> dict[str, Any]:
        return next(row for row in self.report["leads"] if row["lead_id"] == lead_id)

    def sim_call(self, lead_id: str, attempt: int = 1) -> dict[str, Any]:
        label = f"lq-{lead_id}-{attempt}"
        return next(c for c in self.sim_calls if c.get("client_request_id") == label)


def run_demo(out_dir: Path, *args: str) -> DemoRun:
    """`leadqual demo --report <out_dir>/report.json --no-live …` as a process; its outputs parsed."""
    report_path = out_dir / "report.json"
    proc = subprocess.run(
        [str(LEADQUAL), "demo", "--report", str(report_path), "--no-live", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert report_path.is_file(), f"no report written (exit {proc.returncode}):\n{output[-4000:]}"
    return DemoRun(
        returncode=proc.returncode,
        output=output,
        out_dir=out_dir,
        report=json.loads(report_path.read_text()),
        sim_calls=json.loads((out_dir / "sautikit" / "calls.json").read_text()),
        violations=json.loads((out_dir / "sautikit" / "violations.json").read_text()),
    )


def directory_expectations(path: Path) -> dict[str, str]:
    """e164 -> the outcome the directory file says the demo should reach (`expect:`)."""
    data = yaml.safe_load(path.read_text())
    return {e164: spec["expect"] for e164, spec in data["numbers"].items() if spec.get("expect")}


def months_to_next_quarter(now: datetime) -> int:
    return 3 - (now.month - 1) % 3


def months_to_next_year(now: datetime) -> int:
    return 12 - now.month + 1


def nows() -> list[datetime]:
    """'Now' in UTC and in Nairobi: timeline answers depend on the month, which may differ at its edge."""
    utc = datetime.now(UTC)
    return [utc, utc.astimezone(ZoneInfo("Africa/Nairobi"))]


@pytest.fixture(scope="session")
def sample_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The sample campaign, once for the session: `make demo` with a temporary report folder."""
    return run_demo(tmp_path_factory.mktemp("demo-out"))
