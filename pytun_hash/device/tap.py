"""TUN/TAP devices: create, open, adopt; the ioctls that act on the whole device; close.

A :class:`TunTapDevice` holds this process's queue fds of one device. tun has no other handle,
so every per-device ioctl goes through one of them, chosen and used under the device's lock;
code above the device does the same with :meth:`TunTapDevice.queue_ioctl`. The rest lives next
door: fd-level steps in :mod:`~pytun_hash.device.primitives`, the queues' kernel numbers in
:mod:`~pytun_hash.device.numbering`, the RSS-versus-program rule in :mod:`~pytun_hash.device.steering`,
and what every kind of device shares with this one (vnet header accessors, attaching a steering
program under that rule) in :mod:`~pytun_hash.device.base`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Iterator, Sequence

from pytun_hash._abi.revision import Revision
from pytun_hash._abi.tun import TunFlag, TunOffload
from pytun_hash.device import rtnl
from pytun_hash.device._ioctl import (
    describe_flags,
    ioctl_get_int,
    ioctl_int,
    ioctl_ptr,
    ioctl_set_int,
    translate_error,
)
from pytun_hash.device.base import TunTapBase
from pytun_hash.device.netns import run_in_netns
from pytun_hash.device.numbering import QueueNumbering
from pytun_hash.device.primitives import (
    DEVICE_FLAGS,
    MAX_TAP_QUEUES,
    TUN_PATH,
    DeviceMode,
    bind_existing_queue,
    bind_queues,
    check_id,
    check_int,
    check_kept_flags,
    check_name,
    check_queue_count,
    device_netns_fd,
    existing_tun_link,
    get_iff,
    identify_queue_fds,
    kernel_features,
    learned_flags,
    link_in_netns,
    request_flags,
    set_queue,
)
from pytun_hash.device.queue import Queue
from pytun_hash.device.record import DeviceId
from pytun_hash.device.rtnl import thread_netns_inode, tun_flags_of
from pytun_hash.device.steering import SteeringState
from pytun_hash.errors import (
    DeviceGoneError,
    DeviceNotFoundError,
    KernelError,
    PytunHashError,
    ValidationError,
)

__all__ = [
    "MAX_TAP_QUEUES",
    "TUN_PATH",
    "DeviceMode",
    "Queue",
    "TunTapDevice",
    "get_iff",
    "kernel_features",
    "tun_flags_of",
]


class TunTapDevice(TunTapBase):
    """A TUN or TAP device and the queue fds this process holds for it (context manager).

    Build one with :meth:`create`, :meth:`open` or :meth:`adopt`. :meth:`close` closes every
    queue fd it owns; a non-persistent device disappears with its last fd.

    Every ioctl goes through a queue fd, since tun has no other handle; the fd is chosen and used
    under the device's lock (``steering.lock``), which every change of the queue set and of the
    steering program takes too, so the object can be shared between threads. Code outside the
    device layer's own modules issues its ioctls with :meth:`queue_ioctl`. The vnet header accessors
    and the steering program methods are :class:`~pytun_hash.device.base.TunTapBase`'s, written once
    for every kind of device.

    Attributes:
        name: interface name (the kernel's, after a ``%d`` template is filled in).
        mode: :class:`DeviceMode`.
        steering: the shared :class:`SteeringState`.
    """

    def __init__(
        self,
        name: str,
        mode: DeviceMode,
        flags: TunFlag,
        *,
        nonblocking: bool,
    ) -> None:
        self.name = name
        self.mode = mode
        self.steering = SteeringState(self)
        self._lock = self.steering.lock
        self._flags = TunFlag(flags & DEVICE_FLAGS)
        self._persist = False
        self._nonblocking = nonblocking
        self._ifindex = 0
        self._queues: QueueNumbering[Queue] = QueueNumbering()
        self._closed = False

    # ----------------------------------------------------------------- construction

    @classmethod
    def create(
        cls,
        name: str | None = None,
        *,
        mode: DeviceMode = DeviceMode.TAP,
        queues: int = 1,
        vnet_hdr: bool = True,
        packet_info: bool = False,
        multi_queue: bool | None = None,
        persist: bool = False,
        owner: int | None = None,
        group: int | None = None,
        nonblocking: bool = True,
        exclusive: bool = False,
        napi: bool = False,
    ) -> TunTapDevice:
        """Create a device in the calling thread's network namespace (or attach to one of that name).

        Args:
            name: interface name, or a template with one ``%d`` (default ``"tap%d"``/``"tun%d"``).
            mode: TAP (Ethernet frames) or TUN (IP packets).
            queues: number of queue fds to open, 1..256.
            vnet_hdr: ``IFF_VNET_HDR``: frames carry a ``virtio_net_hdr`` (10 bytes until changed).
            packet_info: frames carry the 4-byte ``struct tun_pi`` (no ``IFF_NO_PI``).
            multi_queue: ``IFF_MULTI_QUEUE``; default: ``queues > 1``.
            persist: keep the device after the last fd is closed (``TUNSETPERSIST``).
            owner: uid allowed to attach without CAP_NET_ADMIN (``TUNSETOWNER``).
            group: gid allowed to attach without CAP_NET_ADMIN (``TUNSETGROUP``).
            nonblocking: open the queues with ``O_NONBLOCK``.
            exclusive: fail with ``EBUSY`` if a device of that name exists (``IFF_TUN_EXCL``).
            napi: ``IFF_NAPI`` (receive path through NAPI).

        Raises:
            ValidationError: for bad arguments (``queues > 1`` without multi-queue ...).
            DeviceFlagsMismatchError: ``EINVAL`` when a device of that name exists with another
                type or multi-queue flag, or attaching kept its other flags (vnet header, packet info).
            BusyError: ``EBUSY`` when the single queue of an existing device is held elsewhere,
                or ``exclusive`` and the name exists.
            PrivilegeError: without CAP_NET_ADMIN or access to ``/dev/net/tun``.
            UnsupportedError: when the tun driver is missing.
        """
        if not isinstance(mode, DeviceMode):
            raise ValidationError("mode", f"expected DeviceMode.TAP or DeviceMode.TUN, got {mode!r}")
        if name is None:
            name = f"{mode.value}%d"
        check_name(name)
        check_id("owner", owner)
        check_id("group", group)
        check_int("queues", queues)
        multi = queues > 1 if multi_queue is None else multi_queue
        check_queue_count(queues, multi)
        flags = request_flags(mode, vnet_hdr=vnet_hdr, packet_info=packet_info, multi_queue=multi, napi=napi)
        device = cls._attach_new(
            name, mode, flags, queues, nonblocking=nonblocking, exclusive=exclusive, expect_ifindex=None
        )
        was_persistent = device.persist
        try:
            if owner is not None:
                device.set_owner(owner)
            if group is not None:
                device.set_group(group)
            if persist:
                device.set_persist(True)
        except BaseException:
            device._abandon(undo_persist=persist and not was_persistent)
            raise
        return device

    @classmethod
    def open(
        cls,
        name: str,
        *,
        mode: DeviceMode | None = None,
        queues: int = 1,
        vnet_hdr: bool | None = None,
        packet_info: bool | None = None,
        multi_queue: bool | None = None,
        nonblocking: bool = True,
    ) -> TunTapDevice:
        """Open ``queues`` new queues on the existing device ``name`` in the calling thread's namespace.

        Flags left as None are taken from the device. On a multi-queue device with queues held
        elsewhere, the new queues get the next kernel numbers.

        Raises:
            KernelError: ``ENODEV`` when there is no such device (nothing is created).
            DeviceFlagsMismatchError: ``EINVAL`` when the device's flags differ from the requested ones.
            BusyError: ``EBUSY`` when it is a single-queue device whose queue is held elsewhere.
            PrivilegeError, ValidationError: as :meth:`create`.
        """
        check_name(name)
        if "%" in name:
            raise ValidationError("name", "open() needs the device's exact name, not a template")
        if mode is not None and not isinstance(mode, DeviceMode):
            raise ValidationError("mode", f"expected DeviceMode.TAP, DeviceMode.TUN or None, got {mode!r}")
        check_int("queues", queues)
        link = existing_tun_link(name)
        assert link.tun is not None
        data = link.tun
        actual_mode = DeviceMode.from_flags(data.type)
        mode = actual_mode if mode is None else mode
        multi = data.multi_queue if multi_queue is None else multi_queue
        check_queue_count(queues, multi)
        flags = request_flags(
            mode,
            vnet_hdr=data.vnet_hdr if vnet_hdr is None else vnet_hdr,
            packet_info=data.packet_info if packet_info is None else packet_info,
            multi_queue=multi,
            napi=False,
        )
        return cls._attach_new(
            name, mode, flags, queues, nonblocking=nonblocking, exclusive=False, expect_ifindex=link.index
        )

    @classmethod
    def adopt(cls, fds: Sequence[int], *, close: bool = True) -> TunTapDevice:
        """Wrap queue fds that are already bound to one device (a VMM handed them over).

        The name and flags are learned with ``TUNGETIFF`` and rtnetlink. The attached fds are
        assumed to hold the kernel's queues in the order given (queue 0 first), which is the case
        when they were opened in that order and none was detached since. With ``close=True`` the
        device owns the fds (sets ``O_CLOEXEC`` and closes them); otherwise it borrows them.

        Raises:
            ValidationError: for no fds, or fds of different devices.
            DeviceGoneError: ``EBADFD`` for an fd with no live device.
            KernelError: ``EBADF`` for a closed fd, ``ENOTTY`` (UnsupportedError) for a non-tun fd.
        """
        name, per_fd = identify_queue_fds(fds)
        first_flags = per_fd[0]
        device = cls(name, DeviceMode.from_flags(first_flags), first_flags, nonblocking=not os.get_blocking(fds[0]))
        adopted = [Queue(device, fd, owned=False) for fd in fds]
        for queue, flags in zip(adopted, per_fd, strict=True):
            # Replays what the kernel saw: the fd attached, and a detached one left its slot at once.
            device._queues.attach(queue)
            if flags & TunFlag.IFF_DETACH_QUEUE:
                device._queues.detach(queue)
        try:
            link = device.link_info()
            if link.tun is None:
                raise DeviceGoneError(
                    errno.EBADFD, "TUNGETIFF", f"device {name!r} is gone and the name now belongs to another link"
                )
            device._flags = learned_flags(link.tun, first_flags)
            device._ifindex = link.index
            device._persist = link.tun.persist
            device._queues.add_foreign((link.tun.numqueues or 0) - len(adopted), before=False)
        except BaseException:
            device.close()  # borrowed so far: nothing is closed
            raise
        if close:
            for queue in adopted:
                queue._take_ownership()
        return device

    @classmethod
    def _attach_new(
        cls,
        name: str,
        mode: DeviceMode,
        flags: TunFlag,
        queues: int,
        *,
        nonblocking: bool,
        exclusive: bool,
        expect_ifindex: int | None,
    ) -> TunTapDevice:
        actual, fds = bind_queues(name, flags, queues, nonblocking=nonblocking, exclusive=exclusive)
        device = cls(actual, mode, flags, nonblocking=nonblocking)
        for fd in fds:
            device._queues.attach(Queue(device, fd, owned=True))
        try:
            # The thread that opened the fds is in the device's namespace, so query it directly.
            link = rtnl.get_link(actual)
            if link.tun is None or (expect_ifindex is not None and link.index != expect_ifindex):
                raise DeviceNotFoundError(
                    errno.ENODEV, "TUNSETIFF", f"device {name!r} went away while it was being opened; retry"
                )
            device._ifindex = link.index
            device._persist = link.tun.persist
            # The kernel applies vnet-header and packet-info flags only when it sets a device up.
            _name, got = get_iff(device._control_fd())
            check_kept_flags(actual, flags, got, link.tun)
            device._flags = learned_flags(link.tun, got)
            device._queues.add_foreign((link.tun.numqueues or 0) - len(fds), before=True)
        except BaseException:
            device._abandon(undo_persist=False)
            raise
        return device

    # ----------------------------------------------------------------- properties

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.attached_queues)} attached"
        return f"TunTapDevice({self.name!r}, {self.mode.value}, {describe_flags(self._flags)}, {state})"

    @property
    def flags(self) -> TunFlag:
        """The device's ``TUNSETIFF`` flags: type, ``IFF_NO_PI``, ``IFF_VNET_HDR``, ``IFF_MULTI_QUEUE``, NAPI bits."""
        return self._flags

    @property
    def persist(self) -> bool:
        """Whether the device outlives its last fd, as last set or learned by this object."""
        return self._persist

    @property
    def ifindex(self) -> int:
        """Interface index, as seen in the device's namespace when this object was made.

        Moving the device to another namespace can change it; :meth:`link_info` reads it anew.
        """
        return self._ifindex

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def queues(self) -> tuple[Queue, ...]:
        """Every open queue: the attached ones in kernel index order, then the detached ones."""
        with self._lock:
            return tuple(self._queues)

    @property
    def attached_queues(self) -> tuple[Queue, ...]:
        """The attached queues this object holds, in kernel index order."""
        with self._lock:
            return self._queues.attached

    @property
    def detached_queues(self) -> tuple[Queue, ...]:
        """The open queues that are detached (``TUNSETQUEUE`` ``IFF_DETACH_QUEUE``)."""
        with self._lock:
            return self._queues.detached

    @property
    def numqueues(self) -> int:
        """Attached queues as this object counts them (including ones held elsewhere it knows of)."""
        with self._lock:
            return self._queues.numqueues

    def _index_of(self, queue: Queue) -> int | None:
        with self._lock:
            return self._queues.index_of(queue)  # a closed queue left the table

    def _control_fd(self, *, attached: bool = False) -> int:
        """A queue fd that reaches the device (an attached one first); call under the lock.

        Raises:
            ValidationError: ``attached`` and no queue is attached (or open).
            KernelError: ``EBADF`` when every queue is closed (and not ``attached``).
        """
        with self._lock:
            for queue in self._queues.attached if attached else self._queues:
                return queue.fd
        if attached:
            raise ValidationError("device", f"{self.name} has no attached queue; attach one first")
        raise KernelError(errno.EBADF, "TunTapDevice", f"every queue of {self.name!r} is closed; open the device again")

    @contextlib.contextmanager
    def _control(self, *, attached: bool = False) -> Iterator[int]:
        """A queue fd, chosen and used under the device lock, with ``EBADFD`` recorded as deletion.

        Holding the lock from the choice to the ioctl keeps a concurrent close from handing the
        fd number to an unrelated file in between.
        """
        with self._lock, self._noting_deletion():
            yield self._control_fd(attached=attached)

    def queue_ioctl(self, name: str, buf: bytearray, *, revision: Revision | None = None) -> int:
        """Issue ioctl ``name`` with a pointer to ``buf`` on an attached queue, under the device lock.

        The first attached queue is used while no thread can close, detach or attach a queue, and
        ``EBADFD`` clears :attr:`steering` as the kernel freed it with the device (the hash state is
        per device, so any attached queue reaches it). Arguments, result and errors: see
        :meth:`TunTapBase.queue_ioctl <pytun_hash.device.base.TunTapBase.queue_ioctl>`.
        """
        with self._control(attached=True) as fd:
            return ioctl_ptr(fd, name, buf, revision=revision or Revision.RFC)

    def _get_int(self, name: str) -> int:
        with self._control() as fd:
            return ioctl_get_int(fd, name)

    def _set_int(self, name: str, value: int) -> None:
        with self._control() as fd:
            ioctl_set_int(fd, name, value)

    def _by_value(self, name: str, value: int) -> None:
        with self._control() as fd:
            ioctl_int(fd, name, value)

    @contextlib.contextmanager
    def _noting_deletion(self) -> Iterator[None]:
        """Clear the steering state when the kernel says the device is gone (``EBADFD`` on its queues).

        An attached or detached queue fd answers ``EBADFD`` only once the device was deleted, and the
        kernel freed the device's hash state and steering program with it.
        """
        try:
            yield
        except DeviceGoneError:
            self.steering.device_deleted()
            raise

    def _own(self, queue: Queue) -> None:
        if queue.device is not self:
            raise ValidationError("queue", f"{queue!r} belongs to another device than {self.name!r}")
        if queue.closed:
            raise KernelError(errno.EBADF, "TUNSETQUEUE", "the queue is closed")

    # ----------------------------------------------------------------- kernel state

    def link_info(self) -> rtnl.LinkInfo:
        """The device as rtnetlink reports it now, queried in the device's own namespace.

        Includes ``tun.numqueues`` and ``tun.numdisabled`` for multi-queue devices. The name is
        refreshed from ``TUNGETIFF`` first, so a rename is followed.

        Raises:
            DeviceGoneError: ``EBADFD`` when the device was deleted.
            KernelError: when the query fails.
        """
        with self._control() as fd:
            self.name, _flags = get_iff(fd)
            ns_fd = device_netns_fd(fd)
        return link_in_netns(self.name, ns_fd)  # rtnetlink outside the lock: the fd is no longer used

    def device_id(self) -> DeviceId:
        """The device as records know it: its own namespace's inode, its ifindex there, its name.

        Asked of the kernel now (``TUNGETIFF``, ``TUNGETDEVNETNS``, rtnetlink in that namespace), so
        it is right after a rename or a move; without CAP_NET_ADMIN the calling thread's namespace
        is taken as the device's.

        Raises:
            DeviceGoneError: ``EBADFD`` when the device was deleted.
            KernelError: when a query fails.
        """
        with self._control() as fd:
            self.name, _flags = get_iff(fd)
            ns_fd = device_netns_fd(fd)
        try:
            netns = os.fstat(ns_fd).st_ino if ns_fd is not None else thread_netns_inode()
            link = link_in_netns(self.name, None if ns_fd is None else os.dup(ns_fd))
        finally:
            if ns_fd is not None:
                os.close(ns_fd)
        return DeviceId(netns, link.index, link.name)

    def kernel_queue_counts(self) -> tuple[int, int]:
        """``(numqueues, numdisabled)`` as the kernel reports them (multi-queue devices).

        Raises:
            ValidationError: for a single-queue device (the kernel reports no counts).
            DeviceGoneError: ``EBADFD`` when the device was deleted.
        """
        tun = self.link_info().tun
        if tun is None or tun.numqueues is None or tun.numdisabled is None:
            raise ValidationError("device", f"{self.name!r} is single-queue; the kernel reports no queue counts")
        return tun.numqueues, tun.numdisabled

    def features(self) -> TunFlag:
        """``TUNGETFEATURES``: the ``TUNSETIFF`` flags this kernel supports.

        Raises:
            KernelError: when every queue is closed.
        """
        buf = bytearray(4)
        with self._control() as fd:
            ioctl_ptr(fd, "TUNGETFEATURES", buf)
        return TunFlag(struct.unpack("=I", buf)[0])

    def getiff(self, queue: Queue | None = None) -> TunFlag:
        """``TUNGETIFF`` flags of ``queue`` (default: any open queue); see :func:`get_iff` for caveats.

        Raises:
            DeviceGoneError: ``EBADFD`` when the device was deleted.
        """
        with self._lock, self._noting_deletion():
            fd = self._control_fd() if queue is None else queue.fd
            return get_iff(fd)[1]

    def set_offload(self, offload: TunOffload | int) -> None:
        """``TUNSETOFFLOAD``: the offloads the reader can take (``TUN_F_CSUM`` ...); 0 disables all.

        Raises:
            KernelError: ``EINVAL`` for unknown bits, or TSO/UFO/USO bits without ``TUN_F_CSUM``.
        """
        self._by_value("TUNSETOFFLOAD", int(offload))

    def set_persist(self, persist: bool) -> None:
        """``TUNSETPERSIST``: keep (or stop keeping) the device after its last fd is closed.

        Raises:
            PrivilegeError: without CAP_NET_ADMIN.
        """
        self._by_value("TUNSETPERSIST", int(bool(persist)))
        self._persist = bool(persist)

    def set_owner(self, uid: int) -> None:
        """``TUNSETOWNER``: let ``uid`` attach to the device without CAP_NET_ADMIN.

        Raises:
            KernelError: ``EINVAL`` for a uid with no mapping in the caller's user namespace.
            ValidationError: for a uid that is not an integer >= 0.
        """
        check_id("uid", uid)
        self._by_value("TUNSETOWNER", uid)

    def set_group(self, gid: int) -> None:
        """``TUNSETGROUP``: let members of ``gid`` attach without CAP_NET_ADMIN.

        Raises:
            KernelError: ``EINVAL`` for a gid with no mapping in the caller's user namespace.
            ValidationError: for a gid that is not an integer >= 0.
        """
        check_id("gid", gid)
        self._by_value("TUNSETGROUP", gid)

    def set_carrier(self, carrier: bool) -> None:
        """``TUNSETCARRIER``: turn the link's carrier on or off.

        Raises:
            PrivilegeError: without CAP_NET_ADMIN.
        """
        self._set_int("TUNSETCARRIER", int(bool(carrier)))

    # ----------------------------------------------------------------- queues

    def add_queue(self) -> Queue:
        """Open another queue fd on this multi-queue device; it becomes the last attached queue.

        The fd is opened in the device's network namespace (found through an open queue), so
        this works from any thread. It never creates a device: once the last fd of a
        non-persistent device is closed, the kernel has deleted it.

        Raises:
            ValidationError: for a single-queue device.
            DeviceGoneError: ``EBADFD`` when the device was deleted (or all fds of a
                non-persistent device were closed).
            KernelError: ``E2BIG`` at 256 queues; ``EBADF`` after :meth:`close`.
        """
        if not self.multi_queue:
            raise ValidationError("device", f"{self.name!r} is single-queue; create it with multi_queue=True")
        with self._lock, self._noting_deletion():
            self._check_open()
            if not self.queues and not self._persist:
                raise DeviceGoneError(
                    errno.EBADFD,
                    "TUNSETIFF",
                    f"every queue of the non-persistent device {self.name!r} was closed, so the kernel deleted "
                    "it; create the device again",
                )
            ns_fd = device_netns_fd(self._control_fd()) if self.queues else None  # else: persistent, none open
            opened: list[int] = []

            def opener() -> int:
                opened.append(bind_existing_queue(self.name, self._flags, nonblocking=self._nonblocking))
                return opened[-1]

            try:
                fd = opener() if ns_fd is None else run_in_netns(ns_fd, opener)
            except BaseException:
                # Interrupted while the helper thread opened it: nobody else will close it.
                for orphan in opened:
                    os.close(orphan)
                raise
            finally:
                if ns_fd is not None:
                    os.close(ns_fd)
            queue = Queue(self, fd, owned=True)
            self._queues.attach(queue)
            return queue

    def attach_queue(self, queue: Queue) -> None:
        """Re-attach a detached queue (``TUNSETQUEUE`` ``IFF_ATTACH_QUEUE``); it gets the last index.

        Raises:
            KernelError: ``EINVAL`` when the queue is attached already; ``EBADF`` when closed.
            DeviceGoneError: ``EBADFD`` when the device was deleted (the kernel says ``EINVAL``;
                ``TUNGETIFF`` tells the two apart).
            ValidationError: for a queue of another device.
        """
        with self._lock:
            self._own(queue)
            with self._noting_deletion():
                set_queue(queue.fd, self.name, TunFlag.IFF_ATTACH_QUEUE)
            if not self._queues.is_attached(queue):
                self._queues.attach(queue)

    def detach_queue(self, queue: Queue) -> None:
        """Detach a queue (``TUNSETQUEUE`` ``IFF_DETACH_QUEUE``); the last attached queue takes its index.

        Raises:
            KernelError: ``EINVAL`` when the queue is detached already or the device is single-queue.
            DeviceGoneError: ``EBADFD`` when the device was deleted (as :meth:`attach_queue`).
            ValidationError: for a queue of another device.
        """
        with self._lock:
            self._own(queue)
            with self._noting_deletion():
                set_queue(queue.fd, self.name, TunFlag.IFF_DETACH_QUEUE)
            if self._queues.is_attached(queue):
                self._queues.detach(queue)

    def _close_queue(self, queue: Queue) -> None:
        with self._lock:
            self._queues.remove(queue)
            fd = queue._release()
            if fd is not None:
                os.close(fd)

    def _check_open(self) -> None:
        if self._closed:
            raise KernelError(errno.EBADF, "TunTapDevice", f"{self.name!r} was closed; open the device again")

    # ----------------------------------------------------------------- eBPF

    def raise_if_deleted(self) -> None:
        """Raise :class:`DeviceGoneError` when the device behind the queues was deleted; else return.

        :class:`SteeringState` calls this before a refusal, so that a deleted device is reported as
        such rather than as a conflict with state the kernel freed. It issues only ``TUNGETIFF``,
        which changes nothing.

        Raises:
            DeviceGoneError: ``EBADFD``: the device was deleted (the steering state is cleared).
        """
        with self._lock:
            try:
                fd = self._control_fd()
            except KernelError:
                return  # every queue is closed: nothing to ask, and the caller's error stands
            try:
                with self._noting_deletion():
                    get_iff(fd)
            except DeviceGoneError:
                raise
            except KernelError:
                return  # not a deletion: the caller's error says more

    def set_filter_program(self, prog_fd: int) -> None:
        """``TUNSETFILTEREBPF``: drop or trim transmitted frames with a socket-filter program.

        Raises:
            KernelError: ``EINVAL`` when ``prog_fd`` is not a socket-filter program.
            ValidationError: for a negative fd.
        """
        if prog_fd < 0:
            raise ValidationError("prog_fd", "must be a program fd; use clear_filter_program() to detach")
        self._set_int("TUNSETFILTEREBPF", prog_fd)

    def clear_filter_program(self) -> None:
        """``TUNSETFILTEREBPF(-1)``: remove the filter program."""
        self._set_int("TUNSETFILTEREBPF", -1)

    # ----------------------------------------------------------------- teardown

    def close(self) -> None:
        """Close every queue fd this object owns (forget borrowed ones). Idempotent.

        A non-persistent device is deleted by the kernel when its last fd closes (this takes
        some 20 ms, inside this call).
        """
        with self._lock:
            self._closed = True
            first_error: OSError | None = None
            for queue in self._queues.clear():
                fd = queue._release()
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError as exc:
                        first_error = first_error or exc
            if first_error is not None:
                raise translate_error(first_error.errno or errno.EIO, "close") from first_error

    def _abandon(self, *, undo_persist: bool) -> None:
        """Undo a half-built device: drop the persistence this call set, then close everything."""
        try:
            if undo_persist and not self._closed:
                self.set_persist(False)
        except PytunHashError:
            pass  # closing below still releases every fd
        finally:
            self.close()
