"""One conversation end to end against an in-memory socket and the scripted fake engine."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from bridge_harness import LEAD, SID, Harness

from bridge.conversation import EndKind
from bridge.engines.base import AudioOut, EngineFailed, Interrupted, TurnComplete
from bridge.engines.fake import FakeEngine, FakeStep
from bridge.protocol import KILL_AUDIO
from bridge.testing import PatchingCarrier, RecordingCarrier
from leadqual.campaign import Campaign, FallbackAction, TransferStrategy, VoicemailPolicy
from leadqual.errors import SautikitError
from leadqual.models import EndReason, Outcome

HOT_SCRIPT = [
    FakeStep(tools=(("record_answer", {"question_id": "good_time", "value": "yes", "quote": "yes sure"}),)),
    FakeStep(
        tools=(("record_answer", {"question_id": "decision_maker", "value": "yes", "quote": "I decide"}),)
    ),
    FakeStep(tools=(("record_answer", {"question_id": "seats", "value": "forty", "quote": "about forty"}),)),
    FakeStep(
        tools=(("record_answer", {"question_id": "timeline", "value": "next month", "quote": "next month"}),)
    ),
]
COLD_SCRIPT = [
    FakeStep(tools=(("record_answer", {"question_id": "good_time", "value": "yes", "quote": "ok"}),)),
    FakeStep(
        tools=(("record_answer", {"question_id": "decision_maker", "value": "no", "quote": "my boss"}),)
    ),
]


def with_transfer(campaign: Campaign, **changes: Any) -> Campaign:
    return campaign.model_copy(update={"transfer": campaign.transfer.model_copy(update=changes)})


def engine(script: list[FakeStep] | None = None, **kwargs: Any) -> FakeEngine:
    return FakeEngine(script=script or [], ms_per_word=10, min_reply_ms=100, **kwargs)


async def answer_all(h: Harness, turns: int) -> None:
    for _ in range(turns):
        await h.agent_done()
        said = len(h.engine.tool_results)
        await h.speak()
        await h.until(lambda s=said: len(h.engine.tool_results) > s)


async def test_greets_at_once_resampled_and_framed(example_campaign: Campaign) -> None:
    h = await Harness(example_campaign, engine()).start()
    assert h.ws is not None
    await h.until(lambda: len(h.ws.audio()) > 5)
    assert h.engine.started is not None
    assert h.engine.said[0].startswith("Hi Wanjiku, this is Amina from Acme CRM.")
    assert h.engine.said[0].endswith("Is now a good time for three quick questions?")
    # 24 kHz from the engine, 16 kHz to the platform, in 640-byte frames.
    frames = h.ws.audio()
    assert all(len(f) == 640 for f in frames[:-1])
    await h.until(lambda: h.engine._events.empty() and h.conv is not None and not h.conv._in_turn)
    total = sum(len(f) for f in h.ws.audio())
    assert abs(total - 16000 * 2 * 0.27) < 640 * 2  # 27 words * 10 ms, at 16 kHz
    assert h.conv is not None
    assert h.conv.metrics.ttfw_ms is not None
    assert h.conv.metrics.ttfw_ms > 0  # its size is `make bench`'s ttfw_p95_ms
    h.ws.carrier_closes()
    await h.finished()
    assert h.store.calls[("L1", 1)]["time_to_first_word_ms"] == pytest.approx(h.conv.metrics.ttfw_ms, abs=0.2)
    assert h.store.calls[("L1", 1)]["session_id"] == SID
    record = json.loads(h.metrics[-1])
    assert record["TimeToFirstWordMs"] == pytest.approx(h.conv.metrics.ttfw_ms, abs=0.2)
    assert record["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Leadqual"
    assert record["outcome"] == "cold_closed"  # hung up before any decision
    assert record["reason"] == "lead hung up"


async def test_hot_dial_after_stream_closes_the_socket_after_the_handoff(example_campaign: Campaign) -> None:
    h = await Harness(example_campaign, engine(HOT_SCRIPT)).start()
    assert h.ws is not None
    await answer_all(h, 4)
    await h.finished()
    handoff = example_campaign.transfer.handoff_line
    assert h.engine.said[-1] == handoff
    assert h.ws.closed_with == (1000, "transfer")
    assert h.carrier.calls == []  # no REST hangup: closing the stream runs the <Dial>
    # The handoff line was heard before the socket closed: last frame + its playout < close time.
    assert h.conv is not None
    assert h.conv.clock.play_end <= asyncio.get_running_loop().time()
    outcome, sc, _ = h.store.outcomes["L1"]
    assert outcome is Outcome.HOT_TRANSFERRED
    assert sc is not None
    assert sc.verdict.value == "hot"
    assert h.store.calls[("L1", 1)]["transferred_to"] == "+254711999000"
    assert [a.value for a in h.store.answers["L1"].values()] == [True, True, 40, 1]
    # The rep's briefing went out with the answers and reasons.
    (msg,) = h.notifier.messages
    assert msg["session_id"] == SID
    assert [a["question_id"] for a in msg["answers"]] == ["good_time", "decision_maker", "seats", "timeline"]
    assert msg["score"]["verdict"] == "hot"
    assert h.ws.sent_after_close == 0
    metrics = json.loads(h.metrics[-1])
    assert (metrics["LeadsHot"], metrics["Transfers"]) == (1, 1)


async def test_each_answer_is_saved_before_the_model_hears_the_result(example_campaign: Campaign) -> None:
    eng = engine(HOT_SCRIPT[:2])
    h = Harness(example_campaign, eng)
    seen_at_save: list[int] = []
    original = h.store.save_answer

    def save(lead_id: str, answer: Any) -> None:
        seen_at_save.append(len(eng.tool_results))
        original(lead_id, answer)

    h.store.save_answer = save  # type: ignore[method-assign]
    await h.start()
    await answer_all(h, 2)
    assert seen_at_save == [0, 1]  # saved while the model still waited for its tool result
    assert eng.tool_results[0][1]["status"] == "continue"
    assert eng.tool_results[0][1]["next_question_id"] == "decision_maker"
    assert h.ws is not None
    h.ws.carrier_closes()
    await h.finished()


async def test_cold_says_closing_then_hangs_up_over_rest(example_campaign: Campaign) -> None:
    h = await Harness(example_campaign, engine(COLD_SCRIPT)).start()
    assert h.ws is not None
    await answer_all(h, 2)
    await h.finished()
    assert h.engine.said[-1] == "Thanks for your time, Wanjiku. Have a great day. Goodbye."
    assert h.carrier.methods() == ["hangup"]
    assert h.carrier.calls[0][1] == SID
    # Never just closed before the hangup: the carrier closed it (on_hangup) or we did after.
    assert h.ws.closed_with is None or h.ws.closed_with[0] == 1000
    assert h.store.outcomes["L1"][0] is Outcome.COLD_CLOSED
    assert json.loads(h.metrics[-1])["LeadsCold"] == 1


async def test_hangup_waits_until_the_closing_line_is_heard(example_campaign: Campaign) -> None:
    h = Harness(example_campaign, engine(COLD_SCRIPT))
    hung_up_at: list[float] = []
    loop = asyncio.get_running_loop()
    h.carrier.on_hangup = lambda _sid: hung_up_at.append(loop.time())
    await h.start()
    h.carrier.on_hangup = lambda _sid: (
        hung_up_at.append(loop.time()),
        h.ws.carrier_closes() if h.ws else None,
    )
    await answer_all(h, 2)
    await h.finished()
    assert h.conv is not None
    assert hung_up_at[0] >= h.conv.clock.play_end


async def test_cold_close_keeps_the_socket_open_when_the_rest_hangup_fails(
    example_campaign: Campaign,
) -> None:
    carrier = RecordingCarrier()
    carrier.fail["hangup"] = SautikitError(503, "service.unavailable", "try again later", True)
    h = await Harness(example_campaign, engine(COLD_SCRIPT), carrier=carrier).start()
    assert h.ws is not None
    await answer_all(h, 2)
    # Both tries fail (a second apart); the bridge then stops talking and waits for the lead.
    await h.until(lambda: carrier.methods() == ["hangup", "hangup"] and h.conv is not None and h.conv._silent)
    # Past the grace after which a successful hang-up closes the socket (0.2 s here): still open,
    # because closing it would let the carrier run the <Dial> after the <Stream>, a transfer.
    await asyncio.sleep(0.5)
    assert h.ws.closed_with is None
    assert h.task is not None
    assert not h.task.done()
    assert h.engine.said[-1] == "Thanks for your time, Wanjiku. Have a great day. Goodbye."
    h.ws.carrier_closes()  # the lead hangs up
    await h.finished()
    assert h.ws.closed_with is None  # never closed by the bridge, before or after
    assert carrier.methods() == ["hangup", "hangup"]  # no supervision either
    outcome, score, reason = h.store.outcomes["L1"]
    assert outcome is Outcome.COLD_CLOSED
    assert score is not None
    assert score.verdict.value == "cold"
    assert reason == h.store.calls[("L1", 1)]["outcome_reason"]
    assert "transferred_to" not in h.store.calls[("L1", 1)]
    record = json.loads(h.metrics[-1])
    assert (record["outcome"], record["ending"]) == ("cold_closed", "cold")
    assert "Transfers" not in record


FAST_POLL = {"supervision_poll_s": 0.01}
SUPERVISE = {"strategy": TransferStrategy.SUPERVISE_BARGE}


class WatchedCarrier(PatchingCarrier):
    """Notes, at every status read, what the agent had said by then and whether the bridge had
    already called the lead transferred."""

    def __init__(self, h: list[Harness], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._h = h
        self.reads: list[tuple[str | None, int, str | None]] = []  # (status, lines said, transferred_to)

    def get_supervision(self, call_or_session_id: str) -> dict[str, Any] | None:
        sup = super().get_supervision(call_or_session_id)
        h = self._h[0]
        assert h.conv is not None
        status = None if sup is None else sup["status"]
        self.reads.append((status, len(h.engine.said), h.conv.result.transferred_to))
        return sup


def watched(campaign: Campaign, script: list[FakeStep], **kwargs: Any) -> tuple[Harness, WatchedCarrier]:
    box: list[Harness] = []
    carrier = WatchedCarrier(box, **kwargs)
    h = Harness(campaign, engine(script), carrier=carrier, config=FAST_POLL)
    box.append(h)
    return h, carrier


async def test_supervise_barge_with_whisper_briefs_the_rep_once_on_the_line_then_barges(
    example_campaign: Campaign,
) -> None:
    campaign = with_transfer(example_campaign, **SUPERVISE, whisper=True)
    h, carrier = watched(campaign, HOT_SCRIPT, rings=3)
    await h.start()
    assert h.ws is not None
    await answer_all(h, 4)
    await h.until(lambda: h.conv is not None and h.conv.result.silent)
    # Rung in whisper; the rep's status read until they picked up; the one PATCH is the switch to
    # barge, after the summary. No PATCH stands in for "picked up".
    assert carrier.actions() == ["start_supervision", "update_supervision"]
    assert carrier.calls[0][2] == {"mode": "whisper", "number": "+254711999000", "key": "lq-L1-1-transfer"}
    assert carrier.calls[-1][2] == {"mode": "barge"}
    assert [r[0] for r in carrier.reads] == ["ringing", "ringing", "ringing", "active"]
    # While it rang the agent had said the handoff line and nothing more; the summary came after.
    said_while_ringing = {n for _, n, _ in carrier.reads}
    assert len(said_while_ringing) == 1
    (n,) = said_while_ringing
    assert h.engine.said[n - 1] == campaign.transfer.handoff_line
    assert len(h.engine.said) == n + 1
    assert h.engine.said[-1].startswith("I'm connecting you with Wanjiku Kamau from Duka Ltd, who ")
    assert all(t is None for _, _, t in carrier.reads)  # not transferred before the rep was on
    # Silent: the socket stays open and nothing more is sent (or relayed) while the rep talks.
    sent, heard = len(h.ws.sent), h.engine.audio_in_bytes
    await h.speak()
    await asyncio.sleep(0.3)
    assert len(h.ws.sent) == sent
    assert h.engine.audio_in_bytes == heard
    assert h.ws.closed_with is None
    assert not h.task.done()  # type: ignore[union-attr]
    h.ws.carrier_closes()  # the call ends on the carrier's side
    await h.finished()
    assert h.store.outcomes["L1"][0] is Outcome.HOT_TRANSFERRED
    assert h.store.calls[("L1", 1)]["transferred_to"] == "+254711999000"


async def test_the_engine_hears_nobody_while_the_rep_is_brought_in(example_campaign: Campaign) -> None:
    """The rep's first words (whisper lets the agent hear them) must not cut the summary short."""
    campaign = with_transfer(example_campaign, **SUPERVISE, whisper=True)
    h, carrier = watched(campaign, HOT_SCRIPT, rings=30)
    await h.start()
    await answer_all(h, 4)
    await h.until(lambda: len(carrier.reads) >= 2)
    assert h.conv is not None
    heard = h.engine.audio_in_bytes
    interruptions = list(h.engine.interrupted_at)  # any from the interview itself are not the point
    for _ in range(3):
        await h.speak(400, 200)
    await h.until(lambda: h.conv is not None and h.conv.result.silent)
    assert h.engine.audio_in_bytes == heard
    assert h.engine.interrupted_at == interruptions
    assert h.engine.said[-1].startswith("I'm connecting you with")
    assert h.ws is not None
    h.ws.carrier_closes()
    await h.finished()
    assert h.store.outcomes["L1"][0] is Outcome.HOT_TRANSFERRED


