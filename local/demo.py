"""`leadqual demo`: a whole campaign on this machine, with live progress and a report.

    leadqual demo [--leads FILE] [--directory FILE] [--campaign FILE] [--engine local|gemini|openai]
                  [--report FILE.json] [--dnc FILE] [--timeout SECONDS]

It starts the local stack (local.stack: moto, the real handlers behind the API emulator and the
SQS poller, the bridge, the Sautikit simulator with its simulated people), puts the do-not-call
list in the store, enqueues the leads on the real queue and watches them go
queued → dialing → talking → answers → outcome, one row per lead, by polling the store and the
simulator's inspection API. When every lead has its outcome it writes, beside the report:

    report.json            the DESIGN.md §5 report: leads[] and totals
    report.html            funnel, outcomes, and per call the answers, a timeline and the recording
    calls/<lead_id>.wav    the call's stereo recording (left: the lead, right: what the lead heard)
    calls/<lead_id>.json   the call's timeline and the transcript the bridge stored on the call record
    sautikit/calls.json    the simulator's own records of every call (billing, legs, verbs)
    sautikit/violations.json   protocol mistakes the simulator saw our code make (should be empty)
    logs/*.log             each component's log

Billing per lead comes from the call records the events function stored (it fetched them from
the carrier, GET /v1/calls/{id}): `billed_seconds` is the lead's connected time (the record's
duration), `cost_kes` the carrier's charge for the call, a warm transfer's rep leg included.

Retries: no-answer and busy leads get their next attempt scheduled per the campaign (30–120
minutes later). The demo does not wait for it: a lead whose next attempt is scheduled counts as
finished with its current outcome (no_answer / busy / callback_requested) and attempts = 1.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local.stack import (
    DATA,
    DEFAULT_CAMPAIGN,
    DEFAULT_DIRECTORY,
    ENGINES,
    LocalStack,
    MissingKey,
    StackError,
    StackOptions,
    check_engine_keys,
    interrupt_on_signals,
)

DEFAULT_LEADS = DATA / "leads.csv"
DEFAULT_DNC = DATA / "dnc.csv"
DEFAULT_REPORT = Path("demo-out/report.json")
DEFAULT_TIMEOUT_S = 240.0
POLL_S = 0.5
SIM_POLL_S = 1.0
FINAL_CALL_STATES = {"completed", "failed", "no_answer", "busy", "canceled"}
# A deferral this far out is the lead's calling window, not pacing: the demo shows it as `deferred`.
WINDOW_DEFERRAL_S = 600


# ----------------------------------------------------------------------------- inputs


@dataclass
class LeadRow:
    lead: Any  # leadqual.models.Lead
    line: int


@dataclass
class Inputs:
    campaign: Any  # leadqual.campaign.Campaign
    leads: list[LeadRow]
    invalid: list[tuple[int, str]]  # (line, reason)
    expected: dict[str, str]  # lead_id -> the outcome the directory expects
    directory_names: dict[str, str]  # e164 -> the simulated person's label
    dnc: list[tuple[str, str]]  # (e164, reason)


def read_lead_file(
    path: Path, default_campaign: str, campaigns: set[str] | None = None
) -> tuple[list[LeadRow], list[tuple[int, str]]]:
    """Leads from CSV or JSONL, checked exactly as `leadqual enqueue` checks them (E.164 phone,
    explicit opt-in, real time zone, known campaign, no id twice). Rows that fail come back as
    (line, reason) and are not sent. A row without a campaign gets `default_campaign`."""
    from leadqual.commands.enqueue import check, read_rows

    checked = check(read_rows(path), campaigns=campaigns, default_campaign=default_campaign)
    return (
        [LeadRow(lead, line) for line, lead in checked.valid],
        [(problem.line, str(problem).split(": ", 1)[-1]) for problem in checked.invalid],
    )


def read_dnc(path: Path | None) -> list[tuple[str, str]]:
    """The do-not-call list: a CSV with `phone` and an optional `reason`."""
    if path is None or not str(path):
        return []
    from leadqual.compliance import normalise_phone

    entries = []
    for record in csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()):
        phone = (record.get("phone") or "").strip()
        if phone:
            entries.append((normalise_phone(phone), (record.get("reason") or "do-not-call list").strip()))
    return entries


def load_inputs(leads_path: Path, directory_path: Path, campaign_path: Path, dnc_path: Path | None) -> Inputs:
    from leadqual.campaign import load_campaign
    from leadqual.settings import builtin_campaigns_dir
    from local.sautikit import Directory

    campaign = load_campaign(campaign_path)
    directory = Directory.load(directory_path)
    known = {p.stem for p in builtin_campaigns_dir().glob("*.yaml")} | {campaign.id}
    leads, invalid = read_lead_file(leads_path, campaign.id, known)
    expected = {}
    for row in leads:
        person = directory.person(row.lead.phone)
        if person is not None and person.expect:
            expected[row.lead.lead_id] = person.expect
    names = {e164: p.name or "" for e164, p in directory.numbers.items()}
    return Inputs(campaign, leads, invalid, expected, names, read_dnc(dnc_path))


# ----------------------------------------------------------------------------- watching the campaign


@dataclass
class LeadView:
    """What the demo knows about one lead right now."""

    lead: Any
    expected: str | None = None
    profile: Any = None
    calls: list[Any] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)
    sim: dict[str, Any] | None = None  # the simulator's view of the latest attempt
    outcome: str | None = None  # set once final for the demo
    finished_at: float | None = None
    questions: int = 0  # how many the campaign asks

    @property
    def lead_id(self) -> str:
        return str(self.lead.lead_id)

    @property
    def last_call(self) -> Any:
        return self.calls[-1] if self.calls else None

    def why_unfinished(self) -> str:
        """For a lead still without an outcome at the timeout: where it stands and why."""
        p, call = self.profile, self.last_call
        if p is None:
            return "never reached the dialer: still on the queue, or the dialer failed (logs/lambda.log)"
        parts = [f"stage {self.stage()}", f"status {p.status}"]
        if p.reason:
            parts.append(f"reason: {p.reason}")
        if call is not None:
            parts.append(f"call {call.state}")
            if call.state.is_final and call.billed_seconds is None:
                parts.append("the events function has not stored the call record yet")
        sim_status = (self.sim or {}).get("call", {}).get("status")
        if sim_status:
            parts.append(f"carrier says {sim_status}")
        return "; ".join(parts)

    def stage(self) -> str:
        if self.outcome is not None:
            return self.outcome
        p, call = self.profile, self.last_call
        if p is None:
            return "queued"
        status = str(p.status)
        if status == "deferred":
            return "deferred" + (f": {p.reason}" if p.reason else "")
        if status == "queued":
            return "queued"
        sim_status = (self.sim or {}).get("call", {}).get("status")
        state = str(call.state) if call is not None else ""
        if state == "transferring":
            return "transferring to a rep"
        if sim_status in FINAL_CALL_STATES or (call is not None and call.state.is_final):
            return "wrapping up"
        if sim_status == "answered" or state in ("answered", "streaming"):
            return f"talking · {len(self.answers)}/{self.questions} answered" if self.answers else "talking"
        return "dialing"


def finished_outcome(profile: Any, calls: Sequence[Any], now: datetime) -> str | None:
    """The lead's outcome once the demo may stop watching it, else None.

    Final means the pipeline is done with it: an outcome and status `done` (rejected leads have
    no call), or a next attempt scheduled; and the last call accounted for (state final, billed
    seconds stored from the carrier's call record). A scheduled retry counts as finished with the
    current outcome: the demo does not wait 30–120 minutes for the next attempt."""
    if profile is None:
        return None
    status = str(profile.status)
    last = calls[-1] if calls else None
    accounted = last is None or (last.state.is_final and last.billed_seconds is not None)
    if status == "done" and accounted:
        return str(profile.outcome) if profile.outcome is not None else "failed"
    if status == "retry_scheduled" and last is not None and accounted:
        if profile.outcome is not None:
            return str(profile.outcome)
        return {"no_answer": "no_answer", "busy": "busy"}.get(str(last.state), "failed")
    if (
        status == "deferred"
        and profile.next_attempt_at is not None
        and not calls
        and (profile.next_attempt_at - now).total_seconds() > WINDOW_DEFERRAL_S
    ):
        return "deferred"
    return None


class Watcher:
    """Polls the store (DynamoDB on moto) and the simulator (GET /_sim/calls)."""

    def __init__(self, stack: LocalStack, views: list[LeadView]) -> None:
        self.stack = stack
        self.views = views
        self._by_label: dict[str, dict[str, Any]] = {}
        self._sim_polled = 0.0

    def poll(self) -> None:
        store = self.stack.store
        now = datetime.now(UTC)
        if time.monotonic() - self._sim_polled >= SIM_POLL_S:
            self._sim_polled = time.monotonic()
            with contextlib.suppress(Exception):  # the table catches up on the next poll
                self._by_label = {
                    str(c.get("client_request_id")): c
                    for c in self.stack.sim_calls()
                    if c.get("client_request_id")
                }
        for view in self.views:
            if view.outcome is not None:
                continue
            view.profile = store.get_lead(view.lead_id)
            if view.profile is None:
                continue
            view.calls = store.list_calls(view.lead_id)
            view.answers = store.get_answers(view.lead_id)
            if view.calls:
                view.sim = self._by_label.get(view.calls[-1].client_request_id)
            outcome = finished_outcome(view.profile, view.calls, now)
            if outcome is not None:
                view.outcome = outcome
                view.finished_at = time.monotonic()

    def done(self) -> bool:
        return all(v.outcome is not None for v in self.views)


# ----------------------------------------------------------------------------- presentation


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "?"
    return str(value)


def display_answer(campaign: Any, question_id: str, value: Any) -> str:
    """An answer as a person reads it: yes/no, and timelines in months."""
    try:
        kind = str(campaign.question(question_id).type)
    except KeyError:
        kind = ""
    if kind == "timeline" and isinstance(value, int | float) and not isinstance(value, bool):
        if value >= 99:
            return "no plans"
        return "this month" if value == 0 else f"within {value:g} month{'s' if value != 1 else ''}"
    return format_value(value)


def answers_text(answers: Iterable[Any], campaign: Any) -> str:
    order = {q.id: i for i, q in enumerate(campaign.questions)}
    items = sorted(answers, key=lambda a: order.get(a.question_id, 99))
    return " ".join(f"{a.question_id}={format_value(a.value)}" for a in items)


def progress_table(views: Sequence[LeadView], campaign: Any, elapsed_s: float, title: str = "") -> Any:
    from rich.table import Table

    done = sum(1 for v in views if v.outcome is not None)
    table = Table(
        title=title
        or f"leadqual demo — campaign {campaign.id} — {done}/{len(views)} done — {elapsed_s:5.1f} s",
        title_justify="left",
        expand=False,
    )
    for name, style in (
        ("lead", "bold"),
        ("name", ""),
        ("stage", "cyan"),
        ("answers", ""),
        ("expected", "dim"),
    ):
        table.add_column(name, style=style, no_wrap=name != "answers")
    for v in views:
        stage = v.stage()
        if v.outcome is not None:
            ok = v.expected is None or v.expected == v.outcome
            stage = f"[{'green' if ok else 'red'}]{stage}{'' if ok else ' ✗'}[/]"
        table.add_row(v.lead_id, v.lead.name, stage, answers_text(v.answers, campaign), v.expected or "–")
    return table


def results_table(report: Mapping[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title="Results", title_justify="left")
    for name, justify in (
        ("lead", "left"),
        ("name", "left"),
        ("outcome", "left"),
        ("expected", "left"),
        ("answers", "left"),
        ("score", "right"),
        ("attempts", "right"),
        ("billed s", "right"),
        ("KES", "right"),
        ("1st word ms", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type] - rich wants a Literal
    for row in report["leads"]:
        expected = row.get("expected")
        ok = expected is None or expected == row["outcome"]
        colour = "green" if ok else "red"
        answers = " ".join(f"{k}={format_value(v)}" for k, v in row["answers"].items())
        ttfw = row.get("time_to_first_word_ms")
        table.add_row(
            row["lead_id"],
            row.get("name", ""),
            f"[{colour}]{row['outcome']}[/]",
            expected or "–",
            answers,
            "" if row.get("score") is None else str(row["score"]),
            str(row["attempts"]),
            str(row["billed_seconds"]),
            f"{row['cost_kes']:.2f}",
            "" if ttfw is None else f"{ttfw:.0f}",
        )
    return table


def totals_text(totals: Mapping[str, Any]) -> str:
    cpl = totals.get("cost_per_qualified_lead_kes")
    return (
        f"{totals['leads']} leads · dialed {totals['dialed']} · answered {totals['answered']} · "
        f"hot {totals['hot']} (transferred {totals['transferred']}) · cold {totals['cold']} · "
        f"billed {totals['billed_seconds']} s · KES {totals['cost_kes']:.2f}"
        + (f" · KES {cpl:.2f} per qualified lead" if cpl is not None else "")
    )


# ----------------------------------------------------------------------------- the report


def _iso_to_dt(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


TURN_SLACK_S = 1.5  # how far a stored agent line may sit from the start of the turn the lead heard


def call_timeline(
    sim_view: Mapping[str, Any] | None,
    answers: Sequence[Any],
    transcript: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """One call as {t, who, text} entries: the carrier's view from the simulator's timeline (what
    the lead said, when the agent spoke, the rep, the hang-up, the bill), the answers our
    pipeline stored, placed at the moment they were saved, and the agent's words from the
    transcript the bridge stored (see `agent_words`)."""
    if not sim_view:
        return []
    started = _iso_to_dt(sim_view.get("call", {}).get("started_at"))
    entries: list[dict[str, Any]] = []
    rep_joined: float | None = None
    for item in sim_view.get("timeline", []):
        kind, t = item.get("kind"), float(item.get("t", 0.0))
        if kind in ("transfer_answered", "supervision_active") and rep_joined is None:
            rep_joined = t
        if kind == "agent_turn" and rep_joined is not None and t >= rep_joined:
            continue  # what the lead hears now is the rep, whose words `rep_says` has exactly
        text: str | None = None
        who = "carrier"
        if kind == "ringing":
            text = "ringing"
        elif kind in ("answered", "no_answer", "busy", "failed") and "after_s" in item:
            text = {
                "answered": "answered (the recording starts here)",
                "no_answer": "no answer",
                "busy": "busy",
            }.get(kind, "call failed")
        elif kind == "say":
            who, text = "agent", str(item.get("text", ""))
        elif kind == "stream_open":
            text = "media stream to the bridge opened"
        elif kind == "agent_turn":
            who = "agent"
            text = f"(speaks {float(item.get('duration_s', 0)):.1f} s)"
            entries.append(
                {
                    "t": round(t, 2),
                    "who": who,
                    "text": text,
                    "duration_s": item.get("duration_s"),
                    "interrupted": bool(item.get("interrupted_by_lead")),
                }
            )
            continue
        elif kind == "lead_speaks":
            who = "lead"
            what = item.get("what")
            text = str(item.get("text") or "")
            if what == "greeting":
                who, text = "voicemail", text
            elif what == "beep":
                who, text = "voicemail", "(beep)"
            if item.get("interrupting"):
                text += " (interrupting)"
        elif kind == "kill_audio":
            text = "barge-in: the bridge flushed the agent's audio"
        elif kind == "transfer_ringing":
            text = "ringing the rep"
        elif kind == "transfer_answered":
            text = "the rep answered; lead and rep are connected"
        elif kind == "transfer_failed":
            text = f"the rep did not answer ({item.get('status')})"
        elif kind == "rep_says":
            who, text = "rep", str(item.get("text", ""))
        elif kind == "supervision_active":
            text = f"rep joined ({item.get('mode')})"
        elif kind == "hangup":
            text = f"hang-up by {item.get('by')} ({item.get('cause')})"
        elif kind == "billed":
            cost = int(item.get("cost_minor") or 0)
            text = f"billed: KES {cost / 100:.2f}"
        elif kind == "violation":
            text = f"PROTOCOL VIOLATION {item.get('reason')}: {item.get('detail')}"
        if text is not None:
            entries.append({"t": round(t, 2), "who": who, "text": text})
    for answer in answers:
        at = _iso_to_dt(answer.at)
        if started is None or at is None:
            continue
        quote = f" (heard: “{answer.quote}”)" if answer.quote else ""
        entries.append(
            {
                "t": round((at - started).total_seconds(), 2),
                "who": "answer",
                "text": f"{answer.question_id} = {format_value(answer.value)}{quote}",
            }
        )
    opened = next(
        (float(i["t"]) for i in sim_view.get("timeline", []) if i.get("kind") == "stream_open"), None
    )
    if opened is not None and transcript:
        agent_words(entries, transcript, opened)
    entries.sort(key=lambda e: e["t"])
    return entries


def agent_words(
    timeline: list[dict[str, Any]], transcript: Sequence[Mapping[str, Any]], opened: float
) -> None:
    """Put the agent's words from the bridge's stored transcript into the simulator's timeline.

    The simulator hears the agent as audio: it knows when each agent turn played and for how
    long, not what was said. The bridge knows what it said and when the lead began hearing it,
    in seconds since the stream opened (`opened` on the simulator's clock). Each stored agent
    line goes to the heard turn that starts nearest to it (within TURN_SLACK_S, or inside the
    turn); a line with no such turn gets its own row, and a turn with no line keeps its length."""
    turns = [e for e in timeline if e.get("who") == "agent" and e.get("duration_s") is not None]
    spans = [
        (float(turn["t"]), float(turn["t"]) + max(float(turn["duration_s"]), TURN_SLACK_S)) for turn in turns
    ]
    words: dict[int, list[str]] = {}
    for line in transcript:
        if line.get("who") != "agent" or not line.get("text"):
            continue
        at = opened + float(line.get("t", 0.0))
        near = [
            (abs(at - start), n) for n, (start, end) in enumerate(spans) if start - TURN_SLACK_S <= at <= end
        ]
        if near:
            words.setdefault(min(near)[1], []).append(str(line["text"]))
        else:
            timeline.append({"t": round(at, 2), "who": "agent", "text": str(line["text"])})
    for n, said in words.items():
        turn = turns[n]
        turn["text"] = " ".join(said) + (" (cut off by the lead)" if turn.get("interrupted") else "")


def build_report(
    views: Sequence[LeadView],
    inputs: Inputs,
    sim_calls: Sequence[Mapping[str, Any]],
    out_dir: Path,
    *,
    engine: str,
    wall_seconds: float,
    transcripts: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the §5 report, per-lead extras for the HTML: timeline and recording). Copies recordings.
    `transcripts`: lead id -> its last call's transcript as the bridge stored it."""
    campaign = inputs.campaign
    calls_dir = out_dir / "calls"
    shutil.rmtree(calls_dir, ignore_errors=True)
    calls_dir.mkdir(parents=True)
    by_label = {str(c.get("client_request_id")): c for c in sim_calls}
    transcripts = transcripts or {}
    rows: list[dict[str, Any]] = []
    extras: list[dict[str, Any]] = []
    order = {q.id: i for i, q in enumerate(campaign.questions)}
    for v in views:
        answers = sorted(v.answers, key=lambda a: order.get(a.question_id, 99))
        ttfw = next(
            (c.time_to_first_word_ms for c in reversed(v.calls) if c.time_to_first_word_ms is not None), None
        )
        sim = by_label.get(v.last_call.client_request_id) if v.last_call is not None else None
        transcript = list(transcripts.get(v.lead_id, ()))
        timeline = call_timeline(sim, answers, transcript)
        recording_rel: str | None = None
        src = Path(sim["recording_path"]) if sim and sim.get("recording_path") else None
        if src is not None and src.is_file():
            dest = calls_dir / f"{v.lead_id}.wav"
            shutil.copyfile(src, dest)
            recording_rel = f"calls/{dest.name}"
        row = lead_report_row(v, answers, ttfw)
        row.update(
            recording=recording_rel,
            transcript=f"calls/{v.lead_id}.json" if sim else None,
        )
        if sim:
            (calls_dir / f"{v.lead_id}.json").write_text(
                json.dumps(
                    {
                        "lead_id": v.lead_id,
                        "session_id": row["session_id"],
                        "outcome": row["outcome"],
                        "answers": [a.model_dump(mode="json") for a in answers],
                        "timeline": timeline,
                        # As the bridge stored it: t in seconds since the media stream opened.
                        "transcript": transcript,
                        "lead_said": sim.get("lead_said", []),
                        "carrier_record": sim.get("call"),
                    },
                    indent=2,
                    default=str,
                ),
                encoding="utf-8",
            )
        rows.append(row)
        shown = {q: display_answer(campaign, q, value) for q, value in row["answers"].items()}
        extras.append({**row, "answers": shown, "timeline": timeline})
    totals = compute_totals(rows)
    totals.update(engine=engine, wall_seconds=round(wall_seconds, 1))
    report = {
        "campaign": campaign.id,
        "campaign_name": campaign.name,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "leads": rows,
        "totals": totals,
    }
    if inputs.invalid:
        report["invalid_rows"] = [{"line": n, "reason": r} for n, r in inputs.invalid]
    return report, extras


def lead_report_row(view: LeadView, answers: Sequence[Any], ttfw: float | None) -> dict[str, Any]:
    """One lead in the report: the DESIGN.md §5 fields first, then what `leadqual report` says about
    a lead (same code, so both reports agree), then the demo's own (expected outcome, recording)."""
    from leadqual.commands.report import lead_row

    p = view.profile
    answer_map = {a.question_id: a.value for a in answers}
    base: dict[str, Any] = (
        lead_row(p, list(view.calls), answer_map)
        if p is not None
        else {"name": view.lead.name, "company": view.lead.company, "status": "queued", "score": None}
    )
    detail = base.pop("score", None)
    return {
        "lead_id": view.lead_id,
        "phone": view.lead.phone,
        # A lead with a retry scheduled has no final outcome in the store yet; the demo reports
        # the outcome of the attempt it made (no_answer, busy), see finished_outcome().
        "outcome": view.outcome or "unfinished",
        "answers": answer_map,
        "score": None if detail is None else detail["points"],
        "attempts": int(getattr(p, "attempts", 0) or 0),
        "billed_seconds": int(base.get("billed_seconds") or 0),
        "cost_kes": float(base.get("cost_kes") or 0.0),
        "time_to_first_word_ms": None if ttfw is None else round(float(ttfw), 1),
        **{k: v for k, v in base.items() if k not in ("lead_id", "phone", "outcome", "answers", "attempts")},
        "score_detail": detail,
        "expected": view.expected,
        "transferred_to": next((c.transferred_to for c in view.calls if c.transferred_to), None),
        "session_id": view.last_call.session_id if view.last_call is not None else None,
    }


def compute_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`leadqual report`'s totals (same definitions of dialed, answered, hot, cold), plus outcomes."""
    from leadqual.commands.report import totals

    counted = [
        {"dialed": False, "answered": False, "transferred": False, "verdict": None, **row} for row in rows
    ]
    result = totals(counted)
    result["cost_kes"] = result.pop("kes")
    result["by_outcome"] = dict(Counter(str(r["outcome"]) for r in rows).most_common())
    return result


# ----------------------------------------------------------------------------- running it


@dataclass
class DemoOptions:
    leads: Path = DEFAULT_LEADS
    directory: Path = DEFAULT_DIRECTORY
    campaign: Path = DEFAULT_CAMPAIGN
    engine: str = "local"
    report: Path = DEFAULT_REPORT
    dnc: Path | None = DEFAULT_DNC
    timeout_s: float = DEFAULT_TIMEOUT_S
    live: bool | None = None  # None: a live table on a terminal, progress lines otherwise


@dataclass
class DemoResult:
    report: dict[str, Any]
    report_path: Path
    html_path: Path
    stuck: list[str]  # "lead id (where it stands and why)" for leads without an outcome at the timeout
    mismatched: list[str]  # lead ids whose outcome differs from the directory's `expect`
    violations: list[dict[str, Any]]
    wall_seconds: float


def run_demo(options: DemoOptions, console: Any) -> DemoResult:
    """The whole demo; raises StackError / MissingKey / CampaignError for the caller to report."""
    from local.html_report import render_html

    started = time.monotonic()
    check_engine_keys(options.engine)
    inputs = load_inputs(options.leads, options.directory, options.campaign, options.dnc)
    if not inputs.leads:
        raise ValueError(f"{options.leads}: no valid leads")
    for line, reason in inputs.invalid:
        console.print(f"[yellow]{options.leads}:{line}: not sent: {reason}[/]")
    out_dir = options.report.resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    views = [
        LeadView(row.lead, inputs.expected.get(row.lead.lead_id), questions=len(inputs.campaign.questions))
        for row in inputs.leads
    ]
    stack_options = StackOptions(
        run_dir=out_dir,
        directory=options.directory,
        campaigns=[options.campaign],
        engine=options.engine,
        max_concurrent_calls=max(12, len(views)),
    )
    console.print(
        f"Starting the local stack (moto, API emulator, SQS poller, bridge with engine "
        f"[bold]{options.engine}[/], Sautikit simulator); logs in {out_dir / 'logs'}"
    )
    with LocalStack(stack_options) as stack:
        console.print(
            f"Stack up in {time.monotonic() - started:.1f} s. Enqueueing {len(views)} leads "
            f"(campaign [bold]{inputs.campaign.id}[/])."
        )
        for e164, reason in inputs.dnc:
            stack.store.add_dnc(e164, reason)
        enqueue(stack, [row.lead for row in inputs.leads])
        watcher = Watcher(stack, views)
        campaign_started = time.monotonic()
        stuck = _watch(watcher, stack, inputs, options, console, campaign_started)
        _wait_recordings(stack, views)
        transcripts = stored_transcripts(stack.store, views)
        sim_calls = stack.sim_calls()
        violations = stack.sim_violations()
    report, extras = build_report(
        views,
        inputs,
        sim_calls,
        out_dir,
        engine=options.engine,
        wall_seconds=0.0,  # set below, once the report is written
        transcripts=transcripts,
    )
    report["totals"]["campaign_seconds"] = round(
        max((v.finished_at or time.monotonic()) for v in views) - campaign_started, 1
    )
    report["totals"]["protocol_violations"] = len(violations)
    sim_dir = out_dir / "sautikit"
    sim_dir.mkdir(parents=True, exist_ok=True)
    (sim_dir / "calls.json").write_text(json.dumps(sim_calls, indent=2, default=str), encoding="utf-8")
    (sim_dir / "violations.json").write_text(json.dumps(violations, indent=2, default=str), encoding="utf-8")
    wall = time.monotonic() - started
    report["totals"]["wall_seconds"] = round(wall, 1)
    report_path = options.report.resolve()
    report_path.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    html_path = report_path.with_suffix(".html")
    html_report = {**report, "leads": extras}
    html_path.write_text(
        render_html(html_report, title=f"leadqual demo — {inputs.campaign.name}"), encoding="utf-8"
    )
    mismatched = [
        r["lead_id"] for r in report["leads"] if r.get("expected") and r["expected"] != r["outcome"]
    ]
    return DemoResult(report, report_path, html_path, stuck, mismatched, violations, wall)


def enqueue(stack: LocalStack, leads: Sequence[Any]) -> None:
    """Send the leads to the real queue in batches, as `leadqual enqueue` does (a bare lead per message)."""
    from leadqual.queue import LeadQueue

    assert stack.endpoints is not None
    queue = LeadQueue(stack.endpoints.queue_url, stack.sqs)
    result = queue.send_batch([(lead.lead_id, lead.model_dump_json(exclude_none=True)) for lead in leads])
    if result.failed:
        raise StackError("queue", f"could not enqueue {sorted(result.failed)}")


def _watch(
    watcher: Watcher,
    stack: LocalStack,
    inputs: Inputs,
    options: DemoOptions,
    console: Any,
    started: float,
) -> list[str]:
    """Poll until every lead is final or the timeout; returns the lead ids still unfinished."""
    live_wanted = console.is_terminal if options.live is None else options.live
    deadline = started + options.timeout_s
    last_stage: dict[str, str] = {}

    def tick() -> bool:
        stack.check()
        watcher.poll()
        return watcher.done() or time.monotonic() > deadline

    if live_wanted:
        from rich.live import Live

        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while True:
                finished = tick()
                live.update(progress_table(watcher.views, inputs.campaign, time.monotonic() - started))
                if finished:
                    break
                time.sleep(POLL_S)
    else:
        while True:
            finished = tick()
            for v in watcher.views:
                stage = v.stage()
                if last_stage.get(v.lead_id) != stage:
                    last_stage[v.lead_id] = stage
                    answers = answers_text(v.answers, inputs.campaign)
                    console.print(
                        f"{time.monotonic() - started:6.1f}s  {v.lead_id:<10} {stage:<24} {answers}",
                        highlight=False,
                    )
            if finished:
                break
            time.sleep(POLL_S)
    return [f"{v.lead_id} ({v.why_unfinished()})" for v in watcher.views if v.outcome is None]


def stored_transcripts(store: Any, views: Sequence[LeadView]) -> dict[str, list[dict[str, Any]]]:
    """Each lead's last call transcript, read from its call record (the bridge wrote it there)."""
    transcripts: dict[str, list[dict[str, Any]]] = {}
    for v in views:
        call = v.last_call
        record = store.get_call(v.lead_id, call.attempt) if call is not None else None
        if record is not None and record.transcript:
            transcripts[v.lead_id] = [dict(entry) for entry in record.transcript]
    return transcripts


def _wait_recordings(stack: LocalStack, views: Sequence[LeadView], timeout_s: float = 15.0) -> None:
    """The simulator closes each WAV and writes its timeline when the call is final; wait for that."""
    labels = {v.last_call.client_request_id for v in views if v.last_call is not None}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        calls = {str(c.get("client_request_id")): c for c in stack.sim_calls()}
        pending = [
            label
            for label in labels
            if label in calls
            and not any(item.get("kind") == "billed" for item in calls[label].get("timeline", []))
        ]
        if not pending:
            return
        time.sleep(0.3)


# ----------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--leads", type=Path, default=DEFAULT_LEADS, help="CSV or JSONL lead file")
    parser.add_argument(
        "--directory", type=Path, default=DEFAULT_DIRECTORY, help="the simulated phones (YAML)"
    )
    parser.add_argument("--campaign", type=Path, default=DEFAULT_CAMPAIGN, help="campaign YAML")
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="local",
        help="local: offline (no keys); gemini/openai: the real services (GEMINI_API_KEY / OPENAI_API_KEY)",
    )
    parser.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="report JSON (HTML beside it)")
    parser.add_argument(
        "--dnc",
        default=str(DEFAULT_DNC),
        help="do-not-call list CSV (phone, reason) loaded before dialing; '' for none",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds to wait for outcomes"
    )
    parser.add_argument(
        "--live",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="live table (default: on a terminal)",
    )


