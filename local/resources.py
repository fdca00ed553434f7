"""Create the stack's DynamoDB tables and SQS queues on any endpoint (moto locally) from template.yaml itself.

The local stack must not keep a second copy of the table keys, indexes, TTL attributes or the
redrive policy: it reads the `AWS::DynamoDB::Table` and `AWS::SQS::Queue` resources from the SAM
template, resolves the few intrinsics they use (Ref, Fn::GetAtt, Fn::Sub, Fn::Join) to local
values and makes the same calls CloudFormation would. Any property it does not know is an error,
so a change to the template cannot silently diverge from what runs locally.

    resources = create_resources(boto3.client("dynamodb", ...), boto3.client("sqs", ...))
    resources.table_name, resources.queue_url, resources.dlq_url
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"
LOCAL_ACCOUNT_ID = "123456789012"  # moto's default account

TABLE_TYPE = "AWS::DynamoDB::Table"
QUEUE_TYPE = "AWS::SQS::Queue"

# Logical ids in template.yaml that the rest of the code asks for by role.
MAIN_TABLE = "Table"
IDEMPOTENCY_TABLE = "IdempotencyTable"
LEADS_QUEUE = "LeadsQueue"
LEADS_DLQ = "LeadsDLQ"


class LocalResourceError(ValueError):
    """The template uses something this module cannot reproduce locally."""


# ---------------------------------------------------------------- template loading


class _TemplateLoader(yaml.SafeLoader):
    """SafeLoader that reads CloudFormation short tags (!Ref, !GetAtt, !Sub, ...) as their long forms."""


def _short_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type] - a MappingNode by elimination
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    return {f"Fn::{tag_suffix}": value}


_TemplateLoader.add_multi_constructor("!", _short_tag)


def load_template(path: Path | str = TEMPLATE_PATH) -> dict[str, Any]:
    """template.yaml as plain data, short tags turned into their `{"Fn::…": …}` / `{"Ref": …}` forms."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(data, dict) or "Resources" not in data:
        raise LocalResourceError(f"{path} is not a CloudFormation template")
    return data


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class LocalTable:
    logical_id: str
    name: str
    arn: str


@dataclass(frozen=True)
class LocalQueue:
    logical_id: str
    name: str
    url: str
    arn: str


@dataclass(frozen=True)
class LocalResources:
    """What was created, by the template's logical ids, with shortcuts for the ones code asks for."""

    tables: dict[str, LocalTable] = field(default_factory=dict)
    queues: dict[str, LocalQueue] = field(default_factory=dict)

    @property
    def table_name(self) -> str:
        return self.tables[MAIN_TABLE].name

    @property
    def idempotency_table_name(self) -> str:
        return self.tables[IDEMPOTENCY_TABLE].name

    @property
    def queue_url(self) -> str:
        return self.queues[LEADS_QUEUE].url

    @property
    def queue_arn(self) -> str:
        return self.queues[LEADS_QUEUE].arn

    @property
    def dlq_url(self) -> str:
        return self.queues[LEADS_DLQ].url


# ---------------------------------------------------------------- intrinsics

_SUB_VAR = re.compile(r"\$\{([^}!][^}]*)\}")


