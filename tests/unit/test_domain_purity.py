"""Pure domain code loads no AWS SDK and no HTTP client (issue 2): only the adapters do I/O.

Each module is imported in a fresh interpreter, because in this process the adapters and their
libraries are long since loaded; what counts is what importing the module pulls in by itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import leadqual

FORBIDDEN = ("httpx", "boto3", "botocore")

# Pure: no I/O library at all.
PURE = [
    "models",
    "carrier",
    "errors",
    "campaign",
    "scoring",
    "compliance",
    "normalise",
    "webhooks",
    "voice",
    "signing",
    "queue",  # the SQS client is injected, or boto3 is imported when a queue first sends
    "settings",  # Secrets Manager (boto3) is reached lazily, only where a secret is read
]
# Domain logic that logs through leadqual.observability: importing Powertools loads botocore
# (aws_lambda_powertools/__init__ → shared/user_agent `import botocore`), never boto3 or httpx.
LOGS_THROUGH_POWERTOOLS = ["dialing", "accounting", "answering", "routing"]
# Allowed to do I/O, or the edge that wires adapters together.
ADAPTERS = ["sautikit", "store", "http_api", "observability", "cli"]


def loaded_by_import(module: str) -> list[str]:
    """The FORBIDDEN top-level packages present after importing leadqual.<module> on its own."""
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module('leadqual.{module}')\n"
        f"print(json.dumps([m for m in {list(FORBIDDEN)!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded: list[str] = json.loads(out.stdout)
    return loaded


def test_every_leadqual_module_is_classified_as_pure_or_adapter() -> None:
    """A new module must be put in one list, so it cannot dodge the checks below unnoticed."""
    package = Path(next(iter(leadqual.__path__)))
    modules = {p.stem for p in package.glob("*.py")} - {"__init__"}
    assert modules == set(PURE) | set(LOGS_THROUGH_POWERTOOLS) | set(ADAPTERS)


@pytest.mark.parametrize("module", PURE)
def test_pure_module_loads_no_aws_sdk_or_http_client(module: str) -> None:
    assert loaded_by_import(module) == []


@pytest.mark.parametrize("module", LOGS_THROUGH_POWERTOOLS)
def test_domain_module_loads_neither_httpx_nor_boto3(module: str) -> None:
    assert set(loaded_by_import(module)).isdisjoint({"httpx", "boto3"})
