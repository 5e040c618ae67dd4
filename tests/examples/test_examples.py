"""Every example runs, as its users would run it, and says what it should."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_config_check_bundled_files() -> None:
    done = run("config_check.py")
    assert done.returncode == 2, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith("configs/rss.toml: valid")
    assert "tcp 66.9.149.187:2794 -> 161.142.100.80:1766: hash 0x51ccc178 TCPV4, queue 0 of 4" in done.stdout
    start = next(i for i, line in enumerate(lines) if "broken.toml" in line)
    assert lines[start].endswith("broken.toml: 7 error(s)")
    fields = [line.split(":")[0].strip() for line in lines[start + 1 :]]
    assert fields == [
        "queues", "rss", "types[1]", "indirection_table[2]", "indirection_table", "key", "unclassified_queue",
    ]  # fmt: skip


def test_config_check_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(EXAMPLES))
    try:
        import config_check
    finally:
        sys.path.remove(str(EXAMPLES))
    good = tmp_path / "good.toml"
    good.write_text('rss = false\nreport = true\ntypes = "ipv4|tcpv4"\nkey = "symmetric"\n')
    assert config_check.main([str(good)]) == 0
    assert "valid" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("rss = [")
    assert config_check.main([str(bad), str(good)]) == 2
    out = capsys.readouterr().out
    assert "bad.toml: 1 error(s)\n  config: " in out and "invalid TOML" in out and "good.toml: valid" in out


@pytest.mark.kernel
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vmm_setup.py", ["adopted 4 queue fds", "vnet header 20 bytes, little-endian True",
                          "read 48 of 48 frames", "misrouted: 0", "not matching the model: 0"]),
        ("verify_reports.py", ["14 frames of 14 sent", "verify_reports: 0 mismatch(es)",
                               "a corrupted report is caught: hash_value"]),
        ("ebpf_live_reconfig.py", ["5 live reconfigurations", "no configuration in force predicts: 0",
                                   "lost: 0; duplicated: 0"]),
        ("vmm_loop.py", ["driver probe: 128-entry table i % 4, 40-byte key: OK", "64 of 64 frames",
                         "ethtool -X eth0 equal 2: OK", "[table-entry-out-of-range]", "every frame as the model says"]),
    ],
)  # fmt: skip
def test_root_examples(name: str, expected: list[str]) -> None:
    done = run(name)
    assert done.returncode == 0, done.stdout + done.stderr
    for text in expected:
        assert text in done.stdout, text
    assert done.stdout.rstrip().endswith("OK")


def test_every_example_is_run() -> None:
    """A new example needs a test: every script in examples/ is named by one in tests/examples/."""
    source = "".join(p.read_text() for p in sorted(Path(__file__).parent.glob("test_*.py")))
    missing = [p.name for p in sorted(EXAMPLES.glob("*.py")) if f'"{p.name}"' not in source]
    assert missing == []


def test_every_example_says_how_to_run_it_as_printed() -> None:
    """Each docstring says how to run the script with the project's virtual environment (``make setup``
    makes ``.venv``), never with a bare ``python``, which outside it fails with ModuleNotFoundError."""
    makefile = (EXAMPLES.parent / "Makefile").read_text()
    assert re.search(r"^VENV \?= \.venv$", makefile, flags=re.MULTILINE)
    assert re.search(r"^setup: ", makefile, flags=re.MULTILINE)
    for path in sorted(EXAMPLES.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        runs = re.findall(r"(\S*python\S*) (examples/\S+?\.py)", doc)
        assert runs, f"{path.name}: its docstring does not say how to run it"
        assert "make setup" in doc, f"{path.name}: its docstring does not say to run `make setup` first"
        for interpreter, script in runs:
            assert (interpreter.strip("`"), script) == (".venv/bin/python", f"examples/{path.name}"), path.name
