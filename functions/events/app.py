"""Events Lambda (POST /events, POST /stream-status): verify, parse either body shape, account for it.

Thin: a Powertools resolver maps both routes and the domain errors to statuses (401 for a bad
signature, 400 for an unreadable body); a transient failure raises (500) so Sautikit redelivers.
Adapters are built once per container on first use. Tests call `handle(event, context, deps=…)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler import Response

from leadqual.accounting import Accountant
from leadqual.campaign import CampaignCatalog
from leadqual.http_api import HttpResolver, map_webhook_errors, resolve, signed_body
from leadqual.observability import MetricsSink, PowertoolsSink, logger, metrics, tracer
from leadqual.queue import LeadQueue
from leadqual.sautikit import SautikitClient
from leadqual.settings import EventsSettings
from leadqual.store import DynamoStore
from leadqual.webhooks import parse_event


@dataclass
class Deps:
    accountant: Accountant
    webhook_secret: str
    metrics: MetricsSink = field(default_factory=PowertoolsSink)
    now: Callable[[], float] = field(default=time.time)


_deps: Deps | None = None


def build(settings: EventsSettings, *, dynamodb: Any = None, sqs: Any = None, http: Any = None) -> Deps:
    import boto3

    sink = PowertoolsSink()
    accountant = Accountant(
        store=DynamoStore(settings.table_name, dynamodb or boto3.client("dynamodb")),
        calls=SautikitClient(settings.sautikit_base_url, settings.sautikit_api_key, http=http),
        queue=LeadQueue(settings.queue_url, sqs or boto3.client("sqs")),
        campaigns=CampaignCatalog(settings.campaigns_dir),
        metrics=sink,
    )
    return Deps(accountant=accountant, webhook_secret=settings.webhook_secret, metrics=sink)


def _default_deps() -> Deps:
    global _deps
    if _deps is None:
        _deps = build(EventsSettings.from_env())
    return _deps


def make_app() -> HttpResolver:
    """Both routes and the domain errors' statuses. One resolver per thread (see `handle`)."""
    app = HttpResolver()

    @app.post("/events")
    @app.post("/stream-status")
    def events() -> Response[str]:
        deps: Deps = app.context["deps"]
        event = app.current_event
        raw = signed_body(app)
        call_event = parse_event(
            raw, event.headers.get("content-type"), event.headers, event.query_string_parameters
        )
        result = deps.accountant.handle(call_event)
        return Response(200, "application/json", f'{{"result":"{result.value}"}}')

    map_webhook_errors(app, "event")
    return app


def handle(event: dict[str, Any], context: Any, *, deps: Deps | None = None) -> dict[str, Any]:
    return resolve(make_app, event, context, deps or _default_deps())


@logger.inject_lambda_context
@metrics.log_metrics
@tracer().capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
