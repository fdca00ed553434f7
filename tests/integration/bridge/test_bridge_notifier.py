"""The rep briefing reaches the SNS topic the template declares (REP_NOTIFY_TOPIC_ARN), on moto.

A subscriber (an SQS queue, as an email/SMS/Slack fan-out would be) must get the subject, the
briefing as JSON and the attributes a filter policy selects on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from bridge.adapters import SnsNotifier
from local.lambda_runtime import moto_server

pytestmark = pytest.mark.integration

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    with moto_server() as url:
        yield {
            "endpoint_url": url,
            "region_name": REGION,
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
        }


def test_the_briefing_is_published_with_subject_json_body_and_filterable_attributes(
    aws: dict[str, Any],
) -> None:
    sns, sqs = boto3.client("sns", **aws), boto3.client("sqs", **aws)
    topic = sns.create_topic(Name="leadqual-rep-notify")["TopicArn"]
    queue_url = sqs.create_queue(QueueName="rep-inbox")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    briefing = {
        "type": "lead.hot",
        "rep": "+254711999000",
        "session_id": "HD_0000000000aa",
        "lead": {"name": "Wanjiku Kamau", "company": "Duka Ltd"},
        "score": {"verdict": "hot", "points": 9},
    }

    SnsNotifier(topic, sns).publish(briefing)

    [delivered] = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=2)["Messages"]
    envelope = json.loads(delivered["Body"])
    assert envelope["TopicArn"] == topic
    assert envelope["Subject"] == "Hot lead on the line"
    assert json.loads(envelope["Message"]) == briefing
    attributes = {k: v["Value"] for k, v in envelope["MessageAttributes"].items()}
    assert attributes == {"type": "lead.hot", "rep": "+254711999000"}


def test_a_missing_topic_raises_so_the_bridge_logs_the_failed_briefing(aws: dict[str, Any]) -> None:
    sns = boto3.client("sns", **aws)
    missing = f"arn:aws:sns:{REGION}:123456789012:no-such-topic"
    with pytest.raises(sns.exceptions.NotFoundException):
        SnsNotifier(missing, sns).publish({"type": "lead.hot", "rep": "+254711999000"})
