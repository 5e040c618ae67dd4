"""A TUN/TAP device without a kernel, for unit tests of hash-control code without privileges.

:class:`FakeTunTap` is a :class:`~pytun_hash.device.base.TunTapBase`, like
:class:`~pytun_hash.device.tap.TunTapDevice`: :class:`~pytun_hash.device.hashctl.HashControl`,
:func:`~pytun_hash.device.hashctl.probe_revision` and :class:`~pytun_hash.hashing.Hashing` (native
backend) take it unmodified. Its hash ioctls are answered in-process by the emulator's kernel logic
(:class:`~pytun_hash.testing.kernel.EmulatedKernel`: the same handlers
:class:`~pytun_hash.testing.KernelEmulator` runs behind seccomp), so it needs no root, no
``/dev/net/tun``, no seccomp and no ``bpf(2)``, and it makes no syscall. What it shares with the real
device is the same code: the steering rule (:class:`~pytun_hash.device.steering.SteeringState`), the
vnet header accessors and the steering-program methods (:class:`~pytun_hash.device.base.TunTapBase`),
the errno-to-error translation (:func:`pytun_hash.device._ioctl.translate_error`) and the kernel's
queue numbering (:class:`~pytun_hash.device.numbering.QueueNumbering`).

:class:`BufferCall` is the :class:`~pytun_hash.testing.kernel.Call` it hands the kernel logic: the
caller's argument buffer as user memory (a copy past its end faults with ``EFAULT``, as
``copy_from_user``/``copy_to_user`` fault past a mapping) and the device as plain values. It is usable
on its own to drive :class:`~pytun_hash.testing.kernel.EmulatedKernel` directly.

What the fake models, and what it does not:

* The hash ioctls of the chosen revision, with that revision's ``TUNSETSTEERINGEBPF`` (and the RFC's
  ``TUNSETVNETHDRSZ``) side effects: the RFC's silent drop of the program by ``TUNSETVNETHASH`` with
  RSS and of RSS by an attach, v3-v9's ``EBUSY``, v10+'s precedence. The other revisions' hash request
  numbers answer as an unknown ioctl (``EBADFD`` on a deleted device, else ``EINVAL``), as under the
  emulator. ``revision=None`` is a kernel without any (mainline).
* The TUN ioctls hash control uses: ``TUNGETIFF``, ``TUNGET/SETVNETHDRSZ``, ``TUNGET/SETVNETLE``,
  ``TUNGET/SETVNETBE`` (``EINVAL``: a kernel without ``CONFIG_TUN_VNET_CROSS_LE``) and
  ``TUNSETSTEERINGEBPF``. Any other TUN ioctl through :meth:`FakeTunTap.queue_ioctl` raises
  ``NotImplementedError``.
* Steering programs are fd numbers only: no program is loaded or checked, and any fd >= 0 attaches.
* Queues are :class:`FakeQueue` objects (no file behind them): attach, detach, close and
  :meth:`FakeTunTap.add_queue` follow tun.c's numbering; no frames flow.
* :meth:`FakeTunTap.delete` is ``ip link del``: every later call answers ``EBADFD``
  (:class:`~pytun_hash.errors.DeviceGoneError`) as on a real deleted device, except the get-ioctls
  that v3+ answer without a device.

Every trapped call (the ones :class:`~pytun_hash.testing.KernelEmulator` would trap) is logged in
:attr:`FakeTunTap.calls` as an :class:`~pytun_hash.testing.EmulatedCall`, with a state snapshot in
:attr:`FakeTunTap.states` after each one that changed the hash state, as the emulator logs them.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import struct
import sys
import threading
from collections.abc import Iterator

from pytun_hash._abi import hash_ioctls, layout_for, require_revision
from pytun_hash._abi.revision import Revision
from pytun_hash._abi.tun import TunFlag
from pytun_hash.config import VnetHashCapability
from pytun_hash.device._ioctl import describe_flags, int_argument, request_number, translate_error
from pytun_hash.device.base import TunTapBase
from pytun_hash.device.numbering import QueueNumbering
from pytun_hash.device.primitives import (
    DEVICE_FLAGS,
    MAX_TAP_QUEUES,
    DeviceMode,
    check_int,
    check_name,
    check_queue_count,
    deleted_queue_error,
    encode_ifreq,
    request_flags,
)
from pytun_hash.device.queue import QueueBase
from pytun_hash.device.record import DeviceId
from pytun_hash.device.steering import SteeringState
from pytun_hash.errors import DeviceGoneError, KernelError, ValidationError
from pytun_hash.testing._errors import EmulatorError
from pytun_hash.testing.emulator import EmulatedCall, UserCopy
from pytun_hash.testing.kernel import DeviceInfo, DeviceKey, EmulatedHashState, EmulatedKernel, KernelErrno

__all__ = ["BufferCall", "FakeQueue", "FakeTunTap"]

_E = "<" if sys.byteorder == "little" else ">"
#: ``sizeof(struct virtio_net_hdr)``: a new device's vnet header size and the smallest one accepted.
_VNET_HDR_MIN = 10
#: Every revision's hash request numbers on this machine: on a kernel without any, unknown ioctls.
_HASH_REQUESTS = frozenset(
    d.request(layout_for()) & 0xFFFFFFFF for r in (Revision.RFC, Revision.V3, Revision.V12) for d in hash_ioctls(r)
)
# Interface indexes of fake devices: distinct per process, so two fakes never share kernel state.
_IFINDEXES = itertools.count(1)


class BufferCall:
    """A :class:`~pytun_hash.testing.kernel.Call` whose user memory is one buffer and whose device is plain values.

    Args:
        memory: the caller's memory from the ioctl's pointer on. A ``bytearray`` is written in place
            (the kernel's writes land in the caller's buffer); ``bytes`` are copied first.
        device: the device attached to the fd; None for an fd without one (a fresh or a deleted
            device's fd: :meth:`device` answers ``EBADFD``).
        vnet_hdr_sz: the device's vnet header size.
        little_endian: what ``tun_is_little_endian()`` says for the device.
        arg: the value reported as the raw pointer argument.

    Attributes:
        memory: the user memory (the caller's ``bytearray`` itself when one was given).
        device_info: the device (None: no device).
        hdr_sz: the vnet header size, changed by :meth:`set_vnet_hdr_sz`.
        little_endian: as given.
        copies: every copy the kernel logic made, in order, as :class:`~pytun_hash.testing.UserCopy`.
        steering: every program fd :meth:`set_steering_ebpf` was asked to attach (-1: detach), in order.
        looked_up: the device :meth:`device` returned, once it was asked (None before, or without one).
    """

    def __init__(
        self,
        memory: bytes | bytearray = b"",
        *,
        device: DeviceInfo | None,
        vnet_hdr_sz: int = _VNET_HDR_MIN,
        little_endian: bool = sys.byteorder == "little",
        arg: int = 0,
    ) -> None:
        self.memory = memory if isinstance(memory, bytearray) else bytearray(memory)
        self.device_info = device
        self.hdr_sz = vnet_hdr_sz
        self.little_endian = little_endian
        self.copies: list[UserCopy] = []
        self.steering: list[int] = []
        self.looked_up: DeviceInfo | None = None
        self._arg = arg

    @property
    def arg(self) -> int:
        """The raw third ioctl argument (as given; no memory lives at that address)."""
        return self._arg

    def device(self) -> DeviceInfo:
        """The attached device; ``KernelErrno(EBADFD)`` when there is none."""
        if self.device_info is None:
            raise KernelErrno(errno.EBADFD)
        self.looked_up = self.device_info
        return self.device_info

    def copy_from_user(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset``; ``KernelErrno(EFAULT)`` when any lies past the buffer's end.

        Raises:
            ValueError: for a negative offset or length (a bug of the kernel logic, not an errno).
        """
        if offset < 0 or length < 0:
            raise ValueError(f"the kernel logic asked to copy {length} bytes at offset {offset}")
        ok = offset + length <= len(self.memory)
        self.copies.append(UserCopy(False, offset, length, ok))
        if not ok:
            raise KernelErrno(errno.EFAULT)
        return bytes(self.memory[offset : offset + length])

    def copy_to_user(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``; past the buffer's end, the bytes that fit are written and
        ``KernelErrno(EFAULT)`` is raised, as ``copy_to_user`` leaves them before a fault.

        Raises:
            ValueError: for a negative offset (a bug of the kernel logic, not an errno).
        """
        if offset < 0:
            raise ValueError(f"the kernel logic asked to write at offset {offset}")
        fits = max(0, min(len(self.memory) - offset, len(data)))
        self.memory[offset : offset + fits] = data[:fits]
        ok = fits == len(data)
        self.copies.append(UserCopy(True, offset, len(data), ok))
        if not ok:
            raise KernelErrno(errno.EFAULT)

    def vnet_hdr_sz(self) -> int:
        """The device's vnet header size."""
        return self.hdr_sz

    def vnet_is_little_endian(self) -> bool:
        """``tun_is_little_endian()`` of the device."""
        return self.little_endian

    def set_steering_ebpf(self, prog_fd: int) -> int | None:
        """Record ``TUNSETSTEERINGEBPF(prog_fd)``; the program's id is its fd number (no program exists)."""
        self.steering.append(prog_fd)
        return None if prog_fd == -1 else prog_fd

    def set_vnet_hdr_sz(self, size: int) -> None:
        """Record ``TUNSETVNETHDRSZ(size)`` on the device."""
        self.hdr_sz = size


class FakeQueue(QueueBase):
    """One queue of a :class:`FakeTunTap`: no file behind it, only its place in tun.c's numbering.

    Attributes:
        device: the fake device it belongs to.
    """

    device: FakeTunTap

    def __init__(self, device: FakeTunTap, fd: int) -> None:
        super().__init__(device, fd)

    def attach(self) -> None:
        """Re-attach this detached queue; see :meth:`FakeTunTap.attach_queue`."""
        self.device.attach_queue(self)

    def detach(self) -> None:
        """Detach this queue; see :meth:`FakeTunTap.detach_queue`."""
        self.device.detach_queue(self)

    def close(self) -> None:
        """Close the queue; the kernel renumbers the others. Idempotent."""
        self.device._close_queue(self)

    def _release(self) -> None:
        self._fd = None


class FakeTunTap(TunTapBase):
    """A TUN/TAP device whose hash ioctls an in-process emulated kernel answers (context manager).

    Args:
        revision: the hash UAPI revision the fake kernel speaks; None for a kernel without any
            (mainline: every revision's hash ioctls answer ``EINVAL``).
        name: the interface name (exact; no ``%d`` template).
        queues: attached queues to start with, 1..256.
        mode: TAP or TUN.
        vnet_hdr: ``IFF_VNET_HDR`` (the vnet header size starts at 10 bytes, as on a real device).
        packet_info: frames would carry ``struct tun_pi`` (no ``IFF_NO_PI``).
        multi_queue: ``IFF_MULTI_QUEUE``; default: ``queues > 1``.
        capability: what the capability ioctl reports (None: what that revision's kernel reports).
        netns: a namespace number to record the fake under (see :meth:`device_id`); None keeps no record.

    Attributes:
        name, mode, steering: as :class:`~pytun_hash.device.base.TunTapBase`.
        revision: the revision the fake kernel speaks (None: none).
        calls: every trapped call since the last :meth:`reset_log`, as the emulator logs them; ``fd`` is
            the :class:`FakeQueue`'s number, ``arg`` is 0.
        states: ``(call index, snapshot)`` after every call that changed the hash state.

    Raises:
        ValidationError: for a bad name, mode, queue count or revision, or a ``capability`` of
            another revision (or with ``revision=None``).
    """

    def __init__(
        self,
        revision: Revision | None = Revision.RFC,
        *,
        name: str = "fake0",
        queues: int = 4,
        mode: DeviceMode = DeviceMode.TAP,
        vnet_hdr: bool = True,
        packet_info: bool = False,
        multi_queue: bool | None = None,
        capability: VnetHashCapability | None = None,
        netns: int | None = None,
    ) -> None:
        check_name(name)
        if "%" in name:
            raise ValidationError("name", "a fake device needs its exact name, not a template")
        if not isinstance(mode, DeviceMode):
            raise ValidationError("mode", f"expected DeviceMode.TAP or DeviceMode.TUN, got {mode!r}")
        check_int("queues", queues)
        multi = queues > 1 if multi_queue is None else multi_queue
        check_queue_count(queues, multi)
        if revision is None:
            if capability is not None:
                raise ValidationError("capability", "a kernel without hash ioctls reports no capability")
            self._kernel: EmulatedKernel | None = None
        else:
            revision = require_revision(revision)
            self._kernel = EmulatedKernel(revision, capability)
        self.revision = revision
        self.name = name
        self.mode = mode
        self.steering = SteeringState(self)
        self._lock = self.steering.lock
        self._flags = TunFlag(
            request_flags(mode, vnet_hdr=vnet_hdr, packet_info=packet_info, multi_queue=multi, napi=False)
            & DEVICE_FLAGS
        )
        self._info = DeviceInfo(DeviceKey.of(0, next(_IFINDEXES), name), name, int(self._flags))
        ifindex = self._info.key.ifindex
        assert ifindex is not None  # the fake numbers its devices itself
        self._record_id = None if netns is None else DeviceId(netns, ifindex, name)
        self._vnet_hdr_sz = _VNET_HDR_MIN
        self._vnet_le = False
        self._program: int | None = None
        self._deleted = False
        self._closed = False
        self._fds = itertools.count(-100, -1)
        self._queues: QueueNumbering[FakeQueue] = QueueNumbering()
        for _ in range(queues):
            self._queues.attach(FakeQueue(self, next(self._fds)))
        self.calls: list[EmulatedCall] = []
        self.states: list[tuple[int, EmulatedHashState]] = []

    def device_id(self) -> DeviceId | None:
        """The identity records use, when the fake was made with ``netns`` (else None: no record).

        With it, :class:`~pytun_hash.hashing.Hashing` keeps this fake's record like a real device's
        (under the :class:`~pytun_hash.hashing.StateLocation` it is given), so the record lifecycle
        can be tested without privileges.
        """
        return self._record_id

    def __repr__(self) -> str:
        if self._closed:
            state = "closed"
        elif self._deleted:
            state = "deleted"
        else:
            state = f"{len(self.attached_queues)} attached"
        speaks = self.revision.value if self.revision is not None else "no hash ioctls"
        return f"FakeTunTap({self.name!r}, {self.mode.value}, {describe_flags(self._flags)}, {speaks}, {state})"

    # ----------------------------------------------------------------- facts

    @property
    def flags(self) -> TunFlag:
        """The device's ``TUNSETIFF`` flags."""
        return self._flags

    @property
    def numqueues(self) -> int:
        """Attached queues."""
        with self._lock:
            return self._queues.numqueues

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def deleted(self) -> bool:
        """Whether the device is gone: :meth:`delete` was called, or its last queue was closed."""
        return self._deleted

    @property
    def queues(self) -> tuple[FakeQueue, ...]:
        """Every open queue: the attached ones in kernel index order, then the detached ones."""
        with self._lock:
            return tuple(self._queues)

    @property
    def attached_queues(self) -> tuple[FakeQueue, ...]:
        """The attached queues, in kernel index order."""
        with self._lock:
            return self._queues.attached

    @property
    def detached_queues(self) -> tuple[FakeQueue, ...]:
        """The open queues that are detached."""
        with self._lock:
            return self._queues.detached

    @property
    def attached_program(self) -> int | None:
        """The program fd the device itself holds now (None: none), whatever the binding recorded.

        It differs from ``steering.steering_program`` only where the emulated kernel changed it
        behind the binding's back (the RFC's silent detach), which the binding never lets happen.
        """
        return self._program

    def kernel_state(self) -> EmulatedHashState:
        """The hash state the fake kernel holds for this device (kept after :meth:`delete`).

        Raises:
            EmulatorError: for a fake without hash ioctls (``revision=None``).
        """
        if self._kernel is None:
            raise EmulatorError(f"{self.name!r} has no hash ioctls (revision=None), so no hash state")
        with self._lock:
            return self._kernel.snapshot(self._info.key)

    def reset_log(self) -> None:
        """Forget :attr:`calls` and :attr:`states` (the device's state is kept)."""
        with self._lock:
            self.calls.clear()
            self.states.clear()

    # ----------------------------------------------------------------- test helpers

    def delete(self) -> None:
        """``ip link del``: the device goes away under its open queues.

        Every later call sees what a real deleted device answers (``EBADFD``:
        :class:`~pytun_hash.errors.DeviceGoneError`); the kernel drops the steering program with the
        device. The binding learns of it only from those answers, as with a real device.
        """
        with self._lock:
            self._deleted = True
            self._program = None

    # ----------------------------------------------------------------- ioctls

    def _index_of(self, queue: FakeQueue) -> int | None:
        with self._lock:
            return self._queues.index_of(queue)

    def _control_queue(self, *, attached: bool = False) -> FakeQueue:
        with self._lock:
            for queue in self._queues.attached if attached else self._queues:
                return queue
        if attached:
            raise ValidationError("device", f"{self.name} has no attached queue; attach one first")
        raise KernelError(errno.EBADF, "TunTapDevice", f"every queue of {self.name!r} is closed; open the device again")

    @contextlib.contextmanager
    def _noting_deletion(self) -> Iterator[None]:
        """On ``EBADFD`` the device is gone, and with it the hash state and program the binding records."""
        try:
            yield
        except DeviceGoneError:
            self.steering.device_deleted()
            raise

    def queue_ioctl(self, name: str, buf: bytearray, *, revision: Revision | None = None) -> int:
        """Issue ioctl ``name`` on the first attached queue, answered by the fake kernel.

        See :meth:`~pytun_hash.device.base.TunTapBase.queue_ioctl`.

        Raises:
            ValidationError: when no queue is attached, or ``name`` is not an ioctl of ``revision``.
            DeviceGoneError: ``EBADFD`` when the device was deleted.
            KernelError: a subclass chosen from the errno, as on the real device.
            NotImplementedError: for a TUN ioctl the fake does not model (module documentation).
        """
        with self._lock, self._noting_deletion():
            queue = self._control_queue(attached=True)
            return self._ioctl(queue, name, buf, revision or Revision.RFC)

    def _get_int(self, name: str) -> int:
        with self._lock, self._noting_deletion():
            buf = bytearray(4)
            self._ioctl(self._control_queue(), name, buf, Revision.RFC)
            value: int = struct.unpack("=i", buf)[0]
            return value

    def _set_int(self, name: str, value: int) -> None:
        with self._lock, self._noting_deletion():
            queue = self._control_queue()
            self._ioctl(queue, name, int_argument(name, value), Revision.RFC)

    def _ioctl(self, queue: FakeQueue, name: str, buf: bytearray, revision: Revision) -> int:
        request = request_number(name, revision) & 0xFFFFFFFF
        trapped = self._kernel.requests.get(request) if self._kernel is not None else None
        if trapped is not None:
            return self._emulated(queue, trapped, request, name, buf)
        call = self._call(buf)
        try:
            if request in _HASH_REQUESTS:
                call.device()  # tun's default case: EBADFD without a device, else EINVAL
                raise KernelErrno(errno.EINVAL)
            return self._tun_ioctl(name, call)
        except KernelErrno as exc:
            raise translate_error(exc.errno, name, buf=buf) from None
        finally:
            self._device_side(call)

    def _call(self, buf: bytearray) -> BufferCall:
        little = self._vnet_le or sys.byteorder == "little"  # no CONFIG_TUN_VNET_CROSS_LE: never big-endian
        return BufferCall(
            buf, device=None if self._deleted else self._info, vnet_hdr_sz=self._vnet_hdr_sz, little_endian=little
        )

    def _device_side(self, call: BufferCall) -> None:
        """Keep what the call did to the device itself: its vnet header size and steering program."""
        self._vnet_hdr_sz = call.hdr_sz
        for prog_fd in call.steering:
            self._program = None if prog_fd == -1 else prog_fd

    def _emulated(self, queue: FakeQueue, trapped: str, request: int, name: str, buf: bytearray) -> int:
        kernel = self._kernel
        assert kernel is not None
        call = self._call(buf)
        err, result = 0, 0
        try:
            result = kernel.handle(trapped, call)
        except KernelErrno as exc:
            err = exc.errno
        finally:
            self._device_side(call)
        index = len(self.calls)
        self.calls.append(
            EmulatedCall(
                index=index,
                name=trapped,
                request=request,
                fd=queue.fd,
                tid=threading.get_native_id(),
                arg=call.arg,
                ifname=call.looked_up.ifname if call.looked_up is not None else None,
                copies=tuple(call.copies),
                errno=err,
                result=result if not err else -1,
            )
        )
        changed = kernel.changed if not err else None
        if changed is not None:
            self.states.append((index, kernel.snapshot(changed)))
        kernel.changed = None
        if err:
            raise translate_error(err, name, buf=buf)
        return result

    def _tun_ioctl(self, name: str, call: BufferCall) -> int:
        """The TUN ioctls the fake models, each after tun's device lookup (``EBADFD`` without one)."""
        call.device()
        if name == "TUNGETIFF":
            call.copy_to_user(0, bytes(encode_ifreq(self.name, self._flags)))
        elif name == "TUNGETVNETHDRSZ":
            call.copy_to_user(0, struct.pack(f"{_E}i", self._vnet_hdr_sz))
        elif name == "TUNSETVNETHDRSZ":
            (size,) = struct.unpack(f"{_E}i", call.copy_from_user(0, 4))
            if size < _VNET_HDR_MIN:
                raise KernelErrno(errno.EINVAL)
            call.set_vnet_hdr_sz(size)
        elif name == "TUNGETVNETLE":
            call.copy_to_user(0, struct.pack(f"{_E}i", int(self._vnet_le)))
        elif name == "TUNSETVNETLE":
            (value,) = struct.unpack(f"{_E}i", call.copy_from_user(0, 4))
            self._vnet_le = bool(value)
        elif name in ("TUNGETVNETBE", "TUNSETVNETBE"):
            raise KernelErrno(errno.EINVAL)  # a kernel without CONFIG_TUN_VNET_CROSS_LE
        elif name == "TUNSETSTEERINGEBPF":
            (prog_fd,) = struct.unpack(f"{_E}i", call.copy_from_user(0, 4))
            call.set_steering_ebpf(prog_fd)
        else:
            raise NotImplementedError(f"FakeTunTap does not model {name}; use a TunTapDevice for it")
        return 0

    def raise_if_deleted(self) -> None:
        """Raise :class:`~pytun_hash.errors.DeviceGoneError` when the device was deleted; else return.

        As :meth:`pytun_hash.device.tap.TunTapDevice.raise_if_deleted` (``TUNGETIFF``), the steering
        state is cleared when the device is gone; with every queue closed it returns.
        """
        with self._lock:
            try:
                self._control_queue()
            except KernelError:
                return  # every queue is closed: nothing to ask, and the caller's error stands
            self._get_iff()

    def _get_iff(self) -> None:
        with self._noting_deletion():
            self._ioctl(self._control_queue(), "TUNGETIFF", bytearray(40), Revision.RFC)

    # ----------------------------------------------------------------- queues

    def _own(self, queue: FakeQueue) -> None:
        if queue.device is not self:
            raise ValidationError("queue", f"{queue!r} belongs to another device than {self.name!r}")
        if queue.closed:
            raise KernelError(errno.EBADF, "TUNSETQUEUE", "the queue is closed")

    def _set_queue(self, queue: FakeQueue, attach: bool) -> None:
        self._own(queue)
        if self._deleted:
            self.steering.device_deleted()
            raise deleted_queue_error(self.name)
        if not self.multi_queue or self._queues.is_attached(queue) == attach:
            raise translate_error(errno.EINVAL, "TUNSETQUEUE")

    def attach_queue(self, queue: FakeQueue) -> None:
        """Re-attach a detached queue (``TUNSETQUEUE`` ``IFF_ATTACH_QUEUE``); it gets the last index.

        Raises:
            KernelError: ``EINVAL`` when the queue is attached already or the device is single-queue;
                ``EBADF`` when it is closed.
            DeviceGoneError: ``EBADFD`` when the device was deleted.
            ValidationError: for a queue of another device.
        """
        with self._lock:
            self._set_queue(queue, attach=True)
            self._queues.attach(queue)

    def detach_queue(self, queue: FakeQueue) -> None:
        """Detach a queue (``TUNSETQUEUE`` ``IFF_DETACH_QUEUE``); the last attached queue takes its index.

        Raises:
            KernelError, DeviceGoneError, ValidationError: as :meth:`attach_queue`.
        """
        with self._lock:
            self._set_queue(queue, attach=False)
            self._queues.detach(queue)

    def add_queue(self) -> FakeQueue:
        """Open another queue on this multi-queue device; it becomes the last attached queue.

        Raises:
            ValidationError: for a single-queue device.
            DeviceGoneError: ``EBADFD`` when the device was deleted.
            KernelError: ``E2BIG`` at 256 queues; ``EBADF`` after :meth:`close`.
        """
        if not self.multi_queue:
            raise ValidationError("device", f"{self.name!r} is single-queue; create it with multi_queue=True")
        with self._lock:
            if self._closed:
                raise KernelError(errno.EBADF, "TunTapDevice", f"{self.name!r} was closed; open the device again")
            if self._deleted:
                self.steering.device_deleted()
                raise translate_error(errno.EBADFD, "TUNSETIFF")
            if self._queues.numqueues >= MAX_TAP_QUEUES:
                raise translate_error(errno.E2BIG, "TUNSETIFF")
            queue = FakeQueue(self, next(self._fds))
            self._queues.attach(queue)
            return queue

    def _close_queue(self, queue: FakeQueue) -> None:
        with self._lock:
            if queue.closed:
                return
            self._queues.remove(queue)
            queue._release()
            if not self._queues.numqueues and not self._queues.detached:
                self._deleted = True  # a non-persistent device goes with its last queue
                self._program = None

    def close(self) -> None:
        """Close every queue (the device goes with them). Idempotent."""
        with self._lock:
            self._closed = True
            for queue in self._queues.clear():
                queue._release()
            self._deleted = True
            self._program = None
