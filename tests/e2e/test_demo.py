"""`make demo`'s path end to end: the sample campaign on the whole local stack (moto, the real
handlers behind the API emulator and the SQS poller, the bridge with the offline engine, the
Sautikit simulator and its simulated people), checked against the simulator's own records."""

from __future__ import annotations

import csv
import json
import re
import wave
from difflib import SequenceMatcher
from typing import Any

import pytest
import yaml

from bridge.prompt import opening_line
from leadqual.campaign import load_campaign
from leadqual.models import Lead
from tests.e2e.conftest import (
    DATA,
    DemoRun,
    directory_expectations,
    months_to_next_quarter,
    months_to_next_year,
    nows,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

ALL_OUTCOMES = {
    "hot_transferred",
    "cold_closed",
    "no_answer",
    "busy",
    "voicemail",
    "callback_requested",
    "opted_out",
    "rejected",
    "failed",
}
REP = "+254711999000"  # the demo campaign's rep, the "Sales desk" in the directory


def said() -> dict[str, dict[str, set[Any]]]:
    """What each simulated person in local/data/directory.yaml means, read by a human from the
    words they say (one reply per question, in order). Sets: a timeline depends on the month."""
    now = nows()
    quarter = {months_to_next_quarter(t) for t in now}
    year = {months_to_next_year(t) for t in now}
    return {
        # "Yes, now is fine." "Yes, I make the buying decisions." "About forty seats." "Within the next two months."
        "lead-01": {"good_time": {True}, "decision_maker": {True}, "seats": {40}, "timeline": {2}},
        # "Sure, go ahead." "No, my manager decides that." "Maybe five seats." "Probably next year."
        "lead-02": {"good_time": {True}, "decision_maker": {False}, "seats": {5}, "timeline": year},
        # "I'm driving right now. Can you call me back tomorrow morning?"
        "lead-06": {"good_time": {False}},
        # "Yes, go ahead." "Yes, that's me, I decide." "We need about twenty five seats." "Early next quarter."
        "lead-08": {"good_time": {True}, "decision_maker": {True}, "seats": {25}, "timeline": quarter},
        # "Okay, quickly." "Yes, I am." (then she hangs up)
        "lead-10": {"good_time": {True}, "decision_maker": {True}},
        # "Yes, now works." "Yes, I do." "Fifteen seats, give or take." "This month if possible."
        "lead-12": {"good_time": {True}, "decision_maker": {True}, "seats": {15}, "timeline": {0}},
        # "No, this isn't a good time. Call me next week." (after a "Hello?")
        "lead-14": {"good_time": {False}},
    }


def test_every_sample_lead_reaches_the_outcome_its_directory_entry_expects(sample_demo: DemoRun) -> None:
    assert sample_demo.returncode == 0, sample_demo.output[-4000:]
    assert "Every lead reached its expected outcome." in sample_demo.output
    with open(DATA / "leads.csv", newline="") as fh:
        leads = list(csv.DictReader(fh))
    expected = directory_expectations(DATA / "directory.yaml")
    got = {row["lead_id"]: row["outcome"] for row in sample_demo.report["leads"]}
    assert got == {lead["lead_id"]: expected[lead["phone"]] for lead in leads}
    # The sample covers every outcome a lead can end a campaign with (deferred needs a closed window).
    assert set(got.values()) == ALL_OUTCOMES
    assert sample_demo.report["totals"]["by_outcome"] == {
        outcome: list(got.values()).count(outcome) for outcome in set(got.values())
    }


def test_extracted_answers_are_what_the_simulated_people_said(sample_demo: DemoRun) -> None:
    meant = said()
    for row in sample_demo.report["leads"]:
        expected = meant.get(row["lead_id"], {})
        for question, value in row["answers"].items():
            assert question in expected, f"{row['lead_id']}: {question}={value!r} was never said"
            assert value in expected[question], f"{row['lead_id']}: {question}={value!r}"
        if row["outcome"] == "hot_transferred":
            assert set(row["answers"]) == set(expected), row["lead_id"]  # all four, numbers in words too
    # Numbers said in words arrive as numbers.
    assert sample_demo.lead("lead-01")["answers"]["seats"] == 40
    assert sample_demo.lead("lead-08")["answers"]["seats"] == 25
    assert sample_demo.lead("lead-12")["answers"]["seats"] == 15


def test_hot_leads_reach_the_rep_leg_and_cold_ones_are_hung_up(sample_demo: DemoRun) -> None:
    for row in sample_demo.report["leads"]:
        if row["attempts"] == 0 or row["billed_seconds"] == 0:
            continue
        call = sample_demo.sim_call(row["lead_id"])
        record = call["call"]
        reps = [leg for leg in record["legs"] if leg["role"] == "rep"]
        hangups = [e for e in call["timeline"] if e["kind"] == "hangup"]
        if row["outcome"] == "hot_transferred":
            assert row["verdict"] == "hot"
            assert [leg["number"] for leg in reps] == [REP], row["lead_id"]
            assert reps[0]["billed_seconds"] > 0  # lead and rep were connected and talked
            assert any(e["kind"] == "transfer_answered" for e in call["timeline"])
        else:
            # Nobody else is ever put through, and the call ends by our REST hangup — never by
            # closing the stream, which would run the <Dial> and transfer a cold lead.
            assert reps == [], row["lead_id"]
            assert not any(v.get("verb") == "dial" for v in call["verbs"]), row["lead_id"]
            by = {e["by"] for e in hangups}
            if row["lead_id"] == "lead-10":  # Chebet hangs up on us mid-call (hangup_after_s)
                assert by == {"lead"}
            else:
                assert by == {"app"}, (row["lead_id"], hangups)
    cold = [r for r in sample_demo.report["leads"] if r["outcome"] == "cold_closed"]
    assert any(r["verdict"] == "cold" for r in cold)  # scored cold on the answers, not only early ends


def test_billing_in_the_report_equals_the_carriers_records_to_the_second(sample_demo: DemoRun) -> None:
    total_minor = 0
    for row in sample_demo.report["leads"]:
        if row["attempts"] == 0:
            assert (row["billed_seconds"], row["cost_kes"]) == (0, 0)
            assert not any(
                c.get("client_request_id", "").startswith(f"lq-{row['lead_id']}-")
                for c in sample_demo.sim_calls
            )
            continue
        record = sample_demo.sim_call(row["lead_id"])["call"]
        lead_leg = next((leg for leg in record["legs"] if leg["role"] == "lead"), None)
        # billed_seconds: the lead's connected seconds, as the carrier's call record states them.
        assert row["billed_seconds"] == record["duration_seconds"], row["lead_id"]
        assert row["billed_seconds"] == (lead_leg["billed_seconds"] if lead_leg else 0), row["lead_id"]
        # cost: the carrier's charge for the call, the rep leg of a warm transfer included.
        assert round(row["cost_kes"] * 100) == record["cost_minor"], row["lead_id"]
        assert record["cost_minor"] == sum(leg["cost_minor"] for leg in record["legs"])
        total_minor += record["cost_minor"]
    totals = sample_demo.report["totals"]
    assert round(totals["cost_kes"] * 100) == total_minor
    assert totals["billed_seconds"] == sum(r["billed_seconds"] for r in sample_demo.report["leads"])
    answered = [r for r in sample_demo.report["leads"] if r["billed_seconds"] > 0]
    assert totals["answered"] == len(answered) == 11
    assert totals["transferred"] == totals["hot"] == 3
    assert totals["cost_per_qualified_lead_kes"] == round(totals["cost_kes"] / 3, 2)


def test_the_simulator_saw_no_protocol_violation(sample_demo: DemoRun) -> None:
    assert sample_demo.violations == []
    assert all(call["violations"] == [] for call in sample_demo.sim_calls)
    assert sample_demo.report["totals"]["protocol_violations"] == 0
    # The quirky carrier (swapped numbers, every callback twice, an early and a late Completed) is
    # in the sample and still qualified once, billed once.
    assert sample_demo.lead("lead-12")["outcome"] == "hot_transferred"
    assert sample_demo.lead("lead-12")["attempts"] == 1


def test_the_report_folder_has_recordings_transcripts_and_a_readable_html_page(sample_demo: DemoRun) -> None:
    out = sample_demo.out_dir
    html = (out / "report.html").read_text()
    for row in sample_demo.report["leads"]:
        assert row["lead_id"] in html
        if row["billed_seconds"] == 0:
            assert row["recording"] is None
            continue
        assert row["recording"] == f"calls/{row['lead_id']}.wav"
        assert f'src="calls/{row["lead_id"]}.wav"' in html
        with wave.open(str(out / row["recording"])) as w:
            assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 16000, 2)
            seconds = w.getnframes() / w.getframerate()
        assert abs(seconds - row["billed_seconds"]) <= 2.0, (row["lead_id"], seconds)
        transcript = json.loads((out / "calls" / f"{row['lead_id']}.json").read_text())
        lines = [
            e for e in transcript["timeline"] if e["who"] in ("lead", "voicemail") and e["text"] != "(beep)"
        ]
        said_words = sample_demo.sim_call(row["lead_id"])["lead_said"]
        assert [e["text"].removesuffix(" (interrupting)") for e in lines] == said_words
    # The agent's side comes from the transcript the bridge stored: the disclosure is in it.
    agent = [
        e["text"]
        for e in json.loads((out / "calls" / "lead-01.json").read_text())["timeline"]
        if e["who"] == "agent"
    ]
    assert any("recorded" in text.lower() for text in agent), agent
    for name in ("Funnel", "Outcomes", "Wanjiru Mwangi"):
        assert name in html


