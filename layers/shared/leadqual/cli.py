"""`leadqual` — the command line. Each subcommand lives in its own module, imported on use so that
`leadqual --help` is instant and the Lambda layer never imports the local stack."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module, function, help). The function takes the parsed args and returns an exit code.
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "enqueue": (
        "leadqual.commands.enqueue",
        "run",
        "validate a CSV/JSONL lead file and send valid leads to SQS",
    ),
    "report": ("leadqual.commands.report", "run", "export results (CSV or JSON) with totals"),
    "configure-number": (
        "leadqual.commands.configure_number",
        "run",
        "point a Sautikit number's routing at the voice webhook",
    ),
    "campaign": ("leadqual.commands.campaign", "run", "validate a campaign file or print its JSON Schema"),
    "demo": ("local.demo", "run", "run a whole campaign on this machine and print the results"),
    "local": ("local.stack", "run", "`leadqual local up`: start the local stack and print its endpoints"),
}


def _add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    module_name, _, _ = _COMMANDS[name]
    module = importlib.import_module(module_name)
    module.add_arguments(parser)


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadqual", description="Qualify sales leads by phone.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (_, _, help_text) in _COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen subcommand's module is imported (its arguments are needed to parse).
        if name == chosen:
            _add_arguments(name, child)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(args_list).parse_args(args_list)
    module_name, func_name, _ = _COMMANDS[args.command]
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
