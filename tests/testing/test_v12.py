"""Revision v12 (30 May 2025) as emulated, against that series' ioctl code."""

from __future__ import annotations

import errno
import os
import struct

import pytest

from pytun_hash._abi import Revision
from pytun_hash.codec import kernel_read_length
from pytun_hash.device.netns import NetworkNamespace
from pytun_hash.testing import KernelEmulator
from tests.testing.helpers import (
    TUNSETSTEERINGEBPF,
    V12_AUTOMQ,
    V12_REPORTINGRSS,
    V12_RSS,
    V12_TYPES,
    GuardPage,
    ioctl_at,
    ioctl_errno,
    set_int,
)

pytestmark = pytest.mark.kernel

KEY = bytes(range(0xC0, 0xE8))
NAMES = {V12_RSS: "TUNSETVNETRSS", V12_REPORTINGRSS: "TUNSETVNETREPORTINGRSS"}


def v12_rss_payload(types: int, table: tuple[int, ...], *, unclassified: int = 0) -> bytes:
    """struct tun_vnet_rss (8, no padding) + u16 table + 40-byte key."""
    head = struct.pack("<IHH", types, len(table) - 1, unclassified)
    return head + struct.pack(f"<{len(table)}H", *table) + KEY


def test_types_needs_no_device_and_writes_four_bytes(need_seccomp: None, netns: NetworkNamespace) -> None:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        with KernelEmulator(Revision.V12) as emu, GuardPage() as guard:
            buf = bytearray(b"\xaa" * 8)
            assert emu.run(ioctl_errno, fd, V12_TYPES, buf) == 0
            assert bytes(buf) == bytes.fromhex("3f000000") + b"\xaa" * 4
            assert emu.run(ioctl_at, fd, V12_TYPES, guard.place(bytes(3))) == errno.EFAULT
            assert emu.run(ioctl_at, fd, V12_AUTOMQ, 0) == errno.EBADFD
            assert emu.run(ioctl_at, fd, V12_RSS, 0) == errno.EBADFD
    finally:
        os.close(fd)


def test_automq_reads_a_u32_of_types(tap: list[int]) -> None:
    with KernelEmulator(Revision.V12) as emu, GuardPage() as guard:
        assert emu.run(ioctl_at, tap[0], V12_AUTOMQ, guard.place(b"\x3f\0\0")) == errno.EFAULT
        assert emu.run(ioctl_at, tap[0], V12_AUTOMQ, guard.place(b"\x3f\0\0\0")) == 0
        assert emu.calls[-1].bytes_read == 4
        state = emu.device_state(tap[0])
        assert (state.report, state.rss, state.types) == (True, False, 0x3F)
        assert emu.run(set_int, tap[0], V12_AUTOMQ, 0) == 0
        assert not emu.device_state(tap[0]).enabled


@pytest.mark.parametrize("request_", [V12_RSS, V12_REPORTINGRSS])
@pytest.mark.parametrize(("types", "mask"), [(0x3F, 0), (0x38, 3), (0x01, 127)])
def test_rss_setters_read_exact_byte_counts(tap: list[int], request_: int, types: int, mask: int) -> None:
    table = tuple(range(mask + 1))
    key_len = 40 if types & 7 else 4
    expected = 8 + 2 * (mask + 1) + key_len
    full = v12_rss_payload(types, table)[:expected]
    assert kernel_read_length(Revision.V12, NAMES[request_], full) == expected
    with KernelEmulator(Revision.V12) as emu, GuardPage() as guard:
        assert emu.run(ioctl_at, tap[0], request_, guard.place(full[:-1])) == errno.EFAULT
        assert not emu.device_state(tap[0]).enabled
        assert emu.run(ioctl_at, tap[0], request_, guard.place(full)) == 0
        assert [c.length for c in emu.calls[-1].copies] == [8, 2 * (mask + 1), key_len]
        state = emu.device_state(tap[0])
        assert state.rss and state.report == (request_ == V12_REPORTINGRSS)
        assert state.indirection_table == table and state.key[:key_len] == KEY[:key_len]


@pytest.mark.bpf
def test_steering_program_takes_precedence_without_ebusy(tap2: list[int], bpf_prog: int) -> None:
    fd = tap2[0]
    with KernelEmulator(Revision.V12) as emu:
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, bpf_prog) == 0
        assert emu.run(ioctl_errno, fd, V12_RSS, bytearray(v12_rss_payload(0x3F, (0, 1)))) == 0
        state = emu.device_state(fd)
        assert state.rss and state.steering_attached
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, -1) == 0
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, bpf_prog) == 0
        assert emu.device_state(fd).rss
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, -1) == 0
