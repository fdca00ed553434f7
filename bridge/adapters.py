"""The bridge's own small adapters: campaign files, and the rep notifier (SNS or a log line)."""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path
from typing import Any

from leadqual.campaign import Campaign, CampaignError, builtin_campaign_path, load_campaign

log = logging.getLogger("bridge")

_CAMPAIGN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class CampaignLoader:
    """Campaigns by id: `<campaigns_dir>/<id>.yaml` first, then the ones shipped in leadqual.

    Loaded once per process and cached; a campaign file changes with a deploy, not mid-call."""

    def __init__(self, campaigns_dir: Path | None = None) -> None:
        self._dir = campaigns_dir
        self._cache: dict[str, Campaign] = {}
        self._lock = threading.Lock()

    def cached(self, campaign_id: str) -> Campaign | None:
        return self._cache.get(campaign_id)

    def load(self, campaign_id: str) -> Campaign:
        found = self._cache.get(campaign_id)
        if found is not None:
            return found
        if not _CAMPAIGN_ID.match(campaign_id):
            raise CampaignError(f"{campaign_id!r}: not a campaign id")
        candidates: list[Path] = []
        if self._dir is not None:
            candidates += [self._dir / f"{campaign_id}.yaml", self._dir / f"{campaign_id}.yml"]
        candidates.append(builtin_campaign_path(campaign_id))
        for path in candidates:
            if path.is_file():
                campaign = load_campaign(path)
                with self._lock:
                    self._cache[campaign_id] = campaign
                return campaign
        raise CampaignError(
            f"{campaign_id}: no campaign file (looked in {self._dir or 'the built-in campaigns'})"
        )


class SnsNotifier:
    """Publishes the rep briefing to an SNS topic (REP_NOTIFY_TOPIC_ARN); boto3 client injected."""

    def __init__(self, topic_arn: str, client: Any) -> None:
        self._topic_arn = topic_arn
        self._client = client

    def publish(self, message: dict[str, Any]) -> None:
        self._client.publish(
            TopicArn=self._topic_arn,
            Subject="Hot lead on the line",
            Message=json.dumps(message, default=str),
            MessageAttributes={
                "type": {"DataType": "String", "StringValue": str(message.get("type", "lead.hot"))},
                "rep": {"DataType": "String", "StringValue": str(message.get("rep", ""))},
            },
        )


class LogNotifier:
    """Where no topic is configured (local stack): the briefing becomes a log record."""

    def publish(self, message: dict[str, Any]) -> None:
        log.info("rep briefing", extra={"briefing_session": message.get("session_id")})
