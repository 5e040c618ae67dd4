"""RSS reconfigured by an unprivileged process: mmapped maps handed over a Unix socket.

In production a VMM runs without ``CAP_BPF`` (QEMU with libvirt gets its RSS program's fds through
``ebpf-rss-fds``). Here a privileged step loads the RSS program, attaches it to the device and hands
two map fds to the VMM over a Unix socket (``SCM_RIGHTS``); from then on the VMM reconfigures RSS by
writing those maps through ``mmap``: no ``bpf(2)`` call, no capability.

The maps (protocol ``pytun-hash-rss-maps/1``)
---------------------------------------------
* **control**: ``BPF_MAP_TYPE_ARRAY`` with ``BPF_F_MMAPABLE``, one 8-byte value: ``u32 active`` (the
  slot in force), ``u32 generation`` (how many configurations were written; for observers).
* **slots**: ``BPF_MAP_TYPE_ARRAY`` with ``BPF_F_MMAPABLE``, :data:`SLOTS` values of
  :data:`SLOT_HEADER` + :data:`~pytun_hash.bpf.rss_program.CONFIG_VALUE_SIZE` bytes: ``u32 seq``
  (even while the slot is stable, odd while it is written), ``u32`` reserved, then the program's
  configuration value (:func:`~pytun_hash.bpf.rss_program.config_value`).

Atomic for every frame
----------------------
The writer never touches the active slot: it writes the next one (``seq`` odd, the value, ``seq``
even again) and then stores the new slot number in ``active``, one aligned 4-byte store. The program
reads ``active``, then the slot's ``seq``, computes the queue from the slot, and reads ``seq`` again:
a frame whose slot was rewritten meanwhile (odd or changed ``seq``) is computed again from the slot
then active, up to :data:`READ_ATTEMPTS` times. So a frame is steered by one whole configuration, old
or new, never a mix. For a slot to be rewritten under a running program, the writer must cycle
through all :data:`SLOTS` slots during that program run; :class:`SlotWriter` also lets a slot rest
:data:`SLOT_REST` seconds after it stopped being active before it writes it again.

The stores are ordered as written on x86-64 (TSO), where this is tested; the program's loads are
plain loads, in program order.
"""

from __future__ import annotations

import array
import errno
import json
import mmap
import os
import socket
import struct
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import attrs

from pytun_hash.bpf.rss_program import (
    CONFIG_VALUE_SIZE,
    SHARED_READ_ATTEMPTS,
    SHARED_SLOT_HEADER,
    SHARED_SLOTS,
    config_value,
    decode_config_value,
    toeplitz_tables,
)
from pytun_hash.config import VnetHashConfig
from pytun_hash.errors import BusyError, DecodeError, ValidationError
from pytun_hash.model.classify import Semantics

__all__ = [
    "PROTOCOL",
    "READ_ATTEMPTS",
    "SLOTS",
    "SLOT_HEADER",
    "SLOT_REST",
    "Handoff",
    "SlotWriter",
    "check_slot_maps",
    "read_in_force",
    "receive_maps",
    "send_maps",
]

#: The protocol name sent with the fds; a receiver refuses any other.
PROTOCOL = "pytun-hash-rss-maps/1"
#: Slots of the slots map: the writer cycles through them.
SLOTS = SHARED_SLOTS
#: Bytes before the configuration value in a slot: ``u32 seq``, ``u32`` reserved.
SLOT_HEADER = SHARED_SLOT_HEADER
#: Bytes of one slot value.
SLOT_VALUE_SIZE = SLOT_HEADER + CONFIG_VALUE_SIZE
#: Bytes of the control value: ``u32 active``, ``u32 generation``.
CONTROL_VALUE_SIZE = 8
#: How many times the program computes a frame's queue before it gives up on a slot being rewritten
#: (then the frame goes to queue 0; that needs the writer to have cycled through every slot that often
#: within one program run).
READ_ATTEMPTS = SHARED_READ_ATTEMPTS
#: Seconds a slot rests after it stopped being active before the writer writes it again. A program run
#: sees its slot change only when it spans that rest and the writes around it; to send a frame to queue 0
#: it must span it :data:`READ_ATTEMPTS` times over (2 ms) while the writer writes back to back. Short
#: enough that 4 slots keep every back-to-back ``write`` under a millisecond (the one that waits for its
#: slot waits at most this).
SLOT_REST = 0.0005

