"""`leadqual report`: per-lead rows and campaign totals from the table, as JSON and CSV (moto in-process)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leadqual.cli import main
from leadqual.models import Answer, CallRecord, CallState, Lead, LeadStatus, Outcome, Score, Verdict
from leadqual.store import DynamoStore

T = datetime(2025, 6, 4, 7, 0, tzinfo=UTC)


def seed(store: DynamoStore) -> None:
    def lead(lead_id: str, campaign: str = "example") -> None:
        store.put_lead(
            Lead(
                lead_id=lead_id,
                phone="+254712000001",
                name=lead_id.title(),
                company="Co",
                opt_in=True,
                campaign=campaign,
            )
        )

    def call(lead_id: str, attempt: int, **fields: object) -> None:
        store.begin_attempt(lead_id, attempt)
        store.put_call(
            CallRecord(
                lead_id=lead_id, attempt=attempt, client_request_id=f"lq-{lead_id}-{attempt}", **fields
            )
        )  # type: ignore[arg-type]

    lead("hot")
    call(
        "hot",
        1,
        session_id="HD_1",
        state=CallState.COMPLETED,
        answered_at=T,
        billed_seconds=120,
        cost_minor=600,
    )
    store.save_answer("hot", Answer(question_id="seats", value=40, quote="about forty"))
    store.save_answer("hot", Answer(question_id="decision_maker", value=True, quote="yes"))
    store.set_outcome(
        "hot", Outcome.HOT_TRANSFERRED, score=Score(verdict=Verdict.HOT, points=100, max_points=100)
    )
    store.set_status("hot", LeadStatus.DONE)

    lead("cold")
    call(
        "cold",
        1,
        session_id="HD_2",
        state=CallState.COMPLETED,
        answered_at=T,
        billed_seconds=60,
        cost_minor=300,
    )
    store.set_outcome(
        "cold", Outcome.COLD_CLOSED, score=Score(verdict=Verdict.COLD, points=0, max_points=100)
    )

    lead("away")
    call("away", 1, session_id="HD_3", state=CallState.NO_ANSWER, billed_seconds=0, cost_minor=0)
    call("away", 2, session_id="HD_4", state=CallState.NO_ANSWER, billed_seconds=0, cost_minor=0)
    store.set_status("away", LeadStatus.RETRY_SCHEDULED, next_attempt_at=T)

    lead("waiting")
    store.set_status("waiting", LeadStatus.DEFERRED, reason="outside calling hours")

    lead("other", campaign="barge")
    call(
        "other",
        1,
        session_id="HD_5",
        state=CallState.COMPLETED,
        answered_at=T,
        billed_seconds=30,
        cost_minor=150,
    )
    store.set_outcome("other", Outcome.HOT_TRANSFERRED)


def test_json_report_with_totals(
    store: DynamoStore, aws: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(store)
    out = tmp_path / "report.json"

    assert main(["report", "--table", store.table_name, "--out", str(out)]) == 0

    report = json.loads(out.read_text())
    assert report["campaigns"] == ["barge", "example"]
    assert report["totals"] == {
        "leads": 5,
        "dialed": 4,
        "answered": 3,
        "hot": 2,
        "cold": 1,
        "transferred": 2,
        "billed_seconds": 210,
        "kes": 10.5,
        "cost_per_qualified_lead_kes": 5.25,
    }
    rows = {r["lead_id"]: r for r in report["leads"]}
    assert rows["hot"]["answers"] == {"seats": 40, "decision_maker": True}
    assert (rows["hot"]["outcome"], rows["hot"]["verdict"], rows["hot"]["cost_kes"]) == (
        "hot_transferred",
        "hot",
        6.0,
    )
    assert (rows["away"]["attempts"], rows["away"]["status"], rows["away"]["answered"]) == (
        2,
        "retry_scheduled",
        False,
    )
    assert rows["waiting"]["reason"] == "outside calling hours"
    assert (
        "5 leads: 4 dialed, 3 answered, 2 hot, 1 cold, 2 transferred; 210 s billed, KES 10.50"
        in capsys.readouterr().err
    )


def test_csv_report_for_one_campaign_to_stdout(
    store: DynamoStore, aws: object, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(store)
    assert main(["report", "--table", store.table_name, "--campaign", "example", "--format", "csv"]) == 0

    text = capsys.readouterr().out
    leads_part, totals_part = text.split("\n\n")
    rows = list(csv.DictReader(io.StringIO(leads_part)))
    assert [r["lead_id"] for r in rows] == ["away", "cold", "hot", "waiting"]
    hot = next(r for r in rows if r["lead_id"] == "hot")
    assert (hot["answer_seats"], hot["answer_decision_maker"], hot["transferred"]) == ("40", "yes", "yes")
    totals = dict(csv.reader(io.StringIO(totals_part)))
    assert totals["total"] == "value"
    assert (totals["leads"], totals["hot"], totals["kes"], totals["cost_per_qualified_lead_kes"]) == (
        "4",
        "1",
        "9.0",
        "9.0",
    )


def test_no_table_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TABLE_NAME", raising=False)
    assert main(["report"]) == 2
    assert "no table" in capsys.readouterr().err
