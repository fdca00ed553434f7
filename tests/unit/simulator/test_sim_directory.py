"""The directory file (a contract other repositories write) and the shipped demo directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from local.sautikit.call import label_is_callback_safe
from local.sautikit.directory import Answer, Directory

SAMPLE = Path(__file__).resolve().parents[3] / "local" / "data" / "directory.yaml"

ISSUE_EXAMPLE = """
numbers:
  "+254712000001":
    answer: after_rings
    rings: 2
    says:
      - "Yes, now is fine."
      - "Yes, I make the buying decisions."
    interrupt_on_turn: 2
    hangup_after_s: 40
  "+254712000002":
    answer: voicemail
    voicemail_greeting: "Leave a message."
reps:
  "+254711999000": {answer: after_rings, rings: 1}
  "*": {answer: after_rings, rings: 2}
"""


def test_the_issue_format_loads_with_its_meaning():
    d = Directory.from_yaml(ISSUE_EXAMPLE)
    p = d.person("+254712000001")
    assert p is not None
    assert (p.answer, p.rings, p.interrupt_on_turn, p.hangup_after_s) == (Answer.AFTER_RINGS, 2, 2, 40)
    assert p.says == ["Yes, now is fine.", "Yes, I make the buying decisions."]
    assert d.person("+254799999999") is None  # in neither list: does not answer
    assert d.rep("+254711999000").rings == 1
    assert d.rep("+254733333333").rings == 2  # "*" catches any other transfer target
    assert Directory.from_yaml("numbers: {}").rep("+254711999000") is None


def test_defaults_and_typos_are_loud():
    d = Directory.from_yaml('numbers: {"+254712000009": {}}')
    p = d.person("+254712000009")
    assert (p.answer, p.rings, p.says) == (Answer.AFTER_RINGS, 1, [])
    with pytest.raises(ValidationError):
        Directory.from_yaml('numbers: {"+254712000009": {interupt_on_turn: 2}}')
    with pytest.raises(ValidationError):
        Directory.from_yaml('numbers: {"+254712000009": {answer: maybe}}')
    with pytest.raises(ValidationError, match=r"E\.164"):
        Directory.from_yaml("numbers: {254712000009: {}}")


def test_the_shipped_directory_covers_every_outcome_the_demo_needs():
    d = Directory.load(SAMPLE)
    people = d.numbers
    assert len(people) >= 12
    answers = {p.answer for p in people.values()}
    assert answers == set(Answer)
    expects = {p.expect for p in people.values()}
    assert {
        "hot_transferred",
        "cold_closed",
        "no_answer",
        "busy",
        "voicemail",
        "callback_requested",
        "opted_out",
        "failed",
    } <= expects
    assert any(p.interrupt_on_turn for p in people.values())
    assert any(p.answer is Answer.AFTER_RINGS and not p.says for p in people.values())  # silent
    assert any(p.hangup_after_s for p in people.values())
    assert any(p.answer is Answer.VOICEMAIL and p.voicemail_greeting for p in people.values())
    assert any(r.answer is Answer.NO_ANSWER for r in d.reps.values())  # a rep who does not answer
    assert "*" in d.reps


@pytest.mark.parametrize(
    ("label", "safe"),
    [("lq-L1-1", True), ("lead 1", False), ("a,b", False), ("{x}", False), ('"q"', False), ("it's", False)],
)
def test_labels_with_whitespace_commas_braces_or_quotes_are_not_callback_safe(label, safe):
    assert label_is_callback_safe(label) is safe
