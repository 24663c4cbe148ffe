"""Every command lives in dermino/commands/<name>.py, imports cleanly, and a broken one fails loudly."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from dermino import cli

SRC = Path(__file__).resolve().parents[1] / "src" / "dermino"


def test_every_command_module_imports_and_registers():
    for name, module in cli.COMMANDS.items():
        mod = importlib.import_module(f"dermino.commands.{module}")
        assert callable(getattr(mod, "register", None)), f"dermino {name}: {mod.__name__} has no register()"
    parser = cli.build_parser()
    choices = parser._subparsers._group_actions[0].choices  # the COMMAND sub-parsers
    assert set(choices) == set(cli.COMMANDS)


def test_one_place_for_commands():
    """Each file under commands/ is a listed command; no other module defines a CLI ``register``."""
    files = {p.stem for p in (SRC / "commands").glob("*.py") if p.stem != "__init__"}
    assert files == set(cli.COMMANDS.values())
    elsewhere = []
    for path in SRC.rglob("*.py"):
        if path.parent.name == "commands":
            continue
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "register" and n.args.args
               and n.args.args[0].arg == "subparsers" for n in tree.body):
            elsewhere.append(str(path.relative_to(SRC)))
    assert not elsewhere, f"command registration outside dermino/commands: {elsewhere}"


def test_a_broken_command_import_fails_the_cli(monkeypatch):
    """A command module whose own import is broken must raise, not vanish from ``dermino --help``."""
    real_import = importlib.import_module

    def import_module(name, *args, **kwargs):
        if name.endswith("study"):  # as if dermino/commands/study.py imported a module that is gone
            raise ModuleNotFoundError("No module named 'dermino.study.gone'", name="dermino.study.gone")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(cli.importlib, "import_module", import_module)
    with pytest.raises(ModuleNotFoundError, match="dermino.study.gone"):
        cli.build_parser()
    with pytest.raises(ModuleNotFoundError):
        cli.main(["data", "--help"])
