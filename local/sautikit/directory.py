"""The directory of simulated phones: who answers, how, and what they say (a YAML contract).

```yaml
numbers:                      # simulated leads, by E.164
  "+254712000001":
    answer: after_rings       # after_rings | no_answer | busy | fail | voicemail
    rings: 2                  # optional, default 1
    says: ["Yes, now is fine.", "Yes, I make the buying decisions."]   # one reply per agent turn
    interrupt_on_turn: 2      # optional: start reply 2 while the agent is still speaking
    hangup_after_s: 40        # optional
    voicemail_greeting: "…"   # for answer: voicemail
reps:                         # live reps a transfer (Dial or supervision) rings
  "+254711999000": {answer: after_rings, rings: 1}
  "*": {answer: after_rings, rings: 2}
```
Numbers in neither list do not answer. Keys this simulator adds are documented on the models below.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
DEFAULT_REP_LINE = "Hi, this is the sales team. Thanks for holding."
DEFAULT_VOICEMAIL_GREETING = "Hi, you have reached my voicemail. Please leave a message after the tone."


class Answer(StrEnum):
    AFTER_RINGS = "after_rings"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAIL = "fail"
    VOICEMAIL = "voicemail"


def _as_list(value: Any) -> Any:
    # `says: "One line"` is a natural slip for a one-reply person; accept it as a list of one.
    if isinstance(value, str):
        return [value]
    return [] if value is None else value


class Person(BaseModel):
    """A simulated lead. Keys beyond the issue's contract are marked (sim)."""

    model_config = ConfigDict(extra="forbid")

    answer: Answer = Answer.AFTER_RINGS
    rings: int = Field(default=1, ge=0, le=60)
    says: list[str] = Field(default_factory=list)
    interrupt_on_turn: int | None = Field(default=None, ge=1)
    hangup_after_s: float | None = Field(default=None, gt=0)
    voicemail_greeting: str | None = None
    # (sim) what the person says right after picking up, before any agent turn (e.g. "Hello?").
    hello: str | None = None
    # (sim) hang up after hearing this many seconds of silence (nobody speaking to them).
    hangup_on_silence_s: float | None = Field(default=None, gt=0)
    # (sim) a voicemail box hangs up this long after its beep.
    voicemail_max_s: float = Field(default=20.0, gt=0)
    # (sim) DTMF the person keys in, one entry per <GetDigits>.
    digits: list[str] = Field(default_factory=list)
    # (sim) §7.5: callerNumber/destinationNumber swapped in voice callbacks.
    swap_numbers: bool = False
    # (sim) §7.8: every event, stream status and lifecycle re-invocation is delivered twice.
    duplicate_callbacks: bool = False
    # (sim) §7.4: the first (set-up) callback already says callSessionState=Completed (isActive=1).
    early_completed: bool = False
    # (sim) the `Completed` re-invocation arrives this long after the call ended (§2: ~20 s seen).
    late_completed_s: float = Field(default=0.0, ge=0)
    # (sim) callbacks for this call are signed with a wrong secret: the app must answer 401.
    bad_signature: bool = False
    # (sim) the create-call response omits `call_id` (§1: it may be absent).
    omit_call_id: bool = False
    # (sim) failure_code reported when `answer: fail`.
    failure_code: str = "unreachable"
    # (sim) free text for humans and demo reports; the simulator ignores them.
    name: str | None = None
    note: str | None = None
    expect: str | None = None

    _says_list = field_validator("says", "digits", mode="before")(_as_list)


class Rep(BaseModel):
    """A live rep that a transfer rings."""

    model_config = ConfigDict(extra="forbid")

    answer: Answer = Answer.AFTER_RINGS
    rings: int = Field(default=1, ge=0, le=60)
    # (sim) what the rep says on answering, into the lead's ear (proves the bridge in the WAV).
    says: list[str] = Field(default_factory=lambda: [DEFAULT_REP_LINE])
    # (sim) the rep talks with the lead this long after answering, then hangs up (ending the call).
    talk_s: float = Field(default=4.0, gt=0)
    name: str | None = None
    note: str | None = None

    _says_list = field_validator("says", mode="before")(_as_list)


def _check_numbers(value: dict[str, Any], wildcard: bool) -> dict[str, Any]:
    for key in value:
        if wildcard and key == "*":
            continue
        if not re.match(E164_PATTERN, str(key)):
            raise ValueError(f'directory key {key!r} is not an E.164 number (quote it in YAML: "+254…")')
    return value


class Directory(BaseModel):
    """Simulated leads (`numbers`) and reps (`reps`, with `"*"` for any other dialed number)."""

    model_config = ConfigDict(extra="forbid")

    numbers: dict[str, Person] = Field(default_factory=dict)
    reps: dict[str, Rep] = Field(default_factory=dict)

    @field_validator("numbers", mode="before")
    @classmethod
    def _numbers_e164(cls, value: Any) -> Any:
        return _check_numbers(value or {}, wildcard=False)

    @field_validator("reps", mode="before")
    @classmethod
    def _reps_e164(cls, value: Any) -> Any:
        return _check_numbers(value or {}, wildcard=True)

    @classmethod
    def load(cls, path: str | Path) -> Directory:
        return cls.from_yaml(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def from_yaml(cls, text: str) -> Directory:
        data = yaml.safe_load(text) or {}
        if not isinstance(data, dict):
            raise ValueError("a directory is a mapping with `numbers` and `reps`")
        return cls.model_validate(data)

    def person(self, e164: str) -> Person | None:
        """The lead at `e164`, or None: a number in neither list does not answer."""
        return self.numbers.get(e164)

    def rep(self, e164: str) -> Rep | None:
        """The rep a transfer to `e164` reaches: an exact entry, else `"*"`, else a simulated lead."""
        if e164 in self.reps:
            return self.reps[e164]
        if e164 in self.numbers:
            # Dialing a lead's number from a transfer: it behaves as that person picking up.
            p = self.numbers[e164]
            return Rep(answer=p.answer, rings=p.rings, says=p.says or [DEFAULT_REP_LINE])
        return self.reps.get("*")
