"""Handing a hot lead to a rep: which rep, the rep's briefing, and what Sautikit allows.

Strategies (SAUTIKIT.md §4, campaign.transfer.strategy):
- `dial_after_stream`: the voice document is `<Stream connect="true"/>` then `<Dial>` to the rep,
  so the bridge transfers by closing the socket (1000) once the handoff line has played. The
  voice webhook picks the number it dials (the campaign's first rep).
- `supervise_barge`: the bridge keeps the socket and asks Sautikit to put the rep on the call
  (`POST /v1/calls/{id}/supervision`, mode `barge`), waits until the rep is on the line, then
  falls silent until the carrier closes. Sautikit sends nothing when a supervisor picks up, so the
  bridge polls `GET /v1/calls/{id}/supervision` until its status is `active` (at most
  `transfer.ring_timeout_s`); a rep who does not answer (timeout, no_answer, busy, failed, ended)
  gets the campaign's fallback line, a hang-up and `callback_requested`, never `hot_transferred`.
  While handing over, the engine hears nothing from the call (neither the rep nor the lead).

Briefing the rep before they speak:
- Always: a JSON notification (lead, answers, score reasons, session id) through the notifier
  port (SNS `REP_NOTIFY_TOPIC_ARN` in production), published as soon as the lead is hot, so it
  reaches the rep's screen or phone while their line rings.
- Spoken, `supervise_barge` only, when `transfer.whisper` is set and the carrier client can
  PATCH supervision: the rep is rung in `whisper` mode; once the supervision reads `active` (the
  rep picked up) the agent speaks a short summary, then the bridge PATCHes the mode to `barge`
  and falls silent. A PATCH is accepted while the rep still rings, so its success never means
  "picked up"; a 409 to it is only retried as a conflicting change while the rep is still on the
  line. What this can and cannot do on Sautikit: `whisper` lets the supervisor *talk* to one
  side privately (the rep's words reach the agent, not the lead); it does not make the stream's
  audio private. The agent's voice is the stream's playback, which the lead hears too, so the
  "whisper" is a warm introduction both people hear, and `transfer_summary` is worded for that.
  Truly private briefing exists only as the written notification. Without PATCH support the
  bridge goes straight to `barge`.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from leadqual.campaign import Campaign, TransferStrategy
from leadqual.models import Answer, Lead, Score


def pick_rep(campaign: Campaign, lead_id: str) -> str:
    """The rep for this lead: the first for dial_after_stream (the voice document dials it), a
    stable spread over the list for supervise_barge."""
    reps = campaign.transfer.reps
    if campaign.transfer.strategy is TransferStrategy.DIAL_AFTER_STREAM or len(reps) == 1:
        return reps[0]
    return reps[zlib.crc32(lead_id.encode()) % len(reps)]


def transfer_key(lead_id: str, attempt: int) -> str:
    """Idempotency-Key of the supervision request: one transfer per attempt, even if retried."""
    return f"lq-{lead_id}-{attempt}-transfer"


def briefing(
    *,
    session_id: str,
    campaign: Campaign,
    lead: Lead,
    attempt: int,
    answers: Iterable[Answer],
    score: Score | None,
    rep: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The rep's notification: who is coming, what they said, why they are hot."""
    answered = []
    for a in answers:
        try:
            ask = campaign.render(campaign.question(a.question_id).ask, lead)
        except KeyError:
            ask = a.question_id
        answered.append({"question_id": a.question_id, "question": ask, "value": a.value, "quote": a.quote})
    return {
        "type": "lead.hot",
        "at": (now or datetime.now(UTC)).isoformat(),
        "session_id": session_id,
        "campaign": campaign.id,
        "attempt": attempt,
        "rep": rep,
        "strategy": campaign.transfer.strategy.value,
        "lead": {
            "lead_id": lead.lead_id,
            "name": lead.name,
            "company": lead.company,
            "phone": lead.phone,
        },
        "answers": answered,
        "score": None
        if score is None
        else {
            "verdict": score.verdict.value,
            "points": score.points,
            "max_points": score.max_points,
            "reasons": list(score.reasons),
        },
    }


def transfer_summary(lead: Lead, score: Score | None) -> str:
    """A short introduction the rep hears as they join; the lead hears it too (see module doc)."""
    who = lead.name or "our caller"
    if lead.company:
        who = f"{who} from {lead.company}"
    reasons: list[str] = []
    for reason in score.reasons if score else []:
        # scoring writes "hot: makes buying decisions, needs 10 or more seats, ..."
        head, sep, rest = reason.partition(":")
        text = rest if sep and head.strip() in ("hot", "cold", "undecided") else reason
        reasons += [r.strip().rstrip(".") for r in text.split(",") if r.strip()]
    if not reasons:
        return f"I'm connecting you with {who} now."
    return f"I'm connecting you with {who}, who {_join(reasons[:3])}."


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
