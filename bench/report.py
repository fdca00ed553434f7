"""The results: `bench/results.json`, the printed table and `bench/README-table.md`.

results.json is `{metric: {"value", "unit", "peer"?: {name: value}, "detail"?: {...}}}`; goals live
in GOALS (and are copied into each metric's detail), so a reader of the JSON alone knows the target.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Goal:
    op: str  # "<=" or ">="
    value: float
    text: str

    def met(self, value: float | None) -> bool | None:
        if value is None:
            return None
        return value <= self.value if self.op == "<=" else value >= self.value

    def miss_pct(self, value: float) -> float:
        """How far from the goal, in percent of the goal (positive = missed by that much)."""
        if self.value == 0:
            return 0.0
        if self.op == "<=":
            return 100.0 * (value - self.value) / self.value
        return 100.0 * (self.value - value) / self.value


GOALS: dict[str, Goal] = {
    "bridge_calls_per_core": Goal(">=", 300, ">= 300 and >= 3x Pipecat"),
    "bridge_relay_p99_ms": Goal("<=", 5, "<= 5 ms at half capacity"),
    "bridge_rss_mb_per_call": Goal("<=", float("inf"), "(reported)"),
    "ttfw_p95_ms": Goal("<=", 150, "<= 150 ms"),
    "bridge_added_latency_ms": Goal("<=", 20, "<= 20 ms"),
    "webhook_cold_ms": Goal("<=", 250, "<= 250 ms"),
    "webhook_warm_p99_ms": Goal("<=", 5, "<= 5 ms"),
    "dialer_batch_speedup": Goal(">=", 5, ">= 5x"),
}
ORDER = list(GOALS)
PEER_RATIO_GOAL = 3.0  # bridge_calls_per_core must also be >= 3x Pipecat's


def metric(
    value: float | None,
    unit: str,
    *,
    peer: dict[str, float | None] | None = None,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {"value": value, "unit": unit}
    if peer:
        doc["peer"] = peer
    if detail:
        doc["detail"] = detail
    return doc


def machine_info() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "pipecat_ai": version("pipecat-ai"),
        "websockets": version("websockets"),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(metric, value, unit, goal, met, peer) for every metric, goals' metrics first."""
    out = []
    keys = [k for k in ORDER if k in results] + [
        k for k in results if k not in ORDER and not k.startswith("_")
    ]
    for key in keys:
        m = results[key]
        goal = GOALS.get(key)
        met = goal.met(m.get("value")) if goal and goal.value != float("inf") else None
        if key == "bridge_calls_per_core" and met:
            ratio = (m.get("detail") or {}).get("ratio_vs_pipecat")
            met = ratio is not None and ratio >= PEER_RATIO_GOAL
        peer = m.get("peer") or {}
        peer_txt = ", ".join(f"{name} {_fmt(v)}" for name, v in peer.items())
        ratio = (m.get("detail") or {}).get("ratio_vs_pipecat")
        if ratio is not None:
            peer_txt += f" ({ratio:.1f}x)"
        out.append(
            (
                key,
                _fmt(m.get("value")),
                m.get("unit", ""),
                goal.text if goal else "",
                "" if met is None else ("yes" if met else "NO"),
                peer_txt,
            )
        )
    return out


