"""The system under test, in its own process pinned to one core: `python -m bench.sut KIND --cpu N`.

KIND is `bridge` (BridgeServer + the bench's fake model in process), `pipecat` (the peer: a
Pipecat pipeline per call behind FastAPI, same fake model) or `cascade` (BridgeServer with the
offline CascadeEngine, for time to first word).

It prints one JSON line `{"ready": true, "port": …, "pid": …}` on its control channel (the
original stdout; stray prints are sent to stderr), then answers JSON-line commands on stdin:
`{"cmd": "reset"}`, `{"cmd": "dump", "path": P}` (the model's recordings, see fakemodel.Recorder),
`{"cmd": "stats"}` (live calls), `{"cmd": "profile", "on": true}` / `{"cmd": "profile", "on": false,
"path": P}` (cProfile one window), `{"cmd": "quit"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Protocol

from bench.fakemodel import BenchModel, Recorder
from bench.procs import raise_priority, realtime

SECRET = "bench-bridge-secret"  # noqa: S105 - a throwaway signing key for loopback streams


class _Server(Protocol):
    port: int

    def live(self) -> int: ...
    async def stop(self) -> None: ...


# Leads differ by name, so a greeting ("Hi Wanjiku, …") is not the same sentence on every call and
# engines that cache synthesised sentences cannot serve every opening from the cache.
FIRST_NAMES = [
    "Wanjiku",
    "Achieng",
    "Otieno",
    "Kamau",
    "Njeri",
    "Mutua",
    "Chebet",
    "Kiprono",
    "Wambui",
    "Odhiambo",
    "Akinyi",
    "Mwangi",
    "Nyambura",
    "Kariuki",
    "Atieno",
    "Omondi",
    "Wairimu",
    "Kipchoge",
    "Moraa",
    "Ochieng",
    "Jepkosgei",
    "Muthoni",
    "Barasa",
    "Nekesa",
    "Waweru",
    "Adhiambo",
    "Korir",
    "Wafula",
    "Nduta",
    "Onyango",
    "Jelimo",
    "Kinyua",
    "Awino",
    "Gitau",
    "Cherono",
    "Macharia",
    "Auma",
    "Rotich",
]


def bench_lead(session_id: str) -> Any:
    from leadqual.models import Lead

    digits = "".join(ch for ch in session_id if ch.isdigit()) or "0"
    return Lead(
        lead_id=f"L{session_id[-12:]}",
        phone="+254711000111",
        name=f"{FIRST_NAMES[int(digits) % len(FIRST_NAMES)]} Kamau",
        company="Duka Ltd",
        opt_in=True,
    )


def make_store() -> Any:
    """The bridge's in-memory store (bridge.testing), answering for any session id it is asked about,
    as DynamoDB would for calls the dialer created."""
    from bridge.testing import MemoryProfile, MemoryStore

    class BenchStore(MemoryStore):
        def get_session(self, session_id: str) -> tuple[str, int] | None:
            return (f"L{session_id[-12:]}", 1)

        def get_lead(self, lead_id: str) -> MemoryProfile | None:
            return MemoryProfile(bench_lead(lead_id))

        def update_call(self, lead_id: str, attempt: int, **fields: Any) -> None:
            pass  # keeps memory flat over thousands of calls

        def set_outcome(self, lead_id: str, outcome: Any, *, score: Any = None, reason: Any = None) -> None:
            pass

    return BenchStore()


class BridgeSUT:
    def __init__(self, engine_factory: Any) -> None:
        from bridge.ports import BridgeConfig
        from bridge.server import BridgeServer
        from bridge.testing import RecordingCarrier, RecordingNotifier

        config = BridgeConfig(
            bridge_token_secret=SECRET,
            host="127.0.0.1",
            port=0,
            engine="bench",
            gauge_interval_s=0,
            drain_seconds=2.0,
        )
        self.server = BridgeServer(
            config,
            engine_factory,
            make_store(),
            RecordingCarrier(),
            RecordingNotifier(),
            metrics_writer=lambda line: None,  # one EMF line per call; the bench does not read them
            use_local_voice=False,
        )
        self.port = 0

    async def start(self) -> None:
        await self.server.start()
        self.port = self.server.port

    def live(self) -> int:
        return self.server.active_sessions

    async def stop(self) -> None:
        await self.server.drain(deadline_s=2.0)


async def _cascade_factory() -> Any:
    """The offline engine with its local parts (no settings: all defaults), warmed up first so model
    loading is not counted in the first call's time to first word."""
    from bridge.engines import engine_class

    cls = engine_class("cascade")
    warm = getattr(cls, "warm_up", None)
    if callable(warm):
        done = warm()
        if asyncio.iscoroutine(done):
            await done
    return lambda: cls.from_settings(SimpleNamespace())


