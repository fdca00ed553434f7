"""Hot and cold paths under both transfer strategies, with and without verbs after <Stream>
(SAUTIKIT.md §4, §7.3), on the real local stack: bridge with the offline engine, the Sautikit
simulator, the real voice/events/dialer handlers.

One stack per simulator switch position; in each, two campaigns derived from the demo campaign
(`dial_after_stream` and `supervise_barge`) each call one hot and one cold lead at once. What is
asserted comes from the simulator's own records (call record, legs, timeline, verbs run,
violations) and from the store.

What it shows: the cold path (REST hang-up) is right everywhere; supervise_barge transfers with the
switch in either position; dial_after_stream transfers only when verbs after the stream run. When
they do not, the lead is left in silence; no DialCompleted comes, so the events function does not
count the hand-off as a transfer: the lead becomes `callback_requested` with the reason, and a
callback is scheduled (leadqual.accounting).

The supervise_barge campaign sets `transfer.whisper: false`, i.e. the strategy as §4 defines it
(POST supervision in mode `barge`); the default `whisper: true` path (join in whisper, speak a
summary once the rep is on the line, PATCH to barge) is tests/e2e/test_supervision_whisper.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sim_records import events, iso, kinds, legs, run_to_outcomes

from local.demo import LeadView, read_lead_file
from local.stack import DEFAULT_CAMPAIGN, DEFAULT_DIRECTORY, LocalStack, StackOptions

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(420)]

DIAL = "dial_after_stream"
BARGE = "supervise_barge"
CAMPAIGN_IDS = {DIAL: "xfer_dial", BARGE: "xfer_barge"}
REP = "+254711999000"  # the demo campaign's only rep; the sample directory's "Sales desk"
RATE_PER_SECOND_MINOR = 5  # the simulator's default KES 3.00/min
# Hot lead gives up after this much silence: how "sits in silence until hang-up" ends in the
# simulator (its own limit is 10 minutes). Longer than any pause in a working conversation.
HOT_SILENCE_HANGUP_S = 10.0
WAIT_S = 150.0
# lead -> (phone, strategy, temperature). Phones of their own, so the four calls never collide.
LEADS = {
    "hot-dial": ("+254712000101", DIAL, "hot"),
    "cold-dial": ("+254712000102", DIAL, "cold"),
    "hot-barge": ("+254712000103", BARGE, "hot"),
    "cold-barge": ("+254712000104", BARGE, "cold"),
}


@dataclass
class Run:
    verbs_after_stream: bool
    tag: str
    views: dict[str, LeadView]
    sim_calls: dict[str, dict[str, Any]]  # client_request_id -> the simulator's view of the call
    violations: list[dict[str, Any]]

    def lead(self, strategy: str, temperature: str) -> tuple[LeadView, dict[str, Any]]:
        name = next(k for k, (_, s, t) in LEADS.items() if s == strategy and t == temperature)
        view = self.views[f"{name}-{self.tag}"]
        assert view.calls, f"{view.lead_id}: never dialled ({view.why_unfinished()})"
        return view, self.sim_calls[view.calls[-1].client_request_id]


# ----------------------------------------------------------------------------- the campaigns


def _write_inputs(folder: Path, tag: str) -> tuple[Path, list[Path], Path]:
    """A directory (hot and cold people from the sample directory, one number each per strategy),
    two campaigns (the demo's with the strategy set) and one lead file."""
    sample = yaml.safe_load(DEFAULT_DIRECTORY.read_text())
    hot = {**sample["numbers"]["+254712000001"], "hangup_on_silence_s": HOT_SILENCE_HANGUP_S}
    cold = sample["numbers"]["+254712000002"]
    directory = {
        "numbers": {phone: dict(hot if temp == "hot" else cold) for phone, _, temp in LEADS.values()},
        "reps": {REP: sample["reps"][REP]},
    }
    directory_path = folder / "directory.yaml"
    directory_path.write_text(yaml.safe_dump(directory, sort_keys=False))

    campaigns = []
    base = yaml.safe_load(DEFAULT_CAMPAIGN.read_text())
    assert base["transfer"]["reps"] == [REP]
    for strategy, campaign_id in CAMPAIGN_IDS.items():
        # The strategy as SAUTIKIT.md §4 defines it: supervise_barge POSTs mode `barge`. The
        # campaign default `whisper: true` is covered by test_supervision_whisper.py.
        transfer = {**base["transfer"], "strategy": strategy, "whisper": False}
        data = {**base, "id": campaign_id, "transfer": transfer}
        path = folder / f"{campaign_id}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        campaigns.append(path)

    leads_path = folder / "leads.csv"
    rows = ["lead_id,phone,name,company,opt_in,timezone,campaign"]
    for name, (phone, strategy, _) in LEADS.items():
        rows.append(
            f"{name}-{tag},{phone},Test {name},Savannah Logistics,true,Africa/Nairobi,{CAMPAIGN_IDS[strategy]}"
        )
    leads_path.write_text("\n".join(rows) + "\n")
    return directory_path, campaigns, leads_path


def _run_campaigns(folder: Path, verbs_after_stream: bool) -> Run:
    # Lead ids of their own per run: stacks in one process share moto's in-memory AWS (see report).
    tag = "verbs" if verbs_after_stream else "noverbs"
    directory, campaigns, leads_path = _write_inputs(folder, tag)
    leads, invalid = read_lead_file(leads_path, CAMPAIGN_IDS[DIAL], set(CAMPAIGN_IDS.values()))
    assert invalid == []
    assert len(leads) == len(LEADS)
    options = StackOptions(
        run_dir=folder / "run",
        directory=directory,
        campaigns=campaigns,
        verbs_after_stream=verbs_after_stream,
    )
    with LocalStack(options) as stack:
        views, sim_calls, violations = run_to_outcomes(stack, [row.lead for row in leads], WAIT_S)
    return Run(verbs_after_stream, tag, views, sim_calls, violations)


@pytest.fixture(
    scope="module",
    params=[True, False],
    ids=["verbs_after_stream", "nothing_after_stream"],
)
def run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Both campaigns on one stack, the simulator's switch as the parameter says."""
    verbs_after_stream = bool(request.param)
    folder = tmp_path_factory.mktemp("verbs" if verbs_after_stream else "no-verbs")
    return _run_campaigns(folder, verbs_after_stream)


# ----------------------------------------------------------------------------- reading the records


def _assert_billed_to_the_second(view: LeadView, sim: dict[str, Any]) -> None:
    """Every connected leg bills ceil(connected seconds) at 5 minor units a second; the store holds
    the carrier's figures for the lead's leg and the call's total."""
    for leg in sim["call"]["legs"]:
        connected = (iso(leg["ended_at"]) - iso(leg["answered_at"])).total_seconds()
        # A started second counts whole. The timestamps are rounded to the millisecond (2 ms slack).
        assert leg["billed_seconds"] - 1.002 < connected <= leg["billed_seconds"] + 0.002, leg
        assert leg["billed_seconds"] >= 1, leg
        assert leg["cost_minor"] == leg["billed_seconds"] * RATE_PER_SECOND_MINOR, leg
    (lead_leg,) = legs(sim, "lead")
    record = view.calls[-1]
    assert str(record.state) == "completed"
    assert record.billed_seconds == lead_leg["billed_seconds"] == sim["call"]["duration_seconds"]
    assert (
        record.cost_minor
        == sim["call"]["cost_minor"]
        == sum(leg["cost_minor"] for leg in sim["call"]["legs"])
    )


def _summary(sim: dict[str, Any]) -> str:
    """The timeline without the chatter, for assertion messages."""
    skip = {"agent_turn", "lead_speaks", "webhook", "clock_slip", "lead_done", "rep_says"}
    return "\n".join(str(e) for e in sim["timeline"] if e["kind"] not in skip)


# ----------------------------------------------------------------------------- cold


@pytest.mark.parametrize("strategy", [DIAL, BARGE])
def test_a_cold_lead_is_hung_up_through_the_api_never_by_closing_the_stream(run: Run, strategy: str) -> None:
    view, sim = run.lead(strategy, "cold")
    why = _summary(sim)
    assert view.outcome == "cold_closed", why
    (hangup,) = events(sim, "hangup")
    assert (hangup["by"], hangup["cause"]) == ("app", "api_hangup"), why
    # The app hung up first; the switch then closed the stream. Not the app closing the stream,
    # which under dial_after_stream (and verbs running) would have run the <Dial>.
    (close,) = events(sim, "stream_close")
    assert close["by"] == "switch", why
    assert close["t"] >= hangup["t"], why
    assert not [v for v in sim["verbs"] if v["verb"] == "dial"], why
    assert "transfer_ringing" not in kinds(sim), why
    assert "supervision_requested" not in kinds(sim), why
    assert sim["call"]["transfers"] == []
    assert sim["call"]["supervision"] is None
    assert [leg["role"] for leg in sim["call"]["legs"]] == ["lead"]
    assert view.calls[-1].transferred_to is None
    _assert_billed_to_the_second(view, sim)
    assert sim["violations"] == []


# ----------------------------------------------------------------------------- hot


def test_hot_dial_after_stream(run: Run) -> None:
    view, sim = run.lead(DIAL, "hot")
    why = _summary(sim)
    assert len(view.answers) == 4, view.answers  # qualified: all four questions answered
    (close,) = events(sim, "stream_close")
    assert (close["by"], close["reason"]) == ("app", "transfer"), why  # the bridge hands over by closing
    record = view.calls[-1]
    assert record.transferred_to == REP
    if run.verbs_after_stream:
        # The <Dial> after the stream runs: the rep is rung, answers, talks with the lead, hangs up.
        assert [v["numbers"] for v in sim["verbs"] if v["verb"] == "dial"] == [[REP]], why
        (answered,) = events(sim, "transfer_answered")
        assert (answered["number"], answered["via"]) == (REP, "dial"), why
        assert answered["t"] >= close["t"]
        assert all(e["audible_to_lead"] for e in events(sim, "rep_says")), why
        (rep_leg,) = legs(sim, "rep")
        assert rep_leg["number"] == REP
        (hangup,) = events(sim, "hangup")
        assert (hangup["by"], hangup["cause"]) == ("rep", "normal_clearing"), why
        # The carrier's DialCompleted confirmed the rep leg, so the transfer counts.
        assert (record.transfer_status, record.transfer_seconds) == ("answered", rep_leg["billed_seconds"])
        assert view.outcome == "hot_transferred"
        assert str(view.profile.status) == "done"
    else:
        # §7.3: nothing after <Stream connect="true"> runs. The <Dial> never runs, nobody is rung,
        # and the lead sits in silence until they hang up.
        assert "verbs_after_stream_suppressed" in kinds(sim), why
        assert not [v for v in sim["verbs"] if v["verb"] == "dial"], why
        assert "transfer_ringing" not in kinds(sim), why
        assert sim["call"]["transfers"] == []
        assert [leg["role"] for leg in sim["call"]["legs"]] == ["lead"]
        (hangup,) = events(sim, "hangup")
        assert (hangup["by"], hangup["cause"]) == ("lead", "silence"), why
        assert hangup["t"] - close["t"] >= HOT_SILENCE_HANGUP_S - 0.5
        # No DialCompleted comes, so the hand-off is not counted as a transfer: the lead is to be
        # called back (tomorrow, the campaign's callback policy), the qualification kept, and the
        # reason says why and what to run on such a platform. The call record keeps the rep tried.
        assert record.transfer_status is None
        assert view.outcome == "callback_requested"
        assert str(view.profile.status) == "retry_scheduled"
        assert view.profile.reason == (
            "transfer not confirmed: the rep leg never connected (no DialCompleted from the carrier: "
            "verbs after <Stream> did not run; use transfer.strategy supervise_barge on this platform)"
        )
        assert str(view.profile.score.verdict) == "hot"
    _assert_billed_to_the_second(view, sim)
    assert sim["violations"] == []


def test_hot_supervise_barge(run: Run) -> None:
    """The stream stays up and the rep joins as a barge supervisor, whatever the switch says about
    verbs after the stream: this strategy does not depend on them."""
    view, sim = run.lead(BARGE, "hot")
    why = _summary(sim)
    assert len(view.answers) == 4, view.answers
    (requested,) = events(sim, "supervision_requested")
    assert requested["mode"] == "barge", why
    (answered,) = events(sim, "transfer_answered")
    assert (answered["number"], answered["via"]) == (REP, "supervision"), why
    assert sim["call"]["supervision"]["supervisor"] == {"type": "phone", "number": REP}
    assert sim["call"]["supervision"]["mode"] == "barge", why
    assert [e for e in events(sim, "rep_says") if e["audible_to_lead"]], why  # the lead hears the rep
    (rep_leg,) = legs(sim, "supervisor")
    assert rep_leg["number"] == REP
    assert not [v for v in sim["verbs"] if v["verb"] == "dial"], why
    assert "verbs_after_stream_suppressed" not in kinds(sim), why  # the stream outlived the call
    (hangup,) = events(sim, "hangup")
    assert (hangup["by"], hangup["cause"]) == ("rep", "normal_clearing"), why
    assert view.outcome == "hot_transferred", why
    assert view.calls[-1].transferred_to == REP
    _assert_billed_to_the_second(view, sim)
    assert sim["violations"] == []


def test_the_simulator_saw_no_protocol_violation(run: Run) -> None:
    assert run.violations == []
