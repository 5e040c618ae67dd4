"""The emulator's mechanics: what it traps, what reaches the real kernel, failure handling, cleanup.

What needs no device runs on an unattached /dev/net/tun fd (no root: only /dev/net/tun and seccomp);
what needs one on a real TAP in the test's namespace (root).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import threading
import time

import pytest

import pytun_hash
from pytun_hash import errors
from pytun_hash._abi import Revision, ioctl_request
from pytun_hash.config import VnetHashConfig
from pytun_hash.device.netns import NetworkNamespace
from pytun_hash.errors import DeviceGoneError, KernelError, PytunHashError, ValidationError
from pytun_hash.testing import EmulatorError, EmulatorFault, EmulatorMode, KernelEmulator, _seccomp
from tests.testing.helpers import (
    RFC_CAP,
    RFC_SET,
    TUNGETVNETHDRSZ,
    TUNSETVNETHDRSZ,
    V3_CAP,
    V12_TYPES,
    get_int,
    ioctl_errno,
    open_fds,
    open_tap,
    set_int,
)

# The numbers from the specification (x86-64), written out so the ABI layer is checked too.
EXPECTED_TRAPS = {
    Revision.RFC: {
        0x000054E4: "TUNGETVNETHASHCAP",
        0x400454E5: "TUNSETVNETHASH",
        0x800454E0: "TUNSETSTEERINGEBPF",
        0x400454D8: "TUNSETVNETHDRSZ",
    },
    Revision.V3: {0x800854E4: "TUNGETVNETHASHCAP", 0x400854E5: "TUNSETVNETHASH", 0x800454E0: "TUNSETSTEERINGEBPF"},
    Revision.V10: {0x800854E4: "TUNGETVNETHASHCAP", 0x400854E5: "TUNSETVNETHASH", 0x800454E0: "TUNSETSTEERINGEBPF"},
    Revision.V12: {
        0x800454E4: "TUNGETVNETHASHTYPES",
        0x800454E5: "TUNSETVNETREPORTINGAUTOMQ",
        0x800854E6: "TUNSETVNETREPORTINGRSS",
        0x800854E7: "TUNSETVNETRSS",
        0x800454E0: "TUNSETSTEERINGEBPF",
    },
}
GET_REQUEST = {Revision.RFC: RFC_CAP, Revision.V3: V3_CAP, Revision.V10: V3_CAP, Revision.V12: V12_TYPES}
# Every other revision's numbers are trapped too, and answered as an unknown ioctl.
_FOREIGN = {
    Revision.RFC: {0x000054E4: "TUNGETVNETHASHCAP[rfc]", 0x400454E5: "TUNSETVNETHASH[rfc]"},
    Revision.V3: {0x800854E4: "TUNGETVNETHASHCAP[v3]", 0x400854E5: "TUNSETVNETHASH[v3]"},
    Revision.V12: {
        0x800454E4: "TUNGETVNETHASHTYPES[v12]",
        0x800454E5: "TUNSETVNETREPORTINGAUTOMQ[v12]",
        0x800854E6: "TUNSETVNETREPORTINGRSS[v12]",
        0x800854E7: "TUNSETVNETRSS[v12]",
    },
}
for _own, _traps in EXPECTED_TRAPS.items():
    for _abi, _names in _FOREIGN.items():
        if _abi is not _own.abi:
            _traps.update(_names)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the expected numbers are x86-64 values")
@pytest.mark.parametrize("revision", list(Revision))
def test_trapped_requests_are_exactly_the_revisions(revision: Revision, need_seccomp: None) -> None:
    with KernelEmulator(revision) as emu:
        assert emu.trapped_requests == EXPECTED_TRAPS[revision]


@pytest.mark.parametrize("revision", list(Revision))
def test_untrapped_ioctls_reach_the_real_kernel(revision: Revision, need_seccomp: None, unattached_tun_fd: int) -> None:
    fd = unattached_tun_fd

    def body() -> tuple[int, int]:
        # The running kernel answers both: an fd without a device is EBADFD to tun.
        size = ioctl_errno(fd, TUNGETVNETHDRSZ, bytearray(4))
        # A neighbouring 'T' number stays untouched too.
        neighbour = ioctl_errno(fd, 0x000054E8, 0)
        return size, neighbour

    with KernelEmulator(revision) as emu:
        assert emu.run(body) == (errno.EBADFD, errno.EBADFD)
        assert emu.calls == []


def test_untrapped_ioctls_reach_the_real_device(tap: list[int]) -> None:
    fd = tap[0]

    def body() -> tuple[int, int]:
        size = get_int(fd, TUNGETVNETHDRSZ)
        # A neighbouring 'T' number stays untouched: the running kernel answers it.
        neighbour = ioctl_errno(fd, 0x000054E8, 0)
        return size, neighbour

    with KernelEmulator(Revision.RFC) as emu:
        size, neighbour = emu.run(body)
        assert size == 10
        assert neighbour == errno.EINVAL
        assert emu.calls == []


@pytest.mark.parametrize("revision", list(Revision))
def test_other_revisions_answer_as_unknown_ioctls_on_an_unattached_fd(
    revision: Revision, need_seccomp: None, unattached_tun_fd: int
) -> None:
    others = [r for r in (Revision.RFC, Revision.V3, Revision.V12) if r is not revision.abi]
    with KernelEmulator(revision) as emu:
        fresh = emu.run(lambda: [ioctl_errno(unattached_tun_fd, GET_REQUEST[r], bytearray(8)) for r in others])
    # Answered by the emulator, as tun answers an ioctl it lacks on an fd without a device: EBADFD.
    assert fresh == [errno.EBADFD] * len(others)
    assert [c.name for c in emu.calls] == [EXPECTED_TRAPS[revision][GET_REQUEST[r]] for r in others]
    assert all(not c.passed_through for c in emu.calls)


# On a live device, once: the same handler answers every revision's foreign numbers (which numbers are
# trapped is checked for each revision above, and the answer without a device too).
@pytest.mark.parametrize("revision", [Revision.RFC])
def test_other_revisions_answer_as_unknown_ioctls_whatever_the_host_has(revision: Revision, tap: list[int]) -> None:
    fd = tap[0]
    others = [r for r in (Revision.RFC, Revision.V3, Revision.V12) if r is not revision.abi]
    with KernelEmulator(revision) as emu:
        attached = emu.run(lambda: [ioctl_errno(fd, GET_REQUEST[r], bytearray(8)) for r in others])
    # Answered by the emulator (so a host kernel carrying another revision cannot leak through):
    # EINVAL on a live device, as tun answers an ioctl it lacks.
    assert attached == [errno.EINVAL] * len(others)
    assert [c.name for c in emu.calls] == [EXPECTED_TRAPS[revision][GET_REQUEST[r]] for r in others]
    assert all(not c.passed_through for c in emu.calls)


@pytest.mark.parametrize("revision", list(Revision))
def test_only_the_worker_thread_is_filtered(revision: Revision, need_seccomp: None, unattached_tun_fd: int) -> None:
    fd = unattached_tun_fd  # no device needed (nor root): the get-ioctl is trapped all the same
    with KernelEmulator(revision) as emu:
        worker = emu.run(_seccomp_mode)
        assert worker == 2  # SECCOMP_MODE_FILTER
        assert _seccomp_mode() == 0
        # The same request from the test thread goes to the real kernel (whatever it answers):
        # the emulator never sees it.
        ioctl_errno(fd, GET_REQUEST[revision], bytearray(8))
        assert emu.calls == []
        # The emulated kernel answers: the RFC's get-ioctl needs a device, the later ones do not.
        expected = errno.EBADFD if revision is Revision.RFC else 0
        assert emu.run(ioctl_errno, fd, GET_REQUEST[revision], bytearray(8)) == expected
        assert len(emu.calls) == 1


def _seccomp_mode() -> int:
    with open("/proc/thread-self/status") as status:
        for line in status:
            if line.startswith("Seccomp:"):
                return int(line.split()[1])
    raise LookupError("no Seccomp line")


def _kernel_at_least(major: int, minor: int) -> bool:
    release = os.uname().release.split("-")[0].split(".")
    return (int(release[0]), int(release[1])) >= (major, minor)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the expected number is the x86-64 value")
def test_sync_wake_up_request_number() -> None:
    # include/uapi/linux/seccomp.h: SECCOMP_IOW(4, __u64)
    assert _seccomp.SECCOMP_IOCTL_NOTIF_SET_FLAGS == 0x40082104
    assert _seccomp.SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP == 1


def test_listeners_ask_for_synchronous_wake_ups(need_seccomp: None) -> None:
    # A disposable thread takes the filter; the listener it returns is tried again from here.
    arch = _seccomp.seccomp_arch()
    program = _seccomp.build_filter(arch, [0x0000DEAD])  # a request nothing makes
    got: list[int] = []
    thread = threading.Thread(target=lambda: got.append(_seccomp.install_listener(arch, program)))
    thread.start()
    thread.join()
    (listener,) = got
    try:
        # Linux 6.6 added the flag (an older kernel may carry it as a backport, or refuse it: the
        # emulator works either way, and asks again harmlessly).
        took = _seccomp.set_sync_wake_up(listener)
        assert _seccomp.set_sync_wake_up(listener) is took
        if _kernel_at_least(6, 6):
            assert took
    finally:
        os.close(listener)


def test_non_tun_fd_passes_through(need_seccomp: None) -> None:
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with KernelEmulator(Revision.RFC) as emu:
            assert emu.run(ioctl_errno, fd, RFC_CAP, bytearray(8)) == errno.ENOTTY
            (call,) = emu.calls
            assert call.passed_through and call.copies == () and call.ifname is None
    finally:
        os.close(fd)


def test_closed_fd_gets_ebadf_from_the_kernel(need_seccomp: None) -> None:
    with KernelEmulator(Revision.RFC) as emu:
        unused = max(open_fds()) + 100
        assert emu.run(ioctl_errno, unused, RFC_CAP, bytearray(8)) == errno.EBADF
        assert emu.calls[0].passed_through


def test_high_bits_of_cmd_are_ignored_as_by_the_kernel(need_seccomp: None, unattached_tun_fd: int) -> None:
    """ioctl(2) truncates cmd to unsigned int; a raw syscall with high bits set is still trapped."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(8)

    def raw() -> int:
        cmd = 0xFFFFFFFF00000000 | V3_CAP
        res = libc.syscall(ctypes.c_long(16), ctypes.c_long(unattached_tun_fd), ctypes.c_ulong(cmd), buf)
        return 0 if res == 0 else ctypes.get_errno()

    # v3's capability ioctl answers without a device, so an unattached fd (no root) shows it.
    with KernelEmulator(Revision.V3) as emu:
        assert emu.run(raw) == 0
        assert buf.raw == bytes.fromhex("030000003f000000")
        assert emu.calls[0].request == V3_CAP


