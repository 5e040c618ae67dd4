"""Who owns which fd in the emulator, and what the target sees when its fd disappears mid-call.

The supervisor handles each trapped call on its own duplicate of the target's fd, so the target
closing the fd (or the number being reused) while the call is handled changes nothing for that call,
as a syscall holds its file in the kernel; a fd already closed when the supervisor takes it up gets
the kernel's own ``EBADF``. The emulator closes only what it owns, exactly once (listeners included,
when :meth:`~KernelEmulator.close` races a running :meth:`~KernelEmulator.run`), and no plain
``OSError`` escapes it. In process mode the child dies with its supervisor.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytun_hash import Revision
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.device.hashctl import HashControl
from pytun_hash.testing import EmulatorError, EmulatorMode, KernelEmulator, _seccomp
from pytun_hash.testing import emulator as emulator_module
from tests.device.traffic import PEER_ADDR, udp_socket, wire_tap
from tests.testing.helpers import RFC_CAP, V3_CAP, V12_TYPES, ioctl_errno
from tests.testing.test_datapath import RSS

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def closes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every ``os.close`` of the test as ``(fd, errno)`` (0: it worked); a close that fails is a double
    close or a close of what the closer did not own."""
    seen: list[tuple[int, int]] = []
    real = os.close

    def close(fd: int) -> None:
        try:
            real(fd)
        except OSError as exc:
            seen.append((fd, exc.errno or -1))
            raise
        seen.append((fd, 0))

    monkeypatch.setattr(os, "close", close)
    return seen


