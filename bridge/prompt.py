"""The agent's instructions and fixed lines, built from the campaign and the lead.

The model asks and listens; our code decides (scoring, closing, transfer). So the instructions
keep the model to one question at a time, make it record every answer through `record_answer`
with the lead's own words, and hand every ending to `end_call` — it never invents answers and
never says goodbye on its own.
"""

from __future__ import annotations

from collections.abc import Iterable

from leadqual.campaign import AnswerType, Campaign, Question
from leadqual.models import Answer, EndReason, Lead

NUDGE_LINE = "Sorry, are you still there?"

_TYPE_HINTS = {
    AnswerType.YES_NO: "yes or no",
    AnswerType.NUMBER: "a number",
    AnswerType.CHOICE: "one of: {choices}",
    AnswerType.TIMELINE: "when, in their words (e.g. 'next month', 'in two quarters')",
    AnswerType.TEXT: "free text",
}


def unanswered(campaign: Campaign, answers: Iterable[Answer]) -> list[Question]:
    """Questions still to ask, in campaign order."""
    done = {a.question_id for a in answers}
    return [q for q in campaign.questions if q.id not in done]


def opening_line(campaign: Campaign, lead: Lead, answers: Iterable[Answer] = ()) -> str:
    """Greeting (which carries the disclosure) + the first question still to ask.

    On a fresh call that is the campaign's first question, as the engines assume."""
    greeting = campaign.render(campaign.lines.greeting, lead)
    if campaign.disclosure not in greeting:
        greeting = f"{greeting} {campaign.disclosure}"
    todo = unanswered(campaign, answers)
    first = todo[0] if todo else campaign.questions[0]
    return f"{greeting} {campaign.render(first.ask, lead)}"


def _describe(question: Question, campaign: Campaign, lead: Lead) -> str:
    hint = _TYPE_HINTS[question.type].format(choices=", ".join(question.choices))
    flags = "" if question.required else " (optional)"
    return f'- {question.id}: "{campaign.render(question.ask, lead)}" — answer is {hint}{flags}'


def build_instructions(campaign: Campaign, lead: Lead, answers: Iterable[Answer] = ()) -> str:
    answers = list(answers)
    agent = campaign.agent
    who = lead.first_name or "the person"
    company = f" at {lead.company}" if lead.company else ""
    questions = "\n".join(_describe(q, campaign, lead) for q in campaign.questions)
    known = "".join(f"\n- {a.question_id}: {a.value!r} (already answered, do not ask again)" for a in answers)
    reasons = ", ".join(r.value for r in EndReason)
    return f"""You are {agent.name}, calling on behalf of {agent.company}. Language: {agent.language}.
You are on a phone call with {who}{company}. They agreed to be contacted.
You have already greeted them, said "{campaign.disclosure}" and asked the first question.

Your job: ask these questions, in this order, and record each answer.
{questions}{known}

Rules:
- Ask one question at a time, then stop and listen.
- Speak in short, natural sentences, like a friendly person on the phone. No lists, no jargon.
- When the lead answers a question, call record_answer right away with the question_id, the value
  and quote = the lead's own words. Record only what the lead actually said; never guess or invent
  an answer. If an answer is unclear, ask once more in other words.
- The record_answer result tells you what to do next: "continue" means ask next_question;
  "wrap_up" means say nothing more — the system speaks the closing line.
- If the lead is not interested, is the wrong person, asks to be called back later, wants no more
  calls, or you reach a voicemail or answering machine, call end_call with the reason ({reasons})
  and say nothing more.
- If asked, say honestly that you are an AI assistant. Do not make promises about prices or terms.
- Never say goodbye or end the call yourself; the tools do that."""
