"""What each revision's kernel does for the hash ioctls, written as the kernel code reads.

:class:`EmulatedKernel` holds the per-device hash state and runs one trapped call at a time
against a :class:`Call`: the caller's memory and the real device, supplied by
:class:`~pytun_hash.testing.KernelEmulator`, or the caller's buffer and a fake device, supplied by
:class:`~pytun_hash.testing.FakeTunTap` (:class:`~pytun_hash.testing.BufferCall`). Reads happen in
the kernel's order and with its byte counts; a fault at any copy is ``EFAULT`` and nothing is committed.

RFC ("tun: Introduce virtio-net hashing feature", 8 Oct 2023; verified on a real kernel carrying it):

* Trapped: ``TUNGETVNETHASHCAP`` 0x54e4, ``TUNSETVNETHASH`` 0x400454e5, and, for their side
  effects, ``TUNSETSTEERINGEBPF`` and ``TUNSETVNETHDRSZ``.
* Every call needs an attached device (``EBADFD`` otherwise: a fresh fd, or the device was
  deleted), as both ioctls sit after tun's device lookup.
* CAP copies 8 bytes ``{max_indirection_table_length=128, pad 0, types=0x3f}``.
* SET: copy the 12-byte header (``EFAULT``); ``EINVAL`` if REPORT is asked and the vnet
  header is shorter than 20 bytes or not little-endian, or if mask >= 128; copy
  2*(mask+1) table bytes, then ``keylen(types)`` key bytes (40 if ``types & 7`` else 4, the
  series' enum mix-up), each ``EFAULT`` on a fault; commit only then: the whole header
  (padding included), mask+1 entries, keylen key bytes. Key bytes beyond keylen keep their
  previous values (zero on a fresh device). With RSS in the new flags the steering program
  is detached silently, for real, on the real device. Unknown flag and type bits, padding,
  non-power-of-two tables and queue numbers are not checked.
* ``TUNSETSTEERINGEBPF``: performed on the real device; after a successful attach (fd != -1)
  the RSS bit is cleared and REPORT kept; detaching (-1) and failures leave the flags alone.
* ``TUNSETVNETHDRSZ``: ``EINVAL`` below 20 while REPORT is set, otherwise performed for real.
* Not trapped: ``TUNSETVNETLE``/``TUNSETVNETBE``. Their RFC checks only fire on big-endian
  hosts or kernels with ``CONFIG_TUN_VNET_CROSS_LE``; this emulator leaves them to the real
  kernel, which on such hosts lacks the RFC's extra checks.

V3 (v3-v9): the emulator follows **v6-v9**, the code the EBUSY rules were last written in:

* Trapped: ``TUNGETVNETHASHCAP`` 0x800854e4, ``TUNSETVNETHASH`` 0x400854e5, ``TUNSETSTEERINGEBPF``.
* CAP needs no device (callable before ``TUNSETIFF`` and after deletion): 8 bytes
  ``{flags REPORT|RSS = 0x0003, pad 0, types 0x3f}``.
* SET: ``EBADFD`` without a device; copy the 8-byte ``tun_vnet_hash``; with RSS:
  ``EBUSY`` while a steering program is attached, then copy ``tun_vnet_hash_rss`` (4),
  the table 2*(mask+1) (mask is not bounded beyond u16) and ``keylen(types)`` key bytes.
  Each SET replaces the whole state (a fresh kernel allocation): without RSS only flags and
  types are held; key bytes beyond keylen are uninitialised kernel memory, shown as zero
  (see :attr:`EmulatedHashState.key_loaded`).
* ``TUNSETSTEERINGEBPF``: copy the fd (``EFAULT``); fd != -1 while RSS is set -> ``EBUSY``;
  otherwise performed for real.
* REPORT follows v5+: accepted whatever the vnet header size (it takes effect only at
  >= 20 bytes), so no ``EINVAL``/``EBUSY`` for it, and ``TUNSETVNETHDRSZ`` is not trapped.
  v3/v4 answered ``EBUSY`` instead; they are not emulated.

V10 (v10-v11): the ioctls and structures of V3; a steering program takes precedence over RSS
instead of refusing it: ``TUNSETVNETHASH`` with RSS succeeds while a program is attached, and
attaching one while RSS is set succeeds (the program steers; RSS stays set for when it is detached).

V12 (30 May 2025):

* Trapped: ``TUNGETVNETHASHTYPES`` 0x800454e4, ``TUNSETVNETREPORTINGAUTOMQ`` 0x800454e5,
  ``TUNSETVNETREPORTINGRSS`` 0x800854e6, ``TUNSETVNETRSS`` 0x800854e7, ``TUNSETSTEERINGEBPF``
  (only to show the attached program in the state; it is always performed for real).
* TYPES needs no device and writes the u32 0x3f.
* AUTOMQ: ``EBADFD`` without a device; copies a u32 of types; nonzero -> reporting with
  automq steering (fresh, zeroed state), zero -> hashing off.
* RSS / REPORTINGRSS: copy ``tun_vnet_rss`` (8), the table, ``keylen(hash_types)`` key
  bytes; replace the whole state. A steering program takes precedence: no ``EBUSY``.

All revisions: a call on an fd that is not a TUN/TAP character device (10:200) is passed to
the real kernel untouched, as is every other ioctl. The hash request numbers of the *other*
revisions are trapped too and answered as tun answers an ioctl it does not know (``EBADFD``
without a device, else ``EINVAL``), so the emulated kernel speaks exactly one revision whatever
the host kernel carries.
"""

