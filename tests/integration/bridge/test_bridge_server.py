"""The bridge server on loopback: handshake conformance, health, relay, hot/cold under both transfer
strategies, barge-in and draining. Sautikit's side is played by bridge.testing.MediaClient (a real
websockets client) and by raw TCP where a client library would refuse to send what we test."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest

from bridge.audio import silence, tone
from bridge.engines.base import EngineEvent, Usage
from bridge.engines.fake import FakeEngine, FakeStep
from bridge.protocol import KILL_AUDIO, SUBPROTOCOL
from bridge.server import BridgeServer
from bridge.testing import (
    MediaClient,
    MemoryStore,
    PatchingCarrier,
    RecordingCarrier,
    RecordingNotifier,
    loopback_bridge,
)
from leadqual.campaign import Campaign, TransferStrategy
from leadqual.models import Lead, Outcome
from leadqual.signing import make_bridge_token

pytestmark = pytest.mark.integration

SECRET = "loopback-secret"
SID = "HD_00000000cafe"
LEAD = Lead(lead_id="L1", phone="+254711000111", name="Wanjiku Kamau", company="Duka Ltd", opt_in=True)

HOT = [
    FakeStep(tools=(("record_answer", {"question_id": "good_time", "value": "yes", "quote": "yes"}),)),
    FakeStep(tools=(("record_answer", {"question_id": "decision_maker", "value": "yes", "quote": "me"}),)),
    FakeStep(tools=(("record_answer", {"question_id": "seats", "value": "25", "quote": "25 people"}),)),
    FakeStep(tools=(("record_answer", {"question_id": "timeline", "value": "next month", "quote": "soon"}),)),
]
COLD = [
    FakeStep(tools=(("record_answer", {"question_id": "good_time", "value": "yes", "quote": "ok"}),)),
    FakeStep(tools=(("record_answer", {"question_id": "decision_maker", "value": "no", "quote": "no"}),)),
]


class BilledFakeEngine(FakeEngine):
    """The fake engine reporting each turn's cost in its Usage (as an engine that knows its
    price does) and keeping every Usage it emits, for a test to add up."""

    COST_PER_TURN_USD = 0.0125

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.usage: list[Usage] = []

    def emit(self, event: EngineEvent | None) -> None:
        if isinstance(event, Usage):
            event = replace(event, detail={**event.detail, "cost_usd": self.COST_PER_TURN_USD})
            self.usage.append(event)
        super().emit(event)


@dataclass
class Bridge:
    server: BridgeServer
    store: MemoryStore
    carrier: RecordingCarrier
    notifier: RecordingNotifier
    engines: list[FakeEngine]
    metrics: list[str]
    script: list[FakeStep] = field(default_factory=list)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    engine_cls: type[FakeEngine] = FakeEngine

    def client(self, session_id: str = SID, **kwargs: Any) -> MediaClient:
        return MediaClient.for_session(self.server.url, SECRET, session_id, **kwargs)

    def call_metrics(self) -> list[dict[str, Any]]:
        return [m for m in map(json.loads, self.metrics) if m.get("message") == "bridge call ended"]


async def start_bridge(
    campaign: Campaign, *, carrier: RecordingCarrier | None = None, **config: Any
) -> Bridge:
    store = MemoryStore()
    store.add_call(LEAD, SID)
    engines: list[FakeEngine] = []
    metrics: list[str] = []
    bridge: Bridge

    def factory() -> FakeEngine:
        kwargs: dict[str, Any] = {"ms_per_word": 10, "min_reply_ms": 100, **bridge.engine_kwargs}
        eng = bridge.engine_cls(script=bridge.script, **kwargs)
        engines.append(eng)
        return eng

    server = await loopback_bridge(
        campaign, factory, store, secret=SECRET, carrier=carrier, metrics_writer=metrics.append, **config
    )
    bridge = Bridge(server, store, server.services.carrier, server.services.notifier, engines, metrics)  # type: ignore[arg-type]
    return bridge


@pytest.fixture
async def bridge(example_campaign: Campaign) -> AsyncIterator[Bridge]:
    b = await start_bridge(example_campaign)
    yield b
    await b.server.drain(deadline_s=1)


async def raw_request(port: int, request: bytes, *, read_s: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        async with asyncio.timeout(read_s):
            data = await reader.read(65536)
    finally:
        writer.close()
    return data


def upgrade(path: str, protocols: str | None = SUBPROTOCOL, extra: tuple[str, ...] = ()) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    lines.extend(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def header_names(response: bytes) -> set[str]:
    head = response.partition(b"\r\n\r\n")[0].decode("latin-1")
    return {line.split(":", 1)[0].strip().lower() for line in head.split("\r\n")[1:]}


async def wait_until(predicate: Any, limit_s: float = 5.0) -> None:
    async with asyncio.timeout(limit_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.005)


async def hear_greeting(client: MediaClient) -> None:
    await client.wait_for(lambda: client.audio_bytes() > 0)
    await asyncio.sleep(0.4)  # the fake greeting is ~0.3 s of audio; let it "play"


async def answer(client: MediaClient, bridge: Bridge, turns: int) -> None:
    for _ in range(turns):
        eng = bridge.engines[-1]
        before = len(eng.tool_results)
        await client.speak(200, 400)
        await wait_until(lambda e=eng, b=before: len(e.tool_results) > b)
        await asyncio.sleep(0.4)  # the agent's next question "plays"


# ---------------------------------------------------------------------- health and refusals


async def test_healthz_reports_sessions_and_draining(bridge: Bridge) -> None:
    response = await raw_request(bridge.server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 200
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"application/json" in head
    assert json.loads(body) == {"status": "ok", "draining": False, "active_sessions": 0, "engine": "fake"}


@pytest.mark.parametrize(
    ("path", "protocols", "status", "reason"),
    [
        (f"/stream?session={SID}&token=TOKEN", None, 400, b"subprotocol audio.drachtio.org required"),
        (f"/stream?session={SID}&token=TOKEN", "audio.other.org", 400, b"subprotocol"),
        (f"/stream?session={SID}", SUBPROTOCOL, 401, b"missing token"),
        (f"/stream?session={SID}&token=EXPIRED", SUBPROTOCOL, 403, b"token expired"),
        (f"/stream?session={SID}&token=FOREIGN", SUBPROTOCOL, 403, b"does not match this session"),
        (f"/stream?session={SID}&token=garbage", SUBPROTOCOL, 403, b"malformed token"),
        (f"/stream?session={SID}&token=WRONGKEY", SUBPROTOCOL, 403, b"does not match"),
    ],
)
async def test_refused_before_the_upgrade_and_no_model_session(
    bridge: Bridge, path: str, protocols: str | None, status: int, reason: bytes
) -> None:
    tokens = {
        "TOKEN": make_bridge_token(SECRET, SID),
        "EXPIRED": make_bridge_token(SECRET, SID, ttl_s=-5),
        "FOREIGN": make_bridge_token(SECRET, "HD_0000000other"),
        "WRONGKEY": make_bridge_token("another-secret", SID),
    }
    for name, value in tokens.items():
        path = path.replace(f"token={name}", f"token={value}")
    response = await raw_request(bridge.server.port, upgrade(path, protocols))
    assert status_of(response) == status
    assert reason in response
    assert bridge.engines == []
    assert bridge.store.writes == []


async def test_client_library_sees_the_same_refusals(bridge: Bridge) -> None:
    from websockets.exceptions import InvalidStatus

    for client, status in [
        (bridge.client(subprotocols=[]), 400),
        (MediaClient(bridge.server.url, SID, None), 401),
        (MediaClient(bridge.server.url, SID, make_bridge_token(SECRET, SID, ttl_s=-1)), 403),
    ]:
        with pytest.raises(InvalidStatus) as info:
            await client.connect()
        assert info.value.response.status_code == status
    assert bridge.engines == []


async def test_session_named_only_in_metadata_is_verified_after_the_upgrade(bridge: Bridge) -> None:
    token = make_bridge_token(SECRET, SID)
    # Right session in metadata: accepted.
    good = MediaClient(bridge.server.url, None, token, metadata={"metadata": {"callSid": SID}})
    await good.connect()
    await good.wait_for(lambda: good.audio_bytes() > 0)
    await good.close()
    assert len(bridge.engines) == 1
    # Another session's id, junk metadata, or none: closed 1008, no model session.
    for meta in [{"callSid": "HD_0000000other"}, "{{{not json", {"hello": "world"}]:
        bad = MediaClient(bridge.server.url, None, token, metadata=meta)
        await bad.connect()
        assert await bad.wait_closed() == 1008
    assert len(bridge.engines) == 1


async def test_compression_offered_by_the_client_is_not_negotiated(bridge: Bridge) -> None:
    path = f"/stream?session={SID}&token={make_bridge_token(SECRET, SID)}"
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    response = await raw_request(bridge.server.port, upgrade(path, extra=(offer,)))
    assert status_of(response) == 101
    headers = header_names(response)
    assert "sec-websocket-protocol" in headers  # the reply's headers were read
    # No extension accepted: frames go uncompressed (audio does not compress; deflate costs CPU).
    assert "sec-websocket-extensions" not in headers


async def test_junk_on_the_wire_never_opens_a_model_session(bridge: Bridge) -> None:
    port = bridge.server.port
    for junk in [
        b"\x00\x01\x02garbage\r\n\r\n",
        b"POST /stream HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        b"\r\n\r\n",
    ]:
        response = await raw_request(port, junk)
        assert not response.startswith(b"HTTP/1.1 101")
    # A plain GET without the upgrade headers is refused too.
    response = await raw_request(port, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) in (400, 401, 426)
    assert bridge.engines == []
    health = await raw_request(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(health) == 200


async def test_bad_frames_are_dropped_and_counted_not_fatal(bridge: Bridge) -> None:
    client = bridge.client()
    await client.connect()
    await hear_greeting(client)
    await client.send(b"")
    await client.send(b"\x01\x02\x03")  # odd length
    await client.send(bytes(200_000))  # oversized
    await client.send("not json at all")  # text after the metadata
    await client.send(json.dumps({"event": "mark"}))
    await client.send_audio(silence(100, 16000))
    await asyncio.sleep(0.1)
    assert not client.closed
    await client.close()
    await wait_until(lambda: bridge.call_metrics())
    (m,) = bridge.call_metrics()
    assert m["guard_dropped_empty"] == 1
    assert m["guard_trimmed"] == 1
    assert m["guard_dropped_oversized"] == 1
    assert m["text_frames_in"] == 2
    assert m["frames_in"] >= 6


# ---------------------------------------------------------------------- relay


async def test_greeting_comes_back_as_640_byte_frames_at_the_stream_rate(bridge: Bridge) -> None:
    client = bridge.client()
    await client.connect()
    await client.wait_for(lambda: client.audio_bytes() >= 640 * 10)
    frames = client.audio()
    assert {len(f.data) for f in frames[:10]} == {640}
    assert bridge.engines[0].said[0].startswith("Hi Wanjiku")
    await client.close()
    await wait_until(lambda: bridge.store.outcomes.get("L1") is not None)
    assert bridge.store.calls[("L1", 1)]["time_to_first_word_ms"] < 500


async def test_8khz_stereo_stream_is_split_and_resampled(example_campaign: Campaign) -> None:
    b = await start_bridge(example_campaign)
    try:
        client = b.client(
            in_rate=8000, out_rate=8000, metadata={"callSid": SID, "sampleRate": 8000, "mixType": "stereo"}
        )
        await client.connect()
        await client.wait_for(lambda: client.audio_bytes() >= 320 * 5)
        assert {len(f.data) for f in client.audio()[:5]} == {320}  # 20 ms at 8 kHz
        lead = np.frombuffer(tone(300, 200, 8000), dtype="<i2")
        other = np.frombuffer(tone(1200, 200, 8000), dtype="<i2")
        stereo = np.empty(lead.size * 2, dtype="<i2")
        stereo[0::2], stereo[1::2] = lead, other
        eng = b.engines[0]
        before = eng.audio_in_bytes
        await client.send_audio(stereo.tobytes())  # 640-byte stereo frames = 20 ms each
        await wait_until(lambda: eng.audio_in_bytes - before >= 6300)
        # 200 ms of one channel at 8 kHz became 200 ms at the engine's 16 kHz.
        assert abs((eng.audio_in_bytes - before) - 6400) <= 64
        await client.close()
    finally:
        await b.server.drain(deadline_s=1)


# ---------------------------------------------------------------------- hot and cold


async def test_hot_dial_after_stream_transfers_by_closing_the_stream(bridge: Bridge) -> None:
    bridge.script = HOT
    client = bridge.client()
    await client.connect()
    await hear_greeting(client)
    await answer(client, bridge, 4)
    assert await client.wait_closed() == 1000
    assert client.close_reason == "transfer"
    assert bridge.carrier.calls == []  # the <Dial> after the <Stream> does the transfer
    await wait_until(lambda: "L1" in bridge.store.outcomes)
    assert bridge.store.outcomes["L1"][0] is Outcome.HOT_TRANSFERRED
    assert bridge.notifier.messages[0]["score"]["verdict"] == "hot"
    assert (
        bridge.engines[0].said[-1] == bridge.server.services.campaigns.load("example").transfer.handoff_line
    )


async def test_cold_dial_after_stream_hangs_up_first(bridge: Bridge) -> None:
    bridge.script = COLD
    loop = asyncio.get_running_loop()
    hung_up: list[float] = []
    bridge.carrier.on_hangup = lambda _sid: hung_up.append(loop.time())
    client = bridge.client()
    await client.connect()
    await hear_greeting(client)
    await answer(client, bridge, 2)
    await client.wait_closed()
    closed_at = loop.time()
    assert bridge.carrier.methods() == ["hangup"]
    assert hung_up[0] < closed_at  # REST hangup before the socket went away
    await wait_until(lambda: "L1" in bridge.store.outcomes)
    assert bridge.store.outcomes["L1"][0] is Outcome.COLD_CLOSED


async def test_a_full_call_reports_turns_latency_tokens_and_cost(bridge: Bridge) -> None:
    bridge.script = HOT
    bridge.engine_cls = BilledFakeEngine
    client = bridge.client()
    await client.connect()
    await hear_greeting(client)
    await answer(client, bridge, 4)
    assert await client.wait_closed() == 1000  # the hot transfer
    await wait_until(lambda: bool(bridge.call_metrics()))
    (m,) = bridge.call_metrics()
    eng = bridge.engines[0]
    assert isinstance(eng, BilledFakeEngine)
    assert m["outcome"] == "hot_transferred"
    assert m["engine"] == "fake"
    declared = {d["Name"] for d in m["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    per_call = {"Turns", "Interruptions", "ModelLatencyMs", "ModelInputTokens", "ModelOutputTokens"}
    assert per_call | {"ModelCostUSD", "TimeToFirstWordMs"} <= declared
    # The greeting, three questions and the handoff line: five agent turns, each with its Usage.
    assert len(eng.usage) == 5
    assert m["Turns"] == 5
    assert m["Interruptions"] == len(eng.interrupted_at)  # every barge-in the engine signalled
    # One latency per answer: from the end of the lead's speech to the agent's next words.
    latencies = m["ModelLatencyMs"]
    assert len(latencies) == 4
    assert all(0 < v < 2000 for v in latencies)
    # Tokens and cost are the sums of what the engine reported, nothing lost or counted twice.
    assert m["ModelInputTokens"] == sum(u.input_tokens for u in eng.usage) > 0
    assert m["ModelOutputTokens"] == sum(u.output_tokens for u in eng.usage) > 0
    assert m["ModelCostUSD"] == pytest.approx(5 * BilledFakeEngine.COST_PER_TURN_USD)
    assert m["TimeToFirstWordMs"] > 0


@pytest.mark.parametrize("verdict", ["hot", "cold"])
async def test_supervise_barge_strategy(example_campaign: Campaign, verdict: str) -> None:
    campaign = example_campaign.model_copy(
        update={
            "transfer": example_campaign.transfer.model_copy(
                update={"strategy": TransferStrategy.SUPERVISE_BARGE}
            )
        }
    )
    # The rep's phone rings for three status reads, then they pick up.
    b = await start_bridge(campaign, carrier=PatchingCarrier(rings=3), supervision_poll_s=0.05)
    b.script = HOT if verdict == "hot" else COLD
    try:
        client = b.client()
        await client.connect()
        await hear_greeting(client)
        await answer(client, b, len(b.script))
        if verdict == "hot":
            await wait_until(lambda: "update_supervision" in b.carrier.methods(), 10)
            # Rung in whisper, polled until on the line, the summary, then one PATCH: barge.
            assert b.carrier.methods() == ["start_supervision"] + ["get_supervision"] * 4 + [
                "update_supervision"
            ]
            assert [k.get("mode") for _, _, k in b.carrier.calls if k.get("mode")] == ["whisper", "barge"]
            assert b.engines[0].said[-1].startswith("I'm connecting you with")
            await asyncio.sleep(0.1)
            heard = client.audio_bytes()
            await client.speak(300, 300)  # the lead talks to the rep now
            await asyncio.sleep(0.3)
            assert client.audio_bytes() == heard  # the AI is silent
            assert not client.closed  # and keeps the stream: closing it could end the call
            await client.close()  # the carrier ends the call
            await wait_until(lambda: "L1" in b.store.outcomes)
            assert b.store.outcomes["L1"][0] is Outcome.HOT_TRANSFERRED
        else:
            await client.wait_closed()
            assert b.carrier.methods() == ["hangup"]
            await wait_until(lambda: "L1" in b.store.outcomes)
            assert b.store.outcomes["L1"][0] is Outcome.COLD_CLOSED
    finally:
        await b.server.drain(deadline_s=1)


# ---------------------------------------------------------------------- barge-in


async def test_barge_in_sends_kill_audio_within_a_frame_and_drops_the_reply(bridge: Bridge) -> None:
    # A model that streams a long reply faster than real time and keeps streaming after the cut.
    bridge.engine_kwargs = {"pace_s": 0.02, "stop_on_interrupt": False, "min_reply_ms": 3000}
    client = bridge.client()
    await client.connect()
    await client.wait_for(lambda: client.audio_bytes() > 640 * 20)  # the reply is playing
    await client.send_audio(tone(220, 200, 16000))  # the lead talks over it
    await client.wait_for(lambda: any(r.data == KILL_AUDIO for r in client.received))
    eng = bridge.engines[0]
    (cut,) = eng.interrupted_at
    kill = next(i for i, r in enumerate(client.received) if r.data == KILL_AUDIO)
    assert client.received[kill].at - cut < 0.020  # within one 20 ms frame
    await asyncio.sleep(0.5)  # the engine keeps emitting the old reply for a while
    assert not any(isinstance(r.data, bytes) for r in client.received[kill + 1 :])
    await wait_until(lambda: len(eng.truncations) == 1)
    heard_ms = eng.truncations[0]
    assert 0 < heard_ms < 3000
    await client.close()
    await wait_until(lambda: bridge.call_metrics())
    (m,) = bridge.call_metrics()
    assert m["Interruptions"] == 1
    assert m["dropped_audio_chunks"] > 0


# ---------------------------------------------------------------------- draining


async def test_drain_lets_live_calls_finish_and_refuses_new_ones(example_campaign: Campaign) -> None:
    b = await start_bridge(example_campaign)
    b.script = COLD
    client = b.client()
    await client.connect()
    await hear_greeting(client)
    assert b.server.active_sessions == 1
    drain = asyncio.create_task(b.server.drain(deadline_s=10))
    await wait_until(lambda: b.server.draining)
    # New upgrades: 503. Health: still 200, says draining.
    response = await raw_request(
        b.server.port, upgrade(f"/stream?session={SID}&token={make_bridge_token(SECRET, SID)}")
    )
    assert status_of(response) == 503
    health = await raw_request(b.server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert json.loads(health.partition(b"\r\n\r\n")[2])["draining"] is True
    assert len(b.engines) == 1
    # The live call goes on to its natural end.
    await answer(client, b, 2)
    await client.wait_closed()
    async with asyncio.timeout(5):
        await drain
    assert b.store.outcomes["L1"][0] is Outcome.COLD_CLOSED
    assert b.carrier.methods() == ["hangup"]


async def test_drain_deadline_ends_calls_with_the_fallback_action(example_campaign: Campaign) -> None:
    b = await start_bridge(example_campaign)
    client = b.client()
    await client.connect()
    await hear_greeting(client)
    async with asyncio.timeout(10):
        await b.server.drain(deadline_s=0.3)
    assert b.carrier.methods() == ["hangup"]  # not a bare close, which would transfer
    assert b.store.outcomes["L1"][:1] == (Outcome.FAILED,)
    assert b.store.outcomes["L1"][2] == "bridge shutdown"
    await client.wait_closed()


async def test_a_peer_that_stops_answering_pings_is_dropped(example_campaign: Campaign) -> None:
    b = await start_bridge(example_campaign, ping_interval_s=0.2, ping_timeout_s=0.3, close_timeout_s=0.5)
    try:
        client = b.client()
        await client.connect()
        await hear_greeting(client)
        assert client.ws is not None
        client.ws.transport.pause_reading()  # a dead peer: no pongs from here on
        loop = asyncio.get_running_loop()
        paused_at = loop.time()
        await wait_until(lambda: bool(b.call_metrics()), limit_s=5)
        assert loop.time() - paused_at < 2.5  # ping interval + pong timeout + close timeout, and some
        assert b.server.active_sessions == 0
        assert b.store.outcomes["L1"][2] == "lead hung up"
        client.ws.transport.resume_reading()
        await client.close()
    finally:
        await b.server.drain(deadline_s=1)
