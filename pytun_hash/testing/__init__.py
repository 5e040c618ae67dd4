"""Testing utilities: a seccomp kernel emulator of the unmerged tun hash ioctls.

Mainline kernels lack the virtio-net hash ioctls, so code that drives them (this package's
:mod:`pytun_hash.device.hashctl`, or a VMM's own) is tested at the syscall boundary:
:class:`KernelEmulator` runs a function in a disposable, seccomp-filtered thread or child
process and answers exactly the trapped hash ioctls the way the chosen revision's kernel
would, against the real TUN/TAP device; where ``bpf(2)`` works it also emulates that revision's
data path (queue choice, and the hash fields of frames read from the queues). See
:mod:`pytun_hash.testing.kernel` for what each revision does with the ioctls,
:mod:`pytun_hash.testing.datapath` for the data path and :mod:`pytun_hash.testing.emulator` for the
mechanics.

Without root: :class:`FakeTunTap` is a device whose hash ioctls the same kernel logic answers
in-process (no seccomp, no ``/dev/net/tun``, no syscall at all), for unit tests of hash-control
code; :mod:`pytun_hash.testing.fake` says what it models.

Real traffic onto a device's queues (flows sent from a network namespace's own stack, frames
collected per queue) is not a testing matter: it lives in :mod:`pytun_hash.traffic`.

Example::

    with KernelEmulator(Revision.RFC) as emu:
        emu.run(control.apply, config)
        assert emu.device_state(queue_fd).as_config() == config
"""

from __future__ import annotations

from pytun_hash.testing._errors import EmulatorError
from pytun_hash.testing.datapath import DeviceDataPath, HashContext
from pytun_hash.testing.emulator import EmulatedCall, EmulatorFault, EmulatorMode, KernelEmulator, UserCopy
from pytun_hash.testing.fake import BufferCall, FakeQueue, FakeTunTap
from pytun_hash.testing.kernel import DeviceKey, EmulatedHashState, virtio_net_hash_key_length

__all__ = [
    "BufferCall",
    "DeviceDataPath",
    "DeviceKey",
    "EmulatedCall",
    "EmulatedHashState",
    "EmulatorError",
    "EmulatorFault",
    "EmulatorMode",
    "FakeQueue",
    "FakeTunTap",
    "HashContext",
    "KernelEmulator",
    "UserCopy",
    "virtio_net_hash_key_length",
]
