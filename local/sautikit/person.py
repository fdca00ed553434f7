"""A simulated person on the far end of a call, driven one 20 ms frame at a time (no I/O here).

Turn-taking, as a person does it over the phone:
- The agent's turn starts at speech onset (energy above the gate for 40 ms) in what the person hears,
  and ends after `END_OF_TURN_S` of silence. After a short human pause (`REPLY_PAUSE_S`) the person
  says the reply for that turn (`says[turn-1]`). If the agent starts again during the pause, the turn
  simply continues. A person with fewer replies than agent turns stays silent.
- `interrupt_on_turn: N`: reply N starts `INTERRUPT_AFTER_S` into the agent's N-th turn, over it.
- While speaking, the person does not count turns; once done, new agent speech is a new turn.
- A voicemail box plays its greeting, beeps and then records (hears, never answers) until the app
  hangs up or `voicemail_max_s` passes.
- With `turn_heard`, the person also keeps what they heard during the open turn and hands it over with
  the `agent_turn` entry (the call transcribes it off the audio loop).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from local.sautikit.audio import FRAME_S, SILENCE, Clip, beep
from local.sautikit.directory import DEFAULT_VOICEMAIL_GREETING, Answer, Person

END_OF_TURN_S = 0.6
REPLY_PAUSE_S = 0.25
INTERRUPT_AFTER_S = 0.7
ONSET_FRAMES = 2
GREETING_DELAY_S = 0.4

Note = Callable[..., Any]  # note(kind, ago_s=0.0, **fields) → the timeline entry it appended
TurnHeard = Callable[[Any, np.ndarray], None]  # (the agent_turn entry, what the person heard in that turn)


def _frames(seconds: float) -> int:
    return max(1, round(seconds / FRAME_S))


class SimulatedPerson:
    def __init__(
        self,
        spec: Person,
        audio_for: Callable[[str], np.ndarray | None],
        note: Note,
        turn_heard: TurnHeard | None = None,
    ) -> None:
        """`audio_for(text)` is the person's voice saying `text`, or None while it is being synthesised
        (the person then takes a moment before speaking). `turn_heard(entry, audio)` gets each closed
        agent turn's audio from its start to its last speech frame (`ear` must then be given `heard`)."""
        self.spec = spec
        self.audio_for = audio_for
        self.note = note
        self.turn_heard = turn_heard
        self.greeting_text = spec.voicemail_greeting or DEFAULT_VOICEMAIL_GREETING
        self.voicemail = spec.answer is Answer.VOICEMAIL
        self.frame_no = 0
        self.speaking: Clip | None = None
        self._speaking_meta: dict[str, Any] = {}
        # What the person will say next: (audio or None while it is still being synthesised, label, meta).
        self._queue: list[tuple[Callable[[], np.ndarray | None], str, dict[str, Any]]] = []
        self._waiting_noted = False
        # turn tracking
        self.turns = 0  # agent turns started so far
        self.in_turn = False
        self._onset = 0
        self._turn_frames = 0
        self._silent_frames = 0
        self._turn_start_frame = 0
        self._pending_reply_at: int | None = None
        self._pending_turn = 0
        self._replied_turns: set[int] = set()
        # What was heard: the open turn's frames from its start (None while no turn is open), and the
        # last few frames before one opens (its onset frames precede the moment it is detected).
        self._turn_audio: list[np.ndarray] | None = None
        self._recent: deque[np.ndarray] = deque(maxlen=ONSET_FRAMES)
        # media start (first verb) schedules hello / greeting
        self._media_at: int | None = None
        self._beep_end_frame: int | None = None
        self.voicemail_speech_frames = 0
        self._quiet_frames = 0
        self.hangup_reason: str | None = None
        self.said: list[str] = []

    # -- events from the call --------------------------------------------------------------------------
    def media_started(self) -> None:
        """The first verb started: the line now carries audio both ways."""
        if self._media_at is None:
            self._media_at = self.frame_no + _frames(GREETING_DELAY_S)

    # -- per frame -------------------------------------------------------------------------------------
    def mouth(self) -> np.ndarray:
        """The person's next 20 ms (what the app hears from the lead)."""
        self.frame_no += 1
        if self._media_at is not None and self.frame_no == self._media_at:
            self._on_media_ready()
        if self.speaking is None and self._queue:
            source, label, meta = self._queue[0]
            audio = source()
            if audio is None:
                # Still being synthesised: a person who takes a moment before answering.
                if not self._waiting_noted:
                    self._waiting_noted = True
                    self.note("lead_thinking", turn=meta.get("turn"))
            else:
                self._queue.pop(0)
                self._waiting_noted = False
                self._begin(Clip(audio, label), meta)
        if self.speaking is None:
            return SILENCE
        frame = self.speaking.next_frame()
        if self.speaking.finished:
            self._finish()
        return frame

    def ear(self, hears_speech: bool, heard: np.ndarray | None = None) -> None:
        """What the person heard this frame (speech or not; `heard` is the audio, kept for
        `turn_heard`): drives turns, timers and hang-ups."""
        if self.hangup_reason is None:
            self._check_timers(hears_speech)
        if self.voicemail:
            if hears_speech and self._beep_end_frame is not None and self.frame_no >= self._beep_end_frame:
                self.voicemail_speech_frames += 1
            return
        if self.turn_heard is not None and heard is not None:
            (self._turn_audio if self._turn_audio is not None else self._recent).append(heard)
        if self.speaking is not None:
            return
        if hears_speech:
            self._onset += 1
            self._silent_frames = 0
            if not self.in_turn and self._onset >= ONSET_FRAMES:
                self.in_turn = True
                if self._pending_reply_at is not None:
                    self._pending_reply_at = None  # the agent went on: same turn
                else:
                    self.turns += 1
                    self._turn_start_frame = self.frame_no - ONSET_FRAMES + 1
                    self._turn_frames = ONSET_FRAMES - 1
                    if self.turn_heard is not None:
                        self._turn_audio = list(self._recent)  # the onset frames: the turn's first
            if self.in_turn:
                self._turn_frames += 1
                if (
                    self.spec.interrupt_on_turn == self.turns
                    and self._turn_frames >= _frames(INTERRUPT_AFTER_S)
                    and self._has_reply(self.turns)
                ):
                    self._close_turn(interrupted=True)
                    self._reply(self.turns, interrupting=True)
            return
        self._onset = 0
        if self.in_turn:
            self._silent_frames += 1
            if self._silent_frames >= _frames(END_OF_TURN_S):
                self.in_turn = False
                self._close_turn(interrupted=False, trailing=self._silent_frames)
                if self._has_reply(self.turns):
                    # The agent may go on during the pause: the same turn, still heard from its start.
                    self._pending_reply_at = self.frame_no + _frames(REPLY_PAUSE_S)
                    self._pending_turn = self.turns
                else:
                    self._turn_audio = None
        elif self._pending_reply_at is not None and self.frame_no >= self._pending_reply_at:
            self._pending_reply_at = None
            self._turn_audio = None
            self._reply(self._pending_turn, interrupting=False)

    # -- internals -------------------------------------------------------------------------------------
    def _has_reply(self, turn: int) -> bool:
        return 1 <= turn <= len(self.spec.says) and turn not in self._replied_turns

    def _reply(self, turn: int, interrupting: bool) -> None:
        self._replied_turns.add(turn)
        text = self.spec.says[turn - 1]
        self._queue.append((lambda: self.audio_for(text), text, {"turn": turn, "interrupting": interrupting}))

    def _close_turn(self, interrupted: bool, trailing: int = 0) -> None:
        last_speech_frame = self.frame_no - trailing
        frames = last_speech_frame - self._turn_start_frame + 1
        entry = self.note(
            "agent_turn",
            ago_s=(self.frame_no - self._turn_start_frame) * FRAME_S,
            turn=self.turns,
            duration_s=round(frames * FRAME_S, 3),
            interrupted_by_lead=interrupted,
        )
        if self.turn_heard is not None and self._turn_audio:
            self.turn_heard(entry, np.concatenate(self._turn_audio[:frames]))
        if interrupted:
            self._turn_audio = None  # the person talks over the rest: a new turn comes after

    def _begin(self, clip: Clip, meta: dict[str, Any]) -> None:
        self.speaking = clip
        self._speaking_meta = meta
        if clip.label:
            self.said.append(clip.label)
        self.note("lead_speaks", text=clip.label, **meta)

    def _finish(self) -> None:
        meta = self._speaking_meta
        self.speaking = None
        self._speaking_meta = {}
        self.note("lead_done", **{k: v for k, v in meta.items() if k in {"turn", "what"}})
        if meta.get("what") == "hello" and self.in_turn:
            # "Hello?" said over the start of the agent's greeting: the greeting goes on, and it is
            # the turn this person answers; its rest is not a new turn.
            self._silent_frames = 0
        else:
            # Fresh ears: anything the agent says from here on is a new turn.
            self.in_turn = False
            self._onset = 0
            self._silent_frames = 0
            self._turn_audio = None
        if meta.get("what") == "greeting":
            tone = beep()
            self._queue.insert(0, (lambda: tone, "", {"what": "beep"}))
        elif meta.get("what") == "beep":
            self._beep_end_frame = self.frame_no
            self.note("voicemail_recording")

    def _on_media_ready(self) -> None:
        if self.voicemail:
            text = self.greeting_text
            self._queue.append((lambda: self.audio_for(text), text, {"what": "greeting"}))
        elif self.spec.hello:
            hello = self.spec.hello
            self._queue.append((lambda: self.audio_for(hello), hello, {"what": "hello"}))

    def _check_timers(self, hears_speech: bool) -> None:
        if self.spec.hangup_after_s is not None and self.frame_no * FRAME_S >= self.spec.hangup_after_s:
            self.hangup_reason = "hangup_after_s"
            return
        if self.voicemail and self._beep_end_frame is not None:
            if (self.frame_no - self._beep_end_frame) * FRAME_S >= self.spec.voicemail_max_s:
                self.hangup_reason = "voicemail_timeout"
            return
        if self.spec.hangup_on_silence_s is not None:
            if hears_speech or self.speaking is not None:
                self._quiet_frames = 0
            else:
                self._quiet_frames += 1
                if self._quiet_frames * FRAME_S >= self.spec.hangup_on_silence_s:
                    self.hangup_reason = "silence"

    @property
    def is_speaking(self) -> bool:
        return self.speaking is not None
