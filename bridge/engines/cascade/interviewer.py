"""The dialog part of the cascade: what to say and which tools to call, given what the lead said.

`Dialog` is the seam: the engine feeds it the lead's utterances (text), the lines the bridge made
the agent say, and the results of the tool calls it made; it answers with `Speak` and `ToolCall`
actions, exactly as a realtime model would. Two implementations:

- `RuleInterviewer` (here): deterministic, follows the campaign. The opening (greeting + first
  question) is spoken by the bridge and counts as asking the first question. Each utterance is
  checked for intents that end the call (opt-out, voicemail, wrong person, callback, not
  interested), then for asides (who is this? are you a robot? say again?), then read as an
  answer to the question pending with `leadqual.normalise`. An unclear answer is asked once
  more in other words; a second unclear one moves on and records nothing.
- `LLMDialog` (http_parts.py): an OpenAI-compatible chat model with the same tools.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from bridge.engines.base import SessionContext, ToolCall
from leadqual.campaign import AnswerType, Campaign, Question
from leadqual.models import EndReason, Lead
from leadqual.normalise import parse_choice, parse_number, parse_timeline_months, parse_yes_no

RECORD_ANSWER = "record_answer"
END_CALL = "end_call"


@dataclass(frozen=True)
class Speak:
    """Say this (the agent's words for one turn)."""

    text: str


DialogAction = Speak | ToolCall


class Dialog(Protocol):
    """One call's conversation logic. Methods are called one at a time, in event order."""

    async def start(self, ctx: SessionContext) -> None: ...

    async def on_agent_said(self, text: str) -> None:
        """The bridge made the agent say `text` (the opening, a nudge, a closing line)."""
        ...

    async def on_user_text(self, text: str, *, overlapped: bool = False) -> list[DialogAction]:
        """A final transcript of one utterance; `overlapped` when it was said over the agent
        without interrupting it (a "hello?" or "mm-hm" during the greeting)."""
        ...

    async def on_partial_text(self, text: str) -> list[DialogAction]:
        """A transcript of the first utterance while it is still going (voicemail detection)."""
        ...

    async def on_tool_result(self, call: ToolCall, result: dict[str, Any]) -> list[DialogAction]: ...

    async def close(self) -> None: ...


# ── phrase tables ─────────────────────────────────────────────────────────────────────────────


def _norm(text: str) -> str:
    """Lower case, straight apostrophes, letters/digits/apostrophes/spaces only."""
    s = text.lower().replace("’", "'").replace("‘", "'")
    s = re.sub(r"[^a-z0-9'\s]", " ", s)
    return " ".join(s.split())


def _any(*patterns: str) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns))


_NOT = r"(?:n'?t|not)"
_DONT = r"(?:don'?t|do not|dont)"

OPT_OUT = _any(
    r"\b(?:remove|take|delete|scratch) (?:me|us|my number|my name|this number|my details)\b.*\b(?:list|off|from|database|records|system)\b",
    r"\b(?:remove|delete) (?:me|us|my number)\b",
    r"\bstop (?:calling|ringing|phoning|contacting|bothering)\b",
    rf"\b{_DONT} (?:ever )?(?:call|contact|ring|phone) (?:me|us|this number|here) (?:again|anymore|any more|ever|back)\b",
    r"\bnever (?:call|contact|ring|phone) (?:me|us|this number|here)\b",
    r"\bdo not call list\b|\bdnc\b",
    r"\bunsubscribe\b|\bopt (?:me )?out\b",
    r"\blose (?:my|this) number\b",
    r"\bno more calls\b",
    rf"\b{_DONT} want (?:any )?(?:more )?(?:of )?(?:your |these )?calls\b",
)

VOICEMAIL = _any(
    r"\bleave (?:me |us )?(?:a |your )?(?:brief |short )?(?:message|voicemail|msg)\b",
    r"\b(?:after|at) the (?:tone|beep)\b",
    r"\bvoice ?mail\b|\bmailbox\b|\banswering machine\b",
    r"\byou(?:'ve| have)? reached\b",
    r"\b(?:is|am|are|is currently) (?:not|un) ?available\b",
    rf"\b(?:can{_NOT}|cannot|unable to|not able to) (?:take|answer|get to|come to) (?:your|the) (?:call|phone)\b",
    r"\brecord your message\b|\bplease record\b",
    r"\bthe (?:person|number|subscriber|customer) you (?:are|have) (?:calling|called|dialed|dialled|trying)\b",
)

