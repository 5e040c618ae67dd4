"""One way for a VMM to read frames: the hash fields filled the same way on either backend.

With the native backend the kernel writes ``hash_value``/``hash_report`` into the
``virtio_net_hdr_v1_hash`` of every frame it queues; with the eBPF backend a steering program picks
the queue but cannot write them, so user space computes them from the software model
(:class:`~pytun_hash.bpf.report.HashReporter`). :class:`QueueReader` hides the difference: each frame
comes with the fields the guest must see, in the semantics of what is in force
(:attr:`Hashing.semantics <pytun_hash.hashing.Hashing.semantics>`), and VMM code does not branch on
the backend.

Timing: on eBPF a frame is reported with the configuration in force when it is *read*; after
:meth:`Hashing.reconfigure <pytun_hash.hashing.Hashing.reconfigure>` frames already queued (steered by
the old configuration) get the new one's report. Drain the queues around a reconfiguration when
the difference matters; the kernel has no such window.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from typing import TYPE_CHECKING

import attrs

from pytun_hash._abi.tun import TUN_PI_SIZE
from pytun_hash._abi.virtio_net import VIRTIO_NET_HDR_V1_HASH_SIZE, HashReport
from pytun_hash.bpf.report import HashReporter
from pytun_hash.config import VnetHashConfig
from pytun_hash.device.queue import DEFAULT_READ_SIZE, Queue
from pytun_hash.device.tap import TunTapDevice
from pytun_hash.errors import ValidationError
from pytun_hash.hashing.core import Hashing
from pytun_hash.model.classify import Semantics
from pytun_hash.model.vnet import read_hash_fields

if TYPE_CHECKING:
    from pytun_hash.bpf.shared import SlotWriter

__all__ = ["QueueReader", "ReceivedFrame"]


@attrs.frozen
class ReceivedFrame:
    """One buffer read from a queue, ready for the guest.

    Attributes:
        queue: the queue's index among the device's attached queues (the receive queue the guest
            sees when the VMM maps TAP queue i to receive queue i).
        buffer: what the queue returned, hash fields filled: ``struct tun_pi`` (with packet
            information), the vnet header, the frame.
        frame: the Ethernet frame (TAP) or IP packet (TUN) after the headers.
        hash_value: the header's ``hash_value`` (0 when the header has no hash fields).
        hash_report: the header's ``hash_report`` (``NONE`` when there are none, or reports are off).
        computed: True when user space computed the fields (eBPF backend), False when the kernel
            wrote them or there are none.
    """

    queue: int | None
    buffer: bytes
    frame: bytes
    hash_value: int
    hash_report: HashReport | int
    computed: bool


class QueueReader:
    """Reads a hashed device's queues and yields :class:`ReceivedFrame` objects.

    Args:
        hashing: the hashing in force on the device (enabled or adopted); the reader follows its
            reconfigurations. Or, for a VMM without privileges, the :class:`~pytun_hash.bpf.shared.SlotWriter`
            it reconfigures RSS with (eBPF: the reports are computed with what it wrote last).
        device: with a writer, the device whose queues the VMM holds (e.g. ``TunTapDevice.adopt(fds)``).
        size: the largest buffer read at once, bytes (the headers included); 65536 holds any frame
            of a TAP without GSO.

    Raises:
        ValidationError: for a size below the headers, a device that is not a real TUN/TAP device, or a
            writer without ``device``.
        KernelError: when the device's vnet header size cannot be read (it was deleted).
    """

    def __init__(
        self, hashing: Hashing | SlotWriter, *, device: TunTapDevice | None = None, size: int = DEFAULT_READ_SIZE
    ) -> None:
        self._hashing = hashing if isinstance(hashing, Hashing) else None
        self._writer = None if isinstance(hashing, Hashing) else hashing
        self._reporters: dict[tuple[VnetHashConfig, Semantics], HashReporter] = {}
        target: object = self._hashing.device if self._hashing is not None else device
        if self._hashing is None and device is None:
            raise ValidationError("device", "a reader over a SlotWriter needs the device whose queues it reads")
        if not isinstance(target, TunTapDevice):
            raise ValidationError("hashing", f"reads need a real TUN/TAP device, not a {type(target).__name__}")
        self._device = target
        hdr = target.get_vnet_hdr_size() if target.vnet_hdr else 0
        self._header_at = TUN_PI_SIZE if target.packet_info else 0
        self._frame_at = self._header_at + hdr
        # Below 20 bytes there are no hash fields to read or fill (the kernel refuses reports then).
        self._has_hash_fields = hdr >= VIRTIO_NET_HDR_V1_HASH_SIZE
        if isinstance(size, bool) or not isinstance(size, int) or size <= self._frame_at:
            raise ValidationError("size", f"must be an integer above the {self._frame_at}-byte headers, got {size!r}")
        self.size = size

    def _reporter(self) -> HashReporter | None:
        """Who fills the hash fields in user space now (None: the kernel, or reports are off)."""
        if not self._has_hash_fields:
            return None
        if self._hashing is not None:
            return self._hashing.reporter
        config = self._writer.config if self._writer is not None else None
        if config is None or not config.report:
            return None
        semantics = self._writer.semantics if self._writer is not None else Semantics.SPEC
        key = (config, semantics)
        if key not in self._reporters:
            self._reporters.clear()  # one at a time: the configuration in force
            self._reporters[key] = HashReporter.for_device(self._device, config, semantics=semantics)
        return self._reporters[key]

    def _received(self, queue: Queue, data: bytes) -> ReceivedFrame:
        reporter = self._reporter()
        if reporter is not None:
            data = reporter.filled(data)
        value, report = read_hash_fields(data, self._header_at) if self._has_hash_fields else (0, 0)
        try:
            kind: HashReport | int = HashReport(report)
        except ValueError:  # a kernel bug or an unknown future type: shown, not hidden
            kind = report
        return ReceivedFrame(queue.index, data, data[self._frame_at :], value, kind, reporter is not None)

    def read(self, queue: Queue) -> ReceivedFrame | None:
        """One frame from ``queue`` without blocking; None when it has none.

        Raises:
            KernelError: for read errors (the device was deleted ...).
            DecodeError: for a buffer shorter than the headers.
        """
        data = queue.try_read(self.size)
        return None if data is None else self._received(queue, data)

    def frames(self, *, timeout: float | None = 0.0, limit: int | None = None) -> Iterator[ReceivedFrame]:
        """Frames from every attached queue, as they become readable.

        Args:
            timeout: seconds to wait for a queue to become readable when none is; 0 (default) yields
                what is queued now and stops; None waits forever.
            limit: stop after this many frames (None: no limit).

        Raises:
            KernelError: for read errors.
            DecodeError: for a buffer shorter than the headers.
        """
        count = 0
        while limit is None or count < limit:
            queues = [q for q in self._device.attached_queues if not q.closed]
            if not queues:
                return
            ready, _, _ = select.select(queues, [], [], timeout)
            if not ready:
                return
            for queue in ready:
                got = self.read(queue)
                if got is not None:
                    count += 1
                    yield got
                    if limit is not None and count >= limit:
                        return
