"""What people say → typed answers: yes/no, numbers, timelines, choices, per question type."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from leadqual.campaign import AnswerType, Campaign, Question
from leadqual.errors import AnswerError
from leadqual.normalise import (
    NO_TIMELINE,
    normalise_answer,
    parse_choice,
    parse_number,
    parse_timeline_months,
    parse_yes_no,
)

EARLY_JUNE = datetime(2025, 6, 4, 10, tzinfo=UTC)  # Q2; next quarter starts in July
LATE_JUNE = datetime(2025, 6, 25, 10, tzinfo=UTC)
NOVEMBER = datetime(2025, 11, 20, 10, tzinfo=UTC)  # Q4; next quarter starts in January


# --- yes / no --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "yes",
        "Yes.",
        "yeah",
        "yep",
        "yup",
        "yeah that's me",
        "Yeah, that’s me",  # typographic apostrophe from speech-to-text
        "thats me",
        "that's me",
        "it's me, speaking",
        "I am",
        "yes I am",
        "I am the decision maker",
        "I'm the one who decides",
        "sure",
        "Sure thing",
        "correct",
        "that's right",
        "Absolutely!",
        "of course",
        "yes I do",
        "I do.",
        "we do",
        "go ahead",
        "now is fine",
        "no problem",
        "yes, no problem",
        "not a problem at all",
        "ndio",
        "sawa",
        "right",
        "true",
        "no, actually yes",
        "sorry, yes",
    ],
)
def test_yes(text: str) -> None:
    assert parse_yes_no(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "no",
        "No.",
        "nope",
        "nah",
        "not really",
        "that's not me",
        "thats not me",
        "not me",
        "no, I'm not",
        "I am not",
        "I'm not the decision maker",
        "I'm not the right person",
        "I don't",
        "I don't think so",
        "no I do not",
        "not a good time",
        "it's not a good time",
        "I'm busy",
        "I'm busy right now",
        "call me back later",
        "wrong number",
        "hapana",
        "false",
        "yes, actually no",
    ],
)
def test_no(text: str) -> None:
    assert parse_yes_no(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "hmm",
        "I'm not sure",
        "maybe",
        "it depends",
        "I don't know",
        "yes and no",
        "yeah, no",
        "my boss decides",
    ],
)
def test_unclear_yes_no_is_none(text: str) -> None:
    assert parse_yes_no(text) is None


# --- numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("40", 40),
        ("forty", 40),
        ("Forty.", 40),
        ("twenty five", 25),
        ("twenty-five", 25),
        ("ninety nine", 99),
        ("nineteen", 19),
        ("a hundred", 100),
        ("a hundred and fifty", 150),
        ("one hundred fifty", 150),
        ("five hundred", 500),
        ("two thousand five hundred", 2500),
        ("two thousand and fifty", 2050),
        ("2 thousand", 2000),
        ("1,200", 1200),
        ("1.5k", 1500),
        ("a dozen", 12),
        ("two dozen", 24),
        ("half a dozen", 6),
        ("a couple", 2),
        ("a few", 3),
        ("a couple of hundred", 200),
        ("give or take forty", 40),
        ("about 40 seats", 40),
        ("roughly forty people", 40),
        ("40 or so", 40),
        ("40ish", 40),
        ("fortyish", 40),
        ("oh, about forty", 40),
        ("we are a team of 12", 12),
        ("40+", 40),
        ("at least 10", 10),
        ("up to 10", 10),
        ("no more than 10", 10),
        ("more than nine", 10),
        ("over 40", 41),
        ("under ten", 9),
        ("fewer than 10", 9),
        ("almost 10", 9),
        ("just me", 1),
        ("only me", 1),
        ("none", 0),
        ("no one", 0),
        ("zero", 0),
        ("2.5", 3),
    ],
)
def test_numbers(text: str, value: int) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("between ten and twenty", 15),
        ("between 10 and 20 seats", 15),
        ("between a hundred and two hundred", 150),
        ("10-15", 13),  # 12.5 rounds half up
        ("10 to 15", 13),
        ("40 or 50", 45),
        ("maybe 5 or 6", 6),
    ],
)
def test_ranges_become_their_midpoint(text: str, value: int) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "I don't know", "lots", "no", "the usual"])
def test_no_number_is_none(text: str) -> None:
    assert parse_number(text) is None


def test_the_first_number_wins_when_they_are_not_a_range() -> None:
    assert parse_number("ten and twenty") == 10
    assert parse_number("forty, fifty") == 40


# --- timelines -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "june", "november"),
    [
        ("now", 0, 0),
        ("ASAP", 0, 0),
        ("as soon as possible", 0, 0),
        ("immediately", 0, 0),
        ("tomorrow", 0, 0),
        ("this month", 0, 0),
        ("the end of the month", 0, 0),
        ("next month", 1, 1),
        ("within a month", 1, 1),
        ("within three months", 3, 3),
        ("in 3 months", 3, 3),
        ("six months", 6, 6),
        ("in about 2 months", 2, 2),
        ("a couple of months", 2, 2),
        ("a few months", 3, 3),
        ("two to three months", 3, 3),  # midpoint 2.5, half up
        ("3-6 months", 5, 5),
        ("probably in the next 90 days", 3, 3),
        ("half a year", 6, 6),
        ("in a year", 12, 12),
        ("within the next year", 12, 12),
        ("a year and a half", 18, 18),
        ("this quarter", 0, 1),  # by its end: June is Q2's last month; December is Q4's
        ("next quarter", 1, 2),  # its start: July; January
        ("early next quarter", 1, 2),
        ("mid next quarter", 2, 3),
        ("end of next quarter", 3, 4),
        ("end of the year", 6, 1),
        ("by the end of the year", 6, 1),
        ("sometime this year", 6, 1),
        ("next year", 7, 2),  # January
        ("early next year", 7, 2),
        ("in Q1 next year", 7, 2),
        ("Q3", 1, 8),
        ("by March", 9, 4),
        ("in September", 3, 10),
        ("not this quarter", 1, 2),
        ("no plans this year", 7, 2),
        ("not for another six months", 7, 7),
    ],
)
def test_timelines(text: str, june: int, november: int) -> None:
    assert parse_timeline_months(text, EARLY_JUNE) == june
    assert parse_timeline_months(text, NOVEMBER) == november


def test_weeks_land_on_a_calendar_month() -> None:
    assert parse_timeline_months("in two weeks", EARLY_JUNE) == 0  # 18 June
    assert parse_timeline_months("in two weeks", LATE_JUNE) == 1  # 9 July
    assert parse_timeline_months("next week", LATE_JUNE) == 1
    assert parse_timeline_months("a couple of weeks", EARLY_JUNE) == 0


@pytest.mark.parametrize(
    "text", ["not sure", "no plans", "we have no plans", "I don't know", "never", "someday"]
)
def test_no_timeline_is_far_away(text: str) -> None:
    assert parse_timeline_months(text, EARLY_JUNE) == NO_TIMELINE


@pytest.mark.parametrize("text", ["", "hmm", "purple", "not now", "we already have one"])
def test_timelines_not_understood_are_none(text: str) -> None:
    assert parse_timeline_months(text, EARLY_JUNE) is None


def test_may_the_month_and_may_the_verb() -> None:
    assert parse_timeline_months("in May", NOVEMBER) == 6
    assert parse_timeline_months("may be next month", NOVEMBER) == 1


# --- choices ---------------------------------------------------------------------------------

PLANS = ["Starter", "Growth plan", "Enterprise"]


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        ("starter", "Starter"),
        ("Enterprise.", "Enterprise"),
        ("I think the growth plan", "Growth plan"),
        ("the second one", "Growth plan"),
        ("option 3", "Enterprise"),
        ("the last one", "Enterprise"),
        ("enterprize", "Enterprise"),
    ],
)
def test_choices(text: str, choice: str) -> None:
    assert parse_choice(text, PLANS) == choice


def test_ambiguous_or_unknown_choices_are_none() -> None:
    assert parse_choice("starter or enterprise", PLANS) is None
    assert parse_choice("something else", PLANS) is None
    assert parse_choice("starter", []) is None


# --- per question ----------------------------------------------------------------------------


def q(kind: AnswerType, **kw: object) -> Question:
    return Question.model_validate({"id": "q1", "ask": "?", "type": kind, **kw})


def test_normalise_yes_no_takes_bools_and_phrases() -> None:
    yn = q(AnswerType.YES_NO)
    assert normalise_answer(yn, True) is True
    assert normalise_answer(yn, 0) is False
    assert normalise_answer(yn, "yeah that's me") is True
    assert normalise_answer(yn, "no, I'm not") is False
    with pytest.raises(AnswerError, match=r"q1: expected yes or no, could not tell from 'maybe'") as info:
        normalise_answer(yn, "maybe")
    assert info.value.question_id == "q1"
    assert not info.value.retryable


def test_normalise_number_takes_numbers_strings_and_phrases() -> None:
    num = q(AnswerType.NUMBER)
    assert normalise_answer(num, 40) == 40
    assert normalise_answer(num, 40.0) == 40
    assert isinstance(normalise_answer(num, 40.0), int)
    assert normalise_answer(num, 2.5) == 2.5
    assert normalise_answer(num, "40") == 40
    assert normalise_answer(num, "give or take forty") == 40
    with pytest.raises(AnswerError, match="expected a number, got yes/no"):
        normalise_answer(num, True)
    with pytest.raises(AnswerError, match="expected a number, found none in 'lots'"):
        normalise_answer(num, "lots")
    with pytest.raises(AnswerError, match="zero or more"):
        normalise_answer(num, -3)
    with pytest.raises(AnswerError, match="found none"):
        normalise_answer(num, float("nan"))


def test_normalise_timeline_takes_months_and_phrases() -> None:
    tl = q(AnswerType.TIMELINE)
    assert normalise_answer(tl, 3, now=EARLY_JUNE) == 3
    assert normalise_answer(tl, "3", now=EARLY_JUNE) == 3
    assert normalise_answer(tl, 2.6, now=EARLY_JUNE) == 3
    assert normalise_answer(tl, "early next quarter", now=EARLY_JUNE) == 1
    assert normalise_answer(tl, "no plans", now=EARLY_JUNE) == NO_TIMELINE
    with pytest.raises(AnswerError, match="expected when"):
        normalise_answer(tl, "purple", now=EARLY_JUNE)
    with pytest.raises(AnswerError, match="got yes/no"):
        normalise_answer(tl, False, now=EARLY_JUNE)
    with pytest.raises(AnswerError, match="zero or more"):
        normalise_answer(tl, -1, now=EARLY_JUNE)


def test_normalise_choice_and_text() -> None:
    choice = q(AnswerType.CHOICE, choices=PLANS)
    assert normalise_answer(choice, "the growth plan please") == "Growth plan"
    with pytest.raises(AnswerError, match="expected one of Starter, Growth plan, Enterprise"):
        normalise_answer(choice, "platinum")
    text = q(AnswerType.TEXT)
    assert normalise_answer(text, "  we use spreadsheets  ") == "we use spreadsheets"
    assert len(str(normalise_answer(text, "x" * 5000))) == 1000


def test_missing_answers_are_errors() -> None:
    for kind in AnswerType:
        extra = {"choices": PLANS} if kind is AnswerType.CHOICE else {}
        with pytest.raises(AnswerError, match="no answer given"):
            normalise_answer(q(kind, **extra), None)
        with pytest.raises(AnswerError, match="no answer given"):
            normalise_answer(q(kind, **extra), "  ")


def test_the_example_campaigns_questions(example_campaign: Campaign) -> None:
    said = {
        "good_time": "sure, go ahead",
        "decision_maker": "yeah that's me",
        "seats": "give or take forty",
        "timeline": "early next quarter",
    }
    got = {
        qid: normalise_answer(example_campaign.question(qid), text, now=EARLY_JUNE)
        for qid, text in said.items()
    }
    assert got == {"good_time": True, "decision_maker": True, "seats": 40, "timeline": 1}