CALLBACK = _any(
    r"\bcall (?:me |us )?(?:back|later|again later|another time|tomorrow|next week|in an hour|"
    r"this afternoon|this evening|tonight|on monday|some other time)\b",
    r"\b(?:i'?m|i am|we'?re|we are) (?:a bit |really |very |quite |kind of |a little )?busy\b",
    r"\bbusy (?:right )?now\b|\bkind of busy\b",
    r"\bnot (?:a |the )?(?:good|great|convenient|right|best) time\b|\bbad time\b",
    r"\b(?:in|into|about to go into|heading into) a meeting\b|\bi'?m driving\b",
    rf"\bcan(?:{_NOT}|not) (?:talk|speak) (?:right )?now\b",
    r"\b(?:could|can) (?:you|we) (?:talk|speak|do this|call) (?:later|another time|tomorrow|some other time)\b",
    r"\b(?:try|ring) (?:me |us )?(?:again )?(?:later|tomorrow|another time)\b",
    r"\b(?:another|some other|a better) time\b",
)

NOT_INTERESTED = _any(
    r"\bnot interested\b|\bno interest\b|\bnot (?:really )?(?:looking|in the market)\b",
    r"\bno,? thank(?:s| you),? (?:i'?m|we'?re|i am|we are) (?:good|fine|ok|okay|all set|sorted)\b",
    r"\b(?:we'?re|we are|i'?m|i am) (?:all set|happy with what we have)\b",
)
# Weaker: only when the words carry no answer to the question pending ("we don't need anything
# until next year" answers a timeline question).
NOT_INTERESTED_WEAK = _any(
    rf"\b{_DONT} (?:need|want) (?:it|this|that|any of (?:it|this|that)|anything|one|your product)\b",
)

_WRONG_PERSON_GENERIC = _any(
    r"\bwrong (?:number|person)\b",
    r"\bno (?:one|body) (?:here )?(?:by|with|called|named) (?:that|this|the) name\b|\bnobody by that name\b",
    r"\b(?:doesn'?t|does not|don'?t|do not) (?:work|live) here\b",
    r"\byou(?:'ve| have)? (?:got |dialed |dialled )?the wrong\b",
    r"\bthere(?:'s| is) no (?:one |body )?(?:called |named |by the name (?:of )?)?[a-z]+ (?:here|at this number)\b",
)

_WHO = _any(
    r"\bwho(?:'s| is| was) (?:this|that|calling|speaking|it|on the line)\b",
    r"\bwho (?:are you|am i (?:speaking|talking) (?:to|with))\b",
    r"\bwhere (?:are you )?calling from\b|\bwhat company\b|\bwhich company\b",
    r"\bwho do you (?:work for|represent)\b|\bwhat(?:'s| is) your name\b|\bwho are you with\b",
)
_WHY = _any(
    r"\bwhat(?:'s| is) (?:this|it|that) (?:about|regarding|concerning|for)\b",
    r"\bwhy are you calling\b|\bwhat do you want\b|\bwhat(?:'s| is) this call\b",
    r"\bhow did you get (?:my|this) number\b",
)
_ROBOT = _any(
    r"\b(?:are you|is this|am i (?:talking|speaking) (?:to|with)) (?:a |an )?(?:robot|bot|machine|computer|"
    r"ai|a i|real person|human|person|recording|automated)\b",
)
_REPEAT = _any(
    r"^(?:sorry|pardon|excuse me|what|huh|come again|say again|eh)$",
    r"\b(?:say|repeat) (?:that|it|the question|yourself)\b",
    r"\bcome again\b|\bone more time\b|\bwhat did you (?:say|ask)\b",
    r"\bwhat was (?:that|the question)\b",
    rf"\bdid{_NOT} (?:hear|catch|get|understand) (?:that|you|it|the question)\b",
    rf"\b(?:can|could) (?:you|u) (?:please )?repeat\b|\bcan{_NOT} hear you\b",
    r"\bwhat do you mean\b|\bwhat(?:'s| is) the question\b",
)
_HOLD = _any(
    r"^(?:hold on|hang on|one (?:sec|second|moment|minute)|just a (?:sec|second|moment|minute)|wait)\b",
)
_GREETING = re.compile(
    r"^(?:hello|hi|hey|hiya|hello hello|hello there|hi there|yes hello|good (?:morning|afternoon|evening))"
    r"(?: (?:hello|hi|there))*$"
)
_FILLER = re.compile(
    r"^(?:u+m+|u+h+|e+r+m*|h+m+|a+h+|o+h+|well|so|let me (?:think|see)|right)(?: (?:u+m+|u+h+|h+m+))*$"
)

