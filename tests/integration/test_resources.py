"""local/resources.py against a real moto server on loopback: the tables and queues match template.yaml."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from local.lambda_runtime import moto_server
from local.resources import LocalResourceError, create_resources, load_template

pytestmark = pytest.mark.integration

REGION = "eu-west-1"


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with moto_server() as url:
        yield url


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def clients(endpoint: str) -> tuple[Any, Any]:
    return _client("dynamodb", endpoint), _client("sqs", endpoint)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def test_tables_match_the_template(clients: tuple[Any, Any], template: dict[str, Any]) -> None:
    dynamodb, sqs = clients
    res = create_resources(dynamodb, sqs, stack_name="tables", region=REGION)

    table = dynamodb.describe_table(TableName=res.table_name)["Table"]
    assert {(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]} == {
        ("PK", "HASH"),
        ("SK", "RANGE"),
    }
    (gsi,) = table["GlobalSecondaryIndexes"]
    assert gsi["IndexName"] == "GSI1"
    assert {(k["AttributeName"], k["KeyType"]) for k in gsi["KeySchema"]} == {
        ("GSI1PK", "HASH"),
        ("GSI1SK", "RANGE"),
    }
    assert gsi["Projection"]["ProjectionType"] == "ALL"
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSEDescription"]["Status"] == "ENABLED"
    assert table["SSEDescription"]["SSEType"] == "KMS"
    ttl = dynamodb.describe_time_to_live(TableName=res.table_name)["TimeToLiveDescription"]
    assert (ttl["AttributeName"], ttl["TimeToLiveStatus"]) == ("ttl", "ENABLED")
    backups = dynamodb.describe_continuous_backups(TableName=res.table_name)["ContinuousBackupsDescription"]
    assert backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    assert res.tables["Table"].arn == table["TableArn"]

    idem = dynamodb.describe_table(TableName=res.idempotency_table_name)["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in idem["KeySchema"]] == [("id", "HASH")]
    idem_ttl = dynamodb.describe_time_to_live(TableName=res.idempotency_table_name)["TimeToLiveDescription"]
    assert (idem_ttl["AttributeName"], idem_ttl["TimeToLiveStatus"]) == ("expiration", "ENABLED")

    # Every table of the template is there, nothing else.
    declared = {lid for lid, r in template["Resources"].items() if r["Type"] == "AWS::DynamoDB::Table"}
    assert set(res.tables) == declared


def test_the_gsi_answers_campaign_queries(clients: tuple[Any, Any]) -> None:
    """The keys are real: an item written with the contract's GSI1 keys comes back from the index."""
    dynamodb, sqs = clients
    res = create_resources(dynamodb, sqs, stack_name="gsi", region=REGION)
    dynamodb.put_item(
        TableName=res.table_name,
        Item={
            "PK": {"S": "LEAD#l1"},
            "SK": {"S": "PROFILE"},
            "GSI1PK": {"S": "CAMPAIGN#example"},
            "GSI1SK": {"S": "hot_transferred#l1"},
        },
    )
    found = dynamodb.query(
        TableName=res.table_name,
        IndexName="GSI1",
        KeyConditionExpression="GSI1PK = :c",
        ExpressionAttributeValues={":c": {"S": "CAMPAIGN#example"}},
    )["Items"]
    assert [item["PK"]["S"] for item in found] == ["LEAD#l1"]


def test_queue_redrives_to_the_dlq_after_max_receive_count(
    clients: tuple[Any, Any], template: dict[str, Any]
) -> None:
    dynamodb, sqs = clients
    res = create_resources(dynamodb, sqs, stack_name="queues", region=REGION)
    declared = template["Resources"]["LeadsQueue"]["Properties"]
    max_receives = int(declared["RedrivePolicy"]["maxReceiveCount"])
    assert max_receives == 5

    attrs = sqs.get_queue_attributes(QueueUrl=res.queue_url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == res.queues["LeadsDLQ"].arn
    assert int(redrive["maxReceiveCount"]) == max_receives
    assert int(attrs["VisibilityTimeout"]) == int(declared["VisibilityTimeout"])
    assert attrs["SqsManagedSseEnabled"] == "true"
    dlq_attrs = sqs.get_queue_attributes(QueueUrl=res.dlq_url, AttributeNames=["All"])["Attributes"]
    assert int(dlq_attrs["MessageRetentionPeriod"]) == 1209600

    # The redrive is live: a message that fails max_receives times ends up in the DLQ.
    sqs.send_message(QueueUrl=res.queue_url, MessageBody=json.dumps({"lead_id": "poison"}))
    for _ in range(max_receives):
        got = sqs.receive_message(QueueUrl=res.queue_url, VisibilityTimeout=0, WaitTimeSeconds=0)
        assert len(got.get("Messages", [])) == 1
    assert sqs.receive_message(QueueUrl=res.queue_url, WaitTimeSeconds=0).get("Messages", []) == []
    dead = sqs.receive_message(QueueUrl=res.dlq_url, WaitTimeSeconds=0)["Messages"]
    assert json.loads(dead[0]["Body"]) == {"lead_id": "poison"}


def test_creating_twice_reuses_what_exists(clients: tuple[Any, Any]) -> None:
    dynamodb, sqs = clients
    first = create_resources(dynamodb, sqs, stack_name="twice", region=REGION)
    second = create_resources(dynamodb, sqs, stack_name="twice", region=REGION)
    assert first == second


def test_names_and_references_resolve_from_the_template(
    clients: tuple[Any, Any], template: dict[str, Any]
) -> None:
    """Explicit names with !Sub and parameters resolve the way CloudFormation would."""
    dynamodb, sqs = clients
    tpl = copy.deepcopy(template)
    tpl["Resources"]["Table"]["Properties"]["TableName"] = {"Fn::Sub": "${AWS::StackName}-${Stage}-leads"}
    tpl["Resources"]["LeadsDLQ"]["Properties"]["QueueName"] = {
        "Fn::Join": ["-", [{"Ref": "AWS::StackName"}, "dead"]]
    }
    res = create_resources(dynamodb, sqs, template=tpl, stack_name="named", parameters={"Stage": "dev"})
    assert res.table_name == "named-dev-leads"
    assert res.queues["LeadsDLQ"].name == "named-dead"
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=res.queue_url, AttributeNames=["RedrivePolicy"])["Attributes"][
            "RedrivePolicy"
        ]
    )
    assert redrive["deadLetterTargetArn"].endswith(":named-dead")


@pytest.mark.parametrize(
    ("resource", "prop", "value", "message"),
    [
        ("LeadsQueue", "MadeUpSetting", 1, "MadeUpSetting"),
        ("Table", "ContributorInsightsSpecification", {"Enabled": True}, "ContributorInsightsSpecification"),
        ("LeadsQueue", "DelaySeconds", {"Fn::If": ["X", 1, 2]}, "Fn::If"),
        ("LeadsQueue", "RedrivePolicy", {"deadLetterTargetArn": {"Ref": "Nowhere"}}, "Nowhere"),
    ],
)
def test_what_cannot_be_reproduced_locally_is_an_error(
    clients: tuple[Any, Any], template: dict[str, Any], resource: str, prop: str, value: Any, message: str
) -> None:
    dynamodb, sqs = clients
    tpl = copy.deepcopy(template)
    tpl["Resources"][resource]["Properties"][prop] = value
    with pytest.raises(LocalResourceError, match=message):
        create_resources(dynamodb, sqs, template=tpl, stack_name=f"bad-{resource}-{prop}".lower())
