"""What hash control and the backends use of a TUN/TAP device, and the code every kind of device shares.

:class:`TunTapBase` is the device as :mod:`~pytun_hash.device.hashctl`, :mod:`pytun_hash.backend` and
the eBPF backend see it: a name, a mode and flags, a :class:`~pytun_hash.device.steering.SteeringState`,
the attached queue count, :meth:`~TunTapBase.queue_ioctl`, the vnet header accessors and the steering
program. Two classes implement it: :class:`~pytun_hash.device.tap.TunTapDevice` (the kernel's device,
through queue fds) and ``pytun_hash.testing.FakeTunTap`` (answered in-process by the emulator's kernel
logic, for tests without privileges). What both do the same way is written once, here: the vnet header
accessors, and attaching or detaching a steering program under the steering rule. A subclass supplies
the ioctls themselves (:meth:`~TunTapBase._get_int`, :meth:`~TunTapBase._set_int`,
:meth:`~TunTapBase.queue_ioctl`) and the device's facts.
"""

from __future__ import annotations

import abc
import sys
from types import TracebackType
from typing import TYPE_CHECKING, Self

from pytun_hash._abi.revision import Revision
from pytun_hash._abi.tun import TunFlag
from pytun_hash._abi.virtio_net import VIRTIO_NET_HDR_V1_HASH_SIZE
from pytun_hash.device.primitives import DeviceMode
from pytun_hash.device.steering import SteeringState
from pytun_hash.errors import UnsupportedError, ValidationError

if TYPE_CHECKING:
    from pytun_hash.device.record import DeviceId

__all__ = ["TunTapBase"]


