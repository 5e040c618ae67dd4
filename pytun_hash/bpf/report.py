"""Hash reports in user space, for devices steered by eBPF RSS.

A steering program can pick a queue but cannot write ``hash_value``/``hash_report`` into the
``virtio_net_hdr_v1_hash`` the guest reads. :class:`HashReporter` fills them from the software
model (:func:`pytun_hash.model.classify`) as frames are read from a queue, so a VMM can offer
``VIRTIO_NET_F_HASH_REPORT`` on kernels without native hash reporting. The model's
:func:`~pytun_hash.model.verify_reports` checks buffers filled by anyone (kernel or reporter).

Timing caveat: a frame is reported with the config the reporter holds when the frame is *read*,
while it was steered with the config in force when it was *sent*. After
:meth:`EbpfRss.reconfigure <pytun_hash.bpf.rss.EbpfRss.reconfigure>`, drain the queues (or accept
that frames already queued get the new config's report) before setting :attr:`HashReporter.config`.
"""

from __future__ import annotations

from pytun_hash._abi.tun import TUN_PI_SIZE
from pytun_hash._abi.virtio_net import VIRTIO_NET_HDR_V1_HASH_SIZE
from pytun_hash.config import VnetHashConfig
from pytun_hash.device.tap import DeviceMode, Queue, TunTapDevice
from pytun_hash.errors import DecodeError, ValidationError
from pytun_hash.model import FlowHash, Framing, Semantics, classify
from pytun_hash.model.vnet import write_hash_fields

__all__ = ["HashReporter"]