def calibrate(rounds: int = 3) -> float:
    """Milliseconds for a fixed piece of interpreter work on this core, best of `rounds`: how fast
    the core is right now. On a shared VM it changes with the host's load, and with it what a call
    costs; the harness logs it beside each window."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        acc = 0
        for i in range(100_000):
            acc += i * i % 7
        d: dict[int, int] = {}
        for i in range(20_000):
            d[i & 1023] = d.get(i & 1023, 0) + i
        best = min(best, (time.perf_counter() - t0) * 1000.0)
    return round(best, 2)


async def serve(kind: str, ctl_out: Any) -> None:
    recorder = Recorder()
    server: _Server
    if kind == "bridge":
        server = BridgeSUT(lambda: BenchModel(recorder))
        await server.start()
    elif kind == "cascade":
        server = BridgeSUT(await _cascade_factory())
        await server.start()
    elif kind == "pipecat":
        from loguru import logger

        logger.remove()  # before Pipecat is imported: it logs at DEBUG from the start
        logger.add(sys.stderr, level="WARNING")
        from bench.pipecat_peer import PipecatPeer

        peer = PipecatPeer(lambda: BenchModel(recorder))
        await peer.start()
        server = peer
    else:
        raise SystemExit(f"unknown kind {kind!r}")

    def reply(doc: dict[str, Any]) -> None:
        ctl_out.write(json.dumps(doc) + "\n")
        ctl_out.flush()

    watcher = asyncio.create_task(recorder.watch_loop(), name="bench-loop-watch")
    reply({"ready": True, "port": server.port, "pid": os.getpid(), "kind": kind})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    profiler: cProfile.Profile | None = None
    while True:
        line = await reader.readline()
        if not line:
            break
        try:
            cmd = json.loads(line)
        except ValueError:
            reply({"error": "not JSON"})
            continue
        name = cmd.get("cmd")
        if name == "reset":
            recorder.reset()
            reply({"ok": True})
        elif name == "dump":
            reply({"ok": True, "live": server.live(), **recorder.dump(Path(cmd["path"]))})
        elif name == "profile":
            # cProfile around one measurement window only (not start-up or ramp).
            if cmd.get("on"):
                profiler = cProfile.Profile()
                profiler.enable()
                reply({"ok": True})
            elif profiler is not None:
                profiler.disable()
                profiler.dump_stats(cmd["path"])
                profiler = None
                reply({"ok": True})
            else:
                reply({"error": "no profile running"})
        elif name == "calibrate":
            reply({"ok": True, "ms": calibrate(int(cmd.get("rounds", 3)))})
        elif name == "stats":
            reply({"ok": True, "live": server.live(), "sessions_started": recorder.sessions_started})
        elif name == "quit":
            break
        else:
            reply({"error": f"unknown command {name!r}"})
    watcher.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.stop(), 10.0)
    reply({"ok": True, "bye": True})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sut")
    parser.add_argument("kind", choices=["bridge", "pipecat", "cascade"])
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    parser.add_argument("--rt", action="store_true", help="real-time scheduling (bench.procs.realtime)")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if not (args.rt and realtime()):
        raise_priority()
    # The control channel is the original stdout; everything else that prints goes to stderr.
    ctl_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(args.kind, ctl_out))


if __name__ == "__main__":
    main()
