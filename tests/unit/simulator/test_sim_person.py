"""The simulated person's turn-taking, frame by frame (no sockets, no clock: 50 frames = 1 s)."""

from __future__ import annotations

import numpy as np

from local.sautikit.directory import Person
from local.sautikit.person import SimulatedPerson

FPS = 50


def clip(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (6000 * np.sin(2 * np.pi * 300 * t)).astype(np.int16)


class Run:
    def __init__(self, spec: Person, lines: dict[str, np.ndarray]) -> None:
        self.notes: list[tuple[int, str, dict]] = []
        self.frame = 0
        self.lines = lines
        self.p = SimulatedPerson(spec, lines.get, self._note)
        self.spoke: list[int] = []  # frames where the person's mouth was loud

    def _note(self, kind: str, ago_s: float = 0.0, **fields) -> None:
        self.notes.append((self.frame - round(ago_s * FPS), kind, fields))

    def run(self, agent: list[bool]) -> None:
        for hears in agent:
            self.frame += 1
            out = self.p.mouth()
            if np.abs(out).max() > 1000:
                self.spoke.append(self.frame)
            self.p.ear(hears and not self.p.hangup_reason)

    def kinds(self, kind: str) -> list[tuple[int, dict]]:
        return [(f, d) for f, k, d in self.notes if k == kind]


def agent(*segments: tuple[bool, float]) -> list[bool]:
    out: list[bool] = []
    for speaking, seconds in segments:
        out += [speaking] * round(seconds * FPS)
    return out


def test_reply_starts_600ms_of_silence_plus_a_pause_after_the_agent_stops():
    r = Run(Person(says=["a", "b"]), {"a": clip(0.5), "b": clip(0.5)})
    r.run(agent((False, 0.2), (True, 1.0), (False, 3.0)))
    ((turn_at, turn),) = r.kinds("agent_turn")
    assert turn["turn"] == 1
    assert turn["duration_s"] == 1.0
    ((said_at, said),) = r.kinds("lead_speaks")
    assert said == {"text": "a", "turn": 1, "interrupting": False}
    agent_end = turn_at + 50
    assert 0.8 <= (said_at - agent_end) / FPS <= 0.9
    assert r.spoke[0] == said_at


def test_a_pause_shorter_than_the_end_of_turn_gap_keeps_the_turn_going():
    r = Run(Person(says=["a", "b"]), {"a": clip(0.3), "b": clip(0.3)})
    r.run(agent((True, 0.5), (False, 0.4), (True, 0.5), (False, 2.0)))
    assert [d["turn"] for _, d in r.kinds("agent_turn")] == [1]
    assert [d["turn"] for _, d in r.kinds("lead_speaks")] == [1]


def test_more_agent_turns_than_replies_means_silence():
    r = Run(Person(says=["only"]), {"only": clip(0.3)})
    r.run(agent((True, 0.5), (False, 1.5), (True, 0.5), (False, 1.5), (True, 0.5), (False, 1.5)))
    assert [d["turn"] for _, d in r.kinds("agent_turn")] == [1, 2, 3]
    assert [d["text"] for _, d in r.kinds("lead_speaks")] == ["only"]


def test_interrupt_on_turn_speaks_700ms_into_that_turn():
    r = Run(Person(says=["a", "b"], interrupt_on_turn=2), {"a": clip(0.3), "b": clip(1.0)})
    r.run(agent((True, 0.5), (False, 1.5), (True, 3.0), (False, 1.0)))
    said = r.kinds("lead_speaks")
    assert [d["interrupting"] for _, d in said] == [False, True]
    turn2_at, turn2 = r.kinds("agent_turn")[1]
    assert turn2["interrupted_by_lead"] is True
    assert 0.66 <= (said[1][0] - turn2_at) / FPS <= 0.76


def test_voicemail_greets_beeps_and_never_takes_a_turn():
    r = Run(Person(answer="voicemail", voicemail_greeting="hi", voicemail_max_s=1.0), {"hi": clip(0.6)})
    r.p.media_started()
    r.run(agent((False, 1.2), (True, 1.0), (False, 2.0)))
    assert [d.get("what") for _, d in r.kinds("lead_speaks")] == ["greeting", "beep"]
    assert not r.kinds("agent_turn")
    assert r.p.hangup_reason == "voicemail_timeout"
    assert r.p.voicemail_speech_frames > 0


def test_hangup_timers():
    r = Run(Person(hangup_after_s=1.0), {})
    r.run(agent((True, 0.98)))
    assert r.p.hangup_reason is None
    r.run(agent((True, 0.04)))
    assert r.p.hangup_reason == "hangup_after_s"

    quiet = Run(Person(hangup_on_silence_s=0.5), {})
    quiet.run(agent((False, 0.4), (True, 0.2), (False, 0.4)))
    assert quiet.p.hangup_reason is None  # the agent spoke: the silence clock restarted
    quiet.run(agent((False, 0.2)))
    assert quiet.p.hangup_reason == "silence"


def test_a_hello_over_the_start_of_the_greeting_does_not_split_the_agent_turn():
    # The bridge greets within milliseconds, so "Hello?" often overlaps the greeting's first words;
    # the person still answers the greeting (reply 1), not a phantom second turn.
    r = Run(
        Person(says=["No, call me next week."], hello="Hello?"),
        {"No, call me next week.": clip(0.5), "Hello?": clip(0.5)},
    )
    r.p.media_started()  # the hello is due GREETING_DELAY_S (0.4 s) from here
    r.run(agent((False, 0.2), (True, 4.0), (False, 2.0)))
    assert [d["turn"] for _, d in r.kinds("agent_turn")] == [1]
    assert [d.get("text") for _, d in r.kinds("lead_speaks")] == ["Hello?", "No, call me next week."]


def test_a_reply_still_being_synthesised_is_said_once_ready():
    lines = {"a": clip(0.3)}
    r = Run(Person(says=["a", "b"]), lines)
    r.run(agent((True, 0.5), (False, 1.5), (True, 0.5), (False, 1.5)))
    assert [d["turn"] for _, d in r.kinds("lead_speaks")] == [1]
    assert [d["turn"] for _, d in r.kinds("lead_thinking")] == [2]
    lines["b"] = clip(0.3)  # the background synthesis lands
    r.run(agent((False, 0.1)))
    assert [d["turn"] for _, d in r.kinds("lead_speaks")] == [1, 2]