class HashReporter:
    """Fills the hash fields of buffers read from a tun/tap queue with the software model's values.

    A buffer is what ``read()`` on a queue returns: with packet information (no ``IFF_NO_PI``)
    first the 4-byte ``struct tun_pi``, then the vnet header of ``vnet_hdr_size`` bytes, then the
    frame. Bytes 12..19 of the vnet header receive ``hash_value``, ``hash_report`` and zero
    padding; nothing else is touched.

    Args:
        config: the hashing config; its ``report`` must be on (types and key are used).
        mode: TAP (Ethernet frames, up to two VLAN tags) or TUN (IP packets).
        vnet_hdr_size: the queue's vnet header size in bytes, at least 20.
        packet_info: buffers start with ``struct tun_pi``.
        semantics: the rules the steering follows; the eBPF backend's program follows the virtio
            specification (``Hashing.semantics``), which is the default.

    Raises:
        ValidationError: for ``report`` off, a vnet header below 20 bytes or a bad mode.
    """

    def __init__(
        self,
        config: VnetHashConfig,
        *,
        mode: DeviceMode = DeviceMode.TAP,
        vnet_hdr_size: int = VIRTIO_NET_HDR_V1_HASH_SIZE,
        packet_info: bool = False,
        semantics: Semantics = Semantics.SPEC,
    ) -> None:
        if not isinstance(semantics, Semantics):
            raise ValidationError("semantics", f"expected a Semantics member, got {semantics!r}")
        self.semantics = semantics
        if not isinstance(mode, DeviceMode):
            raise ValidationError("mode", f"expected a DeviceMode, got {mode!r}")
        if isinstance(vnet_hdr_size, bool) or not isinstance(vnet_hdr_size, int):
            raise ValidationError("vnet_hdr_size", f"expected an integer, got {vnet_hdr_size!r}")
        if vnet_hdr_size < VIRTIO_NET_HDR_V1_HASH_SIZE:
            raise ValidationError(
                "vnet_hdr_size",
                f"hash reports need a vnet header of at least {VIRTIO_NET_HDR_V1_HASH_SIZE} bytes, got "
                f"{vnet_hdr_size}; set it with device.set_vnet_hdr_size(20)",
            )
        self._config = self._checked(config)
        self.mode = mode
        self.vnet_hdr_size = vnet_hdr_size
        self.packet_info = bool(packet_info)
        # The steering skb never carries tun_pi, and with it stripped the frame is plain
        # Ethernet or IP, so the non-PI framings apply.
        self._framing = Framing.ETHERNET if mode is DeviceMode.TAP else Framing.IP
        self._header_at = TUN_PI_SIZE if self.packet_info else 0
        self._frame_at = self._header_at + vnet_hdr_size

    @classmethod
    def for_device(
        cls, device: TunTapDevice, config: VnetHashConfig, *, semantics: Semantics = Semantics.SPEC
    ) -> HashReporter:
        """A reporter for ``device``'s queues: its mode, packet information and current vnet header size.

        Raises:
            ValidationError: when the device has no vnet header, a vnet header below 20 bytes, or
                ``config.report`` is off.
            KernelError: when the header size cannot be read (device deleted).
        """
        if not device.vnet_hdr:
            raise ValidationError("device", f"{device.name!r} was created without IFF_VNET_HDR: no header to fill")
        return cls(
            config,
            mode=device.mode,
            vnet_hdr_size=device.get_vnet_hdr_size(),
            packet_info=device.packet_info,
            semantics=semantics,
        )

    @staticmethod
    def _checked(config: VnetHashConfig) -> VnetHashConfig:
        if not isinstance(config, VnetHashConfig):
            raise ValidationError("config", f"expected a VnetHashConfig, got {type(config).__name__}")
        if not config.report:
            raise ValidationError("report", "the config does not enable hash reports (report=False)")
        return config

    @property
    def config(self) -> VnetHashConfig:
        """The config reports are computed with (see the module's timing caveat)."""
        return self._config

    @config.setter
    def config(self, config: VnetHashConfig) -> None:
        self._config = self._checked(config)

    def report(self, buffer: bytes | bytearray | memoryview) -> FlowHash:
        """The model's hash value and report for the frame in ``buffer`` (nothing is written).

        Raises:
            DecodeError: when ``buffer`` is shorter than the packet information and vnet header.
        """
        if len(buffer) < self._frame_at:
            raise DecodeError(
                "buffer", f"{len(buffer)} bytes is shorter than the {self._frame_at}-byte headers before the frame"
            )
        config = self._config
        return classify(
            bytes(buffer[self._frame_at :]), config.types, config.key, l2=self._framing, semantics=self.semantics
        )

    def fill(self, buffer: bytearray | memoryview) -> FlowHash:
        """Write the model's ``hash_value``/``hash_report`` (and zero padding) into ``buffer`` in place.

        Raises:
            DecodeError: when ``buffer`` is too short.
            ValidationError: when ``buffer`` is read-only.
        """
        if isinstance(buffer, memoryview) and buffer.readonly:
            raise ValidationError("buffer", "is read-only; pass a bytearray or a writable memoryview")
        flow = self.report(buffer)
        write_hash_fields(buffer, flow.hash_value, int(flow.report), self._header_at)
        return flow

    def filled(self, buffer: bytes | bytearray | memoryview) -> bytes:
        """A copy of ``buffer`` with the hash fields filled in.

        Raises:
            DecodeError: when ``buffer`` is too short.
        """
        copy = bytearray(buffer)
        self.fill(copy)
        return bytes(copy)

    def read(self, queue: Queue, size: int = 65536) -> bytes | None:
        """Read one buffer from ``queue`` (non-blocking) and return it with the hash fields filled.

        Returns:
            The buffer, or None when the queue has nothing to read.

        Raises:
            KernelError: for read errors (the device was deleted ...).
            DecodeError: for a buffer shorter than the headers.
        """
        data = queue.try_read(size)
        return None if data is None else self.filled(data)

    def drain(self, queue: Queue, *, limit: int | None = None) -> list[bytes]:
        """Read every buffer queued now (at most ``limit``), hash fields filled.

        Raises:
            KernelError: for read errors.
            DecodeError: for a buffer shorter than the headers.
        """
        return [self.filled(b) for b in queue.drain(limit=limit)]