async def test_rep_who_never_answers_gets_the_fallback_line_and_a_callback(
    example_campaign: Campaign,
) -> None:
    campaign = with_transfer(
        # model_copy skips validation: a ring timeout shorter than a real campaign may set
        example_campaign,
        **SUPERVISE,
        whisper=True,
        ring_timeout_s=0.3,
    )
    h, carrier = watched(campaign, HOT_SCRIPT, supervisor=None)  # rings for ever
    await h.start()
    await answer_all(h, 4)
    await h.finished(limit_s=15)
    assert carrier.actions() == ["start_supervision", "stop_supervision", "hangup"]
    assert len(carrier.reads) >= 5  # polled for the whole ring timeout
    assert h.engine.said[-1] == campaign.transfer.fallback_line
    assert not any(line.startswith("I'm connecting you") for line in h.engine.said)  # no summary
    outcome, score, reason = h.store.outcomes["L1"]
    assert outcome is Outcome.CALLBACK_REQUESTED
    assert score is not None
    assert score.verdict.value == "hot"
    assert reason == "transfer failed: the rep did not answer"
    assert "transferred_to" not in h.store.calls[("L1", 1)]


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        ("busy", "transfer failed: the rep was busy"),
        ("no_answer", "transfer failed: the rep did not answer"),
        ("failed", "transfer failed: the rep could not be reached"),
        ("ended", "transfer failed: the rep did not join (ended)"),
    ],
)
@pytest.mark.parametrize("whisper", [True, False])
async def test_a_rep_who_will_not_join_fails_the_transfer_at_once(
    example_campaign: Campaign, status: str, reason: str, whisper: bool
) -> None:
    campaign = with_transfer(example_campaign, **SUPERVISE, whisper=whisper)  # ring timeout 20 s
    h, carrier = watched(campaign, HOT_SCRIPT, rings=1, supervisor=status)
    await h.start()
    await answer_all(h, 4)
    await h.finished(limit_s=10)
    assert [r[0] for r in carrier.reads] == ["ringing", status]
    assert carrier.actions() == ["start_supervision", "stop_supervision", "hangup"]
    assert h.engine.said[-1] == campaign.transfer.fallback_line
    assert h.store.outcomes["L1"][0] is Outcome.CALLBACK_REQUESTED
    assert h.store.outcomes["L1"][2] == reason
    assert "transferred_to" not in h.store.calls[("L1", 1)]
    assert h.store.calls[("L1", 1)]["outcome_reason"] == reason  # per attempt: the retry keeps it


