"""Revisions v3-v11 (Sep 2024 - Mar 2025) as emulated (the v6-v9 behaviour), against those series' ioctl code.

Every case runs on a FakeTunTap (the kernel logic in-process); the representative ones also through
the seccomp emulator on a real TAP (``kernel``), and the EBUSY rule with a real program there too.
"""

from __future__ import annotations

import errno
import struct
from typing import Any

import pytest

from pytun_hash._abi import Revision
from pytun_hash.codec import kernel_read_length
from pytun_hash.testing import KernelEmulator, UserCopy
from tests.testing.bench import BOTH, FAKE, UNATTACHED, MakeBench
from tests.testing.helpers import (
    TUNGETVNETHDRSZ,
    TUNSETSTEERINGEBPF,
    V3_CAP,
    V3_SET,
    GuardPage,
    ioctl_at,
    ioctl_errno,
    set_int,
)

REPORT, RSS = 0x0001, 0x0002
KEY = bytes(range(0x40, 0x68))
CAP_BYTES = bytes.fromhex("0300 0000 3f000000")


def v3_payload(flags: int, types: int, table: tuple[int, ...] = (0,), *, unclassified: int = 0) -> bytes:
    """struct tun_vnet_hash (8) [+ tun_vnet_hash_rss (4) + u16 table + 40-byte key when RSS]."""
    head = struct.pack("<H2xI", flags, types)
    if not flags & RSS:
        return head
    return head + struct.pack("<HH", len(table) - 1, unclassified) + struct.pack(f"<{len(table)}H", *table) + KEY


@pytest.mark.parametrize("where", UNATTACHED)
def test_cap_needs_no_device(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.V3, attached=False)
    buf = bytearray(b"\xaa" * 10)
    assert b.ioctl(V3_CAP, buf) == 0
    assert bytes(buf) == CAP_BYTES + b"\xaa\xaa"
    assert b.ioctl(V3_SET, bytearray(v3_payload(0, 0))) == errno.EBADFD
    assert [c.bytes_written for c in b.calls] == [8, 0]


@pytest.mark.parametrize("where", BOTH)
def test_cap_answers_after_the_device_is_deleted(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.V3)
    buf = bytearray(8)
    assert b.ioctl(V3_CAP, buf) == 0 and bytes(buf) == CAP_BYTES
    # After the device is deleted under the open queue fd, CAP still answers; SET does not.
    b.delete()
    buf = bytearray(8)
    assert b.ioctl(V3_CAP, buf) == 0 and bytes(buf) == CAP_BYTES
    assert b.ioctl(V3_SET, bytearray(v3_payload(0, 0))) == errno.EBADFD
    assert [c.bytes_written for c in b.calls] == [8, 8, 0]


_BYTE_COUNTS = [
    (0, 0x3F, 0, 8),  # without RSS only the 8-byte header is read
    (REPORT, 0x3F, 5, 8),
    (RSS, 0x3F, 0, 8 + 4 + 2 + 40),
    (RSS | REPORT, 0x38, 1, 8 + 4 + 4 + 4),  # IPv6 only: 4 key bytes
    (RSS, 0x07, 255, 8 + 4 + 512 + 40),  # no 128-entry bound in v3-v11
]


def _byte_count_cases() -> list[Any]:
    cases = [pytest.param("fake", *c, id=f"fake-{c[0]}-{c[1]:#x}-{c[2]}") for c in _BYTE_COUNTS]
    # Through the seccomp emulator's reads of real memory: the largest payload.
    c = _BYTE_COUNTS[-1]
    cases.append(pytest.param("kernel", *c, id=f"kernel-{c[0]}-{c[1]:#x}-{c[2]}", marks=pytest.mark.kernel))
    return cases


