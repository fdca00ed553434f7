"""The demo's own decisions, without the stack (fast, hermetic): when a lead counts as finished,
how a call's timeline reads, what the totals count. The e2e tests cover the same on real runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from leadqual.campaign import Campaign
from leadqual.models import Answer, CallRecord, CallState, Lead, LeadStatus, Outcome
from leadqual.store import LeadProfile
from local.demo import (
    LeadView,
    call_timeline,
    compute_totals,
    display_answer,
    finished_outcome,
    lead_report_row,
    read_lead_file,
)

NOW = datetime(2025, 6, 4, 7, 0, tzinfo=UTC)
LEAD = Lead(lead_id="l1", phone="+254712000001", name="Wanjiru Mwangi", company="Savannah", opt_in=True)


def profile(status: LeadStatus, outcome: Outcome | None = None, **kw: object) -> LeadProfile:
    return LeadProfile(lead=LEAD, status=status, attempts=1, outcome=outcome, **kw)  # type: ignore[arg-type]


def call(state: CallState, billed: int | None, cost: int | None = None) -> CallRecord:
    return CallRecord(
        lead_id="l1",
        attempt=1,
        client_request_id="lq-l1-1",
        state=state,
        billed_seconds=billed,
        cost_minor=cost,
    )


def test_a_lead_is_finished_only_once_its_last_call_is_accounted_for() -> None:
    # The bridge sets the outcome while the rep is still talking: not final until the bill is in.
    hot = profile(LeadStatus.IN_CALL, Outcome.HOT_TRANSFERRED)
    assert finished_outcome(hot, [call(CallState.TRANSFERRING, None)], NOW) is None
    done = profile(LeadStatus.DONE, Outcome.HOT_TRANSFERRED)
    assert finished_outcome(done, [call(CallState.COMPLETED, None)], NOW) is None
    assert finished_outcome(done, [call(CallState.COMPLETED, 46, 255)], NOW) == "hot_transferred"
    # Rejected before any dial: done, no call to wait for.
    assert finished_outcome(profile(LeadStatus.DONE, Outcome.REJECTED), [], NOW) == "rejected"


def test_a_scheduled_retry_counts_as_finished_with_the_attempts_outcome() -> None:
    retry = profile(LeadStatus.RETRY_SCHEDULED, next_attempt_at=NOW + timedelta(minutes=120))
    assert finished_outcome(retry, [call(CallState.NO_ANSWER, 0, 0)], NOW) == "no_answer"
    assert finished_outcome(retry, [call(CallState.BUSY, 0, 0)], NOW) == "busy"
    callback = profile(LeadStatus.RETRY_SCHEDULED, Outcome.CALLBACK_REQUESTED)
    assert finished_outcome(callback, [call(CallState.COMPLETED, 19, 95)], NOW) == "callback_requested"
    assert finished_outcome(retry, [call(CallState.NO_ANSWER, None)], NOW) is None  # not billed yet


def test_a_pacing_deferral_is_not_an_outcome_but_a_closed_window_is() -> None:
    soon = profile(
        LeadStatus.DEFERRED, next_attempt_at=NOW + timedelta(seconds=20), reason="no free calling slot"
    )
    assert finished_outcome(soon, [], NOW) is None
    tonight = profile(
        LeadStatus.DEFERRED, next_attempt_at=NOW + timedelta(hours=9), reason="outside calling hours"
    )
    assert finished_outcome(tonight, [], NOW) == "deferred"
    assert finished_outcome(None, [], NOW) is None


def test_the_timeline_reads_as_a_conversation_with_the_answers_where_they_were_saved() -> None:
    started = datetime(2025, 6, 4, 7, 0, tzinfo=UTC)
    sim_view = {
        "call": {"started_at": "2025-06-04T07:00:00.000Z"},
        "timeline": [
            {"t": 0.0, "kind": "ringing"},
            {"t": 2.0, "kind": "answered", "after_s": 2.0},
            {"t": 2.0, "kind": "answered", "number": "+254712000001"},
            {"t": 2.5, "kind": "agent_turn", "turn": 1, "duration_s": 6.0, "interrupted_by_lead": False},
            {"t": 9.2, "kind": "lead_speaks", "text": "Yes, now is fine.", "turn": 1},
            {"t": 9.9, "kind": "webhook", "purpose": "event"},
            {"t": 30.0, "kind": "transfer_answered", "number": "+254711999000"},
            {"t": 30.4, "kind": "agent_turn", "turn": 5, "duration_s": 2.0},  # the rep's voice
            {"t": 30.5, "kind": "rep_says", "text": "Hi, this is the sales team."},
            {"t": 35.0, "kind": "hangup", "by": "rep", "cause": "normal_clearing"},
            {"t": 35.0, "kind": "billed", "cost_minor": 255},
        ],
    }
    answers = [
        Answer(
            question_id="good_time", value=True, quote="Yes, now is fine.", at=started + timedelta(seconds=11)
        )
    ]
    lines = [(e["t"], e["who"], e["text"]) for e in call_timeline(sim_view, answers)]
    assert lines == [
        (0.0, "carrier", "ringing"),
        (2.0, "carrier", "answered (the recording starts here)"),
        (2.5, "agent", "(speaks 6.0 s)"),
        (9.2, "lead", "Yes, now is fine."),
        (11.0, "answer", "good_time = yes (heard: “Yes, now is fine.”)"),
        (30.0, "carrier", "the rep answered; lead and rep are connected"),
        (30.5, "rep", "Hi, this is the sales team."),
        (35.0, "carrier", "hang-up by rep (normal_clearing)"),
        (35.0, "carrier", "billed: KES 2.55"),
    ]


def test_the_agents_words_come_from_the_transcript_the_bridge_stored() -> None:
    sim_view = {
        "call": {"started_at": "2025-06-04T07:00:00.000Z"},
        "timeline": [
            {"t": 1.0, "kind": "answered", "after_s": 1.0},
            {"t": 2.2, "kind": "stream_open"},
            {"t": 3.0, "kind": "agent_turn", "turn": 1, "duration_s": 8.3, "interrupted_by_lead": False},
            {"t": 12.1, "kind": "lead_speaks", "text": "Yes, go ahead.", "turn": 1},
            {"t": 13.9, "kind": "agent_turn", "turn": 2, "duration_s": 0.8, "interrupted_by_lead": True},
            {"t": 14.7, "kind": "lead_speaks", "text": "Yes, that's me.", "turn": 2, "interrupting": True},
            {"t": 17.6, "kind": "agent_turn", "turn": 3, "duration_s": 2.8, "interrupted_by_lead": False},
            {"t": 30.0, "kind": "agent_turn", "turn": 4, "duration_s": 1.0, "interrupted_by_lead": False},
        ],
    }
    # t: seconds since the stream opened (2.2 on the simulator's clock).
    transcript = [
        {"t": 0.75, "who": "agent", "text": "Hi Atieno, this is Amina. Is now a good time?"},
        {"t": 10.4, "who": "lead", "text": "Yes go ahead."},
        {"t": 11.72, "who": "agent", "text": "Are you the person who decides?"},
        {"t": 13.1, "who": "lead", "text": "Yes, that's me."},
        {"t": 15.3, "who": "agent", "text": "Roughly how many seats?"},
        {"t": 16.0, "who": "agent", "text": "Say, for the whole team."},  # a second line in the same turn
        {"t": 40.0, "who": "agent", "text": "Are you still there?"},  # no turn heard near it
    ]
    lines = [(e["t"], e["who"], e["text"]) for e in call_timeline(sim_view, [], transcript)]
    assert lines == [
        (1.0, "carrier", "answered (the recording starts here)"),
        (2.2, "carrier", "media stream to the bridge opened"),
        (3.0, "agent", "Hi Atieno, this is Amina. Is now a good time?"),
        (12.1, "lead", "Yes, go ahead."),
        (13.9, "agent", "Are you the person who decides? (cut off by the lead)"),
        (14.7, "lead", "Yes, that's me. (interrupting)"),
        (17.6, "agent", "Roughly how many seats? Say, for the whole team."),
        (30.0, "agent", "(speaks 1.0 s)"),  # nothing stored for it: its length only
        (42.2, "agent", "Are you still there?"),
    ]
    # Without a stored transcript the turns keep their lengths.
    bare = [e["text"] for e in call_timeline(sim_view, []) if e["who"] == "agent"]
    assert bare == ["(speaks 8.3 s)", "(speaks 0.8 s)", "(speaks 2.8 s)", "(speaks 1.0 s)"]


def test_rows_and_totals_follow_leadqual_report(example_campaign: Campaign) -> None:
    hot = LeadView(LEAD, expected="hot_transferred", outcome="hot_transferred")
    hot.profile = profile(LeadStatus.DONE, Outcome.HOT_TRANSFERRED)
    hot.calls = [call(CallState.COMPLETED, 46, 255)]
    hot.answers = [Answer(question_id="seats", value=40)]
    row = lead_report_row(hot, hot.answers, 77.04)
    assert {
        k: row[k] for k in ("lead_id", "outcome", "answers", "attempts", "billed_seconds", "cost_kes")
    } == {
        "lead_id": "l1",
        "outcome": "hot_transferred",
        "answers": {"seats": 40},
        "attempts": 1,
        "billed_seconds": 46,
        "cost_kes": 2.55,
    }
    assert row["time_to_first_word_ms"] == 77.0
    queued = LeadView(LEAD.model_copy(update={"lead_id": "l2"}))
    rows = [row, lead_report_row(queued, [], None)]
    totals = compute_totals(rows)
    assert totals["leads"] == 2
    assert totals["transferred"] == 1
    assert totals["cost_kes"] == 2.55
    assert totals["by_outcome"] == {"hot_transferred": 1, "unfinished": 1}
    assert display_answer(example_campaign, "timeline", 0) == "this month"
    assert display_answer(example_campaign, "timeline", 2) == "within 2 months"
    assert display_answer(example_campaign, "decision_maker", False) == "no"


def test_lead_files_are_checked_as_leadqual_enqueue_checks_them(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text(
        "lead_id,phone,name,company,opt_in\n"
        "a,0712 000 001,A,Co,yes\n"
        "b,+254712000002,B,Co,false\n"
        "c,12,C,Co,true\n"
        "a,+254712000003,A again,Co,true\n"
    )
    leads, invalid = read_lead_file(path, "demo", {"demo"})
    assert [(r.lead.lead_id, r.lead.phone, r.lead.campaign) for r in leads] == [
        ("a", "+254712000001", "demo")
    ]
    assert [line for line, _ in invalid] == [3, 4, 5]
    assert "opted in" in invalid[0][1]
