"""DynamoDB single-table store (the contract's key layout), over an injected boto3 client.

Every write that two processes can race on is conditional: creating a lead, a call or a session
pointer; moving a lead to its next attempt; taking and giving back a pacing slot; marking an
event seen. botocore errors leave as `StoreError` (with `retryable`) raised `from` the original;
a failed condition is a normal answer (`False`) wherever the contract asks for a bool.

Items (PK / SK):
  LEAD#<id> / PROFILE          lead, status, attempts, outcome, score, reason, next_attempt_at;
                               GSI1PK=CAMPAIGN#<campaign>, GSI1SK=<outcome or status>#<lead_id>
  LEAD#<id> / CALL#<nnn>       one dial attempt (CallRecord); its transcript a list of maps, bounded
  LEAD#<id> / ANSWER#<qid>     value (+ value_type, so 3.0 stays a float), quote, at
  SESSION#<HD_…> / SESSION     lead_id, attempt
  DNC#<e164> / DNC             reason, added_at
  PACING#<n> / SLOT            holder, expires_at (a lease: a crashed holder's slot frees itself)
  PACINGHOLDER#<holder> / HOLDER  which slot a holder has, so release_slot needs only the holder
  EVENT#<id> / EVENT           ttl (dedupe window)
"""

from __future__ import annotations

import contextlib
import logging
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from functools import cache
from typing import Annotated, Any

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, TypeAdapter, ValidationError

from leadqual.errors import LeadqualError
from leadqual.models import (
    Answer,
    AnswerValue,
    CallRecord,
    CallState,
    Lead,
    LeadStatus,
    Outcome,
    Score,
)

_RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "TransactionConflictException",
        "LimitExceededException",
    }
)
_FINAL_STATES = [s.value for s in CallState if s.is_final]
_CALL_FIELDS = frozenset(CallRecord.model_fields) - {"lead_id", "attempt"}
log = logging.getLogger(__name__)
_SERIALIZER = TypeSerializer()
_DESERIALIZER = TypeDeserializer()


class StoreError(LeadqualError):
    """A DynamoDB operation that failed; `retryable` for throttling and service errors."""

    def __init__(self, reason: str, *, retryable: bool = False, code: str | None = None) -> None:
        super().__init__(reason, retryable=retryable)
        self.code = code


class NotFound(StoreError):
    """The item an update needs (a lead, a call) does not exist."""


class ConditionFailed(StoreError):
    """A conditional write lost; `item` is the item as it stood (None if there was none)."""

    def __init__(self, reason: str, item: dict[str, Any] | None) -> None:
        super().__init__(reason, retryable=False, code="ConditionalCheckFailedException")
        self.item = item


class LeadProfile(BaseModel):
    """`LEAD#<id>` / `PROFILE`: the lead and where it stands."""

    lead: Lead
    status: LeadStatus
    attempts: int = 0
    outcome: Outcome | None = None
    score: Score | None = None
    reason: str | None = None
    next_attempt_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


# -- value conversion ------------------------------------------------------------------------------


