"""The bridge with each cloud engine, end to end against the fake that speaks its real wire protocol.

Everything is real but the model: the bridge server on loopback, the carrier's side played by
bridge.testing.MediaClient, GeminiLiveEngine (google-genai over TLS) and OpenAIRealtimeEngine
talking to local/fakes. What must hold with either engine: a whole qualification through
`record_answer` tool calls ends in a hot transfer with the answers stored, and when the lead talks
over the agent the bridge sends killAudio within one 20 ms frame of the engine's interruption."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from bridge.engines.base import EngineEvent, Interrupted
from bridge.engines.gemini import GeminiLiveEngine, ReconnectPolicy, make_client
from bridge.engines.openai_realtime import OpenAIRealtimeEngine
from bridge.protocol import KILL_AUDIO
from bridge.server import BridgeServer
from bridge.testing import MediaClient, MemoryStore, loopback_bridge
from leadqual.campaign import Campaign
from leadqual.models import Lead, Outcome
from local.fakes import gemini_live as gl
from local.fakes import openai_realtime as oai

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

SECRET = "loopback-secret"
SID = "HD_0000000e0e0e"
KEY = "test-key"
LEAD = Lead(lead_id="L1", phone="+254711000111", name="Wanjiku Kamau", company="Duka Ltd", opt_in=True)
ANSWERS: dict[str, Any] = {"good_time": True, "decision_maker": True, "seats": 40, "timeline": 2}
QUOTES = {
    "good_time": "Yes, go ahead.",
    "decision_maker": "Yes, I decide.",
    "seats": "About forty.",
    "timeline": "Two months.",
}
# The OpenAI fake's VAD, tuned like the engine tests: short silences end a turn.
FAST_VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 100, "silence_duration_ms": 200}


class Stamped:
    """An engine as the bridge sees it, with the loop time each event was handed to the bridge."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[tuple[float, EngineEvent]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def events(self) -> AsyncIterator[EngineEvent]:
        loop = asyncio.get_running_loop()
        async for event in self.inner.events():
            self.seen.append((loop.time(), event))
            yield event

    def times(self, kind: type) -> list[float]:
        return [at for at, e in self.seen if isinstance(e, kind)]


@dataclass
class Call:
    server: BridgeServer
    store: MemoryStore
    engines: list[Stamped]
    client: MediaClient


@pytest.fixture
async def call_with(example_campaign: Campaign) -> AsyncIterator[Callable[[Callable[[], Any]], Any]]:
    """Starts the bridge with an engine factory and connects the carrier's stream for one call."""
    servers: list[BridgeServer] = []

    async def start(make_engine: Callable[[], Any]) -> Call:
        store = MemoryStore()
        store.add_call(LEAD, SID)
        engines: list[Stamped] = []

        def factory() -> Stamped:
            engines.append(Stamped(make_engine()))
            return engines[-1]

        server = await loopback_bridge(example_campaign, factory, store, secret=SECRET)
        servers.append(server)
        client = MediaClient.for_session(server.url, SECRET, SID)
        await client.connect()
        return Call(server, store, engines, client)

    yield start
    for server in servers:
        await server.drain(deadline_s=1)


async def agent_quiet(client: MediaClient, quiet_s: float = 0.3, limit_s: float = 10.0) -> None:
    """Until the agent has spoken and then sent nothing for `quiet_s` (its turn has played)."""
    await client.wait_for(lambda: client.audio_bytes() > 0, limit_s)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(limit_s):
        last, since = client.audio_bytes(), loop.time()
        while loop.time() - since < quiet_s:
            await asyncio.sleep(0.05)
            if client.audio_bytes() != last:
                last, since = client.audio_bytes(), loop.time()


async def qualify(call: Call) -> None:
    """The lead answers each question after the agent asks it; then the call is handed over."""
    for n in range(1, len(ANSWERS) + 1):
        await agent_quiet(call.client)
        await call.client.speak(400, 500)
        await wait_until(lambda n=n: len(call.store.get_answers("L1")) >= n)
    assert await call.client.wait_closed(15) == 1000
    await wait_until(lambda: "L1" in call.store.outcomes)


