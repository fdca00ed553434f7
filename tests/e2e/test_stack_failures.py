"""The local stack says clearly what is wrong: a component that dies is reported with the end of its
log and nothing is left running; a real engine without its key is refused before anything starts."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from local import demo, stack
from local.stack import LocalStack, StackError, StackOptions

pytestmark = [pytest.mark.e2e]


def test_a_component_that_dies_is_reported_with_its_log_and_nothing_is_left_running(tmp_path: Path) -> None:
    bad = tmp_path / "directory.yaml"
    bad.write_text('numbers:\n  "0712000001": {answer: after_rings}\n')  # not E.164: the simulator refuses it
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    local = LocalStack(StackOptions(run_dir=tmp_path / "run", directory=bad, ready_timeout_s=60))
    with pytest.raises(StackError) as caught:
        local.start()
    assert caught.value.component == "sautikit simulator"
    assert "E.164" in str(caught.value)  # the tail of its log, in the error
    assert caught.value.log_path == tmp_path / "run" / "logs" / "sautikit.log"
    leftovers = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE
    ]
    assert leftovers == []


@pytest.mark.parametrize(("engine", "variable"), [("gemini", "GEMINI_API_KEY"), ("openai", "OPENAI_API_KEY")])
def test_a_real_engine_without_its_key_exits_2_naming_the_variable(
    engine: str,
    variable: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv(variable, raising=False)
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    args = parser.parse_args(["--engine", engine, "--report", str(tmp_path / "r.json")])
    buffer = io.StringIO()
    monkeypatch.setattr(demo, "_console", lambda: Console(file=buffer, width=200))
    assert demo.run(args) == 2
    assert variable in buffer.getvalue()
    assert not (tmp_path / "logs").exists()  # refused before the stack started

    parser = argparse.ArgumentParser()
    stack.add_arguments(parser)
    assert stack.run(parser.parse_args(["up", "--engine", engine, "--run-dir", str(tmp_path / "up")])) == 2
    assert variable in capsys.readouterr().err
    assert not (tmp_path / "up").exists()
