"""A fake trapped call for driving the emulator's per-revision kernel logic without seccomp or root.

Shared by the kernel-logic tests and the emulated-kernel fuzz target: the library's
:class:`~pytun_hash.testing.BufferCall` (the caller's memory is one buffer; copies past its end fault)
with these tests' defaults: one fake device, present, with a 20-byte little-endian vnet header.
"""

from __future__ import annotations

from pytun_hash.testing import BufferCall
from pytun_hash.testing.kernel import DeviceInfo, DeviceKey

FAKE_DEVICE = DeviceInfo(DeviceKey.of(1, 7, "fake0"), "fake0", 0x5002)


class FakeCall(BufferCall):
    """A :class:`BufferCall` on :data:`FAKE_DEVICE` (or on no device), with a scripted vnet header."""

    def __init__(
        self, memory: bytes = b"", *, device_present: bool = True, hdr_sz: int = 20, little_endian: bool = True
    ) -> None:
        super().__init__(
            memory, device=FAKE_DEVICE if device_present else None, vnet_hdr_sz=hdr_sz, little_endian=little_endian
        )

    @property
    def written(self) -> bytes:
        """The bytes the last successful copy to the caller wrote (empty when none)."""
        for copy in reversed(self.copies):
            if copy.to_user and copy.ok:
                return bytes(self.memory[copy.offset : copy.offset + copy.length])
        return b""
