"""The `<Stream>` fork: the switch connects to the app's WebSocket as a client (SAUTIKIT.md §5).

- Offers subprotocol `audio.drachtio.org` and refuses a server that does not select it.
- Per-message deflate off; the URL's query string is kept.
- First frame: one JSON text frame of metadata (`headers` = the parsed `headerMetadata`).
- Then binary S16LE audio in 20 ms frames at `outputSamplingRate`, paced by the call's clock:
  `inbound_track` = the far end (the lead, plus a supervisor the agent hears: whisper, barge),
  `outbound_track` = what the lead hears, `both_tracks` = 2 channels interleaved (0 = far end,
  1 = what the lead hears).
- What the app sends back (binary, at `bidirectionalSamplingRate`) is buffered and played in real
  time; text `{"type": "killAudio"}` flushes the buffer; pings are answered by the protocol layer.
- Without `connect="true"` the leg is not held: about a second later the switch drops the call and
  the socket dies without a close frame (the app sees 1006).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import uuid
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from local.sautikit.audio import RATE, PlaybackBuffer, Reframer, StreamResampler

SUBPROTOCOL = Subprotocol("audio.drachtio.org")
TRACKS = ("inbound_track", "outbound_track", "both_tracks")
OUTPUT_RATES = (8000, 16000)
NO_CONNECT_DROP_S = 1.0
SEND_QUEUE_FRAMES = 100  # 2 s: a slow app loses the oldest audio, as a real jitter buffer would

StreamEnd = Literal["app_closed", "call_ended", "failed", "no_connect"]
Note = Callable[..., object]  # note(kind, **fields); what it returns is not used here
Violation = Callable[[str, str], None]


class MediaStream:
    def __init__(
        self,
        *,
        url: str,
        name: str | None,
        track: str,
        output_rate: int,
        bidirectional_rate: int,
        metadata: dict[str, Any],
        connect_leg: bool,
        call_ended: asyncio.Event,
        note: Note,
        violation: Violation,
        ssl_context: ssl.SSLContext | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.name = name
        self.track = track
        self.output_rate = output_rate
        self.bidirectional_rate = bidirectional_rate
        self.metadata = metadata
        self.connect_leg = connect_leg
        self.call_ended = call_ended
        self.note = note
        self.violation = violation
        self.ssl_context = ssl_context
        self.on_open = on_open
        self.stream_sid = f"MZ{uuid.uuid4().hex}"
        self.playback = PlaybackBuffer()
        self.live = False  # audio flows while True
        self.frames_sent = 0
        self.frames_dropped = 0
        self.bytes_received = 0
        self.kill_audio_count = 0
        self.close_code: int | None = None
        self.close_reason: str = ""
        self._ws: ClientConnection | None = None
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=SEND_QUEUE_FRAMES)
        self._out_lead = Reframer(output_rate)
        self._out_heard = Reframer(output_rate) if track != "inbound_track" else None
        self._in = StreamResampler(bidirectional_rate, RATE)
        self._carry = b""
        self._closing: asyncio.Task[None] | None = None

    @property
    def channels(self) -> int:
        return 2 if self.track == "both_tracks" else 1

    # -- called by the call's clock, every 20 ms -------------------------------------------------------
    def feed(self, lead: np.ndarray, heard: np.ndarray) -> None:
        if not self.live:
            return
        if self.track == "inbound_track":
            payload = self._out_lead.push(lead)
        elif self.track == "outbound_track":
            assert self._out_heard is not None
            payload = self._out_heard.push(heard)
        else:
            assert self._out_heard is not None
            a, b = self._out_lead.push(lead), self._out_heard.push(heard)
            payload = np.empty(a.size * 2, np.int16)
            payload[0::2], payload[1::2] = a, b
        data = payload.astype("<i2").tobytes()
        if self._queue.full():
            self._queue.get_nowait()
            self.frames_dropped += 1
        self._queue.put_nowait(data)

    def pop_playback(self) -> np.ndarray | None:
        return self.playback.pop_frame() if self.live else None

    # -- the fork's life -------------------------------------------------------------------------------
    async def run(self) -> StreamEnd:
        try:
            ws = await connect(
                self.url,
                subprotocols=[SUBPROTOCOL],
                compression=None,
                open_timeout=5,
                ping_interval=15,
                ping_timeout=15,
                close_timeout=2,
                max_size=4 * 1024 * 1024,
                proxy=None,
                ssl=self.ssl_context if self.url.startswith("wss:") else None,
                user_agent_header="Sautikit-Simulator/1.0 (drachtio mod_audio_fork)",
            )
        except InvalidStatus as exc:
            self.violation(
                "stream_connect_failed", f"WebSocket handshake answered HTTP {exc.response.status_code}"
            )
            return "failed"
        except (InvalidHandshake, OSError, TimeoutError) as exc:
            self.violation("stream_connect_failed", f"{type(exc).__name__}: {exc}")
            return "failed"
        self._ws = ws
        if ws.subprotocol != SUBPROTOCOL:
            self.violation(
                "missing_subprotocol",
                f"server selected {ws.subprotocol!r}, not {SUBPROTOCOL!r}; connection refused",
            )
            await ws.close(1002, "subprotocol audio.drachtio.org required")
            self.close_code = 1002
            return "failed"
        try:
            await ws.send(json.dumps(self.metadata))
        except ConnectionClosed as exc:
            self.violation("stream_connect_failed", f"closed before the metadata frame: {exc}")
            return "failed"
        self.note("stream_open", name=self.name, track=self.track, rate=self.output_rate, sid=self.stream_sid)
        self.live = True
        if self.on_open is not None:
            self.on_open()
        sender = asyncio.create_task(self._send_loop(ws), name=f"stream-send-{self.stream_sid}")
        receiver = asyncio.create_task(self._receive_loop(ws), name=f"stream-recv-{self.stream_sid}")
        ended = asyncio.create_task(self.call_ended.wait(), name=f"stream-callend-{self.stream_sid}")
        waiters: set[asyncio.Task[Any]] = {receiver, ended}
        drop: asyncio.Task[None] | None = None
        if not self.connect_leg:
            drop = asyncio.create_task(asyncio.sleep(NO_CONNECT_DROP_S), name="stream-noconnect")
            waiters.add(drop)
        try:
            done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.live = False
            for task in (sender, receiver, ended, drop):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(sender, receiver, ended, *([drop] if drop else []), return_exceptions=True)
        if drop is not None and drop in done:
            # Not connected: the switch never held the leg; the TCP connection just dies.
            ws.transport.abort()
            self.close_code = 1006
            self.note("stream_close", by="switch", code=1006, reason="leg not held (connect missing)")
            return "no_connect"
        if receiver in done:
            self.close_code = ws.close_code
            self.close_reason = ws.close_reason or ""
            self.note("stream_close", by="app", code=self.close_code, reason=self.close_reason)
            return "app_closed"
        with contextlib.suppress(Exception):
            await ws.close(1000, "call ended")
        self.close_code = 1000
        self.note("stream_close", by="switch", code=1000, reason="call ended")
        return "call_ended"

    async def _send_loop(self, ws: ClientConnection) -> None:
        while True:
            data = await self._queue.get()
            try:
                await ws.send(data)
            except ConnectionClosed:
                return
            self.frames_sent += 1

    async def _receive_loop(self, ws: ClientConnection) -> None:
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    self._on_audio(message)
                else:
                    self._on_text(message)
        except ConnectionClosed:
            return

    def _on_audio(self, data: bytes) -> None:
        self.bytes_received += len(data)
        data = self._carry + data
        if len(data) % 2:
            data, self._carry = data[:-1], data[-1:]
        else:
            self._carry = b""
        if data:
            self.playback.append(self._in(np.frombuffer(data, dtype="<i2").astype(np.int16)))

    def _on_text(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except json.JSONDecodeError:
            self.violation("bad_text_frame", f"text frame is not JSON: {text[:80]!r}")
            return
        kind = msg.get("type") if isinstance(msg, dict) else None
        if kind == "killAudio":
            flushed = self.playback.clear()
            self.kill_audio_count += 1
            self.note("kill_audio", flushed_ms=round(flushed * 1000 / RATE))
        elif kind == "disconnect":
            self.note("stream_disconnect_requested")
            if self._ws is not None and self._closing is None:
                self._closing = asyncio.get_running_loop().create_task(self._ws.close(1000, "disconnect"))
        elif kind in ("mark", "clearMarks"):
            self.note("stream_mark", type=kind, name=(msg.get("data") or {}).get("name"))
        else:
            self.note("stream_text_ignored", type=kind)
