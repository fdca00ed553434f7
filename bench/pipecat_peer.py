"""The peer: what a user would build with Pipecat for the same job, serving the same streams.

Per call, as Pipecat's own telephony examples do: a FastAPI WebSocket route accepts the stream,
reads the first (metadata) message, builds a `FastAPIWebsocketTransport` with a serializer for the
protocol, and runs `Pipeline([transport.input(), model, transport.output()])` in a
`PipelineWorker` under a `WorkerRunner`. Pipecat has no serializer for `audio.drachtio.org`, so
`DrachtioFrameSerializer` below is the small one written for this benchmark (binary S16LE in and
out, the metadata text frame first, `killAudio` for an interruption).

The model is the very `BenchModel` the bridge gets (bench.fakemodel), wrapped in a FrameProcessor:
input audio frames go to `send_audio`; its replies come out as `TTSStartedFrame`,
`TTSAudioRawFrame` (24 kHz) and `TTSStoppedFrame`, the frames a Pipecat speech-to-speech service
pushes, so the output transport resamples 24 kHz -> 16 kHz and cuts 20 ms frames.

Set up to do the same work as the bridge, and nothing it would not need:
- loguru at WARNING (Pipecat logs at DEBUG by default); no VAD, turn analyzer, RTVI, turn
  tracking, metrics, heartbeats or idle timeout; `audio_out_end_silence_secs=0`.
- 20 ms output frames (`audio_out_10ms_chunks=2`, the bridge's frame size).
- The output resampler at soxr "QQ", the bridge's quality (Pipecat's default is "VHQ", which costs
  more CPU and holds back tens of milliseconds). Pipecat has no setting for it, so the factory
  its output transport calls is swapped for one that passes quality="QQ".
- Unpaced output: Pipecat's WebSocket output transport sleeps after each frame to emulate an audio
  device (2x real time). The bridge sends a reply as fast as the socket takes it and lets the
  platform buffer it (SAUTIKIT.md §5), so the peer does too (`_UnpacedOutput`, one method).
  Paced, every frame of a reply after the first would count as late by design.
All three changes only take work away from Pipecat: they favour the peer.

There is no uvicorn in this environment (pipecat-ai[websocket] does not pull in a server), so the
FastAPI app is served by `serve_asgi`, a minimal ASGI WebSocket server over the `websockets`
library — the same library and the same message-to-dict translation uvicorn's `websockets`
implementation performs.

Per frame, in: websockets recv -> ASGI receive dict -> Starlette WebSocket.receive -> serializer
-> InputAudioRawFrame -> input transport queue and audio task -> push to the model processor ->
BenchModel.send_audio. Out: BenchModel event -> TTSAudioRawFrame -> output transport (resample,
buffer, 20 ms chunks) -> audio queue and task -> serializer -> Starlette send -> ASGI send ->
websockets send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import pipecat.transports.base_output as _base_output
from fastapi import FastAPI, WebSocket
from pipecat.audio.resamplers.soxr_stream_resampler import SOXRStreamAudioResampler
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InputAudioRawFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor, FrameProcessorSetup
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketOutputTransport,
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.workers.runner import WorkerRunner
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench.fakemodel import BenchModel
from bench.sut import SECRET, bench_lead
from bridge.engines.base import AudioOut, Interrupted, SessionContext, TurnComplete
from bridge.prompt import opening_line
from bridge.protocol import KILL_AUDIO, SUBPROTOCOL, parse_metadata, parse_query
from leadqual.campaign import Campaign, builtin_campaign_path, load_campaign
from leadqual.signing import TokenError, verify_bridge_token

STREAM_RATE = 16_000
RESAMPLE_QUALITY: Literal["QQ"] = "QQ"


def _qq_stream_resampler(**kwargs: Any) -> SOXRStreamAudioResampler:
    return SOXRStreamAudioResampler(quality=RESAMPLE_QUALITY, **kwargs)


def use_bridge_resampler_quality() -> None:
    """Make Pipecat's output transport resample at the bridge's quality (module docstring)."""
    setattr(_base_output, "create_stream_resampler", _qq_stream_resampler)  # noqa: B010 - a module global, patched on purpose


class DrachtioFrameSerializer(FrameSerializer):
    """`audio.drachtio.org`: binary S16LE audio both ways at the stream's rate; text is JSON
    (the metadata frame in, `killAudio` out)."""

    def __init__(self, stream_rate: int = STREAM_RATE) -> None:
        super().__init__()
        self._stream_rate = stream_rate
        self._pipeline_rate = stream_rate
        self._in_resampler = SOXRStreamAudioResampler(quality=RESAMPLE_QUALITY, clear_after_secs=None)
        self._out_resampler = SOXRStreamAudioResampler(quality=RESAMPLE_QUALITY, clear_after_secs=None)
        self.metadata: dict[str, Any] = {}

    async def setup(self, setup: FrameProcessorSetup) -> None:  # type: ignore[override]  # Pipecat's own signature
        self._pipeline_rate = setup.audio_in_sample_rate or self._stream_rate

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if isinstance(frame, OutputAudioRawFrame):
            if frame.sample_rate == self._stream_rate:
                return frame.audio
            return await self._out_resampler.resample(frame.audio, frame.sample_rate, self._stream_rate)
        if isinstance(frame, InterruptionFrame):
            return KILL_AUDIO
        return None

    async def deserialize(self, data: str | bytes) -> Frame | None:
        if isinstance(data, bytes):
            audio = data
            if self._pipeline_rate != self._stream_rate:
                audio = await self._in_resampler.resample(data, self._stream_rate, self._pipeline_rate)
            return InputAudioRawFrame(audio=audio, sample_rate=self._pipeline_rate, num_channels=1)
        try:
            doc = json.loads(data)
        except ValueError:
            return None
        if isinstance(doc, dict):
            self.metadata = doc  # drachtio events (mark, dtmf) are not used, as in the bridge
        return None


class FakeModelProcessor(FrameProcessor):
    """The benchmark's fake realtime model as a Pipecat processor (a speech-to-speech service)."""

    def __init__(self, model: BenchModel, ctx: SessionContext, greeting: str) -> None:
        super().__init__()
        self._model = model
        self._ctx = ctx
        self._greeting = greeting
        self._pump: asyncio.Task[None] | None = None
        self._speaking = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame):
            await self._model.send_audio(frame.audio)
        elif isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            await self._model.start(self._ctx)
            self._pump = self.create_task(self._events())
            await self._model.say(self._greeting)
        elif isinstance(frame, EndFrame | CancelFrame):
            await self._stop()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    async def _stop(self) -> None:
        if self._pump is not None:
            await self.cancel_task(self._pump)
            self._pump = None
        await self._model.close()

    async def _events(self) -> None:
        rate = self._model.output_rate
        async for ev in self._model.events():
            if isinstance(ev, AudioOut):
                if not self._speaking:
                    self._speaking = True
                    await self.push_frame(TTSStartedFrame())
                await self.push_frame(TTSAudioRawFrame(audio=ev.pcm, sample_rate=rate, num_channels=1))
            elif isinstance(ev, TurnComplete):
                if self._speaking:
                    self._speaking = False
                    await self.push_frame(TTSStoppedFrame())
            elif isinstance(ev, Interrupted):
                self._speaking = False
                await self.broadcast_interruption()  # type: ignore[no-untyped-call]  # untyped in Pipecat

    async def cleanup(self) -> None:
        await super().cleanup()  # type: ignore[no-untyped-call]  # untyped in Pipecat
        await self._model.close()