def _failed_closes(seen: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [c for c in seen if c[1]]


def _closing_first(fd: int, original: Callable[..., object]) -> Callable[..., object]:
    """``original``, which first closes the target's ``fd`` (once): the fd disappears right there."""
    done: list[bool] = []

    def wrapper(*args: object, **kwargs: object) -> object:
        if not done:
            done.append(True)
            os.close(fd)
        return original(*args, **kwargs)

    return wrapper


@pytest.mark.kernel
def test_fd_closed_while_its_ioctl_is_handled(
    netns: NetworkNamespace, need_seccomp: None, monkeypatch: pytest.MonkeyPatch, closes: list[tuple[int, int]]
) -> None:
    with TunTapDevice.create("own%d", queues=2) as dev, KernelEmulator(Revision.RFC) as emu:
        fd = os.dup(dev.queues[0].fd)
        # _is_tun is the supervisor's first look at the call's fd, after it took its own reference.
        monkeypatch.setattr(emulator_module, "_is_tun", _closing_first(fd, emulator_module._is_tun))
        # The RFC's capability ioctl needs the device: it is found through the supervisor's reference.
        assert emu.run(ioctl_errno, fd, RFC_CAP, bytearray(8)) == 0
        (call,) = emu.calls
        assert call.errno == 0 and not call.passed_through and call.ifname == dev.name
        assert emu.failures == ()
        with pytest.raises(OSError):
            os.fstat(fd)  # really gone: closed once, by the test
    assert _failed_closes(closes) == []


@pytest.mark.kernel
def test_fd_closed_before_the_supervisor_takes_it_up(
    netns: NetworkNamespace, need_seccomp: None, monkeypatch: pytest.MonkeyPatch, closes: list[tuple[int, int]]
) -> None:
    with TunTapDevice.create("own%d", queues=2) as dev, KernelEmulator(Revision.V12) as emu:
        fd = os.dup(dev.queues[0].fd)
        monkeypatch.setattr(_seccomp, "notif_recv", _closing_first(fd, _seccomp.notif_recv))
        assert emu.run(ioctl_errno, fd, V12_TYPES, bytearray(4)) == errno.EBADF
        (call,) = emu.calls
        assert call.passed_through  # the kernel itself answered EBADF
        assert emu.failures == ()
    assert _failed_closes(closes) == []


@pytest.mark.kernel
@pytest.mark.parametrize("blocking", [False, True], ids=["nonblocking", "blocking"])
def test_fd_closed_while_its_read_is_handled(
    netns: NetworkNamespace,
    need_seccomp: None,
    monkeypatch: pytest.MonkeyPatch,
    closes: list[tuple[int, int]],
    blocking: bool,
) -> None:
    """A read on an emulated device whose fd is closed mid-call still returns its frame, with the
    emulated header; before, the supervisor failed on the vanished fd and answered EIO."""
    with TunTapDevice.create("own%d", queues=1) as dev, KernelEmulator(Revision.V12) as emu, udp_socket() as sock:
        if emu.data_path_unavailable:
            pytest.skip(f"the emulated data path needs bpf(2): {emu.data_path_unavailable}")
        dev.set_vnet_hdr_size(20)
        dev.set_vnet_le(True)
        wire_tap(netns, dev.name)
        control = emu.run(HashControl, dev, revision=Revision.V12)
        emu.run(control.apply, RSS.replace(indirection_table=(0,) * 4))  # one queue: every frame on it
        fd = os.dup(dev.queues[0].fd)
        os.set_blocking(fd, blocking)
        sock.sendto(b"pytun-hash", (PEER_ADDR, 4000))
        assert select.select([fd], [], [], 10)[0]
        # _read_path is the supervisor's first look at a read's fd, after it took its own reference.
        monkeypatch.setattr(emu, "_read_path", _closing_first(fd, emu._read_path))
        reads_before = emu.reads
        n = emu.run(lambda: len(os.read(fd, 2048)))
        assert n > 20 and emu.reads == reads_before + 1  # answered by the emulator, not passed on
        assert emu.failures == ()
    assert _failed_closes(closes) == []


def test_a_process_mode_fd_gone_from_the_child_goes_to_the_kernel(
    need_seccomp: None, unattached_tun_fd: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def vanished(pidfd: int, fd: int) -> int:
        raise OSError(errno.EBADF, "pidfd_getfd: Bad file descriptor")

    monkeypatch.setattr(_seccomp, "pidfd_getfd", vanished)
    with KernelEmulator(Revision.V3, mode=EmulatorMode.PROCESS) as emu:
        # Handed to the kernel, which answers for the fd as it finds it: in a real race, gone (EBADF);
        # here the child still has it, an unattached tun fd, which tun answers EBADFD.
        assert emu.run(ioctl_errno, unattached_tun_fd, V3_CAP, bytearray(8)) == errno.EBADFD
        assert emu.calls[0].passed_through and emu.failures == ()


def test_close_racing_a_run_closes_the_listener_once(
    need_seccomp: None, unattached_tun_fd: int, closes: list[tuple[int, int]]
) -> None:
    emu = KernelEmulator(Revision.V3, timeout=30)
    started, release = threading.Event(), threading.Event()
    outcome: list[BaseException | int] = []

    def target() -> int:
        started.set()
        release.wait(30)
        return ioctl_errno(unattached_tun_fd, V3_CAP, bytearray(8))

    def supervise() -> None:
        try:
            outcome.append(emu.run(target))
        except BaseException as exc:
            outcome.append(exc)

    supervisor = threading.Thread(target=supervise)
    supervisor.start()
    try:
        assert started.wait(30)
        emu.close()  # from another thread, while run() supervises
    finally:
        release.set()
        supervisor.join(60)
    [result] = outcome
    # The supervisor saw its listener closed: a typed error; the target's trapped call got ENOSYS.
    assert isinstance(result, EmulatorError), result
    assert _failed_closes(closes) == []


# -- process mode: the child dies with its supervisor ------------------------------------------

_SUPERVISOR = """
import os, sys, time
from pytun_hash.testing import EmulatorMode, KernelEmulator

def child(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(3600)

with KernelEmulator(mode=EmulatorMode.PROCESS, timeout=3600) as emu:
    emu.run(child, sys.argv[1])
"""


def _state(pid: int) -> str | None:
    """The process's state letter (``Z``: a zombie), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


@pytest.fixture
def supervisor_script(tmp_path: Path) -> Iterator[Path]:
    script = tmp_path / "supervisor.py"
    script.write_text(textwrap.dedent(_SUPERVISOR))
    yield script


def test_process_mode_child_dies_with_its_supervisor(
    need_seccomp: None, supervisor_script: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "child.pid"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    supervisor = subprocess.Popen([sys.executable, str(supervisor_script), str(pid_file)], env=env)
    child = 0
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.exists() and pid_file.read_text()):
            assert supervisor.poll() is None, "the supervisor ended before its child started"
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.01)
        child = int(pid_file.read_text())
        assert _state(child) not in (None, "Z")
        supervisor.send_signal(signal.SIGKILL)
        supervisor.wait(60)
        # PR_SET_PDEATHSIG: the kernel kills the child as its supervisor dies. A zombie is gone too
        # (whoever adopted it reaps it when it gets to it).
        deadline = time.monotonic() + 60
        while _state(child) not in (None, "Z") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(child) in (None, "Z"), f"the emulator's child {child} outlived its supervisor"
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait(60)
        if child and _state(child) not in (None, "Z"):
            os.kill(child, signal.SIGKILL)
