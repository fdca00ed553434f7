"""The events function's work: call events and stream statuses → call records, billing, retries,
slot release, the lead's final outcome (DESIGN.md §1 step 6).

Delivery is at least once and events can arrive after the call record is final, so:
- every event id is marked seen with a conditional write first (`mark_event`); a duplicate is
  acknowledged and ignored. If handling fails, the mark is removed again so the platform's
  redelivery is handled rather than swallowed;
- the end of a call is *accounted* once per attempt, whichever event says it first (the
  documented envelope, the raw switch body and a voice `Completed` describe one end with
  different ids): a second marker, `final#<client_request_id>`, guards the one-off steps;
- every store write sets absolute values, so repeating one changes nothing.

At the end of a call: fetch `GET /v1/calls/{id}` (retried while the record is not final yet),
store state, duration, billed seconds (the connected leg's duration) and cost; give back the
pacing slot; then decide the lead's next step from the campaign:
- no answer / busy / failed → a retry (attempt + 1, `not_before` = now + the policy's delay,
  queued through the same deferral mechanism as the dialer's) while attempts remain, else the
  final outcome `no_answer` / `busy` / `failed`;
- completed → the outcome the bridge wrote on the call record (hot_transferred, cold_closed,
  voicemail, opted_out; callback_requested schedules a retry per policy); none at all means the
  call ended before qualification (a hang-up mid-call) → `cold_closed` with that reason.

A `dial_after_stream` transfer counts only when the carrier confirms the rep leg connected. The
bridge records `hot_transferred` when it closes the socket, but whether the `<Dial>` then runs is
the platform's business (SAUTIKIT.md §4, §7.3: on some, nothing runs after `<Stream
connect="true">` and the lead sits in silence). So when the bridge's outcome is `hot_transferred`
and the campaign's strategy is `dial_after_stream`, the carrier's `DialCompleted` (recorded on the
call record as `transfer_status`/`transfer_seconds` by the voice webhook, or by this function when
the switch forwards it to the events URL) is awaited for a bounded grace (`transfer_grace_s`):
- an answered/completed dial status whose leg was not reported 0 s long (webhooks.dial_connected)
  → `hot_transferred` stands;
- any other status, or no DialCompleted within the grace → the lead becomes `callback_requested`
  (score kept; reason `transfer not confirmed: the rep leg never connected (…)`, naming the dial
  status, or saying no DialCompleted came and to use `supervise_barge` on such a platform), the
  call record's outcome too (its `transferred_to` keeps the rep that was attempted), a callback is
  scheduled per `retries.callback_requested`, and `TransfersUnconfirmed` is counted (the bridge
  counted `Transfers` at the hand-off).
`supervise_barge` transfers are not checked here.

Metrics: BilledSeconds, CostKES, WalletBalanceMinor (after a completed call), LeadsCold for the
fallback outcome (the bridge counts the outcomes it decides), RetriesScheduled, TransfersUnconfirmed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from leadqual.campaign import Campaign, RetryRule, TransferStrategy
from leadqual.carrier import CallDetails, WalletBalance
from leadqual.errors import LeadqualError, SautikitError
from leadqual.models import CallRecord, CallState, LeadStatus, Outcome, client_request_id
from leadqual.observability import Metric, MetricsSink, logger
from leadqual.queue import LeadMessage
from leadqual.webhooks import CallEvent, EventKind, dial_connected, dial_result

ENDED_BEFORE_QUALIFICATION = "ended before qualification"
CALLBACK_ASKED = "the lead asked to be called back"  # when the bridge gave no reason of its own
TRANSFER_NOT_CONFIRMED = "transfer not confirmed: the rep leg never connected"
NO_DIAL_COMPLETED = (
    "no DialCompleted from the carrier: verbs after <Stream> did not run; "
    "use transfer.strategy supervise_barge on this platform"
)
_RETRY_RULES = {
    CallState.NO_ANSWER: "no_answer",
    CallState.BUSY: "busy",
    CallState.FAILED: "failed",
    CallState.CANCELED: "failed",
}
_FINAL_OUTCOMES = {
    CallState.NO_ANSWER: Outcome.NO_ANSWER,
    CallState.BUSY: Outcome.BUSY,
    CallState.FAILED: Outcome.FAILED,
    CallState.CANCELED: Outcome.FAILED,
}


class EventResult(StrEnum):
    DUPLICATE = "duplicate"
    IGNORED = "ignored"  # not a call of ours
    RECORDED = "recorded"  # progress noted
    FINALIZED = "finalized"  # the end of the call accounted for
    ALREADY_FINAL = "already_final"  # another event already accounted for this end


class CallsApi(Protocol):
    def get_call(self, call_or_session_id: str) -> CallDetails: ...
    def wallet_balance(self) -> WalletBalance: ...


class Requeue(Protocol):
    def defer(self, message: LeadMessage, now: datetime) -> int: ...


class Campaigns(Protocol):
    def get(self, campaign_id: str) -> Campaign: ...


class EventStore(Protocol):
    def mark_event(self, event_id: str, ttl_s: int = ...) -> bool: ...
    def forget_event(self, event_id: str) -> None: ...
    def get_session(self, session_id: str) -> tuple[str, int] | None: ...
    def get_lead(self, lead_id: str) -> Any: ...
    def get_call(self, lead_id: str, attempt: int) -> CallRecord | None: ...
    def put_call(self, record: CallRecord) -> bool: ...
    def update_call(self, lead_id: str, attempt: int, **fields: Any) -> Any: ...
    def set_status(self, lead_id: str, status: LeadStatus, **kwargs: Any) -> None: ...
    def set_outcome(self, lead_id: str, outcome: Outcome, **kwargs: Any) -> None: ...
    def release_slot(self, holder: str) -> Any: ...


@dataclass(frozen=True)
class AccountingConfig:
    cdr_attempts: int = 6  # GET /v1/calls/{id} until it says final: ~4 s in all, inside Sautikit's 10 s
    cdr_delay_s: float = 0.25
    cdr_max_delay_s: float = 1.0
    outcome_grace_s: float = 2.0  # the bridge writes its outcome as its socket closes; give it a moment
    # DialCompleted races the end-of-call event; bounded so the handler stays inside Sautikit's 10 s.
    transfer_grace_s: float = 3.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Accountant:
    def __init__(
        self,
        *,
        store: EventStore,
        calls: CallsApi,
        queue: Requeue,
        campaigns: Campaigns,
        metrics: MetricsSink,
        config: AccountingConfig | None = None,
        clock: Callable[[], datetime] = _utcnow,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.calls = calls
        self.queue = queue
        self.campaigns = campaigns
        self.metrics = metrics
        self.config = config or AccountingConfig()
        self.clock = clock
        self.sleep = sleep
        self.monotonic = monotonic

    def handle(self, event: CallEvent) -> EventResult:
        """Account for one verified event. Raises (after un-marking it) when it should be redelivered."""
        if not self.store.mark_event(event.event_id):
            logger.info(
                "duplicate event ignored", extra={"event_id": event.event_id, "kind": event.kind.value}
            )
            return EventResult.DUPLICATE
        try:
            return self._handle(event)
        except Exception:
            self.store.forget_event(event.event_id)
            raise

    # -- dispatch ------------------------------------------------------------------------------
    def _handle(self, event: CallEvent) -> EventResult:
        found = event.lead_attempt
        if found is None and event.session_id:
            found = self.store.get_session(event.session_id)
        log: dict[str, Any] = {
            "event_id": event.event_id,
            "kind": event.kind.value,
            "raw_kind": event.raw_kind,
            "session_id": event.session_id,
        }
        if found is None:
            logger.warning("event for an unknown call ignored", extra=log)
            return EventResult.IGNORED
        lead_id, attempt = found
        log.update(lead_id=lead_id, attempt=attempt)
        record = self.store.get_call(lead_id, attempt)
        if record is None:
            if self.store.get_lead(lead_id) is None:
                logger.warning("event for an unknown lead ignored", extra=log)
                return EventResult.IGNORED
            record = CallRecord(
                lead_id=lead_id,
                attempt=attempt,
                client_request_id=client_request_id(lead_id, attempt),
                session_id=event.session_id,
                call_id=event.call_id,
            )
            self.store.put_call(record)
        if not event.is_final:
            self._progress(event, record)
            logger.info("call event recorded", extra=log)
            return EventResult.RECORDED
        return self._finish(event, record, log)

    def _progress(self, event: CallEvent, record: CallRecord) -> None:
        fields: dict[str, Any] = {}
        if event.call_id and not record.call_id:
            fields["call_id"] = event.call_id
        if event.session_id and not record.session_id:
            fields["session_id"] = event.session_id
        if event.kind is EventKind.STREAM_STARTED:
            fields["state"] = CallState.STREAMING
        elif event.kind is EventKind.CALL_ANSWERED and record.state is CallState.RINGING:
            fields["state"] = CallState.ANSWERED
            fields["answered_at"] = event.occurred_at or self.clock()
        elif event.kind is EventKind.STREAM_ERROR:
            logger.warning(
                "stream error reported",
                extra={"lead_id": record.lead_id, "attempt": record.attempt, "reason": event.failure_reason},
            )
        elif event.kind is EventKind.DIAL_COMPLETED:
            # The switch body forwarded to the events URL: the same result the voice webhook records.
            dial = dial_result(event.data)
            status = dial.status or "unknown"
            if dial.connected or not dial_connected(record.transfer_status, record.transfer_seconds):
                fields["transfer_status"] = status
                fields["transfer_seconds"] = dial.duration_s
        if fields:
            self.store.update_call(record.lead_id, record.attempt, **fields)  # never regresses a final state

    # -- the end of a call ---------------------------------------------------------------------
    def _finish(self, event: CallEvent, record: CallRecord, log: dict[str, Any]) -> EventResult:
        if record.state.is_final and record.billed_seconds is not None:
            logger.info("late event for a call already accounted for", extra=log)
            return EventResult.ALREADY_FINAL
        handle = event.call_id or record.call_id or event.session_id or record.session_id
        details = self._cdr(handle) if handle else None
        state = details.state if details is not None and details.state and details.state.is_final else None
        state = state or event.final_state or CallState.FAILED
        duration = details.duration_seconds if details is not None else None
        if duration is None:
            duration = event.duration_seconds
        answered = state is CallState.COMPLETED and bool(duration)
        fields: dict[str, Any] = {
            "state": state,
            "duration_seconds": duration or 0,
            "billed_seconds": (duration or 0) if answered else 0,
            "ended_at": (details.ended_at if details is not None else None)
            or event.occurred_at
            or self.clock(),
        }
        if details is not None:
            fields["cost_minor"] = (
                details.cost_minor if details.cost_minor is not None else (None if answered else 0)
            )
            fields["cost_currency"] = details.cost_currency
            if details.answered_at is not None and record.answered_at is None:
                fields["answered_at"] = details.answered_at
            if details.id and not record.call_id:
                fields["call_id"] = details.id
        elif not answered:
            fields["cost_minor"] = 0
        self.store.update_call(record.lead_id, record.attempt, **fields)

        crid = client_request_id(record.lead_id, record.attempt)
        final_marker = f"final#{crid}"
        if not self.store.mark_event(final_marker):
            logger.info("end of call already accounted for", extra=log)
            return EventResult.ALREADY_FINAL
        try:
            self._account(record, state, fields, log)
        except Exception:
            self.store.forget_event(final_marker)
            raise
        return EventResult.FINALIZED

    def _account(
        self, record: CallRecord, state: CallState, fields: dict[str, Any], log: dict[str, Any]
    ) -> None:
        lead_id, attempt = record.lead_id, record.attempt
        self.store.release_slot(client_request_id(lead_id, attempt))
        billed = int(fields.get("billed_seconds") or 0)
        cost = fields.get("cost_minor")
        self.metrics.add("BilledSeconds", billed, "Seconds")
        if cost is not None:
            self.metrics.add("CostKES", cost / 100, "None")
        profile = self.store.get_lead(lead_id)
        if profile is None:
            return
        if profile.attempts > attempt:
            logger.info("end of an earlier attempt: no outcome change", extra=log)
            return
        campaign = self.campaigns.get(profile.lead.campaign)
        now = self.clock()
        if state is CallState.COMPLETED:
            self._report_wallet()
            decided = self._bridge_decision(lead_id, attempt, wait=billed > 0)
            if decided is None:
                self.store.set_outcome(lead_id, Outcome.COLD_CLOSED, reason=ENDED_BEFORE_QUALIFICATION)
                self.store.set_status(lead_id, LeadStatus.DONE, reason=ENDED_BEFORE_QUALIFICATION)
                self.metrics.add("LeadsCold")
                logger.info("call ended before qualification", extra=log)
                return
            outcome = decided.outcome
            assert outcome is not None  # _bridge_decision returns only decided records
            if (
                outcome is Outcome.HOT_TRANSFERRED
                and campaign.transfer.strategy is TransferStrategy.DIAL_AFTER_STREAM
                and (why := self._unconfirmed_transfer(lead_id, attempt)) is not None
            ):
                self._transfer_not_confirmed(profile, campaign, attempt, why, now, log)
                return
            if outcome is Outcome.CALLBACK_REQUESTED:
                # A transfer that failed says why; that must outlive the retry's scheduling.
                said = decided.outcome_reason
                reason = said if said and said != Outcome.CALLBACK_REQUESTED.value else CALLBACK_ASKED
                if self._retry(profile, campaign, attempt, campaign.retries.callback_requested, reason, now):
                    return
            self.store.set_status(lead_id, LeadStatus.DONE)
            logger.info("call completed", extra={**log, "outcome": outcome.value, "billed_seconds": billed})
            return
        name = _RETRY_RULES.get(state, "failed")
        rule = getattr(campaign.retries, name)
        reason = f"call ended {state.value.replace('_', ' ')}"
        if self._retry(profile, campaign, attempt, rule, reason, now):
            return
        final = _FINAL_OUTCOMES.get(state, Outcome.FAILED)
        self.store.set_outcome(lead_id, final, reason=reason)
        self.store.set_status(lead_id, LeadStatus.DONE, reason=reason)
        logger.info("lead done without a conversation", extra={**log, "outcome": final.value})

    def _transfer_not_confirmed(
        self,
        profile: Any,
        campaign: Campaign,
        attempt: int,
        reason: str,
        now: datetime,
        log: dict[str, Any],
    ) -> None:
        """The bridge handed over but the rep leg never connected: a callback, not a transfer."""
        lead_id = profile.lead.lead_id
        self.metrics.add(Metric.TRANSFERS_UNCONFIRMED.value)
        self.store.set_outcome(lead_id, Outcome.CALLBACK_REQUESTED, reason=reason)  # the score stays
        logger.warning("transfer not confirmed: calling the lead back", extra={**log, "reason": reason})
        if not self._retry(profile, campaign, attempt, campaign.retries.callback_requested, reason, now):
            self.store.set_status(lead_id, LeadStatus.DONE, reason=reason)
        # Last: until this is written, a redelivered event decides again from the bridge's word.
        self.store.update_call(lead_id, attempt, outcome=Outcome.CALLBACK_REQUESTED, outcome_reason=reason)

    def _retry(
        self,
        profile: Any,
        campaign: Campaign,
        attempt: int,
        rule: RetryRule | None,
        reason: str,
        now: datetime,
    ) -> bool:
        """Queue the next attempt if the policy has one and attempts remain."""
        if rule is None or attempt >= campaign.retries.max_attempts:
            return False
        due = now + timedelta(minutes=rule.after_minutes)
        message = LeadMessage(lead=profile.lead, attempt=attempt + 1, not_before=due, reason=reason)
        self.queue.defer(message, now)
        self.store.set_status(
            profile.lead.lead_id, LeadStatus.RETRY_SCHEDULED, reason=reason, next_attempt_at=due
        )
        self.metrics.add("RetriesScheduled")
        logger.info(
            "retry scheduled",
            extra={
                "lead_id": profile.lead.lead_id,
                "attempt": attempt + 1,
                "reason": reason,
                "not_before": due.isoformat(),
            },
        )
        return True

    # -- carrier reads -------------------------------------------------------------------------
    def _cdr(self, handle: str) -> CallDetails | None:
        """The call record, retried until it says final. None when the carrier does not know the
        call; the last (non-final) record when it never turns final in time; raises (retryable)
        when the API stays unreachable, so the platform redelivers the event."""
        cfg = self.config
        details: CallDetails | None = None
        for i in range(cfg.cdr_attempts):
            try:
                details = self.calls.get_call(handle)
            except SautikitError as exc:
                if not exc.retryable:
                    logger.warning("call record unavailable", extra={"status": exc.status, "code": exc.code})
                    return details
                if i == cfg.cdr_attempts - 1:
                    raise
            else:
                if details.state is not None and details.state.is_final:
                    return details
            if i < cfg.cdr_attempts - 1:
                self.sleep(min(cfg.cdr_max_delay_s, cfg.cdr_delay_s * 2**i))
        return details

    def _bridge_decision(self, lead_id: str, attempt: int, *, wait: bool) -> CallRecord | None:
        """The call record once the bridge has written its outcome; None if it never does in time."""
        deadline = self.monotonic() + (self.config.outcome_grace_s if wait else 0)
        while True:
            record = self.store.get_call(lead_id, attempt)
            if record is not None and record.outcome is not None:
                return record
            if self.monotonic() >= deadline:
                return None
            self.sleep(0.2)

    def _unconfirmed_transfer(self, lead_id: str, attempt: int) -> str | None:
        """None when the carrier confirms the rep leg of the `<Dial>` connected; else why not. Waits
        up to `transfer_grace_s` for the DialCompleted to be recorded."""
        deadline = self.monotonic() + self.config.transfer_grace_s
        while True:
            record = self.store.get_call(lead_id, attempt)
            if record is not None and record.transfer_status is not None:
                if dial_connected(record.transfer_status, record.transfer_seconds):
                    return None
                return f"{TRANSFER_NOT_CONFIRMED} (dialStatus={record.transfer_status})"
            if self.monotonic() >= deadline:
                return f"{TRANSFER_NOT_CONFIRMED} ({NO_DIAL_COMPLETED})"
            self.sleep(0.2)

    def _report_wallet(self) -> None:
        try:
            balance = self.calls.wallet_balance()
        except LeadqualError:
            logger.warning("wallet balance unavailable")
            return
        self.metrics.add("WalletBalanceMinor", balance.balance_minor, "None")