from __future__ import annotations

import errno
import struct
import sys
from collections.abc import Callable
from typing import Protocol

import attrs

from pytun_hash._abi import hash_ioctls, ioctl_def, layout_for, rfc, v3
from pytun_hash._abi.revision import Revision
from pytun_hash._abi.virtio_net import VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_V1_HASH_SIZE, HashReport
from pytun_hash.config import VnetHashCapability, VnetHashConfig
from pytun_hash.errors import ValidationError

__all__ = [
    "Call",
    "foreign_request_name",
    "DeviceInfo",
    "DeviceKey",
    "EmulatedHashState",
    "EmulatedKernel",
    "KernelErrno",
    "virtio_net_hash_key_length",
]

VIRTIO_NET_RSS_MAX_KEY_SIZE = 40
_RFC_RSS = int(rfc.TunVnetHashFlag.TUN_VNET_HASH_RSS)
_RFC_REPORT = int(rfc.TunVnetHashFlag.TUN_VNET_HASH_REPORT)
_V3_RSS = int(v3.TunVnetHashFlag.TUN_VNET_HASH_RSS)
_V3_REPORT = int(v3.TunVnetHashFlag.TUN_VNET_HASH_REPORT)
_SUPPORTED_TYPES = 0x3F
_E = "<" if sys.byteorder == "little" else ">"
# The layouts the handlers copy in and out, compiled once: a handler runs on every trapped call.
_S_INT = struct.Struct(f"{_E}i")
_S_U32 = struct.Struct(f"{_E}I")
_S_HH = struct.Struct(f"{_E}HH")
_S_H2XI = struct.Struct(f"{_E}H2xI")
_S_IHH = struct.Struct(f"{_E}IHH")
_S_RFC_HEADER = struct.Struct(f"{_E}B3xIHH")


def _u16_table(raw: bytes) -> tuple[int, ...]:
    """The ``u16`` indirection table entries in ``raw``, host order (the kernel's ``copy_from_user``)."""
    return tuple(memoryview(raw).cast("H"))


def virtio_net_hash_key_length(types: int) -> int:
    """The series' ``virtio_net_hash_key_length()``, bug included: key bytes copied for ``types``.

    It tests ``VIRTIO_NET_HASH_REPORT_*`` values (enum ordinals) against a field of
    ``VIRTIO_NET_RSS_HASH_TYPE_*`` bits, so the result is 40 when ``types & 7`` and 4 otherwise.
    Kept independent of :func:`pytun_hash.codec.kernel_key_length` on purpose: the emulator
    is the referee the codec is tested against.
    """
    length = 0
    if types & _R_IPV4:
        length = 8
    if types & _R_L4V4:
        length = 12
    if types & _R_IPV6:
        length = 32
    if types & _R_L4V6:
        length = 36
    return length + 4


