"""Stalls of the machine itself, seen from above the processes being measured.

On a virtual machine the hypervisor now and then stops a vCPU for tens of milliseconds (measured
here: a real-time process doing nothing but sleep 5 ms sees a 20-30 ms gap about once a minute).
Everything on that core stops with it, so frames in flight arrive late through no fault of the code
under test — and with a 0.1 % late budget, one such gap fails a whole load level.

`python -m bench.stallwatch --cpu N --out FILE` runs on core N at a real-time priority above the
SUT's and the load generator's, sleeps 5 ms at a time and writes `<end_ns> <gap_us>` for every wake
more than 3 ms late. Because it preempts them, its lateness is not their work: it is time the core
did not run at all. The harness subtracts the overlap of each frame's flight with these gaps before
judging it late, and reports how many frames that excused (`bench.analysis`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

PERIOD_S = 0.005
REPORT_OVER_S = 0.003
PRIORITY = 20  # above bench.procs.RT_PRIORITY


def watch(out: Path, period_s: float = PERIOD_S) -> None:
    parent = os.getppid()
    with out.open("a", buffering=1) as f:
        while os.getppid() == parent:
            t = time.monotonic_ns()
            time.sleep(period_s)
            end = time.monotonic_ns()
            gap = (end - t) / 1e9 - period_s
            if gap > REPORT_OVER_S:
                f.write(f"{end} {int(gap * 1e6)}\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stallwatch")
    parser.add_argument("--cpu", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {args.cpu})
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PRIORITY))
    watch(args.out)


@contextlib.contextmanager
def watching(cpus: list[int], workdir: Path) -> Iterator[StallLog]:
    """Watchers on `cpus` for the duration of the block."""
    procs = []
    files = []
    for cpu in cpus:
        path = workdir / f"stalls-{cpu}.txt"
        path.write_text("")
        files.append(path)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "bench.stallwatch", "--cpu", str(cpu), "--out", str(path)]
            )
        )
    try:
        yield StallLog(files)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()


class StallLog:
    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def between(self, t0_ns: int, t1_ns: int, margin_ns: int = 2_000_000_000) -> np.ndarray:
        """Gaps as rows (start_ns, end_ns) that ended in [t0 - margin, t1 + margin], any core."""
        rows = []
        for path in self.files:
            try:
                text = path.read_text()
            except OSError:
                continue
            for line in text.splitlines():
                parts = line.split()
                if len(parts) != 2:
                    continue
                end, gap_us = int(parts[0]), int(parts[1])
                if t0_ns - margin_ns <= end <= t1_ns + margin_ns:
                    rows.append((end - gap_us * 1000, end))
        return np.array(rows, dtype=np.int64).reshape(-1, 2)


if __name__ == "__main__":
    main()
