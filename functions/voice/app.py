"""Voice webhook Lambda (POST /voice): verify, parse, answer with the document `leadqual.answering` picks.

Thin: a Powertools resolver maps the route and the domain errors to statuses (401 for a bad
signature, 400 for an unreadable body); adapters are built once per container on first use.
Tests call `handle(event, context, deps=…)`. No X-Ray SDK here (see `leadqual.observability.tracer`):
the lead hears nothing until this answers, and the SDK's import alone is a quarter of a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aws_lambda_powertools.event_handler import Response

from leadqual.answering import VoiceAnswerer, VoiceConfig, with_query
from leadqual.campaign import CampaignCatalog
from leadqual.http_api import HttpResolver, map_webhook_errors, resolve, signed_body
from leadqual.observability import MetricsSink, PowertoolsSink, logger, metrics
from leadqual.settings import VoiceSettings
from leadqual.store import DynamoStore
from leadqual.webhooks import parse_callback


@dataclass
class Deps:
    answerer: VoiceAnswerer
    webhook_secret: str
    stream_status_url: str | None = None  # fixed statusCallback (local stack); else from the request
    metrics: MetricsSink = field(default_factory=PowertoolsSink)
    now: Callable[[], float] = field(default=time.time)


_deps: Deps | None = None


def build(settings: VoiceSettings, *, dynamodb: Any = None) -> Deps:
    import boto3

    answerer = VoiceAnswerer(
        store=DynamoStore(settings.table_name, dynamodb or boto3.client("dynamodb")),
        campaigns=CampaignCatalog(settings.campaigns_dir),
        config=VoiceConfig(
            bridge_url=settings.bridge_url,
            bridge_token_secret=settings.bridge_token_secret,
            own_numbers=(settings.from_number,),
            token_ttl_s=settings.bridge_token_ttl_seconds,
            output_sample_rate=settings.output_sample_rate,
            bidirectional_sample_rate=settings.bidirectional_sample_rate,
        ),
        metrics=PowertoolsSink(),
    )
    status_url = (
        with_query(settings.events_webhook_url, source="stream") if settings.events_webhook_url else None
    )
    return Deps(answerer=answerer, webhook_secret=settings.webhook_secret, stream_status_url=status_url)


def _default_deps() -> Deps:
    global _deps
    if _deps is None:
        _deps = build(VoiceSettings.from_env())
    return _deps


def make_app() -> HttpResolver:
    """The route and the domain errors' statuses. One resolver per thread (see `handle`)."""
    app = HttpResolver()

    @app.post("/voice")
    def voice() -> Response[str]:
        deps: Deps = app.context["deps"]
        event = app.current_event
        raw = signed_body(app)
        callback = parse_callback(raw, event.headers.get("content-type"), event.query_string_parameters or {})
        domain = event.request_context.domain_name
        status_url = deps.stream_status_url or f"https://{domain}/stream-status"
        reply = deps.answerer.answer(callback, status_callback_url=status_url)
        return Response(200, reply.content_type, reply.body)

    map_webhook_errors(app, "voice")
    return app


def handle(event: dict[str, Any], context: Any, *, deps: Deps | None = None) -> dict[str, Any]:
    return resolve(make_app, event, context, deps or _default_deps())


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