def _to_dynamo(value: Any) -> Any:
    """Python → what TypeSerializer accepts: floats become Decimals, times ISO strings."""
    if isinstance(value, bool | str | int | Decimal) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(repr(value))  # repr is the shortest exact round-trip form
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return _to_dynamo(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    raise TypeError(f"cannot store {type(value).__name__}")


def _from_dynamo(value: Any) -> Any:
    """Decimals back to int when integral, else float; containers recursively."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_from_dynamo(v) for v in value]
    return value


def _av(value: Any) -> dict[str, Any]:
    serialized: dict[str, Any] = _SERIALIZER.serialize(_to_dynamo(value))
    return serialized


def _item(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: _av(v) for k, v in values.items() if v is not None}


def _plain(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _from_dynamo(_DESERIALIZER.deserialize(v)) for k, v in item.items()}


def _value_type(value: AnswerValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "str"


def _typed_value(raw: Any, kind: str | None) -> AnswerValue:
    if kind == "null" or raw is None:
        return None
    if kind == "bool":
        return bool(raw)
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind == "str":
        return str(raw)
    return raw if isinstance(raw, bool | int | float | str) else str(raw)


@cache
def _call_field_adapter(name: str) -> TypeAdapter[Any]:
    field = CallRecord.model_fields[name]
    annotation: Any = field.annotation
    if field.metadata:
        # Keep the field's validators (the transcript's bounds), which `annotation` alone drops.
        annotation = Annotated[annotation, *field.metadata]
    return TypeAdapter(annotation)


def _lead_key(lead_id: str) -> dict[str, Any]:
    return {"PK": {"S": f"LEAD#{lead_id}"}, "SK": {"S": "PROFILE"}}


def _call_sk(attempt: int) -> str:
    return f"CALL#{attempt:03d}"


def _slot_key(n: int) -> dict[str, Any]:
    return {"PK": {"S": f"PACING#{n}"}, "SK": {"S": "SLOT"}}


def _holder_key(holder: str) -> dict[str, Any]:
    return {"PK": {"S": f"PACINGHOLDER#{holder}"}, "SK": {"S": "HOLDER"}}


class _Update:
    """Builds an UpdateExpression with placeholders for every name (DynamoDB reserves `status`, `ttl`…)."""

    def __init__(self) -> None:
        self.sets: list[str] = []
        self.removes: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, dict[str, Any]] = {}

    def name(self, attr: str) -> str:
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = attr
        return placeholder

    def value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = _av(value)
        return placeholder

    def set(self, attr: str, value: Any) -> None:
        if value is None:
            self.removes.append(self.name(attr))
        else:
            self.sets.append(f"{self.name(attr)} = {self.value(value)}")

    def set_if_absent(self, attr: str, value: Any) -> None:
        ref = self.name(attr)
        self.sets.append(f"{ref} = if_not_exists({ref}, {self.value(value)})")

    def expression(self) -> str:
        parts = []
        if self.sets:
            parts.append("SET " + ", ".join(self.sets))
        if self.removes:
            parts.append("REMOVE " + ", ".join(self.removes))
        return " ".join(parts)


class DynamoStore:
    """All of leadqual's state in one DynamoDB table. `client` is a boto3 DynamoDB client."""

    def __init__(
        self,
        table_name: str,
        client: Any = None,
        *,
        clock: Callable[[], float] = time.time,
        page_size: int | None = None,
    ) -> None:
        self.table_name = table_name
        self._client = client
        self._clock = clock
        self._page_size = page_size  # items per query page; None lets DynamoDB cut at 1 MB

    @property
    def client(self) -> Any:
        # Built on first use, so constructing a store never touches the environment or network.
        if self._client is None:
            self._client = boto3.client("dynamodb")
        return self._client

    def _now_iso(self) -> str:
        return datetime.fromtimestamp(self._clock(), tz=UTC).isoformat()

    # -- low level ---------------------------------------------------------------------------------
    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            result: dict[str, Any] = getattr(self.client, operation)(TableName=self.table_name, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            if code == "ConditionalCheckFailedException":
                old = exc.response.get("Item")
                raise ConditionFailed(f"{operation}: condition failed", _plain(old) if old else None) from exc
            if code == "ResourceNotFoundException":
                raise StoreError(f"table {self.table_name} not found", code=code) from exc
            raise StoreError(
                f"dynamodb {operation} failed: {code or 'error'}",
                retryable=code in _RETRYABLE_CODES,
                code=code,
            ) from exc
        except BotoCoreError as exc:
            # No answer from DynamoDB (endpoint, connection, read timeout): worth another try.
            raise StoreError(f"dynamodb {operation} failed: {type(exc).__name__}", retryable=True) from exc
        return result

    def _get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        item = self._call("get_item", Key=key, ConsistentRead=True).get("Item")
        return _plain(item) if item else None

    def _query(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        if self._page_size:
            kwargs["Limit"] = self._page_size
        while True:
            page = self._call("query", **kwargs)
            for item in page.get("Items", []):
                yield _plain(item)
            if "LastEvaluatedKey" not in page:
                return
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _update(self, key: dict[str, Any], update: _Update, condition: str | None = None) -> None:
        kwargs: dict[str, Any] = {
            "Key": key,
            "UpdateExpression": update.expression(),
            "ExpressionAttributeNames": update.names,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if update.values:
            kwargs["ExpressionAttributeValues"] = update.values
        if condition:
            kwargs["ConditionExpression"] = condition
        self._call("update_item", **kwargs)

    def _update_profile(
        self, lead_id: str, build: Callable[[_Update], str | None], gsi_state: str | None
    ) -> None:
        """Update a PROFILE that must exist. `build` fills the update and returns an extra condition.

        GSI1SK follows `<outcome or status>`: a status change re-keys the index entry only while
        the lead has no outcome, which takes a second conditional try rather than a read first.
        """
        attempts = [True, False] if gsi_state is not None else [False]
        for with_gsi in attempts:
            update = _Update()
            extra = build(update)
            update.set("updated_at", self._now_iso())
            clauses = [f"attribute_exists({update.name('PK')})"]
            if extra:
                clauses.append(f"({extra})")
            if with_gsi:
                update.set("GSI1SK", f"{gsi_state}#{lead_id}")
                clauses.append(f"attribute_not_exists({update.name('outcome')})")
            try:
                self._update(_lead_key(lead_id), update, " AND ".join(clauses))
                return
            except ConditionFailed as exc:
                if exc.item is None:
                    raise NotFound(f"lead {lead_id} not found") from exc
                has_outcome = exc.item.get("outcome") is not None
                if not (with_gsi and has_outcome):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover - every pass of the loop returns or raises

    # -- leads -------------------------------------------------------------------------------------
    def put_lead(self, lead: Lead) -> bool:
        """Create the lead's PROFILE (status queued, 0 attempts); False if it already existed."""
        now = self._now_iso()
        item = _item(
            {
                "PK": f"LEAD#{lead.lead_id}",
                "SK": "PROFILE",
                "entity": "lead",
                "lead_id": lead.lead_id,
                "campaign": lead.campaign,
                "lead": lead,
                "status": LeadStatus.QUEUED,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "GSI1PK": f"CAMPAIGN#{lead.campaign}",
                "GSI1SK": f"{LeadStatus.QUEUED.value}#{lead.lead_id}",
            }
        )
        try:
            self._call("put_item", Item=item, ConditionExpression="attribute_not_exists(PK)")
        except ConditionFailed:
            return False
        return True

    def get_lead(self, lead_id: str) -> LeadProfile | None:
        item = self._get(_lead_key(lead_id))
        return _profile(item) if item else None

    def begin_attempt(self, lead_id: str, attempt: int) -> bool:
        """Claim attempt `attempt` (attempts must be attempt-1): only one dialer wins a redelivery race."""
        if attempt < 1:
            raise ValueError("attempt starts at 1")

        def build(update: _Update) -> str:
            update.set("attempts", attempt)
            update.set("status", LeadStatus.DIALING)
            update.set("next_attempt_at", None)
            return f"{update.name('attempts')} = {update.value(attempt - 1)}"

        try:
            self._update_profile(lead_id, build, LeadStatus.DIALING.value)
        except ConditionFailed:
            return False
        return True

    def set_status(
        self,
        lead_id: str,
        status: LeadStatus,
        *,
        reason: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """Set the status. `reason` is kept when not given; `next_attempt_at` is cleared when not given."""
        status = LeadStatus(status)

        def build(update: _Update) -> None:
            update.set("status", status)
            update.set("next_attempt_at", next_attempt_at)
            if reason is not None:
                update.set("reason", reason)

        self._update_profile(lead_id, build, status.value)

    def set_outcome(
        self, lead_id: str, outcome: Outcome, *, score: Score | None = None, reason: str | None = None
    ) -> None:
        """Record the lead's result; the campaign index re-keys to `<outcome>#<lead>`."""
        outcome = Outcome(outcome)

        def build(update: _Update) -> None:
            update.set("outcome", outcome)
            update.set("GSI1SK", f"{outcome.value}#{lead_id}")
            if score is not None:
                update.set("score", score)
            if reason is not None:
                update.set("reason", reason)

        self._update_profile(lead_id, build, None)

    def leads_by_campaign(self, campaign: str, *, state: str | None = None) -> list[LeadProfile]:
        """Every lead of a campaign via GSI1 (eventually consistent); `state` filters on outcome/status."""
        names = {"#pk": "GSI1PK"}
        values: dict[str, Any] = {":pk": {"S": f"CAMPAIGN#{campaign}"}}
        condition = "#pk = :pk"
        if state is not None:
            names["#sk"] = "GSI1SK"
            values[":sk"] = {"S": f"{state}#"}
            condition += " AND begins_with(#sk, :sk)"
        items = self._query(
            IndexName="GSI1",
            KeyConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        return [_profile(item) for item in items]

    # -- calls -------------------------------------------------------------------------------------
    def put_call(self, record: CallRecord) -> bool:
        """Create `CALL#<attempt>`; False if that attempt already has a record."""
        values = record.model_dump(mode="json", exclude_none=True)
        values.update(PK=f"LEAD#{record.lead_id}", SK=_call_sk(record.attempt), entity="call")
        values.setdefault("created_at", self._now_iso())
        values["updated_at"] = self._now_iso()
        try:
            self._call("put_item", Item=_item(values), ConditionExpression="attribute_not_exists(PK)")
        except ConditionFailed:
            return False
        return True

    def update_call(self, lead_id: str, attempt: int, **fields: Any) -> None:
        """Set fields on `CALL#<attempt>` (None removes one). Raises NotFound for a missing call.

        A late, non-final `state` (an `answered` arriving after `completed`) never overwrites a
        final one; the other fields are still written.
        """
        unknown = set(fields) - _CALL_FIELDS
        if unknown:
            raise ValueError(f"unknown call fields: {', '.join(sorted(unknown))}")
        values: dict[str, Any] = {}
        for name, value in fields.items():
            try:
                values[name] = None if value is None else _call_field_adapter(name).validate_python(value)
            except ValidationError as exc:
                raise ValueError(f"invalid value for call field {name!r}") from exc
        key = {"PK": {"S": f"LEAD#{lead_id}"}, "SK": {"S": _call_sk(attempt)}}
        state = values.get("state")
        guard_state = state is not None and not CallState(state).is_final

        def write(vals: Mapping[str, Any], guard: bool) -> None:
            update = _Update()
            for name, value in vals.items():
                update.set(name, value)
            update.set("updated_at", self._now_iso())
            condition = f"attribute_exists({update.name('PK')})"
            if guard:
                finals = ", ".join(update.value(s) for s in _FINAL_STATES)
                ref = update.name("state")
                condition += f" AND (attribute_not_exists({ref}) OR NOT ({ref} IN ({finals})))"
            self._update(key, update, condition)

        try:
            write(values, guard_state)
        except ConditionFailed as exc:
            if exc.item is None:
                raise NotFound(f"call {lead_id}/{attempt} not found") from exc
            log.info("late call state ignored", extra={"attempt": attempt, "state": str(state)})
            write({k: v for k, v in values.items() if k != "state"}, False)

    def get_call(self, lead_id: str, attempt: int) -> CallRecord | None:
        item = self._get({"PK": {"S": f"LEAD#{lead_id}"}, "SK": {"S": _call_sk(attempt)}})
        return _call_record(item) if item else None

    def list_calls(self, lead_id: str) -> list[CallRecord]:
        items = self._query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
            ExpressionAttributeValues={":pk": {"S": f"LEAD#{lead_id}"}, ":sk": {"S": "CALL#"}},
            ConsistentRead=True,
        )
        return [_call_record(item) for item in items]

    # -- sessions ----------------------------------------------------------------------------------
    def put_session(self, session_id: str, lead_id: str, attempt: int) -> None:
        """Point `SESSION#<HD_…>` at a lead attempt. Idempotent; a different lead for it is an error."""
        item = _item(
            {
                "PK": f"SESSION#{session_id}",
                "SK": "SESSION",
                "entity": "session",
                "lead_id": lead_id,
                "attempt": attempt,
                "created_at": self._now_iso(),
            }
        )
        try:
            self._call(
                "put_item",
                Item=item,
                ConditionExpression="attribute_not_exists(#pk) OR (#lead = :l AND #attempt = :a)",
                ExpressionAttributeNames={"#pk": "PK", "#lead": "lead_id", "#attempt": "attempt"},
                ExpressionAttributeValues={":l": _av(lead_id), ":a": _av(attempt)},
            )
        except ConditionFailed as exc:
            raise StoreError(f"session {session_id} already belongs to another lead attempt") from exc

    def get_session(self, session_id: str) -> tuple[str, int] | None:
        item = self._get({"PK": {"S": f"SESSION#{session_id}"}, "SK": {"S": "SESSION"}})
        return (str(item["lead_id"]), int(item["attempt"])) if item else None

    # -- answers -----------------------------------------------------------------------------------
    def save_answer(self, lead_id: str, answer: Answer) -> None:
        """Write one answer as soon as it is given; a later answer to the same question replaces it."""
        at = answer.at or datetime.fromtimestamp(self._clock(), tz=UTC)
        item = _item(
            {
                "PK": f"LEAD#{lead_id}",
                "SK": f"ANSWER#{answer.question_id}",
                "entity": "answer",
                "question_id": answer.question_id,
                "value_type": _value_type(answer.value),
                "quote": answer.quote,
                "at": at,
            }
        )
        item["value"] = _av(answer.value)  # kept even when None: a NULL answer is an answer
        self._call("put_item", Item=item)

    def get_answers(self, lead_id: str) -> list[Answer]:
        items = self._query(
            KeyConditionExpression="PK = :pk AND begins_with(SK, :sk)",
            ExpressionAttributeValues={":pk": {"S": f"LEAD#{lead_id}"}, ":sk": {"S": "ANSWER#"}},
            ConsistentRead=True,
        )
        return [
            Answer(
                question_id=item["question_id"],
                value=_typed_value(item.get("value"), item.get("value_type")),
                quote=item.get("quote", ""),
                at=item.get("at"),
            )
            for item in items
        ]

    # -- do not call -------------------------------------------------------------------------------
    def add_dnc(self, e164: str, reason: str) -> None:
        update = _Update()
        update.set("reason", reason)
        update.set("e164", e164)
        update.set("entity", "dnc")
        update.set_if_absent("added_at", self._now_iso())
        self._update({"PK": {"S": f"DNC#{e164}"}, "SK": {"S": "DNC"}}, update)

    def is_dnc(self, e164: str) -> bool:
        return self._get({"PK": {"S": f"DNC#{e164}"}, "SK": {"S": "DNC"}}) is not None

    # -- pacing ------------------------------------------------------------------------------------
    def acquire_slot(self, limit: int, holder: str, lease_s: int, now: float | None = None) -> bool:
        """Take one of `limit` concurrent-call slots for `lease_s` seconds; False when all are held.

        Re-entrant: a holder that already has a live slot (an SQS redelivery of the same lead)
        renews it instead of taking a second one.
        """
        if limit < 1:
            return False
        now = self._clock() if now is None else now
        expires_at = now + lease_s
        pointer = self._get(_holder_key(holder))
        held = int(pointer["slot"]) if pointer is not None else None
        if held is not None and held < limit and self._claim(held, holder, now, expires_at, renew=True):
            return True
        free = self._free_slots(limit, now)
        start = zlib.crc32(holder.encode()) % limit  # spread racing holders over different slots
        for n in sorted(free, key=lambda n: (n - start) % limit):
            if self._claim(n, holder, now, expires_at, renew=False):
                return True
        return False

    def _claim(self, n: int, holder: str, now: float, expires_at: float, *, renew: bool) -> bool:
        condition = "attribute_not_exists(#pk) OR #exp < :now"
        names = {"#pk": "PK", "#exp": "expires_at"}
        values: dict[str, Any] = {":now": _av(now)}
        if renew:
            condition += " OR #holder = :holder"
            names["#holder"] = "holder"
            values[":holder"] = _av(holder)
        item = _item(
            {
                "PK": f"PACING#{n}",
                "SK": "SLOT",
                "entity": "slot",
                "holder": holder,
                "acquired_at": now,
                "expires_at": expires_at,
                "ttl": int(expires_at) + 86_400,
            }
        )
        try:
            self._call(
                "put_item",
                Item=item,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ConditionFailed:
            return False
        pointer = _item(
            {
                "PK": f"PACINGHOLDER#{holder}",
                "SK": "HOLDER",
                "entity": "slot_holder",
                "slot": n,
                "expires_at": expires_at,
                "ttl": int(expires_at) + 86_400,
            }
        )
        self._call("put_item", Item=pointer)
        return True

    def _free_slots(self, limit: int, now: float) -> list[int]:
        """Slots that look free or expired; a consistent batch read saves doomed conditional writes."""
        held: set[int] = set()
        for start in range(0, limit, 100):
            keys: list[dict[str, Any]] = [_slot_key(n) for n in range(start, min(limit, start + 100))]
            request: dict[str, Any] = {self.table_name: {"Keys": keys, "ConsistentRead": True}}
            for _ in range(5):
                try:
                    response = self.client.batch_get_item(RequestItems=request)
                except ClientError as exc:
                    code = exc.response.get("Error", {}).get("Code", "")
                    raise StoreError(
                        f"dynamodb batch_get_item failed: {code}",
                        retryable=code in _RETRYABLE_CODES,
                        code=code,
                    ) from exc
                except BotoCoreError as exc:
                    raise StoreError("dynamodb batch_get_item failed", retryable=True) from exc
                for raw in response.get("Responses", {}).get(self.table_name, []):
                    item = _plain(raw)
                    if float(item.get("expires_at", 0)) >= now:
                        held.add(int(str(item["PK"]).removeprefix("PACING#")))
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
            # Keys still unprocessed count as free: the conditional write is the real check.
        return [n for n in range(limit) if n not in held]

    def release_slot(self, holder: str) -> None:
        """Give back the holder's slot. Safe to call twice, or after the lease expired and moved on."""
        pointer = self._get(_holder_key(holder))
        if pointer is None:
            return
        # If the lease expired and someone else holds the slot now, it is theirs to release.
        with contextlib.suppress(ConditionFailed):
            self._call(
                "delete_item",
                Key=_slot_key(int(pointer["slot"])),
                ConditionExpression="#holder = :holder",
                ExpressionAttributeNames={"#holder": "holder"},
                ExpressionAttributeValues={":holder": _av(holder)},
            )
        self._call("delete_item", Key=_holder_key(holder))

    # -- event dedupe ------------------------------------------------------------------------------
    def mark_event(self, event_id: str, ttl_s: int = 7 * 86400) -> bool:
        """True the first time an event id is seen within `ttl_s`, False for a duplicate."""
        now = self._clock()
        item = _item(
            {
                "PK": f"EVENT#{event_id}",
                "SK": "EVENT",
                "entity": "event",
                "seen_at": self._now_iso(),
                "ttl": int(now + ttl_s),
            }
        )
        try:
            # TTL deletion lags by up to days, so an expired marker counts as absent.
            self._call(
                "put_item",
                Item=item,
                ConditionExpression="attribute_not_exists(#pk) OR #ttl < :now",
                ExpressionAttributeNames={"#pk": "PK", "#ttl": "ttl"},
                ExpressionAttributeValues={":now": _av(int(now))},
            )
        except ConditionFailed:
            return False
        return True

    def forget_event(self, event_id: str) -> None:
        """Undo `mark_event` when handling the event failed, so the sender's redelivery is handled."""
        self._call("delete_item", Key={"PK": {"S": f"EVENT#{event_id}"}, "SK": {"S": "EVENT"}})


def _profile(item: Mapping[str, Any]) -> LeadProfile:
    return LeadProfile(
        lead=Lead.model_validate(item["lead"]),
        status=item["status"],
        attempts=int(item.get("attempts", 0)),
        outcome=item.get("outcome"),
        score=item.get("score"),
        reason=item.get("reason"),
        next_attempt_at=item.get("next_attempt_at"),
        created_at=item.get("created_at"),
        updated_at=item.get("updated_at"),
    )


def _call_record(item: Mapping[str, Any]) -> CallRecord:
    fields = {k: v for k, v in item.items() if k in CallRecord.model_fields}
    return CallRecord.model_validate(fields)
