"""Campaign files: YAML validated into a pydantic model, with a JSON Schema for editors.

A campaign says who the agent is, what it discloses, which questions it asks, how answers score,
when a lead may be called, how hot leads are transferred and how failed attempts are retried.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import time
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import phonenumbers
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from leadqual.errors import ConfigError, InvalidLead
from leadqual.models import AnswerValue, EndReason, Lead


class CampaignError(ValueError):
    """A campaign file that cannot be used; the message names the file and the bad key."""


class _KeyError(ValueError):
    """A validator's complaint about one key below the model that raised it (e.g. `choices`)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


PLACEHOLDERS = ("first_name", "name", "company", "agent_name", "agent_company", "disclosure")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


def _check_placeholders(key: str, text: str) -> None:
    for name in _PLACEHOLDER_RE.findall(text):
        if name not in PLACEHOLDERS:
            raise _KeyError(key, f"unknown placeholder {{{name}}}; use one of {', '.join(PLACEHOLDERS)}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AnswerType(StrEnum):
    YES_NO = "yes_no"
    NUMBER = "number"
    CHOICE = "choice"
    TIMELINE = "timeline"  # normalised to months from now (0 = this month / now)
    TEXT = "text"


class EndWhen(_Strict):
    """End the call early when this question gets this answer (e.g. 'not a good time' → callback)."""

    equals: AnswerValue
    reason: EndReason


class Question(_Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    ask: str = Field(min_length=1)
    type: AnswerType
    required: bool = True
    choices: list[str] = Field(default_factory=list)
    end_when: EndWhen | None = None

    @model_validator(mode="after")
    def _choices_match_type(self) -> Question:
        if self.type is AnswerType.CHOICE and not self.choices:
            raise _KeyError("choices", "a 'choice' question needs choices")
        if self.type is not AnswerType.CHOICE and self.choices:
            raise _KeyError("choices", "only 'choice' questions take choices")
        folded = [c.strip().casefold() for c in self.choices]
        if len(set(folded)) != len(folded) or not all(folded):
            raise _KeyError("choices", "choices must be distinct and not empty")
        _check_placeholders("ask", self.ask)
        if self.end_when is not None:
            problem = value_problem(self, self.end_when.equals)
            if problem:
                raise _KeyError("end_when.equals", problem)
        return self


def value_problem(question: Question, value: AnswerValue) -> str | None:
    """Why `value` can never be an answer to `question` (None if it can)."""
    kind = question.type
    if kind is AnswerType.YES_NO and not isinstance(value, bool):
        return f"{question.id} is a yes_no question: use true or false, not {value!r}"
    if kind in (AnswerType.NUMBER, AnswerType.TIMELINE) and (
        isinstance(value, bool) or not isinstance(value, int | float)
    ):
        return f"{question.id} is a {kind.value} question: use a number, not {value!r}"
    if kind is AnswerType.CHOICE and (
        not isinstance(value, str) or value.strip().casefold() not in {c.casefold() for c in question.choices}
    ):
        return f"{value!r} is not one of {question.id}'s choices ({', '.join(question.choices)})"
    if kind is AnswerType.TEXT and not isinstance(value, str):
        return f"{question.id} is a text question: use a string, not {value!r}"
    return None


class Op(StrEnum):
    EQ = "eq"
    NE = "ne"
    GTE = "gte"
    GT = "gt"
    LTE = "lte"
    LT = "lt"
    IN = "in"


class Rule(_Strict):
    """One scoring rule: a condition on one answer, worth `points` when it holds."""

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    question: str
    op: Op
    value: AnswerValue | list[AnswerValue]
    points: int = 0
    describe: str = ""  # human wording for explanations, e.g. "makes buying decisions"
    describe_not: str = ""  # its negation, when the automatic one reads badly ("does not make …")


class HotRule(_Strict):
    """The lead is hot when every rule in `all` holds, at least one in `any` holds (if given),
    and the points reach `min_points`."""

    all: list[str] = Field(default_factory=list)
    any: list[str] = Field(default_factory=list)
    min_points: int = 0


class Scoring(_Strict):
    rules: list[Rule]
    hot: HotRule


Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_DAY_NAMES: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_GROUPS = {"daily": _DAY_NAMES, "weekdays": _DAY_NAMES[:5], "weekends": _DAY_NAMES[5:]}
_DAYS_SCHEMA = WithJsonSchema(
    {
        "anyOf": [
            {"type": "array", "items": {"enum": list(_DAY_NAMES)}, "minItems": 1},
            {
                "type": "string",
                "pattern": "^(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?$"
                "|^(daily|weekdays|weekends)$",
            },
        ],
        "description": "days the window opens: a list, a range like 'mon-fri', or daily/weekdays/weekends",
    }
)
_TIME_SCHEMA = WithJsonSchema(
    {
        "type": "string",
        "pattern": "^([01]?[0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$",
        "description": "HH:MM, quoted",
    }
)
_TIME_RE = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)(?::([0-5]\d))?$")


def _day(name: str) -> Day:
    text = name.strip().lower()
    for day in _DAY_NAMES:
        if text in (day, _FULL_DAYS[day]):
            return day
    raise ValueError(f"unknown day {name!r}; use mon, tue, wed, thu, fri, sat, sun")


_FULL_DAYS = dict(
    zip(
        _DAY_NAMES,
        ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
        strict=True,
    )
)


class Window(_Strict):
    """A daily calling window in the lead's local time; `end` before `start` crosses midnight."""

    days: Annotated[list[Day], _DAYS_SCHEMA] = Field(
        default_factory=lambda: list(_DAY_NAMES[:5]), min_length=1
    )
    start: Annotated[time, _TIME_SCHEMA]
    end: Annotated[time, _TIME_SCHEMA]  # `end == start` means the whole day

    @field_validator("days", mode="before")
    @classmethod
    def _expand_range(cls, value: Any) -> Any:
        # Accept "mon-fri" (wrapping: "fri-mon"), "daily", "weekdays", "weekends" as well as a list.
        if isinstance(value, str):
            text = value.strip().lower()
            if text in _DAY_GROUPS:
                return list(_DAY_GROUPS[text])
            first, _, last = text.partition("-")
            a, b = _DAY_NAMES.index(_day(first)), _DAY_NAMES.index(_day(last or first))
            return [_DAY_NAMES[(a + i) % 7] for i in range((b - a) % 7 + 1)]
        if isinstance(value, list):
            return [_day(v) if isinstance(v, str) else v for v in value]
        return value

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock_time(cls, value: Any) -> Any:
        # YAML 1.1 reads an unquoted 19:00 as the number 1140 (base 60); pydantic would take it as seconds.
        if isinstance(value, int | float):  # bool included
            raise ValueError(
                'write times as quoted "HH:MM" strings (YAML reads an unquoted 19:00 as a number)'
            )
        if isinstance(value, str):
            m = _TIME_RE.match(value.strip())
            if not m:
                raise ValueError(f'{value!r} is not a time; use "HH:MM" (24-hour)')
            return time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
        return value


class TransferStrategy(StrEnum):
    DIAL_AFTER_STREAM = "dial_after_stream"
    SUPERVISE_BARGE = "supervise_barge"


class Transfer(_Strict):
    strategy: TransferStrategy = TransferStrategy.DIAL_AFTER_STREAM
    reps: list[str] = Field(min_length=1)
    ring_timeout_s: int = Field(default=20, ge=5, le=120)
    handoff_line: str = "Great, let me bring in a colleague who can help you right away. One moment."
    fallback_line: str = "Sorry, my colleague is not available right now. We will call you back shortly."
    whisper: bool = True  # brief the rep with a short spoken summary where the strategy allows

    @field_validator("reps")
    @classmethod
    def _e164(cls, reps: list[str]) -> list[str]:
        for i, rep in enumerate(reps):
            try:
                valid = rep.startswith("+") and phonenumbers.is_valid_number(phonenumbers.parse(rep, None))
            except phonenumbers.NumberParseException:
                valid = False
            if not valid:
                raise _KeyError(str(i), "not a valid E.164 number (like +254711999000)")
        return reps

    @model_validator(mode="after")
    def _lines(self) -> Transfer:
        _check_placeholders("handoff_line", self.handoff_line)
        _check_placeholders("fallback_line", self.fallback_line)
        return self


class RetryRule(_Strict):
    after_minutes: int = Field(ge=1)


class Retries(_Strict):
    max_attempts: int = Field(default=3, ge=1, le=10)
    no_answer: RetryRule | None = RetryRule(after_minutes=120)
    busy: RetryRule | None = RetryRule(after_minutes=30)
    failed: RetryRule | None = None
    callback_requested: RetryRule | None = RetryRule(after_minutes=24 * 60)


class VoicemailPolicy(StrEnum):
    HANG_UP = "hang_up"
    LEAVE_MESSAGE = "leave_message"


class Voicemail(_Strict):
    policy: VoicemailPolicy = VoicemailPolicy.HANG_UP
    message: str = ""

    @model_validator(mode="after")
    def _message_when_leaving_one(self) -> Voicemail:
        if self.policy is VoicemailPolicy.LEAVE_MESSAGE and not self.message.strip():
            raise _KeyError("message", "policy leave_message needs a message")
        _check_placeholders("message", self.message)
        return self


class Agent(_Strict):
    name: str
    company: str
    voice: str = ""  # engine-specific voice name; empty = the engine's default
    language: str = "en-KE"


class Lines(_Strict):
    """Fixed lines the agent speaks; `{placeholders}` are filled from the lead and agent."""

    greeting: str = "Hi {first_name}, this is {agent_name} calling from {agent_company}."
    closing: str = "Thanks for your time, {first_name}. Have a great day. Goodbye."
    callback: str = "No problem, we will call you back at a better time. Goodbye."
    opt_out: str = "Understood, we will not call you again. Goodbye."
    wrong_person: str = "Sorry for the trouble. Goodbye."
    fallback: str = "Sorry, we are having technical trouble. We will call you back. Goodbye."

    @model_validator(mode="after")
    def _known_placeholders(self) -> Lines:
        for key, text in self:
            _check_placeholders(key, text)
        return self


class Limits(_Strict):
    max_call_seconds: int = Field(default=300, ge=30, le=3600)
    silence_timeout_s: float = Field(default=10.0, ge=2, le=120)


class FallbackAction(StrEnum):
    HANG_UP = "hang_up"
    TRANSFER = "transfer"


class Campaign(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    name: str
    agent: Agent
    disclosure: str = Field(min_length=1)  # AI assistance and recording, said first
    intro_say: bool = False  # speak the disclosure as a fixed <Say> before the stream opens
    lines: Lines = Lines()
    questions: list[Question] = Field(min_length=1)
    scoring: Scoring
    transfer: Transfer
    calling_windows: dict[str, list[Window]] = Field(
        default_factory=lambda: {"default": [Window(start=time(8), end=time(20))]}
    )  # keyed by ISO country code, or "default"
    retries: Retries = Retries()
    limits: Limits = Limits()
    voicemail: Voicemail = Voicemail()
    fallback_action: FallbackAction = FallbackAction.HANG_UP

    @field_validator("calling_windows")
    @classmethod
    def _country_keys(cls, windows: dict[str, list[Window]]) -> dict[str, list[Window]]:
        for key in windows:
            if key != "default" and key not in phonenumbers.SUPPORTED_REGIONS:
                hint = (
                    f"; did you mean {key.upper()!r}?"
                    if key.upper() in phonenumbers.SUPPORTED_REGIONS
                    else ""
                )
                raise _KeyError(key, f"not an ISO country code (like KE) or 'default'{hint}")
        return windows

    @model_validator(mode="after")
    def _references_exist(self) -> Campaign:
        qids = [q.id for q in self.questions]
        for i, qid in enumerate(qids):
            if qid in qids[:i]:
                raise _KeyError(f"questions.{i}.id", f"duplicate question id {qid!r}")
        _check_placeholders("disclosure", self.disclosure)
        rule_ids: list[str] = []
        for i, rule in enumerate(self.scoring.rules):
            where = f"scoring.rules.{i}"
            if rule.id in rule_ids:
                raise _KeyError(f"{where}.id", f"duplicate rule id {rule.id!r}")
            rule_ids.append(rule.id)
            if rule.question not in qids:
                raise _KeyError(
                    f"{where}.question", f"unknown question {rule.question!r}; known: {', '.join(qids)}"
                )
            problem = _rule_problem(rule, self.question(rule.question))
            if problem:
                raise _KeyError(f"{where}.{problem[0]}", problem[1])
        hot = self.scoring.hot
        for key in ("all", "any"):
            for rid in getattr(hot, key):
                if rid not in rule_ids:
                    raise _KeyError(
                        f"scoring.hot.{key}", f"unknown rule {rid!r}; known: {', '.join(rule_ids)}"
                    )
        if not hot.all and not hot.any and hot.min_points <= 0:
            raise _KeyError("scoring.hot", "needs at least one of all, any or a positive min_points")
        reachable = sum(r.points for r in self.scoring.rules if r.points > 0)
        if hot.min_points > reachable:
            raise _KeyError(
                "scoring.hot.min_points",
                f"{hot.min_points} can never be reached (rules give at most {reachable})",
            )
        return self

    def question(self, question_id: str) -> Question:
        for q in self.questions:
            if q.id == question_id:
                return q
        raise KeyError(question_id)

    def windows_for(self, country: str | None) -> list[Window]:
        return self.calling_windows.get(country or "", self.calling_windows.get("default", []))

    def render(self, text: str, lead: Lead) -> str:
        """Fill `{first_name}`, `{name}`, `{company}`, `{agent_name}`, `{agent_company}`."""
        values = {
            "first_name": lead.first_name or "there",
            "name": lead.name,
            "company": lead.company,
            "agent_name": self.agent.name,
            "agent_company": self.agent.company,
            "disclosure": self.disclosure,
        }
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), text)


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_ORDERED = (Op.GTE, Op.GT, Op.LTE, Op.LT)


