"""The RFC revision as emulated, against its ioctl code ("tun: Introduce virtio-net hashing feature",
8 Oct 2023) and what a kernel carrying it was seen to do.

Every case runs on a FakeTunTap (the kernel logic in-process); the representative ones also through
the seccomp emulator on a real TAP (``kernel``), and the steering cases with real programs there only.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import Any

import pytest

from pytun_hash._abi import Revision
from pytun_hash.codec import kernel_read_length
from pytun_hash.config import VnetHashCapability
from pytun_hash.testing import KernelEmulator, UserCopy
from tests.testing.bench import BOTH, FAKE, UNATTACHED, MakeBench
from tests.testing.helpers import (
    RFC_CAP,
    RFC_SET,
    TUNGETVNETHDRSZ,
    TUNSETSTEERINGEBPF,
    TUNSETVNETHDRSZ,
    GuardPage,
    ioctl_at,
    ioctl_errno,
    load_socket_filter,
    prog_alive,
    prog_id,
    set_int,
)

RSS, REPORT = 0x01, 0x02
KEY_A = bytes(range(0x10, 0x38))
KEY_B = bytes(range(0x80, 0xA8))


def rfc_payload(
    flags: int,
    types: int,
    table: tuple[int, ...] = (0,),
    *,
    key: bytes = KEY_A,
    unclassified: int = 0,
    mask: int | None = None,
    pad: bytes = b"\0\0\0",
) -> bytes:
    """struct tun_vnet_hash (12 bytes, hidden padding explicit) + u16 table + key."""
    m = len(table) - 1 if mask is None else mask
    head = struct.pack("<B3sIHH", flags, pad, types, m, unclassified)
    return head + struct.pack(f"<{len(table)}H", *table) + key


@pytest.mark.parametrize("where", BOTH)
def test_cap_writes_exactly_eight_bytes(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.RFC)
    buf = bytearray(b"\xaa" * 12)
    assert b.ioctl(RFC_CAP, buf) == 0
    # {max_indirection_table_length=128, 2 zero padding bytes, types=0x3f}; nothing beyond.
    assert bytes(buf) == bytes.fromhex("80000000 3f000000") + b"\xaa" * 4
    (call,) = b.calls
    assert call.copies == (UserCopy(True, 0, 8, True),) and call.bytes_written == 8


@pytest.mark.parametrize("where", BOTH)
def test_cap_to_unwritable_memory_is_efault(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.RFC)
    assert b.at(RFC_CAP, bytes(7)) == errno.EFAULT  # the 8th byte is unwritable
    assert b.at(RFC_CAP, bytes(8)) == 0


@pytest.mark.parametrize("where", UNATTACHED)
def test_unattached_fd_is_ebadfd_before_anything_is_read(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.RFC, attached=False)
    # NULL pointers: the device check comes first, so no EFAULT.
    assert b.at(RFC_CAP, None) == errno.EBADFD
    assert b.at(RFC_SET, None) == errno.EBADFD
    assert b.at(TUNSETSTEERINGEBPF, None) == errno.EBADFD
    assert all(c.copies == () and c.ifname is None for c in b.calls)


_BYTE_COUNTS = [
    (0, 0, 0, 18),  # the minimum: hashing off still reads table and key
    (RSS, 0x3F, 1, 56),
    (RSS, 0x3F, 127, 308),  # the maximum
    (RSS, 0x38, 0, 18),  # IPv6 only: 4 key bytes (the enum mix-up)
    (RSS, 0x01, 3, 60),  # IPv4 only: 40 key bytes
    (RSS, 0x1C0, 2, 22),  # EX types only: 4 key bytes; mask+1 need not be a power of two
]


def _byte_count_cases() -> list[Any]:
    cases = [pytest.param("fake", *c, id=f"fake-{c[0]}-{c[1]:#x}-{c[2]}") for c in _BYTE_COUNTS]
    # Through the seccomp emulator's reads of real memory: the largest payload.
    c = _BYTE_COUNTS[2]
    cases.append(pytest.param("kernel", *c, id=f"kernel-{c[0]}-{c[1]:#x}-{c[2]}", marks=pytest.mark.kernel))
    return cases


@pytest.mark.parametrize(("where", "flags", "types", "mask", "expected"), _byte_count_cases())
def test_set_reads_exact_byte_counts(
    make_bench: MakeBench, where: str, flags: int, types: int, mask: int, expected: int
) -> None:
    table = tuple(range(mask + 1))
    full = rfc_payload(flags, types, table)[:expected]
    assert kernel_read_length(Revision.RFC, "TUNSETVNETHASH", full) == expected
    key_len = expected - 12 - 2 * (mask + 1)
    b = make_bench(where, Revision.RFC)
    before = b.state()
    # One byte short: the last byte the kernel reads is unreadable.
    assert b.at(RFC_SET, full[:-1]) == errno.EFAULT
    assert b.state() == before
    assert b.calls[-1].copies[-1] == UserCopy(False, 12 + 2 * (mask + 1), key_len, False)
    assert b.states == []
    # Every byte present: success, and exactly `expected` bytes were read, in three copies.
    assert b.at(RFC_SET, full) == 0
    call = b.calls[-1]
    assert call.bytes_read == expected
    assert call.copies == (
        UserCopy(False, 0, 12, True),
        UserCopy(False, 12, 2 * (mask + 1), True),
        UserCopy(False, 12 + 2 * (mask + 1), key_len, True),
    )
    state = b.state()
    assert state.indirection_table == table and state.types == types and state.flags == flags
    assert state.key_loaded == key_len and state.key[:key_len] == full[-key_len:]


@pytest.mark.parametrize("where", [FAKE])
@pytest.mark.parametrize("missing_in", ["header", "table"])
def test_fault_in_header_or_table_stops_there(make_bench: MakeBench, where: str, missing_in: str) -> None:
    full = rfc_payload(RSS, 0x3F, (0, 1, 0, 1))
    cut = 11 if missing_in == "header" else 12 + 7
    b = make_bench(where, Revision.RFC)
    assert b.at(RFC_SET, full[:cut]) == errno.EFAULT
    copies = b.calls[-1].copies
    assert copies[-1].ok is False and len(copies) == (1 if missing_in == "header" else 2)
    assert not b.state().enabled


@pytest.mark.parametrize("where", BOTH)
def test_validation_order_and_errno(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.RFC)
    # Only the 12-byte header is readable: EINVAL wins over the EFAULT the table would give.
    assert b.at(RFC_SET, rfc_payload(0, 0, mask=128)[:12]) == errno.EINVAL
    assert b.at(RFC_SET, rfc_payload(0, 0, mask=0xFFFF)[:12]) == errno.EINVAL
    # mask >= 128 is refused whether or not RSS is asked; mask 127 is fine.
    assert b.at(RFC_SET, rfc_payload(0, 0, tuple(range(128)))) == 0
    # REPORT with the default 10-byte vnet header: EINVAL, again before the table is read.
    assert b.get_int(TUNGETVNETHDRSZ) == 10
    assert b.at(RFC_SET, rfc_payload(REPORT, 0x3F)[:12]) == errno.EINVAL
    assert [len(c.copies) for c in b.calls] == [1, 1, 3, 1]
    # With a 20-byte header the same call succeeds.
    assert b.device_set_int(TUNSETVNETHDRSZ, 20) == 0
    assert b.at(RFC_SET, rfc_payload(REPORT, 0x3F)) == 0
    # An unreadable header is EFAULT even when its content would be invalid.
    assert b.at(RFC_SET, b"") == errno.EFAULT


@pytest.mark.parametrize("where", [FAKE])
def test_unchecked_fields_are_accepted_and_stored(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.RFC)
    payload = rfc_payload(0x04 | RSS, 0x1FF, (7, 9, 11), pad=b"\x01\x02\x03", unclassified=0xFFFF)
    assert b.at(RFC_SET, payload) == 0
    state = b.state()
    assert state.flags == 0x05 and state.rss and not state.report
    assert state.types == 0x1FF and state.unclassified_queue == 0xFFFF
    assert state.indirection_table == (7, 9, 11)
    assert state.header == payload[:12]  # the padding bytes are stored as sent


@pytest.mark.parametrize("where", [FAKE])
def test_stale_key_bytes_beyond_keylen(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.RFC)
    # Fresh device, IPv6-only types: 4 key bytes loaded, the rest stay zero.
    assert b.ioctl(RFC_SET, bytearray(rfc_payload(RSS, 0x38, key=KEY_B))) == 0
    state = b.state()
    assert state.key == KEY_B[:4] + bytes(36) and state.key_loaded == 4
    # A full 40-byte load, then IPv6-only again: only the first 4 bytes are replaced.
    assert b.ioctl(RFC_SET, bytearray(rfc_payload(0, 0x01, key=KEY_A))) == 0
    assert b.ioctl(RFC_SET, bytearray(rfc_payload(RSS, 0x38, key=KEY_B))) == 0
    state = b.state()
    assert state.key == KEY_B[:4] + KEY_A[4:]
    assert [s.key_loaded for _, s in b.states] == [4, 40, 4]


@pytest.mark.parametrize("where", [FAKE])
def test_commit_only_after_every_copy(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.RFC)
    good = rfc_payload(RSS, 0x3F, (1, 0), key=KEY_A)
    assert b.at(RFC_SET, good) == 0
    kept = b.state()
    bad = rfc_payload(REPORT, 0x3F, (3, 3, 3, 3), key=KEY_B)
    assert b.device_set_int(TUNSETVNETHDRSZ, 20) == 0
    assert b.at(RFC_SET, bad[:-1]) == errno.EFAULT
    assert b.state() == kept
    assert len(b.states) == 1


@pytest.mark.kernel
@pytest.mark.bpf
def test_steering_attach_silently_clears_rss_and_set_detaches_for_real(tap2: list[int], need_bpf: None) -> None:
    fd = tap2[0]
    assert set_int(fd, TUNSETVNETHDRSZ, 20) == 0
    prog = load_socket_filter()
    pid = prog_id(prog)
    try:
        with KernelEmulator(Revision.RFC) as emu:
            assert emu.run(ioctl_errno, fd, RFC_SET, bytearray(rfc_payload(RSS | REPORT, 0x3F, (0, 1)))) == 0
            # Attach: the real device takes the program, then the RFC drops RSS and keeps REPORT.
            assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, prog) == 0
            state = emu.device_state(fd)
            assert (state.flags, state.rss, state.report) == (REPORT, False, True)
            assert state.steering_attached and state.steering_prog_id == pid
            os.close(prog)
            prog = -1
            assert prog_alive(pid)  # held by the device, so it really is attached
            # REPORT-only SET leaves the program alone.
            assert emu.run(ioctl_errno, fd, RFC_SET, bytearray(rfc_payload(REPORT, 0x3F))) == 0
            assert emu.device_state(fd).steering_attached and prog_alive(pid)
            # SET with RSS detaches the program from the real device, silently.
            assert emu.run(ioctl_errno, fd, RFC_SET, bytearray(rfc_payload(RSS, 0x3F, (0, 1)))) == 0
            state = emu.device_state(fd)
            assert state.rss and not state.steering_attached and state.steering_prog_id is None
            assert not prog_alive(pid, settle=2.0)
    finally:
        if prog >= 0:
            os.close(prog)


@pytest.mark.kernel
@pytest.mark.bpf
def test_steering_detach_and_failures_leave_flags(tap: list[int], bpf_prog: int) -> None:
    fd = tap[0]
    with KernelEmulator(Revision.RFC) as emu, GuardPage() as guard:
        assert emu.run(ioctl_errno, fd, RFC_SET, bytearray(rfc_payload(RSS, 0x3F))) == 0
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, -1) == 0  # nothing attached: still 0
        null = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        try:
            assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, null) == errno.EINVAL  # not a bpf fd
        finally:
            os.close(null)
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, 999_999) == errno.EBADF
        assert emu.run(ioctl_at, fd, TUNSETSTEERINGEBPF, guard.place(b"\xff\xff\xff")) == errno.EFAULT
        state = emu.device_state(fd)
        assert state.rss and state.flags == RSS and not state.steering_attached
        # A real attach, then a detach: flags untouched by the detach.
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, bpf_prog) == 0
        assert emu.run(ioctl_errno, fd, RFC_SET, bytearray(rfc_payload(REPORT | RSS, 0x3F))) == errno.EINVAL
        assert emu.run(set_int, fd, TUNSETSTEERINGEBPF, -1) == 0
        state = emu.device_state(fd)
        assert state.flags == 0 and not state.steering_attached


@pytest.mark.parametrize("where", BOTH)
def test_vnet_hdr_sz_floor_while_report(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.RFC)
    assert b.set_int(TUNSETVNETHDRSZ, 12) == 0  # no REPORT: forwarded
    assert b.get_int(TUNGETVNETHDRSZ) == 12
    assert b.set_int(TUNSETVNETHDRSZ, 8) == errno.EINVAL  # below 10, always
    assert b.set_int(TUNSETVNETHDRSZ, 20) == 0
    assert b.ioctl(RFC_SET, bytearray(rfc_payload(REPORT, 0x3F))) == 0
    for size in (10, 19):
        assert b.set_int(TUNSETVNETHDRSZ, size) == errno.EINVAL
    assert b.get_int(TUNGETVNETHDRSZ) == 20
    assert b.set_int(TUNSETVNETHDRSZ, 24) == 0
    assert b.get_int(TUNGETVNETHDRSZ) == 24
    assert b.at(TUNSETVNETHDRSZ, b"\x14\x00\x00") == errno.EFAULT
    # Once REPORT is off again, 10 is allowed.
    assert b.ioctl(RFC_SET, bytearray(rfc_payload(0, 0))) == 0
    assert b.set_int(TUNSETVNETHDRSZ, 10) == 0


@pytest.mark.parametrize("where", [FAKE])
def test_custom_capability_bounds_the_mask(make_bench: MakeBench, where: str) -> None:
    cap = VnetHashCapability(Revision.RFC, 0x1FF, max_indirection_table_length=64)
    b = make_bench(where, Revision.RFC, capability=cap)
    buf = bytearray(8)
    assert b.ioctl(RFC_CAP, buf) == 0
    assert bytes(buf) == bytes.fromhex("40000000 ff010000")
    # mask 64 >= 64 entries: EINVAL; mask 63 (64 entries) is the largest accepted.
    assert b.ioctl(RFC_SET, bytearray(rfc_payload(0, 0, tuple(range(65))))) == errno.EINVAL
    assert b.ioctl(RFC_SET, bytearray(rfc_payload(0, 0, tuple(range(64))))) == 0


@pytest.mark.parametrize("where", [FAKE])
def test_state_log_records_each_commit(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.RFC)
    b.ioctl(RFC_CAP, bytearray(8))
    b.ioctl(RFC_SET, bytearray(rfc_payload(RSS, 0x3F, (1, 0))))
    b.ioctl(RFC_SET, bytearray(rfc_payload(0, 0, mask=200)[:12] + bytes(500)))
    b.ioctl(RFC_SET, bytearray(rfc_payload(0, 0x3F)))
    assert [i for i, _ in b.states] == [1, 3]
    assert [c.errno for c in b.calls] == [0, 0, errno.EINVAL, 0]
    assert b.states[0][1].rss and not b.states[1][1].rss
    assert all(s.ifname == b.calls[0].ifname for _, s in b.states)