# The kernel's operands, as plain ints (the enum's own operators are slow on this path); each
# length above is larger than the one before it, so the last match is the max.
_R_IPV4 = int(HashReport.IPV4)
_R_L4V4 = int(HashReport.TCPV4 | HashReport.UDPV4)
_R_IPV6 = int(HashReport.IPV6)
_R_L4V6 = int(HashReport.TCPV6 | HashReport.UDPV6)


def foreign_request_name(name: str, revision: Revision) -> str:
    """How the emulator names ``revision``'s ioctl ``name`` when another revision is emulated."""
    return f"{name}[{revision.value}]"


class KernelErrno(Exception):  # noqa: N818 - carries the kernel's return value; control flow
    """Raised inside a handler to make the trapped call fail with ``errno`` (internal control flow)."""

    def __init__(self, err: int) -> None:
        super().__init__(err)
        self.errno = err


@attrs.frozen(cache_hash=True)  # a key is looked up in several tables per trapped call
class DeviceKey:
    """Identifies one tun device for the life of the emulator.

    Attributes:
        netns: inode of the device's network namespace (0 when it could not be read).
        ifindex: the device's ifindex in that namespace, or None when it could not be read;
            the name then identifies the device (a re-created device with the same name
            shares its state).
        ifname: the interface name when first seen.
    """

    netns: int
    ifindex: int | None
    ifname: str = attrs.field(eq=False)
    _fallback_name: str | None = attrs.field(default=None, repr=False, alias="_fallback_name")

    @classmethod
    def of(cls, netns: int, ifindex: int | None, ifname: str) -> DeviceKey:
        """The key of device ``ifname`` (index ``ifindex``) in namespace ``netns``."""
        return cls(netns, ifindex, ifname, ifname if ifindex is None else None)


@attrs.frozen
class DeviceInfo:
    """The live device behind a queue fd, as ``TUNGETIFF`` reports it."""

    key: DeviceKey
    ifname: str
    flags: int


class Call(Protocol):
    """One trapped call, as a handler sees it: the caller's memory and the real device.

    Offsets are relative to the ioctl's pointer argument. Every method that fails raises
    :class:`KernelErrno` with the errno the kernel would return.
    """

    @property
    def arg(self) -> int:
        """The raw third ioctl argument."""
        ...

    def device(self) -> DeviceInfo:
        """The attached device; ``KernelErrno(EBADFD)`` when there is none."""
        ...

    def copy_from_user(self, offset: int, length: int) -> bytes:
        """Copy ``length`` bytes from the caller; ``KernelErrno(EFAULT)`` when any is unreadable."""
        ...

    def copy_to_user(self, offset: int, data: bytes) -> None:
        """Copy ``data`` to the caller; ``KernelErrno(EFAULT)`` when any byte is not writable."""
        ...

    def vnet_hdr_sz(self) -> int:
        """The device's vnet header size in bytes (``TUNGETVNETHDRSZ`` on the real device)."""
        ...

    def vnet_is_little_endian(self) -> bool:
        """``tun_is_little_endian()`` of the real device."""
        ...

    def set_steering_ebpf(self, prog_fd: int) -> int | None:
        """Perform ``TUNSETSTEERINGEBPF`` with the caller's ``prog_fd`` on the real device.

        Returns the attached program's id (None after a detach).
        """
        ...

    def set_vnet_hdr_sz(self, size: int) -> None:
        """Perform ``TUNSETVNETHDRSZ`` with ``size`` on the real device."""
        ...


