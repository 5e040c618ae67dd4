"""The per-revision kernel logic on its own, with a fake call (no seccomp, no root)."""

from __future__ import annotations

import errno
import struct

import pytest

from pytun_hash._abi import Revision
from pytun_hash.codec import kernel_key_length
from pytun_hash.testing.kernel import EmulatedKernel, KernelErrno, virtio_net_hash_key_length
from tests.testing.fake_call import FAKE_DEVICE, FakeCall

DEV = FAKE_DEVICE


def rfc(flags: int, types: int, mask: int = 0) -> bytes:
    return struct.pack("<B3xIHH", flags, types, mask, 0) + bytes(2 * (mask + 1)) + bytes(range(40))


def test_key_length_matches_the_codecs_independent_copy() -> None:
    for types in [*range(0x200), 0x10000, 0xFFFFFFFF]:
        assert virtio_net_hash_key_length(types) == kernel_key_length(types), hex(types)


def test_rfc_report_needs_a_little_endian_header() -> None:
    """Verified fact 10: on a cross-endian kernel only REPORT is refused while the header is big-endian."""
    kernel = EmulatedKernel(Revision.RFC)
    with pytest.raises(KernelErrno) as info:
        kernel.handle("TUNSETVNETHASH", FakeCall(rfc(0x02, 0x3F), little_endian=False))
    assert info.value.errno == errno.EINVAL
    assert kernel.handle("TUNSETVNETHASH", FakeCall(rfc(0x01, 0x3F), little_endian=False)) == 0
    state = kernel.snapshot(DEV.key)
    assert state.rss and not state.report and kernel.changed == DEV.key


def test_rfc_set_with_rss_detaches_and_ignores_the_result() -> None:
    kernel = EmulatedKernel(Revision.RFC)
    call = FakeCall(rfc(0x01, 0x3F))
    assert kernel.handle("TUNSETVNETHASH", call) == 0
    assert call.steering == [-1]
    call = FakeCall(rfc(0x02, 0x3F))
    assert kernel.handle("TUNSETVNETHASH", call) == 0
    assert call.steering == []


def test_a_snapshot_is_taken_anew_only_when_the_state_changed() -> None:
    """The same configuration applied again leaves the state as it was: the snapshot is the same
    object (the data path and the call log reuse it); any change gives a new, unequal one."""
    kernel = EmulatedKernel(Revision.RFC)
    kernel.handle("TUNSETVNETHASH", FakeCall(rfc(0x01, 0x3F, mask=3)))
    first = kernel.snapshot(DEV.key)
    kernel.handle("TUNSETVNETHASH", FakeCall(rfc(0x01, 0x3F, mask=3)))
    assert kernel.snapshot(DEV.key) is first
    kernel.handle("TUNSETVNETHASH", FakeCall(rfc(0x01, 0x3F, mask=1)))
    second = kernel.snapshot(DEV.key)
    assert second != first and second.indirection_table_mask == 1 and first.indirection_table_mask == 3
    assert second.indirection_table == (0, 0) and len(first.indirection_table) == 4


def test_v3_mask_is_bounded_only_by_u16() -> None:
    kernel = EmulatedKernel(Revision.V3)
    payload = struct.pack("<H2xIHH", 0x0002, 0x3F, 0xFFFF, 0) + bytes(2 * 0x10000) + bytes(40)
    assert kernel.handle("TUNSETVNETHASH", FakeCall(payload)) == 0
    assert len(kernel.snapshot(DEV.key).indirection_table) == 0x10000
    with pytest.raises(KernelErrno) as info:
        kernel.handle("TUNSETVNETHASH", FakeCall(payload[:-1]))
    assert info.value.errno == errno.EFAULT


def test_unknown_request_name_is_a_bug_not_an_errno() -> None:
    with pytest.raises(KeyError):
        EmulatedKernel(Revision.V12).handle("TUNSETVNETHASH", FakeCall())


@pytest.mark.parametrize("revision", list(Revision))
def test_capability_bytes(revision: Revision) -> None:
    call = FakeCall(bytes(16))
    get = {
        Revision.RFC: "TUNGETVNETHASHCAP",
        Revision.V3: "TUNGETVNETHASHCAP",
        Revision.V10: "TUNGETVNETHASHCAP",
        Revision.V12: "TUNGETVNETHASHTYPES",
    }
    assert EmulatedKernel(revision).handle(get[revision], call) == 0
    expected = {
        Revision.RFC: bytes.fromhex("80000000 3f000000"),
        Revision.V3: bytes.fromhex("03000000 3f000000"),
        Revision.V10: bytes.fromhex("03000000 3f000000"),
        Revision.V12: bytes.fromhex("3f000000"),
    }
    assert call.written == expected[revision]
    # Exactly those bytes: the rest of the caller's buffer is untouched.
    assert bytes(call.memory[len(expected[revision]) :]) == bytes(16 - len(expected[revision]))


@pytest.mark.parametrize("revision", list(Revision))
def test_capability_into_a_short_buffer_is_efault(revision: Revision) -> None:
    get = "TUNGETVNETHASHTYPES" if revision is Revision.V12 else "TUNGETVNETHASHCAP"
    call = FakeCall(bytes(3))
    with pytest.raises(KernelErrno) as info:
        EmulatedKernel(revision).handle(get, call)
    assert info.value.errno == errno.EFAULT
    assert [(c.to_user, c.ok) for c in call.copies] == [(True, False)]


def test_v12_automq_zero_clears_everything() -> None:
    kernel = EmulatedKernel(Revision.V12)
    rss = struct.pack("<IHH", 0x3F, 1, 3) + struct.pack("<2H", 1, 0) + bytes(range(40))
    assert kernel.handle("TUNSETVNETREPORTINGRSS", FakeCall(rss)) == 0
    state = kernel.snapshot(DEV.key)
    assert (state.rss, state.report, state.unclassified_queue, state.indirection_table) == (True, True, 3, (1, 0))
    assert kernel.handle("TUNSETVNETREPORTINGAUTOMQ", FakeCall(struct.pack("<I", 0))) == 0
    state = kernel.snapshot(DEV.key)
    assert not state.enabled and state.key == bytes(40) and state.header == b""
