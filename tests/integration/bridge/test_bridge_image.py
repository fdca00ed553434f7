"""The bridge image: its dependency set matches uv.lock, the environment it builds runs
`python -m bridge --check`, and `make bridge-image` (bridge/build-image.sh) fails clearly without
docker and otherwise logs in, builds and pushes."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "bridge" / "Dockerfile"
REQUIREMENTS = REPO / "bridge" / "requirements.txt"
SCRIPT = REPO / "bridge" / "build-image.sh"


def _uv() -> str:
    for candidate in (REPO / ".tools" / "uv" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    raise AssertionError("uv not found: run `make install` (it installs uv under .tools/)")


def _python312() -> str:
    found = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))
    path = found[-1] if found else shutil.which("python3.12")
    assert path, "python3.12 not found (the Makefile needs it too)"
    return path


def _export_command() -> list[str]:
    header = REQUIREMENTS.read_text().splitlines()[1]
    command = header.lstrip("# ").split()
    assert command[:2] == ["uv", "export"], header
    return [c for i, c in enumerate(command) if c != "--output-file" and command[i - 1] != "--output-file"]


def _pins(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.lstrip().startswith("#")]


def test_requirements_are_the_lockfile_export() -> None:
    """bridge/requirements.txt is exactly `uv export` of uv.lock (run the command in its header to refresh)."""
    command = _export_command()
    out = subprocess.run(
        [_uv(), *command[1:]], cwd=REPO, capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert _pins(out) == _pins(REQUIREMENTS.read_text()), (
        f"stale: run `{' '.join(command)} --output-file {REQUIREMENTS.relative_to(REPO)}`"
    )
    for needed in ("websockets==", "soxr==", "numpy==", "boto3==", "pydantic==", "espeakng-loader=="):
        assert needed in out


def _final_stage_copies() -> list[tuple[str, str]]:
    stages = DOCKERFILE.read_text().split("\nFROM ")
    copies = re.findall(r"^COPY (?!--from)(\S+) (\S+)$", stages[-1], flags=re.M)
    assert copies, "the final stage copies no sources"
    return copies


def test_dockerfile_is_non_root_with_a_health_check_on_python_312() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG PYTHON_IMAGE=python:3.12-" in text
    assert re.search(r"^USER 10001", text, flags=re.M)
    assert "HEALTHCHECK" in text
    assert '"--healthcheck"' in text
    assert "--require-hashes" in text
    assert "COPY bridge/requirements.txt" in text
    assert "STOPSIGNAL SIGTERM" in text
    assert dict(_final_stage_copies()) == {"layers/shared/leadqual": "/app/leadqual", "bridge": "/app/bridge"}


@pytest.mark.slow
def test_the_images_environment_runs_the_bridge_check(tmp_path: Path) -> None:
    """Build what the image builds: a fresh python3.12 venv with exactly bridge/requirements.txt,
    the sources the Dockerfile copies, PYTHONPATH=/app; then the entry point's --check."""
    venv = tmp_path / "venv"
    subprocess.run([_python312(), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [
            _uv(),
            "pip",
            "install",
            "--python",
            str(python),
            "--require-hashes",
            "--no-deps",
            "-r",
            str(REQUIREMENTS),
        ],
        check=True,
        timeout=600,
        capture_output=True,
    )
    app = tmp_path / "app"
    for src, dst in _final_stage_copies():
        target = app / Path(dst).relative_to("/app")
        shutil.copytree(REPO / src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "PYTHONPATH": str(app),
        "HOME": str(tmp_path),
        "PORT": "8080",
    }
    version = subprocess.run([str(python), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("Python 3.12")
    entry = subprocess.run(
        [
            str(python),
            "-c",
            "import bridge.__main__ as m, leadqual, bridge; print(bridge.__file__, leadqual.__file__)",
        ],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert entry.returncode == 0, entry.stderr
    assert str(app) in entry.stdout
    assert str(REPO) not in entry.stdout  # nothing leaks in from the checkout
    check = subprocess.run(
        [str(python), "-m", "bridge", "--check"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(check.stdout)
    failed = {k: v for k, v in report["checks"].items() if v != "ok"}
    assert check.returncode == 0, failed or check.stderr
    assert report["ok"] is True
    assert report["python"].startswith("3.12")


def _bin_with(tmp_path: Path, tools: dict[str, str]) -> Path:
    """A PATH directory holding the few real tools the script needs, plus fakes."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("dirname", "cut", "git", "date", "cat"):
        real = shutil.which(tool)
        if real:
            (bindir / tool).symlink_to(real)
    for name, body in tools.items():
        path = bindir / name
        path.write_text("#!/bin/bash\n" + body)
        path.chmod(0o755)
    return bindir


def _run_script(bindir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash
    return subprocess.run(
        [bash, str(SCRIPT)],
        env={"PATH": str(bindir), "HOME": str(bindir.parent), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_build_script_fails_clearly_without_docker(tmp_path: Path) -> None:
    result = _run_script(_bin_with(tmp_path, {}))
    assert result.returncode != 0
    assert "docker is not installed" in result.stderr


def test_build_script_fails_clearly_when_the_docker_daemon_is_down(tmp_path: Path) -> None:
    docker = 'if [ "$1" = info ]; then echo "Cannot connect to the Docker daemon" >&2; exit 1; fi\nexit 0\n'
    result = _run_script(_bin_with(tmp_path, {"docker": docker}))
    assert result.returncode != 0
    assert "daemon is not reachable" in result.stderr


def test_build_script_logs_in_builds_and_pushes_to_the_stack_repository(tmp_path: Path) -> None:
    log = tmp_path / "docker.log"
    uri = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/leadqual-bridgerepository-abc"
    docker = f'echo "$*" >> {log}\nif [ "$1" = login ]; then read -r pw; echo "password=$pw" >> {log}; fi\nexit 0\n'
    python = (
        'if [ "$3" = repository-uri ]; then echo ' + uri + "; exit 0; fi\n"
        'if [ "$3" = login-password ]; then echo "region=$5" >&2; echo s3cr3t; exit 0; fi\nexit 3\n'
    )
    bindir = _bin_with(tmp_path, {"docker": docker, "fakepython": python})
    result = _run_script(bindir, PY=str(bindir / "fakepython"), TAG="abc123")
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == "info"
    assert calls[1] == "login --username AWS --password-stdin 123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    assert calls[2] == "password=s3cr3t"
    assert calls[3] == f"build --platform linux/amd64 -f bridge/Dockerfile -t {uri}:abc123 ."
    assert calls[4] == f"push {uri}:abc123"
    assert "region=eu-west-1" in result.stderr
    assert f"bridge image: {uri}:abc123" in result.stdout


def test_ecr_helpers(tmp_path: Path) -> None:
    import base64

    import boto3
    from botocore.stub import Stubber

    from bridge.ecr import ImageError, login_password, repository_uri, stack_name

    config = tmp_path / "samconfig.toml"
    config.write_text('version = 0.1\n[default.global.parameters]\nstack_name = "leadqual"\n')
    assert stack_name(config, {}) == "leadqual"
    assert stack_name(config, {"STACK_NAME": "other"}) == "other"
    with pytest.raises(ImageError, match="no STACK_NAME"):
        stack_name(tmp_path / "missing.toml", {})

    cfn = boto3.client(
        "cloudformation", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y"
    )
    with Stubber(cfn) as stub:
        outputs = [{"OutputKey": "BridgeRepositoryUri", "OutputValue": "1.dkr.ecr.eu-west-1.amazonaws.com/r"}]
        stub.add_response(
            "describe_stacks",
            {
                "Stacks": [
                    {
                        "StackName": "s",
                        "CreationTime": "2025-01-01T00:00:00Z",
                        "StackStatus": "CREATE_COMPLETE",
                        "Outputs": outputs,
                    }
                ]
            },
            {"StackName": "s"},
        )
        assert repository_uri("s", cfn) == "1.dkr.ecr.eu-west-1.amazonaws.com/r"
        stub.add_response(
            "describe_stacks",
            {
                "Stacks": [
                    {
                        "StackName": "s",
                        "CreationTime": "2025-01-01T00:00:00Z",
                        "StackStatus": "CREATE_COMPLETE",
                    }
                ]
            },
            {"StackName": "s"},
        )
        with pytest.raises(ImageError, match="has no BridgeRepositoryUri output"):
            repository_uri("s", cfn)

    ecr = boto3.client("ecr", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="y")
    with Stubber(ecr) as stub:
        token = base64.b64encode(b"AWS:pw-123").decode()
        stub.add_response(
            "get_authorization_token", {"authorizationData": [{"authorizationToken": token}]}, {}
        )
        assert login_password(ecr) == "pw-123"
    assert sys.version_info >= (3, 12)