class TunTapBase(abc.ABC):
    """A TUN/TAP device as hash control and the backends use it (context manager).

    Every ioctl a subclass issues is chosen and used under ``steering.lock``, which every change of
    the queue set and of the steering program takes too.

    Attributes:
        name: interface name.
        mode: :class:`~pytun_hash.device.primitives.DeviceMode`.
        steering: the shared :class:`~pytun_hash.device.steering.SteeringState` (the one owner of the
            RSS-versus-steering-program rule).
    """

    name: str
    mode: DeviceMode
    steering: SteeringState

    # ----------------------------------------------------------------- what a subclass supplies

    @property
    @abc.abstractmethod
    def flags(self) -> TunFlag:
        """The device's ``TUNSETIFF`` flags: type, ``IFF_NO_PI``, ``IFF_VNET_HDR``, ``IFF_MULTI_QUEUE``, NAPI bits."""

    @property
    @abc.abstractmethod
    def numqueues(self) -> int:
        """Attached queues as this object counts them (including ones held elsewhere it knows of)."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""

    @abc.abstractmethod
    def queue_ioctl(self, name: str, buf: bytearray, *, revision: Revision | None = None) -> int:
        """Issue ioctl ``name`` with a pointer to ``buf`` on an attached queue, under the device lock.

        Args:
            name: the kernel's name of a TUN ioctl, or of a hash ioctl of ``revision``.
            buf: the argument bytes; the kernel's writes land in place.
            revision: the hash UAPI revision ``name`` belongs to; None for TUN ioctls.

        Returns:
            The ioctl's return value.

        Raises:
            ValidationError: when no queue is attached (field ``device``), or ``name`` is not an
                ioctl of ``revision`` (field ``name``); no ioctl is issued.
            DeviceGoneError: ``EBADFD`` when the device was deleted (:attr:`steering` is cleared).
            KernelError: a subclass chosen from the errno for a refused ioctl.
        """

    @abc.abstractmethod
    def raise_if_deleted(self) -> None:
        """Raise :class:`~pytun_hash.errors.DeviceGoneError` when the device was deleted; else return.

        :class:`~pytun_hash.device.steering.SteeringState` calls this before a refusal, so that a
        deleted device is reported as such rather than as a conflict with state the kernel freed.
        It changes nothing (``TUNGETIFF``); the steering state is cleared when the device is gone.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close every queue this object owns. Idempotent."""

    def device_id(self) -> DeviceId | None:
        """The device as records know it (namespace inode, ifindex, name), or None for a device the
        kernel does not have (a fake), which therefore has no record.

        Raises:
            DeviceGoneError: ``EBADFD`` when the device was deleted.
            KernelError: when the kernel cannot be asked.
        """
        return None

    @abc.abstractmethod
    def _get_int(self, name: str) -> int:
        """Issue ioctl ``name`` whose argument points to a C int the kernel fills, on any open queue."""

    @abc.abstractmethod
    def _set_int(self, name: str, value: int) -> None:
        """Issue ioctl ``name`` whose argument points to a C int holding ``value``, on any open queue.

        Raises:
            ValidationError: when ``value`` is not an int that fits a C int; no ioctl is issued.
        """

    # ----------------------------------------------------------------- flags

    @property
    def vnet_hdr(self) -> bool:
        """Whether frames carry a vnet header (``IFF_VNET_HDR``)."""
        return bool(self.flags & TunFlag.IFF_VNET_HDR)

    @property
    def packet_info(self) -> bool:
        """Whether frames carry ``struct tun_pi`` (no ``IFF_NO_PI``)."""
        return not self.flags & TunFlag.IFF_NO_PI

    @property
    def multi_queue(self) -> bool:
        """Whether the device is multi-queue (``IFF_MULTI_QUEUE``)."""
        return bool(self.flags & TunFlag.IFF_MULTI_QUEUE)

    # ----------------------------------------------------------------- vnet header

    def get_vnet_hdr_size(self) -> int:
        """``TUNGETVNETHDRSZ``: the vnet header length in bytes (per device; 10 by default).

        Raises:
            DeviceGoneError: ``EBADFD`` when the device was deleted.
        """
        return self._get_int("TUNGETVNETHDRSZ")

    def set_vnet_hdr_size(self, size: int) -> None:
        """``TUNSETVNETHDRSZ``: set the vnet header length in bytes (>= 10; 12 for v1, 20 with hash fields).

        Raises:
            KernelError: ``EINVAL`` below 10 bytes.
            ValidationError: when ``size`` does not fit a C int.
        """
        self._set_int("TUNSETVNETHDRSZ", size)

    def get_vnet_le(self) -> bool:
        """``TUNGETVNETLE``: whether vnet headers are little-endian regardless of the host order."""
        return bool(self._get_int("TUNGETVNETLE"))

    def set_vnet_le(self, little_endian: bool) -> None:
        """``TUNSETVNETLE``: force little-endian vnet headers (virtio 1.0), or go back to legacy order."""
        self._set_int("TUNSETVNETLE", int(bool(little_endian)))

    def get_vnet_be(self) -> bool:
        """``TUNGETVNETBE``: whether legacy vnet headers are big-endian.

        Raises:
            UnsupportedError: ``EINVAL`` on kernels without ``CONFIG_TUN_VNET_CROSS_LE``.
        """
        return bool(self._get_int("TUNGETVNETBE"))

    def set_vnet_be(self, big_endian: bool) -> None:
        """``TUNSETVNETBE``: big-endian legacy vnet headers (cross-endian guests).

        Raises:
            UnsupportedError: ``EINVAL`` on kernels without ``CONFIG_TUN_VNET_CROSS_LE``.
        """
        self._set_int("TUNSETVNETBE", int(bool(big_endian)))

    def check_report_header(self) -> None:
        """Return when the kernel (or a user-space filler) can write hash reports into this device's
        vnet headers: ``IFF_VNET_HDR``, at least 20 bytes (``virtio_net_hdr_v1_hash``), little-endian.
        Both backends check this one rule before turning reports on.

        Raises:
            ValidationError: (field ``report``) naming what is missing and the call that fixes it.
            DeviceGoneError: ``EBADFD`` when the device was deleted.
        """
        if not self.flags & TunFlag.IFF_VNET_HDR:
            raise ValidationError(
                "report", f"{self.name} has no vnet header (IFF_VNET_HDR); create it with vnet_hdr=True"
            )
        size = self.get_vnet_hdr_size()
        if size < VIRTIO_NET_HDR_V1_HASH_SIZE:
            raise ValidationError(
                "report",
                f"hash reports need a vnet header of at least {VIRTIO_NET_HDR_V1_HASH_SIZE} bytes, the device "
                f"has {size}; call device.set_vnet_hdr_size({VIRTIO_NET_HDR_V1_HASH_SIZE}) first",
            )
        if not self._little_endian_header():
            raise ValidationError(
                "report", "hash reports need a little-endian vnet header; call device.set_vnet_le(True) first"
            )

    def _little_endian_header(self) -> bool:
        if self.get_vnet_le():
            return True
        try:
            big = self.get_vnet_be()
        except UnsupportedError:
            big = False  # no CONFIG_TUN_VNET_CROSS_LE: legacy headers use the host's order
        return not big and sys.byteorder == "little"

    # ----------------------------------------------------------------- steering program

    def attach_steering_program(self, prog_fd: int, *, owner: str = "user", exclusive: bool = False) -> None:
        """``TUNSETSTEERINGEBPF``: steer transmitted frames with a socket-filter program.

        The program's return value ``r`` selects queue ``(u16)r % numqueues``. It replaces any
        program attached before, unless ``exclusive``. Refused while native RSS is enabled
        with ``EBUSY`` (the rule is :meth:`SteeringState.ensure_can_attach`).

        Args:
            prog_fd: fd of a loaded ``BPF_PROG_TYPE_SOCKET_FILTER`` program (the kernel takes its
                own reference; the fd may be closed afterwards).
            owner: who attaches it, recorded in ``steering.steering_owner``.
            exclusive: refuse while any program is attached instead of replacing it.

        Raises:
            SteeringConflictError: ``EBUSY`` while native RSS is enabled; no ioctl is issued.
            BusyError: ``EBUSY`` when ``exclusive`` and a program is attached; no ioctl is issued.
            KernelError: ``EINVAL`` when ``prog_fd`` is not a socket-filter program.
            DeviceGoneError: ``EBADFD`` when the device was deleted (the steering state is cleared).
            ValidationError: for a value that is not an fd number >= 0.
        """
        if isinstance(prog_fd, bool) or not isinstance(prog_fd, int) or prog_fd < 0:
            raise ValidationError(
                "prog_fd", f"must be a program fd >= 0, got {prog_fd!r}; use detach_steering_program() to detach"
            )
        with self.steering.lock:
            self.steering.ensure_can_attach(owner=owner, exclusive=exclusive)
            self._set_int("TUNSETSTEERINGEBPF", prog_fd)
            self.steering.record_steering(prog_fd, owner)

    def detach_steering_program(self) -> None:
        """``TUNSETSTEERINGEBPF(-1)``: back to the kernel's automatic queue selection. Always allowed.

        Raises:
            DeviceGoneError: ``EBADFD`` when the device was deleted (the steering state is cleared:
                the kernel dropped the program with the device).
        """
        with self.steering.lock:
            self._set_int("TUNSETSTEERINGEBPF", -1)
            self.steering.record_steering(None, None)

    # ----------------------------------------------------------------- context manager

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
