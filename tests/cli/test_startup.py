"""What each command imports: only what it uses (issue 17's start-up). Checked by module, not by time."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from pytun_hash.cli import build_parser
from pytun_hash.cli.parser import COMMANDS

_PROBE = """
import contextlib, io, json, sys
from pytun_hash.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("pytun_hash", "attr", "numpy")))))
"""


def _modules(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_top_level_help_imports_no_command() -> None:
    loaded = _modules("--help")
    commands = {f"pytun_hash.cli.{module}" for module, _ in COMMANDS.values()}
    assert not loaded & commands, loaded & commands
    assert not any(m.startswith(("attr", "pytun_hash.device", "pytun_hash.bpf")) for m in loaded), sorted(loaded)


@pytest.mark.parametrize("command", ["show", "conformance"])
def test_a_commands_help_imports_its_own_module_only(command: str) -> None:
    loaded = _modules(command, "--help")
    own = f"pytun_hash.cli.{COMMANDS[command][0]}"
    others = {f"pytun_hash.cli.{module}" for module, _ in COMMANDS.values()} - {own}
    assert own in loaded and not loaded & others, loaded & others


def test_the_complete_parser_knows_every_command_with_its_help_line() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in COMMANDS:
        built = sub.choices[name]
        assert built.description and any(a.dest == "json" for a in built._actions), name  # not a stub
    listed = " ".join(parser.format_help().split())
    assert all(" ".join(line.split()) in listed for _, line in COMMANDS.values())
