"""The READMEs and the documentation cannot rot: every fenced block marked `runnable` runs (Python blocks executed,
shell blocks run with their exit codes checked), and every shell command uses the venv."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from backbones.cli import main

ROOT = Path(__file__).resolve().parents[1]
READMES = [ROOT / "README.md", *sorted((ROOT / "examples").glob("*/README.md")), *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(language: str, runnable_only: bool = True) -> list:
    return list(_find_blocks(language, runnable_only))


def _find_blocks(language: str, runnable_only: bool):
    for readme in READMES:
        for match in FENCE.finditer(readme.read_text()):
            if match.group(1) == language and ("runnable" in match.group(2) or not runnable_only):
                line = readme.read_text()[: match.start()].count("\n") + 1
                yield pytest.param(match.group(3), id=f"{readme.relative_to(ROOT)}:{line}")


def test_there_are_runnable_blocks():
    assert len(list(_blocks("python"))) >= 5 and len(list(_blocks("bash"))) >= 1


@pytest.mark.parametrize("code", _blocks("python"))
def test_python_block_runs(code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<README block>", "exec"), {"__name__": "readme_block"})


def _commands(script: str) -> list:
    return [line for line in (raw.split("  #")[0].strip() for raw in script.replace("\\\n", " ").splitlines()) if line]


@pytest.mark.parametrize("script", _blocks("bash"))
def test_shell_block_runs_with_the_venv(script, monkeypatch, capsys):
    """`backbones` commands run in-process through the CLI's `main` (the console script itself is tested in
    test_cli); anything else runs in bash, with `.venv/bin/` standing for this interpreter's bin folder."""
    monkeypatch.chdir(ROOT)
    for command in _commands(script):
        words = shlex.split(command)
        if words[0] == ".venv/bin/backbones":
            assert main(words[1:]) == 0, (command, capsys.readouterr())
            continue
        command = command.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command], capture_output=True, text=True, timeout=300
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


@pytest.mark.parametrize("script", _blocks("bash", runnable_only=False))
def test_every_shell_command_names_the_venv(script):
    for command in _commands(script):
        first = command.split()[0]
        if first in ("python", "pip", "backbones", "torchrun", "pytest"):
            raise AssertionError(f"{command!r} depends on PATH; write .venv/bin/{first}")
