"""Campaign files: YAML validated into a pydantic model, with a JSON Schema for editors.

A campaign says who the agent is, what it discloses, which questions it asks, how answers score,
when a lead may be called, how hot leads are transferred and how failed attempts are retried.
"""

from __future__ import annotations

import json
import re
from datetime import time
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from leadqual.models import AnswerValue, EndReason, Lead


class CampaignError(ValueError):
    """A campaign file that cannot be used; the message names the file and the bad key."""


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
            raise ValueError("a 'choice' question needs 'choices'")
        return self


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
    describe: str = ""  # human wording for explanations, e.g. "decides on purchases"


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


class Window(_Strict):
    """A daily calling window in the lead's local time; `end` before `start` crosses midnight."""

    days: list[Day] = Field(default_factory=lambda: list(_DAY_NAMES[:5]))
    start: time
    end: time

    @field_validator("days", mode="before")
    @classmethod
    def _expand_range(cls, value: Any) -> Any:
        # Accept "mon-fri" as well as a list.
        if isinstance(value, str):
            first, _, last = value.partition("-")
            a, b = _DAY_NAMES.index(first), _DAY_NAMES.index(last or first)
            return list(_DAY_NAMES[a : b + 1])
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

    @model_validator(mode="after")
    def _references_exist(self) -> Campaign:
        qids = [q.id for q in self.questions]
        if len(set(qids)) != len(qids):
            raise ValueError("questions: duplicate question id")
        rule_ids = {r.id for r in self.scoring.rules}
        for i, rule in enumerate(self.scoring.rules):
            if rule.question not in qids:
                raise ValueError(f"scoring.rules.{i}.question: unknown question {rule.question!r}")
        for key in ("all", "any"):
            for rid in getattr(self.scoring.hot, key):
                if rid not in rule_ids:
                    raise ValueError(f"scoring.hot.{key}: unknown rule {rid!r}")
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


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = [f"{source}: invalid campaign"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {where}: {err['msg']}")
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