async def test_barge_without_whisper_counts_as_transferred_only_once_the_rep_is_on(
    example_campaign: Campaign,
) -> None:
    campaign = with_transfer(example_campaign, **SUPERVISE, whisper=False)
    h, carrier = watched(campaign, HOT_SCRIPT, rings=4)
    await h.start()
    await answer_all(h, 4)
    await h.until(lambda: h.conv is not None and h.conv.result.silent)
    assert carrier.actions() == ["start_supervision"]
    assert carrier.calls[0][2]["mode"] == "barge"
    assert [r[0] for r in carrier.reads] == ["ringing"] * 4 + ["active"]
    assert all(t is None for _, _, t in carrier.reads)
    assert h.engine.said[-1] == campaign.transfer.handoff_line  # no summary without whisper
    assert h.ws is not None
    h.ws.carrier_closes()
    await h.finished()
    assert h.store.outcomes["L1"][0] is Outcome.HOT_TRANSFERRED
    assert h.store.calls[("L1", 1)]["transferred_to"] == "+254711999000"


async def test_the_lead_hanging_up_while_the_rep_rings_is_a_callback_not_a_transfer(
    example_campaign: Campaign,
) -> None:
    campaign = with_transfer(example_campaign, **SUPERVISE, whisper=False)
    h, carrier = watched(campaign, HOT_SCRIPT, supervisor=None)
    await h.start()
    await answer_all(h, 4)
    await h.until(lambda: len(carrier.reads) >= 3)
    assert h.ws is not None
    h.ws.carrier_closes()  # the lead hangs up
    await h.finished()
    outcome, _, reason = h.store.outcomes["L1"]
    assert outcome is Outcome.CALLBACK_REQUESTED
    assert reason == "the call ended before the rep joined"
    assert "transferred_to" not in h.store.calls[("L1", 1)]


