"""The bench's pieces that run inside the systems under test and around the functions, hermetically:
the shared fake model, the Pipecat serializer for audio.drachtio.org, the webhook helpers and the
carrier-latency transport."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.dialer import DelayedTransport
from bench.fakemodel import BenchModel, Recorder
from bench.loadgen import CYCLE
from bench.webhook import EVENT, SECRET, MemoryAnswerStore, _importtime_top, make_event
from bench.wire import now_us, stamp_bytes
from bridge.engines.base import AudioOut, SessionContext, TurnComplete
from leadqual.campaign import Campaign
from leadqual.models import Lead


@pytest.fixture
def ctx(example_campaign: Campaign) -> SessionContext:
    lead = Lead(lead_id="L1", phone="+254711000111", name="Wanjiku", opt_in=True)
    return SessionContext(session_id="HD_x", campaign=example_campaign, lead=lead, instructions="", tools=())


async def test_bench_model_records_stamped_latency_and_answers_an_utterance_with_24k_audio(
    ctx: SessionContext,
) -> None:
    rec = Recorder()
    model = BenchModel(rec)
    await model.start(ctx)
    sent_us = now_us() - 3000  # as if sent 3 ms ago
    for payload in CYCLE[:65]:  # 1 s of speech, then 300 ms of quiet: one utterance
        await model.send_audio(stamp_bytes(sent_us) + payload[8:])
    audio = b""
    async with asyncio.timeout(2):
        async for ev in model.events():
            if isinstance(ev, AudioOut):
                audio += ev.pcm
            if isinstance(ev, TurnComplete):
                break
    await model.close()
    assert len(rec.inbound_us) == 65
    assert 3000 <= min(rec.inbound_us) < 1_000_000
    assert len(rec.replies["HD_x"]) == 1
    assert len(audio) == 24000 * 2 * 1200 // 1000  # 1.2 s at 24 kHz
    assert rec.sessions_started == 1
    assert rec.sessions_closed == 1


async def test_recorder_dump_writes_what_the_harness_reads(tmp_path: Path) -> None:
    rec = Recorder()
    rec.inbound_us.extend([1500, 2500])
    rec.replies["HD_a"] = [123]
    summary = rec.dump(tmp_path / "w")
    assert summary["inbound_frames"] == 2
    assert np.fromfile(str(tmp_path / "w") + ".inbound", dtype=np.uint32).tolist() == [1500, 2500]
    assert json.loads((tmp_path / "w.replies.json").read_text()) == {"HD_a": [123]}
    rec.reset()
    assert len(rec.inbound_us) == 0
    assert rec.replies == {"HD_a": [123]}  # reply times outlive a window


async def test_drachtio_serializer_round_trips_audio_and_speaks_killaudio() -> None:
    from pipecat.frames.frames import InputAudioRawFrame, InterruptionFrame, OutputAudioRawFrame

    from bench.pipecat_peer import DrachtioFrameSerializer
    from bridge.protocol import KILL_AUDIO

    ser = DrachtioFrameSerializer(16000)
    pcm = stamp_bytes(7) + bytes(632)
    frame = await ser.deserialize(pcm)
    assert isinstance(frame, InputAudioRawFrame)
    assert frame.audio == pcm  # same rate: untouched, so the latency stamp survives
    assert frame.sample_rate == 16000
    assert await ser.deserialize('{"callSid": "HD_1", "sampleRate": 16000}') is None
    assert ser.metadata["callSid"] == "HD_1"
    out = await ser.serialize(OutputAudioRawFrame(audio=bytes(640), sample_rate=16000, num_channels=1))
    assert out == bytes(640)
    assert await ser.serialize(InterruptionFrame()) == KILL_AUDIO
    # Audio at another rate is resampled to the stream's.
    resampled = await ser.serialize(OutputAudioRawFrame(audio=bytes(4800), sample_rate=24000, num_channels=1))
    assert isinstance(resampled, bytes)
    assert 0 < len(resampled) <= 3200


def test_signed_sample_event_verifies_and_names_its_lead() -> None:
    from leadqual.signing import verify_webhook

    template = json.loads(EVENT.read_text())
    event = make_event(template, "lead-7", "HD_0000007")
    raw = base64.b64decode(event["body"])
    verify_webhook(SECRET, raw, event["headers"]["x-sautikit-signature"])
    assert b"clientRequestId=lq-lead-7-1" in raw
    assert event["queryStringParameters"] == {"clientRequestId": "lq-lead-7-1"}


def test_voice_handler_answers_a_stream_from_the_memory_store() -> None:
    from functions.voice import app
    from leadqual.answering import VoiceAnswerer, VoiceConfig
    from leadqual.campaign import CampaignCatalog
    from leadqual.settings import builtin_campaigns_dir
    from local.lambda_runtime import LambdaContext

    class Metrics:
        def add(self, name: str, value: float = 1, unit: str = "Count") -> None:
            pass

    store = MemoryAnswerStore()
    store.seed(["lead-1"])
    answerer = VoiceAnswerer(
        store=store,
        campaigns=CampaignCatalog(builtin_campaigns_dir()),
        config=VoiceConfig(
            bridge_url="wss://b.example/stream", bridge_token_secret="s", own_numbers=("+254709100100",)
        ),
        metrics=Metrics(),
    )
    deps = app.Deps(answerer=answerer, webhook_secret=SECRET, metrics=Metrics())
    event = make_event(json.loads(EVENT.read_text()), "lead-1", "HD_00000001")
    resp = app.handle(event, LambdaContext(function_name="voice"), deps=deps)
    assert resp["statusCode"] == 200
    assert "<Stream" in resp["body"]
    assert store.get_session("HD_00000001") == ("lead-1", 1)


def test_importtime_is_summed_per_top_level_package() -> None:
    stderr = "\n".join(
        [
            "import time: self [us] | cumulative | imported package",
            "import time:       100 |        100 |   botocore.compat",
            "import time:      2000 |       2100 | botocore",
            "import time:       500 |        500 | json",
            "not an import line",
        ]
    )
    assert _importtime_top(stderr) == [{"package": "botocore", "ms": 2.1}, {"package": "json", "ms": 0.5}]


def test_carrier_latency_is_added_to_dials_only() -> None:
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return httpx.Response(200, json={})

    transport = DelayedTransport(httpx.MockTransport(answer), delay_s=0.05)
    with httpx.Client(transport=transport, base_url="http://sim") as client:
        t0 = time.perf_counter()
        client.get("/v1/calls/abc")
        client.get("/v1/wallet")
        fast = time.perf_counter() - t0
        t0 = time.perf_counter()
        client.post("/v1/calls", json={})
        slow = time.perf_counter() - t0
    assert transport.delayed == 1
    assert slow >= 0.05
    assert fast < 0.05
    assert seen == ["GET /v1/calls/abc", "GET /v1/wallet", "POST /v1/calls"]
