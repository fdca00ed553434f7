"""The two tools the model may call, and what the bridge does with them.

`record_answer(question_id, value, quote)` turns the model's reading of an answer into the
question's type (leadqual.normalise), and scores everything answered so far (leadqual.scoring):
the verdict is our deterministic code's, not the model's. `end_call(reason)` ends the call early.
Results follow the cross-team contract: `{"status": "continue", "next_question_id", "next_question"}`,
`{"status": "wrap_up"}` or `{"status": "error", "error": ...}`.

`AnswerBook` holds one call's answers and is pure; the conversation saves each answer to the
store between `read_answer` and `add` so that a crash loses nothing already said.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from bridge.engines.base import ToolSpec
from bridge.ports import Normaliser, Scorer
from bridge.prompt import unanswered
from leadqual.campaign import Campaign, Question
from leadqual.errors import AnswerError
from leadqual.models import Answer, EndReason, Lead, Score, Verdict

RECORD_ANSWER = "record_answer"
END_CALL = "end_call"

CONTINUE = "continue"
WRAP_UP = "wrap_up"
ERROR = "error"


def tool_specs(campaign: Campaign) -> tuple[ToolSpec, ...]:
    """The tools for one campaign; `question_id` is limited to the campaign's question ids."""
    record = ToolSpec(
        name=RECORD_ANSWER,
        description=(
            "Record the lead's answer to one question as soon as they give it. "
            "Use only what the lead actually said; never guess."
        ),
        parameters={
            "type": "object",
            "properties": {
                "question_id": {
                    "type": "string",
                    "enum": [q.id for q in campaign.questions],
                    "description": "Which question this answers.",
                },
                # A string on purpose: every realtime API accepts it, and the bridge normalises
                # "yes", "about forty", "early next quarter" into the question's type itself.
                "value": {
                    "type": "string",
                    "description": "The answer in short form, e.g. 'yes', '25', 'in two months'.",
                },
                "quote": {"type": "string", "description": "The lead's own words, verbatim."},
            },
            "required": ["question_id", "value", "quote"],
        },
    )
    end = ToolSpec(
        name=END_CALL,
        description=(
            "End the call: the lead is not interested, is the wrong person, asks for a callback, "
            "wants no more calls, or this is a voicemail or answering machine. Say nothing after."
        ),
        parameters={
            "type": "object",
            "properties": {"reason": {"type": "string", "enum": [r.value for r in EndReason]}},
            "required": ["reason"],
        },
    )
    return (record, end)


class DecisionKind(StrEnum):
    HOT = "hot"
    COLD = "cold"
    END = "end"  # end_call, or a question's end_when


@dataclass(frozen=True)
class Decision:
    """How the conversation ends, decided by our code from the answers or by end_call."""

    kind: DecisionKind
    score: Score | None = None
    reason: EndReason | None = None
    detail: str = ""


@dataclass(frozen=True)
class ToolResult:
    result: dict[str, Any]
    decision: Decision | None = None


def error(message: str) -> ToolResult:
    return ToolResult({"status": ERROR, "error": message})


class AnswerBook:
    """One call's answers, the next question and the verdict."""

    def __init__(
        self,
        campaign: Campaign,
        lead: Lead,
        answers: Iterable[Answer],
        *,
        normalise: Normaliser,
        score: Scorer,
    ) -> None:
        self.campaign = campaign
        self.lead = lead
        self._normalise = normalise
        self._score = score
        self.answers: dict[str, Answer] = {a.question_id: a for a in answers}
        self.last_score: Score | None = None

    def read_answer(self, args: dict[str, Any], now: datetime | None = None) -> Answer | ToolResult:
        """Validate and normalise a record_answer call: an Answer to save, or an error result."""
        qid = args.get("question_id")
        if not isinstance(qid, str):
            return error("question_id is required")
        try:
            question: Question = self.campaign.question(qid)
        except KeyError:
            ids = ", ".join(q.id for q in self.campaign.questions)
            return error(f"unknown question_id {qid!r}; use one of: {ids}")
        if "value" not in args:
            return error("value is required")
        raw = args["value"]
        quote = args.get("quote")
        quote_text = quote if isinstance(quote, str) else ("" if raw is None else str(raw))
        try:
            value = self._normalise(question, raw)
        except AnswerError as exc:
            return error(f"could not read the answer to {qid}: {exc.reason}. Ask again in other words.")
        return Answer(question_id=qid, value=value, quote=quote_text, at=now or datetime.now(UTC))

    def add(self, answer: Answer) -> ToolResult:
        """Take a saved answer; score; say whether to go on or wrap up."""
        self.answers[answer.question_id] = answer
        question = self.campaign.question(answer.question_id)
        score = self._score(self.campaign, list(self.answers.values()))
        self.last_score = score
        if question.end_when is not None and answer.value == question.end_when.equals:
            reason = question.end_when.reason
            return ToolResult({"status": WRAP_UP}, Decision(DecisionKind.END, score, reason, reason.value))
        if score.verdict is Verdict.HOT:
            return ToolResult({"status": WRAP_UP}, Decision(DecisionKind.HOT, score, detail="qualified"))
        if score.verdict is Verdict.COLD:
            return ToolResult({"status": WRAP_UP}, Decision(DecisionKind.COLD, score, detail="not qualified"))
        todo = unanswered(self.campaign, self.answers.values())
        if not todo:
            # Undecided with nothing left to ask (optional answers missing): not a hot lead.
            return ToolResult({"status": WRAP_UP}, Decision(DecisionKind.COLD, score, detail="undecided"))
        nxt = todo[0]
        return ToolResult(
            {
                "status": CONTINUE,
                "next_question_id": nxt.id,
                "next_question": self.campaign.render(nxt.ask, self.lead),
            }
        )

    def end_call(self, args: dict[str, Any]) -> ToolResult:
        try:
            reason = EndReason(str(args.get("reason", "")))
        except ValueError:
            return error("reason must be one of: " + ", ".join(r.value for r in EndReason))
        return ToolResult({"status": WRAP_UP}, Decision(DecisionKind.END, self.score(), reason, reason.value))

    def score(self) -> Score:
        if self.last_score is None:
            self.last_score = self._score(self.campaign, list(self.answers.values()))
        return self.last_score
