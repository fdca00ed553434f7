"""What `leadqual demo` shows while it runs and when it is done, from the store states a lead goes
through: the stage each state shows (queued → dialing → talking → answers n/4 → outcome), one
progress row per lead, the progress lines printed without a live table, and the results table and
totals built from the calls' billing. No stack: the store states are built here and replayed."""

from __future__ import annotations

import io
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from rich.console import Console

from leadqual.campaign import load_campaign
from leadqual.models import Answer, CallRecord, CallState, Lead, LeadStatus, Outcome, Score, Verdict
from leadqual.store import LeadProfile
from local import demo
from local.demo import (
    DemoOptions,
    Inputs,
    LeadRow,
    LeadView,
    Watcher,
    build_report,
    progress_table,
    results_table,
    totals_text,
)
from local.stack import DEFAULT_CAMPAIGN

CAMPAIGN = load_campaign(DEFAULT_CAMPAIGN)  # the demo's own campaign: four questions
NOW = datetime.now(UTC)

# What a qualifying lead says, in the campaign's question order.
HOT_ANSWERS = [("good_time", True), ("decision_maker", True), ("seats", 25), ("timeline", 2)]


def _lead(lead_id: str, name: str) -> Lead:
    return Lead(
        lead_id=lead_id, phone="+254712000001", name=name, company="Acme", opt_in=True, campaign="demo"
    )


def _profile(lead: Lead, status: LeadStatus, **fields: Any) -> LeadProfile:
    return LeadProfile(lead=lead, status=status, attempts=fields.pop("attempts", 1), **fields)


def _call(lead_id: str, state: CallState, attempt: int = 1, **fields: Any) -> CallRecord:
    return CallRecord(
        lead_id=lead_id,
        attempt=attempt,
        client_request_id=f"lq-{lead_id}-{attempt}",
        session_id=f"sess-{lead_id}-{attempt}",
        state=state,
        **fields,
    )


def _answers(pairs: list[tuple[str, Any]]) -> list[Answer]:
    return [Answer(question_id=q, value=v, quote="", at=NOW) for q, v in pairs]


def _score(verdict: Verdict, points: int) -> Score:
    return Score(verdict=verdict, points=points, max_points=100)


@dataclass
class Snapshot:
    """One lead in the store (and at the carrier) at one moment."""

    profile: LeadProfile | None = None
    calls: list[CallRecord] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)
    carrier: str | None = None  # the simulator's status for the latest call


def hot_journey() -> list[tuple[Snapshot, str]]:
    """A lead who qualifies and is handed to a rep, and the stage the demo shows at each step."""
    lead = _lead("hot-1", "Wanjiru Kamau")
    ringing = _call("hot-1", CallState.RINGING)
    answered = _call("hot-1", CallState.ANSWERED, answered_at=NOW)
    streaming = _call("hot-1", CallState.STREAMING, answered_at=NOW)
    in_call = _profile(lead, LeadStatus.IN_CALL)
    steps = [
        (Snapshot(), "queued"),  # still on the queue: no profile yet
        (Snapshot(_profile(lead, LeadStatus.QUEUED, attempts=0)), "queued"),
        (Snapshot(_profile(lead, LeadStatus.DIALING), [ringing], carrier="ringing"), "dialing"),
        (Snapshot(in_call, [answered], carrier="answered"), "talking"),
    ]
    for n in range(1, 5):
        steps.append(
            (
                Snapshot(in_call, [streaming], _answers(HOT_ANSWERS[:n]), "answered"),
                f"talking · {n}/4 answered",
            )
        )
    all_answers = _answers(HOT_ANSWERS)
    transferring = _call("hot-1", CallState.TRANSFERRING, answered_at=NOW)
    # Hung up, but the events function has not stored the carrier's record (no billed seconds) yet.
    ended = _call("hot-1", CallState.COMPLETED, answered_at=NOW)
    billed = _call(
        "hot-1",
        CallState.COMPLETED,
        answered_at=NOW,
        billed_seconds=95,
        cost_minor=1583,
        transferred_to="+254711999000",
    )
    done = _profile(lead, LeadStatus.DONE, outcome=Outcome.HOT_TRANSFERRED, score=_score(Verdict.HOT, 100))
    steps += [
        (Snapshot(in_call, [transferring], all_answers, "answered"), "transferring to a rep"),
        (Snapshot(in_call, [ended], all_answers, "completed"), "wrapping up"),
        (Snapshot(done, [billed], all_answers, "completed"), "hot_transferred"),
    ]
    return steps


