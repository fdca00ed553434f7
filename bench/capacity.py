"""Capacity, relay latency and memory per call, for the bridge and the Pipecat peer.

The system under test runs alone on one core (bench.sut, pinned); the load generator and this
harness run on the other(s). A level of N calls is measured in a window of `window_s` after the
calls are up and greeted: frames late by more than 20 ms (either direction), frames the model never
saw, the SUT's CPU share of its core, its RSS. Capacity = the largest N whose window has <= 0.1 %
late frames and leaves the core unsaturated; found by stepping up, then bisecting the last gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.analysis import Window, outbound_frames, outbound_latencies_ms
from bench.loadgen import LoadGenerator
from bench.procs import SutProcess, core_busy_seconds, own_cpu_seconds
from bench.stallwatch import StallLog, watching
from bench.sut import SECRET

MAX_CALL_AGE_S = 240.0  # the example campaign ends calls at 300 s; replace them before that
Log = Callable[[str], None]


async def measure_window(
    lg: LoadGenerator,
    sut: SutProcess,
    calls: int,
    *,
    window_s: float,
    settle_s: float,
    baseline_ms: float = 0.0,
    workdir: Path,
    stalls: StallLog | None = None,
) -> Window:
    """Bring the load to `calls` streams, let it settle, then measure one window."""
    failures_before = len(lg.failures)
    await lg.refresh(MAX_CALL_AGE_S)
    await lg.scale(calls)
    await asyncio.sleep(settle_s)
    # One short round (~15 ms, under a frame's late budget), well before the window opens.
    speed = await sut.cmd({"cmd": "calibrate", "rounds": 1})
    await asyncio.sleep(0.5)
    await sut.cmd({"cmd": "reset"})
    sent0 = lg.frames_sent()
    cpu0, own0, core0 = sut.cpu_seconds(), own_cpu_seconds(), core_busy_seconds(sut.cpu)
    lag0 = lg.tick.max_lag_ms
    lg.tick.max_lag_ms = 0.0
    t0 = time.monotonic_ns()
    await asyncio.sleep(window_s)
    t1 = time.monotonic_ns()
    cpu1, own1, core1 = sut.cpu_seconds(), own_cpu_seconds(), core_busy_seconds(sut.cpu)
    sent1 = lg.frames_sent()
    rss = sut.rss_mb()
    path = workdir / f"w{t0}"
    info = await sut.cmd({"cmd": "dump", "path": str(path)})
    inbound_us, inbound_at_us, replies = _load_dump(path)
    recv = [(c.sid, np.frombuffer(c.client.recv_ns, dtype=np.int64)) for c in lg.calls]
    outbound, outbound_end, unmatched = outbound_frames(recv, replies, t0, t1)
    first_out, _ = outbound_latencies_ms(recv, replies, t0, t1, first_only=True)
    # Arrival offsets are µs after the SUT's reset, mod 2**32 (the window is far shorter).
    inbound_end = int(info.get("t0_ns", t0)) + inbound_at_us.astype(np.int64) * 1000
    secs = (t1 - t0) / 1e9
    w = Window(
        calls=len(lg.calls),
        seconds=secs,
        sent=sent1 - sent0,
        inbound_ms=inbound_us.astype(np.float64) / 1000.0,
        outbound_ms=outbound,
        outbound_unmatched=unmatched,
        cpu=(cpu1 - cpu0) / secs,
        loadgen_cpu=(own1 - own0) / secs,
        rss_mb=rss,
        baseline_ms=baseline_ms,
        failures=len(lg.failures) - failures_before,
        tick_max_lag_ms=lg.tick.max_lag_ms,
        first_out_ms=first_out,
        inbound_end_ns=inbound_end,
        outbound_end_ns=outbound_end,
        stalls=stalls.between(t0, t1) if stalls is not None else np.zeros((0, 2), dtype=np.int64),
        foreign_cpu=max(0.0, (core1 - core0) - (cpu1 - cpu0)) / secs,
        extra={
            "sut_live": info.get("live"),
            "core_calibration_ms": speed.get("ms"),
            "sut_gc_pauses": {
                "count": info.get("gc_count"),
                "total_ms": info.get("gc_ms"),
                "max_ms": info.get("gc_max_ms"),
            },
            "sut_loop_stalls_over_20ms": info.get("loop_stalls_over_20ms"),
            "sut_loop_max_lag_ms": info.get("loop_max_lag_ms"),
        },
    )
    lg.tick.max_lag_ms = max(lag0, lg.tick.max_lag_ms)
    for p in (Path(str(path) + s) for s in (".inbound", ".inbound_at", ".replies.json")):
        p.unlink(missing_ok=True)
    return w


async def _fresh_calls(lg: LoadGenerator, settle_s: float) -> None:
    """Hang up every call before measuring another level. A level that failed leaves its calls in
    step with each other (a stall delays every lead alike, so their turns end together and the
    replies come in bursts), which would make any lower level look worse than it is."""
    await lg.close_all()
    await asyncio.sleep(settle_s)


@contextlib.contextmanager
def _stall_watch(cpu: int | None, workdir: Path) -> Iterator[StallLog | None]:
    """Stall watchers on the SUT's core and the load generator's (bench.stallwatch)."""
    if cpu is None:
        yield None
        return
    with watching(sorted({cpu} | os.sched_getaffinity(0)), workdir) as log:
        yield log


def _load_dump(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
    inbound_us = np.fromfile(str(path) + ".inbound", dtype=np.uint32)
    inbound_at = np.fromfile(str(path) + ".inbound_at", dtype=np.uint32)
    replies: dict[str, list[int]] = json.loads(Path(str(path) + ".replies.json").read_text())
    return inbound_us, inbound_at, replies


def loopback_baseline_ms(samples: int = 2000) -> float:
    """Median one-way latency of a small message over loopback TCP (half a round trip), the network
    part of every relay measurement, which is subtracted from it."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    for s in (cli, conn):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    msg = bytes(648)
    rtts = []
    try:
        for _ in range(samples):
            t = time.perf_counter_ns()
            cli.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(conn.recv(65536))
            conn.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(cli.recv(65536))
            rtts.append(time.perf_counter_ns() - t)
    finally:
        for s in (cli, conn, srv):
            s.close()
    return float(np.median(rtts)) / 2e6