# What parse_yes_no leaves unclear but a person plainly meant.
_EXTRA_YES = _any(
    r"\bfire away\b|\bshoot\b|\bgo for it\b",
    r"\b(?:i|we)(?: have| have got|'ve got|'ve| got) (?:a )?(?:few |couple of |couple )?(?:minutes?|moments?|seconds?)\b",
)
_EXTRA_NO = _any(
    r"\bmy (?:boss|manager|director|ceo|supervisor|partner|colleague)\b",
    r"\b(?:some|any)(?:one|body) else\b",
)

_ACKS = ("Got it.", "Thanks.", "Great, thank you.", "Okay.")
# Re-asking in other words: (before, after) the question.
_REASK = {
    AnswerType.YES_NO: ("Sorry, I didn't quite catch that.", "Just a yes or no is fine."),
    AnswerType.NUMBER: ("Sorry, I missed that.", "A rough number is fine."),
    AnswerType.TIMELINE: (
        "Sorry, I missed that.",
        "Roughly is fine, for example next month, in six months, or next year.",
    ),
    AnswerType.CHOICE: ("Sorry, I didn't catch that.", "Is it {choices}?"),
    AnswerType.TEXT: ("Sorry, I didn't quite get that.", "Could you say a bit more?"),
}


def detect_end_intent(
    text: str, *, lead: Lead | None = None, voicemail_window: bool = True
) -> EndReason | None:
    """The reason to end the call that these words carry, strongest first; None for none."""
    s = _norm(text)
    if not s:
        return None
    if OPT_OUT.search(s):
        return EndReason.OPT_OUT
    if voicemail_window and VOICEMAIL.search(s):
        return EndReason.VOICEMAIL
    if _WRONG_PERSON_GENERIC.search(s) or (lead is not None and _wrong_named(s, lead)):
        return EndReason.WRONG_PERSON
    if CALLBACK.search(s):
        return EndReason.CALLBACK_REQUESTED
    if NOT_INTERESTED.search(s):
        return EndReason.NOT_INTERESTED
    return None


def _wrong_named(s: str, lead: Lead) -> bool:
    first = _norm(lead.first_name)
    if not first:
        return False
    name = re.escape(first)
    return bool(
        re.search(
            rf"\b(?:i'?m|i am|this is|this isn'?t|this is not) not {name}\b|\bthis (?:isn'?t|is not) {name}\b|"
            rf"\bno {name} here\b|\bnever heard of (?:her|him|them|{name})\b|\b{name} (?:doesn'?t|does not) "
            rf"(?:work|live) here\b|\bi(?:'m| am) not (?:her|him)\b",
            s,
        )
    )


def _has_negation(s: str) -> bool:
    return bool(re.search(rf"\b(?:no|not|never|{_DONT}|can'?t|cannot)\b|n't\b", s))


def extract_answer(question: Question, text: str, now: datetime) -> str | None:
    """The answer to `question` in `text`, as the short string record_answer takes
    ("yes"/"no", "40", months as "3", a choice, free text); None when the words hold none."""
    s = _norm(text)
    if not s:
        return None
    kind = question.type
    if kind is AnswerType.YES_NO:
        yn = parse_yes_no(text)
        if yn is None and _EXTRA_NO.search(s):
            yn = False
        elif yn is None and _EXTRA_YES.search(s) and not _has_negation(s):
            yn = True
        return None if yn is None else ("yes" if yn else "no")
    if kind is AnswerType.NUMBER:
        number = parse_number(text)
        return None if number is None else str(number)
    if kind is AnswerType.TIMELINE:
        months = parse_timeline_months(text, now)
        return None if months is None else str(months)
    if kind is AnswerType.CHOICE:
        return parse_choice(text, question.choices)
    if _FILLER.match(s) or _GREETING.match(s):
        return None
    return text.strip()


# ── the rule-based interviewer ────────────────────────────────────────────────────────────────


