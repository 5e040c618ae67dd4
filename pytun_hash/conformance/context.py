"""What a conformance rule works with: the mode, the revision under test, and scratch devices.

Rules make their own devices (:meth:`Context.scratch`), in the suite's private network namespace,
and talk to them with raw ioctls by request number (:meth:`Context.request`): the suite measures
the kernel, so it never goes through :class:`~pytun_hash.device.hashctl.HashControl` or the codec's
checks, which exist to keep users away from exactly the behaviour the rules look for.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator

import attrs

from pytun_hash._abi import Revision, ioctl_request
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.errors import ValidationError

__all__ = ["Context", "Mode"]


class Mode(enum.Enum):
    """How the suite reaches the kernel behaviour it checks."""

    #: The running kernel's own hash ioctls (a kernel carrying a revision of the series).
    NATIVE = "native"
    #: pytun_hash's kernel emulator of one revision (ioctls and data path), on any kernel.
    EMULATED = "emulated"
    #: pytun_hash's generated eBPF steering program (data rules only; no hash ioctls, no reports).
    EBPF = "ebpf"


@attrs.define
class Context:
    """The suite's state as each rule sees it.

    Attributes:
        mode: native, emulated or eBPF.
        revision: the hash UAPI revision under test (None in eBPF mode).
        netns: the private network namespace the suite runs in (rules make devices there).
        data_path: whether frames can be sent through a scratch device and read back from its
            queues with the hash state in force (false where ``bpf(2)`` is unusable under emulation).
    """

    mode: Mode
    revision: Revision | None
    netns: NetworkNamespace
    data_path: bool = True
    _serial: int = 0

    def request(self, name: str) -> int:
        """The request number of ioctl ``name`` (a tun ioctl, or a hash ioctl of the revision under test).

        Raises:
            ValidationError: when the revision under test has no such ioctl (or there is none: eBPF mode).
        """
        if self.revision is None and name.startswith("TUN") and "HASH" in name:
            raise ValidationError("revision", f"{name}: the eBPF mode has no hash ioctls")
        return ioctl_request(name, revision=self.revision or Revision.RFC)

    @contextlib.contextmanager
    def scratch(
        self,
        queues: int = 4,
        *,
        vnet_hdr_size: int | None = 20,
        little_endian: bool = True,
        attach: bool = True,
    ) -> Iterator[TunTapDevice]:
        """A fresh multi-queue TAP in the suite's namespace, gone when the block ends.

        Args:
            queues: queues attached (1..256); 1 makes a single-queue device.
            vnet_hdr_size: the vnet header size to set (None: leave the kernel's 10; and no header
                flag at all with 0).
            little_endian: make the vnet header little-endian (virtio 1.0).
            attach: keep the queues attached (False: detach every queue but the first).

        Raises:
            KernelError: when the device cannot be made.
        """
        self._serial += 1
        with TunTapDevice.create(
            f"conf{self._serial}q%d", queues=queues, vnet_hdr=vnet_hdr_size != 0, multi_queue=queues > 1 or None
        ) as device:
            if vnet_hdr_size:
                device.set_vnet_hdr_size(vnet_hdr_size)
            if little_endian and vnet_hdr_size != 0:
                device.set_vnet_le(True)
            if not attach:
                for queue in device.attached_queues[1:]:
                    device.detach_queue(queue)
            yield device
