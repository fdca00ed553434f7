"""Dialer Lambda: an SQS batch of leads → `leadqual.dialing` (partial batch responses).

Thin on purpose: Powertools decorators, adapters built once per container from settings (on the
first invocation, never at import), one domain call. Tests call `handle(event, context, runner=…)`
with a runner wired to moto and the simulator.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from leadqual.dialing import (
    BatchRunner,
    CampaignCatalog,
    Dialer,
    DialerConfig,
    IdempotentCarrier,
    SautikitCarrier,
)
from leadqual.observability import PowertoolsSink, logger, metrics, tracer
from leadqual.queue import LeadQueue, utcnow
from leadqual.sautikit import SautikitClient
from leadqual.settings import DialerSettings
from leadqual.store import DynamoStore

_runner: BatchRunner | None = None


def build(
    settings: DialerSettings,
    *,
    dynamodb: Any = None,
    sqs: Any = None,
    http: Any = None,
    clock: Callable[[], datetime] | None = None,
) -> BatchRunner:
    """The dialer's adapters from its settings; boto3 clients, the httpx client and the clock may be injected."""
    import boto3
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    dynamodb = dynamodb or boto3.client("dynamodb")
    client = SautikitClient(settings.sautikit_base_url, settings.sautikit_api_key, http=http)
    persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=dynamodb)
    dialer = Dialer(
        store=DynamoStore(settings.table_name, dynamodb),
        carrier=IdempotentCarrier(SautikitCarrier(client), persistence),
        queue=LeadQueue(settings.queue_url, sqs or boto3.client("sqs")),
        campaigns=CampaignCatalog(settings.campaigns_dir),
        config=DialerConfig(
            from_number=settings.from_number,
            voice_webhook_url=settings.voice_webhook_url,
            max_concurrent_calls=settings.max_concurrent_calls,
            slot_lease_s=settings.slot_lease_seconds,
        ),
        metrics=PowertoolsSink(),
        clock=clock or utcnow,
    )
    return BatchRunner(dialer)


def _default_runner() -> BatchRunner:
    global _runner
    if _runner is None:
        _runner = build(DialerSettings.from_env())
    return _runner


def handle(event: dict[str, Any], context: Any, *, runner: BatchRunner | None = None) -> dict[str, Any]:
    return (runner or _default_runner()).process(event, context)


@logger.inject_lambda_context
@metrics.log_metrics
@tracer().capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle(event, context)
