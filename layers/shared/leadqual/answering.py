"""The voice webhook's decision: which document answers a Sautikit voice callback (DESIGN.md §1 step 3).

- The call is identified by our `clientRequestId` label (body or query string), else by the
  `SESSION#` pointer the dialer wrote. Never by the phone-number fields, which can come swapped.
  An unknown call is answered `<Response><Hangup/></Response>` and the reason logged.
- The first callback (`webhooks.classify` → FIRST_SETUP) gets the `<Stream>` to the bridge:
  `connect="true"`, `track="inbound_track"`, both sampling rates, `statusCallback`,
  `headerMetadata` (lead, attempt, campaign as a JSON string) and a URL carrying the session id
  and a per-call token (HMAC over the session id and an expiry). An optional fixed `<Say>`
  (the campaign's disclosure, in its language) comes first when the campaign asks for it. After
  the stream comes the transfer step of the campaign's strategy (SAUTIKIT.md §4):
  `dial_after_stream` → `<Dial>` to the rep (callerId, timeout), then the fallback `<Say>` and
  `<Hangup/>`; `supervise_barge` → `<Hangup/>` (the rep joins through supervision, not a verb).
- A repeated delivery of that first callback before the stream has started gets the same
  document again (it is a retry of one request; the token's expiry is derived from the first
  answer, so the bytes match). Once the call record shows the stream started or any later
  state, every callback — first-looking or not — gets the empty `<Response/>`: a second
  `<Stream>` would re-fork the call (§7 gotcha 2).
- Lifecycle re-invocations (StreamStarted, Completed, …) get `<Response/>` and their state is
  recorded on the call record (a final state is never overwritten by a late non-final one).
- `DialCompleted` (the end of the `<Dial>` to the rep) gets `<Response/>` too, and its result is
  recorded on the call record: `transfer_status` (dialStatus as sent) and `transfer_seconds`. It is
  what confirms a `dial_after_stream` transfer (leadqual.accounting); a redelivered or later
  report never replaces a connected result with an unconnected one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

from leadqual.campaign import Campaign, TransferStrategy
from leadqual.errors import LeadqualError
from leadqual.models import CallRecord, CallState, LeadStatus, Outcome, client_request_id
from leadqual.observability import MetricsSink, logger
from leadqual.signing import make_bridge_token
from leadqual.voice import Dial, Hangup, Response, Say, Stream, Verb
from leadqual.webhooks import FIRST_SETUP, VoiceCallback, classify, dial_connected

# States after which the stream has been set up: any callback then gets an empty document.
_PAST_SETUP = frozenset(
    {
        CallState.STREAMING,
        CallState.TRANSFERRING,
        CallState.COMPLETED,
        CallState.FAILED,
        CallState.NO_ANSWER,
        CallState.BUSY,
        CallState.CANCELED,
    }
)


class AnswerStore(Protocol):
    def get_lead(self, lead_id: str) -> Any: ...
    def get_call(self, lead_id: str, attempt: int) -> CallRecord | None: ...
    def put_call(self, record: CallRecord) -> bool: ...
    def update_call(self, lead_id: str, attempt: int, **fields: Any) -> Any: ...
    def put_session(self, session_id: str, lead_id: str, attempt: int) -> None: ...
    def mark_event(self, event_id: str, ttl_s: int = ...) -> bool: ...
    def get_session(self, session_id: str) -> tuple[str, int] | None: ...
    def set_status(self, lead_id: str, status: LeadStatus, **kwargs: Any) -> None: ...


class Campaigns(Protocol):
    def get(self, campaign_id: str) -> Campaign: ...


@dataclass(frozen=True)
class VoiceConfig:
    bridge_url: str  # wss://host/stream
    bridge_token_secret: str
    own_numbers: tuple[str, ...]  # our `from` numbers, to tell the lead's number apart
    token_ttl_s: int = 900
    output_sample_rate: Literal[8000, 16000] = 16000
    bidirectional_sample_rate: int = 16000
    status_callback_url: str | None = None  # fixed statusCallback; else built per request


Kind = Literal["stream", "empty", "hangup"]


@dataclass(frozen=True)
class VoiceReply:
    kind: Kind
    body: str
    content_type: str
    reason: str = ""
    lead_id: str | None = None
    attempt: int | None = None


def _utcnow() -> datetime:
    return datetime.now(UTC)


def with_query(url: str, **params: str) -> str:
    """`url` with `params` appended to its query string (keeping what is there)."""
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class VoiceAnswerer:
    def __init__(
        self,
        *,
        store: AnswerStore,
        campaigns: Campaigns,
        config: VoiceConfig,
        metrics: MetricsSink,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.store = store
        self.campaigns = campaigns
        self.config = config
        self.metrics = metrics
        self.clock = clock

    def answer(self, cb: VoiceCallback, *, status_callback_url: str | None = None) -> VoiceReply:
        """The reply to one (already verified) voice callback."""
        found = self._identify(cb)
        if found is None:
            return self._hangup("unknown call: no lead matches its label or session", cb)
        lead_id, attempt = found
        profile = self.store.get_lead(lead_id)
        if profile is None:
            return self._hangup("unknown call: the lead does not exist", cb)
        try:
            campaign = self.campaigns.get(profile.lead.campaign)
        except LeadqualError as exc:
            return self._hangup(f"campaign unavailable: {exc.reason}", cb)
        self.store.put_session(cb.session_id, lead_id, attempt)
        record = self.store.get_call(lead_id, attempt)
        if record is None:
            # The dialer writes the record before dialling; this covers a record lost to a crash.
            record = CallRecord(
                lead_id=lead_id,
                attempt=attempt,
                client_request_id=client_request_id(lead_id, attempt),
                session_id=cb.session_id,
            )
            self.store.put_call(record)
            record = self.store.get_call(lead_id, attempt) or record
        kind = classify(cb, self.config.own_numbers)
        log = {
            "lead_id": lead_id,
            "attempt": attempt,
            "session_id": cb.session_id,
            "state": cb.call_session_state,
        }

        if kind is not FIRST_SETUP or record.state in _PAST_SETUP:
            self._record_lifecycle(cb, record)
            why = "lifecycle callback" if kind is not FIRST_SETUP else "stream already set up"
            logger.info("voice callback answered empty", extra={**log, "why": why})
            return VoiceReply("empty", *Response([]).render(), reason=why, lead_id=lead_id, attempt=attempt)

        answered_at = record.answered_at or self.clock()
        if record.state is not CallState.ANSWERED or record.answered_at is None or record.session_id is None:
            self.store.update_call(
                lead_id, attempt, state=CallState.ANSWERED, answered_at=answered_at, session_id=cb.session_id
            )
        # Once per attempt, however often the callback comes and whoever recorded the answer first
        # (the call.answered event often beats the voice callback).
        if self.store.mark_event(f"answered#{client_request_id(lead_id, attempt)}"):
            self.store.set_status(lead_id, LeadStatus.IN_CALL)
            self.metrics.add("CallsAnswered")
        status_url = self.config.status_callback_url or status_callback_url
        document = self.document(
            campaign,
            profile.lead,
            attempt=attempt,
            session_id=cb.session_id,
            caller_id=self._our_number(cb),
            issued_at=answered_at,
            status_callback_url=status_url,
        )
        logger.info("voice callback answered with the stream", extra=log)
        return VoiceReply("stream", *document.render(), lead_id=lead_id, attempt=attempt)

    def document(
        self,
        campaign: Campaign,
        lead: Any,
        *,
        attempt: int,
        session_id: str,
        caller_id: str | None,
        issued_at: datetime,
        status_callback_url: str | None,
    ) -> Response:
        """The first-callback document: [intro Say] + Stream + the strategy's transfer step."""
        cfg = self.config
        # Issued "at the first answer", so a redelivered first callback gets byte-identical XML.
        token = make_bridge_token(
            cfg.bridge_token_secret, session_id, ttl_s=cfg.token_ttl_s, now=issued_at.timestamp()
        )
        label = client_request_id(lead.lead_id, attempt)
        verbs: list[Verb] = []
        if campaign.intro_say:
            verbs.append(Say(campaign.render(campaign.disclosure, lead), language=campaign.agent.language))
        verbs.append(
            Stream(
                url=with_query(cfg.bridge_url, session=session_id, token=token),
                name=label,
                track="inbound_track",
                connect=True,
                output_sampling_rate=cfg.output_sample_rate,
                bidirectional_sampling_rate=cfg.bidirectional_sample_rate,
                header_metadata={"lead_id": lead.lead_id, "attempt": attempt, "campaign": campaign.id},
                status_callback=status_callback_url,
            )
        )
        transfer = campaign.transfer
        if transfer.strategy is TransferStrategy.DIAL_AFTER_STREAM:
            # Runs when the bridge closes the stream for a hot lead; a cold lead is hung up by REST first.
            verbs.append(Dial([transfer.reps[0]], caller_id=caller_id, timeout=transfer.ring_timeout_s))
            verbs.append(Say(campaign.render(transfer.fallback_line, lead), language=campaign.agent.language))
        verbs.append(Hangup())
        return Response(verbs)

    # -- helpers -------------------------------------------------------------------------------
    def _identify(self, cb: VoiceCallback) -> tuple[str, int] | None:
        found = cb.lead_attempt
        if found is not None:
            return found
        return self.store.get_session(cb.session_id)

    def _our_number(self, cb: VoiceCallback) -> str | None:
        """The callerId for the rep leg: our number as the callback names it when it is E.164 (it
        may be one of several we own), else the number we dial from."""
        parties = cb.parties(self.config.own_numbers)
        if parties.matched and parties.our_number and parties.our_number.startswith("+"):
            return parties.our_number
        return self.config.own_numbers[0] if self.config.own_numbers else None

    def _record_lifecycle(self, cb: VoiceCallback, record: CallRecord) -> None:
        fields: dict[str, Any] = {}
        if cb.is_dial_completed:
            fields.update(self._dial_fields(cb, record))
        state = cb.state
        # RINGING / ANSWERED say nothing new: the record already knows the call was answered.
        if state is not None and state not in (CallState.RINGING, CallState.ANSWERED):
            fields["state"] = state
            if state.is_final and cb.duration_s is not None and record.duration_seconds is None:
                fields["duration_seconds"] = cb.duration_s
        if fields:
            self.store.update_call(record.lead_id, record.attempt, **fields)

    def _dial_fields(self, cb: VoiceCallback, record: CallRecord) -> dict[str, Any]:
        """The rep leg's result from a DialCompleted, unless it would overwrite a connected one."""
        status = cb.dial_status or "unknown"
        connected = dial_connected(status, cb.dial_duration_s)
        log = {
            "lead_id": record.lead_id,
            "attempt": record.attempt,
            "dial_status": status,
            "dial_seconds": cb.dial_duration_s,
            "dial_destination": cb.dial_destination,  # masked by the logger
        }
        if not connected and dial_connected(record.transfer_status, record.transfer_seconds):
            logger.info("dial result ignored: the rep leg was already reported connected", extra=log)
            return {}
        logger.info("dial result recorded", extra={**log, "connected": connected})
        if connected and record.transferred_to and record.outcome not in (None, Outcome.HOT_TRANSFERRED):
            # The events function gives the carrier a bounded grace; this report came after it.
            logger.warning("rep leg confirmed after the lead was accounted without the transfer", extra=log)
        return {"transfer_status": status, "transfer_seconds": cb.dial_duration_s}

    def _hangup(self, reason: str, cb: VoiceCallback) -> VoiceReply:
        logger.warning(
            "voice callback for an unknown call: hanging up",
            extra={"reason": reason, "session_id": cb.session_id, "label": cb.client_request_id},
        )
        return VoiceReply("hangup", *Response([Hangup()]).render(), reason=reason)
