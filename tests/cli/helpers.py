"""Helpers shared by the CLI tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest


def run_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pytun_hash ARGS`` as uid/gid 65534 without capabilities.

    setpriv(1) keeps the capabilities needed to reach the interpreter until the exec, so this works
    where the interpreter lives below a directory only root may enter. Skips without root or setpriv.
    """
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv(1) (util-linux) to run a command as uid 65534")
    drop = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    command = [*drop, sys.executable, "-m", "pytun_hash"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, check=False, cwd="/")
