"""The bridge sections of the bench, turned into metrics: capacity (with relay latency, memory per
call and the latency the bridge adds, each beside Pipecat) and time to first word."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from bench.analysis import LATE_MS, Window, pct, spread_pct, summary_ms
from bench.capacity import LevelResult, find_capacity, loopback_baseline_ms, measure_level
from bench.fakemodel import CHUNK_MS, REPLY_MS
from bench.loadgen import PHASES, QUIET_MS, RATE, SPEECH_MS
from bench.procs import LOG_DIR
from bench.report import GOALS, PEER_RATIO_GOAL, metric

Log = Callable[[str], None]

WORKLOAD = {
    "stream": f"{RATE} Hz S16LE mono, 20 ms frames (640 B) both ways, audio.drachtio.org",
    "lead": f"{SPEECH_MS} ms speech + {QUIET_MS} ms quiet, repeated; silence while the greeting plays",
    "model": (
        f"in-process fake (bench.fakemodel.BenchModel = bridge.engines.fake.FakeEngine): energy VAD, "
        f"each utterance answered with {REPLY_MS} ms of 24 kHz audio in {CHUNK_MS} ms chunks, emitted at once"
    ),
    "sut": "one process pinned to one core; load generator on the other core(s)",
    "late": f"a frame relayed more than {LATE_MS:.0f} ms after it arrived (network baseline subtracted)",
    "send_slots": PHASES,
}


def _added_ms(low: Window) -> tuple[float | None, dict[str, Any]]:
    """Latency the system adds at light load: lead's frame -> model, plus the model's first audio
    of a reply -> the lead's socket (p95 of each, summed)."""
    inbound = low.inbound_net_ms - low.baseline_ms
    first = low.first_out_ms - low.baseline_ms
    p_in, p_out = pct(inbound, 95), pct(first, 95)
    value = None if p_in is None or p_out is None else round(p_in + p_out, 3)
    return value, {
        "lead_to_model_ms": summary_ms(inbound),
        "model_first_audio_to_socket_ms": summary_ms(first),
        "calls": low.calls,
    }


def _resampler_delay_ms() -> dict[str, float]:
    """The algorithmic delay of the bridge's streaming resampler (bridge.audio), per conversion."""
    from bridge.audio import StreamResampler, tone

    out: dict[str, float] = {}
    for src, dst in ((24000, 16000), (24000, 8000), (8000, 16000), (16000, 24000)):
        rs = StreamResampler(src, dst)
        produced = len(rs.process(tone(300.0, 100, src)))
        out[f"{src // 1000}k_to_{dst // 1000}k"] = round(100.0 - produced * 1000.0 / (dst * 2), 3)
    return out


def _per_call_mb(level: LevelResult) -> float | None:
    if level.level is None or level.level.calls == 0:
        return None
    return round((level.level.rss_mb - level.idle_rss_mb) / level.level.calls, 3)


def _foreign_note(windows: list[Window]) -> float:
    return round(max((100.0 * w.foreign_cpu for w in windows), default=0.0), 1)