async def test_a_conflicting_patch_is_retried_while_the_rep_is_on_the_line(
    example_campaign: Campaign,
) -> None:
    campaign = with_transfer(example_campaign, **SUPERVISE, whisper=True)
    h, carrier = watched(campaign, HOT_SCRIPT, conflicts=2)
    await h.start()
    await answer_all(h, 4)
    await h.until(lambda: h.conv is not None and h.conv.result.silent)
    assert carrier.methods()[-5:] == [
        "update_supervision",  # 409 in progress
        "get_supervision",  # still active: retry
        "update_supervision",  # 409 again
        "get_supervision",
        "update_supervision",  # barge
    ]
    assert h.ws is not None
    h.ws.carrier_closes()
    await h.finished()
    assert h.store.outcomes["L1"][0] is Outcome.HOT_TRANSFERRED


async def test_a_rep_who_leaves_during_the_summary_gives_the_call_back(example_campaign: Campaign) -> None:
    campaign = with_transfer(example_campaign, **SUPERVISE, whisper=True)
    h, carrier = watched(campaign, HOT_SCRIPT)
    original = carrier.update_supervision

    def leave_then_patch(call_or_session_id: str, *, mode: str) -> dict[str, Any]:
        assert carrier.supervision is not None
        carrier.supervision["status"] = "ended"  # the rep hung up while the summary played
        return original(call_or_session_id, mode=mode)

    carrier.update_supervision = leave_then_patch  # type: ignore[method-assign]
    await h.start()
    await answer_all(h, 4)
    await h.finished(limit_s=10)
    assert carrier.actions() == ["start_supervision", "update_supervision", "stop_supervision", "hangup"]
    assert h.engine.said[-1] == campaign.transfer.fallback_line
    outcome, _, reason = h.store.outcomes["L1"]
    assert outcome is Outcome.CALLBACK_REQUESTED
    assert reason == "transfer failed: could not switch the rep to barge"


