"""The fake realtime model both systems under test talk to, and what it records for the benchmark.

The bridge and the Pipecat peer drive the very same object: `BenchModel` is the bridge's own
`bridge.engines.fake.FakeEngine` (an energy detector that hears an utterance end after 300 ms of
quiet, and answers with a 24 kHz tone), plus two recording hooks:

- every audio frame it is given has the load generator's send time in its first samples
  (`bench.wire`), so on arrival it records lead -> model latency;
- every reply it starts is timestamped per session, so the load generator can compute
  model -> lead latency for each frame it receives back.

Why in-process and not a model server over the network: the capacity question is what the relay
itself costs per call. A networked fake (the OpenAI Realtime fake in echo mode) would add a
second WebSocket, JSON and base64 per frame on both sides, and the same again in the peer — cost
that belongs to the model's wire protocol, not to the relay, and would be identical for any
framework — and its own event loop's delays would be counted as relay lateness. In-process, the
only things between the lead's socket and the model are the system under test's own code.

Replies are emitted all at once (`pace_s=0`), as realtime models generate faster than real time;
both systems send them on unpaced (see pipecat_peer for the one-method change that makes Pipecat do
the same instead of pacing at 2x real time).
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from array import array
from pathlib import Path
from typing import Any

from bench.wire import STAMP_BYTES, now_us, stamp_age_us
from bridge.engines.base import SessionContext
from bridge.engines.fake import FakeEngine

REPLY_MS = 1200  # every lead utterance gets 1.2 s of agent audio
CHUNK_MS = 100  # as AudioOut events of 100 ms (2400 samples at 24 kHz)


class Recorder:
    """What the model saw, across all sessions in one process. Reset between load steps.

    It also watches the process for what makes frames late without using CPU: garbage collector
    pauses (gc.callbacks) and event-loop stalls (`watch_loop`: a timer that notes how late it
    wakes — a stall longer than a frame is a collector pause or the core being given to
    another process)."""

    t0_ns: int
    inbound_us: array[int]  # lead -> model latency of each stamped frame
    inbound_at: array[int]  # and when it arrived, µs after t0_ns
    inbound_unstamped: int
    gc_ms: list[float]
    gc_count: list[int]
    gc_max_ms: list[float]
    loop_stalls: int  # the loop woke more than 20 ms late
    loop_max_lag_ms: float

    def __init__(self) -> None:
        self.replies: dict[str, list[int]] = {}  # session -> reply start times (monotonic ns)
        self.sessions_started = 0
        self.sessions_closed = 0
        self._gc_started = 0.0
        gc.callbacks.append(self._on_gc)
        self.reset()

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
            return
        ms = (time.perf_counter() - self._gc_started) * 1000.0
        gen = int(info.get("generation", 0))
        self.gc_ms[gen] += ms
        self.gc_count[gen] += 1
        if ms > self.gc_max_ms[gen]:
            self.gc_max_ms[gen] = ms

    async def watch_loop(self, period_s: float = 0.02) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t = loop.time()
            await asyncio.sleep(period_s)
            lag = (loop.time() - t - period_s) * 1000.0
            if lag > self.loop_max_lag_ms:
                self.loop_max_lag_ms = lag
            if lag > 20.0:
                self.loop_stalls += 1

    def reset(self) -> None:
        """Start a new measurement window (reply times are kept: a window's frames may belong to a
        reply that started before it)."""
        self.t0_ns = time.monotonic_ns()
        self.inbound_us = array("I")
        self.inbound_at = array("I")
        self.inbound_unstamped = 0
        self.gc_ms = [0.0, 0.0, 0.0]
        self.gc_count = [0, 0, 0]
        self.gc_max_ms = [0.0, 0.0, 0.0]
        self.loop_stalls = 0
        self.loop_max_lag_ms = 0.0

    def dump(self, path: Path) -> dict[str, Any]:
        """Write the raw samples next to `path` (.inbound, .replies.json) and return a summary."""
        with Path(str(path) + ".inbound").open("wb") as f:
            self.inbound_us.tofile(f)
        with Path(str(path) + ".inbound_at").open("wb") as f:
            self.inbound_at.tofile(f)
        Path(str(path) + ".replies.json").write_text(json.dumps(self.replies))
        return {
            "t0_ns": self.t0_ns,
            "inbound_frames": len(self.inbound_us),
            "inbound_unstamped": self.inbound_unstamped,
            "replies": sum(len(v) for v in self.replies.values()),
            "sessions_started": self.sessions_started,
            "sessions_closed": self.sessions_closed,
            "gc_count": self.gc_count,
            "gc_ms": [round(v, 1) for v in self.gc_ms],
            "gc_max_ms": [round(v, 1) for v in self.gc_max_ms],
            "loop_stalls_over_20ms": self.loop_stalls,
            "loop_max_lag_ms": round(self.loop_max_lag_ms, 1),
        }


class BenchModel(FakeEngine):
    """FakeEngine that records latency stamps and reply times into a shared Recorder."""

    def __init__(self, recorder: Recorder, **kwargs: Any) -> None:
        kwargs.setdefault("reply_ms", REPLY_MS)
        kwargs.setdefault("chunk_ms", CHUNK_MS)
        super().__init__(**kwargs)
        self._rec = recorder
        self._sid = ""
        self._replies: list[int] = []

    async def start(self, ctx: SessionContext) -> None:
        self._sid = ctx.session_id
        self._rec.replies[self._sid] = self._replies
        self._rec.sessions_started += 1
        await super().start(ctx)

    async def send_audio(self, pcm: bytes) -> None:
        if len(pcm) >= STAMP_BYTES:
            rec = self._rec
            now = now_us()
            rec.inbound_us.append(stamp_age_us(pcm, now))
            rec.inbound_at.append((now - rec.t0_ns // 1000) & 0xFFFFFFFF)
        else:
            self._rec.inbound_unstamped += 1
        await super().send_audio(pcm)

    async def _speak(self, text: str, ms: int | None = None) -> None:
        # All of a reply's chunks are queued in this call, so its start time is every chunk's time.
        self._replies.append(time.monotonic_ns())
        await super()._speak(text, ms)

    async def close(self) -> None:
        if not self._closed:
            self._rec.sessions_closed += 1
        await super().close()