async def capacity_section(cfg: Any, sut_cpu: int | None, log: Log) -> dict[str, Any]:
    baseline = loopback_baseline_ms()
    log(f"  loopback one-way latency (subtracted): {baseline * 1000:.1f} µs")
    search = {
        "window_s": cfg.window_s,
        "settle_s": cfg.settle_s,
        "refine": cfg.refine,
        "baseline_ms": baseline,
        "budget_s": cfg.capacity_budget_s,
        "log": log,
        "confirm": cfg.confirm,
    }
    bridge = await find_capacity("bridge", sut_cpu, ladder=cfg.bridge_ladder, **search)
    pipecat = await find_capacity("pipecat", sut_cpu, ladder=cfg.pipecat_ladder, **search)
    ratio = round(bridge.capacity / pipecat.capacity, 2) if pipecat.capacity else None
    missed = bridge.capacity < GOALS["bridge_calls_per_core"].value or (ratio or 0) < PEER_RATIO_GOAL
    profile = cfg.profile and missed and bridge.capacity > 0
    at_half = {
        "window_s": cfg.window_s,
        "settle_s": cfg.settle_s,
        "baseline_ms": baseline,
        "log": log,
        "low_calls": cfg.low_calls,
    }
    b_level = await measure_level(
        "bridge",
        sut_cpu,
        max(1, bridge.capacity // 2),
        **at_half,
        profile_calls=bridge.capacity if profile else None,
        profile_path=LOG_DIR / "bridge.prof" if profile else None,
    )
    p_level = await measure_level("pipecat", sut_cpu, max(1, pipecat.capacity // 2), **at_half)

    def relay(level: LevelResult) -> tuple[float | None, dict[str, Any]]:
        w = level.level
        if w is None:
            return None, {}
        p99 = pct(w.relay_ms(), 99)
        p_in = pct(w.inbound_net_ms - w.baseline_ms, 99)
        p_out = pct(w.outbound_net_ms - w.baseline_ms, 99)
        return (None if p99 is None else round(p99, 3)), {
            "limit": (
                f"queueing behind other calls' frames in the one event loop ({100 * w.cpu:.0f}% busy at "
                f"{w.calls} calls): p99 lead->model {p_in or 0:.1f} ms, model->lead {p_out or 0:.1f} ms"
            ),
            "calls": w.calls,
            "lead_to_model_ms": summary_ms(w.inbound_net_ms - w.baseline_ms),
            "model_to_lead_ms": summary_ms(w.outbound_net_ms - w.baseline_ms),
            "raw_p99_ms_with_machine_stalls": round(
                pct(np.concatenate([w.inbound_ms, w.outbound_ms]) - w.baseline_ms, 99) or 0.0, 3
            ),
            "late_excused_machine_stalls": w.late_excused,
            "late_pct": round(100 * w.late_fraction, 4),
            "sut_cpu_pct": round(100 * w.cpu, 1),
        }

    b_p99, b_relay = relay(b_level)
    p_p99, p_relay = relay(p_level)
    b_added, b_added_detail = _added_ms(b_level.low)
    p_added, p_added_detail = _added_ms(p_level.low)
    all_windows = bridge.windows + pipecat.windows + [b_level.low, p_level.low]
    all_windows += [w for w in (b_level.level, p_level.level) if w is not None]
    cap_detail: dict[str, Any] = {
        "goal": GOALS["bridge_calls_per_core"].text,
        "ratio_vs_pipecat": ratio,
        "limited_by": bridge.limited_by,
        "pipecat_limited_by": pipecat.limited_by,
        "network_baseline_ms": round(baseline, 4),
        "max_foreign_cpu_on_sut_core_pct": _foreign_note(all_windows),
        "workload": WORKLOAD,
        "bridge": bridge.describe(),
        "pipecat": pipecat.describe(),
    }
    if b_level.profile:
        cap_detail["profile_at_capacity"] = b_level.profile
        cap_detail["profile_by_area_pct"] = b_level.profile_groups
        areas = ", ".join(f"{k} {v}%" for k, v in list(b_level.profile_groups.items())[:5])
        cap_detail["profile_note"] = (
            f"at {bridge.capacity} calls the core's time goes to {areas} (cProfile); the event loop runs "
            f"~{bridge.windows[-1].cpu * 100:.0f}% busy there and one-loop bursts past 20 ms make frames late"
        )
    # Run-to-run spread inside one run: the level just below capacity, measured twice (ladder and
    # half-capacity windows are different loads, so compare the CPU per call instead).
    calib = [float(w.extra["core_calibration_ms"]) for w in all_windows if w.extra.get("core_calibration_ms")]
    if calib:
        cap_detail["core_calibration_ms"] = {"min": min(calib), "max": max(calib), "first": calib[0]}
        cap_detail["core_speed_variation_pct"] = spread_pct([min(calib), max(calib)])
    cpu_per_call = [w.cpu / w.calls for w in [*bridge.windows, b_level.level] if w and w.calls >= 20]
    if len(cpu_per_call) >= 2:
        cap_detail["cpu_pct_per_call"] = [round(100 * c, 4) for c in cpu_per_call]
        cap_detail["cpu_per_call_spread_pct"] = spread_pct(cpu_per_call)
    return {
        "bridge_calls_per_core": metric(
            bridge.capacity, "calls/core", peer={"pipecat": pipecat.capacity}, detail=cap_detail
        ),
        "bridge_relay_p99_ms": metric(
            b_p99,
            "ms",
            peer={"pipecat": p_p99},
            detail={
                "goal": GOALS["bridge_relay_p99_ms"].text,
                "limit": b_relay.get("limit", ""),
                "bridge": b_relay,
                "pipecat": p_relay,
            },
        ),
        "bridge_rss_mb_per_call": metric(
            _per_call_mb(b_level),
            "MB",
            peer={"pipecat": _per_call_mb(p_level)},
            detail={
                "how": "(RSS with N live calls - RSS idle after a warm-up) / N, N = half capacity",
                "bridge": {
                    "calls": b_level.level.calls if b_level.level else None,
                    "idle_mb": round(b_level.idle_rss_mb, 1),
                    "loaded_mb": round(b_level.level.rss_mb, 1) if b_level.level else None,
                },
                "pipecat": {
                    "calls": p_level.level.calls if p_level.level else None,
                    "idle_mb": round(p_level.idle_rss_mb, 1),
                    "loaded_mb": round(p_level.level.rss_mb, 1) if p_level.level else None,
                },
            },
        ),
        "bridge_added_latency_ms": metric(
            b_added,
            "ms",
            peer={"pipecat": p_added},
            detail={
                "goal": GOALS["bridge_added_latency_ms"].text,
                "how": "p95(lead frame -> model) + p95(model's first audio of a reply -> lead socket), light load",
                "bridge": b_added_detail,
                "pipecat": p_added_detail,
                "bridge_resampler_algorithmic_delay_ms": _resampler_delay_ms(),
            },
        ),
    }


async def ttfw_section(cfg: Any, sut_cpu: int | None, log: Log) -> dict[str, Any]:
    from bench.ttfw import measure_ttfw

    cascade = await measure_ttfw("cascade", sut_cpu, calls=cfg.ttfw_calls)
    log(f"  cascade: p50 {cascade['open_ms']['p50']} ms, p95 {cascade['open_ms']['p95']} ms")
    # The same measurement with the fake model on both sides: the framework's own share.
    fake = await measure_ttfw("bridge", sut_cpu, calls=min(cfg.ttfw_calls, 12))
    peer = await measure_ttfw("pipecat", sut_cpu, calls=min(cfg.ttfw_calls, 12))
    log(f"  fake model: bridge p95 {fake['open_ms']['p95']} ms, pipecat p95 {peer['open_ms']['p95']} ms")
    value = cascade["open_ms"]["p95"]
    if cascade["failures"]:
        raise RuntimeError(f"{len(cascade['failures'])} ttfw calls failed: {cascade['failures'][:3]}")
    return {
        "ttfw_p95_ms": metric(
            value,
            "ms",
            peer={"pipecat": peer["open_ms"]["p95"]},
            detail={
                "goal": GOALS["ttfw_p95_ms"].text,
                "how": "WebSocket open -> first agent audio frame, sequential calls, bridge with the "
                "offline CascadeEngine (warmed up); leads differ by name so greetings are synthesised",
                "engine": "cascade (webrtcvad, Whisper tiny.en, espeak-ng, rule interviewer)",
                "cascade": cascade,
                "peer_note": "the Pipecat figure is with the fake model (no offline Pipecat cascade here): "
                "framework overhead only; compare with bridge_fake",
                "bridge_fake": fake,
                "pipecat_fake": peer,
                "halves_spread_pct": spread_pct(cascade["halves_p95_ms"]),
            },
        )
    }
