"""Raw ioctls by request number against one revision's emulated kernel, reached two ways.

* ``fake``: a :class:`~pytun_hash.testing.FakeTunTap`: the kernel logic answers in-process, the
  caller's memory is the argument buffer (a copy past its end faults).
* ``kernel``: a queue fd of a real TAP (or an unattached ``/dev/net/tun`` fd) with the seccomp
  :class:`~pytun_hash.testing.KernelEmulator`, which reads and writes the caller's real memory: a
  payload placed at the end of a readable page faults where it ends.

The per-revision tests (test_rfc.py, test_v3.py, test_v12.py) run on the fake for every case and on
the kernel for the representative ones (what they check of the kernel logic is the same; what the
kernel adds is the seccomp path: real memory, real devices, real programs). An attached ``kernel``
bench needs root (its parameter carries the ``kernel`` mark); an unattached one only needs
``/dev/net/tun`` and seccomp.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import os
import struct
from collections.abc import Callable, Iterator

import pytest

from pytun_hash import KernelError, Revision, VnetHashCapability
from pytun_hash._abi import TUN_IOCTLS, hash_ioctls, layout_for
from pytun_hash.device.netns import NetworkNamespace
from pytun_hash.testing import EmulatedCall, EmulatedHashState, FakeTunTap, KernelEmulator
from tests.testing.helpers import GuardPage, get_int, ifname_of, ioctl_at, ioctl_errno, open_tap, set_int

FAKE = pytest.param("fake", id="fake")
KERNEL = pytest.param("kernel", id="kernel", marks=pytest.mark.kernel)
BOTH = [FAKE, KERNEL]
#: For unattached fds: the real emulator needs no root there, only /dev/net/tun and seccomp.
UNATTACHED = [FAKE, pytest.param("kernel", id="kernel")]

# Request number -> (kernel name, revision whose numbering it belongs to).
_NAMES: dict[int, tuple[str, Revision]] = {d.request(layout_for()): (d.name, Revision.RFC) for d in TUN_IOCTLS}
for _revision in (Revision.RFC, Revision.V3, Revision.V12):
    for _d in hash_ioctls(_revision):
        _NAMES[_d.request(layout_for())] = (_d.name, _revision)


class Bench(abc.ABC):
    """One queue fd and the emulated kernel behind it; every method returns the errno (0: success)."""

    where: str
    revision: Revision

    @abc.abstractmethod
    def ioctl(self, request: int, buf: bytearray) -> int:
        """``ioctl(fd, request, buf)`` through the emulated kernel; its writes land in ``buf``."""

    @abc.abstractmethod
    def at(self, request: int, payload: bytes | None) -> int:
        """``ioctl(fd, request, p)`` where ``p`` holds ``payload`` and the next byte is unreadable (None: NULL)."""

    @abc.abstractmethod
    def set_int(self, request: int, value: int) -> int:
        """``ioctl(fd, request, &value)`` through the emulated kernel."""

    @abc.abstractmethod
    def device_set_int(self, request: int, value: int) -> int:
        """Set an int on the device itself: untrapped on the kernel (the fake is its own kernel)."""

    @abc.abstractmethod
    def get_int(self, request: int) -> int:
        """An int from the device itself (untrapped)."""

    @property
    @abc.abstractmethod
    def calls(self) -> list[EmulatedCall]:
        """Every trapped call so far."""

    @property
    @abc.abstractmethod
    def states(self) -> list[tuple[int, EmulatedHashState]]:
        """``(call index, snapshot)`` after every call that changed the state."""

    @abc.abstractmethod
    def state(self) -> EmulatedHashState:
        """The hash state the emulated kernel holds for the device."""

    @abc.abstractmethod
    def delete(self) -> None:
        """Delete the device under the open fd (``ip link del``)."""


class FakeBench(Bench):
    where = "fake"

    def __init__(self, fake: FakeTunTap, revision: Revision) -> None:
        self.fake = fake
        self.revision = revision

    def _call(self, request: int, buf: bytearray) -> int:
        name, revision = _NAMES[request & 0xFFFFFFFF]
        try:
            self.fake.queue_ioctl(name, buf, revision=revision)
        except KernelError as exc:
            return exc.errno or errno.EIO
        return 0

    def ioctl(self, request: int, buf: bytearray) -> int:
        return self._call(request, buf)

    def at(self, request: int, payload: bytes | None) -> int:
        return self._call(request, bytearray(payload or b""))

    def set_int(self, request: int, value: int) -> int:
        return self._call(request, bytearray(struct.pack("=i", value)))

    def device_set_int(self, request: int, value: int) -> int:
        return self.set_int(request, value)

    def get_int(self, request: int) -> int:
        buf = bytearray(4)
        assert self._call(request, buf) == 0
        value: int = struct.unpack("=i", buf)[0]
        return value

    @property
    def calls(self) -> list[EmulatedCall]:
        return self.fake.calls

    @property
    def states(self) -> list[tuple[int, EmulatedHashState]]:
        return self.fake.states

    def state(self) -> EmulatedHashState:
        return self.fake.kernel_state()

    def delete(self) -> None:
        self.fake.delete()


class KernelBench(Bench):
    where = "kernel"

    def __init__(
        self, fd: int, emu: KernelEmulator, guard: GuardPage, revision: Revision, netns: NetworkNamespace | None
    ) -> None:
        self.fd = fd
        self.emu = emu
        self.guard = guard
        self.revision = revision
        self.netns = netns

    def ioctl(self, request: int, buf: bytearray) -> int:
        return self.emu.run(ioctl_errno, self.fd, request, buf)

    def at(self, request: int, payload: bytes | None) -> int:
        return self.emu.run(ioctl_at, self.fd, request, 0 if payload is None else self.guard.place(payload))

    def set_int(self, request: int, value: int) -> int:
        return self.emu.run(set_int, self.fd, request, value)

    def device_set_int(self, request: int, value: int) -> int:
        return set_int(self.fd, request, value)

    def get_int(self, request: int) -> int:
        return get_int(self.fd, request)

    @property
    def calls(self) -> list[EmulatedCall]:
        return self.emu.calls

    @property
    def states(self) -> list[tuple[int, EmulatedHashState]]:
        return self.emu.states

    def state(self) -> EmulatedHashState:
        return self.emu.device_state(self.fd)

    def delete(self) -> None:
        assert self.netns is not None, "an unattached fd has no device to delete"
        self.netns.delete_link(ifname_of(self.fd))


MakeBench = Callable[..., Bench]


def bench_factory(need_seccomp: Callable[[], None]) -> Iterator[MakeBench]:
    """``make_bench(where, revision, *, attached=True, queues=1, capability=None)``: see the module."""
    with contextlib.ExitStack() as stack:

        def make(
            where: str,
            revision: Revision,
            *,
            attached: bool = True,
            queues: int = 1,
            capability: VnetHashCapability | None = None,
        ) -> Bench:
            if where == "fake":
                fake = stack.enter_context(FakeTunTap(revision, queues=queues, capability=capability))
                if not attached:
                    fake.delete()  # an fd without a device, as far as tun can tell
                return FakeBench(fake, revision)
            need_seccomp()
            netns: NetworkNamespace | None = None
            if attached:
                netns = stack.enter_context(NetworkNamespace(ipv6=False))
                fds = open_tap(queues=queues)
            else:
                try:
                    fds = [os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)]
                except OSError as exc:
                    pytest.skip(f"cannot open /dev/net/tun: {os.strerror(exc.errno or errno.EIO)}")
            for fd in fds:
                stack.callback(os.close, fd)
            emu = stack.enter_context(KernelEmulator(revision, capability=capability))
            guard = stack.enter_context(GuardPage())
            return KernelBench(fds[0], emu, guard, revision, netns)

        yield make
