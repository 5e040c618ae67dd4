"""Fixtures and skip logic for the emulator tests.

Root, /dev/net/tun and the ``netns`` fixture come from tests/conftest.py; this adds seccomp
and bpf probes, TAP fixtures on raw fds, and a thread and fd leak check for every test here.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Iterator

import pytest

from pytun_hash.device.netns import NetworkNamespace
from pytun_hash.testing import EmulatorError, _seccomp
from tests.testing.bench import MakeBench, bench_factory
from tests.testing.helpers import load_socket_filter, open_fds, open_tap


@functools.cache
def seccomp_skip_reason() -> str | None:
    """Why seccomp user notification cannot be used here, or None."""
    try:
        arch = _seccomp.seccomp_arch()
    except EmulatorError as exc:
        return str(exc)
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            fd = _seccomp.install_listener(arch, _seccomp.build_filter(arch, [0xFFFFFFFF]))
        except EmulatorError as exc:
            outcome.append(f"seccomp user notification unavailable: {exc}")
            return
        os.close(fd)
        outcome.append(None)

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return outcome[0]


@functools.cache
def bpf_skip_reason() -> str | None:
    """Why a socket-filter program cannot be loaded here, or None."""
    try:
        os.close(load_socket_filter())
    except OSError as exc:
        return f"bpf(BPF_PROG_LOAD) refused: {exc} (needs CAP_BPF or root)"
    return None


@pytest.fixture
def need_seccomp() -> None:
    """Skip unless seccomp user notification works."""
    reason = seccomp_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves fds or threads behind."""
    fds = open_fds()
    threads = {t.ident for t in threading.enumerate()}
    yield
    end = time.monotonic() + 2.0
    while True:
        extra_threads = [t for t in threading.enumerate() if t.ident not in threads]
        if not extra_threads or time.monotonic() > end:
            break
        time.sleep(0.01)
    assert not extra_threads, f"threads left running: {extra_threads}"
    assert open_fds() == fds, f"fds leaked: {sorted(open_fds() - fds)}"


@pytest.fixture
def tap(netns: NetworkNamespace, need_seccomp: None) -> Iterator[list[int]]:
    """A one-queue TAP with a vnet header, in the test's namespace; its fds close afterwards."""
    fds = open_tap()
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture
def tap2(netns: NetworkNamespace, need_seccomp: None) -> Iterator[list[int]]:
    """A two-queue TAP with a vnet header, in the test's namespace."""
    fds = open_tap(queues=2)
    try:
        yield fds
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture
def need_bpf() -> None:
    """Skip unless socket-filter programs can be loaded."""
    reason = bpf_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def bpf_prog(need_bpf: None) -> Iterator[int]:
    """A loaded ``r0 = 0; exit`` SOCKET_FILTER program fd."""
    fd = load_socket_filter()
    try:
        yield fd
    finally:
        os.close(fd)


def _require_seccomp() -> None:
    reason = seccomp_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def make_bench() -> Iterator[MakeBench]:
    """``make_bench(where, revision, *, attached=True, queues=1, capability=None)`` (tests/testing/bench.py)."""
    yield from bench_factory(_require_seccomp)