async def test_supervise_barge_without_patch_goes_straight_to_barge(example_campaign: Campaign) -> None:
    campaign = with_transfer(example_campaign, **SUPERVISE, whisper=True)
    h = await Harness(campaign, engine(HOT_SCRIPT), carrier=RecordingCarrier(), config=FAST_POLL).start()
    assert h.ws is not None
    await answer_all(h, 4)
    await h.until(lambda: h.conv is not None and h.conv.result.silent)
    assert [(m, k["mode"]) for m, _, k in h.carrier.calls if m != "get_supervision"] == [
        ("start_supervision", "barge")
    ]
    assert "get_supervision" in h.carrier.methods()
    h.ws.carrier_closes()
    await h.finished()


async def test_failed_supervision_says_the_fallback_and_hangs_up(example_campaign: Campaign) -> None:
    campaign = with_transfer(example_campaign, **SUPERVISE, whisper=False)
    carrier = RecordingCarrier()
    carrier.fail["start_supervision"] = SautikitError(409, "calls.supervision_in_progress", "busy", False)
    h = await Harness(campaign, engine(HOT_SCRIPT), carrier=carrier).start()
    await answer_all(h, 4)
    await h.finished()
    assert carrier.methods() == ["start_supervision", "hangup"]
    assert h.engine.said[-1] == campaign.transfer.fallback_line
    outcome, _, reason = h.store.outcomes["L1"]
    assert outcome is Outcome.CALLBACK_REQUESTED
    assert reason is not None
    assert reason.startswith("transfer failed")