class RuleInterviewer:
    """A deterministic interviewer that follows the campaign and calls the tools like a model would.

    `now` anchors timelines ("next quarter" → months); `max_asides` bounds how many side questions
    ("who is this?") one question tolerates before an unclear reply counts as unclear.
    """

    def __init__(
        self,
        *,
        now: Callable[[], datetime] | None = None,
        max_asides: int = 3,
        reask_limit: int = 1,
    ) -> None:
        self._now = now or (lambda: datetime.now(UTC))
        self._max_asides = max_asides
        self._reask_limit = reask_limit
        self._ids = (f"rule-{n}" for n in itertools.count(1))
        self._acks = itertools.cycle(_ACKS)
        self._ctx: SessionContext | None = None
        self._answered: set[str] = set()
        self._skipped: set[str] = set()
        self._pending: Question | None = None
        self._unclear: dict[str, int] = {}
        self._asides: dict[str, int] = {}
        self._awaiting: ToolCall | None = None
        self._ended = False
        self._recorded_any = False
        self._stale = False  # the last thing the agent said was not the pending question
        self.log: list[tuple[str, str]] = []  # (who, text): what was heard and said, for tests and debugging

    # ── state, for the engine and tests ──────────────────────────────────────────────────────

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def pending_question(self) -> Question | None:
        return self._pending

    @property
    def _campaign(self) -> Campaign:
        assert self._ctx is not None, "start() first"
        return self._ctx.campaign

    @property
    def _lead(self) -> Lead:
        assert self._ctx is not None, "start() first"
        return self._ctx.lead

    def _ask(self, q: Question) -> str:
        return self._campaign.render(q.ask, self._lead)

    # ── Dialog ───────────────────────────────────────────────────────────────────────────────

    async def start(self, ctx: SessionContext) -> None:
        self._ctx = ctx
        self._answered = {a.question_id for a in ctx.answers}
        todo = self._todo()
        # The bridge's opening asks the first unanswered question: it is pending from the start.
        self._pending = todo[0] if todo else None

    async def close(self) -> None:
        self._ended = True

    async def on_agent_said(self, text: str) -> None:
        self.log.append(("agent", text))
        if self._ended or self._pending is None:
            return
        # A line from the bridge that is not the question (a "still there?" nudge): a bare "yes"
        # after it answers the nudge, not the question.
        self._stale = self._ask(self._pending) not in text

    async def on_partial_text(self, text: str) -> list[DialogAction]:
        if self._ended or self._recorded_any or self._awaiting is not None:
            return []
        if VOICEMAIL.search(_norm(text)):
            return [self._end(EndReason.VOICEMAIL)]
        return []

    async def on_user_text(self, text: str, *, overlapped: bool = False) -> list[DialogAction]:
        text = text.strip()
        s = _norm(text)
        if not s or self._ended:
            return []
        self.log.append(("lead", text))
        q = self._pending
        reason = detect_end_intent(text, lead=self._lead, voicemail_window=not self._recorded_any)
        if reason is not None:
            if (
                q is not None
                and q.end_when is not None
                and q.type is AnswerType.YES_NO
                and q.end_when.reason is reason
            ):
                # "Not a good time" to "is now a good time?" is that question's answer; the
                # campaign's end_when turns it into the ending.
                return [self._record(q, "yes" if q.end_when.equals is True else "no", text)]
            return [self._end(reason)]
        if self._awaiting is not None or q is None:
            return []  # an answer is being recorded, or nothing is left to ask
        if _FILLER.match(s):
            return []
        if _GREETING.match(s):
            return [] if overlapped else [Speak(f"Hi, yes, I'm here. {self._ask(q)}")]
        aside = self._aside(s, q)
        if aside is not None:
            return [aside]
        if self._stale:
            self._stale = False
            value = extract_answer(q, text, self._now())
            if q.type is AnswerType.YES_NO or value is None:
                return [Speak(f"Great. {self._ask(q)}")]
            return [self._record(q, value, text)]
        value = extract_answer(q, text, self._now())
        if value is not None:
            return [self._record(q, value, text)]
        if NOT_INTERESTED_WEAK.search(s):
            return [self._end(EndReason.NOT_INTERESTED)]
        if overlapped:
            return []  # said over the agent and not an answer: let the agent finish
        return self._unclear_answer(q)

    async def on_tool_result(self, call: ToolCall, result: dict[str, Any]) -> list[DialogAction]:
        if self._ended:
            return []
        status = result.get("status")
        if call.name == END_CALL:
            return []  # wrap_up: the bridge speaks the closing line
        if self._awaiting is None or call.call_id != self._awaiting.call_id:
            return []
        self._awaiting = None
        q = self._pending
        if status == "wrap_up":
            if q is not None:
                self._answered.add(q.id)
            self._ended = True
            return []
        if status == "continue":
            if q is not None:
                self._answered.add(q.id)
            nxt_id = result.get("next_question_id")
            nxt_text = result.get("next_question")
            nxt = self._question(nxt_id) if isinstance(nxt_id, str) else None
            if nxt is None:
                todo = self._todo()
                if not todo:
                    return self._nothing_left()
                nxt = todo[0]
            self._pending = nxt
            ask = nxt_text if isinstance(nxt_text, str) and nxt_text else self._ask(nxt)
            self._stale = False
            if nxt.id in self._skipped:
                # Asked for again (the bridge wants every question): one more try.
                self._skipped.discard(nxt.id)
                self._unclear[nxt.id] = self._reask_limit
                return [self._say(f"{next(self._acks)} Coming back to an earlier question. {ask}")]
            return [self._say(f"{next(self._acks)} {ask}")]
        # An error: the bridge could not read the answer. Treat it as unclear.
        return self._unclear_answer(q) if q is not None else []

    # ── helpers ──────────────────────────────────────────────────────────────────────────────

    def _todo(self) -> list[Question]:
        return [q for q in self._campaign.questions if q.id not in self._answered]

    def _question(self, qid: str) -> Question | None:
        try:
            return self._campaign.question(qid)
        except KeyError:
            return None

    def _say(self, text: str) -> Speak:
        self.log.append(("agent", text))
        return Speak(text)

    def _record(self, q: Question, value: str, quote: str) -> ToolCall:
        call = ToolCall(
            call_id=next(self._ids),
            name=RECORD_ANSWER,
            args={"question_id": q.id, "value": value, "quote": quote},
        )
        self._awaiting = call
        self._recorded_any = True
        return call

    def _end(self, reason: EndReason) -> ToolCall:
        self._ended = True
        return ToolCall(call_id=next(self._ids), name=END_CALL, args={"reason": reason.value})

    def _aside(self, s: str, q: Question) -> DialogAction | None:
        """A side question: answer it and ask again (does not use up the re-ask)."""
        agent = self._campaign.agent
        if _WHO.search(s):
            reply = f"This is {agent.name}, calling from {agent.company}."
        elif _ROBOT.search(s):
            reply = f"I'm an AI assistant calling on behalf of {agent.company}."
        elif _WHY.search(s):
            reply = f"It's a quick call to see whether {agent.company} could help your team."
        elif _REPEAT.search(s):
            reply = "Sure."
        elif _HOLD.search(s):
            self._stale = True
            return self._say("Sure, take your time.")
        else:
            return None
        count = self._asides.get(q.id, 0) + 1
        self._asides[q.id] = count
        if count > self._max_asides:
            return None
        return self._say(f"{reply} {self._ask(q)}")

    def _unclear_answer(self, q: Question) -> list[DialogAction]:
        count = self._unclear.get(q.id, 0) + 1
        self._unclear[q.id] = count
        if count <= self._reask_limit:
            return [self._say(self._reask(q))]
        # Asked twice and still unclear: record nothing, move on.
        self._skipped.add(q.id)
        return self._move_on(q)

    def _reask(self, q: Question) -> str:
        before, after = _REASK[q.type]
        choices = ", ".join(q.choices[:-1]) + f" or {q.choices[-1]}" if q.choices else ""
        return f"{before} {self._ask(q)} {after.format(choices=choices)}"

    def _move_on(self, q: Question) -> list[DialogAction]:
        order = self._campaign.questions
        after = order[order.index(q) + 1 :] + order[: order.index(q)]
        for nxt in after:
            if nxt.id not in self._answered and nxt.id not in self._skipped:
                self._pending = nxt
                return [self._say(f"No problem, let's move on. {self._ask(nxt)}")]
        return self._nothing_left()

    def _nothing_left(self) -> list[DialogAction]:
        # Every question still open was asked and went unanswered. There is no "done" tool, and
        # an undecided lead closes cold anyway (AnswerBook): end the call as not interested.
        self._pending = None
        return [self._end(EndReason.NOT_INTERESTED)]
