"""Deterministic scoring: the campaign's rules over the answers given so far.

Each rule is true, false or not yet known (its question is unanswered). The verdict is HOT only
when the hot rule holds whatever the missing answers turn out to be, COLD as soon as it can no
longer hold whatever they turn out to be, and UNDECIDED in between, so a call can end early both
ways. An answer given as None (answered, but no usable value) makes its rules false.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import Enum

from leadqual.campaign import AnswerType, Campaign, Op, Question, Rule
from leadqual.models import Answer, AnswerValue, Score, Verdict
from leadqual.normalise import NO_TIMELINE


class Truth(Enum):
    TRUE = "true"
    FALSE = "false"
    UNKNOWN = "unknown"


def _answers_map(answers: Mapping[str, AnswerValue] | Iterable[Answer]) -> dict[str, AnswerValue]:
    if isinstance(answers, Mapping):
        return dict(answers)
    return {a.question_id: a.value for a in answers}  # a later answer to the same question wins


def _number(value: AnswerValue) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except ValueError:
        return None


def _same(a: AnswerValue, b: AnswerValue) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().casefold() == b.strip().casefold()
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        return na == nb
    return a == b


def holds(rule: Rule, value: AnswerValue) -> bool:
    """Whether `rule` holds for an answered `value`; values that cannot be compared do not hold."""
    if value is None:
        return False
    target = rule.value
    if rule.op is Op.IN:
        options = target if isinstance(target, list) else [target]
        return any(_same(value, option) for option in options)
    if isinstance(target, list):
        return False
    if rule.op is Op.EQ:
        return _same(value, target)
    if rule.op is Op.NE:
        return not _same(value, target)
    a, b = _number(value), _number(target)
    if a is None or b is None:
        return False
    return {Op.GTE: a >= b, Op.GT: a > b, Op.LTE: a <= b, Op.LT: a < b}[rule.op]


def evaluate_rule(rule: Rule, answers: Mapping[str, AnswerValue]) -> Truth:
    if rule.question not in answers:
        return Truth.UNKNOWN
    return Truth.TRUE if holds(rule, answers[rule.question]) else Truth.FALSE


# --- wording ---------------------------------------------------------------------------------

_OP_WORDS = {
    Op.EQ: "is",
    Op.NE: "is not",
    Op.GTE: "is at least",
    Op.GT: "is more than",
    Op.LTE: "is at most",
    Op.LT: "is less than",
    Op.IN: "is one of",
}
_OP_NOT = {Op.EQ: Op.NE, Op.NE: Op.EQ, Op.GTE: Op.LT, Op.GT: Op.LTE, Op.LTE: Op.GT, Op.LT: Op.GTE}
_IRREGULAR = {"has": "have", "does": "do", "goes": "go", "uses": "use", "decides": "decide", "makes": "make"}


def format_value(value: AnswerValue | list[AnswerValue]) -> str:
    if isinstance(value, list):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "no answer"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def format_answer(question: Question, value: AnswerValue) -> str:
    """An answer as a person would say it: yes/no, "3 months", "no timeline"."""
    if (
        question.type is AnswerType.TIMELINE
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        if value >= NO_TIMELINE:
            return "no timeline"
        if value == 0:
            return "now"
        months = format_value(value)
        return f"{months} month" if months == "1" else f"{months} months"
    return format_value(value)


def describe(rule: Rule) -> str:
    """The rule in plain words: its `describe`, else built from the condition."""
    if rule.describe:
        return rule.describe
    return f"{rule.question} {_OP_WORDS[rule.op]} {format_value(rule.value)}"


def describe_not(rule: Rule) -> str:
    """The rule's negation in plain words: `describe_not` if given; "makes buying decisions" →
    "does not make buying decisions", "is X" → "is not X"; else the inverted condition."""
    if rule.describe_not:
        return rule.describe_not
    if not rule.describe:
        if rule.op is Op.IN:
            return f"{rule.question} is not one of {format_value(rule.value)}"
        return f"{rule.question} {_OP_WORDS[_OP_NOT[rule.op]]} {format_value(rule.value)}"
    verb, _, rest = rule.describe.partition(" ")
    tail = f" {rest}" if rest else ""
    if verb in ("is", "are", "can", "will", "was", "should", "would"):
        return f"{verb} not{tail}"
    if verb in _IRREGULAR:
        return f"does not {_IRREGULAR[verb]}{tail}"
    if re.fullmatch(r"[a-z]+ies", verb):
        return f"does not {verb[:-3]}y{tail}"
    if re.fullmatch(r"[a-z]+(?:ss|sh|ch|x|z)es", verb):
        return f"does not {verb[:-2]}{tail}"
    if re.fullmatch(r"[a-z]+[^s]s", verb):
        return f"does not {verb[:-1]}{tail}"
    return f"not: {rule.describe}"


# --- the verdict -----------------------------------------------------------------------------


def score(campaign: Campaign, answers: Mapping[str, AnswerValue] | Iterable[Answer]) -> Score:
    """Score the answers given so far (rules in the module docstring)."""
    given = _answers_map(answers)
    rules = campaign.scoring.rules
    by_id = {r.id: r for r in rules}
    truth = {r.id: evaluate_rule(r, given) for r in rules}
    hot = campaign.scoring.hot

    points = sum(r.points for r in rules if truth[r.id] is Truth.TRUE)
    unknown_up = sum(r.points for r in rules if truth[r.id] is Truth.UNKNOWN and r.points > 0)
    unknown_down = sum(r.points for r in rules if truth[r.id] is Truth.UNKNOWN and r.points < 0)
    max_points = sum(r.points for r in rules if r.points > 0)

    all_true = all(truth[rid] is Truth.TRUE for rid in hot.all)
    any_true = not hot.any or any(truth[rid] is Truth.TRUE for rid in hot.any)
    points_sure = points + unknown_down >= hot.min_points

    failed_all = [by_id[rid] for rid in hot.all if truth[rid] is Truth.FALSE]
    any_failed = bool(hot.any) and all(truth[rid] is Truth.FALSE for rid in hot.any)
    points_out_of_reach = points + unknown_up < hot.min_points

    def answered(rule: Rule) -> str:
        value = format_answer(campaign.question(rule.question), given.get(rule.question))
        return f"{describe_not(rule)} ({rule.question} = {value})"

    if all_true and any_true and points_sure:
        held = [describe(r) for r in rules if truth[r.id] is Truth.TRUE and r.points >= 0]
        reason = "hot: " + (", ".join(held) if held else "the hot rule holds")
        if hot.min_points:
            reason += f" ({points} of {max_points} points, {hot.min_points} needed)"
        return Score(verdict=Verdict.HOT, points=points, max_points=max_points, reasons=[reason], missing=[])

    if failed_all or any_failed or points_out_of_reach:
        why = [answered(r) for r in failed_all]
        if any_failed:
            why.append("none of: " + "; ".join(answered(by_id[rid]) for rid in hot.any))
        if points_out_of_reach and not why:
            why.append(f"at most {points + unknown_up} of {hot.min_points} points needed")
        return Score(
            verdict=Verdict.COLD, points=points, max_points=max_points, reasons=["cold: " + ", ".join(why)]
        )

    # Undecided: the unanswered questions whose rules can still change the verdict.
    matters: set[str] = set()
    matters.update(by_id[rid].question for rid in hot.all if truth[rid] is Truth.UNKNOWN)
    if not any_true:
        matters.update(by_id[rid].question for rid in hot.any if truth[rid] is Truth.UNKNOWN)
    if not points_sure:
        matters.update(r.question for r in rules if truth[r.id] is Truth.UNKNOWN and r.points != 0)
    missing = [q.id for q in campaign.questions if q.id in matters and q.id not in given]
    so_far = [describe(r) for r in rules if truth[r.id] is Truth.TRUE]
    reason = "undecided: "
    reason += f"so far {', '.join(so_far)}; " if so_far else ""
    reason += f"still to hear: {', '.join(missing)}" if missing else "nothing left that could decide it"
    return Score(
        verdict=Verdict.UNDECIDED, points=points, max_points=max_points, reasons=[reason], missing=missing
    )