class _UnpacedOutput(FastAPIWebsocketOutputTransport):
    async def _write_audio_sleep(self) -> None:
        return None  # send as fast as the socket takes it, as the bridge does (module docstring)


class UnpacedFastAPIWebsocketTransport(FastAPIWebsocketTransport):
    def __init__(self, websocket: WebSocket, params: FastAPIWebsocketParams) -> None:
        super().__init__(websocket, params)
        self._output = _UnpacedOutput(self, self._client, self._params, name=self._output_name)


# ---------------------------------------------------------------------------------------- app


def build_app(model_factory: Callable[[], BenchModel], campaign: Campaign, live: set[str]) -> FastAPI:
    app = FastAPI()

    @app.websocket("/stream")
    async def stream(websocket: WebSocket) -> None:
        query = parse_query(websocket.url.path + "?" + websocket.url.query)
        if not query.session_id or not query.token:
            await websocket.close(code=1008)
            return
        try:
            verify_bridge_token(SECRET, query.session_id, query.token)
        except TokenError:
            await websocket.close(code=1008)
            return
        await websocket.accept(subprotocol=SUBPROTOCOL)
        first = await websocket.receive()
        if first.get("type") == "websocket.disconnect":
            return
        meta = parse_metadata(first["text"]) if first.get("text") else None
        sid = query.session_id or (meta.call_id if meta else None) or "unknown"
        lead = bench_lead(sid)
        ctx = SessionContext(session_id=sid, campaign=campaign, lead=lead, instructions="", tools=())
        transport = UnpacedFastAPIWebsocketTransport(
            websocket,
            FastAPIWebsocketParams(
                audio_in_enabled=True,
                audio_out_enabled=True,
                audio_in_sample_rate=STREAM_RATE,
                audio_out_sample_rate=STREAM_RATE,
                audio_out_10ms_chunks=2,
                audio_out_end_silence_secs=0,
                add_wav_header=False,
                serializer=DrachtioFrameSerializer(STREAM_RATE),
                allowed_origins=[],
            ),
        )
        model = FakeModelProcessor(model_factory(), ctx, opening_line(campaign, lead))
        worker = PipelineWorker(
            Pipeline([transport.input(), model, transport.output()]),
            params=PipelineParams(audio_in_sample_rate=STREAM_RATE, audio_out_sample_rate=STREAM_RATE),
            enable_rtvi=False,
            enable_turn_tracking=False,
            idle_timeout_secs=None,
            check_dangling_tasks=False,
        )

        @transport.event_handler("on_client_disconnected")  # type: ignore[untyped-decorator]  # Pipecat's
        async def _gone(_transport: Any, _ws: Any) -> None:
            await worker.cancel()

        live.add(sid)
        try:
            runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
            await runner.add_workers(worker)
            await runner.run()
        finally:
            live.discard(sid)

    return app