def _rule_problem(rule: Rule, question: Question) -> tuple[str, str] | None:
    """(key, why) when a rule can never be evaluated sensibly against its question's answers."""
    if rule.op is Op.IN:
        if not isinstance(rule.value, list) or not rule.value:
            return "value", "op 'in' needs a non-empty list of values"
        values: list[AnswerValue] = rule.value
    else:
        if isinstance(rule.value, list):
            return "value", f"op {rule.op.value!r} takes one value, not a list (use op 'in')"
        values = [rule.value]
    if rule.op in _ORDERED and question.type not in (AnswerType.NUMBER, AnswerType.TIMELINE):
        return (
            "op",
            f"{rule.op.value!r} compares numbers, but {question.id} is a {question.type.value} question",
        )
    for value in values:
        problem = value_problem(question, value)
        if problem:
            return "value", problem
    return None


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid campaign"]
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        msg = err["msg"]
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, _KeyError):
            loc.append(cause.key)
            msg = cause.message
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        lines.append(f"  {'.'.join(loc) or '(top level)'}: {msg}")
    return "\n".join(lines)


def parse_campaign(data: Any, source: str = "<campaign>") -> Campaign:
    if not isinstance(data, dict):
        raise CampaignError(f"{source}: a campaign is a mapping of keys, got {type(data).__name__}")
    try:
        return Campaign.model_validate(data)
    except ValidationError as exc:
        raise CampaignError(_format_errors(source, exc)) from exc


