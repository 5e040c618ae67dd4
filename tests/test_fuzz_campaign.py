"""The fuzzing campaign's runner: a stopped campaign carries on from the logs of the targets it finished."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

_CAMPAIGN = Path(__file__).resolve().parent / "fuzz" / "campaign.py"


def _load() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("pytun_hash_fuzz_campaign", _CAMPAIGN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


STATS = """
tests/fuzz/test_fuzz_cli.py::test_cli_model_commands:

  - during generate phase (5436.12 seconds):
    - Typical runtimes: ~ 1-3 ms, of which < 1ms in data generation
    - {passing} passing, {failing} failing, and 1,234 invalid examples
"""


def _log(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / f"{name}.log").write_text(text)


def test_finished_reads_a_passing_run_back_and_nothing_else(tmp_path: Path) -> None:
    campaign = _load()
    node = "tests/fuzz/test_fuzz_cli.py::test_cli_model_commands"
    assert campaign.finished(node, 100_000, tmp_path) is None  # no log
    done = STATS.format(passing=100000, failing=0).replace("1,234", "1234")
    _log(tmp_path, "test_cli_model_commands", done + "\n1 passed in 5437.50s (1:30:37)\n")
    result = campaign.finished(node, 100_000, tmp_path)
    assert result is not None and result.ok and result.passing == 100_000 and result.invalid == 1234
    assert result.seconds == 5437.5
    assert campaign.finished(node, 200_000, tmp_path) is None  # fewer examples than asked for
    _log(tmp_path, "test_cli_model_commands", STATS.format(passing=100, failing=1) + "\n1 failed in 3.0s\n")
    assert campaign.finished(node, 100, tmp_path) is None  # a failed run is run again
    _log(tmp_path, "test_cli_model_commands", "Fatal Python error: Aborted\n")
    assert campaign.finished(node, 100, tmp_path) is None  # a run that never finished