_BPF_MAP_TYPE_ARRAY = 2
_BPF_F_MMAPABLE = 1 << 10
_U32 = struct.Struct("=I")
_CONTROL = struct.Struct("=II")
_MAX_MESSAGE = 4096
# Reads of the active slot before in_force() gives up on a writer that never stops.
_IN_FORCE_READS = 20


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _pages(n: int) -> int:
    return (n + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE


@attrs.frozen
class Handoff:
    """What the privileged side says about the maps it hands over.

    Attributes:
        mode: ``"tap"`` (Ethernet frames) or ``"tun"`` (IP packets): how the program parses.
        semantics: the rules the program follows (``"spec"`` or ``"rfc-2023"``), for the VMM's predictions.
        queues: the queue count the device was set up for (0 when not known).
        program_id: the kernel's id of the attached program, for ``bpftool prog show id N``.
    """

    mode: str
    semantics: str
    queues: int
    program_id: int

    def message(self) -> bytes:
        """The JSON text sent with the fds."""
        body = {
            "protocol": PROTOCOL,
            "slots": SLOTS,
            "slot_header": SLOT_HEADER,
            "value_size": SLOT_VALUE_SIZE,
            **attrs.asdict(self),
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def parse(cls, data: bytes) -> Handoff:
        """The inverse of :meth:`message`.

        Raises:
            DecodeError: for anything but this protocol's message with this layout.
        """
        try:
            body = json.loads(data.decode())
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise DecodeError("handoff", "not a JSON message") from None
        if not isinstance(body, dict) or body.get("protocol") != PROTOCOL:
            raise DecodeError("handoff", f"not a {PROTOCOL} message")
        layout = (body.get("slots"), body.get("slot_header"), body.get("value_size"))
        if layout != (SLOTS, SLOT_HEADER, SLOT_VALUE_SIZE):
            raise DecodeError("handoff", f"map layout {layout} differs from this version's")
        try:
            made = cls(str(body["mode"]), str(body["semantics"]), int(body["queues"]), int(body["program_id"]))
        except (KeyError, TypeError, ValueError):
            raise DecodeError("handoff", "missing or malformed fields") from None
        if made.mode not in ("tap", "tun") or made.semantics not in (s.value for s in Semantics):
            raise DecodeError("handoff", f"unknown mode {made.mode!r} or semantics {made.semantics!r}")
        return made


def send_maps(sock: socket.socket, handoff: Handoff, control_fd: int, slots_fd: int) -> None:
    """Send the two map fds and ``handoff`` in one message on a connected Unix socket.

    Raises:
        OSError: when the message cannot be sent (the peer went away ...).
    """
    fds = array.array("i", [control_fd, slots_fd])
    sock.sendmsg([handoff.message()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])


def _fdinfo(fd: int) -> dict[str, str]:
    # The kernel describes a BPF map fd here: readable without any capability, unlike BPF_OBJ_GET_INFO_BY_FD.
    try:
        with open(f"/proc/self/fdinfo/{fd}") as info:
            return dict(line.rstrip("\n").split(":\t", 1) for line in info if ":\t" in line)
    except OSError:
        return {}


def _check_map(fd: int, name: str, value_size: int, max_entries: int) -> None:
    info = _fdinfo(fd)
    wanted = {
        "map_type": str(_BPF_MAP_TYPE_ARRAY),
        "key_size": "4",
        "value_size": str(value_size),
        "max_entries": str(max_entries),
    }
    got = {k: info.get(k, "").strip() for k in wanted}
    if got != wanted:
        raise ValidationError(name, f"expected an array map {wanted}, got {got}")
    if not int(info.get("map_flags", "0").strip() or "0", 16) & _BPF_F_MMAPABLE:
        raise ValidationError(name, "the map was created without BPF_F_MMAPABLE: it cannot be written through mmap")


def check_slot_maps(control_fd: int, slots_fd: int) -> None:
    """Check that two fds are this protocol's control and slots maps (array maps of its value sizes and
    entry counts, ``BPF_F_MMAPABLE``), through ``/proc/self/fdinfo`` (no capability needed).

    Raises:
        ValidationError: naming the map (``control``, ``slots``) that is not what the protocol describes.
    """
    _check_map(control_fd, "control", CONTROL_VALUE_SIZE, 1)
    _check_map(slots_fd, "slots", SLOT_VALUE_SIZE, SLOTS)


def receive_maps(sock: socket.socket) -> tuple[Handoff, int, int]:
    """Receive one :func:`send_maps` message: the handoff and the control and slots map fds (yours to close).

    Raises:
        DecodeError: for a message of another protocol, or without exactly two fds.
        ValidationError: when the fds are not the maps the protocol describes.
        OSError: when nothing can be received.
    """
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(_MAX_MESSAGE, socket.CMSG_SPACE(4 * fds.itemsize * 2))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    received = list(fds)
    try:
        if len(received) != 2:
            raise DecodeError("handoff", f"expected 2 map fds, got {len(received)}")
        handoff = Handoff.parse(data)
        check_slot_maps(received[0], received[1])
    except BaseException:
        for fd in received:
            os.close(fd)
        raise
    return handoff, received[0], received[1]


class SlotWriter:
    """Writes RSS configurations into the handed-over maps through ``mmap`` (context manager).

    Needs no capability and makes no ``bpf(2)`` call: both maps were created ``BPF_F_MMAPABLE`` by the
    privileged side, and mapping a map one holds an fd of is allowed to anyone.

    Args:
        control_fd: the control map's fd (the writer closes it once mapped, as on failure).
        slots_fd: the slots map's fd (likewise).
        handoff: what the privileged side said (mode and semantics for the values written).
        new_maps: the maps were just created and no program has read them yet, so every slot may be
            written at once. Otherwise (maps received or taken over from pins) another writer may
            have switched slots a moment ago: each slot counts as having stopped being active now.
        clock: seconds, monotonic (tests pass their own).

    Raises:
        OSError: when a map cannot be mapped.
    """

    def __init__(
        self,
        control_fd: int,
        slots_fd: int,
        handoff: Handoff,
        *,
        new_maps: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.handoff = handoff
        self.semantics = Semantics(handoff.semantics)
        self._fds: list[int] = [control_fd, slots_fd]
        self._clock = clock
        self._control: mmap.mmap | None = None
        self._slots: mmap.mmap | None = None
        try:
            self._control = mmap.mmap(control_fd, _pages(_align8(CONTROL_VALUE_SIZE)), mmap.MAP_SHARED)
            self._slots = mmap.mmap(slots_fd, _pages(_align8(SLOT_VALUE_SIZE) * SLOTS), mmap.MAP_SHARED)
        except BaseException:
            self.close()
            raise
        finally:
            # A mapping holds its map by itself (and Python's mmap keeps an fd of its own): the fds
            # given are not needed any more.
            fds, self._fds = self._fds, []
            for fd in fds:
                os.close(fd)
        # When each slot stopped being active.
        self._rested_since = [float("-inf") if new_maps else clock()] * SLOTS
        self.config: VnetHashConfig | None = None
        # The Toeplitz tables are most of a value and depend on the key only: kept for the next write.
        self._tables_key: bytes | None = None
        self._tables = b""

    @classmethod
    def receive(cls, sock: socket.socket) -> SlotWriter:
        """Receive the maps on ``sock`` (see :func:`receive_maps`) and map them.

        Raises:
            DecodeError, ValidationError: as :func:`receive_maps`.
            OSError: when nothing can be received or mapped.
        """
        handoff, control_fd, slots_fd = receive_maps(sock)
        return cls(control_fd, slots_fd, handoff)

    def _maps(self) -> tuple[mmap.mmap, mmap.mmap]:
        if self._control is None or self._slots is None:
            raise ValidationError("writer", "closed")
        return self._control, self._slots

    @property
    def active(self) -> int:
        """The slot the program reads now."""
        control, _ = self._maps()
        return int(_CONTROL.unpack_from(control, 0)[0]) % SLOTS

    @property
    def generation(self) -> int:
        """How many configurations were written through these maps."""
        control, _ = self._maps()
        return int(_CONTROL.unpack_from(control, 0)[1])

    def write(self, config: VnetHashConfig) -> int:
        """Put ``config`` in force: write it into the next slot, then make that slot active.

        Returns:
            The slot now active.

        Raises:
            ValidationError: for a config the program cannot steer with (see
                :func:`~pytun_hash.bpf.rss_program.check_supported`), or a closed writer.
        """
        control, slots = self._maps()
        if config.key != self._tables_key:
            self._tables = toeplitz_tables(config.key, semantics=self.semantics)
            self._tables_key = config.key
        value = config_value(config, tables=self._tables, semantics=self.semantics)
        active, generation = (int(v) for v in _CONTROL.unpack_from(control, 0))
        slot = (active + 1) % SLOTS
        # A program that read this slot before it was replaced must not see it change under it.
        wait = self._rested_since[slot] + SLOT_REST - self._clock()
        if wait > 0:
            time.sleep(wait)
        base = slot * _align8(SLOT_VALUE_SIZE)
        (seq,) = _U32.unpack_from(slots, base)
        seq |= 1  # odd: being written
        _U32.pack_into(slots, base, seq)
        slots[base + SLOT_HEADER : base + SLOT_VALUE_SIZE] = value
        _U32.pack_into(slots, base, (seq + 1) & 0xFFFFFFFF)  # even again: stable
        _CONTROL.pack_into(control, 0, slot, (generation + 1) & 0xFFFFFFFF)
        self._rested_since[active % SLOTS] = self._clock()
        self.config = config
        return slot

    def slot(self, index: int) -> tuple[int, bytes]:
        """Slot ``index``'s ``seq`` (odd while it is being written) and configuration value.

        Raises:
            ValidationError: when the writer is closed.
        """
        _, slots = self._maps()
        base = (index % SLOTS) * _align8(SLOT_VALUE_SIZE)
        (seq,) = _U32.unpack_from(slots, base)
        return int(seq), bytes(slots[base + SLOT_HEADER : base + SLOT_VALUE_SIZE])

    def in_force(self) -> tuple[VnetHashConfig, Semantics]:
        """The configuration the program steers by now and the rules it was written for, read back from
        the active slot, whoever wrote it (this writer, another process holding the maps, a VMM).

        Raises:
            ValidationError: when the writer is closed.
            DecodeError: when the active slot holds bytes no pytun_hash writer wrote.
            BusyError: when every read in a row found the slot being written (another writer that
                never stops).
        """
        for _ in range(_IN_FORCE_READS):
            active = self.active
            seq, value = self.slot(active)
            if not seq & 1 and self.slot(active)[0] == seq and self.active == active:
                return decode_config_value(value)
            time.sleep(SLOT_REST)
        raise BusyError(errno.EBUSY, "in_force", "the active slot was being rewritten at every read; try again")

    def close(self) -> None:
        """Unmap and close the fds (idempotent); the program keeps the configuration last written."""
        for region in (self._control, self._slots):
            if region is not None:
                region.close()
        self._control = self._slots = None
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# What a reader that writes nothing says about itself: mode and semantics only matter to write().
_READER = Handoff("tap", Semantics.SPEC.value, 0, 0)


def read_in_force(control_fd: int, slots_fd: int) -> tuple[VnetHashConfig, Semantics]:
    """The configuration the maps at ``control_fd`` and ``slots_fd`` steer by now, and the rules it
    was written for (:meth:`SlotWriter.in_force`); the fds stay the caller's.

    Raises:
        OSError: when a map cannot be mapped.
        DecodeError, BusyError: as :meth:`SlotWriter.in_force`.
    """
    with SlotWriter(os.dup(control_fd), os.dup(slots_fd), _READER) as reader:
        return reader.in_force()
