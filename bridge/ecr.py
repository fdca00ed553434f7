"""Helpers for `make bridge-image` (bridge/build-image.sh): where to push, and how to log in.

    python -m bridge.ecr repository-uri [--stack NAME]   the stack's BridgeRepositoryUri output
    python -m bridge.ecr login-password --region REGION   an ECR password for `docker login`

The stack name comes from --stack, else STACK_NAME, else samconfig.toml's stack_name. boto3
clients are injectable so the functions are testable without AWS.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import tomllib
from pathlib import Path
from typing import Any

OUTPUT = "BridgeRepositoryUri"


class ImageError(RuntimeError):
    """Something a person has to fix before the image can be pushed; the message says what."""


def stack_name(samconfig: Path = Path("samconfig.toml"), environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    if env.get("STACK_NAME"):
        return env["STACK_NAME"]
    try:
        config = tomllib.loads(samconfig.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ImageError(f"no STACK_NAME and cannot read {samconfig}: {exc}") from exc
    default = config.get("default", {})
    for section in ("deploy", "global"):
        name = default.get(section, {}).get("parameters", {}).get("stack_name")
        if name:
            return str(name)
    raise ImageError(f"no STACK_NAME and no stack_name in {samconfig}")


def repository_uri(stack: str, cloudformation: Any) -> str:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:
        raise ImageError(
            f"cannot describe stack {stack!r} (deployed? right region/credentials?): {exc}"
        ) from exc
    for output in stacks[0].get("Outputs", []) if stacks else []:
        if output.get("OutputKey") == OUTPUT:
            return str(output["OutputValue"])
    raise ImageError(
        f"stack {stack!r} has no {OUTPUT} output: deploy it once with BridgeImageUri empty first"
    )


def login_password(ecr: Any) -> str:
    data = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    if user != "AWS" or not password:
        raise ImageError("unexpected ECR authorization token")
    return password


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bridge.ecr")
    sub = parser.add_subparsers(dest="command", required=True)
    uri = sub.add_parser("repository-uri")
    uri.add_argument("--stack")
    login = sub.add_parser("login-password")
    login.add_argument("--region", required=True)
    args = parser.parse_args(argv)
    import boto3

    try:
        if args.command == "repository-uri":
            print(repository_uri(args.stack or stack_name(), boto3.client("cloudformation")))
        else:
            print(login_password(boto3.client("ecr", region_name=args.region)))
    except ImageError as exc:
        print(f"bridge-image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
