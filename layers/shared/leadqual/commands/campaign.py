"""`leadqual campaign validate FILE` and `leadqual campaign schema`."""

from __future__ import annotations

import argparse
import sys

from leadqual.campaign import CampaignError, json_schema, load_campaign


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    validate = sub.add_parser("validate", help="check a campaign file and say what is wrong")
    validate.add_argument("file")
    sub.add_parser("schema", help="print the campaign JSON Schema (for editors)")


def run(args: argparse.Namespace) -> int:
    if args.action == "schema":
        print(json_schema())
        return 0
    try:
        campaign = load_campaign(args.file)
    except CampaignError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.file}: ok — campaign {campaign.id!r}, {len(campaign.questions)} questions")
    return 0