def _console() -> Any:
    from rich.console import Console

    # Bound now: while the stack runs, the handlers' own prints (Powertools logs, EMF) go to a log.
    console = Console(file=sys.stdout)
    if not console.is_terminal:
        console = Console(file=sys.stdout, width=170)  # a CI log or a pipe: do not squeeze the table
    return console


def run(args: argparse.Namespace) -> int:
    console = _console()
    dnc = Path(args.dnc) if args.dnc else None
    options = DemoOptions(
        leads=args.leads,
        directory=args.directory,
        campaign=args.campaign,
        engine=args.engine,
        report=args.report,
        dnc=dnc,
        timeout_s=args.timeout,
        live=args.live,
    )
    try:
        with interrupt_on_signals():
            result = run_demo(options, console)
    except MissingKey as exc:
        console.print(f"[red]leadqual demo: {exc}[/]", highlight=False)
        return 2
    except StackError as exc:
        console.print(f"[red]leadqual demo: a component failed: {exc}[/]", highlight=False)
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]leadqual demo: interrupted; everything is stopped[/]")
        return 130
    except (OSError, ValueError) as exc:
        console.print(f"[red]leadqual demo: {exc}[/]", highlight=False)
        return 2
    return report_result(result, console)


def report_result(result: DemoResult, console: Any) -> int:
    report = result.report
    console.print(results_table(report))
    console.print(totals_text(report["totals"]), highlight=False)
    t = report["totals"]
    console.print(
        f"Campaign finished in {t.get('campaign_seconds', 0):.0f} s ({result.wall_seconds:.0f} s in all, with "
        f"start-up and report). Report: {result.report_path}  HTML: {result.html_path}  "
        f"Recordings and transcripts: {result.report_path.parent / 'calls'}",
        highlight=False,
    )
    status = 0
    if result.violations:
        console.print(
            f"[red]The simulator recorded {len(result.violations)} protocol violation(s): "
            f"{result.report_path.parent / 'sautikit' / 'violations.json'}[/]"
        )
        status = 1
    if result.stuck:
        console.print(
            f"[red]No outcome within the timeout for {len(result.stuck)} lead(s) (logs in logs/):[/]"
        )
        for line in result.stuck:
            console.print(f"[red]  {line}[/]", highlight=False)
        status = 1
    if result.mismatched:
        console.print(
            f"[red]Outcome differs from the directory's `expect` for: {', '.join(result.mismatched)}[/]"
        )
        status = 1
    if status == 0:
        console.print("[green]Every lead reached its expected outcome.[/]")
    return status
