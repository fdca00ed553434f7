"""Reading the simulator's view of a call (`GET /_sim/calls/{id}`: timeline, legs), for e2e tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def kinds(sim: dict[str, Any]) -> list[str]:
    return [str(e["kind"]) for e in sim["timeline"]]


def events(sim: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in sim["timeline"] if e["kind"] == kind]


def legs(sim: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [leg for leg in sim["call"]["legs"] if leg["role"] == role]


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
