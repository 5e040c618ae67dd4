"""Helpers shared by the CLI tests."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

import pytest

NOBODY = 65534


def tun_open_to_nobody(path: str = "/dev/net/tun") -> bool:
    """Whether uid/gid 65534 without supplementary groups may open ``path`` read-write.

    Machines differ: /dev/net/tun is 0600 on some and 0666 on others (udev rules of virtualisation
    packages), and what an unprivileged caller is refused first depends on it.
    """
    try:
        st = os.stat(path)
    except OSError:
        return False
    if st.st_uid == NOBODY:
        return st.st_mode & 0o600 == 0o600
    if st.st_gid == NOBODY:
        return st.st_mode & 0o060 == 0o060
    return st.st_mode & 0o006 == 0o006


def _as_nobody(setpriv: str) -> list[str]:
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


@functools.cache
def _nobody_cannot_start_python(setpriv: str) -> str | None:
    """Why this interpreter cannot be started as uid 65534 from here, or None when it can (tried once)."""
    done = subprocess.run(
        [*_as_nobody(setpriv), sys.executable, "-c", "import pytun_hash"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    if done.returncode == 0:
        return None
    said = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
    if "setresuid" in said or "setresgid" in said or "setgroups" in said:
        return f"this process may not switch to uid {NOBODY} (no CAP_SETUID/CAP_SETGID): {said}"
    return f"the interpreter {sys.executable} (or pytun_hash) is not accessible to uid {NOBODY}: {said}"


def as_nobody(*options: str) -> list[str]:
    """The setpriv(1) command line that runs what follows it as uid/gid 65534 (plus ``options``, e.g.
    ``--no-new-privs``); skips, with the reason, where that cannot start this interpreter (see
    :func:`run_as_nobody`)."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip(f"needs root and setpriv(1) (util-linux) to run a command as uid {NOBODY}")
    reason = _nobody_cannot_start_python(setpriv)
    if reason is not None:
        pytest.skip(reason)
    return [*_as_nobody(setpriv), *options]


def run_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pytun_hash ARGS`` as uid/gid 65534 without capabilities.

    setpriv(1) keeps the capabilities needed to reach the interpreter until the exec, so this works
    where the interpreter lives below a directory only root may enter. Skips without root or setpriv,
    and, with the precise reason, where a trial run shows the child cannot start: this process may not
    switch uids (root without CAP_SETUID), or the interpreter is not reachable for uid 65534.
    """
    command = [*as_nobody(), sys.executable, "-m", "pytun_hash"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, check=False, cwd="/")
