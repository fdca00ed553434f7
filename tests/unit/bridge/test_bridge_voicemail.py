"""Leaving a voicemail: the box records only after its greeting and beep, so the message waits.

The model spots the machine early (from the greeting's first words); speaking then would put the
message over the rest of the greeting, where the box does not record it."""

from __future__ import annotations

import asyncio

import pytest
from bridge_harness import Harness

from bridge import conversation
from bridge.audio import frame_bytes, peak, silence, tone
from bridge.engines.fake import FakeEngine, FakeStep
from leadqual.campaign import Campaign, VoicemailPolicy
from leadqual.models import Outcome

RATE = 16000
MESSAGE = "Hi {first_name}, Amina from Acme CRM. We will try again soon."
SAID = "Hi Wanjiku, Amina from Acme CRM. We will try again soon."


def leaving_a_message(campaign: Campaign) -> Campaign:
    voicemail = campaign.voicemail.model_copy(
        update={"policy": VoicemailPolicy.LEAVE_MESSAGE, "message": MESSAGE}
    )
    return campaign.model_copy(update={"voicemail": voicemail})


async def started(campaign: Campaign) -> Harness:
    # The model calls end_call(voicemail) after the greeting's first words (one utterance).
    step = FakeStep(tools=(("end_call", {"reason": "voicemail"}),))
    h = await Harness(campaign, FakeEngine(script=[step], ms_per_word=10, min_reply_ms=100)).start()
    await h.agent_done()
    return h


class Box:
    """Plays a voicemail box into the call in real time, 20 ms a frame, then its silent recording."""

    def __init__(self, h: Harness, greeting: bytes) -> None:
        self.h = h
        self.greeting = greeting
        self.loud_until = 0.0  # loop time the last greeting or beep frame went in
        self.task = asyncio.create_task(self._play())

    async def _play(self) -> None:
        ws = self.h.ws
        assert ws is not None
        loop = asyncio.get_running_loop()
        size = frame_bytes(RATE)
        frames = [self.greeting[i : i + size] for i in range(0, len(self.greeting), size)]
        quiet = silence(20, RATE)
        while ws.closed_with is None and not (self.h.task and self.h.task.done()):
            frame = frames.pop(0) if frames else quiet
            ws.inbox.put_nowait(frame)
            if peak(frame) >= conversation.SPEECH_PEAK:
                self.loud_until = loop.time()
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_the_message_starts_after_the_greeting_and_beep_not_when_the_machine_is_detected(
    example_campaign: Campaign,
) -> None:
    h = await started(leaving_a_message(example_campaign))
    first_words = tone(220.0, 300, RATE) + silence(350, RATE)  # the model decides here
    rest = tone(220.0, 900, RATE) + silence(200, RATE) + tone(1000.0, 300, RATE)  # greeting, beep
    box = Box(h, first_words + rest)
    loop = asyncio.get_running_loop()
    try:
        await h.until(lambda: SAID in h.engine.said, limit_s=10)
        said_at = loop.time()
        beep_end = box.loud_until
        assert beep_end > 0
        # Quiet for VOICEMAIL_QUIET_S after the beep first (a little slack for the loop's ticks).
        assert said_at - beep_end >= conversation.VOICEMAIL_QUIET_S - 0.1
        assert said_at - beep_end < conversation.VOICEMAIL_QUIET_S + 1.0
        # Once it knew it was a machine the model heard none of the rest of the greeting.
        heard_ms = h.engine.audio_in_bytes / (RATE * 2) * 1000
        assert heard_ms < 650 + 300, heard_ms
        await h.finished()
    finally:
        await box.stop()
    assert h.engine.said[-1] == SAID
    assert h.carrier.methods() == ["hangup"]
    assert h.store.outcomes["L1"][0] is Outcome.VOICEMAIL


async def test_a_greeting_that_never_ends_still_gets_the_message_after_the_longest_wait(
    example_campaign: Campaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conversation, "VOICEMAIL_WAIT_MAX_S", 0.8)
    h = await started(leaving_a_message(example_campaign))
    box = Box(h, tone(220.0, 300, RATE) + silence(350, RATE) + tone(220.0, 10_000, RATE))
    loop = asyncio.get_running_loop()
    try:
        await h.until(lambda: h.conv is not None and h.conv._awaiting_beep, limit_s=5)
        waiting_since = loop.time()
        await h.until(lambda: SAID in h.engine.said, limit_s=5)
        assert 0.6 <= loop.time() - waiting_since <= 1.6
        await h.finished()
    finally:
        await box.stop()
    assert h.carrier.methods() == ["hangup"]


async def test_hanging_up_on_a_voicemail_does_not_wait(example_campaign: Campaign) -> None:
    h = await started(example_campaign)  # the example campaign's policy: hang up
    box = Box(h, tone(220.0, 300, RATE) + silence(350, RATE) + tone(220.0, 3000, RATE))
    loop = asyncio.get_running_loop()
    try:
        start = loop.time()
        await h.finished()
        assert loop.time() - start < 2.0  # gone during the greeting, no message
    finally:
        await box.stop()
    assert len(h.engine.said) == 1  # the opening only
    assert h.store.outcomes["L1"][0] is Outcome.VOICEMAIL
