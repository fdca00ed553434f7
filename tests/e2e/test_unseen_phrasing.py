"""Leads who answer in words the sample never uses still score right: the interviewer follows the
campaign, not a script of the sample's phrasings. Same path as `leadqual demo`, own directory and leads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import DemoRun, months_to_next_quarter, nows, run_demo

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

PEOPLE = {
    "+254712000101": {
        "name": "Zawadi (unseen phrasing)",
        "expect": "hot_transferred",
        "answer": "after_rings",
        "says": ["Sure, go ahead.", "Yeah that's me.", "Give or take forty.", "Early next quarter."],
    },
    "+254712000102": {
        "name": "Baraka (unseen phrasing, other order of words)",
        "expect": "hot_transferred",
        "answer": "after_rings",
        "rings": 2,
        "says": [
            "Yep, I have a minute.",
            "Yeah, that's me.",
            "Forty, give or take.",
            "Early next quarter, I'd say.",
        ],
    },
}
LEADS = """lead_id,phone,name,company,opt_in
unseen-1,+254712000101,Zawadi Njambi,Malindi Marine,true
unseen-2,+254712000102,Baraka Mutiso,Voi Ventures,true
"""


@pytest.fixture(scope="module")
def unseen_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    base = tmp_path_factory.mktemp("unseen")
    directory = base / "directory.yaml"
    sample = yaml.safe_load((Path(__file__).resolve().parents[2] / "local/data/directory.yaml").read_text())
    directory.write_text(yaml.safe_dump({"numbers": PEOPLE, "reps": sample["reps"]}))
    leads = base / "leads.csv"
    leads.write_text(LEADS)
    return run_demo(base / "out", "--leads", str(leads), "--directory", str(directory), "--dnc", "")


def test_unseen_phrasings_are_understood_and_the_leads_scored_hot(unseen_demo: DemoRun) -> None:
    assert unseen_demo.returncode == 0, unseen_demo.output[-4000:]
    quarter = {months_to_next_quarter(t) for t in nows()}
    for lead_id in ("unseen-1", "unseen-2"):
        row = unseen_demo.lead(lead_id)
        assert row["outcome"] == "hot_transferred", row
        assert row["verdict"] == "hot"
        answers = row["answers"]
        assert answers["good_time"] is True
        assert answers["decision_maker"] is True  # "yeah that's me"
        assert answers["seats"] == 40  # "give or take forty"
        assert answers["timeline"] in quarter  # "early next quarter"
    assert unseen_demo.violations == []
