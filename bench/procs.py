"""Child processes the bench drives: the system under test (bench.sut) on its own core."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent


def cores() -> tuple[int, set[int]]:
    """(the core for the system under test, the cores left for the load generator)."""
    avail = sorted(os.sched_getaffinity(0))
    if len(avail) < 2:
        return avail[0], set(avail)
    return avail[0], set(avail[1:])


RT_DEFAULT = True  # the bench's --no-rt turns it off
LOG_DIR = ROOT / "bench" / "out"  # ignored by git


def default_log_path(kind: str) -> Path:
    return LOG_DIR / f"sut-{kind}.log"


class SutProcess:
    """`async with SutProcess("bridge", cpu=0) as sut: sut.port; await sut.cmd({...})`."""

    def __init__(
        self,
        kind: str,
        cpu: int | None,
        *,
        ready_timeout_s: float = 120.0,
        log_path: Path | None = None,
        rt: bool | None = None,
    ) -> None:
        self.kind = kind
        self.rt = RT_DEFAULT if rt is None else rt
        self.log_path = log_path if log_path is not None else default_log_path(kind)
        self.cpu = cpu
        self.ready_timeout_s = ready_timeout_s
        self.proc: asyncio.subprocess.Process | None = None
        self.ps: psutil.Process | None = None
        self.port = 0
        self.started_s = 0.0
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> SutProcess:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        args = [sys.executable, "-m", "bench.sut", self.kind]
        if self.cpu is not None:
            args += ["--cpu", str(self.cpu)]
        if self.rt:
            args.append("--rt")
        t0 = time.perf_counter()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:  # the SUT's own warnings and errors, kept out of the table
            self.proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=str(ROOT),
                limit=2**20,
            )
        try:
            ready = await asyncio.wait_for(self._read(), self.ready_timeout_s)
        except BaseException:
            await self.kill()
            raise
        if not ready.get("ready"):
            await self.kill()
            raise RuntimeError(f"{self.kind} did not start: {ready}")
        self.started_s = time.perf_counter() - t0
        self.port = int(ready["port"])
        self.ps = psutil.Process(self.proc.pid)

    async def _read(self) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            code = await self.proc.wait()
            raise RuntimeError(f"bench.sut {self.kind} exited with {code} before answering")
        doc: dict[str, Any] = json.loads(line)
        return doc

    async def cmd(self, doc: dict[str, Any], timeout_s: float = 60.0) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        async with self._lock:
            self.proc.stdin.write((json.dumps(doc) + "\n").encode())
            await self.proc.stdin.drain()
            return await asyncio.wait_for(self._read(), timeout_s)

    def cpu_seconds(self) -> float:
        assert self.ps is not None
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def rss_mb(self) -> float:
        assert self.ps is not None
        return float(self.ps.memory_info().rss) / 2**20

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.cmd({"cmd": "quit"}, timeout_s=20)
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.kill()
            await proc.wait()


def core_busy_seconds(cpu: int | None) -> float:
    """Busy time of one core (every process on it), to tell how much of it was not the SUT's."""
    if cpu is None:
        return 0.0
    t = psutil.cpu_times(percpu=True)[cpu]
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


def raise_priority(nice: int = -10) -> bool:
    """Ask for a better scheduling priority, so other work on a shared machine disturbs the timing
    less; on a dedicated machine it changes nothing. With autogroup scheduling (the Linux default
    for desktops and many VMs) a process's nice only ranks it within its session, so the session's
    autogroup gets the same nice. Needs root or CAP_SYS_NICE; harmless to fail."""
    ok = True
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        ok = False
    autogroup = Path("/proc/self/autogroup")
    if autogroup.exists():
        try:
            autogroup.write_text(f"{nice}\n")
        except OSError:
            ok = False
    return ok


RT_PRIORITY = 10  # low among real-time priorities: above every normal process, below kernel RT threads


def realtime(on: bool = True) -> bool:
    """Run this process under SCHED_RR (on) or back under the normal scheduler (off).

    A shared machine's other processes would otherwise preempt the system under test or the load
    generator for tens of milliseconds at a time, and those stalls, not the code under test, would
    decide which frames are late. Real-time priority gives each of them its core as a dedicated
    machine would; the kernel's RT throttling still leaves others 5% of it. The flag
    SCHED_RESET_ON_FORK keeps children (moto, the simulator, spawned webhooks) out of it.
    Needs root or CAP_SYS_NICE; returns False if refused."""
    try:
        if on:
            reset = getattr(os, "SCHED_RESET_ON_FORK", 0)
            os.sched_setscheduler(0, os.SCHED_RR | reset, os.sched_param(RT_PRIORITY))
        else:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError):
        return False
    return True


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system
