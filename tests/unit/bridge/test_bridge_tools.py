"""Tool schemas, the answer book's decisions (real normalise + scoring), prompt and transfer texts."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bridge.prompt import build_instructions, opening_line, unanswered
from bridge.tools import AnswerBook, DecisionKind, tool_specs
from bridge.transfer import briefing, pick_rep, transfer_key, transfer_summary
from leadqual.campaign import Campaign, TransferStrategy
from leadqual.models import Answer, EndReason, Lead, Verdict
from leadqual.normalise import normalise_answer
from leadqual.scoring import score

LEAD = Lead(lead_id="L1", phone="+254711000111", name="Wanjiku Kamau", company="Duka Ltd", opt_in=True)


def book(campaign: Campaign, answers: list[Answer] | None = None) -> AnswerBook:
    return AnswerBook(campaign, LEAD, answers or [], normalise=normalise_answer, score=score)


def test_tool_schemas_match_the_contract(example_campaign: Campaign) -> None:
    record, end = tool_specs(example_campaign)
    assert record.name == "record_answer"
    assert record.parameters["required"] == ["question_id", "value", "quote"]
    assert record.parameters["properties"]["question_id"]["enum"] == [
        "good_time",
        "decision_maker",
        "seats",
        "timeline",
    ]
    assert end.name == "end_call"
    assert end.parameters["required"] == ["reason"]
    assert set(end.parameters["properties"]["reason"]["enum"]) == {r.value for r in EndReason}


def test_answers_continue_then_hot(example_campaign: Campaign) -> None:
    b = book(example_campaign)
    steps = [
        ("good_time", "yes, go ahead", "continue", "decision_maker"),
        ("decision_maker", "yes", "continue", "seats"),
        ("seats", "about forty", "continue", "timeline"),
    ]
    for qid, raw, status, next_id in steps:
        answer = b.read_answer({"question_id": qid, "value": raw, "quote": raw})
        assert isinstance(answer, Answer)
        result = b.add(answer)
        assert result.result["status"] == status
        assert result.result["next_question_id"] == next_id
        assert result.result["next_question"]
        assert result.decision is None
    assert b.answers["seats"].value == 40
    answer = b.read_answer({"question_id": "timeline", "value": 2, "quote": "in two months"})
    assert isinstance(answer, Answer)
    result = b.add(answer)
    assert result.result == {"status": "wrap_up"}
    assert result.decision is not None
    assert result.decision.kind is DecisionKind.HOT
    assert result.decision.score is not None
    assert result.decision.score.verdict is Verdict.HOT


def test_next_question_is_rendered_for_the_lead(example_campaign: Campaign) -> None:
    b = book(example_campaign)
    answer = b.read_answer({"question_id": "good_time", "value": "yes", "quote": "sure"})
    assert isinstance(answer, Answer)
    assert "Duka Ltd" in b.add(answer).result["next_question"]


def test_cold_as_soon_as_hot_is_out_of_reach(example_campaign: Campaign) -> None:
    b = book(example_campaign, [Answer(question_id="good_time", value=True)])
    answer = b.read_answer({"question_id": "decision_maker", "value": "no, that's my boss", "quote": "no"})
    assert isinstance(answer, Answer)
    result = b.add(answer)
    assert result.result == {"status": "wrap_up"}
    assert result.decision is not None
    assert result.decision.kind is DecisionKind.COLD


def test_end_when_answer_ends_the_call(example_campaign: Campaign) -> None:
    b = book(example_campaign)
    answer = b.read_answer({"question_id": "good_time", "value": "no, I'm driving", "quote": "no"})
    assert isinstance(answer, Answer)
    result = b.add(answer)
    assert result.decision is not None
    assert result.decision.kind is DecisionKind.END
    assert result.decision.reason is EndReason.CALLBACK_REQUESTED


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"question_id": "budget", "value": "1", "quote": ""}, "unknown question_id"),
        ({"value": "1"}, "question_id is required"),
        ({"question_id": "seats", "quote": "x"}, "value is required"),
        (
            {"question_id": "seats", "value": "no idea honestly", "quote": "no idea honestly"},
            "could not read",
        ),
    ],
)
def test_bad_record_answer_calls_return_errors(
    example_campaign: Campaign, args: dict[str, str], needle: str
) -> None:
    result = book(example_campaign).read_answer(args)
    assert not isinstance(result, Answer)
    assert result.result["status"] == "error"
    assert needle in result.result["error"]


def test_end_call_reasons(example_campaign: Campaign) -> None:
    b = book(example_campaign)
    result = b.end_call({"reason": "opt_out"})
    assert result.result == {"status": "wrap_up"}
    assert result.decision is not None
    assert result.decision.reason is EndReason.OPT_OUT
    assert b.end_call({"reason": "bored"}).result["status"] == "error"


def test_opening_is_greeting_with_disclosure_then_first_question(example_campaign: Campaign) -> None:
    line = opening_line(example_campaign, LEAD)
    assert line.startswith("Hi Wanjiku, this is Amina from Acme CRM.")
    assert example_campaign.disclosure in line
    assert line.endswith("Is now a good time for three quick questions?")
    # A resumed call asks the first question still open.
    resumed = opening_line(example_campaign, LEAD, [Answer(question_id="good_time", value=True)])
    assert resumed.endswith("software at Duka Ltd?")


def test_disclosure_is_added_when_the_greeting_lacks_it(example_campaign: Campaign) -> None:
    plain = example_campaign.model_copy(
        update={"lines": example_campaign.lines.model_copy(update={"greeting": "Hello {first_name}."})}
    )
    assert opening_line(plain, LEAD).startswith(f"Hello Wanjiku. {plain.disclosure} Is now")


def test_instructions_carry_persona_questions_and_rules(example_campaign: Campaign) -> None:
    text = build_instructions(example_campaign, LEAD, [Answer(question_id="good_time", value=True)])
    for needle in (
        "You are Amina",
        "Acme CRM",
        "one question at a time",
        "record_answer",
        "quote",
        "end_call",
        "never guess or invent",
        "short, natural sentences",
        "seats:",
        "good_time: True (already answered",
        "voicemail",
    ):
        assert needle in text, needle
    assert [q.id for q in unanswered(example_campaign, [Answer(question_id="seats", value=3)])] == [
        "good_time",
        "decision_maker",
        "timeline",
    ]


def test_rep_briefing_and_summary(example_campaign: Campaign) -> None:
    answers = [
        Answer(question_id="decision_maker", value=True, quote="yes I decide"),
        Answer(question_id="seats", value=25, quote="twenty five"),
        Answer(question_id="timeline", value=1, quote="next month"),
    ]
    s = score(example_campaign, answers)
    msg = briefing(
        session_id="HD_1",
        campaign=example_campaign,
        lead=LEAD,
        attempt=2,
        answers=answers,
        score=s,
        rep="+254711999000",
        now=datetime(2025, 1, 1, tzinfo=UTC),
    )
    assert msg["type"] == "lead.hot"
    assert msg["session_id"] == "HD_1"
    assert msg["lead"]["name"] == "Wanjiku Kamau"
    assert msg["answers"][1] == {
        "question_id": "seats",
        "question": "Roughly how many seats would your team need?",
        "value": 25,
        "quote": "twenty five",
    }
    assert msg["score"]["verdict"] == "hot"
    assert msg["score"]["reasons"] == s.reasons
    summary = transfer_summary(LEAD, s)
    assert summary.startswith(
        "I'm connecting you with Wanjiku Kamau from Duka Ltd, who makes buying decisions"
    )
    assert "hot:" not in summary
    assert transfer_key("L1", 2) == "lq-L1-2-transfer"


def test_rep_choice(example_campaign: Campaign) -> None:
    assert pick_rep(example_campaign, "anyone") == "+254711999000"
    reps = ["+254711000001", "+254711000002", "+254711000003"]
    barge = example_campaign.model_copy(
        update={
            "transfer": example_campaign.transfer.model_copy(
                update={"strategy": TransferStrategy.SUPERVISE_BARGE, "reps": reps}
            )
        }
    )
    picked = {pick_rep(barge, f"L{i}") for i in range(50)}
    assert picked == set(reps)  # spread over the reps
    assert pick_rep(barge, "L7") == pick_rep(barge, "L7")  # and stable per lead