def test_the_campaign_finishes_in_minutes(sample_demo: DemoRun) -> None:
    totals = sample_demo.report["totals"]
    assert totals["wall_seconds"] < 300  # start-up, 15 leads and the report
    assert totals["campaign_seconds"] < 240


# Number words as a person says them; the speech-to-text may write them as digits.
_UNITS = [
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven"),
    *("twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"),
]
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80}


def words(text: str) -> list[str]:
    """Lower-case words, numbers as digits whether spoken ("twenty five") or transcribed ("25")."""
    out: list[str] = []
    for word in re.findall(r"[\w']+", text.lower()):
        if word in _UNITS and out and out[-1].isdigit() and int(out[-1]) % 10 == 0 and int(out[-1]) >= 20:
            out[-1] = str(int(out[-1]) + _UNITS.index(word))
        elif word in _UNITS:
            out.append(str(_UNITS.index(word)))
        elif word in _TENS:
            out.append(str(_TENS[word]))
        else:
            out.append(word)
    return out


def best_match(line: list[str], heard: list[str]) -> tuple[float, int]:
    """(how closely, where) `line` appears in `heard`: the best window of about its length."""
    best = (0.0, -1)
    for size in {max(1, len(line) - 1), len(line), len(line) + 1}:
        for start in range(max(1, len(heard) - size + 1)):
            ratio = SequenceMatcher(None, line, heard[start : start + size], autojunk=False).ratio()
            best = max(best, (ratio, -start))
    return best[0], -best[1]


