"""Pure number work: latency per frame from the two sides' records, percentiles, spreads.

Lead -> model: the model recorded, for each frame, now minus the send stamp (µs).
Model -> lead: the model recorded when each reply started (all of a reply's audio is handed to the
system under test at once); the load generator recorded when each frame arrived. A frame's
latency is its arrival minus the start of the latest reply before it — exact as long as a frame
is not later than the gap between replies (seconds), far beyond the 20 ms that makes it late.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LATE_MS = 20.0


def pct(values: np.ndarray | Sequence[float], q: float) -> float | None:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return None
    return float(np.percentile(arr, q))


def summary_ms(values: np.ndarray | Sequence[float]) -> dict[str, float | int | None]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "n": int(arr.size),
        "p50": _r(pct(arr, 50)),
        "p95": _r(pct(arr, 95)),
        "p99": _r(pct(arr, 99)),
        "max": _r(float(arr.max())) if arr.size else None,
    }


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


def outbound_latencies_ms(
    recv: Iterable[tuple[str, np.ndarray]],
    replies: Mapping[str, Sequence[int]],
    t0_ns: int,
    t1_ns: int,
    first_only: bool = False,
) -> tuple[np.ndarray, int]:
    """Latency (ms) of every frame received in [t0, t1] (or, with `first_only`, of each reply's
    first frame: the model's first audio to the socket), and how many had no reply to match."""
    lat, _, unmatched = outbound_frames(recv, replies, t0_ns, t1_ns, first_only)
    return lat, unmatched


def outbound_frames(
    recv: Iterable[tuple[str, np.ndarray]],
    replies: Mapping[str, Sequence[int]],
    t0_ns: int,
    t1_ns: int,
    first_only: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """As outbound_latencies_ms, plus each frame's arrival time (ns)."""
    out: list[np.ndarray] = []
    ends: list[np.ndarray] = []
    unmatched = 0
    for sid, times in recv:
        arr = np.asarray(times, dtype=np.int64)
        arr = arr[(arr >= t0_ns) & (arr <= t1_ns)]
        if arr.size == 0:
            continue
        starts = np.asarray(sorted(replies.get(sid, ())), dtype=np.int64)
        if starts.size == 0:
            unmatched += int(arr.size)
            continue
        idx = np.searchsorted(starts, arr, side="right") - 1
        ok = idx >= 0
        unmatched += int((~ok).sum())
        arr, idx = arr[ok], idx[ok]
        if first_only:
            # Frames arrive in order, so a reply's first frame is where its index first appears;
            # replies that started before t0 are skipped (their first frame may precede the window).
            _, first = np.unique(idx, return_index=True)
            keep = starts[idx[first]] >= t0_ns
            arr, idx = arr[first][keep], idx[first][keep]
        out.append((arr - starts[idx]) / 1e6)
        ends.append(arr)
    if not out:
        return np.zeros(0), np.zeros(0, dtype=np.int64), unmatched
    return np.concatenate(out), np.concatenate(ends), unmatched


def stall_overlap_ms(end_ns: np.ndarray, lat_ms: np.ndarray, stalls: np.ndarray) -> np.ndarray:
    """For each frame in flight over [end - latency, end], how long the machine was stalled then."""
    out = np.zeros(end_ns.size)
    if stalls.size == 0 or end_ns.size == 0:
        return out
    start = end_ns - (lat_ms * 1e6).astype(np.int64)
    for s, e in stalls:
        overlap = np.minimum(end_ns, e) - np.maximum(start, s)
        out += np.clip(overlap, 0, None) / 1e6
    return out


@dataclass
class Window:
    """One measured load level."""

    calls: int
    seconds: float
    sent: int  # lead frames sent in the window
    inbound_ms: np.ndarray  # lead -> model latency of frames the model received in the window
    outbound_ms: np.ndarray  # model -> lead latency of frames the lead received in the window
    outbound_unmatched: int
    cpu: float  # fraction of the one core the SUT has
    loadgen_cpu: float
    rss_mb: float
    baseline_ms: float = 0.0  # loopback network one-way latency, subtracted
    foreign_cpu: float = 0.0  # share of the SUT's core used by other processes (a shared machine)
    failures: int = 0
    tick_max_lag_ms: float = 0.0
    first_out_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))  # each reply's first frame
    inbound_end_ns: np.ndarray | None = None  # when each inbound frame reached the model
    outbound_end_ns: np.ndarray | None = None  # when each outbound frame reached the lead
    stalls: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))  # machine gaps
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Latency net of machine stalls (bench.stallwatch): what the system under test is answerable for.
        self.inbound_net_ms = self.inbound_ms - self._excused(self.inbound_end_ns, self.inbound_ms)
        self.outbound_net_ms = self.outbound_ms - self._excused(self.outbound_end_ns, self.outbound_ms)

    def _excused(self, ends: np.ndarray | None, lat: np.ndarray) -> np.ndarray:
        if ends is None or ends.size != lat.size:
            return np.zeros(lat.size)
        return stall_overlap_ms(ends, lat, self.stalls)

    @property
    def lost(self) -> int:
        # Frames sent in the window the model never saw by its end: stuck in a backlog, i.e. late.
        # The window's edges let up to one frame per call be counted either side; forgive that.
        return max(0, self.sent - int(self.inbound_ms.size) - self.calls)

    @property
    def late_in(self) -> int:
        return int(((self.inbound_net_ms - self.baseline_ms) > LATE_MS).sum())

    @property
    def late_out(self) -> int:
        return int(((self.outbound_net_ms - self.baseline_ms) > LATE_MS).sum())

    @property
    def late_excused(self) -> int:
        """Frames late only because the machine stopped (a vCPU stall), not counted as late."""
        raw = int(((self.inbound_ms - self.baseline_ms) > LATE_MS).sum())
        raw += int(((self.outbound_ms - self.baseline_ms) > LATE_MS).sum())
        return raw - self.late_in - self.late_out

    @property
    def total(self) -> int:
        return max(self.sent, int(self.inbound_ms.size)) + int(self.outbound_ms.size)

    @property
    def late_fraction(self) -> float:
        total = self.total
        if total == 0:
            return 1.0
        return (self.late_in + self.late_out + self.lost + self.outbound_unmatched) / total

    def ok(self, max_late: float = 0.001, max_cpu: float = 0.97) -> bool:
        return self.failures == 0 and self.total > 0 and self.late_fraction <= max_late and self.cpu < max_cpu

    def relay_ms(self) -> np.ndarray:
        return np.concatenate([self.inbound_net_ms, self.outbound_net_ms]) - self.baseline_ms

    def describe(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "seconds": round(self.seconds, 2),
            "ok": self.ok(),
            "late_pct": round(100.0 * self.late_fraction, 4),
            "late_in": self.late_in,
            "late_out": self.late_out,
            "late_excused_machine_stalls": self.late_excused,
            "machine_stalls": len(self.stalls),
            "machine_stall_max_ms": round(float((self.stalls[:, 1] - self.stalls[:, 0]).max()) / 1e6, 1)
            if len(self.stalls)
            else 0.0,
            "lost": self.lost,
            "frames_in": int(self.inbound_ms.size),
            "frames_out": int(self.outbound_ms.size),
            "sut_cpu_pct": round(100.0 * self.cpu, 1),
            "loadgen_cpu_pct": round(100.0 * self.loadgen_cpu, 1),
            "foreign_cpu_pct": round(100.0 * self.foreign_cpu, 1),
            "rss_mb": round(self.rss_mb, 1),
            "lead_to_model_ms": summary_ms(self.inbound_net_ms - self.baseline_ms),
            "model_to_lead_ms": summary_ms(self.outbound_net_ms - self.baseline_ms),
            "reply_first_frame_ms": summary_ms(self.first_out_ms - self.baseline_ms),
            "connect_failures": self.failures,
            "loadgen_tick_max_lag_ms": round(self.tick_max_lag_ms, 2),
            **self.extra,
        }


def spread_pct(values: Sequence[float]) -> float | None:
    """(max - min) / mean, in percent: the run-to-run spread of repeated measurements."""
    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return None
    mean = sum(vals) / len(vals)
    if mean == 0:
        return None
    return round(100.0 * (max(vals) - min(vals)) / mean, 1)