def cold_journey() -> list[tuple[Snapshot, str]]:
    """No answer on the first attempt, then a second attempt where the lead is not the buyer."""
    lead = _lead("cold-1", "Otieno Ochieng")
    missed = _call("cold-1", CallState.NO_ANSWER, billed_seconds=0, cost_minor=0)
    ringing = _call("cold-1", CallState.RINGING, attempt=2)
    said = _answers([("good_time", True), ("decision_maker", False)])
    billed = _call(
        "cold-1", CallState.COMPLETED, attempt=2, answered_at=NOW, billed_seconds=48, cost_minor=800
    )
    done = _profile(
        lead, LeadStatus.DONE, attempts=2, outcome=Outcome.COLD_CLOSED, score=_score(Verdict.COLD, 0)
    )
    return [
        (
            Snapshot(_profile(lead, LeadStatus.DIALING, attempts=2), [missed, ringing], carrier="ringing"),
            "dialing",
        ),
        (Snapshot(done, [missed, billed], said, "completed"), "cold_closed"),
    ]


def no_answer_journey() -> list[tuple[Snapshot, str]]:
    """Nobody picks up: the next attempt is scheduled and the demo counts the lead as no_answer."""
    lead = _lead("miss-1", "Akinyi Odhiambo")
    retry = _profile(
        lead,
        LeadStatus.RETRY_SCHEDULED,
        reason="no answer",
        next_attempt_at=NOW + timedelta(minutes=120),
    )
    return [
        (Snapshot(), "queued"),
        (
            Snapshot(
                _profile(lead, LeadStatus.DIALING), [_call("miss-1", CallState.RINGING)], carrier="ringing"
            ),
            "dialing",
        ),
        # The carrier said no-answer; the call record with its billing is not stored yet.
        (Snapshot(retry, [_call("miss-1", CallState.NO_ANSWER)], carrier="no_answer"), "wrapping up"),
        (
            Snapshot(retry, [_call("miss-1", CallState.NO_ANSWER, billed_seconds=0, cost_minor=0)]),
            "no_answer",
        ),
    ]


def rejected_journey() -> list[tuple[Snapshot, str]]:
    """On the do-not-call list: rejected before any call."""
    lead = _lead("dnc-1", "Baraka Mwangi")
    done = _profile(lead, LeadStatus.DONE, attempts=0, outcome=Outcome.REJECTED, reason="do-not-call list")
    return [(Snapshot(), "queued"), (Snapshot(done), "rejected")]


JOURNEYS = {
    "hot-1": hot_journey,
    "cold-1": cold_journey,
    "miss-1": no_answer_journey,
    "dnc-1": rejected_journey,
}
EXPECTED = {"hot-1": "hot_transferred", "cold-1": "cold_closed", "miss-1": "no_answer", "dnc-1": "rejected"}


class ScriptedStack:
    """Stands in for LocalStack: its store and simulator replay each lead's snapshots, one step per
    `check()` (the demo calls it once per poll), the last snapshot held once a journey ends."""

    def __init__(self, journeys: dict[str, list[Snapshot]]) -> None:
        self.journeys = journeys
        self.step = -1
        self.store = self

    def check(self) -> None:
        self.step += 1

    def now(self, lead_id: str) -> Snapshot:
        journey = self.journeys[lead_id]
        return journey[min(self.step, len(journey) - 1)]

    def get_lead(self, lead_id: str) -> LeadProfile | None:
        return self.now(lead_id).profile

    def list_calls(self, lead_id: str) -> list[CallRecord]:
        return self.now(lead_id).calls

    def get_answers(self, lead_id: str) -> list[Answer]:
        return self.now(lead_id).answers

    def sim_calls(self) -> list[dict[str, Any]]:
        snapshots = [self.now(lead_id) for lead_id in self.journeys]
        return [
            {"client_request_id": s.calls[-1].client_request_id, "call": {"status": s.carrier}}
            for s in snapshots
            if s.calls and s.carrier
        ]


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every poll reads the simulator and the next poll follows at once: one step of the script each.
    monkeypatch.setattr(demo, "SIM_POLL_S", 0.0)
    monkeypatch.setattr(demo, "POLL_S", 0.0)


def _views(lead_ids: list[str]) -> list[LeadView]:
    views = []
    for lead_id in lead_ids:
        final = JOURNEYS[lead_id]()[-1][0].profile
        assert final is not None
        views.append(LeadView(final.lead, EXPECTED[lead_id], questions=len(CAMPAIGN.questions)))
    return views