# ---------------------------------------------------------------------- ASGI over websockets

Asgi = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[[dict[str, Any]], Awaitable[None]]],
    Awaitable[None],
]


async def serve_asgi(app: Asgi, host: str, port: int, subprotocols: list[str]) -> Server:
    """Serve an ASGI app's WebSocket routes with the `websockets` library (uvicorn's job)."""

    async def handler(conn: ServerConnection) -> None:
        request = conn.request
        assert request is not None
        path, _, qs = request.path.partition("?")
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": path,
            "raw_path": path.encode(),
            "query_string": qs.encode(),
            "root_path": "",
            "headers": [
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.raw_items()
            ],
            "client": conn.remote_address[:2],
            "server": conn.local_address[:2],
            "subprotocols": [
                p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p
            ],
            "state": {},
            "extensions": {},
        }
        connected = False

        async def receive() -> dict[str, Any]:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            try:
                msg = await conn.recv()
            except ConnectionClosed:
                return {"type": "websocket.disconnect", "code": conn.close_code or 1006, "reason": ""}
            if isinstance(msg, bytes):
                return {"type": "websocket.receive", "bytes": msg, "text": None}
            return {"type": "websocket.receive", "bytes": None, "text": msg}

        async def send(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "websocket.send":
                data = message.get("bytes")
                await conn.send(data if data is not None else message["text"])
            elif kind == "websocket.close":
                await conn.close(message.get("code", 1000), message.get("reason") or "")
            # websocket.accept: the upgrade is already done and the subprotocol chosen by `serve`.

        with contextlib.suppress(ConnectionClosed):
            await app(scope, receive, send)

    return await serve(
        handler,
        host,
        port,
        subprotocols=[Subprotocol(p) for p in subprotocols],
        compression=None,
        max_queue=64,
        server_header=None,
    )


class PipecatPeer:
    """The peer as a server: `await peer.start()`, `peer.port`, `peer.live()`, `await peer.stop()`."""

    def __init__(self, model_factory: Callable[[], BenchModel], host: str = "127.0.0.1") -> None:
        use_bridge_resampler_quality()
        self._live: set[str] = set()
        campaign = load_campaign(builtin_campaign_path("example"))
        self.app = build_app(model_factory, campaign, self._live)
        self._host = host
        self._server: Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await serve_asgi(self.app, self._host, 0, [SUBPROTOCOL])  # type: ignore[arg-type]  # ASGI's mutable mappings
        for sock in self._server.sockets:
            self.port = int(sock.getsockname()[1])
            break

    def live(self) -> int:
        return len(self._live)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