def test_a_hot_leads_stored_transcript_has_what_the_person_said(sample_demo: DemoRun) -> None:
    people = yaml.safe_load((DATA / "directory.yaml").read_text())["numbers"]
    campaign = load_campaign(DATA / "campaign.yaml")
    with open(DATA / "leads.csv", newline="") as fh:
        leads = [Lead(**{k: v for k, v in r.items() if v}) for r in csv.DictReader(fh)]
    hot = [r for r in sample_demo.report["leads"] if r["outcome"] == "hot_transferred"]
    assert len(hot) == 3
    for row in hot:
        call = json.loads((sample_demo.out_dir / "calls" / f"{row['lead_id']}.json").read_text())
        transcript = call["transcript"]  # read back from the call record the bridge wrote
        assert [e["t"] for e in transcript] == sorted(e["t"] for e in transcript)
        assert {e["who"] for e in transcript} == {"agent", "lead"}
        # What the simulated person said, in order, as the bridge's speech-to-text heard it.
        heard = words(" ".join(e["text"] for e in transcript if e["who"] == "lead"))
        where = []
        for line in people[row["phone"]]["says"]:
            ratio, at = best_match(words(line), heard)
            assert ratio >= 0.7, (row["lead_id"], line, heard)
            where.append(at)
        assert where == sorted(where), (row["lead_id"], heard)
        # The agent's side: the opening with its disclosure first, the handoff to the rep last, in
        # the bridge's exact words (the engine's own transcript of them did not add a copy).
        lead = next(lead for lead in leads if lead.lead_id == row["lead_id"])
        agent = [e["text"] for e in transcript if e["who"] == "agent"]
        assert transcript[0] == {
            "t": transcript[0]["t"],
            "who": "agent",
            "text": opening_line(campaign, lead),
        }
        assert "may be recorded" in agent[0]
        assert agent[-1] == campaign.transfer.handoff_line
        assert len(agent) == len(set(agent)), agent