async def test_barge_in_kills_audio_at_once_and_drops_the_rest_of_the_reply(
    example_campaign: Campaign,
) -> None:
    eng = engine()
    h = await Harness(example_campaign, eng).start()
    assert h.ws is not None
    assert h.conv is not None
    await h.agent_done()  # the greeting has been heard
    start = len(h.ws.sent)
    loop = asyncio.get_running_loop()
    chunk = bytes(4800)  # 100 ms at 24 kHz
    for _ in range(10):
        eng.emit(AudioOut(chunk))
    await h.until(lambda: len(h.ws.sent) >= start + 49)
    await asyncio.sleep(0.25)  # 250 ms of a 1 s reply heard
    interrupted_at = loop.time()
    eng.emit(Interrupted())
    for _ in range(5):
        eng.emit(AudioOut(chunk))  # the rest of the interrupted reply still arriving
    eng.emit(TurnComplete())
    await h.until(lambda: KILL_AUDIO in h.ws.texts())
    kill_index = next(i for i, (_, m) in enumerate(h.ws.sent) if m == KILL_AUDIO)
    kill_at = h.ws.sent[kill_index][0]
    assert kill_at - interrupted_at < 0.02  # within one 20 ms frame
    await h.until(lambda: len(eng.truncations) == 1)
    assert 200 <= eng.truncations[0] <= 400
    await asyncio.sleep(0.05)
    assert all(isinstance(m, str) for _, m in h.ws.sent[kill_index + 1 :])  # nothing of that reply
    assert h.conv.metrics.interruptions == 1
    # The next reply plays normally.
    eng.emit(AudioOut(chunk))
    eng.emit(TurnComplete())
    await h.until(lambda: any(isinstance(m, bytes) for _, m in h.ws.sent[kill_index + 1 :]))
    h.ws.carrier_closes()
    await h.finished()


async def test_engine_failure_plays_the_local_fallback_and_hangs_up(example_campaign: Campaign) -> None:
    eng = engine()
    h = await Harness(example_campaign, eng).start()
    assert h.ws is not None
    await h.until(lambda: eng.started is not None)
    await asyncio.sleep(0.05)
    before = len(h.ws.audio())
    eng.emit(EngineFailed("upstream closed 1011"))
    await h.finished()
    assert len(h.ws.audio()) - before >= 10  # the 200 ms local clip, framed
    assert h.carrier.methods() == ["hangup"]
    outcome, _, reason = h.store.outcomes["L1"]
    assert outcome is Outcome.FAILED
    assert reason is not None
    assert "upstream closed 1011" in reason
    assert json.loads(h.metrics[-1])["EngineFailures"] == 1


async def test_engine_that_cannot_start_gets_the_fallback_action_transfer(example_campaign: Campaign) -> None:
    campaign = example_campaign.model_copy(update={"fallback_action": FallbackAction.TRANSFER})
    h = await Harness(campaign, engine(fail_on_start=True)).start()
    await h.finished()
    assert h.ws is not None
    assert len(h.ws.audio()) >= 10  # fallback clip first
    assert h.ws.closed_with == (1000, "transfer")
    assert h.store.outcomes["L1"][0] is Outcome.FAILED
    assert h.store.calls[("L1", 1)]["transferred_to"] == "+254711999000"


async def test_opt_out_adds_to_do_not_call_before_the_goodbye(example_campaign: Campaign) -> None:
    h = await Harness(
        example_campaign, engine([FakeStep(tools=(("end_call", {"reason": "opt_out"}),))])
    ).start()
    await h.agent_done()
    await h.speak()
    await h.finished()
    assert h.store.dnc == {"+254711000111": "opted out on a call"}
    assert h.engine.said[-1] == example_campaign.lines.opt_out
    assert h.carrier.methods() == ["hangup"]
    assert h.store.outcomes["L1"][0] is Outcome.OPTED_OUT


@pytest.mark.parametrize("policy", [VoicemailPolicy.HANG_UP, VoicemailPolicy.LEAVE_MESSAGE])
async def test_voicemail_policy(example_campaign: Campaign, policy: VoicemailPolicy) -> None:
    message = "Hi {first_name}, Amina from Acme CRM. We will try again soon."
    campaign = example_campaign.model_copy(
        update={
            "voicemail": example_campaign.voicemail.model_copy(update={"policy": policy, "message": message})
        }
    )
    h = await Harness(campaign, engine([FakeStep(tools=(("end_call", {"reason": "voicemail"}),))])).start()
    await h.agent_done()
    await h.speak()
    await h.finished()
    assert h.carrier.methods() == ["hangup"]
    assert h.store.outcomes["L1"][0] is Outcome.VOICEMAIL
    left = h.engine.said[-1] == "Hi Wanjiku, Amina from Acme CRM. We will try again soon."
    assert left is (policy is VoicemailPolicy.LEAVE_MESSAGE)
    assert len(h.engine.said) == (2 if left else 1)


