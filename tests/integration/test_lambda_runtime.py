"""The local Lambda runtime behaves like API Gateway and Lambda's SQS event source mapping."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import boto3
import httpx
import pytest

from local.lambda_runtime import ApiGatewayEmulator, SqsPoller, moto_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def aws_endpoint() -> Any:
    with moto_server() as url:
        yield url


def _sqs(endpoint: str) -> Any:
    return boto3.client(
        "sqs",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )


def test_api_emulator_builds_v2_events_and_maps_responses() -> None:
    seen: list[dict[str, Any]] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        assert context.get_remaining_time_in_millis() > 0
        return {"statusCode": 201, "headers": {"Content-Type": "application/xml"}, "body": "<Response/>"}

    with ApiGatewayEmulator({"POST /voice": handler}) as api:
        resp = httpx.post(
            f"{api.url}/voice?clientRequestId=lq-a-1",
            content=b"sessionId=HD_1&isActive=1",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Sautikit-Signature": "t=1,v1=ab",
            },
        )
        missing = httpx.post(f"{api.url}/nowhere", content=b"{}")
    assert resp.status_code == 201
    assert resp.headers["content-type"] == "application/xml"
    assert resp.text == "<Response/>"
    assert missing.status_code == 404
    event = seen[0]
    assert event["version"] == "2.0"
    assert event["routeKey"] == "POST /voice"
    assert event["queryStringParameters"] == {"clientRequestId": "lq-a-1"}
    assert event["headers"]["x-sautikit-signature"] == "t=1,v1=ab"
    # Form bodies reach the handler base64-encoded, exactly as API Gateway sends them.
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"sessionId=HD_1&isActive=1"


def test_api_emulator_answers_500_when_the_handler_raises() -> None:
    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    with ApiGatewayEmulator({"POST /events": handler}) as api:
        assert httpx.post(f"{api.url}/events", json={}).status_code == 500


def test_poller_deletes_successes_and_redelivers_reported_failures_into_the_dlq(aws_endpoint: str) -> None:
    sqs = _sqs(aws_endpoint)
    dlq = sqs.create_queue(QueueName="poll-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    queue = sqs.create_queue(
        QueueName="poll-main",
        Attributes={
            "VisibilityTimeout": "1",
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"}),
        },
    )["QueueUrl"]
    for body in ("ok-1", "bad", "ok-2"):
        sqs.send_message(QueueUrl=queue, MessageBody=body)

    handled: list[str] = []

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        failures = []
        for record in event["Records"]:
            assert record["eventSource"] == "aws:sqs"
            assert record["eventSourceARN"].endswith(":poll-main")
            handled.append(record["body"])
            if record["body"] == "bad":
                failures.append({"itemIdentifier": record["messageId"]})
        return {"batchItemFailures": failures}

    poller = SqsPoller(sqs, queue, handler, wait_s=0)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        poller.poll_once()
        in_dlq = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=0, VisibilityTimeout=0).get("Messages", [])
        if in_dlq:
            break
        time.sleep(0.3)
    assert [m["Body"] for m in in_dlq] == ["bad"]
    assert handled.count("ok-1") == 1
    assert handled.count("ok-2") == 1
    assert handled.count("bad") == 2  # maxReceiveCount deliveries, then the DLQ
    assert poller.failures_reported == 2


def test_each_moto_server_starts_from_an_empty_aws() -> None:
    with moto_server() as first:
        _sqs(first).create_queue(QueueName="left-behind")
    with moto_server() as second:
        assert _sqs(second).list_queues().get("QueueUrls", []) == []
