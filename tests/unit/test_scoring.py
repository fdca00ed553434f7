"""Scoring: deterministic verdicts on partial answers, deciding early both ways, in plain words."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from leadqual.campaign import Campaign, Rule, parse_campaign
from leadqual.models import Answer, AnswerValue, Verdict
from leadqual.normalise import NO_TIMELINE
from leadqual.scoring import describe, describe_not, holds, score


def campaign(
    rules: list[dict[str, Any]], hot: dict[str, Any], questions: list[dict[str, Any]] | None = None
) -> Campaign:
    return parse_campaign(
        {
            "id": "t",
            "name": "test",
            "agent": {"name": "A", "company": "C"},
            "disclosure": "AI call.",
            "questions": questions
            or [
                {"id": "budget", "ask": "Budget?", "type": "yes_no"},
                {"id": "seats", "ask": "Seats?", "type": "number"},
                {"id": "timeline", "ask": "When?", "type": "timeline"},
                {"id": "plan", "ask": "Plan?", "type": "choice", "choices": ["Starter", "Pro", "Enterprise"]},
                {"id": "notes", "ask": "Anything else?", "type": "text", "required": False},
            ],
            "scoring": {"rules": rules, "hot": hot},
            "transfer": {"reps": ["+254711999000"]},
        }
    )


def rule(op: str, value: Any, question: str = "seats") -> Rule:
    return Rule.model_validate({"id": "r", "question": question, "op": op, "value": value})


# --- the example campaign --------------------------------------------------------------------


def test_example_goes_undecided_then_hot(example_campaign: Campaign) -> None:
    empty = score(example_campaign, {})
    assert empty.verdict is Verdict.UNDECIDED
    assert empty.missing == ["decision_maker", "seats", "timeline"]  # good_time has no rule
    assert (empty.points, empty.max_points) == (0, 100)

    partial = score(example_campaign, {"good_time": True, "decision_maker": True, "seats": 40})
    assert partial.verdict is Verdict.UNDECIDED
    assert partial.points == 70
    assert partial.missing == ["timeline"]
    assert partial.reasons == [
        "undecided: so far makes buying decisions, needs 10 or more seats; still to hear: timeline"
    ]

    hot = score(example_campaign, {"good_time": True, "decision_maker": True, "seats": 40, "timeline": 1})
    assert hot.verdict is Verdict.HOT
    assert hot.points == 100
    assert hot.missing == []
    assert hot.reasons == ["hot: makes buying decisions, needs 10 or more seats, wants it within 3 months"]


def test_example_goes_cold_on_the_first_disqualifying_answer(example_campaign: Campaign) -> None:
    not_the_buyer = score(example_campaign, {"decision_maker": False})
    assert not_the_buyer.verdict is Verdict.COLD
    assert not_the_buyer.reasons == ["cold: does not make buying decisions (decision_maker = no)"]
    assert not_the_buyer.missing == []

    small = score(example_campaign, {"seats": 5})
    assert small.verdict is Verdict.COLD
    assert small.reasons == ["cold: does not need 10 or more seats (seats = 5)"]

    later = score(example_campaign, {"decision_maker": True, "seats": 40, "timeline": 6})
    assert later.verdict is Verdict.COLD
    assert later.points == 70
    assert later.reasons == ["cold: does not want it within 3 months (timeline = 6 months)"]

    no_plans = score(example_campaign, {"decision_maker": True, "seats": 40, "timeline": NO_TIMELINE})
    assert no_plans.reasons == ["cold: does not want it within 3 months (timeline = no timeline)"]


def test_edges_of_the_example_rules(example_campaign: Campaign) -> None:
    base: dict[str, AnswerValue] = {"decision_maker": True, "timeline": 3}
    assert score(example_campaign, {**base, "seats": 10}).verdict is Verdict.HOT  # gte 10
    assert score(example_campaign, {**base, "seats": 9}).verdict is Verdict.COLD
    assert score(example_campaign, {**base, "seats": 10, "timeline": 4}).verdict is Verdict.COLD  # lte 3
    assert score(example_campaign, {**base, "seats": 10, "timeline": 0}).verdict is Verdict.HOT


def test_answers_as_records_later_ones_win_and_strangers_are_ignored(example_campaign: Campaign) -> None:
    at = datetime(2025, 6, 4, tzinfo=UTC)
    answers = [
        Answer(question_id="decision_maker", value=False, quote="no", at=at),
        Answer(question_id="decision_maker", value=True, quote="oh wait, yes I am", at=at),
        Answer(question_id="seats", value=12, quote="a dozen"),
        Answer(question_id="timeline", value=0, quote="asap"),
        Answer(question_id="favourite_colour", value="blue"),
    ]
    assert score(example_campaign, answers).verdict is Verdict.HOT


def test_none_counts_as_answered_but_unusable(example_campaign: Campaign) -> None:
    result = score(example_campaign, {"decision_maker": None})
    assert result.verdict is Verdict.COLD
    assert result.reasons == ["cold: does not make buying decisions (decision_maker = no answer)"]


def test_scoring_is_deterministic_whatever_the_order(example_campaign: Campaign) -> None:
    a: dict[str, AnswerValue] = {"timeline": 2, "seats": 40, "decision_maker": True}
    b = dict(reversed(list(a.items())))
    assert score(example_campaign, a) == score(example_campaign, b) == score(example_campaign, a)


# --- operators -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "target", "value", "expected"),
    [
        ("eq", 10, 10, True),
        ("eq", 10, 10.0, True),
        ("eq", 10, "10", True),
        ("eq", 10, 11, False),
        ("ne", 10, 11, True),
        ("ne", 10, 10, False),
        ("gte", 10, 10, True),
        ("gte", 10, 9, False),
        ("gt", 10, 10, False),
        ("gt", 10, 10.5, True),
        ("lte", 3, 3, True),
        ("lte", 3, 4, False),
        ("lt", 3, 3, False),
        ("lt", 3, 2, True),
        ("in", [10, 20], 20, True),
        ("in", [10, 20], 15, False),
        ("gte", 10, "lots", False),
        ("gte", 10, True, False),  # a yes is not a number
        ("gte", 10, None, False),
    ],
)
def test_number_ops(op: str, target: Any, value: AnswerValue, expected: bool) -> None:
    assert holds(rule(op, target), value) is expected


def test_bools_and_strings_compare_as_people_expect() -> None:
    assert holds(rule("eq", True, "budget"), True)
    assert not holds(rule("eq", True, "budget"), 1)  # 1 is not "yes"
    assert holds(rule("ne", True, "budget"), False)
    assert holds(rule("eq", "Pro", "plan"), " pro ")
    assert holds(rule("in", ["Pro", "Enterprise"], "plan"), "enterprise")
    assert not holds(rule("in", ["Pro", "Enterprise"], "plan"), "Starter")


# --- hot rules: any, min_points --------------------------------------------------------------

POINT_RULES = [
    {
        "id": "budget",
        "question": "budget",
        "op": "eq",
        "value": True,
        "points": 40,
        "describe": "has a budget",
    },
    {
        "id": "big",
        "question": "seats",
        "op": "gte",
        "value": 50,
        "points": 30,
        "describe": "needs 50 or more seats",
    },
    {
        "id": "soon",
        "question": "timeline",
        "op": "lte",
        "value": 3,
        "points": 30,
        "describe": "buys within 3 months",
    },
]


def test_min_points_can_decide_hot_before_every_question() -> None:
    c = campaign(POINT_RULES, {"min_points": 70})
    early = score(c, {"budget": True, "seats": 80})
    assert early.verdict is Verdict.HOT
    assert early.reasons == ["hot: has a budget, needs 50 or more seats (70 of 100 points, 70 needed)"]
    assert score(c, {"budget": True}).missing == ["seats", "timeline"]


def test_min_points_decides_cold_once_out_of_reach() -> None:
    c = campaign(POINT_RULES, {"min_points": 70})
    no_budget = score(c, {"budget": False})
    assert no_budget.verdict is Verdict.COLD  # 30 + 30 at most
    assert no_budget.reasons == ["cold: at most 60 of 70 points needed"]
    small = score(c, {"budget": True, "seats": 10})
    assert small.verdict is Verdict.UNDECIDED  # 40 + 30 still possible
    assert small.missing == ["timeline"]
    late = score(c, {"budget": True, "seats": 10, "timeline": 9})
    assert late.verdict is Verdict.COLD
    assert late.reasons == ["cold: at most 40 of 70 points needed"]


def test_a_penalty_still_unanswered_keeps_hot_from_being_certain() -> None:
    rules = [
        *POINT_RULES,
        {
            "id": "has_vendor",
            "question": "plan",
            "op": "eq",
            "value": "Starter",
            "points": -50,
            "describe": "is on Starter",
        },
    ]
    c = campaign(rules, {"min_points": 60})
    waiting = score(c, {"budget": True, "seats": 80})
    assert waiting.verdict is Verdict.UNDECIDED
    assert waiting.missing == ["timeline", "plan"]
    pro: dict[str, AnswerValue] = {"budget": True, "seats": 80, "plan": "Pro"}
    assert score(c, pro).verdict is Verdict.HOT
    starter = score(c, {**pro, "plan": "Starter", "timeline": 12})
    assert starter.verdict is Verdict.COLD
    assert starter.points == 20


def test_any_rule() -> None:
    c = campaign(POINT_RULES, {"any": ["big", "soon"], "all": ["budget"]})
    assert score(c, {"budget": True, "timeline": 1}).verdict is Verdict.HOT
    waiting = score(c, {"budget": True, "timeline": 9})
    assert waiting.verdict is Verdict.UNDECIDED
    assert waiting.missing == ["seats"]
    cold = score(c, {"budget": True, "timeline": 9, "seats": 5})
    assert cold.verdict is Verdict.COLD
    assert cold.reasons == [
        "cold: none of: does not need 50 or more seats (seats = 5); does not buy within 3 months (timeline = 9 months)"
    ]


def test_missing_skips_questions_that_no_longer_matter() -> None:
    c = campaign(POINT_RULES, {"all": ["budget"], "any": ["big", "soon"]})
    assert score(c, {"seats": 80}).missing == ["budget"]  # "any" is already met
    assert score(c, {}).missing == ["budget", "seats", "timeline"]  # notes and plan have no rules


# --- wording ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("words", "negated"),
    [
        ("makes buying decisions", "does not make buying decisions"),
        ("has a budget", "does not have a budget"),
        ("is the owner", "is not the owner"),
        ("can sign off", "can not sign off"),
        ("buys within 3 months", "does not buy within 3 months"),
        ("carries a quota", "does not carry a quota"),
        ("watches costs", "does not watch costs"),
        ("uses a CRM", "does not use a CRM"),
        ("ready to buy", "not: ready to buy"),
    ],
)
def test_automatic_negation(words: str, negated: str) -> None:
    assert (
        describe_not(
            Rule.model_validate({"id": "r", "question": "q", "op": "eq", "value": 1, "describe": words})
        )
        == negated
    )


def test_wording_without_describe_and_with_an_override() -> None:
    bare = rule("gte", 10)
    assert describe(bare) == "seats is at least 10"
    assert describe_not(bare) == "seats is less than 10"
    assert describe_not(rule("in", ["Pro", "Enterprise"], "plan")) == "plan is not one of Pro, Enterprise"
    assert describe_not(rule("eq", True, "budget")) == "budget is not yes"
    custom = Rule.model_validate(
        {
            "id": "r",
            "question": "q",
            "op": "eq",
            "value": True,
            "describe": "decides",
            "describe_not": "someone else decides",
        }
    )
    assert describe_not(custom) == "someone else decides"
