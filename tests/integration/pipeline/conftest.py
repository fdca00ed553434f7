"""The calling pipeline on loopback: moto server with the template's tables and queues, the Sautikit
simulator, the voice and events handlers behind the API Gateway emulator (real HTTP callbacks from
the simulator), the dialer fed real SQS batches, and a stand-in for the audio bridge.

Everything is started once per module (about a second); tests use their own lead ids and numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from moto_locking import serialised_dynamodb
from pipeline_rig import (
    API_KEY,
    BRIDGE_SECRET,
    DIRECTORY,
    FROM,
    NUMBER_ID,
    REGION,
    SECRET,
    Clock,
    Recorder,
    Rig,
    Sink,
    StandInBridge,
)

from functions.events import app as events_app
from functions.voice import app as voice_app
from leadqual.accounting import Accountant, AccountingConfig
from leadqual.answering import VoiceAnswerer, VoiceConfig
from leadqual.campaign import builtin_campaign_path
from leadqual.dialing import (
    BatchRunner,
    CampaignCatalog,
    Dialer,
    DialerConfig,
    IdempotentCarrier,
    SautikitCarrier,
)
from leadqual.queue import LeadQueue
from leadqual.sautikit import SautikitClient
from leadqual.store import DynamoStore
from local.lambda_runtime import ApiGatewayEmulator, SqsPoller, moto_server
from local.resources import create_resources
from local.sautikit import Directory, SimulatorThread


@pytest.fixture(scope="module")
def _serialised_moto() -> Iterator[None]:
    """The races below test our conditions, not moto's thread safety (tests/moto_locking.py)."""
    with serialised_dynamodb():
        yield


@pytest.fixture(scope="module")
def rig(_serialised_moto: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    data_dir: Path = tmp_path_factory.mktemp("sim")
    # The shipped example, and a copy under another id so a test can report on its own leads only.
    campaigns_dir: Path = tmp_path_factory.mktemp("campaigns")
    example = builtin_campaign_path("example").read_text()
    (campaigns_dir / "example.yaml").write_text(example)
    (campaigns_dir / "reportcheck.yaml").write_text(example.replace("id: example", "id: reportcheck"))
    with moto_server() as endpoint:

        def client(service: str) -> Any:
            return boto3.client(
                service,
                endpoint_url=endpoint,
                region_name=REGION,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )

        dynamodb, sqs = client("dynamodb"), client("sqs")
        resources = create_resources(dynamodb, sqs, region=REGION)
        holder: dict[str, Any] = {}
        voice_log, events_log = Recorder(), Recorder()

        def voice(event: dict[str, Any], context: Any) -> Any:
            return voice_log.call(voice_app.handle, event, context, deps=holder["voice"])

        def events(event: dict[str, Any], context: Any) -> Any:
            return events_log.call(events_app.handle, event, context, deps=holder["events"])

        api = ApiGatewayEmulator(
            {"POST /voice": voice, "POST /events": events, "POST /stream-status": events}
        )
        with api:
            sim = SimulatorThread(
                Directory.from_yaml(DIRECTORY),
                api_key=API_KEY,
                webhook_secret=SECRET,
                numbers=[
                    {
                        "id": NUMBER_ID,
                        "e164": FROM,
                        "routing_url": f"{api.url}/voice",
                        "events_url": f"{api.url}/events",
                    }
                ],
                data_dir=data_dir,
                ring_seconds=0.1,
                no_answer_after_rings=3,
                event_retry_base_s=0.05,
                event_retry_attempts=3,
                recording_delay_s=0.2,
                duplicate_delay_s=0.05,
                warm_up=False,
            )
            with sim:
                bridge = StandInBridge(BRIDGE_SECRET, sim.url, API_KEY).start()
                try:
                    clock, sink = Clock(), Sink()
                    store = DynamoStore(resources.table_name, dynamodb)
                    campaigns = CampaignCatalog(campaigns_dir)
                    http = httpx.Client(trust_env=False, timeout=10)
                    sautikit = SautikitClient(sim.url, API_KEY, http=http)
                    holder["voice"] = voice_app.Deps(
                        answerer=VoiceAnswerer(
                            store=store,
                            campaigns=campaigns,
                            config=VoiceConfig(
                                bridge_url=bridge.url, bridge_token_secret=BRIDGE_SECRET, own_numbers=(FROM,)
                            ),
                            metrics=sink,
                        ),
                        webhook_secret=SECRET,
                        stream_status_url=f"{api.url}/stream-status",
                        metrics=sink,
                    )
                    holder["events"] = events_app.Deps(
                        accountant=Accountant(
                            store=store,
                            calls=sautikit,
                            queue=LeadQueue(resources.queue_url, sqs),
                            campaigns=campaigns,
                            metrics=sink,
                            config=AccountingConfig(outcome_grace_s=0.3),
                        ),
                        webhook_secret=SECRET,
                        metrics=sink,
                    )
                    persistence = DynamoDBPersistenceLayer(
                        table_name=resources.idempotency_table_name, boto3_client=dynamodb
                    )
                    dialer = Dialer(
                        store=store,
                        carrier=IdempotentCarrier(SautikitCarrier(sautikit), persistence),
                        # Deferred messages come back after at most a second here (900 s in AWS), so a
                        # test can follow a lead across a window boundary with a controllable clock.
                        queue=LeadQueue(resources.queue_url, sqs, max_delay_s=1),
                        campaigns=campaigns,
                        config=DialerConfig(from_number=FROM, max_concurrent_calls=5),
                        metrics=sink,
                        clock=clock,
                    )
                    runner = BatchRunner(dialer)
                    dialer_log = Recorder()

                    def dialer_handler(event: dict[str, Any], context: Any) -> Any:
                        return dialer_log.call(lambda e, c: runner.process(e, c), event, context)

                    poller = SqsPoller(sqs, resources.queue_url, dialer_handler, wait_s=1)
                    yield Rig(
                        endpoint=endpoint,
                        campaigns_dir=campaigns_dir,
                        dynamodb=dynamodb,
                        sqs=sqs,
                        resources=resources,
                        api=api,
                        sim=sim,
                        bridge=bridge,
                        store=store,
                        dialer=dialer,
                        poller=poller,
                        clock=clock,
                        sink=sink,
                        voice_log=voice_log,
                        events_log=events_log,
                        dialer_log=dialer_log,
                    )
                finally:
                    bridge.stop()


@pytest.fixture
def pipeline(rig: Rig) -> Iterator[Rig]:
    rig.reset()
    yield rig
    rig.dialer.fault_after_dial = None
    rig.sim.set_wallet(100_000)