@pytest.mark.parametrize(("where", "flags", "types", "mask", "expected"), _byte_count_cases())
def test_set_reads_exact_byte_counts(
    make_bench: MakeBench, where: str, flags: int, types: int, mask: int, expected: int
) -> None:
    full = v3_payload(flags, types, tuple(i % 4 for i in range(mask + 1)))[:expected]
    assert kernel_read_length(Revision.V3, "TUNSETVNETHASH", full) == expected
    b = make_bench(where, Revision.V3)
    assert b.at(V3_SET, full[:-1]) == errno.EFAULT
    assert not b.state().enabled
    assert b.at(V3_SET, full) == 0
    call = b.calls[-1]
    assert call.bytes_read == expected
    if flags & RSS:
        assert [c.length for c in call.copies] == [8, 4, 2 * (mask + 1), expected - 12 - 2 * (mask + 1)]
    state = b.state()
    assert state.rss == bool(flags & RSS) and state.report == bool(flags & REPORT)
    assert state.header == full[: 12 if flags & RSS else 8]


@pytest.mark.kernel
@pytest.mark.bpf
def test_ebusy_both_ways(tap2: list[int], bpf_prog: int) -> None:
    fd = tap2[0]
    with KernelEmulator(Revision.V3) as emu, GuardPage() as guard:
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, bpf_prog) == 0
        # RSS while a program is attached: EBUSY right after the 8-byte header.
        assert emu.run(ioctl_at, fd, V3_SET, guard.place(v3_payload(RSS, 0x3F, (0, 1))[:8])) == errno.EBUSY
        assert emu.calls[-1].copies == (UserCopy(False, 0, 8, True),)
        # Reporting alone does not conflict.
        assert emu.run(ioctl_errno, fd, V3_SET, bytearray(v3_payload(REPORT, 0x3F))) == 0
        # Detach (always allowed), enable RSS, then attaching is EBUSY; detaching still works.
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, -1) == 0
        assert emu.run(ioctl_errno, fd, V3_SET, bytearray(v3_payload(RSS, 0x3F, (0, 1)))) == 0
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, bpf_prog) == errno.EBUSY
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, -1) == 0
        state = emu.device_state(fd)
        assert state.rss and not state.steering_attached
        # The fd is read before the EBUSY check: a bad pointer is EFAULT.
        assert emu.run(ioctl_at, fd, TUNSETSTEERINGEBPF, guard.place(b"\0\0\0")) == errno.EFAULT
        # Turning RSS off makes attaching possible again.
        assert emu.run(ioctl_errno, fd, V3_SET, bytearray(v3_payload(0, 0))) == 0
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, bpf_prog) == 0
        assert emu.device_state(fd).steering_attached
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, -1) == 0


@pytest.mark.parametrize("where", [FAKE])
def test_report_needs_no_large_header_from_v5(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.V3)
    assert b.get_int(TUNGETVNETHDRSZ) == 10
    assert b.ioctl(V3_SET, bytearray(v3_payload(REPORT, 0x3F))) == 0
    assert b.state().report


@pytest.mark.parametrize("where", [FAKE])
def test_each_set_replaces_the_whole_state(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.V3)
    assert b.ioctl(V3_SET, bytearray(v3_payload(RSS, 0x3F, (2, 3), unclassified=1))) == 0
    state = b.state()
    assert state.indirection_table == (2, 3) and state.key == KEY and state.unclassified_queue == 1
    assert b.ioctl(V3_SET, bytearray(v3_payload(REPORT, 0x38))) == 0
    state = b.state()
    assert (state.rss, state.report, state.types) == (False, True, 0x38)
    assert state.indirection_table == () and state.key == bytes(40) and state.key_loaded == 0
    # IPv6-only RSS loads 4 key bytes; the rest is uninitialised in the kernel, shown as zero.
    assert b.ioctl(V3_SET, bytearray(v3_payload(RSS, 0x38))) == 0
    state = b.state()
    assert state.key_loaded == 4 and state.key == KEY[:4] + bytes(36)


@pytest.mark.parametrize("where", UNATTACHED)
def test_unattached_fd(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.V3, attached=False)
    assert b.at(V3_SET, None) == errno.EBADFD
    assert b.at(TUNSETSTEERINGEBPF, None) == errno.EBADFD
    assert b.at(V3_CAP, None) == errno.EFAULT  # CAP has no device check
