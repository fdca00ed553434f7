"""Run the simulator standalone: `python -m local.sautikit --directory local/data/directory.yaml`.

Prints one JSON line (`url`, `api_key`, `webhook_secret`, `numbers`, `data_dir`) and serves until
SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
from pathlib import Path

from local.sautikit.directory import Directory
from local.sautikit.simulator import Simulator

DEFAULT_DIRECTORY = Path(__file__).resolve().parents[1] / "data" / "directory.yaml"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m local.sautikit", description=__doc__.splitlines()[0])
    p.add_argument("--directory", type=Path, default=DEFAULT_DIRECTORY)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--api-key", default=None)
    p.add_argument("--webhook-secret", default=None)
    p.add_argument(
        "--number",
        action="append",
        default=[],
        metavar="E164[,ROUTING_URL[,EVENTS_URL]]",
        help="a number the workspace owns (repeatable); default +254700000100 without routing",
    )
    p.add_argument("--data-dir", type=Path, default=Path("sautikit-data"))
    p.add_argument("--wallet-minor", type=int, default=100_000)
    p.add_argument("--rate-per-minute-minor", type=int, default=300)
    p.add_argument("--ring-seconds", type=float, default=1.0)
    p.add_argument(
        "--no-verbs-after-stream", action="store_true", help="reproduce 'nothing runs after Stream'"
    )
    p.add_argument("--duplicate-callbacks", action="store_true")
    p.add_argument("--late-completed-s", type=float, default=0.0)
    p.add_argument("--callback-encoding", choices=["form", "json"], default="form")
    p.add_argument(
        "--tts-cache-dir",
        type=Path,
        default=None,
        help="where synthesised phrases persist across runs (default: $XDG_CACHE_HOME or ~/.cache, leadqual/sautikit-tts)",
    )
    p.add_argument(
        "--transcribe-agent",
        action="store_true",
        help="put the words the lead heard into each agent_turn (offline Whisper, ~0.15 s of a core per turn)",
    )
    return p.parse_args(argv)


def default_tts_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "leadqual" / "sautikit-tts"


async def _serve(args: argparse.Namespace) -> None:
    numbers = []
    for i, spec in enumerate(args.number or ["+254700000100"]):
        parts = spec.split(",")
        numbers.append(
            {
                "id": f"num_{i + 1:04d}",
                "e164": parts[0],
                "routing_url": parts[1] if len(parts) > 1 and parts[1] else None,
                "events_url": parts[2] if len(parts) > 2 and parts[2] else None,
            }
        )
    api_key = args.api_key or f"sk_test_{secrets.token_hex(12)}"
    secret = args.webhook_secret or secrets.token_hex(16)
    sim = Simulator(
        Directory.load(args.directory),
        api_key=api_key,
        webhook_secret=secret,
        numbers=numbers,
        wallet_minor=args.wallet_minor,
        rate_per_minute_minor=args.rate_per_minute_minor,
        verbs_after_stream=not args.no_verbs_after_stream,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        ring_seconds=args.ring_seconds,
        duplicate_callbacks=args.duplicate_callbacks,
        late_completed_s=args.late_completed_s,
        callback_encoding=args.callback_encoding,
        tts_cache_dir=args.tts_cache_dir or default_tts_cache(),
        warm_directory=True,
        transcribe_agent=args.transcribe_agent,
    )
    await sim.start()
    print(
        json.dumps(
            {
                "url": sim.url,
                "api_key": api_key,
                "webhook_secret": secret,
                "numbers": list(sim.numbers.values()),
                "data_dir": str(sim.data_dir),
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sim.stop()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_serve(_parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
