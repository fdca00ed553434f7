"""The system under test, in its own process pinned to one core: `python -m bench.sut KIND --cpu N`.

KIND is `bridge` (BridgeServer + the bench's fake model in process), `pipecat` (the peer: a
Pipecat pipeline per call behind FastAPI, same fake model) or `cascade` (BridgeServer with the
offline CascadeEngine, for time to first word).

It prints one JSON line `{"ready": true, "port": …, "pid": …}` on its control channel (the
original stdout; stray prints are sent to stderr), then answers JSON-line commands on stdin:
`{"cmd": "reset"}`, `{"cmd": "dump", "path": P}` (the model's recordings, see fakemodel.Recorder),
`{"cmd": "stats"}` (live calls), `{"cmd": "quit"}`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from bench.fakemodel import BenchModel, Recorder
from bench.procs import raise_priority

SECRET = "bench-bridge-secret"  # noqa: S105 - a throwaway signing key for loopback streams


class _Server(Protocol):
    port: int

    def live(self) -> int: ...
    async def stop(self) -> None: ...


def bench_lead(session_id: str) -> Any:
    from leadqual.models import Lead

    return Lead(
        lead_id=f"L{session_id[-12:]}",
        phone="+254711000111",
        name="Wanjiku Kamau",
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


def _cascade_factory(settings: Any | None = None) -> Any:
    """The offline engine, warmed up once (models loaded) before the first call is timed."""
    from bridge.engines import engine_class

    cls = engine_class("cascade")
    warm = getattr(cls, "warm_up", None)
    if callable(warm):
        warm()
    build = getattr(cls, "from_settings", None)

    def factory() -> Any:
        return build(settings) if callable(build) else cls()

    engine = factory()
    inst_warm = getattr(engine, "warm_up", None)
    if callable(inst_warm):
        inst_warm()
    return factory


async def serve(kind: str, ctl_out: Any) -> None:
    recorder = Recorder()
    server: _Server
    if kind == "bridge":
        server = BridgeSUT(lambda: BenchModel(recorder))
        await server.start()  # type: ignore[attr-defined]
    elif kind == "cascade":
        from leadqual.settings import BridgeSettings

        settings = BridgeSettings.from_env({"BRIDGE_TOKEN_SECRET": SECRET, "ENGINE": "cascade"})
        server = BridgeSUT(_cascade_factory(settings))
        await server.start()  # type: ignore[attr-defined]
    elif kind == "pipecat":
        from bench.pipecat_peer import PipecatPeer

        peer = PipecatPeer(lambda: BenchModel(recorder))
        await peer.start()
        server = peer
    else:
        raise SystemExit(f"unknown kind {kind!r}")

    def reply(doc: dict[str, Any]) -> None:
        ctl_out.write(json.dumps(doc) + "\n")
        ctl_out.flush()

    reply({"ready": True, "port": server.port, "pid": os.getpid(), "kind": kind})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
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
        elif name == "stats":
            reply({"ok": True, "live": server.live(), "sessions_started": recorder.sessions_started})
        elif name == "quit":
            break
        else:
            reply({"error": f"unknown command {name!r}"})
    with contextlib.suppress(Exception):
        await asyncio.wait_for(server.stop(), 10.0)
    reply({"ok": True, "bye": True})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sut")
    parser.add_argument("kind", choices=["bridge", "pipecat", "cascade"])
    parser.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    args = parser.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    raise_priority()
    # The control channel is the original stdout; everything else that prints goes to stderr.
    ctl_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(args.kind, ctl_out))


if __name__ == "__main__":
    main()
