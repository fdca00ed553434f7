"""The load generator: many Sautikit media streams, 20 ms frames in real time, on one core.

Each call is what Sautikit does on a live call (SAUTIKIT.md §5): connect with `audio.drachtio.org`,
send the metadata text frame, then a 640-byte frame (16 kHz S16LE) every 20 ms until hang-up,
whatever the lead is doing. The lead's script, after a silence while the greeting plays: 1 s of
speech (a 220 Hz tone well above the speech threshold), 2 s of quiet — so the model hears an
utterance end every 3 s and answers with 1.2 s of audio (the agent talks ~40% of the time).
Calls start at random points of the script, so turns are spread in time as on real traffic.

One ticker task sends every call's frame: calls are spread over `PHASES` slots of the 20 ms period
(not all at the same instant), each frame stamped with its send time (bench.wire). Received audio
is recorded per call (arrival time, size). Late frames and latency are computed afterwards
(`bench.analysis`) from these records and what the model recorded in the system under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field

import numpy as np

from bench.wire import OP_BINARY, STAMP_BYTES, StreamClient, frame_header, open_stream, stamp_bytes
from leadqual.signing import make_bridge_token

RATE = 16_000
FRAME_MS = 20
FRAME_BYTES = RATE * 2 * FRAME_MS // 1000  # 640
PHASES = 10  # send slots per 20 ms period
SPEECH_MS = 1000
QUIET_MS = 2000
GREETING_WAIT_MS = 1900  # the 26-word greeting (~1.6 s at the fake's 60 ms a word) plus the end-of-speech gap
_HEADER = frame_header(OP_BINARY, FRAME_BYTES)


def _tone(freq: float, ms: int, amplitude: int = 8000) -> bytes:
    n = RATE * ms // 1000
    t = np.arange(n, dtype=np.float64) / RATE
    return (np.sin(2 * np.pi * freq * t) * amplitude).astype("<i2").tobytes()


def lead_cycle() -> list[bytes]:
    """One speech + quiet cycle as 20 ms payloads."""
    pcm = _tone(220.0, SPEECH_MS) + bytes(RATE * 2 * QUIET_MS // 1000)
    return [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]


CYCLE = lead_cycle()
_CYCLE_TAILS = [p[STAMP_BYTES:] for p in CYCLE]
_SILENT_TAIL = bytes(FRAME_BYTES - STAMP_BYTES)


def session_id(n: int) -> str:
    return f"HD_bench{n:010d}"


@dataclass
class Call:
    n: int
    sid: str
    client: StreamClient
    prefix: int  # silent frames before the script starts (the greeting)
    offset: int  # where in the cycle this lead starts
    opened_at: float
    i: int = 0

    def next_frame(self, stamp: bytes) -> bytes:
        i = self.i
        self.i = i + 1
        if i < self.prefix:
            return _HEADER + stamp + _SILENT_TAIL
        return _HEADER + stamp + _CYCLE_TAILS[(i - self.prefix + self.offset) % len(CYCLE)]


@dataclass
class TickStats:
    ticks: int = 0
    late_ticks: int = 0  # the ticker woke more than one slot late
    max_lag_ms: float = 0.0
    lags_ms: list[float] = field(default_factory=list)


class LoadGenerator:
    """`async with LoadGenerator(host, port) as lg: await lg.scale(100); …`"""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        secret: str,
        path: str = "/stream",
        seed: int = 7,
        connect_rate: float = 150.0,
        greeting_wait_ms: int = GREETING_WAIT_MS,
        spread: bool = True,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.secret = secret
        self.connect_rate = connect_rate
        self.greeting_wait_ms = greeting_wait_ms
        self.spread = spread  # start leads at random points of the script (off: all in step, for tests)
        self.calls: list[Call] = []
        self.closed_calls: list[Call] = []
        self.failures: list[str] = []
        self.tick = TickStats()
        self._rng = random.Random(seed)
        self._next_n = 0
        self._slots: list[list[Call]] = [[] for _ in range(PHASES)]
        self._ticker: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoadGenerator:
        self._ticker = asyncio.create_task(self._tick(), name="loadgen-ticker")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close_all()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    # ------------------------------------------------------------------ calls

    def _url_path(self, sid: str) -> str:
        token = make_bridge_token(self.secret, sid, ttl_s=3600)
        return f"{self.path}?session={sid}&token={token}&out_rate={RATE}"

    async def _open_one(self) -> Call | None:
        n = self._next_n
        self._next_n += 1
        sid = session_id(n)
        meta = json.dumps({"callSid": sid, "sampleRate": RATE, "mixType": "mono"})
        try:
            client = await open_stream(self.host, self.port, self._url_path(sid), metadata=meta, timeout_s=15)
        except Exception as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
            return None
        jitter = self._rng.randrange(0, 3000) if self.spread else 0
        offset = self._rng.randrange(len(CYCLE)) if self.spread else 0
        call = Call(n, sid, client, (self.greeting_wait_ms + jitter) // FRAME_MS, offset, time.monotonic())
        self.calls.append(call)
        self._slots[n % PHASES].append(call)
        return call

    async def scale(self, target: int) -> None:
        """Open or close calls until `target` are live (opening at `connect_rate` a second)."""
        if target < len(self.calls):
            await self.close_calls(self.calls[target:])
            return
        pending: list[asyncio.Task[Call | None]] = []
        gap = 1.0 / self.connect_rate
        for _ in range(target - len(self.calls)):
            pending.append(asyncio.create_task(self._open_one()))
            await asyncio.sleep(gap)
        if pending:
            await asyncio.gather(*pending)

    async def close_calls(self, calls: list[Call], timeout_s: float = 10.0) -> None:
        for c in calls:
            c.client.close()
        drop = {id(c) for c in calls}
        self.calls = [c for c in self.calls if id(c) not in drop]
        for slot in self._slots:
            slot[:] = [c for c in slot if id(c) not in drop]
        self.closed_calls.extend(calls)
        waits = [c.client.closed for c in calls]
        if waits:
            _, _still = await asyncio.wait(waits, timeout=timeout_s)
            for c in calls:
                if not c.client.closed.done():
                    c.client.abort()

    async def close_all(self) -> None:
        await self.close_calls(list(self.calls))

    async def refresh(self, max_age_s: float) -> int:
        """Replace calls older than `max_age_s` (a campaign's max call length would end them)."""
        now = time.monotonic()
        old = [c for c in self.calls if now - c.opened_at > max_age_s]
        if old:
            await self.close_calls(old)
            await self.scale(len(self.calls) + len(old))
        return len(old)

    def frames_sent(self) -> int:
        return sum(c.client.frames_sent for c in self.calls)

    # ------------------------------------------------------------------ the clock

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        slot_s = FRAME_MS / 1000.0 / PHASES
        start = loop.time()
        k = 0
        st = self.tick
        monotonic_ns = time.monotonic_ns
        while True:
            target = start + k * slot_s
            delay = target - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag = -delay * 1000.0
                if lag > st.max_lag_ms:
                    st.max_lag_ms = lag
                if lag > slot_s * 1000.0:
                    st.late_ticks += 1
                if lag > 200.0:  # hopelessly behind (a stall): resynchronise instead of bursting
                    start = loop.time() - k * slot_s
            st.ticks += 1
            for call in self._slots[k % PHASES]:
                client = call.client
                if client.is_open:
                    client.send_raw(call.next_frame(stamp_bytes(monotonic_ns() // 1000)))
            k += 1
