"""`python -m bench` (what `make bench` runs): every benchmark, a table, bench/results.json.

Sections (each can be run alone with --only): capacity (calls per core, relay latency, memory per
call, latency the bridge adds — bridge and Pipecat side by side), ttfw, webhook, dialer. A section
that fails records its metrics with value null and the error in detail; the others still run.
The system under test gets one core (the first this process may use); this process, the load
generator and the fakes get the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procs, report
from bench.procs import LOG_DIR, ROOT, cores, raise_priority, realtime

SECTIONS = ("capacity", "ttfw", "webhook", "dialer")
METRICS_OF = {
    "capacity": (
        "bridge_calls_per_core",
        "bridge_relay_p99_ms",
        "bridge_rss_mb_per_call",
        "bridge_added_latency_ms",
    ),
    "ttfw": ("ttfw_p95_ms",),
    "webhook": ("webhook_cold_ms", "webhook_warm_p99_ms"),
    "dialer": ("dialer_batch_speedup",),
}


@dataclass
class Config:
    """How hard each section pushes. `quick` is for the smoke test: tiny loads, a few seconds."""

    window_s: float = 12.0
    settle_s: float = 4.0
    bridge_ladder: list[int] = field(default_factory=lambda: [50, 100, 200, 300, 400, 500, 650, 800, 1000])
    pipecat_ladder: list[int] = field(default_factory=lambda: [25, 50, 75, 100, 150, 200, 300, 400])
    refine: int = 3
    confirm: int = 2
    capacity_budget_s: float = 200.0
    low_calls: int = 10
    profile: bool = True
    ttfw_calls: int = 32
    webhook_cold_runs: int = 7
    webhook_warm_calls: int = 1000
    dialer_repeats: int = 2
    dialer_latency_s: float = 0.050
    realtime: bool = True

    @classmethod
    def quick(cls) -> Config:
        return cls(
            window_s=2.0,
            settle_s=1.0,
            bridge_ladder=[4, 8],
            pipecat_ladder=[4, 8],
            refine=0,
            confirm=0,
            capacity_budget_s=30.0,
            low_calls=2,
            profile=False,
            ttfw_calls=3,
            webhook_cold_runs=1,
            webhook_warm_calls=50,
            dialer_repeats=1,
        )


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _failed(section: str, exc: BaseException) -> dict[str, Any]:
    detail = {"error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc(limit=6)}
    log(f"[{section}] FAILED: {detail['error']}")
    return {key: report.metric(None, "", detail=dict(detail)) for key in METRICS_OF[section]}


def run_section(section: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    t0 = time.monotonic()
    log(f"[{section}] …")
    try:
        out = fn()
    except Exception as exc:
        return _failed(section, exc)
    log(f"[{section}] done in {time.monotonic() - t0:.0f} s")
    return out


def _timed_section(coro: Any, cfg: Config) -> dict[str, Any]:
    """The load generator measures time: it runs under real-time scheduling like the SUT (see
    bench.procs.realtime), and only for the sections that need it."""
    rt = cfg.realtime and realtime(True)
    try:
        result: dict[str, Any] = asyncio.run(coro)
    finally:
        if rt:
            realtime(False)
    return result


def _capacity(cfg: Config, sut_cpu: int | None) -> dict[str, Any]:
    from bench.sections import capacity_section

    return _timed_section(capacity_section(cfg, sut_cpu, log), cfg)


def _ttfw(cfg: Config, sut_cpu: int | None) -> dict[str, Any]:
    from bench.sections import ttfw_section

    return _timed_section(ttfw_section(cfg, sut_cpu, log), cfg)


def _webhook(cfg: Config, sut_cpu: int | None) -> dict[str, Any]:
    from bench.webhook import webhook_section

    return webhook_section(cfg, log)


def _dialer(cfg: Config, sut_cpu: int | None) -> dict[str, Any]:
    from bench.dialer import dialer_section

    return dialer_section(cfg, log)


RUNNERS: dict[str, Callable[[Config, int | None], dict[str, Any]]] = {
    "capacity": _capacity,
    "ttfw": _ttfw,
    "webhook": _webhook,
    "dialer": _dialer,
}


def add_run_to_run_change(results: dict[str, Any], before: dict[str, Any]) -> None:
    """Beside each value, the previous run's (same file, normally the same machine) and the change."""
    for key, m in results.items():
        if key.startswith("_") or not isinstance(m, dict):
            continue
        old = (before.get(key) or {}).get("value")
        new = m.get("value")
        if isinstance(old, int | float) and isinstance(new, int | float) and old:
            detail = m.setdefault("detail", {})
            detail["previous_run_value"] = old
            detail["change_vs_previous_run_pct"] = round(100.0 * (new - old) / old, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny loads (a smoke run), not for numbers")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results.json")
    parser.add_argument("--table", type=Path, default=ROOT / "bench" / "README-table.md")
    parser.add_argument("--no-table-file", action="store_true", help="do not write the markdown table")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="print the table and rewrite --table from --out, run nothing",
    )
    parser.add_argument(
        "--no-rt",
        action="store_true",
        help="do not ask for real-time scheduling of the SUT and load generator",
    )
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    if args.render_only:
        stored = report.previous(args.out)
        stored_machine = next(
            (
                m["detail"]["machine"]
                for m in stored.values()
                if isinstance((m.get("detail") or {}).get("machine"), dict)
            ),
            report.machine_info(),
        )
        report.write(stored, stored_machine, args.out, None if args.no_table_file else args.table)
        report.print_table(stored, stored_machine)
        return 0
    cfg = Config.quick() if args.quick else Config()
    if args.no_rt:
        cfg.realtime = False
        procs.RT_DEFAULT = False

    sut_cpu, mine = cores()
    pinned = len(os.sched_getaffinity(0)) >= 2
    if pinned:
        os.sched_setaffinity(0, mine)  # the load generator and fakes stay off the SUT's core
    prio = raise_priority()
    rt_ok = cfg.realtime and realtime(True) and realtime(False)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log(
        f"bench: SUT on core {sut_cpu if pinned else '(shared: fewer than 2 cores)'}, "
        f"load generator on {sorted(mine)}; real-time scheduling: {'yes' if rt_ok else 'no'}; "
        f"priority raised: {prio}; SUT logs in {LOG_DIR}"
    )
    t0 = time.monotonic()
    before = report.previous(args.out)
    results: dict[str, Any] = {}
    cpu = sut_cpu if pinned else None
    for section in sections:
        results.update(run_section(section, functools.partial(RUNNERS[section], cfg, cpu)))
    add_run_to_run_change(results, before)
    results["_seconds"] = round(time.monotonic() - t0, 1)
    machine = report.machine_info()
    machine["sut_core"] = sut_cpu if pinned else None
    machine["realtime_scheduling"] = bool(rt_ok)
    machine["bench_seconds"] = results["_seconds"]
    if not args.quick:
        for key in results:
            if not key.startswith("_"):
                results[key].setdefault("detail", {})["machine"] = machine
                break
    report.write(results, machine, args.out, None if args.no_table_file else args.table)
    report.print_table(results, machine)
    log(
        f"bench: {results['_seconds']:.0f} s; wrote {args.out}"
        + ("" if args.no_table_file else f" and {args.table}")
    )
    failed = [k for k, m in results.items() if not k.startswith("_") and m.get("value") is None]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
