"""Regression tests for bugs the hardening run found in the command line's file readers (now fixed in
pytun_hash/_files.py and pytun_hash/configfile.py):

* A config nested a few thousand levels deep (well inside the 1 MiB limit) makes ``json``/``tomllib``
  raise ``RecursionError``, which escapes ``read_config_file`` and ends the CLI as an internal error
  (exit 5). Fix: catch ``RecursionError`` next to the decode errors and raise ``ValidationError``.
* A path with a NUL character makes ``open()`` raise ``ValueError`` (``embedded null byte``) in
  ``read_config_file`` and ``PcapReader``. Fix: refuse it with ``ValidationError`` (field ``config`` /
  ``pcap``), or catch ``ValueError`` around ``open``.
* A FIFO (or any non-regular file that blocks on open/read) named as a config or pcap file blocks
  forever. Fix: open with ``O_NONBLOCK`` and refuse anything but a regular file (``S_ISREG`` after
  ``fstat``) before reading.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytun_hash import ValidationError
from pytun_hash.capture.reader import PcapReader
from pytun_hash.cli import main
from pytun_hash.configfile import read_config_file
from tests.fuzz.harness import watchdog

DEPTH = 100_000


def _cli(*argv: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(argv))


@pytest.fixture
def deep_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "json": tmp_path / "deep.json",
        "toml": tmp_path / "deep.toml",
    }
    files["json"].write_text('{"types": ' + "[" * DEPTH + "]" * DEPTH + "}")
    files["toml"].write_text("types = " + "[" * DEPTH + "]" * DEPTH + "\n")
    assert all(f.stat().st_size < (1 << 20) for f in files.values())
    return files


@pytest.mark.parametrize("kind", ["json", "toml"])
def test_deeply_nested_config_is_a_validation_error(deep_files: dict[str, Path], kind: str) -> None:
    with pytest.raises(ValidationError):
        read_config_file(str(deep_files[kind]))


def test_deeply_nested_config_is_a_usage_error_in_the_cli(deep_files: dict[str, Path]) -> None:
    assert _cli("apply", "--dry-run", "--queues", "4", "--config", str(deep_files["json"])) == 2


@pytest.mark.parametrize("reader", [read_config_file, PcapReader], ids=["config", "pcap"])
def test_nul_in_a_path_is_a_validation_error(reader: Callable[[str], object], tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        reader(str(tmp_path / "a\0b"))


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    yield str(path)


@pytest.mark.parametrize("reader", [read_config_file, PcapReader], ids=["config", "pcap"])
def test_a_fifo_is_refused_not_waited_on(reader: Callable[[str], object], fifo: str) -> None:
    with watchdog(1.0), pytest.raises(ValidationError):
        reader(fifo)
