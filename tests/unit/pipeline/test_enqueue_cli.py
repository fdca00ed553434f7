"""`leadqual enqueue`: row validation with line numbers and reasons, dry run, strict mode, and
batched sends that retry only the failed entries (moto SQS in-process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pipeline_fakes import Aws

from leadqual.cli import main
from leadqual.queue import LeadQueue, parse_message

CSV = """lead_id,phone,name,company,opt_in,timezone,campaign
lead-1,0712 345 678,Wanjiku Kamau,Savannah,yes,,
lead-2,+254722000111,Otieno Ochieng,Lakeside,true,Africa/Nairobi,example
lead-3,+2547,Short Number,Acme,yes,,
lead-4,+254733000222,No Consent,Acme,no,,
lead-1,+254744000333,Twice,Acme,yes,,
lead-6,+254755000444,Bad Zone,Acme,yes,Mars/Olympus,
lead-7,+254766000555,Bad Campaign,Acme,yes,,nosuch
bad id!,+254777000666,Bad Id,Acme,yes,,
lead-9,+255754000222,Neema Mushi,Kilimanjaro Tours,1,Africa/Dar_es_Salaam,
"""


@pytest.fixture
def leads_csv(tmp_path: Path) -> Path:
    path = tmp_path / "leads.csv"
    path.write_text(CSV)
    return path


def sent(aws: Aws) -> dict[str, dict[str, Any]]:
    return {json.loads(m["Body"])["lead_id"]: json.loads(m["Body"]) for m in aws.drain()}


def test_valid_rows_are_sent_and_invalid_ones_reported_by_line(
    aws: Aws, leads_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["enqueue", str(leads_csv), "--queue-url", aws.resources.queue_url])

    assert code == 1  # some rows were invalid
    report = capsys.readouterr().err
    assert "sending leads" in report
    assert "3/3" in report
    for line in (
        "invalid: line 4: lead-3: phone: too short",
        "invalid: line 5: lead-4: not opted in: leads must have agreed to be called",
        "invalid: line 6: lead-1: duplicate lead_id (first on line 2)",
        "invalid: line 7: lead-6: timezone: unknown time zone 'Mars/Olympus'",
        "invalid: line 8: lead-7: campaign: unknown campaign 'nosuch'",
        "invalid: line 9: bad id!: lead_id: String should match pattern",
        "9 rows: 3 valid, 6 invalid",
        "sent 3 of 3 leads to the queue",
    ):
        assert line in report
    bodies = sent(aws)
    assert set(bodies) == {"lead-1", "lead-2", "lead-9"}
    assert bodies["lead-1"] == {
        "lead_id": "lead-1",
        "phone": "+254712345678",  # normalised to E.164
        "name": "Wanjiku Kamau",
        "company": "Savannah",
        "opt_in": True,
        "campaign": "example",
    }
    assert bodies["lead-9"]["timezone"] == "Africa/Dar_es_Salaam"
    assert parse_message(json.dumps(bodies["lead-2"])).attempt == 1  # the documented bare-lead shape


def test_dry_run_and_strict_send_nothing(
    aws: Aws, leads_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["enqueue", str(leads_csv), "--queue-url", aws.resources.queue_url, "--dry-run"]) == 1
    assert "dry run: 3 leads would be sent" in capsys.readouterr().err
    assert main(["enqueue", str(leads_csv), "--queue-url", aws.resources.queue_url, "--strict"]) == 1
    assert "nothing sent (--strict)" in capsys.readouterr().err
    assert sent(aws) == {}


def test_jsonl_files_with_a_default_campaign(
    aws: Aws, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "leads.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps(
                    {"lead_id": "j1", "phone": "+254712000001", "name": "A", "company": "B", "opt_in": True}
                ),
                "{not json",
                json.dumps({"lead_id": "j3", "phone": "+254712000003", "opt_in": True, "favourite": "tea"}),
                "",
                json.dumps({"lead_id": "j5", "phone": "+254712000005", "opt_in": True}),
            ]
        )
    )
    code = main(
        [
            "enqueue",
            str(path),
            "--queue-url",
            aws.resources.queue_url,
            "--campaign",
            "example",
            "--no-progress",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "invalid: line 2: not valid JSON" in err
    assert "invalid: line 3: j3: unknown field 'favourite'" in err
    assert set(sent(aws)) == {"j1", "j5"}


def test_a_file_without_the_required_columns_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("id,number\n1,0712345678\n")
    assert main(["enqueue", str(path), "--queue-url", "http://unused", "--dry-run"]) == 2
    assert "the header lacks lead_id, phone, opt_in" in capsys.readouterr().err


class FlakySqs:
    """SQS whose SendMessageBatch fails chosen entries a number of times before accepting them."""

    def __init__(self, real: Any, failures: dict[str, int]) -> None:
        self.real = real
        self.failures = failures  # lead_id -> how many times its entry fails
        self.calls: list[list[str]] = []

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [json.loads(e["MessageBody"])["lead_id"] for e in Entries]
        self.calls.append(ids)
        keep, failed = [], []
        for entry, lead_id in zip(Entries, ids, strict=True):
            if self.failures.get(lead_id, 0) > 0:
                self.failures[lead_id] -= 1
                failed.append({"Id": entry["Id"], "SenderFault": False, "Code": "InternalError"})
            else:
                keep.append(entry)
        response = (
            self.real.send_message_batch(QueueUrl=QueueUrl, Entries=keep) if keep else {"Successful": []}
        )
        return {"Successful": response.get("Successful", []), "Failed": failed}


def test_batches_of_ten_retry_only_the_entries_that_failed(aws: Aws) -> None:
    flaky = FlakySqs(aws.sqs, {"l3": 2, "l12": 1, "l20": 99})
    queue = LeadQueue(aws.resources.queue_url, flaky, sleep=lambda _s: None)
    bodies = [(f"l{i}", json.dumps({"lead_id": f"l{i}"})) for i in range(1, 24)]
    progress: list[int] = []

    result = queue.send_batch(bodies, max_attempts=4, on_sent=progress.append)

    assert [len(c) for c in flaky.calls[:2]] == [10, 1]  # first chunk, then only l3 ...
    assert flaky.calls[2] == ["l3"]
    assert flaky.calls[3] == [f"l{i}" for i in range(11, 21)]
    assert flaky.calls[4] == ["l12", "l20"]
    assert result.failed == {"l20": "InternalError"}
    assert sorted(result.sent) == sorted(f"l{i}" for i in range(1, 24) if i != 20)
    assert sum(progress) == 22
    assert len(aws.drain()) == 22
