"""The dialer: one queued lead → compliance → pacing → one idempotent dial (DESIGN.md §1 step 2).

Per message (`Dialer.handle`):
1. Parse: a bare lead or an envelope (`leadqual.queue`). Unusable bodies are permanent failures.
2. Create the lead's PROFILE if it is new; drop stale or duplicate deliveries (this attempt is
   already dialled, or a later one exists).
3. Not yet due (`not_before` in the future)? Defer again (see below).
4. Compliance (`leadqual.compliance.evaluate`): opt-in, do-not-call, a valid number, the attempt
   cap, the calling window in the lead's local time. Rejected → recorded on the lead, done.
   Outside the window → deferred to the window's next opening.
5. Pacing: take one of MAX_CONCURRENT_CALLS leased slots (shared by every dialer instance through
   DynamoDB; the events function gives it back at the end of the call, and a lost end only
   delays its return until the lease expires). None free → deferred 30–60 s (jittered, so deferred
   leads do not come back in lockstep).
6. Claim the attempt (`begin_attempt`, conditional), write the call record (`CALL#n`, ringing),
   then dial with `client_request_id` = `Idempotency-Key` = `lq-<lead>-<attempt>` through a
   Powertools idempotent function keyed on that id.
7. Record the session (call record + `SESSION#` pointer), count CallsPlaced.

Deferral never drops and never dials early: the message is re-sent with
`DelaySeconds = min(900, seconds until not_before)` before the original is acknowledged; SQS caps
delays at 15 minutes, so longer waits take several hops, and every arrival re-checks `not_before`
and the calling window against the clock. The lead's PROFILE says `deferred` with the reason and
`next_attempt_at`. Retries the events function schedules (no answer, busy) use the same envelope.

Exactly one dial per attempt, whatever is redelivered or crashes:
- SQS delivers a message twice → the second sees the attempt claimed and a session on the call
  record, and is acknowledged without dialling.
- Two copies race → `begin_attempt` lets one claim the attempt; if the other gets as far as the
  dial, Powertools idempotency has the key IN_PROGRESS and the copy fails back to SQS.
- The dialer dies after the carrier accepted the call → the redelivery finds the attempt claimed
  but no session ("resumed"), calls the idempotent dial again and gets the stored response; if
  the idempotency record was never written, Sautikit's own `Idempotency-Key` replays the call
  while it lives, and a call record the callbacks marked final stops the dial. Left open: the
  call ended and none of its callbacks or events reached us before the redelivery; then only the
  reused `client_request_id` (which Sautikit says "can collapse" attempts) stands between the
  lead and a second call.
- The call record is created with a conditional put: one `CALL#n` per attempt.

Failures: permanent ones (invalid lead, unknown campaign, 402 wallet, other 4xx) are recorded on
the lead (outcome `failed`/`rejected` with the reason) and counted (`DialFailures`), and the
message is acknowledged. Transient ones (5xx, 429, timeouts, throttling) give the slot back and
raise, so the batch reports the record as failed; SQS redelivers it and, after maxReceiveCount,
the DLQ keeps it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from leadqual.campaign import CampaignCatalog
from leadqual.carrier import CreatedCall, WalletBalance
from leadqual.compliance import Allowed, Deferred, Rejected, evaluate, normalise_phone
from leadqual.errors import InvalidLead, LeadqualError, SautikitError
from leadqual.models import (
    CallRecord,
    CallState,
    Lead,
    LeadStatus,
    Outcome,
    client_request_id,
)
from leadqual.observability import MetricsSink, logger, mask_phone
from leadqual.queue import LeadMessage, parse_message

PACING_DEFER_S = (30.0, 60.0)
IDEMPOTENCY_TTL_S = 2 * 86_400  # well past SQS retention of a redelivery, short enough to stay small
BATCH_WORKERS = 10  # the template's BatchSize: every lead of a batch dials at once


class DialInProgress(LeadqualError):
    """Another delivery of this very attempt is dialling right now; try again later."""

    default_retryable = True


# --- ports ----------------------------------------------------------------------------------------


class DialRequest(BaseModel):
    """What one dial asks of the carrier; `client_request_id` is also the idempotency key."""

    model_config = ConfigDict(frozen=True)

    from_: str
    to: str
    client_request_id: str
    voice_callback_url: str | None = None


class Carrier(Protocol):
    def dial(self, request: DialRequest) -> CreatedCall: ...

    def wallet_balance(self) -> WalletBalance: ...


class Requeue(Protocol):
    def defer(self, message: LeadMessage, now: datetime) -> int: ...


class DialStore(Protocol):
    """The DynamoStore methods the dialer uses."""

    def put_lead(self, lead: Lead) -> bool: ...
    def get_lead(self, lead_id: str) -> Any: ...
    def begin_attempt(self, lead_id: str, attempt: int) -> bool: ...
    def put_call(self, record: CallRecord) -> bool: ...
    def update_call(self, lead_id: str, attempt: int, **fields: Any) -> Any: ...
    def get_call(self, lead_id: str, attempt: int) -> CallRecord | None: ...
    def put_session(self, session_id: str, lead_id: str, attempt: int) -> None: ...
    def mark_event(self, event_id: str, ttl_s: int = ...) -> bool: ...
    def set_status(
        self,
        lead_id: str,
        status: LeadStatus,
        *,
        reason: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None: ...
    def set_outcome(
        self, lead_id: str, outcome: Outcome, *, score: Any = None, reason: str | None = None
    ) -> None: ...
    def is_dnc(self, e164: str) -> bool: ...
    def acquire_slot(self, limit: int, holder: str, lease_s: int, now: float | None = None) -> bool: ...
    def release_slot(self, holder: str) -> Any: ...


class SautikitCarrier:
    """`Carrier` over a SautikitClient: `dial` is a plain create_call (wrap it with `idempotent`)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def dial(self, request: DialRequest) -> CreatedCall:
        created: CreatedCall = self.client.create_call(
            from_=request.from_,
            to=request.to,
            client_request_id=request.client_request_id,
            idempotency_key=request.client_request_id,
            voice_callback_url=request.voice_callback_url,
        )
        return created

    def wallet_balance(self) -> WalletBalance:
        balance: WalletBalance = self.client.wallet_balance()
        return balance