def _scripted(lead_ids: list[str]) -> ScriptedStack:
    return ScriptedStack({i: [snapshot for snapshot, _ in JOURNEYS[i]()] for i in lead_ids})


def _console() -> Console:
    return Console(file=io.StringIO(), width=220, record=True, color_system=None)


def _row(text: str, lead_id: str) -> str:
    """The one table line that carries `lead_id`."""
    lines = [line for line in text.splitlines() if f" {lead_id} " in line]
    assert len(lines) == 1, f"{lead_id}: {lines}"
    return lines[0]


def _cells(line: str) -> list[str]:
    """A table line's cells, whatever the box style draws between them."""
    return [cell.strip() for cell in re.split(r"[│┃]", line.strip().strip("│┃"))]


@pytest.mark.parametrize("lead_id", list(JOURNEYS))
def test_each_store_state_shows_the_stage_the_lead_is_at(lead_id: str) -> None:
    journey = JOURNEYS[lead_id]()
    stack = _scripted([lead_id])
    watcher = Watcher(cast(Any, stack), _views([lead_id]))
    seen = []
    for _ in journey:
        stack.check()
        watcher.poll()
        seen.append(watcher.views[0].stage())
    assert seen == [stage for _, stage in journey]
    assert watcher.done()


def test_an_outcome_stays_shown_once_reached_even_if_the_store_moves_on() -> None:
    stack = _scripted(["hot-1"])
    watcher = Watcher(cast(Any, stack), _views(["hot-1"]))
    for _ in hot_journey():
        stack.check()
        watcher.poll()
    stack.journeys["hot-1"].append(Snapshot(_profile(_lead("hot-1", "x"), LeadStatus.DIALING)))
    stack.check()
    watcher.poll()
    assert watcher.views[0].stage() == "hot_transferred"


def test_a_short_deferral_shows_its_reason_and_a_window_deferral_is_final() -> None:
    lead = _lead("late-1", "Njoki")
    view = LeadView(lead, questions=4)
    view.profile = _profile(
        lead, LeadStatus.DEFERRED, reason="pacing", next_attempt_at=NOW + timedelta(seconds=30)
    )
    assert view.stage() == "deferred: pacing"
    assert demo.finished_outcome(view.profile, [], NOW) is None
    far = _profile(
        lead, LeadStatus.DEFERRED, reason="outside window", next_attempt_at=NOW + timedelta(hours=9)
    )
    assert demo.finished_outcome(far, [], NOW) == "deferred"


def test_progress_table_has_a_row_per_lead_with_its_stage_answers_and_expected_outcome() -> None:
    ids = list(JOURNEYS)
    stack = _scripted(ids)
    views = _views(ids)
    watcher = Watcher(cast(Any, stack), views)
    for _ in range(6):  # hot-1 mid-interview (2 answers given); the other three have their outcome
        stack.check()
        watcher.poll()
    views[1].expected = "hot_transferred"  # an outcome other than the directory expects is flagged

    console = _console()
    console.print(progress_table(views, CAMPAIGN, 12.3))
    text = console.export_text()

    title = text.splitlines()[0].split()
    assert title[-5:] == ["3/4", "done", "—", "12.3", "s"]
    assert "campaign demo" in text.splitlines()[0]
    header = next(line for line in text.splitlines() if " lead " in line and " stage " in line)
    assert _cells(header) == ["lead", "name", "stage", "answers", "expected"]
    assert _cells(_row(text, "hot-1")) == [
        "hot-1",
        "Wanjiru Kamau",
        "talking · 2/4 answered",
        "good_time=yes decision_maker=yes",
        "hot_transferred",
    ]
    assert _cells(_row(text, "cold-1")) == [
        "cold-1",
        "Otieno Ochieng",
        "cold_closed ✗",
        "good_time=yes decision_maker=no",
        "hot_transferred",
    ]
    assert _cells(_row(text, "miss-1"))[2:] == ["no_answer", "", "no_answer"]
    assert _cells(_row(text, "dnc-1"))[2:] == ["rejected", "", "rejected"]