def _add(a: int, b: int = 0) -> int:
    return a + b


def test_exceptions_and_results_cross_back(need_seccomp: None, unattached_tun_fd: int) -> None:
    with KernelEmulator(Revision.RFC) as emu:
        assert emu.run(_add, 2, b=3) == 5
        with pytest.raises(ZeroDivisionError):
            emu.run(lambda: 1 // 0)
        # The emulated errno reaches the caller as a normal OSError (no device behind the fd: EBADFD).
        payload = bytearray(bytes.fromhex("00000000 00000000 c800 0000"))
        with pytest.raises(OSError) as info:
            emu.run(fcntl.ioctl, unattached_tun_fd, RFC_SET, payload, True)
        assert info.value.errno == errno.EBADFD and emu.calls[-1].errno == errno.EBADFD
        assert emu.run(lambda: 7) == 7


def test_handler_failure_answers_eio_and_raises(need_seccomp: None, unattached_tun_fd: int) -> None:
    fd = unattached_tun_fd  # v3's capability ioctl answers without a device
    with KernelEmulator(Revision.V3) as emu:
        emu.inject(EmulatorFault.HANDLER_ERROR, requests={"TUNGETVNETHASHCAP"})
        seen: list[int] = []

        def body() -> None:
            seen.append(ioctl_errno(fd, V3_CAP, bytearray(8)))

        with pytest.raises(EmulatorError, match="handler failed"):
            emu.run(body)
        assert seen == [errno.EIO]
        (call,) = emu.calls
        assert call.errno == errno.EIO and call.failure and "handler of TUNGETVNETHASHCAP failed" in call.failure
        assert len(emu.failures) == 1
        # A handler failure does not break the emulator.
        emu.inject(None)
        assert emu.run(ioctl_errno, fd, V3_CAP, bytearray(8)) == 0


def test_supervisor_death_gives_enosys_and_a_typed_error(need_seccomp: None, unattached_tun_fd: int) -> None:
    fd = unattached_tun_fd
    emu = KernelEmulator(Revision.RFC, timeout=60.0)
    try:
        emu.inject(EmulatorFault.SUPERVISOR_CRASH)
        seen: list[int] = []

        def body() -> None:
            seen.append(ioctl_errno(fd, RFC_CAP, bytearray(8)))
            # Later trapped calls fail fast as well: nobody listens any more.
            seen.append(ioctl_errno(fd, RFC_CAP, bytearray(8)))

        # Well within the 60 s timeout: the crash, not the timeout, ends the run.
        with pytest.raises(EmulatorError, match="supervisor crashed"):
            emu.run(body)
        assert seen == [errno.ENOSYS, errno.ENOSYS]
        with pytest.raises(EmulatorError, match="unusable"):
            emu.run(lambda: None)
    finally:
        emu.close()


def test_timeout_releases_a_target_blocked_in_a_trapped_call(need_seccomp: None, unattached_tun_fd: int) -> None:
    """A supervisor that never answers cannot hang the test."""
    emu = KernelEmulator(Revision.RFC, timeout=0.3)
    try:
        emu.inject(EmulatorFault.STALL)
        seen: list[int] = []
        start = time.monotonic()
        with pytest.raises(EmulatorError, match=r"did not finish within 0\.3 s"):
            emu.run(lambda: seen.append(ioctl_errno(unattached_tun_fd, RFC_CAP, bytearray(8))))
        assert time.monotonic() - start >= 0.3  # it waited for the timeout, no less
        assert seen == [errno.ENOSYS]
    finally:
        emu.close()


def test_timeout_with_a_target_stuck_outside_trapped_calls(need_seccomp: None) -> None:
    r, w = os.pipe()
    emu = KernelEmulator(Revision.RFC, timeout=0.2)
    try:
        with pytest.raises(EmulatorError, match="did not finish"):
            emu.run(os.read, r, 1)
        with pytest.raises(EmulatorError):
            emu.run(lambda: None)
        emu.close()  # must not block on the stuck worker
    finally:
        os.write(w, b"x")  # release the worker; it then exits by itself
        emu.close()
        for t in threading.enumerate():
            if t.name.startswith("pytun-hash-emulator"):
                t.join(2.0)
        os.close(r)
        os.close(w)


def test_nested_run_is_refused(need_seccomp: None) -> None:
    with KernelEmulator(Revision.RFC) as emu, pytest.raises(EmulatorError, match="inside run"):
        emu.run(lambda: emu.run(lambda: None))


def test_closed_emulator_refuses_and_close_is_idempotent(need_seccomp: None) -> None:
    emu = KernelEmulator(Revision.V12)
    emu.close()
    emu.close()
    with pytest.raises(EmulatorError, match="closed"):
        emu.run(lambda: None)


def test_bad_arguments(need_seccomp: None) -> None:
    with pytest.raises(EmulatorError, match="timeout"):
        KernelEmulator(Revision.RFC, timeout=0)
    from pytun_hash.codec import default_capability

    with pytest.raises(ValidationError, match="capability"):
        KernelEmulator(Revision.RFC, capability=default_capability(Revision.V3))


def test_worker_follows_the_callers_network_namespace(need_seccomp: None, netns: NetworkNamespace) -> None:
    """An emulator made before entering a namespace still creates devices where run() is called."""
    name = "emuns0"
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with KernelEmulator(Revision.RFC) as emu:

            def create() -> list[int]:
                return open_tap(name)

            fds = emu.run(create)
            try:
                assert socket.if_nametoindex(name) > 0
                assert emu.run(ioctl_errno, fds[0], RFC_CAP, bytearray(8)) == 0
                assert emu.calls[-1].ifname == name
            finally:
                for fd in fds:
                    os.close(fd)
    finally:
        os.close(home)


def test_threads_started_by_the_function_are_served(need_seccomp: None, unattached_tun_fd: int) -> None:
    results: list[int] = []

    def body() -> None:
        threads = [
            threading.Thread(target=lambda: results.append(ioctl_errno(unattached_tun_fd, V3_CAP, bytearray(8))))
            for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    with KernelEmulator(Revision.V3) as emu:  # its capability ioctl answers without a device
        emu.run(body)
        assert results == [0, 0, 0, 0]
        assert len({c.tid for c in emu.calls}) == 4


def test_reset_log_keeps_device_state(tap: list[int]) -> None:
    with KernelEmulator(Revision.V12) as emu:
        assert emu.run(set_int, tap[0], ioctl_request("TUNSETVNETREPORTINGAUTOMQ", revision=Revision.V12), 1) == 0
        assert emu.calls and emu.states
        emu.reset_log()
        assert emu.calls == [] and emu.states == [] and emu.failures == ()
        assert emu.device_state(tap[0]).report


def test_device_state_lookups(tap: list[int]) -> None:
    with KernelEmulator(Revision.RFC) as emu:
        fresh = emu.device_state(tap[0])
        assert not fresh.enabled and fresh.key == bytes(40) and fresh.indirection_table == (0,)
        assert fresh.as_config() == VnetHashConfig.disabled()
        with pytest.raises(EmulatorError, match="no trapped call"):
            emu.device_state("nosuchdev")
        emu.run(ioctl_errno, tap[0], RFC_CAP, bytearray(8))
        name = emu.calls[0].ifname
        assert name is not None
        assert emu.device_state(name) == fresh
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with pytest.raises(EmulatorError, match="not a TUN/TAP"):
                emu.device_state(null)
        finally:
            os.close(null)
        unattached = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            with pytest.raises(EmulatorError, match="no live device"):
                emu.device_state(unattached)
        finally:
            os.close(unattached)


def test_same_name_in_two_namespaces_are_two_devices(need_seccomp: None, netns: NetworkNamespace) -> None:
    """State is keyed by (namespace, ifindex), not by name."""
    first = open_tap("emudup0")
    try:
        outcome: list[object] = []

        def in_other_namespace() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            assert libc.unshare(0x40000000) == 0
            fds = open_tap("emudup0")
            try:
                with KernelEmulator(Revision.V12) as emu:
                    automq = ioctl_request("TUNSETVNETREPORTINGAUTOMQ", revision=Revision.V12)
                    emu.run(set_int, first[0], automq, 0x3F)
                    emu.run(set_int, fds[0], automq, 0)
                    outcome.append((emu.device_state(first[0]).report, emu.device_state(fds[0]).report))
            finally:
                for fd in fds:
                    os.close(fd)

        t = threading.Thread(target=in_other_namespace)
        t.start()
        t.join()
        assert outcome == [(True, False)]
    finally:
        for fd in first:
            os.close(fd)


# -- process mode ------------------------------------------------------------------------------


def test_process_mode_answers_calls_from_a_child(need_seccomp: None, unattached_tun_fd: int) -> None:
    with KernelEmulator(Revision.V3, mode=EmulatorMode.PROCESS) as emu:  # v3's CAP needs no device

        def body() -> tuple[int, int, bytes]:
            buf = bytearray(b"\xaa" * 8)
            err = ioctl_errno(unattached_tun_fd, V3_CAP, buf)
            return os.getpid(), err, bytes(buf)

        pid, err, data = emu.run(body)
        assert pid != os.getpid()
        assert err == 0 and data == bytes.fromhex("030000003f000000")
        assert emu.calls[0].tid == pid


def test_process_mode_keeps_device_state_across_children(tap: list[int]) -> None:
    with KernelEmulator(Revision.RFC, mode=EmulatorMode.PROCESS) as emu:
        assert emu.run(ioctl_errno, tap[0], RFC_CAP, bytearray(8)) == 0  # the child's device is there
        # Device state persists across children.
        payload = bytearray(bytes.fromhex("01000000 3f000000 0000 0000 0000") + bytes(40))
        assert emu.run(ioctl_errno, tap[0], RFC_SET, payload) == 0
        state = emu.device_state(tap[0])
        assert state.rss and state.types == 0x3F


def test_process_mode_errors(need_seccomp: None, unattached_tun_fd: int) -> None:
    with KernelEmulator(Revision.V3, mode=EmulatorMode.PROCESS, timeout=1.0) as emu:
        with pytest.raises(KernelError) as info:
            emu.run(_raise_kernel_error)
        assert isinstance(info.value, DeviceGoneError) and info.value.errno == errno.EBADFD
        with pytest.raises(EmulatorError, match="could not be pickled"):
            emu.run(threading.Lock)
        with pytest.raises(EmulatorError, match="did not finish"):
            emu.run(time.sleep, 30)  # the 1 s timeout ends it; the child is killed
        # The child was killed and reaped; the emulator stays usable in process mode.
        assert emu.run(ioctl_errno, unattached_tun_fd, V3_CAP, bytearray(8)) == 0


def _raise_kernel_error() -> None:
    from pytun_hash.errors import kernel_error

    raise kernel_error(errno.EBADFD, "TUNSETVNETHASH")


def test_process_mode_handler_failure(need_seccomp: None, unattached_tun_fd: int) -> None:
    with KernelEmulator(Revision.RFC, mode=EmulatorMode.PROCESS) as emu:
        emu.inject(EmulatorFault.HANDLER_ERROR)
        with pytest.raises(EmulatorError, match="handler failed"):
            emu.run(ioctl_errno, unattached_tun_fd, RFC_CAP, bytearray(8))
        assert emu.calls[0].errno == errno.EIO


@pytest.mark.parametrize("mode", list(EmulatorMode))
def test_no_fd_or_thread_leaks_over_many_emulators(
    mode: EmulatorMode, need_seccomp: None, unattached_tun_fd: int
) -> None:
    """The autouse no_leaks fixture checks fds and threads after this loop."""
    for _ in range(5):
        with KernelEmulator(Revision.V3, mode=mode) as emu:
            assert emu.run(ioctl_errno, unattached_tun_fd, V3_CAP, bytearray(8)) == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("pytun-hash-emulator")]


def test_set_vnet_hdr_sz_still_works_untrapped_on_v12(tap: list[int]) -> None:
    with KernelEmulator(Revision.V12) as emu:
        assert emu.run(set_int, tap[0], TUNSETVNETHDRSZ, 12) == 0
        assert get_int(tap[0], TUNGETVNETHDRSZ) == 12
        assert emu.calls == []


def test_emulator_error_belongs_to_the_test_kit() -> None:
    assert issubclass(EmulatorError, PytunHashError)
    assert EmulatorError.__module__.startswith("pytun_hash.testing")
    assert not hasattr(pytun_hash, "EmulatorError") and not hasattr(errors, "EmulatorError")
