"""The data rules' bench: a scratch TAP wired for crafted frames, a configuration in force, frames out and back.

:class:`Bench` is what every ``data.*`` rule works on:

* a scratch multi-queue TAP of the suite's namespace (:meth:`Context.scratch
  <pytun_hash.conformance.context.Context.scratch>`), up, with ``IFF_NOARP`` and IPv6 off on it
  (:func:`pytun_hash.traffic.wire`), so nothing but the rule's own frames reaches its queues;
* :meth:`Bench.apply` puts a configuration in force. Natively and under the emulator that is one
  **raw** set-ioctl of the revision under test, whose payload :func:`set_call` packs with
  :mod:`struct` in the revision's layout (never through the codec or
  :class:`~pytun_hash.device.hashctl.HashControl`, whose checks refuse what the rules measure).
  In eBPF mode it is pytun_hash's own steering program (:func:`~pytun_hash.bpf.rss.enable_ebpf_rss`,
  then :meth:`~pytun_hash.bpf.rss.EbpfRss.reconfigure`);
* :meth:`Bench.send` sends frames with ``AF_PACKET`` on the TAP (:func:`pytun_hash.traffic.inject`):
  each takes tun's transmit path, where the queue is chosen;
* :meth:`Bench.read` reads every queue fd non-blocking into a buffer pre-filled with :data:`FILL`,
  so header bytes the kernel did not write stay recognisable, and pairs what it read with what
  was sent (every frame sent is unique, and arrives byte for byte).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import struct
import time
from collections.abc import Iterator, Sequence

import attrs

from pytun_hash._abi import Revision, rfc, v3
from pytun_hash._abi.virtio_net import VIRTIO_NET_HDR_V1_HASH_SIZE, HashReport
from pytun_hash.bpf.rss import EbpfRss, enable_ebpf_rss
from pytun_hash.config import VnetHashConfig
from pytun_hash.conformance.context import Context, Mode
from pytun_hash.device import TunTapDevice
from pytun_hash.errors import ValidationError
from pytun_hash.model.vnet import read_hash_fields
from pytun_hash.traffic import inject, wire

__all__ = ["FILL", "READ_SIZE", "Bench", "Probe", "Seen", "hash_fields", "set_call"]

#: The byte every read buffer is filled with first: header bytes the kernel skipped keep it.
FILL = 0xA5
#: Bytes per read (every frame the rules send is far shorter).
READ_SIZE = 2048
# How long read() waits for frames still missing (transmission is synchronous; this is a bound).
_READ_TIMEOUT = 0.5
_UNTOUCHED = bytes([FILL]) * 8
_HASH_END = VIRTIO_NET_HDR_V1_HASH_SIZE


@attrs.frozen
class Probe:
    """One frame a rule sends.

    Attributes:
        label: what it is, for evidence (``"udp 10.0.0.1:5 -> 10.0.0.2:6 (IPv4 first fragment)"``).
        frame: the Ethernet frame, unique among the frames sent together.
    """

    label: str
    frame: bytes


@attrs.frozen
class Seen:
    """What became of one probe.

    Attributes:
        probe: the frame sent.
        queue: the queue it was read from; None when it never arrived.
        header: the vnet header bytes as read (:data:`FILL` where the kernel wrote nothing); empty
            when it never arrived.
    """

    probe: Probe
    queue: int | None
    header: bytes = b""

    @property
    def arrived(self) -> bool:
        """Whether the frame was read back."""
        return self.queue is not None

    @property
    def hash(self) -> tuple[int, int] | None:
        """``(hash_value, hash_report)`` as written, or None when no hash fields were (see :func:`hash_fields`)."""
        return hash_fields(self.header)

    def observed(self) -> dict[str, object]:
        """The facts for evidence: queue, and the hash fields (or why there are none)."""
        out: dict[str, object] = {"queue": self.queue}
        if not self.arrived:
            return out
        fields = self.hash
        if fields is None:
            out["hash"] = "not written" if len(self.header) >= _HASH_END else f"{len(self.header)}-byte header"
        else:
            value, report = fields
            out["hash_value"] = f"0x{value:08x}"
            out["hash_report"] = _report_name(report)
        return out


def _report_name(report: int) -> str:
    try:
        return HashReport(report).name
    except ValueError:
        return str(report)


def hash_fields(header: bytes) -> tuple[int, int] | None:
    """``(hash_value, hash_report)`` of a header read into a :data:`FILL`-ed buffer; None when it has none.

    None when the header is shorter than ``virtio_net_hdr_v1_hash`` (20 bytes), or when bytes
    12..19 still hold the fill (the kernel wrote a shorter header and skipped the rest).
    """
    if len(header) < _HASH_END or header[12:_HASH_END] == _UNTOUCHED:
        return None
    return read_hash_fields(header)


def set_call(revision: Revision, config: VnetHashConfig) -> tuple[str, bytes]:
    """The raw set-ioctl of ``revision`` that puts ``config`` in force: ``(request name, payload)``.

    The payload is packed in host byte order, padding zero, table and the whole 40-byte key
    appended (kernels copy ``keylen(types)`` bytes of it):

    * RFC: ``TUNSETVNETHASH``, ``struct tun_vnet_hash`` {u8 flags (RSS 0x01, REPORT 0x02), 3 pad,
      u32 types, u16 mask, u16 unclassified}, then the table and the key, always;
    * v3-v11: ``TUNSETVNETHASH``, {u16 flags (REPORT 0x0001, RSS 0x0002), 2 pad, u32 types}, then
      with RSS ``tun_vnet_hash_rss`` {u16 mask, u16 unclassified}, the table and the key;
    * v12: ``TUNSETVNETRSS`` (RSS) or ``TUNSETVNETREPORTINGRSS`` (RSS and reports), ``tun_vnet_rss``
      {u32 types, u16 mask, u16 unclassified}, the table and the key; reports alone (or nothing)
      with ``TUNSETVNETREPORTINGAUTOMQ`` and a u32 of types (0: hashing off).

    Raises:
        ValidationError: when ``revision`` is not a :class:`Revision`.
    """
    types = int(config.types)
    table = struct.pack(f"={len(config.indirection_table)}H", *config.indirection_table)
    rss_part = struct.pack("=HH", config.indirection_table_mask, config.unclassified_queue) + table + config.key
    if revision is Revision.RFC:
        flags = (rfc.TunVnetHashFlag.TUN_VNET_HASH_RSS if config.rss else 0) | (
            rfc.TunVnetHashFlag.TUN_VNET_HASH_REPORT if config.report else 0
        )
        return "TUNSETVNETHASH", struct.pack("=B3xI", int(flags), types) + rss_part
    if revision in (Revision.V3, Revision.V10):
        flags = (v3.TunVnetHashFlag.TUN_VNET_HASH_RSS if config.rss else 0) | (
            v3.TunVnetHashFlag.TUN_VNET_HASH_REPORT if config.report else 0
        )
        header = struct.pack("=H2xI", int(flags), types)
        return "TUNSETVNETHASH", header + rss_part if config.rss else header
    if revision is Revision.V12:
        if config.rss:
            name = "TUNSETVNETREPORTINGRSS" if config.report else "TUNSETVNETRSS"
            return name, struct.pack("=I", types) + rss_part
        return "TUNSETVNETREPORTINGAUTOMQ", struct.pack("=I", types if config.report else 0)
    raise ValidationError("revision", f"expected a Revision member, got {revision!r}")


class Bench:
    """A scratch TAP the data rules send frames through (see the module documentation).

    Make one with :meth:`open`. Queue indexes are the kernel's (the device's attached queues, in
    attach order).
    """

    def __init__(self, ctx: Context, device: TunTapDevice, vnet_hdr_size: int) -> None:
        self.ctx = ctx
        self.device = device
        self.vnet_hdr_size = vnet_hdr_size
        self._rss: EbpfRss | None = None

    @classmethod
    @contextlib.contextmanager
    def open(cls, ctx: Context, queues: int = 4, *, vnet_hdr_size: int = 20) -> Iterator[Bench]:
        """A bench on a fresh TAP of ``queues`` queues with a ``vnet_hdr_size``-byte little-endian header.

        Raises:
            KernelError: when the device cannot be made or wired.
        """
        with ctx.scratch(queues, vnet_hdr_size=vnet_hdr_size) as device:
            wire(ctx.netns, device, ipv6=False)
            for queue in device.attached_queues:
                queue.set_blocking(False)
            bench = cls(ctx, device, vnet_hdr_size)
            try:
                yield bench
            finally:
                bench.close()

    @property
    def num_queues(self) -> int:
        """Attached queues."""
        return len(self.device.attached_queues)

    @property
    def reports(self) -> bool:
        """Whether frames read here can carry the kernel's hash reports (not in eBPF mode)."""
        return self.ctx.mode is not Mode.EBPF

    def apply(self, config: VnetHashConfig) -> None:
        """Put ``config`` in force: the revision's raw set-ioctl, or (eBPF mode) the steering program.

        Raises:
            OSError: when the set-ioctl fails (the errno is the kernel's answer).
            ValidationError: in eBPF mode, for a config without RSS (the program only steers).
            PytunHashError: in eBPF mode, when the program cannot be loaded or attached.
        """
        if self.ctx.mode is Mode.EBPF:
            if self._rss is None:
                self._rss = enable_ebpf_rss(self.device, config)
            else:
                # In force once the map slot holds the new config (no need to sit out the grace period).
                self._rss.reconfigure(config)
            return
        assert self.ctx.revision is not None
        name, payload = set_call(self.ctx.revision, config)
        # A mutable buffer: the kernel reads the whole payload behind the pointer.
        fcntl.ioctl(self.device.attached_queues[0].fd, self.ctx.request(name), bytearray(payload))

    def set_vnet_hdr_size(self, size: int) -> None:
        """``TUNSETVNETHDRSZ``; later reads split frames at the new size.

        Raises:
            KernelError: when the kernel refuses the size.
        """
        self.device.set_vnet_hdr_size(size)
        self.vnet_hdr_size = size

    def send(self, probes: Sequence[Probe]) -> int:
        """Send every probe through the TAP; return how many the kernel took.

        Raises:
            KernelError: when a send fails (the link is down, the device is gone).
        """
        return inject(self.device.name, [p.frame for p in probes], ns=self.ctx.netns)

    def read(self, probes: Sequence[Probe], *, timeout: float = _READ_TIMEOUT) -> tuple[list[Seen], int]:
        """Read every queue until each probe arrived or ``timeout`` passed; return what became of each
        probe (in order), and how many other frames were read (none is expected).

        Raises:
            KernelError: when a read fails for another reason than an empty queue.
        """
        wanted: dict[bytes, list[int]] = {}
        for i, probe in enumerate(probes):
            wanted.setdefault(probe.frame, []).append(i)
        seen: list[Seen | None] = [None] * len(probes)
        found = others = 0
        deadline = time.monotonic() + timeout
        queues = [(q.index or 0, q) for q in self.device.attached_queues]
        while True:
            for index, queue in queues:
                while (buffer := self._read_one(queue.fd)) is not None:
                    header, frame = buffer[: self.vnet_hdr_size], buffer[self.vnet_hdr_size :]
                    slots = wanted.get(frame)
                    if slots:
                        i = slots.pop(0)
                        seen[i] = Seen(probes[i], index, header)
                        found += 1
                    else:
                        others += 1
            if found == len(probes) or time.monotonic() >= deadline:
                break
            poller = select.poll()
            for _index, queue in queues:
                poller.register(queue.fd, select.POLLIN)
            poller.poll(10)
        return [s if s is not None else Seen(probes[i], None) for i, s in enumerate(seen)], others

    def exchange(self, probes: Sequence[Probe]) -> tuple[list[Seen], int]:
        """:meth:`send`, then :meth:`read`.

        Raises:
            KernelError: as they do.
        """
        self.send(probes)
        return self.read(probes)

    @staticmethod
    def _read_one(fd: int) -> bytes | None:
        buffer = bytearray([FILL]) * READ_SIZE
        try:
            count = os.readv(fd, [buffer])
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return None
            raise
        return bytes(buffer[:count])

    def close(self) -> None:
        """Take pytun_hash's steering program off the device (eBPF mode); idempotent."""
        if self._rss is not None:
            self._rss.close()
            self._rss = None