class IdempotentCarrier:
    """Wraps a Carrier's `dial` in a Powertools idempotent function keyed on the client_request_id,
    so a redelivered message replays the stored response instead of dialling again."""

    def __init__(
        self, inner: Carrier, persistence_store: Any, *, expires_after_s: int = IDEMPOTENCY_TTL_S
    ) -> None:
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function

        self.inner = inner
        self.config = IdempotencyConfig(
            event_key_jmespath="client_request_id",
            raise_on_no_idempotency_key=True,
            expires_after_seconds=expires_after_s,
        )

        def place(*, request: dict[str, Any]) -> dict[str, Any]:
            created = inner.dial(DialRequest.model_validate(request))
            return created.model_dump(mode="json")

        # A fixed prefix keeps keys stable across function names and deployments.
        self._place = idempotent_function(
            place,
            data_keyword_argument="request",
            persistence_store=persistence_store,
            config=self.config,
            key_prefix="dial",
        )

    def register_lambda_context(self, context: Any) -> None:
        # Lets Powertools expire an IN_PROGRESS record when the invocation that wrote it times out.
        if context is not None and hasattr(context, "get_remaining_time_in_millis"):
            self.config.register_lambda_context(context)

    def dial(self, request: DialRequest) -> CreatedCall:
        from aws_lambda_powertools.utilities.idempotency.exceptions import (
            IdempotencyAlreadyInProgressError,
            IdempotencyPersistenceLayerError,
        )

        try:
            data = self._place(request=request.model_dump(mode="json"))
        except IdempotencyAlreadyInProgressError as exc:
            raise DialInProgress(f"attempt {request.client_request_id} is being dialled elsewhere") from exc
        except IdempotencyPersistenceLayerError as exc:
            raise LeadqualError("idempotency table unavailable", retryable=True) from exc
        return CreatedCall.model_validate(data)

    def wallet_balance(self) -> WalletBalance:
        return self.inner.wallet_balance()


