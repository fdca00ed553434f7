"""Fixtures for the calling pipeline's unit tests: moto in-process (no sockets) with the tables and
queues of template.yaml, a settable clock, campaign files, the scripted carrier."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from moto import mock_aws
from moto_locking import serialised_dynamodb
from pipeline_fakes import NAIROBI, REGION, Aws, Clock, FakeCarrier, RecordingSink

from leadqual.campaign import CampaignCatalog, builtin_campaign_path
from leadqual.queue import LeadQueue
from leadqual.store import DynamoStore


@pytest.fixture(scope="module")
def _aws_module() -> Iterator[Aws]:
    """One in-process moto per test module (creating the template's tables takes a third of a
    second); `aws` empties them before each test."""
    with serialised_dynamodb() as patch:
        for key, value in {
            "AWS_DEFAULT_REGION": REGION,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "POWERTOOLS_METRICS_NAMESPACE": "Leadqual",
            "POWERTOOLS_SERVICE_NAME": "leadqual",
        }.items():
            patch.setenv(key, value)
        for key in ("AWS_ENDPOINT_URL", "POWERTOOLS_IDEMPOTENCY_DISABLED", "AWS_PROFILE"):
            patch.delenv(key, raising=False)
        with mock_aws():
            yield Aws()


@pytest.fixture
def aws(_aws_module: Aws) -> Aws:
    _aws_module.reset()
    return _aws_module


@pytest.fixture
def clock() -> Clock:
    """Wednesday 2025-06-04 10:00 in Nairobi: inside the example campaign's KE window."""
    return Clock(datetime(2025, 6, 4, 10, 0, tzinfo=NAIROBI))


@pytest.fixture
def store(aws: Aws, clock: Clock) -> DynamoStore:
    return DynamoStore(aws.resources.table_name, aws.dynamodb, clock=clock.timestamp)


@pytest.fixture
def queue(aws: Aws) -> LeadQueue:
    return LeadQueue(aws.resources.queue_url, aws.sqs)


@pytest.fixture
def carrier() -> FakeCarrier:
    return FakeCarrier(balance_minor=0)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def campaigns_dir(tmp_path: Path) -> Path:
    """example.yaml as shipped, plus `barge` (supervise_barge) and `intro` (a fixed <Say> intro in Swahili)."""
    folder = tmp_path / "campaigns"
    folder.mkdir()
    base = yaml.safe_load(builtin_campaign_path("example").read_text())
    (folder / "example.yaml").write_text(yaml.safe_dump(base))
    barge = {**base, "id": "barge", "transfer": {**base["transfer"], "strategy": "supervise_barge"}}
    (folder / "barge.yaml").write_text(yaml.safe_dump(barge))
    intro = {
        **base,
        "id": "intro",
        "intro_say": True,
        "disclosure": "Simu hii inatumia msaada wa AI na inaweza kurekodiwa.",
        "agent": {**base["agent"], "language": "sw-KE"},
    }
    (folder / "intro.yaml").write_text(yaml.safe_dump(intro))
    return folder


@pytest.fixture
def campaigns(campaigns_dir: Path) -> CampaignCatalog:
    return CampaignCatalog(campaigns_dir)
