"""`leadqual report`: export every lead's result (CSV or JSON) with campaign totals.

Reads the table through the campaign index (`leads_by_campaign`); without --campaign it first finds
the campaigns present (a scan that reads only the campaign attribute of lead profiles). Per lead:
status, outcome, score, answers, attempts, and from its call records whether it was dialled and
answered, billed seconds and cost. Totals: leads, dialed, answered, hot, cold, transferred, billed
seconds, KES, and cost per qualified lead (total KES / hot leads).

JSON: `{"campaigns": [...], "leads": [...], "totals": {...}}`. CSV: one row per lead, then an empty
row, then `total,value` rows.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from leadqual.models import CallRecord, Outcome, Verdict
from leadqual.store import DynamoStore, LeadProfile

LEAD_COLUMNS = (
    "lead_id",
    "campaign",
    "name",
    "company",
    "phone",
    "status",
    "outcome",
    "reason",
    "verdict",
    "points",
    "attempts",
    "dialed",
    "answered",
    "transferred",
    "billed_seconds",
    "cost_kes",
    "next_attempt_at",
)


def lead_row(profile: LeadProfile, calls: list[CallRecord], answers: dict[str, Any]) -> dict[str, Any]:
    score = profile.score
    billed = sum(c.billed_seconds or 0 for c in calls)
    cost_minor = sum(c.cost_minor or 0 for c in calls)
    outcome = profile.outcome.value if profile.outcome else None
    return {
        "lead_id": profile.lead.lead_id,
        "campaign": profile.lead.campaign,
        "name": profile.lead.name,
        "company": profile.lead.company,
        "phone": profile.lead.phone,
        "status": profile.status.value,
        "outcome": outcome,
        "reason": profile.reason,
        "verdict": score.verdict.value if score else None,
        "points": score.points if score else None,
        "score": score.model_dump(mode="json") if score else None,
        "attempts": profile.attempts,
        "dialed": any(c.session_id or c.call_id for c in calls),
        "answered": any(c.answered_at is not None or (c.billed_seconds or 0) > 0 for c in calls),
        "transferred": profile.outcome is Outcome.HOT_TRANSFERRED,
        "billed_seconds": billed,
        "cost_kes": round(cost_minor / 100, 2),
        "next_attempt_at": profile.next_attempt_at.isoformat() if profile.next_attempt_at else None,
        "answers": answers,
    }


def is_hot(row: dict[str, Any]) -> bool:
    return bool(row["verdict"] == Verdict.HOT.value or row["outcome"] == Outcome.HOT_TRANSFERRED.value)


def is_cold(row: dict[str, Any]) -> bool:
    return not is_hot(row) and (
        row["outcome"] == Outcome.COLD_CLOSED.value or row["verdict"] == Verdict.COLD.value
    )


def totals(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    rows = list(rows)
    kes = round(sum(r["cost_kes"] for r in rows), 2)
    hot = sum(is_hot(r) for r in rows)
    return {
        "leads": len(rows),
        "dialed": sum(r["dialed"] for r in rows),
        "answered": sum(r["answered"] for r in rows),
        "hot": hot,
        "cold": sum(is_cold(r) for r in rows),
        "transferred": sum(r["transferred"] for r in rows),
        "billed_seconds": sum(r["billed_seconds"] for r in rows),
        "kes": kes,
        "cost_per_qualified_lead_kes": round(kes / hot, 2) if hot else None,
    }


def campaigns_in(store: DynamoStore) -> list[str]:
    """The campaigns that have leads: a scan reading only the profiles' campaign attribute."""
    found: set[str] = set()
    paginator = store.client.get_paginator("scan")
    for page in paginator.paginate(
        TableName=store.table_name,
        FilterExpression="SK = :profile",
        ProjectionExpression="campaign",
        ExpressionAttributeValues={":profile": {"S": "PROFILE"}},
    ):
        for item in page.get("Items", []):
            if "campaign" in item:
                found.add(item["campaign"]["S"])
    return sorted(found)


def collect(store: DynamoStore, campaigns: list[str] | None = None) -> dict[str, Any]:
    names = campaigns or campaigns_in(store)
    rows = []
    for campaign in names:
        for profile in sorted(store.leads_by_campaign(campaign), key=lambda p: p.lead.lead_id):
            lead_id = profile.lead.lead_id
            answers = {a.question_id: a.value for a in store.get_answers(lead_id)}
            rows.append(lead_row(profile, store.list_calls(lead_id), answers))
    return {"campaigns": names, "leads": rows, "totals": totals(rows)}


def to_csv(report: dict[str, Any]) -> str:
    questions = sorted({q for row in report["leads"] for q in row["answers"]})
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*LEAD_COLUMNS, *(f"answer_{q}" for q in questions)])
    for row in report["leads"]:
        writer.writerow(
            [_cell(row[c]) for c in LEAD_COLUMNS] + [_cell(row["answers"].get(q)) for q in questions]
        )
    writer.writerow([])
    writer.writerow(["total", "value"])
    for key, value in report["totals"].items():
        writer.writerow([key, _cell(value)])
    return out.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--campaign", action="append", help="only these campaigns (repeatable; default: all)")
    parser.add_argument("--format", choices=("csv", "json"), help="default: from --out's extension, else csv")
    parser.add_argument("--out", type=Path, help="write here instead of stdout")
    parser.add_argument("--table", help="the DynamoDB table (default: $TABLE_NAME)")
    parser.add_argument(
        "--endpoint-url", help="AWS endpoint, e.g. the local stack (default: $AWS_ENDPOINT_URL)"
    )
    parser.add_argument("--region", help="AWS region (default: the AWS configuration)")


def run(args: argparse.Namespace, *, dynamodb: Any = None) -> int:
    table = args.table or os.environ.get("TABLE_NAME")
    if not table:
        print("report: no table: pass --table or set TABLE_NAME", file=sys.stderr)
        return 2
    if dynamodb is None:
        import boto3

        endpoint = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name=args.region)
    report = collect(DynamoStore(table, dynamodb), args.campaign)
    fmt = args.format or ("json" if args.out and args.out.suffix.lower() == ".json" else "csv")
    text = json.dumps(report, indent=2, default=str) + "\n" if fmt == "json" else to_csv(report)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        t = report["totals"]
        print(
            f"{t['leads']} leads: {t['dialed']} dialed, {t['answered']} answered, {t['hot']} hot, "
            f"{t['cold']} cold, {t['transferred']} transferred; {t['billed_seconds']} s billed, "
            f"KES {t['kes']:.2f} → {args.out}",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return 0