# --- the dialer -----------------------------------------------------------------------------------


class DialStatus(StrEnum):
    DIALED = "dialed"
    DEFERRED = "deferred"
    REJECTED = "rejected"
    FAILED = "failed"
    DUPLICATE = "duplicate"


@dataclass(frozen=True)
class DialOutcome:
    status: DialStatus
    lead_id: str | None
    attempt: int
    reason: str = ""
    session_id: str | None = None
    not_before: datetime | None = None
    delay_s: int | None = None


@dataclass(frozen=True)
class DialerConfig:
    from_number: str
    voice_webhook_url: str | None = None
    max_concurrent_calls: int = 10
    slot_lease_s: int = 900
    pacing_defer_s: tuple[float, float] = PACING_DEFER_S


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Dialer:
    """One lead message at a time (thread-safe: a batch runs several at once)."""

    def __init__(
        self,
        *,
        store: DialStore,
        carrier: Carrier,
        queue: Requeue,
        campaigns: CampaignCatalog,
        config: DialerConfig,
        metrics: MetricsSink,
        clock: Callable[[], datetime] = _utcnow,
        rand: Callable[[], float] = random.random,
        fault_after_dial: Callable[[CreatedCall], None] | None = None,
    ) -> None:
        self.store = store
        self.carrier = carrier
        self.queue = queue
        self.campaigns = campaigns
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.rand = rand
        self.fault_after_dial = fault_after_dial  # tests: simulate a crash right after the carrier accepted

    # -- entry points --------------------------------------------------------------------------
    def handle_body(self, body: str) -> DialOutcome:
        """A raw SQS body. Unusable bodies are acknowledged (with a metric): retrying cannot fix them."""
        try:
            message = parse_message(body)
        except InvalidLead as exc:
            self.metrics.add("DialFailures")
            logger.warning("unusable lead message dropped", extra={"reason": exc.reason})
            return DialOutcome(DialStatus.FAILED, None, 1, reason=exc.reason)
        return self.handle(message)

    def handle(self, message: LeadMessage) -> DialOutcome:
        now = self.clock()
        lead, attempt = message.lead, message.attempt
        crid = client_request_id(lead.lead_id, attempt)
        log = {"lead_id": lead.lead_id, "attempt": attempt, "campaign": lead.campaign}

        self.store.put_lead(lead)
        profile = self.store.get_lead(lead.lead_id)
        done = profile.attempts if profile is not None else 0
        resumed = False
        if done >= attempt or done < attempt - 1:
            call = self.store.get_call(lead.lead_id, attempt)
            if done != attempt or (call is not None and (call.session_id or call.state.is_final)):
                if done == attempt and call is not None and call.session_id:
                    # A crash after the dial whose call the voice webhook recorded first: count it now.
                    self._placed(lead.lead_id, attempt, call.session_id)
                why = "already dialled" if done == attempt else f"stale: the lead is at attempt {done}"
                logger.info("duplicate or stale lead message acknowledged", extra={**log, "why": why})
                return DialOutcome(DialStatus.DUPLICATE, lead.lead_id, attempt, reason=why)
            resumed = True  # claimed earlier, but the dial never completed: a crash or a transient error

        if message.not_before is not None and message.not_before > now:
            delay = self.queue.defer(message, now)
            logger.info("lead not due yet; deferred again", extra={**log, "delay_s": delay})
            return DialOutcome(
                DialStatus.DEFERRED,
                lead.lead_id,
                attempt,
                "not due",
                not_before=message.not_before,
                delay_s=delay,
            )

        try:
            campaign = self.campaigns.get(lead.campaign)
        except InvalidLead as exc:
            return self._invalid(lead, attempt, exc.reason)
        try:
            on_dnc = self.store.is_dnc(normalise_phone(lead.phone))
        except InvalidLead:
            on_dnc = False  # evaluate() rejects the number with its reason
        decision = evaluate(lead, campaign, now=now, on_dnc=on_dnc, attempts=attempt - 1)
        if isinstance(decision, Rejected):
            if decision.code == "invalid_phone":
                return self._invalid(lead, attempt, decision.reason)
            return self._reject(lead, attempt, decision, profile)
        if isinstance(decision, Deferred):
            return self._defer(message, decision.until, decision.reason, now)
        assert isinstance(decision, Allowed)

        cfg = self.config
        if not self.store.acquire_slot(cfg.max_concurrent_calls, crid, cfg.slot_lease_s, now=now.timestamp()):
            low, high = cfg.pacing_defer_s
            wait = low + (high - low) * self.rand()
            return self._defer(message, now + timedelta(seconds=wait), "no free calling slot", now)

        if not resumed and not self.store.begin_attempt(lead.lead_id, attempt):
            # A copy of this message claimed the attempt a moment ago; it owns the slot (same holder).
            logger.info("attempt claimed by another delivery", extra=log)
            return DialOutcome(DialStatus.DUPLICATE, lead.lead_id, attempt, reason="claimed elsewhere")
        self.store.put_call(
            CallRecord(
                lead_id=lead.lead_id,
                attempt=attempt,
                client_request_id=crid,
                state=CallState.RINGING,
                created_at=now,
            )
        )
        request = DialRequest(
            from_=cfg.from_number,
            to=decision.phone,
            client_request_id=crid,
            voice_callback_url=cfg.voice_webhook_url,
        )
        try:
            placed = self.carrier.dial(request)
        except LeadqualError as exc:
            if exc.retryable:
                if not isinstance(exc, DialInProgress):  # the other delivery holds the slot under our name
                    self.store.release_slot(crid)
                logger.warning("dial failed; SQS will retry", extra={**log, "reason": exc.reason})
                raise
            return self._dial_refused(lead, attempt, crid, exc)
        if self.fault_after_dial is not None:
            self.fault_after_dial(placed)

        # call_id may be missing from the 201 (SAUTIKIT §1) while call.started already recorded it:
        # writing None would erase it.
        ids = {"call_id": placed.call_id} if placed.call_id else {}
        self.store.update_call(lead.lead_id, attempt, session_id=placed.session_id, **ids)
        self._placed(lead.lead_id, attempt, placed.session_id)
        logger.info("call placed", extra={**log, "session_id": placed.session_id, "resumed": resumed})
        return DialOutcome(DialStatus.DIALED, lead.lead_id, attempt, session_id=placed.session_id)

    def _placed(self, lead_id: str, attempt: int, session_id: str) -> None:
        """Point the session at the attempt and count the call, once per attempt whichever delivery
        (or replay after a crash) gets here first."""
        self.store.put_session(session_id, lead_id, attempt)
        if self.store.mark_event(f"placed#{client_request_id(lead_id, attempt)}"):
            self.metrics.add("CallsPlaced")

    # -- the other endings ---------------------------------------------------------------------
    def _defer(self, message: LeadMessage, until: datetime, reason: str, now: datetime) -> DialOutcome:
        due = until.astimezone(UTC)
        deferred = message.model_copy(update={"not_before": due, "reason": reason})
        delay = self.queue.defer(
            deferred, now
        )  # first: the original is only acknowledged once this is queued
        lead = message.lead
        self.store.set_status(lead.lead_id, LeadStatus.DEFERRED, reason=reason, next_attempt_at=due)
        self.metrics.add("LeadsDeferred")
        logger.info(
            "lead deferred",
            extra={
                "lead_id": lead.lead_id,
                "attempt": message.attempt,
                "reason": reason,
                "not_before": due.isoformat(),
            },
        )
        return DialOutcome(
            DialStatus.DEFERRED, lead.lead_id, message.attempt, reason, not_before=due, delay_s=delay
        )

    def _reject(self, lead: Lead, attempt: int, decision: Rejected, profile: Any) -> DialOutcome:
        self.store.set_status(lead.lead_id, LeadStatus.DONE, reason=decision.reason)
        existing = getattr(profile, "outcome", None)
        # An attempt cap or a do-not-call entry reached after real calls keeps the outcome those calls had.
        if existing is None or decision.code not in ("attempt_cap", "do_not_call"):
            self.store.set_outcome(lead.lead_id, Outcome.REJECTED, reason=decision.reason)
        self.metrics.add("LeadsRejected")
        logger.info(
            "lead rejected",
            extra={
                "lead_id": lead.lead_id,
                "attempt": attempt,
                "code": decision.code,
                "reason": decision.reason,
            },
        )
        return DialOutcome(DialStatus.REJECTED, lead.lead_id, attempt, reason=decision.reason)

    def _invalid(self, lead: Lead, attempt: int, reason: str) -> DialOutcome:
        self.store.set_status(lead.lead_id, LeadStatus.DONE, reason=reason)
        self.store.set_outcome(lead.lead_id, Outcome.REJECTED, reason=reason)
        self.metrics.add("DialFailures")
        logger.warning(
            "invalid lead", extra={"lead_id": lead.lead_id, "attempt": attempt, "reason": mask_phone(reason)}
        )
        return DialOutcome(DialStatus.FAILED, lead.lead_id, attempt, reason=reason)

    def _dial_refused(self, lead: Lead, attempt: int, crid: str, exc: LeadqualError) -> DialOutcome:
        self.store.release_slot(crid)
        if isinstance(exc, SautikitError):
            what = "wallet has insufficient funds" if exc.status == 402 else "the carrier refused the call"
            reason = f"{what} ({exc.status} {exc.code or 'error'}: {exc.message})"
        else:
            reason = exc.reason
        self.store.update_call(lead.lead_id, attempt, state=CallState.FAILED)
        self.store.set_status(lead.lead_id, LeadStatus.DONE, reason=reason)
        self.store.set_outcome(lead.lead_id, Outcome.FAILED, reason=reason)
        self.metrics.add("DialFailures")
        if isinstance(exc, SautikitError) and exc.status == 402:
            self._report_wallet()
        logger.error("dial refused", extra={"lead_id": lead.lead_id, "attempt": attempt, "reason": reason})
        return DialOutcome(DialStatus.FAILED, lead.lead_id, attempt, reason=reason)

    def _report_wallet(self) -> None:
        # The low-wallet alarm reads this gauge; a failed read must not turn a recorded 402 into a retry.
        try:
            balance = self.carrier.wallet_balance()
        except Exception:
            logger.warning("wallet balance unavailable after a 402")
            return
        self.metrics.add("WalletBalanceMinor", balance.balance_minor, "None")


# --- the batch ------------------------------------------------------------------------------------


class BatchRunner:
    """Runs a batch's records concurrently on a thread pool through Powertools' AsyncBatchProcessor.

    Why threads: boto3 and the httpx client are synchronous, and asyncio.to_thread's default pool
    has min(32, cpus + 4) workers — 6 on a 2-vCPU Lambda — so a batch of 10 would dial in two
    waves. A pool sized to the batch dials every lead of it at once.
    """

    def __init__(self, dialer: Dialer, workers: int = BATCH_WORKERS) -> None:
        self.dialer = dialer
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dial")

    def process(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        from aws_lambda_powertools.utilities.batch import (
            AsyncBatchProcessor,
            EventType,
            async_process_partial_response,
        )
        from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

        carrier = self.dialer.carrier
        if isinstance(carrier, IdempotentCarrier):
            carrier.register_lambda_context(context)

        async def record_handler(record: SQSRecord) -> str:
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self.pool, self.dialer.handle_body, record.body)
            return outcome.status.value

        # A batch that failed entirely is reported item by item too: transient carrier trouble is SQS's
        # to retry, not a function error (which would also count against the error-rate alarm).
        processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        response = async_process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        return dict(response)
