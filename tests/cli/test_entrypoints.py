"""The console script and ``python -m pytun_hash`` run the same CLI as ``main()``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VECTOR = ["hash", "--key", "microsoft", "--src", "66.9.149.187", "--sport", "2794", "--dst", "161.142.100.80",
          "--dport", "1766", "--json"]  # fmt: skip


def console_script() -> str:
    found = Path(sys.executable).parent / "pytun-hash"
    if found.exists():
        return str(found)
    other = shutil.which("pytun-hash")
    if other is None:
        pytest.skip("the pytun-hash console script is not installed (pip install -e .)")
    return other


@pytest.mark.parametrize("launcher", ["script", "module"])
def test_entry_points(launcher: str) -> None:
    command = [console_script()] if launcher == "script" else [sys.executable, "-m", "pytun_hash"]
    done = subprocess.run([*command, *VECTOR], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["hash"] == "0x51ccc178" and doc["report"] == "TCPV4"
    bad = subprocess.run([*command, "hash", "--key", "zz", "--input", "00"], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert "Traceback" not in bad.stderr
