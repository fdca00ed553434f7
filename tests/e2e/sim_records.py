"""For e2e tests: running leads on a local stack to their outcomes, and reading the simulator's
view of a call (`GET /_sim/calls/{id}`: timeline, legs)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from leadqual.models import Lead
from local.demo import LeadView, Watcher, enqueue
from local.stack import LocalStack


def kinds(sim: dict[str, Any]) -> list[str]:
    return [str(e["kind"]) for e in sim["timeline"]]


def events(sim: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e for e in sim["timeline"] if e["kind"] == kind]


def legs(sim: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [leg for leg in sim["call"]["legs"] if leg["role"] == role]


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def final_sim_calls(stack: LocalStack, labels: list[str], timeout_s: float = 15.0) -> dict[str, Any]:
    """The simulator's views once each call is billed (its timeline then ends with `billed`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        calls = {str(c.get("client_request_id")): c for c in stack.sim_calls()}
        pending = [label for label in labels if label not in calls or "billed" not in kinds(calls[label])]
        if not pending:
            return calls
        assert time.monotonic() < deadline, f"calls never billed: {pending}"
        time.sleep(0.3)


def run_to_outcomes(
    stack: LocalStack, leads: list[Lead], wait_s: float
) -> tuple[dict[str, LeadView], dict[str, Any], list[dict[str, Any]]]:
    """Enqueue `leads` and watch until each has its outcome (failing after `wait_s` with why
    not); then each lead's view, the simulator's billed view of each last call, and its violations."""
    views = [LeadView(lead) for lead in leads]
    enqueue(stack, leads)
    watcher = Watcher(stack, views)
    deadline = time.monotonic() + wait_s
    while not watcher.done():
        stack.check()
        unfinished = {v.lead_id: v.why_unfinished() for v in views if v.outcome is None}
        assert time.monotonic() < deadline, f"unfinished after {wait_s:.0f} s: {unfinished}"
        time.sleep(0.5)
        watcher.poll()
    sim_calls = final_sim_calls(stack, [v.calls[-1].client_request_id for v in views if v.calls])
    return {v.lead_id: v for v in views}, sim_calls, stack.sim_violations()