async def test_callback_request_from_end_when(example_campaign: Campaign) -> None:
    step = FakeStep(
        tools=(("record_answer", {"question_id": "good_time", "value": "no", "quote": "driving"}),)
    )
    h = await Harness(example_campaign, engine([step])).start()
    await h.agent_done()
    await h.speak()
    await h.finished()
    assert h.engine.said[-1] == example_campaign.lines.callback
    assert h.store.outcomes["L1"][0] is Outcome.CALLBACK_REQUESTED
    assert EndReason.CALLBACK_REQUESTED.outcome is Outcome.CALLBACK_REQUESTED


async def test_silence_nudges_once_then_closes(example_campaign: Campaign) -> None:
    campaign = example_campaign.model_copy(
        update={"limits": example_campaign.limits.model_copy(update={"silence_timeout_s": 0.6})}
    )
    h = await Harness(campaign, engine()).start()
    await h.finished(limit_s=15)
    assert h.engine.said[1] == "Sorry, are you still there?"
    assert h.engine.said[-1] == campaign.render(campaign.lines.closing, h.conv.lead)  # type: ignore[union-attr, arg-type]
    assert h.carrier.methods() == ["hangup"]
    outcome, _, reason = h.store.outcomes["L1"]
    assert (outcome, reason) == (Outcome.COLD_CLOSED, "no response")


async def test_max_call_length_says_the_closing_line_and_hangs_up(example_campaign: Campaign) -> None:
    # Campaign validation allows no less than 30 s; model_copy skips it so the test takes 1.5 s.
    limit_s = 1.5
    campaign = example_campaign.model_copy(
        update={"limits": example_campaign.limits.model_copy(update={"max_call_seconds": limit_s})}
    )
    h = Harness(campaign, engine())  # silence timeout 10 s: only the clock can end this call
    await h.start()
    assert h.ws is not None
    assert h.conv is not None
    loop = asyncio.get_running_loop()
    hung_up_at: list[float] = []
    ws = h.ws

    def hang_up(_sid: str) -> None:
        hung_up_at.append(loop.time())
        ws.carrier_closes()

    h.carrier.on_hangup = hang_up
    await h.finished()
    closing = campaign.render(campaign.lines.closing, LEAD)
    assert h.engine.said[1:] == [closing]  # no nudge: the call was cut by length, not silence
    assert h.carrier.methods() == ["hangup"]
    (hung_up,) = hung_up_at
    assert hung_up >= h.conv.opened_at + limit_s
    assert hung_up >= h.conv.clock.play_end  # after the closing line was heard
    assert h.ws.closed_with in (None, (1000, "call ended"))  # never the transfer close
    outcome, _, reason = h.store.outcomes["L1"]
    assert (outcome, reason) == (Outcome.COLD_CLOSED, "max call length")
    assert h.conv.ending is not None
    assert h.conv.ending.kind is EndKind.TIME_LIMIT
    record = json.loads(h.metrics[-1])
    assert (record["ending"], record["reason"], record["nudges"]) == ("time_limit", "max call length", 0)


async def test_store_failure_does_not_stop_the_call(example_campaign: Campaign) -> None:
    h = Harness(example_campaign, engine(COLD_SCRIPT))
    h.store.fail_saves = True
    await h.start()
    await answer_all(h, 2)
    await h.finished()
    assert h.carrier.methods() == ["hangup"]
    assert h.store.outcomes["L1"][0] is Outcome.COLD_CLOSED


async def test_unknown_session_hangs_up_and_opens_no_engine(example_campaign: Campaign) -> None:
    h = Harness(example_campaign, engine())
    h.store.sessions.clear()
    await h.start()
    await h.finished()
    assert h.engines_made == 0
    assert h.carrier.methods() == ["hangup"]


async def test_abort_mid_call_hangs_up(example_campaign: Campaign) -> None:
    h = await Harness(example_campaign, engine()).start()
    await h.until(lambda: h.engine.started is not None)
    assert h.conv is not None
    h.conv.abort()
    await h.finished()
    assert h.carrier.methods() == ["hangup"]
    outcome, _, reason = h.store.outcomes["L1"]
    assert (outcome, reason) == (Outcome.FAILED, "bridge shutdown")
