"""Per-call measurements and their one log line, in CloudWatch Embedded Metric Format.

Counters are plain attributes bumped on the hot path (no allocation, no logging per frame); at
the end of a call `CallMetrics.emf` renders one JSON line that is both a structured log record
(properties: session, outcome, frame counts) and a set of metrics (namespace `Leadqual`, the one
dimension `service=leadqual` the template's dashboard, alarms and autoscaling select on).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

NAMESPACE = "Leadqual"
SERVICE = "leadqual"

# List prices per million tokens (input, output) where an engine reports tokens but no cost.
# Rough and dated (2025 list prices for realtime audio); engines that know better put
# `cost_usd` in Usage.detail and that wins.
PRICE_PER_MTOK_USD: dict[str, tuple[float, float]] = {
    "gemini": (3.0, 12.0),
    "openai": (32.0, 64.0),
}

Writer = Callable[[str], None]


def stdout_writer(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def emf_line(
    metrics: dict[str, tuple[float | list[float], str]],
    properties: dict[str, Any],
    *,
    namespace: str = NAMESPACE,
    service: str = SERVICE,
    timestamp_ms: int | None = None,
) -> str:
    """One EMF document: `metrics` maps name -> (value or values, unit)."""
    doc: dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000) if timestamp_ms is None else timestamp_ms,
            "CloudWatchMetrics": [
                {
                    "Namespace": namespace,
                    "Dimensions": [["service"]],
                    "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
                }
            ],
        },
        "service": service,
    }
    for name, (value, _) in metrics.items():
        doc[name] = value
    for key, value in properties.items():
        doc.setdefault(key, value)
    return json.dumps(doc, separators=(",", ":"), default=str)


@dataclass
class CallMetrics:
    session_id: str
    engine: str = ""
    ttfw_ms: float | None = None
    turns: int = 0
    interruptions: int = 0
    model_latency_ms: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    audio_in_s: float = 0.0
    audio_out_s: float = 0.0
    cost_usd: float = 0.0
    reported_cost: bool = False
    frames_in: int = 0
    frames_out: int = 0
    frames_not_relayed: int = 0
    text_frames_in: int = 0
    relay_max_ms: float = 0.0
    relay_late: int = 0  # inbound frames that took > 20 ms from socket to engine
    dropped_audio_chunks: int = 0  # agent audio thrown away after a barge-in
    tool_calls: int = 0
    tool_errors: int = 0
    engine_failures: int = 0
    nudges: int = 0
    guard: dict[str, int] = field(default_factory=dict)

    def usage(
        self,
        input_tokens: int,
        output_tokens: int,
        audio_in_s: float,
        audio_out_s: float,
        detail: dict[str, Any],
    ) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.audio_in_s += audio_in_s
        self.audio_out_s += audio_out_s
        cost = detail.get("cost_usd")
        if isinstance(cost, int | float):
            self.cost_usd += float(cost)
            self.reported_cost = True

    def model_cost_usd(self) -> float:
        if self.reported_cost:
            return round(self.cost_usd, 6)
        price_in, price_out = PRICE_PER_MTOK_USD.get(self.engine, (0.0, 0.0))
        return round((self.input_tokens * price_in + self.output_tokens * price_out) / 1e6, 6)

    def emf(
        self, *, outcome: str | None, verdict: str | None, transferred: bool, extra: dict[str, Any]
    ) -> str:
        metrics: dict[str, tuple[float | list[float], str]] = {
            "BridgeCalls": (1, "Count"),
            "Turns": (self.turns, "Count"),
            "Interruptions": (self.interruptions, "Count"),
            "ModelInputTokens": (self.input_tokens, "Count"),
            "ModelOutputTokens": (self.output_tokens, "Count"),
            "ModelCostUSD": (self.model_cost_usd(), "None"),
            "RelayLateFrames": (self.relay_late, "Count"),
        }
        if self.ttfw_ms is not None:
            metrics["TimeToFirstWordMs"] = (round(self.ttfw_ms, 1), "Milliseconds")
        if self.model_latency_ms:
            metrics["ModelLatencyMs"] = ([round(v, 1) for v in self.model_latency_ms[:100]], "Milliseconds")
        if self.engine_failures:
            metrics["EngineFailures"] = (self.engine_failures, "Count")
        if verdict == "hot":
            metrics["LeadsHot"] = (1, "Count")
        elif verdict == "cold":
            metrics["LeadsCold"] = (1, "Count")
        if transferred:
            metrics["Transfers"] = (1, "Count")
        props: dict[str, Any] = {
            "message": "bridge call ended",
            "session_id": self.session_id,
            "engine": self.engine,
            "outcome": outcome,
            "verdict": verdict,
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "frames_not_relayed": self.frames_not_relayed,
            "text_frames_in": self.text_frames_in,
            "relay_max_ms": round(self.relay_max_ms, 3),
            "dropped_audio_chunks": self.dropped_audio_chunks,
            "tool_calls": self.tool_calls,
            "tool_errors": self.tool_errors,
            "nudges": self.nudges,
            "audio_in_s": round(self.audio_in_s, 2),
            "audio_out_s": round(self.audio_out_s, 2),
            **{f"guard_{k}": v for k, v in self.guard.items()},
            **extra,
        }
        return emf_line(metrics, props)


def gauge_line(name: str, value: float, unit: str = "Count", **properties: Any) -> str:
    return emf_line({name: (value, unit)}, {"message": f"gauge {name}", **properties})