def closing_notes(results: dict[str, Any]) -> list[str]:
    """One line per missed goal: by how much, and what limits it."""
    notes = []
    for key in ORDER:
        m = results.get(key)
        goal = GOALS[key]
        if m is None or goal.value == float("inf"):
            continue
        value = m.get("value")
        detail = m.get("detail") or {}
        if value is None:
            notes.append(f"{key}: not measured — {detail.get('error', 'no value')}")
            continue
        why = detail.get("limited_by") or detail.get("limit") or ""
        extra = ""
        if key == "bridge_calls_per_core":
            if detail.get("profile_note"):
                extra += f"; {detail['profile_note']}"
            gc_ms, gc_at = full_gc_pause(detail)
            if gc_ms > 20:
                extra += (
                    f"; a full garbage collection stopped the bridge for {gc_ms:.0f} ms at {gc_at} calls "
                    "(gc.freeze() after start-up would take the start-up heap out of what it scans)"
                )
            variation = detail.get("core_speed_variation_pct")
            if variation is not None and variation > 15:
                extra += (
                    f"; the core's speed varied {variation:.0f}% during the run (a shared VM), "
                    "which moves this figure as much"
                )
        if not goal.met(value):
            miss = goal.miss_pct(value)
            notes.append(
                f"{key}: {_fmt(value)} {m.get('unit', '')} against {goal.text} — missed by {miss:.0f}%"
                + (f"; limited by {why}" if why else "")
                + extra
            )
        if key == "bridge_calls_per_core":
            ratio = detail.get("ratio_vs_pipecat")
            if ratio is not None and ratio < PEER_RATIO_GOAL:
                notes.append(
                    f"{key}: {ratio:.1f}x Pipecat against >= {PEER_RATIO_GOAL:.0f}x — missed by "
                    f"{100 * (PEER_RATIO_GOAL - ratio) / PEER_RATIO_GOAL:.0f}%"
                    + ("" if not goal.met(value) else extra)
                )
    return notes


def full_gc_pause(detail: dict[str, Any]) -> tuple[float, int | None]:
    """The longest generation-2 collection the bridge's process made in any capacity window."""
    worst, at = 0.0, None
    for step in (detail.get("bridge") or {}).get("steps", []):
        pauses = (step.get("sut_gc_pauses") or {}).get("max_ms") or []
        if len(pauses) > 2 and pauses[2] > worst:
            worst, at = float(pauses[2]), step.get("calls")
    return worst, at


def print_table(results: dict[str, Any], machine: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="leadqual bench", title_justify="left")
    for col, justify in (
        ("metric", "left"),
        ("value", "right"),
        ("unit", "left"),
        ("goal", "left"),
        ("met", "center"),
        ("Pipecat", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type] - rich wants a Literal
    for row in rows(results):
        style = "red" if row[4] == "NO" else None
        table.add_row(*row, style=style)
    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 150)
    console.print(table)
    console.print(f"machine: {machine_line(machine)}")
    for note in closing_notes(results):
        console.print(f"[yellow]note[/]: {note}")


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"{m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, Python {m.get('python')}, "
        f"{m.get('os')}, pipecat-ai {m.get('pipecat_ai')}"
        + (
            f"; SUT pinned to core {m['sut_core']}, load generator on the other"
            if m.get("sut_core") is not None
            else ""
        )
        + (", both SCHED_RR" if m.get("realtime_scheduling") else "")
        + f"; {m.get('date')}"
    )


def markdown(results: dict[str, Any], machine: dict[str, Any]) -> str:
    lines = [
        "| metric | value | unit | goal | met | Pipecat |",
        "|---|--:|---|---|:-:|---|",
    ]
    for row in rows(results):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    lines += [
        "",
        f"Machine: {machine_line(machine)}. `make bench` took {_fmt(results.get('_seconds') or machine.get('bench_seconds'))} s.",
    ]
    notes = closing_notes(results)
    if notes:
        lines += ["", "Where a goal is missed:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], machine: dict[str, Any], json_path: Path, md_path: Path | None) -> None:
    doc = {k: v for k, v in results.items() if not k.startswith("_")}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(doc, indent=2, sort_keys=False, default=_jsonable) + "\n")
    if md_path is not None:
        md_path.write_text(markdown(results, machine))


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover - numpy is always there in the bench extra
        pass
    return str(o)


def previous(json_path: Path) -> dict[str, Any]:
    """The last run's results (for the run-to-run change of each value), if any."""
    try:
        doc = json.loads(json_path.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}