def load_campaign(path: str | Path) -> Campaign:
    """Load and validate a campaign YAML file; errors name the file and every bad key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read campaign file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise CampaignError(f"{path}: not valid YAML: {exc}") from exc
    return parse_campaign(data, str(path))


def builtin_campaign_path(campaign_id: str = "example") -> Path:
    return Path(str(resources.files("leadqual").joinpath("campaigns", f"{campaign_id}.yaml")))


def json_schema() -> str:
    """The campaign JSON Schema, for editors (`leadqual campaign schema`)."""
    schema = Campaign.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "leadqual campaign"
    return json.dumps(schema, indent=2, sort_keys=True, default=str)


class CampaignCatalog:
    """Campaign files by id from one directory (`<id>.yaml`), loaded once per process."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._cache: dict[str, Campaign] = {}
        self._lock = threading.Lock()

    def get(self, campaign_id: str) -> Campaign:
        """The campaign; InvalidLead (permanent) when there is no such file, ConfigError when the
        file does not validate."""
        with self._lock:
            cached = self._cache.get(campaign_id)
        if cached is not None:
            return cached
        path = self.directory / f"{campaign_id}.yaml"
        if not path.is_file():
            raise InvalidLead(f"unknown campaign {campaign_id!r}", field="campaign")
        try:
            campaign = load_campaign(path)
        except CampaignError as exc:
            raise ConfigError(f"campaign {campaign_id!r} does not validate: {exc}") from exc
        with self._lock:
            self._cache[campaign_id] = campaign
        return campaign