async def wait_until(predicate: Callable[[], bool], limit_s: float = 10.0) -> None:
    async with asyncio.timeout(limit_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


def gemini(fake: gl.FakeGeminiLive) -> Callable[[], GeminiLiveEngine]:
    policy = ReconnectPolicy(backoff_initial_s=0.05, backoff_max_s=0.2, connect_timeout_s=2.0)
    client = make_client(KEY, base_url=fake.base_url, ssl_context=fake.tls.client_context)
    return lambda: GeminiLiveEngine(client, model="gemini-test-native-audio", reconnect=policy)


def openai(fake: oai.FakeOpenAIRealtime) -> Callable[[], OpenAIRealtimeEngine]:
    return lambda: OpenAIRealtimeEngine(KEY, url=fake.url, turn_detection=FAST_VAD)


def assert_hot_transfer(call: Call) -> None:
    answers = {a.question_id: a.value for a in call.store.get_answers("L1")}
    assert set(answers) == set(ANSWERS)
    assert call.client.close_reason == "transfer"
    assert call.store.outcomes["L1"][0] is Outcome.HOT_TRANSFERRED


# ---------------------------------------------------------------------- qualification


async def test_gemini_live_qualifies_a_hot_lead_through_tool_calls(
    call_with: Any, example_campaign: Campaign
) -> None:
    script = gl.qualification_script(
        example_campaign, LEAD, ANSWERS, quotes=QUOTES, closing_contains="connecting you", answer_ms=200
    )
    async with gl.FakeGeminiLive(script) as fake:
        call = await call_with(gemini(fake))
        await qualify(call)
        session = fake.sessions[0]
        assert fake.violations == []
    assert_hot_transfer(call)
    # Each answer came back to the model as a tool response, the last one wrapping up.
    responses = [r for s in fake.sessions for r in s.tool_responses]
    assert len(responses) == len(ANSWERS)
    assert json.dumps(responses[-1]).count("wrap_up") == 1
    # The lead's words (the fake's transcription) are on the call's transcript.
    said_by_lead = [e["text"] for e in call.store.transcript("L1") if e["who"] == "lead"]
    assert said_by_lead == list(QUOTES.values())
    assert session.setup is not None


async def test_openai_realtime_qualifies_a_hot_lead_through_tool_calls(
    call_with: Any, example_campaign: Campaign
) -> None:
    questions = example_campaign.questions
    replies: list[oai.Reply] = []
    for i, (qid, value) in enumerate(ANSWERS.items()):
        args = {"question_id": qid, "value": value, "quote": QUOTES[qid]}
        replies.append(oai.Reply(tool_calls=[oai.ToolCallSpec("record_answer", args)]))
        if i + 1 < len(questions):
            replies.append(oai.Reply(text=example_campaign.render(questions[i + 1].ask, LEAD)))
    script = oai.Script(replies=replies, heard=list(QUOTES.values()))
    async with oai.FakeOpenAIRealtime(script=script, api_key=KEY) as fake:
        call = await call_with(openai(fake))
        await qualify(call)
        session = fake.sessions[0]
        assert fake.violations == []
    assert_hot_transfer(call)
    assert [o["output"]["status"] for o in session.tool_outputs] == ["continue"] * (len(ANSWERS) - 1) + [
        "wrap_up"
    ]
    kinds = [r.kind for r in session.responses]
    assert (kinds[0], kinds[-1]) == ("say", "say")  # the opening and the handoff are the bridge's lines
    assert session.responses[-1].text == example_campaign.render(example_campaign.transfer.handoff_line, LEAD)


# ---------------------------------------------------------------------- barge-in


def kill_audio_after_interruption(call: Call) -> float:
    """Seconds from the engine handing the bridge its Interrupted to killAudio on the stream."""
    (engine,) = call.engines
    [cut] = engine.times(Interrupted)
    kill = next(r for r in call.client.received if r.data == KILL_AUDIO)
    return kill.at - cut


async def test_gemini_live_barge_in_sends_kill_audio_within_a_frame(call_with: Any) -> None:
    script = [
        gl.WaitClientTurn(),
        gl.Reply("A long answer the lead will not wait for.", ms=4_000, complete=False),
        gl.WaitAudio(100),
        gl.Interrupt(),
        gl.Hear("Sorry, who is this?"),
        gl.Reply("This is Amina from Acme CRM."),
    ]
    async with gl.FakeGeminiLive(script) as fake:
        call = await call_with(gemini(fake))
        client = call.client
        await client.wait_for(lambda: client.audio_bytes() > 640 * 25)  # half a second is playing
        await client.speak(300, 400)
        await client.wait_for(lambda: any(r.data == KILL_AUDIO for r in client.received))
        assert kill_audio_after_interruption(call) < 0.020
        kill = next(i for i, r in enumerate(client.received) if r.data == KILL_AUDIO)
        # The rest of the cut reply never plays; the answer to the lead's question does.
        await client.wait_for(lambda: any(isinstance(r.data, bytes) for r in client.received[kill + 1 :]))
        after = sum(len(r.data) for r in client.received[kill + 1 :] if isinstance(r.data, bytes))
        assert after < 640 * 100  # far less than the 3.5 s left of the old reply
        assert fake.violations == []


async def test_openai_realtime_barge_in_sends_kill_audio_and_truncates_what_was_heard(call_with: Any) -> None:
    script = oai.Script(
        replies=[oai.Reply(text="Oh, sorry. I am Amina from Acme CRM.")], heard=["who is this?"]
    )
    # Paced like the real service (20 ms chunks in real time, a little audio still in flight after
    # a cancel), so the lead talks over an opening that is still arriving.
    async with oai.FakeOpenAIRealtime(
        script=script, api_key=KEY, chunk_ms=20, realtime_factor=1.0, cancel_lag_chunks=3
    ) as fake:
        call = await call_with(openai(fake))
        client = call.client
        await client.wait_for(lambda: client.audio_bytes() > 640 * 25)
        heard_before_barge = client.audio_bytes()
        await client.speak(300, 400)
        await client.wait_for(lambda: any(r.data == KILL_AUDIO for r in client.received))
        assert kill_audio_after_interruption(call) < 0.020
        session = fake.sessions[0]
        await wait_until(lambda: session.truncations != [])
        assert fake.violations == []
    # The model is told how much of its opening the lead actually heard: what had played by the
    # barge-in (16 kHz frames of 640 bytes = 20 ms), give or take the playout margin and a frame.
    (truncation,) = session.truncations
    played_ms = heard_before_barge / 32
    assert played_ms - 100 <= truncation["audio_end_ms"] <= played_ms + 400
