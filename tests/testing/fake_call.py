"""A fake trapped call for driving the emulator's per-revision kernel logic without seccomp or root.

Shared by the kernel-logic tests and the emulated-kernel fuzz target.
"""

from __future__ import annotations

import errno

import attrs

from pytun_hash.testing.kernel import DeviceInfo, DeviceKey, KernelErrno

FAKE_DEVICE = DeviceInfo(DeviceKey.of(1, 7, "fake0"), "fake0", 0x5002)


@attrs.define
class FakeCall:
    """A trapped call against a byte string of user memory (reads past its end fault) and a scripted device."""

    memory: bytes = b""
    device_present: bool = True
    hdr_sz: int = 20
    little_endian: bool = True
    steering: list[int] = attrs.field(factory=list)
    written: bytes = b""

    @property
    def arg(self) -> int:
        return 0x1000

    def device(self) -> DeviceInfo:
        if not self.device_present:
            raise KernelErrno(errno.EBADFD)
        return FAKE_DEVICE

    def copy_from_user(self, offset: int, length: int) -> bytes:
        assert offset >= 0 and length >= 0, "the emulated kernel asked for a negative copy"
        if offset + length > len(self.memory):
            raise KernelErrno(errno.EFAULT)
        return self.memory[offset : offset + length]

    def copy_to_user(self, offset: int, data: bytes) -> None:
        assert offset >= 0, "the emulated kernel wrote before the argument"
        self.written = data

    def vnet_hdr_sz(self) -> int:
        return self.hdr_sz

    def vnet_is_little_endian(self) -> bool:
        return self.little_endian

    def set_steering_ebpf(self, prog_fd: int) -> int | None:
        self.steering.append(prog_fd)
        return None if prog_fd == -1 else 42

    def set_vnet_hdr_sz(self, size: int) -> None:
        self.hdr_sz = size
