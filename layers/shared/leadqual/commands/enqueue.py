"""`leadqual enqueue FILE`: validate a CSV or JSONL lead file and send the valid leads to SQS.

Columns (CSV header or JSON keys): lead_id, phone, name, company, opt_in, and optionally timezone
and campaign. Every row is checked — a phone number valid for its country (stored as E.164), an
explicit opt-in, a real time zone, a campaign that exists, no lead id twice in the file — and the
report lists each bad row by line number with its reason. Valid leads are sent as the documented
bare lead JSON, ten to a SendMessageBatch, retrying only the entries that failed.

Exit codes: 0 all rows sent; 1 some rows were invalid (the valid ones are still sent unless
--strict); 2 the file or the configuration cannot be used; 3 some valid leads could not be sent.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from leadqual.compliance import normalise_phone
from leadqual.errors import InvalidLead
from leadqual.models import Lead
from leadqual.queue import LeadQueue, describe_validation
from leadqual.settings import builtin_campaigns_dir

COLUMNS = ("lead_id", "phone", "name", "company", "opt_in", "timezone", "campaign")
REQUIRED = ("lead_id", "phone", "opt_in")
_YES = {"true", "yes", "y", "1", "t"}
_NO = {"false", "no", "n", "0", "f", ""}


class FileProblem(ValueError):
    """The file as a whole cannot be read (missing, wrong columns)."""


@dataclass(frozen=True)
class Problem:
    line: int
    lead_id: str | None
    reason: str

    def __str__(self) -> str:
        who = f" {self.lead_id}:" if self.lead_id else ""
        return f"line {self.line}:{who} {self.reason}"


@dataclass
class Checked:
    valid: list[tuple[int, Lead]] = field(default_factory=list)
    invalid: list[Problem] = field(default_factory=list)


# -- reading ---------------------------------------------------------------------------------------


def read_rows(path: Path, fmt: str = "auto") -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row) pairs; a row that cannot even be parsed comes as its error text."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise FileProblem(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise FileProblem(f"{path}: not UTF-8 text") from exc
    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson", ".json") else "csv"
    if fmt == "jsonl":
        yield from _jsonl_rows(text)
    else:
        yield from _csv_rows(text, path)


def _jsonl_rows(text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            yield number, "not valid JSON"
            continue
        yield number, data if isinstance(data, dict) else "not a JSON object"


def _csv_rows(text: str, path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise FileProblem(f"{path}: the header lacks {', '.join(missing)} (columns: {', '.join(COLUMNS)})")
    reader.fieldnames = header
    for row in reader:
        if not any((v or "").strip() for k, v in row.items() if k is not None):
            continue
        yield reader.line_num, {k: v for k, v in row.items() if k in COLUMNS and v is not None}


# -- checking --------------------------------------------------------------------------------------


def _opt_in(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _YES:
        return True
    if text in _NO:
        return False
    raise ValueError("opt_in: not a yes/no value")


def check_row(data: dict[str, Any], *, campaigns: set[str] | None, default_campaign: str | None) -> Lead:
    """One row → a Lead with its phone in E.164; ValueError with the reason otherwise."""
    row = {k: (v.strip() if isinstance(v, str) else v) for k, v in data.items() if k in COLUMNS}
    unknown = sorted(set(data) - set(COLUMNS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}")
    row = {k: v for k, v in row.items() if v not in ("", None) or k == "opt_in"}
    if "opt_in" not in row:
        raise ValueError("opt_in: required")
    row["opt_in"] = _opt_in(row["opt_in"])
    if "campaign" not in row and default_campaign:
        row["campaign"] = default_campaign
    try:
        lead = Lead.model_validate(row)
    except ValidationError as exc:
        raise ValueError(describe_validation(exc)) from exc
    if not lead.opt_in:
        raise ValueError("not opted in: leads must have agreed to be called")
    try:
        phone = normalise_phone(lead.phone)
    except InvalidLead as exc:
        raise ValueError(f"phone: {exc.reason}") from exc
    if lead.timezone:
        try:
            ZoneInfo(lead.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"timezone: unknown time zone {lead.timezone!r}") from None
    if campaigns is not None and lead.campaign not in campaigns:
        raise ValueError(f"campaign: unknown campaign {lead.campaign!r}")
    return lead.model_copy(update={"phone": phone})


def check(
    rows: Iterator[tuple[int, dict[str, Any] | str]],
    *,
    campaigns: set[str] | None = None,
    default_campaign: str | None = None,
) -> Checked:
    result = Checked()
    first_seen: dict[str, int] = {}
    for line, row in rows:
        if isinstance(row, str):
            result.invalid.append(Problem(line, None, row))
            continue
        raw_id = str(row.get("lead_id") or "").strip() or None
        try:
            lead = check_row(row, campaigns=campaigns, default_campaign=default_campaign)
        except ValueError as exc:
            result.invalid.append(Problem(line, raw_id, str(exc)))
            continue
        if lead.lead_id in first_seen:
            result.invalid.append(
                Problem(line, lead.lead_id, f"duplicate lead_id (first on line {first_seen[lead.lead_id]})")
            )
            continue
        first_seen[lead.lead_id] = line
        result.valid.append((line, lead))
    return result


def known_campaigns(directory: Path) -> set[str]:
    return {p.stem for p in directory.glob("*.yaml")}


# -- the command -----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="CSV (with a header) or JSONL lead file")
    parser.add_argument("--queue-url", help="the leads queue (default: $QUEUE_URL)")
    parser.add_argument(
        "--endpoint-url", help="AWS endpoint, e.g. the local stack (default: $AWS_ENDPOINT_URL)"
    )
    parser.add_argument("--region", help="AWS region (default: the AWS configuration)")
    parser.add_argument("--format", choices=("auto", "csv", "jsonl"), default="auto")
    parser.add_argument("--campaign", help="campaign for rows that name none (default: example)")
    parser.add_argument(
        "--campaigns-dir", type=Path, help="campaign files to check against (default: $CAMPAIGNS_DIR)"
    )
    parser.add_argument("--dry-run", action="store_true", help="validate and report; send nothing")
    parser.add_argument("--strict", action="store_true", help="send nothing if any row is invalid")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace, *, sqs: Any = None) -> int:
    err = sys.stderr
    campaigns_dir = args.campaigns_dir or Path(os.environ.get("CAMPAIGNS_DIR") or builtin_campaigns_dir())
    try:
        checked = check(
            read_rows(args.file, args.format),
            campaigns=known_campaigns(campaigns_dir) if campaigns_dir.is_dir() else None,
            default_campaign=args.campaign,
        )
    except FileProblem as exc:
        print(f"enqueue: {exc}", file=err)
        return 2
    for problem in checked.invalid:
        print(f"invalid: {problem}", file=err)
    total = len(checked.valid) + len(checked.invalid)
    print(f"{total} rows: {len(checked.valid)} valid, {len(checked.invalid)} invalid", file=err)
    status = 1 if checked.invalid else 0
    if args.dry_run or (args.strict and checked.invalid) or not checked.valid:
        if args.strict and checked.invalid:
            print("nothing sent (--strict)", file=err)
        elif args.dry_run:
            print(f"dry run: {len(checked.valid)} leads would be sent", file=err)
        return status

    queue_url = args.queue_url or os.environ.get("QUEUE_URL")
    if not queue_url:
        print("enqueue: no queue: pass --queue-url or set QUEUE_URL", file=err)
        return 2
    if sqs is None:
        import boto3

        endpoint = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
        sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=args.region)
    queue = LeadQueue(queue_url, sqs)
    bodies = [(lead.lead_id, lead.model_dump_json(exclude_none=True)) for _, lead in checked.valid]
    result = _send(queue, bodies, show=not args.no_progress)
    for lead_id, code in result.failed.items():
        print(f"not sent: {lead_id}: {code}", file=err)
    print(f"sent {len(result.sent)} of {len(bodies)} leads to the queue", file=err)
    return 3 if result.failed else status


def _send(queue: LeadQueue, bodies: list[tuple[str, str]], *, show: bool) -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(
        TextColumn("sending leads"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show,
        transient=False,
    ) as progress:
        task = progress.add_task("send", total=len(bodies))
        return queue.send_batch(bodies, on_sent=lambda n: progress.advance(task, n))