class _Resolver:
    """Resolves intrinsics against parameters, pseudo parameters and the resources created so far."""

    def __init__(self, *, parameters: Mapping[str, str], pseudo: Mapping[str, str]) -> None:
        self.parameters = dict(parameters)
        self.pseudo = dict(pseudo)
        self.refs: dict[str, str] = {}
        self.attrs: dict[tuple[str, str], str] = {}

    def dependencies(self, value: Any) -> set[str]:
        """Logical ids of other resources that `value` refers to."""
        found: set[str] = set()
        if isinstance(value, dict):
            if "Ref" in value and isinstance(value["Ref"], str):
                found.add(value["Ref"])
            if "Fn::GetAtt" in value:
                target = value["Fn::GetAtt"]
                found.add(target[0] if isinstance(target, list) else str(target).partition(".")[0])
            if "Fn::Sub" in value:
                sub = value["Fn::Sub"]
                text = sub[0] if isinstance(sub, list) else sub
                local_vars = sub[1] if isinstance(sub, list) else {}
                for name in _SUB_VAR.findall(text):
                    base = name.partition(".")[0]
                    if base not in local_vars:
                        found.add(base)
            for item in value.values():
                found |= self.dependencies(item)
        elif isinstance(value, list):
            for item in value:
                found |= self.dependencies(item)
        return {name for name in found if name not in self.parameters and not name.startswith("AWS::")}

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), *_ = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                resource, attribute = arg if isinstance(arg, list) else str(arg).split(".", 1)
                return self._getatt(resource, attribute)
            if key == "Fn::Sub":
                return self._sub(arg)
            if key == "Fn::Join":
                sep, items = arg
                return sep.join(str(self.resolve(item)) for item in items)
            if key.startswith("Fn::") or key == "Condition":
                raise LocalResourceError(f"{key} is not supported by local/resources.py")
        return {key: self.resolve(item) for key, item in value.items()}

    def _ref(self, name: str) -> str:
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name in self.refs:
            return self.refs[name]
        raise LocalResourceError(
            f"Ref {name} cannot be resolved locally (not a parameter or a created resource)"
        )

    def _getatt(self, resource: str, attribute: str) -> str:
        try:
            return self.attrs[(resource, attribute)]
        except KeyError:
            raise LocalResourceError(
                f"Fn::GetAtt {resource}.{attribute} cannot be resolved locally"
            ) from None

    def _sub(self, arg: Any) -> str:
        text, local_vars = (arg[0], arg[1]) if isinstance(arg, list) else (arg, {})
        resolved_vars = {name: str(self.resolve(v)) for name, v in local_vars.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in resolved_vars:
                return resolved_vars[name]
            if "." in name and not name.startswith("AWS::"):
                return str(self._getatt(*name.split(".", 1)))
            return str(self._ref(name))

        # `${!Literal}` is CloudFormation's escape for a literal `${Literal}`.
        return _SUB_VAR.sub(replace, text).replace("${!", "${")


# ---------------------------------------------------------------- CloudFormation -> API mappings

_QUEUE_INT_ATTRIBUTES = {
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "KmsDataKeyReusePeriodSeconds",
}
_QUEUE_BOOL_ATTRIBUTES = {"SqsManagedSseEnabled", "FifoQueue", "ContentBasedDeduplication"}
_QUEUE_STR_ATTRIBUTES = {"KmsMasterKeyId", "DeduplicationScope", "FifoThroughputLimit"}
_QUEUE_JSON_ATTRIBUTES = {"RedrivePolicy", "RedriveAllowPolicy"}


def _queue_request(name: str, props: Mapping[str, Any]) -> dict[str, Any]:
    attributes: dict[str, str] = {}
    tags: dict[str, str] = {}
    for key, value in props.items():
        if key == "QueueName":
            continue
        if key in _QUEUE_INT_ATTRIBUTES:
            attributes[key] = str(int(value))
        elif key in _QUEUE_BOOL_ATTRIBUTES:
            attributes[key] = "true" if _as_bool(value) else "false"
        elif key in _QUEUE_STR_ATTRIBUTES:
            attributes[key] = str(value)
        elif key in _QUEUE_JSON_ATTRIBUTES:
            policy = dict(value)
            if "maxReceiveCount" in policy:
                policy["maxReceiveCount"] = int(policy["maxReceiveCount"])
            attributes[key] = json.dumps(policy)
        elif key == "Tags":
            tags = {tag["Key"]: str(tag["Value"]) for tag in value}
        else:
            raise LocalResourceError(f"AWS::SQS::Queue property {key} is not reproduced locally")
    request: dict[str, Any] = {"QueueName": name, "Attributes": attributes}
    if tags:
        request["tags"] = tags
    return request


_TABLE_PASSTHROUGH = {
    "AttributeDefinitions",
    "KeySchema",
    "GlobalSecondaryIndexes",
    "LocalSecondaryIndexes",
    "BillingMode",
    "ProvisionedThroughput",
    "TableClass",
    "DeletionProtectionEnabled",
    "Tags",
}


@dataclass
class _TableRequest:
    create: dict[str, Any]
    ttl: dict[str, Any] | None = None
    pitr: bool | None = None


def _table_request(name: str, props: Mapping[str, Any]) -> _TableRequest:
    create: dict[str, Any] = {"TableName": name}
    request = _TableRequest(create=create)
    for key, value in props.items():
        if key == "TableName":
            continue
        if key in _TABLE_PASSTHROUGH:
            create[key] = value
        elif key == "SSESpecification":
            sse: dict[str, Any] = {"Enabled": _as_bool(value.get("SSEEnabled", False))}
            if "SSEType" in value:
                sse["SSEType"] = value["SSEType"]
            if "KMSMasterKeyId" in value:
                sse["KMSMasterKeyId"] = value["KMSMasterKeyId"]
            create["SSESpecification"] = sse
        elif key == "StreamSpecification":
            create["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": value["StreamViewType"]}
        elif key == "TimeToLiveSpecification":
            request.ttl = {
                "Enabled": _as_bool(value.get("Enabled", False)),
                "AttributeName": value["AttributeName"],
            }
        elif key == "PointInTimeRecoverySpecification":
            request.pitr = _as_bool(value.get("PointInTimeRecoveryEnabled", False))
        else:
            raise LocalResourceError(f"AWS::DynamoDB::Table property {key} is not reproduced locally")
    return request


def _as_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() == "true"


# ---------------------------------------------------------------- creation


def create_resources(
    dynamodb: Any,
    sqs: Any,
    *,
    template: Mapping[str, Any] | None = None,
    stack_name: str = "leadqual",
    region: str = "us-east-1",
    account_id: str = LOCAL_ACCOUNT_ID,
    parameters: Mapping[str, str] | None = None,
) -> LocalResources:
    """Create every table and queue of `template` (default: template.yaml) with the given boto3 clients.

    Names are `<stack_name>-<LogicalId>` unless the template names them. Existing resources with
    those names are reused, so calling this twice against one endpoint is harmless.
    `parameters` override the template's parameter defaults for any Ref the resources make.
    """
    tpl = load_template() if template is None else template
    resources: Mapping[str, Any] = tpl.get("Resources", {})
    defaults = {
        name: str(spec["Default"]) for name, spec in tpl.get("Parameters", {}).items() if "Default" in spec
    }
    resolver = _Resolver(
        parameters={**defaults, **(parameters or {})},
        pseudo={
            "AWS::StackName": stack_name,
            "AWS::Region": region,
            "AWS::AccountId": account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        },
    )
    wanted = {lid: spec for lid, spec in resources.items() if spec.get("Type") in (TABLE_TYPE, QUEUE_TYPE)}
    for lid, spec in wanted.items():
        if "Condition" in spec:
            raise LocalResourceError(f"{lid}: conditional tables/queues are not reproduced locally")

    result = LocalResources()
    pending = dict(wanted)
    while pending:
        ready = [
            lid
            for lid, spec in pending.items()
            if not (resolver.dependencies(spec.get("Properties", {})) & set(pending))
        ]
        if not ready:
            raise LocalResourceError(f"circular references between {sorted(pending)}")
        for lid in ready:
            spec = pending.pop(lid)
            unknown = resolver.dependencies(spec.get("Properties", {})) - set(wanted)
            if unknown:
                raise LocalResourceError(f"{lid} refers to {sorted(unknown)}, which are not created locally")
            props = resolver.resolve(spec.get("Properties", {}))
            if spec["Type"] == QUEUE_TYPE:
                queue = _create_queue(sqs, lid, props, stack_name)
                result.queues[lid] = queue
                resolver.refs[lid] = queue.url
                resolver.attrs.update({(lid, "Arn"): queue.arn, (lid, "QueueName"): queue.name})
                resolver.attrs[(lid, "QueueUrl")] = queue.url
            else:
                table = _create_table(dynamodb, lid, props, stack_name)
                result.tables[lid] = table
                resolver.refs[lid] = table.name
                resolver.attrs[(lid, "Arn")] = table.arn
    return result


def _create_queue(sqs: Any, logical_id: str, props: Mapping[str, Any], stack_name: str) -> LocalQueue:
    name = str(props.get("QueueName") or f"{stack_name}-{logical_id}")
    if _as_bool(props.get("FifoQueue", False)) and not name.endswith(".fifo"):
        name += ".fifo"
    url = sqs.create_queue(**_queue_request(name, props))["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return LocalQueue(logical_id=logical_id, name=name, url=url, arn=arn)


def _create_table(dynamodb: Any, logical_id: str, props: Mapping[str, Any], stack_name: str) -> LocalTable:
    name = str(props.get("TableName") or f"{stack_name}-{logical_id}")
    request = _table_request(name, props)
    try:
        description = dynamodb.create_table(**request.create)["TableDescription"]
    except dynamodb.exceptions.ResourceInUseException:
        description = dynamodb.describe_table(TableName=name)["Table"]
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    if request.ttl is not None:
        status = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"].get(
            "TimeToLiveStatus"
        )
        # DynamoDB refuses to set a TTL state that is already in force (a second run reuses the table).
        if request.ttl["Enabled"] != (status in ("ENABLED", "ENABLING")):
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=request.ttl)
    if request.pitr is not None:
        dynamodb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": request.pitr},
        )
    return LocalTable(logical_id=logical_id, name=name, arn=description["TableArn"])
