"""`leadqual configure-number`: point the Sautikit number's routing at the voice (and events) webhook.

The same operation the stack's `Custom::NumberRouting` resource runs on deploy (leadqual.routing).
Values come from flags or the environment (NUMBER_ID, VOICE_WEBHOOK_URL, EVENTS_WEBHOOK_URL,
SAUTIKIT_BASE_URL, SAUTIKIT_API_KEY or SAUTIKIT_API_KEY_SECRET_ARN).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from leadqual.errors import SautikitError, SettingsError
from leadqual.routing import RoutingRequest, configure_number, describe_failure
from leadqual.sautikit import SautikitClient
from leadqual.settings import RoutingSettings

_FLAGS = {
    "number_id": "NUMBER_ID",
    "routing_url": "VOICE_WEBHOOK_URL",
    "events_url": "EVENTS_WEBHOOK_URL",
    "base_url": "SAUTIKIT_BASE_URL",
    "api_key": "SAUTIKIT_API_KEY",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--number-id", help="the number's Sautikit id (default: $NUMBER_ID)")
    parser.add_argument("--routing-url", help="the voice webhook URL (default: $VOICE_WEBHOOK_URL)")
    parser.add_argument("--events-url", help="the events webhook URL (default: $EVENTS_WEBHOOK_URL)")
    parser.add_argument(
        "--base-url", help="Sautikit API base URL (default: $SAUTIKIT_BASE_URL or the public API)"
    )
    parser.add_argument("--api-key", help="Sautikit API key (default: $SAUTIKIT_API_KEY / _SECRET_ARN)")


def run(args: argparse.Namespace, *, http: Any = None) -> int:
    env = dict(os.environ)
    for attr, var in _FLAGS.items():
        value = getattr(args, attr, None)
        if value:
            env[var] = value
    try:
        settings = RoutingSettings.from_env(env)
    except SettingsError as exc:
        print(f"configure-number: {exc.reason}", file=sys.stderr)
        return 2
    request = RoutingRequest(
        number_id=settings.number_id,
        routing_url=settings.voice_webhook_url,
        events_url=settings.events_webhook_url,
    )
    with SautikitClient(settings.sautikit_base_url, settings.sautikit_api_key, http=http) as client:
        try:
            result = configure_number(client, request)
        except SautikitError as exc:
            print(f"configure-number: {describe_failure(exc, request)}", file=sys.stderr)
            return 1
    print(json.dumps(result or {"id": request.number_id, "routing_url": request.routing_url}, indent=2))
    return 0
