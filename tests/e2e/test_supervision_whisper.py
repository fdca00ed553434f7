"""`supervise_barge` with `transfer.whisper: true` (the campaign default) on the real local stack:
bridge with the offline engine, the Sautikit simulator, the real voice/events/dialer handlers.

Two hot leads on one stack, each on a campaign derived from the demo campaign:
- the rep answers: the bridge rings them in whisper mode, waits until the supervision reads
  `active`, speaks the summary, PATCHes to barge and falls silent. The simulator's timeline shows
  that order; the rep's line, spoken once the lead can hear it (barge), is in the lead's recording;
  the rep's leg is billed; the lead is `hot_transferred`.
- the rep never answers: after `transfer.ring_timeout_s` the bridge removes the supervision, says
  the fallback line and hangs up; the lead is `callback_requested`, never counted transferred.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sim_records import events, iso, legs, run_to_outcomes

from leadqual.campaign import load_campaign
from local.demo import LeadView, read_lead_file
from local.sautikit.audio import read_wav
from local.stack import DEFAULT_CAMPAIGN, DEFAULT_DIRECTORY, LocalStack, StackOptions

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]

REP = "+254711999000"  # the sample directory's "Sales desk": answers at the first ring
NO_REP = "+254711999001"  # the sample directory's "Out-of-office rep": never answers
RING_TIMEOUT_S = 5  # the smallest a campaign may set
RATE_PER_SECOND_MINOR = 5  # the simulator's default KES 3.00/min
SPEECH_RMS = 300.0
QUIET_RMS = 30.0
WAIT_S = 150.0
# lead -> (phone, campaign id, the rep the campaign transfers to)
LEADS = {
    "whisper-rep": ("+254712000201", "sup_whisper", REP),
    "whisper-norep": ("+254712000202", "sup_whisper_norep", NO_REP),
}


@dataclass
class Run:
    views: dict[str, LeadView]
    sim_calls: dict[str, dict[str, Any]]  # client_request_id -> the simulator's view of the call
    violations: list[dict[str, Any]]
    fallback_line: str
    handoff_line: str

    def lead(self, name: str) -> tuple[LeadView, dict[str, Any]]:
        view = self.views[name]
        assert view.calls, f"{name}: never dialled ({view.why_unfinished()})"
        return view, self.sim_calls[view.calls[-1].client_request_id]


def _write_inputs(folder: Path) -> tuple[Path, list[Path], Path]:
    sample = yaml.safe_load(DEFAULT_DIRECTORY.read_text())
    # The sample's hot lead; a silence limit only so that a broken hand-over cannot hang the test.
    hot = {**sample["numbers"]["+254712000001"], "hangup_on_silence_s": 20}
    directory = {
        "numbers": {phone: dict(hot) for phone, _, _ in LEADS.values()},
        "reps": {REP: sample["reps"][REP], NO_REP: sample["reps"][NO_REP]},
    }
    assert directory["reps"][NO_REP]["answer"] == "no_answer"
    directory_path = folder / "directory.yaml"
    directory_path.write_text(yaml.safe_dump(directory, sort_keys=False))

    base = yaml.safe_load(DEFAULT_CAMPAIGN.read_text())
    campaigns = []
    for _, campaign_id, rep in LEADS.values():
        transfer = {
            **base["transfer"],
            "strategy": "supervise_barge",
            "whisper": True,
            "reps": [rep],
            "ring_timeout_s": RING_TIMEOUT_S,
        }
        path = folder / f"{campaign_id}.yaml"
        path.write_text(yaml.safe_dump({**base, "id": campaign_id, "transfer": transfer}, sort_keys=False))
        campaigns.append(path)

    leads_path = folder / "leads.csv"
    rows = ["lead_id,phone,name,company,opt_in,timezone,campaign"]
    for name, (phone, campaign_id, _) in LEADS.items():
        rows.append(f"{name},{phone},Test {name},Savannah Logistics,true,Africa/Nairobi,{campaign_id}")
    leads_path.write_text("\n".join(rows) + "\n")
    return directory_path, campaigns, leads_path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("supervision-whisper")
    directory, campaigns, leads_path = _write_inputs(folder)
    transfer = load_campaign(campaigns[0]).transfer
    campaign_ids = {campaign_id for _, campaign_id, _ in LEADS.values()}
    leads, invalid = read_lead_file(leads_path, "sup_whisper", campaign_ids)
    assert invalid == []
    options = StackOptions(run_dir=folder / "run", directory=directory, campaigns=campaigns)
    with LocalStack(options) as stack:
        views, sim_calls, violations = run_to_outcomes(stack, [row.lead for row in leads], WAIT_S)
    return Run(
        views,
        sim_calls,
        violations,
        fallback_line=transfer.fallback_line,
        handoff_line=transfer.handoff_line,
    )


# ----------------------------------------------------------------------------- reading the records


def _summary(sim: dict[str, Any]) -> str:
    """The timeline without the chatter, for assertion messages."""
    skip = {"lead_speaks", "webhook", "clock_slip", "lead_done"}
    return "\n".join(str(e) for e in sim["timeline"] if e["kind"] not in skip)


def _lead_heard_rms(sim: dict[str, Any], t0: float, t1: float) -> float:
    """RMS of what the lead heard (the recording's right channel) between timeline times t0 and t1."""
    audio, rate = read_wav(Path(sim["recording_path"]))
    answered = events(sim, "answered")[0]["t"]
    part = audio[int((t0 - answered) * rate) : int((t1 - answered) * rate), 1].astype(np.float32)
    return float(np.sqrt((part**2).mean())) if part.size else 0.0


def _agent_lines(view: LeadView) -> list[str]:
    return [e["text"] for e in view.calls[-1].transcript if e["who"] == "agent"]


def _assert_billed_to_the_second(view: LeadView, sim: dict[str, Any]) -> None:
    for leg in sim["call"]["legs"]:
        connected = (iso(leg["ended_at"]) - iso(leg["answered_at"])).total_seconds()
        assert leg["billed_seconds"] - 1.002 < connected <= leg["billed_seconds"] + 0.002, leg
        assert leg["cost_minor"] == leg["billed_seconds"] * RATE_PER_SECOND_MINOR, leg
    (lead_leg,) = legs(sim, "lead")
    record = view.calls[-1]
    assert record.billed_seconds == lead_leg["billed_seconds"] == sim["call"]["duration_seconds"]
    assert (
        record.cost_minor
        == sim["call"]["cost_minor"]
        == sum(leg["cost_minor"] for leg in sim["call"]["legs"])
    )


# ----------------------------------------------------------------------------- the rep answers


def test_the_rep_is_on_the_line_before_the_summary_and_heard_by_the_lead_after_barge(run: Run) -> None:
    view, sim = run.lead("whisper-rep")
    why = _summary(sim)
    assert len(view.answers) == 4, view.answers  # qualified: all four questions answered
    (requested,) = events(sim, "supervision_requested")
    assert requested["mode"] == "whisper", why
    (active,) = events(sim, "supervision_active")
    assert active["number"] == REP, why
    # One PATCH, to barge, sent once the rep was on the line (no PATCH probing for the pickup).
    (barge,) = events(sim, "supervision_mode")
    assert (barge["mode"], barge["previous"], barge["status"]) == ("barge", "whisper", "active"), why
    # While the rep's phone rang the lead heard nothing: the summary waited for the pickup.
    assert _lead_heard_rms(sim, requested["t"] + 0.2, active["t"]) < QUIET_RMS, why

    # The summary: the lead heard the agent between the rep's pickup and the switch to barge
    # (whisper: the rep heard it too), and it is the bridge's summary line.
    summary = [e for e in events(sim, "agent_turn") if active["t"] < e["t"] < barge["t"]]
    assert summary, why
    assert summary[0]["duration_s"] >= 1.0, why
    agent = _agent_lines(view)
    assert run.handoff_line in agent, agent
    assert agent.index(run.handoff_line) < next(
        i for i, line in enumerate(agent) if line.startswith("I'm connecting you with")
    ), agent
    # Nothing from the agent after barge: it fell silent for the rep.
    assert not [e for e in events(sim, "agent_turn") if e["t"] > barge["t"] + 0.5], why

    # The rep: heard by the agent alone while whispering, by the lead once barged in.
    said = events(sim, "rep_says")
    whispered = [e for e in said if e["mode"] == "whisper"]
    to_lead = [e for e in said if e["mode"] == "barge"]
    assert whispered, why
    assert all(not e["audible_to_lead"] and e["t"] >= active["t"] for e in whispered), why
    assert to_lead, why
    assert all(e["audible_to_lead"] and e["t"] >= barge["t"] for e in to_lead), why
    line = to_lead[0]
    assert _lead_heard_rms(sim, line["t"] + 0.2, line["t"] + line["duration_s"] - 0.2) > SPEECH_RMS, why

    (hangup,) = events(sim, "hangup")
    assert (hangup["by"], hangup["cause"]) == ("rep", "normal_clearing"), why
    assert hangup["t"] > line["t"] + line["duration_s"], why  # the rep said it all before leaving
    assert view.outcome == "hot_transferred", why
    assert view.calls[-1].transferred_to == REP
    assert sim["call"]["supervision"]["supervisor"] == {"type": "phone", "number": REP}

    # The rep's leg is billed per second from pickup, beside the lead's.
    (sup_leg,) = legs(sim, "supervisor")
    assert sup_leg["number"] == REP
    assert sup_leg["billed_seconds"] >= 1
    assert iso(sup_leg["answered_at"]) < iso(sup_leg["ended_at"])
    _assert_billed_to_the_second(view, sim)
    assert sim["violations"] == []


# ----------------------------------------------------------------------------- the rep never answers


def test_a_rep_who_never_answers_leaves_a_callback_with_the_fallback_line(run: Run) -> None:
    view, sim = run.lead("whisper-norep")
    why = _summary(sim)
    assert len(view.answers) == 4, view.answers
    (requested,) = events(sim, "supervision_requested")
    assert requested["mode"] == "whisper", why
    assert events(sim, "supervision_active") == [], why
    assert events(sim, "supervision_mode") == [], why  # nothing to switch
    assert events(sim, "rep_says") == [], why
    # The bridge gave the rep the campaign's ring timeout, then removed the supervision.
    (removed,) = events(sim, "supervision_ended")
    assert removed["by"] == "app", why
    assert RING_TIMEOUT_S - 0.5 <= removed["t"] - requested["t"] <= RING_TIMEOUT_S + 3, why
    assert sim["call"]["supervision"]["status"] == "ended"
    assert sim["call"]["transfer"]["status"] == "canceled"
    # While it rang the lead heard nothing (no summary for a rep who is not there); then the
    # fallback line, heard by the lead, then a REST hang-up.
    assert _lead_heard_rms(sim, requested["t"] + 0.2, removed["t"]) < QUIET_RMS, why
    (hangup,) = events(sim, "hangup")
    assert (hangup["by"], hangup["cause"]) == ("app", "api_hangup"), why
    assert _lead_heard_rms(sim, removed["t"] + 0.3, hangup["t"] - 0.3) > SPEECH_RMS, why
    agent = _agent_lines(view)
    assert agent[-1] == run.fallback_line, agent
    assert not any(line.startswith("I'm connecting you with") for line in agent), agent  # no summary

    assert view.outcome == "callback_requested", why
    assert str(view.profile.status) == "retry_scheduled", view.why_unfinished()  # called back later
    assert view.calls[-1].transferred_to is None
    assert [leg["role"] for leg in sim["call"]["legs"]] == ["lead"]  # nothing billed for the rep
    _assert_billed_to_the_second(view, sim)
    assert sim["violations"] == []


def test_the_simulator_saw_no_protocol_violation(run: Run) -> None:
    assert run.violations == []
