"""eBPF RSS on a tun/tap device: load, attach, reconfigure atomically, detach.

The program and its maps
------------------------
:class:`EbpfRss` loads the steering program of :func:`~pytun_hash.bpf.rss_program.generate_shared_rss_program`
with two ``BPF_F_MMAPABLE`` array maps: a control map whose ``u32 active`` names one of
:data:`~pytun_hash.bpf.shared.SLOTS` slots, and the slots map, each slot a ``u32 seq`` and a whole
configuration value (hash types, table mask, unclassified queue, indirection table, Toeplitz
tables). :mod:`pytun_hash.bpf.shared` describes the layout and its protocol; the same maps can be
handed to an unprivileged VMM (:meth:`EbpfRss.handoff`).

How a reconfiguration stays atomic
----------------------------------
:meth:`EbpfRss.reconfigure` writes the new configuration into a slot no program reads (through
``mmap``: no ``bpf(2)`` call), and then stores that slot's number in ``active``, one aligned 4-byte
store. A program run reads ``active``, then the slot's ``seq``, computes the queue, and reads
``seq`` again: a run whose slot was rewritten meanwhile computes again from the slot then active.
So every packet is steered entirely by one configuration, old or new, and when
:meth:`~EbpfRss.reconfigure` returns every packet whose steering starts afterwards uses the new one.
A slot is rewritten only after it has rested :data:`~pytun_hash.bpf.shared.SLOT_REST` seconds since
it stopped being active, so back-to-back reconfigurations cost a fraction of a millisecond each and
never wait for a grace period; :meth:`~EbpfRss.settle` (or ``wait=True``) waits for one
(:func:`~pytun_hash.bpf.syscall.synchronize_rcu`), after which no run that began before the switch is
still going.

The kernel objects outlive this process: pinned (:meth:`EbpfRss.pin`), another process takes them
over (:meth:`EbpfRss.from_pinned`), checks that the active slot holds the recorded configuration
byte for byte, and reconfigures through the same maps; the pins never change.

Rejected alternatives: a one-slot ``BPF_MAP_TYPE_ARRAY_OF_MAPS`` whose inner map is swapped
(pytun_hash before this layout) is atomic too, but each update blocks its caller for a grace period
(8-15 ms here), so back-to-back reconfigurations needed a pool of helper threads and still had a
tail over a millisecond; replacing the program with ``TUNSETSTEERINGEBPF`` costs a program load and
a verifier pass (1.5-2.5 ms) per reconfiguration.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import threading
from types import TracebackType
from typing import Self

from pytun_hash.bpf.maps import ArrayMap
from pytun_hash.bpf.pin import get_pinned_map, get_pinned_program, pin
from pytun_hash.bpf.prog import ETH_HLEN, Program, TestRunResult
from pytun_hash.bpf.rss_program import (
    L3Base,
    RssOutput,
    check_supported,
    generate_shared_rss_program,
)
from pytun_hash.bpf.shared import (
    CONTROL_VALUE_SIZE,
    SLOT_VALUE_SIZE,
    SLOTS,
    Handoff,
    SlotWriter,
    check_slot_maps,
    read_in_force,
    send_maps,
)
from pytun_hash.bpf.syscall import synchronize_rcu
from pytun_hash.config import VnetHashConfig
from pytun_hash.device.base import TunTapBase
from pytun_hash.device.tap import DeviceMode
from pytun_hash.errors import BpfError, DecodeError, DeviceGoneError, KernelError, ValidationError
from pytun_hash.model.classify import Semantics

__all__ = [
    "EBPF_RSS_OWNER",
    "PIN_NAMES",
    "EbpfRss",
    "SharedEbpfRss",
    "check_load",
    "enable_ebpf_rss",
    "frame_for_test_run",
    "l3_base",
    "open_pinned",
    "pinned_in_force",
]

#: The owner name recorded in the device's steering state while eBPF RSS is attached.
EBPF_RSS_OWNER = "ebpf-rss"

#: The names :meth:`EbpfRss.pin` gives its objects in a pin directory.
PIN_NAMES = ("prog", "control", "slots")
#: What the map-in-map layout of earlier versions pinned (recognised, to say so, never taken over).
_LEGACY_PIN_NAMES = ("outer", "config")

# Test runs: a dummy Ethernet header for TUN packets (IEEE 802 local experimental ethertype),
# and the L3 bytes the kernel wants behind an IPv4/IPv6 ethertype.
_TUN_TEST_ETHERNET = bytes(12) + b"\x88\xb5"
_TEST_RUN_MIN_L3 = {b"\x08\x00": 20, b"\x86\xdd": 40}


def check_load(config: VnetHashConfig, mode: DeviceMode, semantics: Semantics) -> None:
    """What loading the RSS program (:meth:`EbpfRss.load`) needs of its arguments.

    Raises:
        ValidationError: for a config the program cannot implement (no RSS, _EX types), a ``mode``
            that is not a :class:`DeviceMode` or ``semantics`` that is not a :class:`Semantics`.
    """
    check_supported(config)
    if not isinstance(mode, DeviceMode):
        raise ValidationError("mode", f"expected a DeviceMode, got {mode!r}")
    if not isinstance(semantics, Semantics):
        raise ValidationError("semantics", f"expected a Semantics member, got {semantics!r}")


def l3_base(mode: DeviceMode) -> L3Base:
    """How a program for a device of ``mode`` parses: Ethernet frames (TAP) or IP packets (TUN)."""
    return L3Base.ETHERNET if mode is DeviceMode.TAP else L3Base.IP


def frame_for_test_run(mode: DeviceMode, frame: bytes | bytearray | memoryview) -> bytes:
    """``frame`` as ``BPF_PROG_TEST_RUN`` must get it for a program of a ``mode`` device.

    A TAP frame as it is; a TUN packet behind a dummy Ethernet header, since the test run strips
    one (its ethertype is an experimental one: the kernel refuses an IPv4 or IPv6 ethertype whose
    header is cut short, and the TUN program does not read it).

    Raises:
        ValidationError: for a TAP frame shorter than 14 bytes, or one whose IPv4 (IPv6) ethertype is
            followed by less than 20 (40) bytes, which the kernel refuses to test-run (such frames are
            unclassified on a real device).
    """
    data = bytes(frame)
    if mode is DeviceMode.TUN:
        return _TUN_TEST_ETHERNET + data
    minimum = max(ETH_HLEN, _TEST_RUN_MIN_L3.get(data[12:14], 0) + ETH_HLEN)
    if len(data) < minimum:
        raise ValidationError(
            "frame", f"BPF_PROG_TEST_RUN needs at least {minimum} bytes for this frame, got {len(data)}"
        )
    return data


class EbpfRss:
    """The eBPF RSS steering program of one device, with its maps (context manager).

    Build one with :meth:`load` (or :func:`enable_ebpf_rss`), or take over a pinned one with
    :meth:`from_pinned`. It owns the program's fd, the control and slots maps' fds and a
    :class:`~pytun_hash.bpf.shared.SlotWriter` (two more fds and two mappings); :meth:`close`
    detaches the program if attached and closes all of them, on every path.

    Thread safety: :meth:`reconfigure`, :meth:`attach`, :meth:`detach` and :meth:`close` are
    serialised by an internal lock.
    """

    def __init__(
        self,
        *,
        program: Program,
        control: ArrayMap,
        slots: ArrayMap,
        writer: SlotWriter,
        config: VnetHashConfig,
        mode: DeviceMode,
        output: RssOutput,
        semantics: Semantics = Semantics.SPEC,
    ) -> None:
        self._program = program
        self._control: ArrayMap | None = control
        self._slots = slots
        self._writer = writer
        self._config = config
        self._mode = mode
        self._output = output
        self._semantics = semantics
        self._device: TunTapBase | None = None
        self._lock = threading.Lock()
        self._pins: dict[str, str] | None = None
        # Object ids never change for an object's life: asked for once (each ask is a syscall).
        self._program_id: int | None = None
        self._map_ids: tuple[int, int] | None = None

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(
        cls,
        config: VnetHashConfig,
        mode: DeviceMode = DeviceMode.TAP,
        *,
        output: RssOutput = RssOutput.QUEUE,
        semantics: Semantics = Semantics.SPEC,
    ) -> EbpfRss:
        """Create the maps, write ``config`` and load the program (not attached yet).

        Args:
            config: an RSS config (``rss=True``) with no _EX hash types.
            mode: ``DeviceMode.TAP`` (Ethernet frames, up to two VLAN tags) or ``DeviceMode.TUN``
                (raw IP).
            output: ``RssOutput.QUEUE`` steers; ``HASH`` and ``REPORT`` builds return the hash
                value or the report, for checks through :meth:`test_run`.
            semantics: whose rules the program follows: the virtio specification (the eBPF
                backend), or ``RFC_2023`` to steer as a kernel with the October 2023 RFC would
                (the kernel emulator does).

        Raises:
            ValidationError: for a config the program cannot implement (no RSS, _EX types).
            PrivilegeError: without CAP_BPF (``EPERM``).
            VerifierError: if the kernel's verifier rejects the program (a bug; the log says why).
            BpfError: ``EINVAL`` on kernels before 5.5 (no mmap-able maps), and for other bpf(2) failures.
        """
        check_load(config, mode, semantics)
        handoff = Handoff(mode.value, semantics.value, 0, 0)
        with contextlib.ExitStack() as stack:
            try:
                control = stack.enter_context(ArrayMap.create(CONTROL_VALUE_SIZE, 1, mmapable=True, name="pth_rss_ctl"))
            except BpfError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                raise BpfError(
                    errno.EINVAL,
                    "BPF_MAP_CREATE",
                    "the kernel refused an mmap-able array map (BPF_F_MMAPABLE): the eBPF backend needs Linux 5.5 "
                    "or later",
                ) from None
            slots = stack.enter_context(ArrayMap.create(SLOT_VALUE_SIZE, SLOTS, mmapable=True, name="pth_rss_slots"))
            writer = stack.enter_context(SlotWriter(os.dup(control.fd), os.dup(slots.fd), handoff, new_maps=True))
            writer.write(config)  # before the program exists: no frame ever sees an empty slot
            program = stack.enter_context(
                Program.load(
                    generate_shared_rss_program(control.fd, slots.fd, l3_base(mode), output),
                    name=f"pth_rss_{output.value}"[:15],
                )
            )
            stack.pop_all()
        return cls(
            program=program,
            control=control,
            slots=slots,
            writer=writer,
            config=config,
            mode=mode,
            output=output,
            semantics=semantics,
        )

    @classmethod
    def from_pinned(
        cls,
        directory: str,
        config: VnetHashConfig,
        mode: DeviceMode,
        *,
        program_id: int | None = None,
        semantics: Semantics = Semantics.SPEC,
    ) -> EbpfRss:
        """Take over the objects another process pinned in ``directory`` with :meth:`pin`.

        The result reconfigures through the pinned maps (the pins stay as they are); it is not
        attached to a device object until :meth:`adopt_attached`.

        Args:
            directory: the pin directory (``prog``, ``control``, ``slots`` in it).
            config: the configuration the active slot holds (from the device's record); its
                value is compared with the slot's, byte for byte.
            mode: the device mode the program parses frames for.
            program_id: the program's id when it was pinned; a different id means someone
                replaced the pin, and nothing is taken over.
            semantics: the rules the program was loaded with.

        Raises:
            BpfError: when a pin is missing, the program is not the recorded one, or the active
                slot does not hold ``config`` (``ESTALE``; pins of an earlier pytun_hash's layout
                say so).
            ValidationError: for a config the program cannot implement.
        """
        check_load(config, mode, semantics)
        program, control, slots = open_pinned(directory, (config, semantics), program_id=program_id)
        try:
            handoff = Handoff(mode.value, semantics.value, 0, program.id)
            writer = SlotWriter(os.dup(control.fd), os.dup(slots.fd), handoff)
        except BaseException:
            for obj in (program, control, slots):
                obj.close()
            raise
        writer.config = config
        rss = cls(
            program=program,
            control=control,
            slots=slots,
            writer=writer,
            config=config,
            mode=mode,
            output=RssOutput.QUEUE,
            semantics=semantics,
        )
        rss._pins = {name: os.path.join(directory, name) for name in PIN_NAMES}
        return rss

    def adopt_attached(self, device: TunTapBase) -> None:
        """Count this (pinned) program as the one attached to ``device``, as it was by another
        process: no ioctl is issued (the kernel cannot be asked which program a tun device runs);
        :meth:`detach` and :meth:`close` then detach it.

        Raises:
            ValidationError: when this instance is attached to another device already.
            BpfError: when closed.
        """
        with self._lock:
            self._require_open()
            if self._device is not None and self._device is not device:
                raise ValidationError("device", f"already attached to {self._device.name!r}")
            with device.steering.lock:
                device.steering.record_steering(self._program.fd, EBPF_RSS_OWNER)
            self._device = device

    @property
    def pins(self) -> dict[str, str] | None:
        """``{"prog", "control", "slots"}`` pin paths (they never change), or None when not pinned."""
        return None if self._pins is None else dict(self._pins)

    # ------------------------------------------------------------------ state

    @property
    def config(self) -> VnetHashConfig:
        """The configuration every packet is steered by now (as this instance wrote it last)."""
        return self._config

    @property
    def mode(self) -> DeviceMode:
        """The device mode the program parses frames for."""
        return self._mode

    @property
    def output(self) -> RssOutput:
        """What the program returns."""
        return self._output

    @property
    def semantics(self) -> Semantics:
        """Whose rules the program follows."""
        return self._semantics

    @property
    def program(self) -> Program:
        """The loaded program (owned by this object; do not close it)."""
        return self._program

    @property
    def writer(self) -> SlotWriter:
        """The writer of this instance's slots (owned by this object; do not close it)."""
        return self._writer

    @property
    def program_id(self) -> int:
        """The program's kernel-wide id (asked for once)."""
        if self._program_id is None:
            self._program_id = self._program.id
        return self._program_id

    @property
    def device(self) -> TunTapBase | None:
        """The device the program is attached to, or None."""
        return self._device

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._control is None

    def in_force(self) -> VnetHashConfig:
        """The configuration the program steers by now, read back from its maps: this instance's last
        one, or what another holder of the maps (a VMM they were handed to) wrote since.

        Raises:
            BpfError: when closed.
            DecodeError, BusyError: as :meth:`~pytun_hash.bpf.shared.SlotWriter.in_force`.
        """
        self._require_open()
        return self._writer.in_force()[0]

    def object_ids(self) -> tuple[int, tuple[int, ...]]:
        """``(program id, (control map id, slots map id))`` of the kernel objects this instance holds.

        Raises:
            BpfError: when closed.
        """
        control = self._require_open()
        if self._map_ids is None:
            self._map_ids = (control.id, self._slots.id)
        return self.program_id, self._map_ids

    def pin(self, directory: str) -> dict[str, str]:
        """Pin the program (``prog``), the control map (``control``) and the slots map (``slots``)
        in ``directory`` on a bpffs, so another process can verify, reconfigure or detach them.

        Returns:
            ``{"prog": path, "control": path, "slots": path}``.

        Raises:
            BpfError: when closed, or as :func:`pytun_hash.bpf.pin.pin` (``EEXIST`` when a pin exists).
        """
        with self._lock:
            control = self._require_open()
            paths = {name: os.path.join(directory, name) for name in PIN_NAMES}
            pin(self._program, paths["prog"])
            pin(control, paths["control"])
            pin(self._slots, paths["slots"])
            self._pins = paths
            return dict(paths)

    def _require_open(self) -> ArrayMap:
        if self._control is None:
            raise BpfError(errno.EBADF, "EbpfRss", "this eBPF RSS instance was closed; load a new one")
        return self._control

    # ------------------------------------------------------------------ device

    def attach(self, device: TunTapBase) -> None:
        """Attach the program to ``device`` as its steering program (``TUNSETSTEERINGEBPF``).

        Raises:
            ValidationError: for a device of the other mode, a non-QUEUE build, or when this
                instance is attached to another device already.
            SteeringConflictError: ``EBUSY`` while native RSS is enabled on the device.
            BusyError: ``EBUSY`` when another steering program is attached through the device.
            DeviceGoneError: ``EBADFD`` when the device was deleted.
            KernelError: for other ioctl failures.
        """
        with self._lock:
            self._require_open()
            if self._output is not RssOutput.QUEUE:
                raise ValidationError("output", f"only the QUEUE build steers; this one returns {self._output.value}")
            if device.mode is not self._mode:
                raise ValidationError(
                    "mode", f"the program parses {self._mode.value} frames but {device.name!r} is {device.mode.value}"
                )
            if self._device is not None:
                if self._device is device:
                    return
                raise ValidationError("device", f"already attached to {self._device.name!r}; detach it first")
            # Exclusive: RSS never silently replaces a program someone else attached.
            device.attach_steering_program(self._program.fd, owner=EBPF_RSS_OWNER, exclusive=True)
            self._device = device

    def detach(self) -> None:
        """Detach the program from its device (``TUNSETSTEERINGEBPF(-1)``); no-op when not attached.

        The kernel drops its reference to the program after an RCU grace period.

        Raises:
            KernelError: when the ioctl fails (``EBADFD``: the device was deleted); the
                instance counts as detached anyway.
        """
        with self._lock:
            self._detach_locked()

    def _detach_locked(self) -> None:
        device, self._device = self._device, None
        if device is not None and not device.closed:
            device.detach_steering_program()

    def handoff(self, sock: socket.socket, *, queues: int = 0) -> None:
        """Send the control and slots maps to the process at the other end of ``sock`` (protocol
        :data:`~pytun_hash.bpf.shared.PROTOCOL`, see :func:`~pytun_hash.bpf.shared.send_maps`): it
        reconfigures through them from then on, without any capability.

        Args:
            sock: a connected ``AF_UNIX`` socket.
            queues: the queue count the device was set up for, for the receiver (0: not known).

        Raises:
            BpfError: when closed.
            OSError: when the message cannot be sent.
        """
        control = self._require_open()
        made = Handoff(self._mode.value, self._semantics.value, queues, self.program_id)
        send_maps(sock, made, control.fd, self._slots.fd)

    # ------------------------------------------------------------------ reconfiguration

    def reconfigure(self, config: VnetHashConfig, *, wait: bool = False) -> None:
        """Switch every following packet to ``config`` atomically, without detaching.

        Key, indirection table, hash types and unclassified queue may all change; each packet
        is steered entirely by the old or entirely by the new config (module documentation).
        When this returns, every packet whose steering starts afterwards uses ``config``. It takes
        a fraction of a millisecond (a 37 KB copy through ``mmap``; at most
        :data:`~pytun_hash.bpf.shared.SLOT_REST` more when the slot to write was active a moment ago).

        Args:
            config: the new configuration (RSS on, no _EX types).
            wait: also wait until no packet that started before the switch is still being
                steered with the old config (:meth:`settle`: one RCU grace period, 8-15 ms here).

        Raises:
            ValidationError: for a config the program cannot implement; nothing changes.
            BpfError: when closed.
        """
        check_supported(config)
        with self._lock:
            self._require_open()
            self._writer.write(config)
            self._config = config
        if wait:
            synchronize_rcu()

    def settle(self) -> None:
        """Wait until no packet can still be steered by a config older than the current one: one
        RCU grace period (:func:`~pytun_hash.bpf.syscall.synchronize_rcu`), which every program run
        that began before it has ended by. It raises nothing."""
        synchronize_rcu()

    # ------------------------------------------------------------------ checks

    def test_run(self, frame: bytes | bytearray | memoryview, *, repeat: int = 1) -> TestRunResult:
        """Run the program on ``frame`` (framed as the device's queues carry it) through ``BPF_PROG_TEST_RUN``.

        Raises:
            ValidationError: for a frame the kernel refuses to test-run (see :func:`frame_for_test_run`).
            BpfError: when the kernel refuses the run, or when closed.
        """
        self._require_open()
        data = frame_for_test_run(self._mode, frame)
        return self._program.test_run(data, repeat=repeat)

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Detach (if attached) and close the program and maps; idempotent.

        Raises:
            KernelError: when detaching fails for another reason than a deleted device (the fds
                are closed all the same).
        """
        with self._lock:
            self._close_locked(detach=True)

    def release(self) -> None:
        """Close this instance's fds but leave the program attached to its device; idempotent.

        The kernel holds its own reference to an attached steering program, and the program to its
        maps, so steering goes on with the current config until the device is deleted or someone
        detaches (``TUNSETSTEERINGEBPF(-1)``, e.g. ``pytun-hash disable``). For handing a persistent
        device over to another process (the CLI's ``apply``). The device's steering state keeps
        recording the program as attached.

        It raises nothing of its own; the fds are closed on every path.
        """
        with self._lock:
            self._device = None
            self._close_locked(detach=False)

    def _close_locked(self, *, detach: bool) -> None:
        control, self._control = self._control, None
        if control is None:
            return
        try:
            if detach:
                # A deleted device took its steering program with it: nothing to detach.
                with contextlib.suppress(DeviceGoneError):
                    self._detach_locked()
        finally:
            for obj in (self._writer, self._program, control, self._slots):
                with contextlib.suppress(OSError):
                    obj.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f"attached to {self._device.name!r}" if self._device is not None else "not attached"
        state = "closed" if self._control is None else where
        return f"EbpfRss({self._mode.value}, {self._output.value}, {state})"


#: The name :class:`EbpfRss` had when it was a separate class for handing maps to a VMM: one class
#: does both since the backend's program is the shared one.
SharedEbpfRss = EbpfRss


def open_pinned(
    directory: str,
    expected: tuple[VnetHashConfig, Semantics] | None,
    *,
    program_id: int | None = None,
) -> tuple[Program, ArrayMap, ArrayMap]:
    """Open what :meth:`EbpfRss.pin` left in ``directory`` and check that it is one consistent whole:
    the program (of id ``program_id`` when given), the control and slots maps of the protocol's
    layout, and (unless ``expected`` is None) the active slot holding that configuration, written for
    those rules. The caller owns the three.

    Raises:
        BpfError: when a pin is missing, is not what it should be, or differs from the expected
            state (``ESTALE``: replaced program, other contents, an earlier pytun_hash's layout).
    """
    paths = {name: os.path.join(directory, name) for name in PIN_NAMES}
    if not os.path.exists(paths["control"]) and any(
        os.path.exists(os.path.join(directory, name)) for name in _LEGACY_PIN_NAMES
    ):
        raise BpfError(
            errno.ESTALE,
            f"BPF_OBJ_GET({directory})",
            "these are the pins of an earlier pytun_hash (a map-in-map program): disable RSS on the device "
            "(pytun-hash disable) and enable it again with this version",
        )
    with contextlib.ExitStack() as stack:
        program = stack.enter_context(get_pinned_program(paths["prog"]))
        control = stack.enter_context(get_pinned_map(paths["control"]))
        slots = stack.enter_context(get_pinned_map(paths["slots"]))
        if not isinstance(control, ArrayMap) or not isinstance(slots, ArrayMap):
            raise BpfError(errno.EINVAL, f"BPF_OBJ_GET({directory})", "these pins are not an RSS program's maps")
        try:
            check_slot_maps(control.fd, slots.fd)
        except ValidationError as exc:
            raise BpfError(
                errno.EINVAL, f"BPF_OBJ_GET({directory})", f"these pins are not an RSS program's maps: {exc}"
            ) from None
        if program_id is not None and program.id != program_id:
            raise BpfError(
                errno.ESTALE,
                f"BPF_OBJ_GET({paths['prog']})",
                f"the pinned program is id {program.id}, the record says {program_id}: someone replaced it",
            )
        if expected is not None and _read_pinned(control, slots, paths["slots"]) != expected:
            raise BpfError(
                errno.ESTALE,
                f"BPF_MAP_LOOKUP_ELEM({paths['slots']})",
                "the active slot does not hold the recorded configuration",
            )
        stack.pop_all()
    return program, control, slots


def pinned_in_force(directory: str, *, program_id: int | None = None) -> tuple[VnetHashConfig, Semantics]:
    """The configuration the program pinned in ``directory`` steers by now, read back from its maps
    (whoever wrote it), and the rules it was written for.

    Raises:
        BpfError: as :func:`open_pinned`; ``ESTALE`` also when the active slot holds bytes no
            pytun_hash writer wrote.
    """
    program, control, slots = open_pinned(directory, None, program_id=program_id)
    try:
        return _read_pinned(control, slots, os.path.join(directory, "slots"))
    finally:
        for obj in (program, control, slots):
            obj.close()


def _read_pinned(control: ArrayMap, slots: ArrayMap, where: str) -> tuple[VnetHashConfig, Semantics]:
    try:
        return read_in_force(control.fd, slots.fd)
    except (DecodeError, KernelError, OSError) as exc:
        raise BpfError(
            errno.ESTALE, f"BPF_MAP_LOOKUP_ELEM({where})", f"the active slot holds no configuration: {exc}"
        ) from None


def enable_ebpf_rss(device: TunTapBase, config: VnetHashConfig) -> EbpfRss:
    """Steer ``device`` by ``config`` with eBPF; the result owns the program (close it to disable).

    Raises:
        ValidationError: for a config the program cannot implement.
        SteeringConflictError: ``EBUSY`` while native RSS is enabled on the device.
        BusyError: when another steering program is attached.
        PrivilegeError / VerifierError / BpfError / KernelError: as :meth:`EbpfRss.load` and
            :meth:`EbpfRss.attach`.
    """
    rss = EbpfRss.load(config, device.mode)
    try:
        rss.attach(device)
    except BaseException:
        rss.close()
        raise
    return rss