@attrs.frozen
class EmulatedHashState:
    """The hash state one device holds in an emulated kernel (a snapshot).

    Attributes:
        revision: the emulated revision.
        ifname: the device's name when first seen.
        flags: the flag word as the revision stores it (RFC: ``u8`` RSS=0x01 REPORT=0x02;
            v3-v11: ``u16`` REPORT=0x0001 RSS=0x0002; v12 has none and shows 0), unknown bits kept.
        rss: the state steers through the indirection table.
        report: the state asks for hash reports.
        types: the stored ``VIRTIO_NET_RSS_HASH_TYPE_*`` bits, unknown bits kept.
        indirection_table_mask: the stored mask (0 when the revision holds no RSS part).
        unclassified_queue: the stored unclassified queue.
        indirection_table: the mask+1 entries in force, raw ``u16`` values (empty when the
            revision holds no RSS part).
        key: the 40 key bytes held. RFC: bytes beyond :attr:`key_loaded` are left from earlier
            calls (zero on a fresh device). v3+: those bytes are uninitialised kernel memory;
            shown as zero.
        key_loaded: key bytes the last successful set-ioctl copied (4 or 40; 0 when none).
        header: the raw fixed header of the last successful set-ioctl, padding included
            (RFC 12 bytes; v3-v11 8, or 12 with ``tun_vnet_hash_rss``; v12 4 or 8).
        steering_attached: a steering eBPF program is attached (as seen through the emulator).
        steering_prog_id: the attached program's id, or None.
    """

    revision: Revision
    ifname: str
    flags: int = 0
    rss: bool = False
    report: bool = False
    types: int = 0
    indirection_table_mask: int = 0
    unclassified_queue: int = 0
    indirection_table: tuple[int, ...] = ()
    key: bytes = bytes(VIRTIO_NET_RSS_MAX_KEY_SIZE)
    key_loaded: int = 0
    header: bytes = b""
    steering_attached: bool = False
    steering_prog_id: int | None = None

    @property
    def enabled(self) -> bool:
        """True when RSS or hash reporting is on."""
        return self.rss or self.report

    def as_config(self) -> VnetHashConfig:
        """The state as a :class:`VnetHashConfig` (for comparing with what the binding applied).

        The key is the full 40 bytes in force; without an RSS part the table is ``(0,)``.

        Raises:
            ValidationError: when the state is not expressible as a config (for example a
                mask whose table length is not a power of two, or unknown type bits).
        """
        return VnetHashConfig(
            rss=self.rss,
            report=self.report,
            types=self.types,
            indirection_table=self.indirection_table or (0,),
            key=self.key,
            unclassified_queue=self.unclassified_queue,
        )


@attrs.define
class _DeviceState:
    """Mutable per-device state; one per :class:`DeviceKey`."""

    ifname: str
    flags: int = 0
    rss: bool = False
    report: bool = False
    types: int = 0
    mask: int = 0
    unclassified: int = 0
    table: tuple[int, ...] = ()
    key: bytearray = attrs.field(factory=lambda: bytearray(VIRTIO_NET_RSS_MAX_KEY_SIZE))
    key_loaded: int = 0
    header: bytes = b""
    steering_prog_id: int | None = None
    steering_attached: bool = False

    def replace_all(self) -> None:
        """Forget the hash part, as the v3+ kernels do when they swap in a fresh allocation."""
        self.flags = 0
        self.rss = self.report = False
        self.types = self.mask = self.unclassified = 0
        self.table = ()
        self.key = bytearray(VIRTIO_NET_RSS_MAX_KEY_SIZE)
        self.key_loaded = 0
        self.header = b""


def _default_capability(revision: Revision) -> VnetHashCapability:
    return VnetHashCapability(
        revision,
        _SUPPORTED_TYPES,
        max_indirection_table_length=rfc.TUN_VNET_HASH_MAX_INDIRECTION_TABLE_LENGTH
        if revision is Revision.RFC
        else None,
    )


