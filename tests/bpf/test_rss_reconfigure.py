"""Back-to-back reconfigurations make no system call that could wait for a grace period.

A reconfiguration writes a slot through ``mmap`` and flips ``active`` (pytun_hash.bpf.shared): the
tests record every ``syscall(2)`` the library makes while reconfiguring (``bpf``, ``membarrier``,
anything) and every sleep, and check the configuration in force after each call through
``BPF_PROG_TEST_RUN``; no clock is read by the tests themselves.
"""

from __future__ import annotations

import errno
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from pytun_hash import _sys
from pytun_hash._abi.virtio_net import HashType
from pytun_hash.bpf import rss as rss_module
from pytun_hash.bpf import syscall as syscall_module
from pytun_hash.bpf.maps import ArrayMap, BpfMap
from pytun_hash.bpf.prog import Program
from pytun_hash.bpf.rss import EbpfRss
from pytun_hash.bpf.rss_program import RssOutput
from pytun_hash.bpf.shared import SLOT_REST, SLOTS
from pytun_hash.config import VnetHashConfig
from pytun_hash.errors import BpfError
from pytun_hash.model.toeplitz import toeplitz_hash

SRC, DST = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
PORTS = struct.pack("!HH", 1234, 80)
FRAME = (
    bytes(12) + b"\x08\x00"
    + struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, SRC, DST) + PORTS + bytes(16)
)  # fmt: skip


def config(i: int) -> VnetHashConfig:
    return VnetHashConfig(rss=True, types=HashType.TCPV4, key=bytes([i + 1]) * 40)


def in_force(rss: EbpfRss, i: int) -> bool:
    return rss.test_run(FRAME).retval == toeplitz_hash(config(i).key, SRC + DST + PORTS)


class Calls:
    """Every ``_sys.syscall`` and ``time.sleep`` the library makes while :meth:`watching`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.syscalls: list[int] = []
        self.sleeps: list[float] = []
        self._on = False
        real_syscall, real_sleep = _sys.syscall, time.sleep

        def syscall(nr: int, *args: object) -> int:
            if self._on:
                self.syscalls.append(nr)
            return real_syscall(nr, *args)

        def sleep(seconds: float) -> None:
            if self._on:
                self.sleeps.append(seconds)
            real_sleep(seconds)

        monkeypatch.setattr(_sys, "syscall", syscall)
        monkeypatch.setattr(time, "sleep", sleep)

    @contextmanager
    def watching(self) -> Iterator[None]:
        self._on = True
        try:
            yield
        finally:
            self._on = False


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    return Calls(monkeypatch)


@pytest.mark.bpf
def test_back_to_back_reconfigurations_make_no_system_call(calls: Calls) -> None:
    with EbpfRss.load(config(0), output=RssOutput.HASH) as rss:
        ids = rss.object_ids()
        for i in range(1, 25):
            with calls.watching():
                rss.reconfigure(config(i))
            assert in_force(rss, i)
        # Neither bpf(2) nor membarrier(2): nothing that could sit out a grace period.
        assert calls.syscalls == []
        # Only a slot that was active a moment ago is waited for, never longer than its rest.
        assert all(0 < s <= SLOT_REST for s in calls.sleeps)
        # The same program and maps throughout: pins and records stay valid.
        assert rss.object_ids() == ids
        assert rss.writer.generation == 25


@pytest.mark.bpf
def test_wait_true_and_settle_wait_for_one_grace_period(calls: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[str] = []
    monkeypatch.setattr(rss_module, "synchronize_rcu", lambda: waited.append("grace period"))
    with EbpfRss.load(config(0), output=RssOutput.HASH) as rss:
        rss.reconfigure(config(1))
        assert waited == []
        rss.reconfigure(config(2), wait=True)
        assert waited == ["grace period"] and in_force(rss, 2)
        rss.settle()
        assert waited == ["grace period"] * 2


def test_synchronize_rcu_is_membarrier_global(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[int, tuple[object, ...]]] = []
    def syscall(nr: int, *args: object) -> int:
        made.append((nr, args))
        return 0

    monkeypatch.setattr(_sys, "syscall", syscall)
    monkeypatch.setattr(syscall_module, "syscall_abi", lambda: "x86_64")
    syscall_module.synchronize_rcu()
    assert made == [(324, (syscall_module.MEMBARRIER_CMD_GLOBAL, 0, 0))]


def test_synchronize_rcu_sleeps_where_membarrier_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(nr: int, *args: object) -> int:
        raise OSError(22, "EINVAL: nohz_full")

    slept: list[float] = []
    monkeypatch.setattr(_sys, "syscall", refused)
    monkeypatch.setattr(time, "sleep", slept.append)
    syscall_module.synchronize_rcu()
    monkeypatch.setattr(syscall_module, "syscall_abi", lambda: "sparc")  # no number known there
    syscall_module.synchronize_rcu()
    assert slept == [syscall_module.GRACE_PERIOD_FALLBACK_S] * 2


def test_synchronize_rcu_returns_on_this_kernel() -> None:
    # Any process may call it; where the kernel refuses, it sleeps instead: either way it returns.
    syscall_module.synchronize_rcu()


@pytest.mark.bpf
def test_object_ids_are_asked_for_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with EbpfRss.load(config(0), output=RssOutput.HASH) as rss:
        first = rss.object_ids()
        asked = 0
        real_map, real_prog = BpfMap.info, Program.info

        def counting_map(self: BpfMap) -> object:
            nonlocal asked
            asked += 1
            return real_map(self)

        def counting_prog(self: Program) -> object:
            nonlocal asked
            asked += 1
            return real_prog(self)

        monkeypatch.setattr(BpfMap, "info", counting_map)
        monkeypatch.setattr(Program, "info", counting_prog)
        for i in range(1, 2 * SLOTS + 1):
            rss.reconfigure(config(i))
            assert rss.object_ids() == first
        assert asked == 0
        assert in_force(rss, 2 * SLOTS)


def test_a_kernel_without_mmapable_maps_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> object:
        raise BpfError(errno.EINVAL, "BPF_MAP_CREATE", "invalid argument")

    monkeypatch.setattr(ArrayMap, "create", refused)
    with pytest.raises(BpfError, match=r"needs Linux 5\.5") as info:
        EbpfRss.load(config(0))
    assert info.value.errno == errno.EINVAL
