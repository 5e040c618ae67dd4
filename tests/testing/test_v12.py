"""Revision v12 (30 May 2025) as emulated, against that series' ioctl code.

Every case runs on a FakeTunTap (the kernel logic in-process); the representative ones also through
the seccomp emulator on a real TAP (``kernel``), and a real program's precedence there too.
"""

from __future__ import annotations

import errno
import struct
from typing import Any

import pytest

from pytun_hash._abi import Revision
from pytun_hash.codec import kernel_read_length
from pytun_hash.testing import KernelEmulator
from tests.testing.bench import FAKE, UNATTACHED, MakeBench
from tests.testing.helpers import (
    TUNSETSTEERINGEBPF,
    V12_AUTOMQ,
    V12_REPORTINGRSS,
    V12_RSS,
    V12_TYPES,
    ioctl_errno,
    set_int,
)

KEY = bytes(range(0xC0, 0xE8))
NAMES = {V12_RSS: "TUNSETVNETRSS", V12_REPORTINGRSS: "TUNSETVNETREPORTINGRSS"}


def v12_rss_payload(types: int, table: tuple[int, ...], *, unclassified: int = 0) -> bytes:
    """struct tun_vnet_rss (8, no padding) + u16 table + 40-byte key."""
    head = struct.pack("<IHH", types, len(table) - 1, unclassified)
    return head + struct.pack(f"<{len(table)}H", *table) + KEY


@pytest.mark.parametrize("where", UNATTACHED)
def test_types_needs_no_device_and_writes_four_bytes(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.V12, attached=False)
    buf = bytearray(b"\xaa" * 8)
    assert b.ioctl(V12_TYPES, buf) == 0
    assert bytes(buf) == bytes.fromhex("3f000000") + b"\xaa" * 4
    assert b.at(V12_TYPES, bytes(3)) == errno.EFAULT
    assert b.at(V12_AUTOMQ, None) == errno.EBADFD
    assert b.at(V12_RSS, None) == errno.EBADFD


@pytest.mark.parametrize("where", [FAKE])
def test_automq_reads_a_u32_of_types(make_bench: MakeBench, where: str) -> None:
    b = make_bench(where, Revision.V12)
    assert b.at(V12_AUTOMQ, b"\x3f\0\0") == errno.EFAULT
    assert b.at(V12_AUTOMQ, b"\x3f\0\0\0") == 0
    assert b.calls[-1].bytes_read == 4
    state = b.state()
    assert (state.report, state.rss, state.types) == (True, False, 0x3F)
    assert b.set_int(V12_AUTOMQ, 0) == 0
    assert not b.state().enabled


_SETTERS = [(r, t, m) for r in (V12_RSS, V12_REPORTINGRSS) for t, m in ((0x3F, 0), (0x38, 3), (0x01, 127))]


def _setter_cases() -> list[Any]:
    cases = [pytest.param("fake", *c, id=f"fake-{NAMES[c[0]]}-{c[1]:#x}-{c[2]}") for c in _SETTERS]
    # Through the seccomp emulator's reads of real memory: the largest payload (the setters share a path).
    cases += [
        pytest.param("kernel", *c, id=f"kernel-{NAMES[c[0]]}-{c[1]:#x}-{c[2]}", marks=pytest.mark.kernel)
        for c in _SETTERS
        if c[2] == 127 and c[0] == V12_REPORTINGRSS
    ]
    return cases


@pytest.mark.parametrize(("where", "request_", "types", "mask"), _setter_cases())
def test_rss_setters_read_exact_byte_counts(
    make_bench: MakeBench, where: str, request_: int, types: int, mask: int
) -> None:
    table = tuple(range(mask + 1))
    key_len = 40 if types & 7 else 4
    expected = 8 + 2 * (mask + 1) + key_len
    full = v12_rss_payload(types, table)[:expected]
    assert kernel_read_length(Revision.V12, NAMES[request_], full) == expected
    b = make_bench(where, Revision.V12)
    assert b.at(request_, full[:-1]) == errno.EFAULT
    assert not b.state().enabled
    assert b.at(request_, full) == 0
    assert [c.length for c in b.calls[-1].copies] == [8, 2 * (mask + 1), key_len]
    state = b.state()
    assert state.rss and state.report == (request_ == V12_REPORTINGRSS)
    assert state.indirection_table == table and state.key[:key_len] == KEY[:key_len]


@pytest.mark.kernel
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
