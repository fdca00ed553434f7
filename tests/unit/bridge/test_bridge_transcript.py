"""The call's transcript: both sides in order, the bridge's own lines once, bounded, stored on the
call record before the call is handed on, and never logged."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from bridge_harness import Harness

from bridge.conversation import CallTranscript
from bridge.engines.base import EngineFailed, TranscriptIn, TranscriptOut
from bridge.engines.fake import FakeEngine, FakeStep
from leadqual.campaign import Campaign
from leadqual.models import Outcome

HOT_SCRIPT = [
    FakeStep(
        tools=(("record_answer", {"question_id": "good_time", "value": "yes", "quote": "yes"}),),
        heard="Yes, now is fine.",
    ),
    FakeStep(
        tools=(("record_answer", {"question_id": "decision_maker", "value": "yes", "quote": "I do"}),),
        heard="Yes, I make the buying decisions.",
    ),
    FakeStep(
        tools=(("record_answer", {"question_id": "seats", "value": "forty", "quote": "forty"}),),
        heard="About forty seats.",
    ),
    FakeStep(
        tools=(("record_answer", {"question_id": "timeline", "value": "next month", "quote": "next month"}),),
        heard="Within the next month.",
    ),
]
COLD_SCRIPT = [
    FakeStep(
        tools=(("record_answer", {"question_id": "good_time", "value": "yes", "quote": "ok"}),),
        heard="Okay, go on.",
    ),
    FakeStep(
        tools=(("record_answer", {"question_id": "decision_maker", "value": "no", "quote": "my boss"}),),
        heard="No, my boss decides.",
    ),
]


def engine(script: list[FakeStep] | None = None) -> FakeEngine:
    return FakeEngine(script=script or [], ms_per_word=10, min_reply_ms=100)


async def answer_all(h: Harness, turns: int) -> None:
    for _ in range(turns):
        await h.agent_done()
        said = len(h.engine.tool_results)
        await h.speak()
        await h.until(lambda s=said: len(h.engine.tool_results) > s)


def lines(entries: list[Any]) -> list[tuple[str, str]]:
    return [(e["who"], e["text"]) for e in entries]


# -- the transcript itself -------------------------------------------------------------------------


def test_entries_are_kept_in_time_order_when_the_agents_transcript_arrives_late() -> None:
    tr = CallTranscript()
    tr.said(0.01, "Hi Wanjiku. Is now a good time?")
    tr.lead(4.2, "Yes.")
    tr.agent(9.0, "And how many seats?")  # its turn started at 9.0 ...
    tr.lead(9.6, "Forty, give or take.")  # ... the lead cut in, heard before the agent's arrived
    tr.agent(5.0, "Great, are you the person who decides?")
    assert [(e["t"], e["who"]) for e in tr.entries()] == [
        (0.01, "agent"),
        (4.2, "lead"),
        (5.0, "agent"),
        (9.0, "agent"),
        (9.6, "lead"),
    ]
    tr.lead(10.0, "   ")
    tr.agent(10.0, "")
    assert len(tr) == 5  # nothing said, nothing kept


def test_a_line_the_bridge_said_is_kept_once_in_its_exact_words_at_the_time_it_was_heard() -> None:
    tr = CallTranscript()
    tr.said(20.0, "Thanks for your time, Wanjiku. Goodbye.")
    tr.lead(20.1, "Bye.")
    # The engine's own transcript of the line, as a speech model hears itself.
    tr.agent(20.3, "Thanks for your time, Wanjiku, goodbye!")
    assert lines(tr.entries()) == [("lead", "Bye."), ("agent", "Thanks for your time, Wanjiku. Goodbye.")]
    assert tr.entries()[1]["t"] == 20.3
    # Once matched, the same words again are the model's own: a new entry.
    tr.agent(25.0, "Thanks for your time, Wanjiku. Goodbye.")
    assert len(tr) == 3


def test_a_line_cut_off_by_the_lead_keeps_only_what_was_spoken() -> None:
    tr = CallTranscript()
    tr.said(1.0, "Hi Wanjiku, this is Amina from Acme CRM. This call may be recorded. Is now a good time?")
    tr.agent(1.2, "Hi Wanjiku, this is Amina from Acme CRM.")
    assert lines(tr.entries()) == [("agent", "Hi Wanjiku, this is Amina from Acme CRM.")]
    # A line that never came back from the engine stays as the bridge gave it; a later line that
    # does come back is matched past it.
    tr.said(30.0, "Are you still there?")
    tr.said(31.0, "Thanks for your time. Goodbye.")
    tr.agent(31.5, "Thanks for your time. Goodbye.")
    assert lines(tr.entries())[1:] == [
        ("agent", "Are you still there?"),
        ("agent", "Thanks for your time. Goodbye."),
    ]


def test_the_transcript_is_bounded_to_its_latest_entries_and_texts_are_cut() -> None:
    tr = CallTranscript(max_entries=200, max_text=1000)
    for i in range(250):
        tr.lead(float(i), f"{i:03d} " + "word " * 300)
    entries = tr.entries()
    assert len(entries) == 200
    assert [int(e["text"][:3]) for e in entries] == list(range(50, 250))
    assert all(len(e["text"]) == 1000 for e in entries)
    entries[0]["text"] = "changed"
    assert tr.entries()[0]["text"] != "changed"  # a copy: safe to hand to the store's thread


# -- on a call -------------------------------------------------------------------------------------


async def test_a_hot_call_stores_both_sides_in_order_before_the_transfer(example_campaign: Campaign) -> None:
    h = Harness(example_campaign, engine(HOT_SCRIPT))
    await h.start()
    assert h.ws is not None
    stored_at_close: list[list[Any]] = []
    close = h.ws.close

    async def closing(code: int = 1000, reason: str = "") -> None:
        stored_at_close.append(h.store.transcript("L1"))  # closing the stream is the transfer
        await close(code, reason)

    h.ws.close = closing  # type: ignore[method-assign]
    await answer_all(h, 4)
    await h.finished()
    assert h.store.outcomes["L1"][0] is Outcome.HOT_TRANSFERRED
    transcript = h.store.transcript("L1")
    said = lines(transcript)
    opening, handoff = h.engine.said[0], h.engine.said[-1]
    assert handoff == example_campaign.transfer.handoff_line
    assert [who for who, _ in said] == ["agent", "lead"] * 4 + ["agent"]
    assert said[0] == ("agent", opening)  # once, though the engine also sent its transcript of it
    assert [text for who, text in said if who == "lead"] == [s.heard for s in HOT_SCRIPT]
    assert said[2][1].startswith("Are you the person who makes buying decisions")
    assert said[4][1] == "Roughly how many seats would your team need?"
    assert said[-1] == ("agent", handoff)
    times = [e["t"] for e in transcript]
    assert times == sorted(times)
    assert 0 <= times[0] < 1.0
    assert all(round(t, 2) == t for t in times)
    # Stored when decided, before the stream closed for the transfer; the end wrote nothing new.
    assert stored_at_close == [transcript]
    writes = [w for w in h.store.writes if w[0] == "update_call" and "transcript" in w[1][2]]
    assert len(writes) == 1


async def test_a_cold_call_stores_its_transcript_before_the_hangup(example_campaign: Campaign) -> None:
    h = Harness(example_campaign, engine(COLD_SCRIPT))
    stored_at_hangup: list[list[Any]] = []
    await h.start()
    h.carrier.on_hangup = lambda _sid: (
        stored_at_hangup.append(h.store.transcript("L1")),
        h.ws.carrier_closes() if h.ws else None,
    )
    await answer_all(h, 2)
    await h.finished()
    closing = "Thanks for your time, Wanjiku. Have a great day. Goodbye."
    (at_hangup,) = stored_at_hangup
    assert lines(at_hangup)[1:] == [
        ("lead", "Okay, go on."),
        ("agent", "Are you the person who makes buying decisions for software at Duka Ltd?"),
        ("lead", "No, my boss decides."),
        ("agent", closing),
    ]
    assert at_hangup == h.store.transcript("L1")


async def test_the_transcript_survives_a_model_failure_and_a_failed_write(example_campaign: Campaign) -> None:
    eng = engine()
    h = await Harness(example_campaign, eng).start()
    await h.agent_done()
    eng.emit(TranscriptIn("Sorry, who is this?", final=False))  # partial: not kept
    eng.emit(TranscriptIn("Sorry, who is this?", final=True))
    eng.emit(TranscriptOut("This is Amina from Acme CRM."))
    await h.until(lambda: h.conv is not None and len(h.conv.transcript) == 3)
    h.store.fail_call_updates = 1  # the write at the decision fails; the one at the end must not lose it
    eng.emit(EngineFailed("upstream closed 1011"))
    await h.finished()
    assert h.store.outcomes["L1"][0] is Outcome.FAILED
    fallback = example_campaign.render(example_campaign.lines.fallback, h.conv.lead)  # type: ignore[union-attr]
    assert lines(h.store.transcript("L1")) == [
        ("agent", h.engine.said[0]),
        ("lead", "Sorry, who is this?"),
        ("agent", "This is Amina from Acme CRM."),
        ("agent", fallback),  # played by the local voice: the engine was gone
    ]
    assert h.store.calls[("L1", 1)]["outcome"] is Outcome.FAILED


async def test_a_long_call_stores_a_bounded_transcript(example_campaign: Campaign) -> None:
    eng = engine()
    h = await Harness(example_campaign, eng).start()
    await h.agent_done()
    for i in range(230):
        eng.emit(TranscriptIn(f"{i:03d} " + "blah " * 400, final=True))
    await h.until(lambda: h.conv is not None and h.conv.transcript.version >= 231)
    assert h.ws is not None
    h.ws.carrier_closes()
    await h.finished()
    stored = h.store.transcript("L1")
    assert len(stored) == 200
    assert stored[-1]["text"].startswith("229 ")
    assert stored[0]["text"].startswith("030 ")  # the opening and the first 30 lines dropped
    assert max(len(e["text"]) for e in stored) == 1000


async def test_the_transcript_is_never_logged(
    example_campaign: Campaign, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    h = Harness(example_campaign, engine(COLD_SCRIPT))
    h.store.fail_call_updates = 10  # failures log too: still without the words
    await h.start()
    await answer_all(h, 2)
    await h.finished()
    await asyncio.sleep(0)
    assert any(r.name == "bridge" for r in caplog.records)  # the failed writes were logged
    logged = " ".join(f"{r.getMessage()} {r.__dict__} {r.exc_text or ''}" for r in caplog.records)
    for words in ("Okay, go on", "my boss decides", "Goodbye", "Is now a good time"):
        assert words not in logged
