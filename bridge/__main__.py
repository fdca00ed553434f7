"""`python -m bridge`: the Fargate audio bridge.

    python -m bridge                 serve (settings from the environment: leadqual.settings.BridgeSettings)
    python -m bridge --check         import everything the image needs and exercise the native parts
    python -m bridge --healthcheck   GET /healthz on this container's PORT (the image's HEALTHCHECK)

Settings are read once here and passed inward. SIGTERM (ECS stopping the task) and SIGINT start a
drain: no new calls, live ones finish until DRAIN_SECONDS, then the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bridge.ports import BridgeConfig

log = logging.getLogger("bridge")

IO_THREADS = 64  # store, carrier and notifier calls run in threads (boto3 and httpx are blocking)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: CloudWatch Logs Insights reads the fields directly."""

    _skip = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "timestamp": round(record.created, 3),
        }
        for key, value in record.__dict__.items():
            if key not in self._skip:
                doc[key] = value
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exception"] = record.exc_text
        return json.dumps(doc, default=str)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    try:
        from leadqual.observability import install_masking

        install_masking(handler)  # phone numbers never reach the log
    except ImportError:  # pragma: no cover - the layer always ships it
        pass
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("websockets").setLevel("WARNING")
    logging.getLogger("botocore").setLevel("WARNING")


def load_config(environ: Mapping[str, str]) -> tuple[Any, BridgeConfig]:
    """BridgeSettings from the environment, and the bridge's resolved config."""
    from leadqual.settings import BridgeSettings

    settings = BridgeSettings.from_env(dict(environ))
    return settings, BridgeConfig.from_settings(settings)


async def serve(settings: Any, config: BridgeConfig) -> None:
    import boto3

    from bridge.adapters import LogNotifier, SnsNotifier
    from bridge.engines import engine_factory
    from bridge.ports import Notifier
    from bridge.server import BridgeServer
    from leadqual.sautikit import SautikitClient
    from leadqual.store import DynamoStore

    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="bridge-io"))
    notifier: Notifier = (
        SnsNotifier(config.rep_notify_topic_arn, boto3.client("sns"))
        if config.rep_notify_topic_arn
        else LogNotifier()
    )
    carrier = SautikitClient(settings.sautikit_base_url, settings.sautikit_api_key)
    server = BridgeServer(
        config,
        engine_factory(settings, config.engine),
        DynamoStore(config_table(settings), client=boto3.client("dynamodb")),
        carrier,
        notifier,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.drain_soon)
    if config.engine == "local":
        # Load Whisper and the voice before the first call, not during it (time to first word).
        from bridge.engines.cascade import CascadeEngine

        timings = await CascadeEngine.warm_up()
        log.info("offline engine warmed up", extra=timings)
    await server.start()
    log.info("bridge ready", extra={"port": server.port, "engine": config.engine})
    try:
        await server.wait_closed()
    finally:
        carrier.close()


def config_table(settings: Any) -> str:
    return str(settings.table_name)


# ---------------------------------------------------------------------- --check


def _check_imports() -> dict[str, str]:
    from bridge.engines import ENGINES

    results: dict[str, str] = {}
    modules = [
        "bridge.server",
        "bridge.conversation",
        "bridge.adapters",
        "bridge.speech",
        "leadqual.settings",
        "leadqual.store",
        "leadqual.sautikit",
        "leadqual.scoring",
        "leadqual.normalise",
        "leadqual.observability",
        "leadqual.signing",
        "boto3",
        "websockets.asyncio.server",
        "soxr",
        "numpy",
    ]
    for name in modules:
        try:
            importlib.import_module(name)
            results[name] = "ok"
        except Exception as exc:
            results[name] = f"{type(exc).__name__}: {exc}"
    for engine, (module_name, class_name) in sorted(set(ENGINES.items()), key=lambda kv: kv[0]):
        key = f"engine {engine} ({module_name}.{class_name})"
        try:
            getattr(importlib.import_module(module_name), class_name)
            results[key] = "ok"
        except Exception as exc:
            results[key] = f"{type(exc).__name__}: {exc}"
    return results


def _check_native() -> dict[str, str]:
    results: dict[str, str] = {}
    try:
        from bridge.audio import StreamResampler, tone

        out = StreamResampler(24000, 16000).process(tone(440, 100, 24000))
        results["soxr stream"] = "ok" if abs(len(out) - 3200) <= 8 else f"unexpected length {len(out)}"
    except Exception as exc:
        results["soxr stream"] = f"{type(exc).__name__}: {exc}"
    try:
        from bridge.speech import synthesise

        clip = synthesise("Check.", 16000)
        results["local voice (espeak-ng)"] = "ok" if clip else "no audio"
    except Exception as exc:
        results["local voice (espeak-ng)"] = f"{type(exc).__name__}: {exc}"
    try:
        import boto3

        boto3.client("dynamodb", region_name="eu-west-1")
        boto3.client("sns", region_name="eu-west-1")
        results["boto3 clients"] = "ok"
    except Exception as exc:
        results["boto3 clients"] = f"{type(exc).__name__}: {exc}"
    return results


def check() -> int:
    started = time.perf_counter()
    results = {**_check_imports(), **_check_native()}
    ok = all(v == "ok" for v in results.values())
    print(
        json.dumps(
            {
                "ok": ok,
                "python": sys.version.split()[0],
                "seconds": round(time.perf_counter() - started, 2),
                "checks": results,
            },
            indent=2,
        )
    )
    return 0 if ok else 1


def healthcheck(environ: Mapping[str, str]) -> int:
    port = environ.get("PORT", "8080")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=3) as response:
            return 0 if response.status == 200 else 1
    except OSError:
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge", description="leadqual audio bridge")
    parser.add_argument("--check", action="store_true", help="verify the environment and exit")
    parser.add_argument("--healthcheck", action="store_true", help="probe /healthz on $PORT and exit")
    args = parser.parse_args(argv)
    if args.healthcheck:
        return healthcheck(os.environ)
    if args.check:
        return check()
    configure_logging(os.environ.get("POWERTOOLS_LOG_LEVEL", "INFO"))
    from leadqual.errors import SettingsError

    try:
        settings, config = load_config(os.environ)
    except SettingsError as exc:
        log.error("bad configuration", extra={"error": str(exc), "variable": exc.variable})
        return 2
    asyncio.run(serve(settings, config))
    log.info("bridge exited")
    return 0


if __name__ == "__main__":
    sys.exit(main())
