"""One queue of a TUN/TAP device: an fd of ``/dev/net/tun`` bound to it, for frames in and out."""

from __future__ import annotations

import errno
import os
import select
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from pytun_hash.device._ioctl import translate_error
from pytun_hash.errors import KernelError

if TYPE_CHECKING:
    from pytun_hash.device.tap import TunTapDevice

__all__ = ["DEFAULT_READ_SIZE", "Queue", "QueueBase"]

#: Bytes :meth:`Queue.read` reads at most by default (64 KiB).
DEFAULT_READ_SIZE = 65536


class _Numbered(Protocol):
    name: str

    def _index_of(self, queue: Any) -> int | None: ...


class QueueBase:
    """What every queue is, real or fake: a place in its device's numbering, named by an fd.

    Attributes:
        device: the device this queue belongs to.
    """

    device: _Numbered

    def __init__(self, device: _Numbered, fd: int) -> None:
        self.device = device
        self._fd: int | None = fd

    def __repr__(self) -> str:
        kind = type(self).__name__
        if self._fd is None:
            return f"{kind}({self.device.name}, closed)"
        index = self.index
        where = "detached" if index is None else f"index={index}"
        return f"{kind}({self.device.name}, fd={self._fd}, {where})"

    @property
    def fd(self) -> int:
        """The queue's file descriptor (a fake queue's is a negative number, never an open file).

        Raises:
            KernelError: ``EBADF`` when the queue is closed.
        """
        if self._fd is None:
            raise KernelError(errno.EBADF, "Queue.fd", "the queue is closed; use another queue or add_queue()")
        return self._fd

    @property
    def index(self) -> int | None:
        """The kernel's number for this queue (what a steering program returns), None while detached or closed."""
        return self.device._index_of(self)

    @property
    def attached(self) -> bool:
        """Whether the queue takes part in the device's traffic (not detached, not closed)."""
        return self.index is not None

    @property
    def closed(self) -> bool:
        """Whether the queue was closed (or its fd released)."""
        return self._fd is None


class Queue(QueueBase):
    """One queue of a TUN/TAP device: an fd of ``/dev/net/tun`` bound to the device.

    Frames read from a queue start with the vnet header (when the device has ``IFF_VNET_HDR``),
    then packet info (without ``IFF_NO_PI``), then the Ethernet frame (TAP) or IP packet (TUN).
    Create queues through :class:`~pytun_hash.device.tap.TunTapDevice`; it owns them and their
    numbering (:mod:`pytun_hash.device.numbering`).

    Attributes:
        device: the device this queue belongs to.
    """

    device: TunTapDevice

    def __init__(self, device: TunTapDevice, fd: int, *, owned: bool) -> None:
        super().__init__(device, fd)
        self._owned = owned

    def fileno(self) -> int:
        """The fd, for ``select``/``poll``/``selectors``. Raises KernelError (``EBADF``) when closed."""
        return self.fd

    @property
    def blocking(self) -> bool:
        """Whether reads wait for a frame (no ``O_NONBLOCK``). Raises KernelError when closed."""
        return os.get_blocking(self.fd)

    def set_blocking(self, blocking: bool) -> None:
        """Set or clear ``O_NONBLOCK`` on this queue's fd. Raises KernelError when closed."""
        os.set_blocking(self.fd, blocking)

    def _io_error(self, exc: OSError, name: str) -> KernelError:
        err = exc.errno or errno.EIO
        hints = {
            errno.EAGAIN: "no frame is queued; poll() the queue fd first, or use Queue.try_read()/drain()",
            errno.EINVAL: (
                "the buffer is smaller than the vnet header (plus packet info) and the frame was dropped"
                if name == "read"
                else "the frame is malformed: shorter than the vnet header/packet info, or with invalid vnet "
                "header fields"
            ),
            errno.EIO: "the device is down or the frame could not be delivered; bring the link up",
        }
        if err == errno.EBADFD:
            self.device.steering.device_deleted()  # the device, its hash state and program are gone
        return translate_error(err, name, hint=hints.get(err))

    def read(self, size: int = DEFAULT_READ_SIZE) -> bytes:
        """Read one frame (vnet header and packet info included), at most ``size`` bytes.

        A ``size`` smaller than the frame truncates it and the rest is lost; smaller than the vnet
        header drops the frame with ``EINVAL``.

        Raises:
            KernelError: ``EAGAIN`` when non-blocking and nothing is queued; ``EINVAL`` for a too
                small ``size``; ``EBADF`` when closed.
            DeviceGoneError: ``EBADFD`` when the device was deleted.
        """
        try:
            return os.read(self.fd, size)
        except OSError as exc:
            raise self._io_error(exc, "read") from None

    def try_read(self, size: int = DEFAULT_READ_SIZE) -> bytes | None:
        """Read one frame like :meth:`read`, or return None when a non-blocking queue is empty.

        Raises:
            KernelError, DeviceGoneError: as :meth:`read`, except ``EAGAIN``.
        """
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise self._io_error(exc, "read") from None

    def readinto(self, buf: bytearray | memoryview) -> int:
        """Read one frame into ``buf``; return its length in bytes. Raises as :meth:`read`."""
        try:
            return os.readv(self.fd, [buf])
        except OSError as exc:
            raise self._io_error(exc, "read") from None

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Inject one frame (with vnet header / packet info as the device expects); return bytes written.

        Raises:
            KernelError: ``EINVAL`` for a malformed frame, ``EIO`` when it cannot be delivered,
                ``EAGAIN`` when non-blocking and the queue is full, ``EBADF`` when closed.
            DeviceGoneError: ``EBADFD`` when the device was deleted.
        """
        try:
            return os.write(self.fd, data)
        except OSError as exc:
            raise self._io_error(exc, "write") from None

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Wait up to ``timeout`` seconds (None = forever) for a frame; True when one can be read.

        Raises:
            KernelError: ``EBADF`` when closed.
        """
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        return any(ev & select.POLLIN for _fd, ev in poller.poll(ms))

    def drain(self, size: int = DEFAULT_READ_SIZE, *, limit: int | None = None) -> list[bytes]:
        """Read every frame queued now (at most ``limit``), without waiting.

        Raises:
            KernelError, DeviceGoneError: as :meth:`read`.
        """
        frames: list[bytes] = []
        while limit is None or len(frames) < limit:
            if not self.poll(0):
                break
            frame = self.try_read(size)
            if frame is None:
                break
            frames.append(frame)
        return frames

    def attach(self) -> None:
        """Re-attach this detached queue (``TUNSETQUEUE``); see :meth:`TunTapDevice.attach_queue`."""
        self.device.attach_queue(self)

    def detach(self) -> None:
        """Detach this queue (``TUNSETQUEUE``); see :meth:`TunTapDevice.detach_queue`."""
        self.device.detach_queue(self)

    def close(self) -> None:
        """Close the fd (only forget it when the device borrows it); the kernel renumbers the others. Idempotent."""
        self.device._close_queue(self)

    def _release(self) -> int | None:
        """Mark the queue closed; return the fd the caller must close (None when borrowed or closed already)."""
        fd, self._fd = self._fd, None
        return fd if self._owned else None

    def _take_ownership(self) -> None:
        """Own a borrowed fd from now on: close it with the queue, and keep it from children (``O_CLOEXEC``)."""
        os.set_inheritable(self.fd, False)
        self._owned = True

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