@dataclass
class CapacityResult:
    kind: str
    capacity: int
    windows: list[Window] = field(default_factory=list)
    limited_by: str = ""
    seconds: float = 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "capacity": self.capacity,
            "limited_by": self.limited_by,
            "seconds": round(self.seconds, 1),
            "steps": [w.describe() for w in self.windows],
        }


def capacity_of(windows: list[Window]) -> int:
    """The largest load that passed below every load that failed: a level that passed once and
    failed once (near the edge, on a machine whose speed moves) does not count."""
    failed = [w.calls for w in windows if not w.ok()]
    ceiling = min(failed) if failed else None
    passed = [w.calls for w in windows if w.ok() and (ceiling is None or w.calls < ceiling)]
    return max(passed, default=0)


def _why(w: Window) -> str:
    if w.failures:
        return f"{w.failures} calls failed to connect at {w.calls}"
    if w.cpu >= 0.97:
        return f"CPU saturated ({100 * w.cpu:.0f}% of the core) at {w.calls} calls"
    return f"{100 * w.late_fraction:.2f}% late frames at {w.calls} calls (CPU {100 * w.cpu:.0f}%)"


async def find_capacity(
    kind: str,
    cpu: int | None,
    *,
    ladder: list[int],
    window_s: float,
    settle_s: float,
    refine: int,
    baseline_ms: float,
    budget_s: float,
    log: Log,
    confirm: int = 2,
) -> CapacityResult:
    """Step up `ladder` until a level fails, then bisect between the last good and first bad level
    `refine` times, then confirm the result in a fresh window (stepping down 8% while that fails,
    up to `confirm` + 1 failures). The ladder stops early when the time budget runs out."""
    t_start = time.monotonic()
    result = CapacityResult(kind, 0)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, _stall_watch(cpu, Path(tmp)) as stalls:
        async with SutProcess(kind, cpu) as sut, LoadGenerator("127.0.0.1", sut.port, secret=SECRET) as lg:

            async def step(level: int, *, confirmation: bool = False) -> Window:
                """One measured window at `level` calls, recorded and logged."""
                w = await measure_window(
                    lg,
                    sut,
                    level,
                    window_s=window_s,
                    settle_s=settle_s,
                    baseline_ms=baseline_ms,
                    workdir=Path(tmp),
                    stalls=stalls,
                )
                if confirmation:
                    w.extra["confirmation"] = True
                result.windows.append(w)
                log(_step_line(kind, w) + (" (confirmation)" if confirmation else ""))
                return w

            good, bad = 0, None
            for level in ladder:
                w = await step(level)
                if w.ok():
                    good = level
                else:
                    bad = level
                    result.limited_by = _why(w)
                    break
                if time.monotonic() - t_start > budget_s:
                    result.limited_by = f"time budget ({budget_s:.0f} s) reached before a level failed"
                    break
            if bad is None and not result.limited_by:
                result.limited_by = f"the ladder ended at {good} calls with no failure"
            if bad is not None:
                lo, hi = good, bad
                for _ in range(refine):
                    if hi - lo <= max(2, lo // 20):
                        break
                    if time.monotonic() - t_start > budget_s:
                        break
                    mid = (lo + hi) // 2
                    await _fresh_calls(lg, settle_s)
                    w = await step(mid)
                    if w.ok():
                        lo = mid
                    else:
                        hi = mid
                        result.limited_by = _why(w)
                good = lo
            # Confirm: a level that passed once near the edge may have been lucky. Measure it again;
            # while it fails, step down 8% and measure again (at most `confirm` failures), so the
            # result is always a level that passed in a fresh window below every level that failed.
            failures = 0
            while good > 0 and confirm > 0:
                await _fresh_calls(lg, settle_s)
                w = await step(good, confirmation=True)
                if w.ok():
                    break
                result.limited_by = _why(w)
                failures += 1
                if failures > confirm:
                    break
                good = max(1, good * 92 // 100)
            result.capacity = capacity_of(result.windows)
    result.seconds = time.monotonic() - t_start
    return result


@dataclass
class LevelResult:
    low: Window  # a light load: what the system adds when it is not busy
    idle_rss_mb: float  # after the light load's calls have ended
    level: Window | None  # the requested load (half capacity)
    profile: list[dict[str, Any]] = field(default_factory=list)
    profile_groups: dict[str, float] = field(default_factory=dict)


async def measure_level(
    kind: str,
    cpu: int | None,
    calls: int | None,
    *,
    window_s: float,
    settle_s: float,
    baseline_ms: float,
    log: Log,
    low_calls: int = 10,
    profile_calls: int | None = None,
    profile_path: Path | None = None,
) -> LevelResult:
    """A fresh SUT: a window at `low_calls` (latency the system adds when idle; it also warms the
    code paths), the idle RSS once those calls end, then a window at `calls` — so memory per live
    call = (RSS at `calls` - idle RSS) / calls. With `profile_path`, one more window at
    `profile_calls` runs under cProfile in the SUT (not measured: the profiler slows it) and its
    top functions are returned."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, _stall_watch(cpu, Path(tmp)) as stalls:
        async with SutProcess(kind, cpu) as sut, LoadGenerator("127.0.0.1", sut.port, secret=SECRET) as lg:
            window = {
                "window_s": window_s,
                "settle_s": settle_s,
                "baseline_ms": baseline_ms,
                "workdir": Path(tmp),
                "stalls": stalls,
            }
            low = await measure_window(lg, sut, low_calls, **window)
            log(_step_line(kind, low))
            await lg.close_all()
            await asyncio.sleep(1.0)
            idle_rss = sut.rss_mb()
            level = None
            if calls:
                level = await measure_window(lg, sut, calls, **window)
                log(_step_line(kind, level))
            top: list[dict[str, Any]] = []
            groups: dict[str, float] = {}
            if profile_path is not None and profile_calls:
                await lg.scale(profile_calls)
                await asyncio.sleep(settle_s)
                await sut.cmd({"cmd": "profile", "on": True})
                await asyncio.sleep(window_s)
                await sut.cmd({"cmd": "profile", "on": False, "path": str(profile_path)})
                top = top_functions(profile_path)
                groups = profile_groups(profile_path)
                log(f"  {kind:8s} {profile_calls:5d} calls: profiled {window_s:.0f} s -> {profile_path}")
    return LevelResult(low, idle_rss, level, top, groups)


PROFILE_GROUPS = (
    ("the fake model (bench)", ("bridge/engines/fake.py", "bench/")),
    ("bridge code", ("bridge/",)),
    ("websockets library", ("websockets/",)),
    ("pipecat", ("pipecat/",)),
    ("fastapi/starlette", ("starlette/", "fastapi/")),
    ("numpy / soxr", ("numpy/", "soxr/", "method 'max' of 'numpy", "method 'min' of 'numpy", "numpy.")),
    ("asyncio event loop", ("asyncio/",)),
    ("socket send/recv", ("_socket.socket",)),
)


def profile_groups(path: Path) -> dict[str, float]:
    """Self time of a cProfile dump by area (where a core's time goes), in percent. Built-ins
    (len, max, socket methods…) count for the area of the code that called them, except the
    socket calls, which are an area of their own."""
    import pstats

    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined] - set by Stats() but not in its stubs
    total = sum(v[2] for v in raw.values()) or 1.0

    def group_of(filename: str, func: str) -> str:
        where = f"{filename}:{func}"
        return next((name for name, keys in PROFILE_GROUPS if any(k in where for k in keys)), "other")

    out: dict[str, float] = {}
    for (filename, _line, func), (_cc, _nc, tt, _ct, callers) in raw.items():
        group = group_of(filename, func)
        if filename == "~" and group == "other" and callers:
            spent = sum(c[2] for c in callers.values()) or 1.0
            for (cfile, _cline, cfunc), c in callers.items():
                g = group_of(cfile, cfunc)
                out[g] = out.get(g, 0.0) + tt * c[2] / spent
            continue
        out[group] = out.get(group, 0.0) + tt
    return {k: round(100.0 * v / total, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}


def top_functions(path: Path, n: int = 12) -> list[dict[str, Any]]:
    """The functions that took the most time of their own in a cProfile dump, as shares of the total."""
    import pstats

    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # pstats keeps its table here
    total = sum(v[2] for v in raw.values()) or 1.0
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    out = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in rows:
        short = filename
        for marker in ("site-packages/", "/work/main/", "lib/python3.12/"):
            if marker in short:
                short = short.split(marker, 1)[1]
                break
        out.append(
            {
                "function": f"{short}:{line}({func})",
                "self_pct": round(100.0 * tt / total, 1),
                "cum_pct": round(100.0 * ct / total, 1),
                "calls": nc,
            }
        )
    return out


def _step_line(kind: str, w: Window) -> str:
    d = w.describe()
    return (
        f"  {kind:8s} {w.calls:5d} calls: late {d['late_pct']:.3f}% "
        f"(in {w.late_in}, out {w.late_out}, lost {w.lost}), CPU {d['sut_cpu_pct']:.0f}%, "
        f"p99 in {d['lead_to_model_ms']['p99']} ms / out {d['model_to_lead_ms']['p99']} ms, "
        f"stalls {d.get('sut_loop_stalls_over_20ms')} (max {d.get('sut_loop_max_lag_ms')} ms, "
        f"gc2 max {((d.get('sut_gc_pauses') or {}).get('max_ms') or [0, 0, 0])[2]} ms), "
        f"other procs {d['foreign_cpu_pct']:.0f}% -> {'ok' if w.ok() else 'FAIL'}"
    )
