"""Time to first word: stream open -> the first agent audio frame, with the offline cascade engine.

The bridge runs in its own process on its core with `CascadeEngine` (local VAD, Whisper, espeak,
rule interviewer), warmed up before the first call as a deployed task is before it takes traffic.
Calls are opened one after another, each streaming real-time quiet (as Sautikit streams from the
moment the socket opens) until the first agent audio frame arrives; leads differ by name, so the
greeting's first sentence is synthesised for each call, not served from a cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import numpy as np

from bench.analysis import summary_ms
from bench.loadgen import FRAME_BYTES, FRAME_MS, RATE, session_id
from bench.procs import SutProcess
from bench.sut import SECRET
from bench.wire import OP_BINARY, StreamClient, frame_header, open_stream
from leadqual.signing import make_bridge_token

_QUIET = frame_header(OP_BINARY, FRAME_BYTES) + bytes(FRAME_BYTES)


async def one_call(host: str, port: int, n: int, *, timeout_s: float = 15.0) -> dict[str, float]:
    sid = session_id(n)
    token = make_bridge_token(SECRET, sid, ttl_s=3600)
    got = asyncio.get_running_loop().create_future()

    def on_audio(client: StreamClient, t_ns: int, nbytes: int) -> None:
        if not got.done():
            got.set_result(t_ns)

    meta = json.dumps({"callSid": sid, "sampleRate": RATE, "mixType": "mono"})
    client = await open_stream(
        host, port, f"/stream?session={sid}&token={token}&out_rate={RATE}", metadata=meta, on_audio=on_audio
    )

    async def stream_quiet() -> None:
        while client.is_open:
            client.send_raw(_QUIET)
            await asyncio.sleep(FRAME_MS / 1000)

    feeder = asyncio.create_task(stream_quiet())
    try:
        first_ns = await asyncio.wait_for(got, timeout_s)
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
        client.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(client.closed), 5)
        client.abort()
    return {
        "open_ms": (first_ns - client.open_ns) / 1e6,
        "connect_ms": (first_ns - client.connect_ns) / 1e6,
    }


async def measure_ttfw(
    kind: str, cpu: int | None, *, calls: int, first_n: int = 500_000, gap_s: float = 0.3
) -> dict[str, Any]:
    """`calls` sequential calls against a fresh SUT of `kind`; returns the summary and samples."""
    t0 = time.monotonic()
    async with SutProcess(kind, cpu, ready_timeout_s=180) as sut:
        ready_s = time.monotonic() - t0
        samples: list[dict[str, float]] = []
        failures: list[str] = []
        for i in range(calls):
            try:
                samples.append(await one_call("127.0.0.1", sut.port, first_n + i))
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            # Let the previous call wind down (its hang-up work) before timing the next.
            await asyncio.sleep(gap_s)
    opens = np.array([s["open_ms"] for s in samples])
    connects = np.array([s["connect_ms"] for s in samples])
    return {
        "open_ms": summary_ms(opens),
        "connect_ms": summary_ms(connects),
        "first_call_ms": round(float(opens[0]), 1) if opens.size else None,
        "halves_p95_ms": [round(float(np.percentile(h, 95)), 1) for h in np.array_split(opens, 2) if h.size],
        "failures": failures,
        "sut_ready_s": round(ready_s, 2),
        "seconds": round(time.monotonic() - t0, 1),
    }