def test_without_a_live_table_each_stage_change_prints_one_line() -> None:
    ids = list(JOURNEYS)
    stack = _scripted(ids)
    watcher = Watcher(cast(Any, stack), _views(ids))
    console = _console()
    inputs = Inputs(CAMPAIGN, [], [], {}, {}, [])
    options = DemoOptions(live=False, timeout_s=60)

    stuck = demo._watch(watcher, cast(Any, stack), inputs, options, console, started=time.monotonic())

    assert stuck == []
    lines = console.export_text().splitlines()
    for lead_id, journey in JOURNEYS.items():
        printed = [line.split(lead_id, 1)[1].strip() for line in lines if f" {lead_id} " in line]
        stages = [stage for _, stage in journey()]
        changes = [stage for n, stage in enumerate(stages) if n == 0 or stages[n - 1] != stage]
        assert [p[: len(c)] for p, c in zip(printed, changes, strict=True)] == changes
    hot = [line for line in lines if " hot-1 " in line]
    assert hot[-1].split()[-4:] == ["good_time=yes", "decision_maker=yes", "seats=25", "timeline=2"]


def test_live_table_without_a_terminal_prints_the_final_state_once() -> None:
    ids = list(JOURNEYS)
    stack = _scripted(ids)
    watcher = Watcher(cast(Any, stack), _views(ids))
    console = _console()
    options = DemoOptions(live=True, timeout_s=60)

    demo._watch(
        watcher,
        cast(Any, stack),
        Inputs(CAMPAIGN, [], [], {}, {}, []),
        options,
        console,
        started=time.monotonic(),
    )

    text = console.export_text()
    assert text.count("leadqual demo — campaign demo") == 1
    assert "4/4 done" in text
    for lead_id, outcome in EXPECTED.items():
        assert _cells(_row(text, lead_id))[2] == outcome


def test_a_lead_without_outcome_at_the_timeout_says_where_it_stands() -> None:
    stack = _scripted(["hot-1"])
    stack.step = 1  # the next poll sees it dialing
    watcher = Watcher(cast(Any, stack), _views(["hot-1"]))
    options = DemoOptions(live=False, timeout_s=0.0)

    stuck = demo._watch(
        watcher, cast(Any, stack), Inputs(CAMPAIGN, [], [], {}, {}, []), options, _console(), 0.0
    )

    assert stuck == ["hot-1 (stage dialing; status dialing; call ringing; carrier says ringing)"]


def test_results_table_and_totals_show_each_outcome_score_seconds_and_kes(tmp_path: Path) -> None:
    ids = list(JOURNEYS)
    stack = _scripted(ids)
    views = _views(ids)
    watcher = Watcher(cast(Any, stack), views)
    while not watcher.done():
        stack.check()
        watcher.poll()
    inputs = Inputs(CAMPAIGN, [LeadRow(v.lead, n) for n, v in enumerate(views, 2)], [], EXPECTED, {}, [])

    report, _ = build_report(views, inputs, [], tmp_path, engine="local", wall_seconds=0.0)
    console = _console()
    console.print(results_table(report))
    text = console.export_text()

    header = next(line for line in text.splitlines() if " outcome " in line)
    assert _cells(header) == [
        "lead",
        "name",
        "outcome",
        "expected",
        "answers",
        "score",
        "attempts",
        "billed s",
        "KES",
        "1st word ms",
    ]
    # (outcome, score, attempts, billed s, KES): billing sums every attempt's call record.
    want = {
        "hot-1": ["hot_transferred", "100", "1", "95", "15.83"],
        "cold-1": ["cold_closed", "0", "2", "48", "8.00"],
        "miss-1": ["no_answer", "", "1", "0", "0.00"],
        "dnc-1": ["rejected", "", "0", "0", "0.00"],
    }
    for lead_id, (outcome, score, attempts, seconds, kes) in want.items():
        cells = _cells(_row(text, lead_id))
        assert cells[2:4] == [outcome, EXPECTED[lead_id]]
        assert cells[5:9] == [score, attempts, seconds, kes], lead_id
    assert _cells(_row(text, "hot-1"))[4] == "good_time=yes decision_maker=yes seats=25 timeline=2"

    assert totals_text(report["totals"]) == (
        "4 leads · dialed 3 · answered 2 · hot 1 (transferred 1) · cold 1 · "
        "billed 143 s · KES 23.83 · KES 23.83 per qualified lead"
    )


def test_totals_text_leaves_out_cost_per_qualified_lead_when_none_qualified() -> None:
    totals = {
        "leads": 2,
        "dialed": 2,
        "answered": 1,
        "hot": 0,
        "transferred": 0,
        "cold": 1,
        "billed_seconds": 31,
        "cost_kes": 5.1,
        "cost_per_qualified_lead_kes": None,
    }
    assert totals_text(totals) == (
        "2 leads · dialed 2 · answered 1 · hot 0 (transferred 0) · cold 1 · billed 31 s · KES 5.10"
    )
