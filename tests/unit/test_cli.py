"""The CLI dispatcher and the campaign subcommand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from leadqual.campaign import builtin_campaign_path
from leadqual.cli import main


def test_campaign_validate_accepts_the_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["campaign", "validate", str(builtin_campaign_path())]) == 0
    assert "4 questions" in capsys.readouterr().out


def test_campaign_validate_names_every_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nname: y\nquestions: []\nagent: {name: A}\n")
    assert main(["campaign", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    for key in ("agent.company", "disclosure", "questions", "scoring", "transfer"):
        assert key in err


def test_campaign_schema_is_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["campaign", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "leadqual campaign"
    assert "questions" in schema["properties"]


def test_unknown_command_exits_with_usage() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["frobnicate"])
    assert exc.value.code == 2