class EmulatedKernel:
    """The hash ioctls of one revision, with per-device state.

    Args:
        revision: the revision to emulate.
        capability: what the capability ioctl reports; None = what that revision's kernel
            reports. On the RFC its ``max_indirection_table_length`` is also the mask bound
            (``EINVAL`` for mask >= it).

    Raises:
        ValidationError: when ``capability`` is for another revision or cannot be encoded.
    """

    def __init__(self, revision: Revision, capability: VnetHashCapability | None = None) -> None:
        cap = capability or _default_capability(revision)
        if cap.revision is not revision:
            raise ValidationError(
                "capability", f"is for revision {cap.revision.value}, the emulator runs {revision.value}"
            )
        if revision is Revision.RFC and (
            cap.max_indirection_table_length is None or not 0 <= cap.max_indirection_table_length <= 0xFFFF
        ):
            raise ValidationError("capability.max_indirection_table_length", "the RFC needs a value in 0..65535")
        self.revision = revision
        self.capability = cap
        self._states: dict[DeviceKey, _DeviceState] = {}
        # The last snapshot of each device, with the fields it was taken from.
        self._snapshots: dict[DeviceKey, tuple[tuple[object, ...], EmulatedHashState]] = {}
        layout = layout_for()
        names = [d.name for d in hash_ioctls(revision)]
        names.append("TUNSETSTEERINGEBPF")
        if revision is Revision.RFC:
            names.append("TUNSETVNETHDRSZ")
        self.requests: dict[int, str] = {ioctl_def(n, revision).request(layout): n for n in names}
        # Exactly one revision: the other revisions' numbers answer as this kernel answers any
        # ioctl it does not know, whatever the host kernel has.
        for other in (Revision.RFC, Revision.V3, Revision.V12):
            if other is not revision.abi:
                for d in hash_ioctls(other):
                    self.requests.setdefault(d.request(layout), foreign_request_name(d.name, other))
        self.changed: DeviceKey | None = None
        handlers: dict[Revision, dict[str, Callable[[Call], int]]] = {
            Revision.RFC: {
                "TUNGETVNETHASHCAP": self._rfc_getvnethashcap,
                "TUNSETVNETHASH": self._rfc_setvnethash,
                "TUNSETSTEERINGEBPF": self._rfc_setsteeringebpf,
                "TUNSETVNETHDRSZ": self._rfc_setvnethdrsz,
            },
            Revision.V3: {
                "TUNGETVNETHASHCAP": self._v3_getvnethashcap,
                "TUNSETVNETHASH": self._v3_setvnethash,
                "TUNSETSTEERINGEBPF": self._v3_setsteeringebpf,
            },
            Revision.V10: {
                "TUNGETVNETHASHCAP": self._v3_getvnethashcap,
                "TUNSETVNETHASH": self._v3_setvnethash,
                "TUNSETSTEERINGEBPF": self._v12_setsteeringebpf,
            },
            Revision.V12: {
                "TUNGETVNETHASHTYPES": self._v12_getvnethashtypes,
                "TUNSETVNETREPORTINGAUTOMQ": self._v12_setvnetreportingautomq,
                "TUNSETVNETREPORTINGRSS": self._v12_setvnetreportingrss,
                "TUNSETVNETRSS": self._v12_setvnetrss,
                "TUNSETSTEERINGEBPF": self._v12_setsteeringebpf,
            },
        }
        self._handlers = handlers[revision]

    # -- state access -------------------------------------------------------------------------

    def _zero_state(self, ifname: str) -> _DeviceState:
        # The RFC embeds a zeroed table in tun_struct (mask 0: entry 0 in force); later
        # revisions hold no hash state at all until the first set-ioctl.
        return _DeviceState(ifname, table=(0,) if self.revision is Revision.RFC else ())

    def _state(self, dev: DeviceInfo) -> _DeviceState:
        state = self._states.get(dev.key)
        if state is None:
            # A device the emulator has not seen yet holds the kernel's zero state.
            state = self._states[dev.key] = self._zero_state(dev.ifname)
        return state

    def snapshot(self, key: DeviceKey) -> EmulatedHashState:
        """The state of device ``key`` (the zero state for a device never touched).

        Snapshots are immutable: while a device's state stays as it was (a configuration applied
        again), the same snapshot object is returned.
        """
        s = self._states.get(key) or self._zero_state(key.ifname)
        fields = (
            s.ifname,
            s.flags,
            s.rss,
            s.report,
            s.types,
            s.mask,
            s.unclassified,
            s.table,
            bytes(s.key),
            s.key_loaded,
            s.header,
            s.steering_attached,
            s.steering_prog_id,
        )
        last = self._snapshots.get(key)
        if last is not None and last[0] == fields:
            return last[1]
        (ifname, flags, rss, report, types, mask, unclassified, table, key_bytes, loaded, header, attached, prog_id) = (
            fields
        )
        snap = EmulatedHashState(
            revision=self.revision,
            ifname=ifname,
            flags=flags,
            rss=rss,
            report=report,
            types=types,
            indirection_table_mask=mask,
            unclassified_queue=unclassified,
            indirection_table=table,
            key=key_bytes,
            key_loaded=loaded,
            header=header,
            steering_attached=attached,
            steering_prog_id=prog_id,
        )
        self._snapshots[key] = (fields, snap)
        return snap

    def known_devices(self) -> tuple[DeviceKey, ...]:
        """Every device the emulated kernel holds a state for, in first-seen order."""
        return tuple(self._states)

    def _commit(self, dev: DeviceInfo) -> _DeviceState:
        self.changed = dev.key
        return self._state(dev)

    # -- dispatch -----------------------------------------------------------------------------

    def handle(self, name: str, call: Call) -> int:
        """Run trapped ioctl ``name``; return its value, or raise :class:`KernelErrno`.

        Sets :attr:`changed` to the device whose state the call changed (None if none).

        Raises:
            KernelErrno: the errno the emulated kernel returns.
            KeyError: when ``name`` is not trapped for this revision.
        """
        self.changed = None
        handler = self._handlers.get(name)
        if handler is None:
            if name in self.requests.values():
                return self._unknown_ioctl(call)
            raise KeyError(name)
        return handler(call)

    @staticmethod
    def _unknown_ioctl(call: Call) -> int:
        # tun's default case: EBADFD without a device (the lookup comes first), else EINVAL.
        call.device()
        raise KernelErrno(errno.EINVAL)

    # -- RFC ----------------------------------------------------------------------------------

    def _rfc_getvnethashcap(self, call: Call) -> int:
        call.device()
        cap = self.capability
        limit = cap.max_indirection_table_length or 0
        call.copy_to_user(0, _S_H2XI.pack(limit, int(cap.types)))
        return 0

    def _rfc_setvnethash(self, call: Call) -> int:
        dev = call.device()
        header = call.copy_from_user(0, 12)
        flags, types, mask, unclassified = _S_RFC_HEADER.unpack(header)
        limit = self.capability.max_indirection_table_length or 0
        if (
            flags & _RFC_REPORT
            and (call.vnet_hdr_sz() < VIRTIO_NET_HDR_V1_HASH_SIZE or not call.vnet_is_little_endian())
        ) or mask >= limit:
            raise KernelErrno(errno.EINVAL)
        table_len = 2 * (mask + 1)
        table = call.copy_from_user(12, table_len)
        key_len = virtio_net_hash_key_length(types)
        key = call.copy_from_user(12 + table_len, key_len)
        state = self._commit(dev)
        state.header = header
        state.flags = flags
        state.rss = bool(flags & _RFC_RSS)
        state.report = bool(flags & _RFC_REPORT)
        state.types, state.mask, state.unclassified = types, mask, unclassified
        state.table = _u16_table(table)
        state.key[:key_len] = key
        state.key_loaded = key_len
        if flags & _RFC_RSS:
            # The RFC ignores what detaching returns. (No contextlib.suppress: this runs per call.)
            try:  # noqa: SIM105
                call.set_steering_ebpf(-1)
            except KernelErrno:
                pass
            state.steering_attached = False
            state.steering_prog_id = None
        return 0

    def _rfc_setsteeringebpf(self, call: Call) -> int:
        dev = call.device()
        (prog_fd,) = _S_INT.unpack(call.copy_from_user(0, 4))
        prog_id = call.set_steering_ebpf(prog_fd)
        state = self._commit(dev)
        state.steering_attached = prog_fd != -1
        state.steering_prog_id = prog_id
        if prog_fd != -1:
            state.flags &= ~_RFC_RSS
            state.rss = False
        return 0

    def _rfc_setvnethdrsz(self, call: Call) -> int:
        dev = call.device()
        (size,) = _S_INT.unpack(call.copy_from_user(0, 4))
        if size < VIRTIO_NET_HDR_SIZE:
            raise KernelErrno(errno.EINVAL)
        if self._state(dev).flags & _RFC_REPORT and size < VIRTIO_NET_HDR_V1_HASH_SIZE:
            raise KernelErrno(errno.EINVAL)
        call.set_vnet_hdr_sz(size)
        return 0

    # -- v3-v11 (as v6-v9) --------------------------------------------------------------------

    def _v3_getvnethashcap(self, call: Call) -> int:
        cap = self.capability
        flags = (_V3_REPORT if cap.report else 0) | (_V3_RSS if cap.rss else 0)
        call.copy_to_user(0, _S_H2XI.pack(flags, int(cap.types)))
        return 0

    def _v3_setvnethash(self, call: Call) -> int:
        dev = call.device()
        header = call.copy_from_user(0, 8)
        flags, types = _S_H2XI.unpack(header)
        if not flags & _V3_RSS:
            state = self._commit(dev)
            state.replace_all()
            state.header, state.flags, state.types = header, flags, types
            state.report = bool(flags & _V3_REPORT)
            return 0
        if self._state(dev).steering_attached and not self.revision.steering_precedence:
            raise KernelErrno(errno.EBUSY)
        rss = call.copy_from_user(8, 4)
        mask, unclassified = _S_HH.unpack(rss)
        table_len = 2 * (mask + 1)
        table = call.copy_from_user(12, table_len)
        key_len = virtio_net_hash_key_length(types)
        key = call.copy_from_user(12 + table_len, key_len)
        state = self._commit(dev)
        state.replace_all()
        state.header, state.flags, state.types = header + rss, flags, types
        state.rss, state.report = True, bool(flags & _V3_REPORT)
        state.mask, state.unclassified = mask, unclassified
        state.table = _u16_table(table)
        state.key[:key_len] = key
        state.key_loaded = key_len
        return 0

    def _v3_setsteeringebpf(self, call: Call) -> int:
        dev = call.device()
        (prog_fd,) = _S_INT.unpack(call.copy_from_user(0, 4))
        if prog_fd != -1 and self._state(dev).rss:
            raise KernelErrno(errno.EBUSY)
        return self._attach(call, dev, prog_fd)

    # -- v12 ----------------------------------------------------------------------------------

    def _v12_getvnethashtypes(self, call: Call) -> int:
        call.copy_to_user(0, _S_U32.pack(int(self.capability.types)))
        return 0

    def _v12_setvnetreportingautomq(self, call: Call) -> int:
        dev = call.device()
        header = call.copy_from_user(0, 4)
        (types,) = _S_U32.unpack(header)
        state = self._commit(dev)
        state.replace_all()
        if types:
            state.header, state.types, state.report = header, types, True
        return 0

    def _v12_rss(self, call: Call, *, report: bool) -> int:
        dev = call.device()
        header = call.copy_from_user(0, 8)
        types, mask, unclassified = _S_IHH.unpack(header)
        table_len = 2 * (mask + 1)
        table = call.copy_from_user(8, table_len)
        key_len = virtio_net_hash_key_length(types)
        key = call.copy_from_user(8 + table_len, key_len)
        state = self._commit(dev)
        state.replace_all()
        state.header, state.types, state.rss, state.report = header, types, True, report
        state.mask, state.unclassified = mask, unclassified
        state.table = _u16_table(table)
        state.key[:key_len] = key
        state.key_loaded = key_len
        return 0

    def _v12_setvnetreportingrss(self, call: Call) -> int:
        return self._v12_rss(call, report=True)

    def _v12_setvnetrss(self, call: Call) -> int:
        return self._v12_rss(call, report=False)

    def _v12_setsteeringebpf(self, call: Call) -> int:
        dev = call.device()
        (prog_fd,) = _S_INT.unpack(call.copy_from_user(0, 4))
        return self._attach(call, dev, prog_fd)

    def _attach(self, call: Call, dev: DeviceInfo, prog_fd: int) -> int:
        prog_id = call.set_steering_ebpf(prog_fd)
        state = self._commit(dev)
        state.steering_attached = prog_fd != -1
        state.steering_prog_id = prog_id
        return 0
