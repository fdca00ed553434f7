"""The rule-based interviewer at text level: what it records, when it ends, what it says.

`TextBridge` plays the bridge's part without audio: it says the opening, turns record_answer into
a typed answer with leadqual.normalise (as the bridge does), answers `continue` with the next
unanswered question or `wrap_up` when the campaign says the call is over, and `wrap_up` for
end_call. Everything the interviewer does is kept for the assertions.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.engines.base import SessionContext, ToolCall
from bridge.engines.cascade import RuleInterviewer, Speak, detect_end_intent, extract_answer
from leadqual.campaign import AnswerType, Campaign, Question
from leadqual.models import Answer, EndReason, Lead
from leadqual.normalise import normalise_answer

NOW = datetime(2025, 6, 4, 7, 0, tzinfo=UTC)  # Q2: "next quarter" starts in July, 1 month away
LEAD = Lead(lead_id="L1", phone="+254711000001", name="Jane Wanjiru", company="Globex", opt_in=True)


def opening(campaign: Campaign, lead: Lead = LEAD, first: int = 0) -> str:
    return f"{campaign.render(campaign.lines.greeting, lead)} {campaign.render(campaign.questions[first].ask, lead)}"


class TextBridge:
    def __init__(self, campaign: Campaign, answers: tuple[Answer, ...] = (), **kwargs: Any) -> None:
        self.campaign = campaign
        self.dialog = RuleInterviewer(now=lambda: NOW, **kwargs)
        self.answers: dict[str, Any] = {a.question_id: a.value for a in answers}
        self.calls: list[ToolCall] = []
        self.said: list[str] = []
        self.ended: str | None = None
        self.wrapped = False
        self.result_override: dict[str, Any] | None = None
        self.ctx = SessionContext(
            session_id="HD_test",
            campaign=campaign,
            lead=LEAD,
            instructions="",
            tools=(),
            answers=answers,
        )

    async def open(self) -> None:
        await self.dialog.start(self.ctx)
        done = {q.id for q in self.campaign.questions if q.id in self.answers}
        first = next(i for i, q in enumerate(self.campaign.questions) if q.id not in done)
        await self.bridge_says(opening(self.campaign, first=first))

    async def bridge_says(self, text: str) -> None:
        self.said.append(text)
        await self.dialog.on_agent_said(text)

    async def lead(self, text: str, *, overlapped: bool = False) -> list[str]:
        """The lead says `text`; returns what the agent said in reply."""
        before = len(self.said)
        await self._run(await self.dialog.on_user_text(text, overlapped=overlapped))
        return self.said[before:]

    async def _run(self, actions: list[Any]) -> None:
        for action in actions:
            if isinstance(action, Speak):
                self.said.append(action.text)
                continue
            assert isinstance(action, ToolCall)
            self.calls.append(action)
            result = self._result(action)
            await self._run(await self.dialog.on_tool_result(action, result))

    def _result(self, call: ToolCall) -> dict[str, Any]:
        if self.result_override is not None:
            result, self.result_override = self.result_override, None
            return result
        if call.name == "end_call":
            self.ended = call.args["reason"]
            self.wrapped = True
            return {"status": "wrap_up"}
        question = self.campaign.question(call.args["question_id"])
        value = normalise_answer(question, call.args["value"], now=NOW)
        self.answers[question.id] = value
        if question.end_when is not None and value == question.end_when.equals:
            self.ended = question.end_when.reason.value
            self.wrapped = True
            return {"status": "wrap_up"}
        todo = [q for q in self.campaign.questions if q.id not in self.answers]
        if not todo:
            self.wrapped = True
            return {"status": "wrap_up"}
        return {
            "status": "continue",
            "next_question_id": todo[0].id,
            "next_question": self.campaign.render(todo[0].ask, LEAD),
        }

    def recorded(self) -> dict[str, Any]:
        return {c.args["question_id"]: c.args["value"] for c in self.calls if c.name == "record_answer"}


async def started(campaign: Campaign, **kwargs: Any) -> TextBridge:
    bridge = TextBridge(campaign, **kwargs)
    await bridge.open()
    return bridge


# ── whole interviews ──────────────────────────────────────────────────────────────────────────


async def test_happy_path_records_every_answer_in_order_with_quotes(example_campaign: Campaign) -> None:
    bridge = await started(example_campaign)
    replies = ["Yes, go ahead.", "Yeah, that's me.", "Give or take forty.", "Early next quarter."]
    spoken = []
    for reply in replies:
        spoken.append(await bridge.lead(reply))
    assert [(c.name, c.args) for c in bridge.calls] == [
        ("record_answer", {"question_id": "good_time", "value": "yes", "quote": "Yes, go ahead."}),
        ("record_answer", {"question_id": "decision_maker", "value": "yes", "quote": "Yeah, that's me."}),
        ("record_answer", {"question_id": "seats", "value": "40", "quote": "Give or take forty."}),
        ("record_answer", {"question_id": "timeline", "value": "1", "quote": "Early next quarter."}),
    ]
    assert bridge.answers == {"good_time": True, "decision_maker": True, "seats": 40, "timeline": 1}
    # Each continue speaks the next question (with a short acknowledgement); wrap_up stays silent.
    assert "Are you the person who makes buying decisions for software at Globex?" in spoken[0][0]
    assert "Roughly how many seats" in spoken[1][0]
    assert "when would you want" in spoken[2][0]
    assert spoken[3] == []
    assert bridge.wrapped
    assert bridge.dialog.ended
    assert len({c.call_id for c in bridge.calls}) == 4


async def test_who_is_this_is_answered_and_the_question_asked_again(example_campaign: Campaign) -> None:
    bridge = await started(example_campaign)
    reply = await bridge.lead("Sorry, who is this?")
    assert bridge.calls == []
    assert len(reply) == 1
    assert "Amina" in reply[0]
    assert "Acme CRM" in reply[0]
    assert reply[0].endswith("Is now a good time for three quick questions?")
    await bridge.lead("Oh okay. Sure, go ahead.")
    assert bridge.recorded() == {"good_time": "yes"}


@pytest.mark.parametrize(
    ("aside", "expect"),
    [
        ("Are you a robot?", "AI assistant"),
        ("What's this about?", "quick call"),
        ("Sorry, can you repeat that?", "Sure."),
        ("Pardon?", "Sure."),
        ("Who am I speaking with?", "Amina"),
    ],
)
async def test_asides_get_an_answer_and_a_re_ask(example_campaign: Campaign, aside: str, expect: str) -> None:
    bridge = await started(example_campaign)
    await bridge.lead("Yes.")
    reply = await bridge.lead(aside)
    assert len(bridge.calls) == 1  # only good_time
    assert expect in reply[0]
    assert "buying decisions" in reply[0]


async def test_an_unclear_answer_is_asked_once_more_in_other_words_then_skipped(
    example_campaign: Campaign,
) -> None:
    bridge = await started(example_campaign)
    await bridge.lead("Yes, go ahead.")
    await bridge.lead("I am.")
    first = await bridge.lead("Hmm, hard to say really.")
    assert len(first) == 1
    assert "rough number" in first[0]
    assert "seats" in first[0]
    second = await bridge.lead("Honestly I couldn't tell you.")
    assert second == ["No problem, let's move on. And when would you want to have something in place?"]
    assert "seats" not in bridge.recorded()
    await bridge.lead("In about two months.")
    assert bridge.recorded() == {"good_time": "yes", "decision_maker": "yes", "timeline": "2"}
    # The bridge asks for the skipped question again: one more try, then nothing left → end.
    assert "earlier question" in bridge.said[-1]
    assert "seats" in bridge.said[-1]
    await bridge.lead("No idea, sorry.")
    assert bridge.calls[-1].args == {"reason": "not_interested"}
    assert bridge.dialog.ended


async def test_opt_out_mid_interview_ends_the_call(example_campaign: Campaign) -> None:
    bridge = await started(example_campaign)
    await bridge.lead("Sure.")
    await bridge.lead("Yes I make those decisions.")
    reply = await bridge.lead("You know what, please take me off your list and stop calling.")
    assert reply == []
    assert bridge.calls[-1].name == "end_call"
    assert bridge.calls[-1].args == {"reason": "opt_out"}
    assert bridge.ended == "opt_out"
    # Nothing more is said or recorded after the end, whatever the lead says.
    assert await bridge.lead("Forty seats.") == []
    assert len(bridge.calls) == 3


async def test_voicemail_greeting_as_first_utterance(example_campaign: Campaign) -> None:
    bridge = await started(example_campaign)
    await bridge.lead(
        "Hi, you've reached Jane. I'm not available right now, please leave a message after the tone."
    )
    assert [(c.name, c.args) for c in bridge.calls] == [("end_call", {"reason": "voicemail"})]


async def test_voicemail_is_spotted_from_a_partial_transcript(example_campaign: Campaign) -> None:
    bridge = await started(example_campaign)
    actions = await bridge.dialog.on_partial_text("Hi, you have reached the voicemail of")
    assert len(actions) == 1
    assert isinstance(actions[0], ToolCall)
    assert actions[0].args == {"reason": "voicemail"}
    assert await bridge.dialog.on_user_text("Jane. Please leave a message after the beep.") == []


async def test_partials_never_end_a_call_that_has_started_answering(example_campaign: Campaign) -> None:
    bridge = await started(example_campaign)
    await bridge.lead("Yes.")
    assert await bridge.dialog.on_partial_text("leave a message") == []


async def test_not_a_good_time_answers_the_good_time_question(example_campaign: Campaign) -> None:
    # The campaign ends on good_time == false with callback_requested: record it, let it end.
    bridge = await started(example_campaign)
    await bridge.lead("I'm busy right now, can you call me back tomorrow?")
    assert [(c.name, c.args["value"]) for c in bridge.calls] == [("record_answer", "no")]
    assert bridge.ended == "callback_requested"


async def test_callback_later_in_the_call_is_end_call(example_campaign: Campaign) -> None:
    bridge = await started(example_campaign)
    await bridge.lead("Yes.")
    await bridge.lead("Actually I'm heading into a meeting, call me back later.")
    assert bridge.calls[-1].name == "end_call"
    assert bridge.calls[-1].args == {"reason": "callback_requested"}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Not interested, thanks.", "not_interested"),
        ("Wrong number.", "wrong_person"),
        ("There's no Jane here.", "wrong_person"),
        ("Sorry, I'm not Jane.", "wrong_person"),
        ("Don't call me again.", "opt_out"),
        ("Remove me from your list.", "opt_out"),
        ("This is a bad time.", "callback_requested"),
    ],
)
async def test_end_intents_at_the_second_question(example_campaign: Campaign, text: str, reason: str) -> None:
    bridge = await started(example_campaign)
    await bridge.lead("Yes.")
    await bridge.lead(text)
    assert bridge.calls[-1].name == "end_call"
    assert bridge.calls[-1].args == {"reason": reason}


async def test_still_there_nudge_then_yes_does_not_answer_the_question(example_campaign: Campaign) -> None:
    bridge = await started(example_campaign)
    await bridge.lead("Yes, go ahead.")
    await bridge.bridge_says("Sorry, are you still there?")
    reply = await bridge.lead("Yes, I'm here.")
    assert bridge.recorded() == {"good_time": "yes"}
    assert "buying decisions" in reply[0]
    await bridge.lead("Yes, that's me.")
    assert bridge.recorded() == {"good_time": "yes", "decision_maker": "yes"}


async def test_hello_over_the_greeting_is_ignored_and_after_it_answered(example_campaign: Campaign) -> None:
    bridge = await started(example_campaign)
    assert await bridge.lead("Hello?", overlapped=True) == []
    reply = await bridge.lead("Hello?")
    assert reply[0].startswith("Hi, yes, I'm here.")
    assert "good time" in reply[0]
    assert await bridge.lead("Umm...") == []
    assert bridge.calls == []


async def test_overlapped_noise_is_not_an_unclear_answer(example_campaign: Campaign) -> None:
    bridge = await started(example_campaign)
    assert await bridge.lead("the the", overlapped=True) == []
    reply = await bridge.lead("Yes.", overlapped=True)
    assert bridge.recorded() == {"good_time": "yes"}  # an answer counts even over the agent
    assert "buying decisions" in reply[0]


async def test_an_error_result_re_asks(example_campaign: Campaign) -> None:
    bridge = await started(example_campaign)
    bridge.result_override = {"status": "error", "error": "could not read the answer"}
    reply = await bridge.lead("Yes.")
    assert "yes or no" in reply[0]
    await bridge.lead("Yes.")
    assert bridge.answers == {"good_time": True}


async def test_a_resumed_call_starts_at_the_first_open_question(example_campaign: Campaign) -> None:
    done = (Answer(question_id="good_time", value=True), Answer(question_id="decision_maker", value=True))
    bridge = await started(example_campaign, answers=done)
    assert bridge.dialog.pending_question is not None
    assert bridge.dialog.pending_question.id == "seats"
    await bridge.lead("About 25.")
    assert bridge.recorded() == {"seats": "25"}


async def test_choice_and_text_questions() -> None:
    from leadqual.campaign import parse_campaign

    data = example_campaign_dict()
    data["questions"] = [
        {
            "id": "plan",
            "ask": "Which plan are you on?",
            "type": "choice",
            "choices": ["Basic", "Pro", "Enterprise"],
        },
        {"id": "notes", "ask": "Anything else we should know?", "type": "text"},
    ]
    data["scoring"] = {
        "rules": [{"id": "pro", "question": "plan", "op": "eq", "value": "Pro"}],
        "hot": {"all": ["pro"]},
    }
    campaign = parse_campaign(data)
    bridge = await started(campaign)
    reply = await bridge.lead("Hmm.")
    assert reply == []
    reply = await bridge.lead("I really couldn't say.")
    assert "Basic, Pro or Enterprise" in reply[0]
    await bridge.lead("We're on the pro plan.")
    await bridge.lead("We also use spreadsheets a lot.")
    assert bridge.recorded() == {"plan": "Pro", "notes": "We also use spreadsheets a lot."}


def example_campaign_dict() -> dict[str, Any]:
    import yaml

    from leadqual.campaign import builtin_campaign_path

    data: dict[str, Any] = yaml.safe_load(builtin_campaign_path().read_text())
    return data


# ── phrasings ─────────────────────────────────────────────────────────────────────────────────

YES_NO = Question(id="q", ask="Are you the decision maker?", type=AnswerType.YES_NO)
NUMBER = Question(id="q", ask="How many seats?", type=AnswerType.NUMBER)
TIMELINE = Question(id="q", ask="When?", type=AnswerType.TIMELINE)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("yeah that's me", "yes"),
        ("Yes, I am.", "yes"),
        ("That's right.", "yes"),
        ("Correct.", "yes"),
        ("Sure, fire away.", "yes"),
        ("Fire away.", "yes"),
        ("I've got a few minutes.", "yes"),
        ("Yep, I make those calls.", "yes"),
        ("No, that would be my boss.", "no"),
        ("That would be my manager.", "no"),
        ("Not really.", "no"),
        ("Nope.", "no"),
        ("Someone else handles that.", "no"),
        ("I'm not sure.", None),
        ("Well, kind of.", None),
        ("Purple.", None),
    ],
)
def test_yes_no_phrasings(text: str, value: str | None) -> None:
    assert extract_answer(YES_NO, text, NOW) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("give or take forty", "40"),
        ("Give or take 40.", "40"),
        ("About twenty-five.", "25"),
        ("a dozen or so", "12"),
        ("between ten and twenty", "15"),
        ("Just me.", "1"),
        ("We'd need 40 seats.", "40"),
        ("Probably around a hundred and fifty.", "150"),
        ("No idea.", None),
    ],
)
def test_number_phrasings(text: str, value: str | None) -> None:
    assert extract_answer(NUMBER, text, NOW) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("early next quarter", "1"),
        ("Early next quarter.", "1"),
        ("In two months.", "2"),
        ("ASAP.", "0"),
        ("Right away.", "0"),
        ("Sometime next year.", "7"),
        ("By September.", "3"),
        ("Not sure yet.", "99"),
        ("Blue.", None),
    ],
)
def test_timeline_phrasings(text: str, value: str | None) -> None:
    assert extract_answer(TIMELINE, text, NOW) == value


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Please take me off your list.", EndReason.OPT_OUT),
        ("stop calling me", EndReason.OPT_OUT),
        ("Don't call me again.", EndReason.OPT_OUT),
        ("remove me", EndReason.OPT_OUT),
        ("Hi, you've reached Jane, leave a message after the tone.", EndReason.VOICEMAIL),
        ("The person you are calling is not available.", EndReason.VOICEMAIL),
        ("Please record your message after the beep.", EndReason.VOICEMAIL),
        ("Wrong number, mate.", EndReason.WRONG_PERSON),
        ("There's no Jane here.", EndReason.WRONG_PERSON),
        ("Call me back later.", EndReason.CALLBACK_REQUESTED),
        ("I'm busy right now.", EndReason.CALLBACK_REQUESTED),
        ("It's not a good time.", EndReason.CALLBACK_REQUESTED),
        ("I'm not interested.", EndReason.NOT_INTERESTED),
        ("Yes, that's me.", None),
        ("About forty seats.", None),
        ("Early next quarter.", None),
        ("We're a busy team of forty.", None),
    ],
)
def test_end_intents(text: str, reason: EndReason | None) -> None:
    assert detect_end_intent(text, lead=LEAD) == reason


def test_voicemail_phrases_only_count_in_the_voicemail_window() -> None:
    assert detect_end_intent("leave a message", voicemail_window=False) is None
