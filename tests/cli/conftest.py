"""Fixtures for the CLI tests: run ``main()`` in-process and capture what it prints.

Tests marked ``bpf`` are skipped with the precise reason where ``bpf(2)`` cannot create a map,
and fail when a BPF program or map they created is still alive afterwards (the kernel frees
detached programs after an RCU grace period, so the check polls briefly).

Every CLI test keeps its records and pins in its own temporary directories
(``PYTUN_HASH_STATE_DIR``, ``PYTUN_HASH_BPFFS``): nothing touches ``/run/pytun_hash`` or
``/sys/fs/bpf``, and a bpffs a command mounted there is unmounted afterwards.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from pytun_hash import _sys
from pytun_hash.bpf.maps import ArrayMap
from pytun_hash.bpf.pin import is_bpffs
from pytun_hash.cli import main
from pytun_hash.errors import KernelError
from pytun_hash.hashing.state import BPFFS_ENV, STATE_ENV
from tests import tracking

_BPF_SKIP = pytest.StashKey[str | None]()
_RELEASE_TIMEOUT = 5.0


@attrs.frozen
class Run:
    """The outcome of one ``main()`` call."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """``cli(*args) -> Run``: call ``main(args)`` and capture stdout and stderr."""

    def run(*args: str) -> Run:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def _probe_bpf() -> str | None:
    if os.geteuid() != 0:
        return f"not root (euid {os.geteuid()}): eBPF needs root or CAP_BPF plus CAP_NET_ADMIN"
    try:
        with ArrayMap.create(4, 1):
            pass
    except KernelError as exc:
        if exc.errno == errno.EPERM:
            return "bpf(BPF_MAP_CREATE) gives EPERM: eBPF needs CAP_BPF (kernel.unprivileged_bpf_disabled)"
        return f"bpf(2) does not work here: {exc}"
    return None


@pytest.fixture(autouse=True)
def _bpf_guard(request: pytest.FixtureRequest) -> Iterator[None]:
    """Skip ``bpf`` tests where bpf(2) cannot work; fail them when they leave BPF objects alive."""
    if request.node.get_closest_marker("bpf") is None:
        yield
        return
    if _BPF_SKIP not in request.config.stash:
        request.config.stash[_BPF_SKIP] = _probe_bpf()
    reason = request.config.stash[_BPF_SKIP]
    if reason:
        pytest.skip(reason)
    mark = tracking.bpf_mark()
    yield
    # Only the objects this process made count: others may load programs meanwhile.
    progs, maps = tracking.bpf_since(mark)
    deadline = time.monotonic() + _RELEASE_TIMEOUT
    while True:
        alive_p, alive_m = tracking.alive_bpf(progs, maps)
        if not (alive_p or alive_m) or time.monotonic() > deadline:
            break
        time.sleep(0.005)
    if alive_p or alive_m:
        pytest.fail(
            f"BPF objects still alive: programs {sorted(alive_p)}, maps {sorted(alive_m)}", pytrace=False
        )


@pytest.fixture(autouse=True)
def state_roots(
    _bpf_guard: None, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    """``(record root, bpffs root)`` of this test, in the environment the CLI (and its children) read.

    Set up after the BPF guard so that its bpffs is unmounted (freeing what is pinned) before the
    guard looks for live objects.
    """
    base = tmp_path_factory.mktemp("state")
    os.chmod(base, 0o700)
    records, bpffs = str(base / "records"), str(base / "bpffs")
    monkeypatch.setenv(STATE_ENV, records)
    monkeypatch.setenv(BPFFS_ENV, bpffs)
    yield records, bpffs
    while os.path.isdir(bpffs) and is_bpffs(bpffs):
        _sys.umount2(bpffs, _sys.MNT_DETACH)
