"""eBPF RSS on a tun/tap device: load, attach, reconfigure atomically, detach.

How a reconfiguration stays atomic
----------------------------------
The program reads its whole configuration (hash types, table mask, unclassified queue,
indirection table, Toeplitz tables) from *one* value of a one-entry inner array map, which
it reaches through a one-slot ``BPF_MAP_TYPE_ARRAY_OF_MAPS``. It looks the inner map up once
per packet and keeps the value pointer in a register for the rest of the run.

:meth:`EbpfRss.reconfigure` builds a *new* inner map, fills it completely while no program
can see it, and then swaps the outer slot with a single ``BPF_MAP_UPDATE_ELEM``. The kernel
exchanges the slot's pointer atomically (RCU), so every packet sees either the old value or
the new one, whole; a packet that started with the old map keeps it alive (RCU) until it is
done, and nothing ever writes to a map a program can see. The old map is freed by the kernel
after a grace period.

The update syscall then waits for that grace period (``synchronize_rcu`` in
``maybe_wait_bpf_programs``, about 8 ms here) before returning. The new config is in force
before that wait, so :meth:`~EbpfRss.reconfigure` issues the update from a helper thread and
returns as soon as the slot reads back the new map's id (well under a millisecond);
``wait=True`` or :meth:`~EbpfRss.settle` also wait for the grace period, after which no packet
uses an old config any more. Since every config gets a map of its own and no map a program may
still read is ever written, a reconfiguration never waits for the previous one's grace period:
the helper threads form a pool (:class:`_SlotSwapper`), each sitting out one grace period, and
back-to-back reconfigurations take idle ones (or start new ones, up to
:data:`MAX_SWAP_THREADS`); only an exhausted pool makes a caller wait. When a swap's grace period
is over, the map it replaced is read by no program any more: up to :data:`FREE_CONFIG_MAPS` of
those are kept and filled by the next reconfigurations instead of new maps.

Rejected alternatives: updating the single value in place (``BPF_MAP_UPDATE_ELEM`` or mmap)
copies ~37 KB with no lock, so a packet could see a half-written table; replacing the
program with ``TUNSETSTEERINGEBPF`` is atomic too, but every reconfiguration would then cost
a program load and a verifier pass (1.5-2.5 ms for this program); a pool of pre-loaded
programs or in-place double buffering would need a grace period before a buffer is reused,
which user space cannot observe more cheaply than the map-in-map update does.
"""

from __future__ import annotations

import _thread
import contextlib
import errno
import os
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from pytun_hash.bpf.maps import ArrayMap, ArrayOfMaps
from pytun_hash.bpf.pin import get_pinned_map, get_pinned_program, pin, unpin
from pytun_hash.bpf.prog import ETH_HLEN, Program, TestRunResult
from pytun_hash.bpf.rss_program import (
    CONFIG_VALUE_SIZE,
    L3Base,
    RssOutput,
    check_supported,
    config_value,
    generate_rss_program,
    toeplitz_tables,
)
from pytun_hash.config import VnetHashConfig
from pytun_hash.device.base import TunTapBase
from pytun_hash.device.tap import DeviceMode
from pytun_hash.errors import BpfError, DeviceGoneError, KernelError, ValidationError
from pytun_hash.model.classify import Semantics

__all__ = [
    "EBPF_RSS_OWNER",
    "PIN_NAMES",
    "EbpfRss",
    "check_load",
    "enable_ebpf_rss",
    "frame_for_test_run",
    "l3_base",
    "open_pinned",
]

#: The owner name recorded in the device's steering state while eBPF RSS is attached.
EBPF_RSS_OWNER = "ebpf-rss"

#: The names :meth:`EbpfRss.pin` gives its objects in a pin directory.
PIN_NAMES = ("prog", "outer", "config")

# Test runs: a dummy Ethernet header for TUN packets (IEEE 802 local experimental ethertype),
# and the L3 bytes the kernel wants behind an IPv4/IPv6 ethertype.
_TUN_TEST_ETHERNET = bytes(12) + b"\x88\xb5"
_TEST_RUN_MIN_L3 = {b"\x08\x00": 20, b"\x86\xdd": 40}


#: Helper threads an :class:`EbpfRss` may have sitting out grace periods at once. Each swap keeps
#: one busy for a grace period (8-15 ms here) and a reconfiguration takes well under 1 ms, so about
#: as many as fit in a grace period let back-to-back reconfigurations go on without waiting.
MAX_SWAP_THREADS = 64

#: Config maps an :class:`EbpfRss` keeps for reuse once no program can read them (37 KB each).
FREE_CONFIG_MAPS = 4

#: An idle helper thread beyond the first ends after this many seconds without a swap.
_SWAP_THREAD_IDLE_S = 2.0


class _Swap:
    """One slot update handed to a helper thread."""

    __slots__ = ("done", "error", "new", "retired", "started")

    def __init__(self, new: ArrayMap, retired: tuple[ArrayMap, int | None] | None) -> None:
        self.new = new
        self.retired = retired
        self.started = False
        self.done = False
        self.error: BaseException | None = None


class _SlotSwapper:
    """Replaces the outer map's slot from a pool of helper threads.

    ``BPF_MAP_UPDATE_ELEM`` on a map-in-map exchanges the pointer first and then blocks in
    ``synchronize_rcu()`` (``maybe_wait_bpf_programs``) for a whole grace period, 8 ms or more
    on the reference machine. The new config is in force right after the exchange, which the
    caller sees by reading the slot's map id back; a helper thread sits out the wait. Nothing is
    ever written to a map a program may still read (each config gets a new map), so the grace
    periods of successive swaps need not end before the next swap: each swap takes an idle
    thread. After each swap one idle thread is kept ready (started then, up to ``max_threads``),
    so that the next swap finds one; only when all of them are sitting out grace periods does a
    swap wait (:attr:`pool_waits` counts those waits). Threads live as long as their
    :class:`EbpfRss`; beyond the first, one idle for ``_SWAP_THREAD_IDLE_S`` ends.
    """

    def __init__(
        self, outer: ArrayOfMaps, retired: Callable[[ArrayMap, int | None], None], max_threads: int | None = None
    ) -> None:
        self._outer = outer
        self._retired = retired
        self._max_threads = max(1, MAX_SWAP_THREADS if max_threads is None else max_threads)
        # One lock, two conditions: idle helpers wait on _work and are woken one per swap (waking
        # them all would have dozens of threads take the GIL in turn for nothing); callers wait on
        # _state for a swap to start or end, and stop() for the threads to end.
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._state = threading.Condition(self._lock)
        self._pending: list[_Swap] = []
        self._threads = 0  # started and not ended
        self._idle = 0  # of those, the ones not on a swap (starting ones included: they take work first)
        self._in_flight = 0
        self._stop = False
        #: Swaps that had to wait for a helper thread to finish its grace period (pool exhausted).
        self.pool_waits = 0

    def _start_thread_locked(self) -> None:
        # _thread rather than threading.Thread: Thread.start() waits until the new thread runs, a
        # context switch on the caller's path; this returns at once, and the new thread counts as
        # idle from now on (it looks for work before it waits for any). stop() waits for the count.
        self._threads += 1
        self._idle += 1
        try:
            _thread.start_new_thread(self._loop, ())
        except BaseException:
            self._threads -= 1
            self._idle -= 1
            raise

    def _loop(self) -> None:
        with self._lock:
            try:
                while True:
                    while not self._pending and not self._stop:
                        if not self._work.wait(_SWAP_THREAD_IDLE_S) and not self._pending and self._threads > 1:
                            break  # idle for long: one thread is enough until the next burst
                    if not self._pending:
                        return
                    job = self._pending.pop(0)
                    self._idle -= 1
                    job.started = True
                    self._state.notify_all()
                    self._lock.release()
                    try:
                        self._outer.set(0, job.new)
                    except BaseException as exc:
                        job.error = exc
                    else:
                        if job.retired is not None:
                            # The update waited for the grace period: no program reads the map it
                            # replaced any more.
                            self._retired(*job.retired)
                    finally:
                        self._lock.acquire()
                    job.done = True
                    self._in_flight -= 1
                    self._idle += 1
                    self._state.notify_all()
            finally:
                self._idle -= 1
                self._threads -= 1
                self._state.notify_all()

    def swap(self, new: ArrayMap, new_id: int, retired: tuple[ArrayMap, int | None] | None = None) -> None:
        """Put ``new`` (of id ``new_id``) in the slot; return once the slot holds it, while its grace
        period goes on in a helper thread, which then hands ``retired`` (the map ``new`` replaces, and
        its id if known) to the ``retired`` callback.

        Raises:
            BpfError: when the update fails (the slot keeps the old map; ``retired`` is not handed on).
        """
        job = _Swap(new, retired)
        with self._lock:
            if self._idle == 0:
                if self._threads < self._max_threads:
                    self._start_thread_locked()
                else:
                    self.pool_waits += 1
                    while self._idle == 0:
                        self._state.wait()
            self._pending.append(job)
            self._in_flight += 1
            self._work.notify()
            # Sleep rather than spin until a helper runs: spinning would keep the GIL from it.
            while not job.started and not job.done:
                self._state.wait()
        while self._outer.lookup_id(0) != new_id:
            with self._lock:
                if job.done:
                    break
            time.sleep(0)  # let the helper thread reach its syscall
        with self._lock:
            # One thread ready for the next swap, started while this one's grace period runs.
            if self._idle == 0 and self._threads < self._max_threads and not self._stop:
                self._start_thread_locked()
            if job.done and job.error is not None:
                raise job.error

    def settle(self) -> None:
        """Wait until every swap, grace period included, is over."""
        with self._lock:
            while self._in_flight:
                self._state.wait()

    def stop(self) -> None:
        """Finish the swaps under way and end the threads."""
        with self._lock:
            self._stop = True
            self._work.notify_all()
            while self._threads:
                self._state.wait()


def check_load(config: VnetHashConfig, mode: DeviceMode, semantics: Semantics) -> None:
    """What loading an RSS program (the map-in-map one or the shared one) needs of its arguments.

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

    Build one with :meth:`load` (or :func:`enable_ebpf_rss`). It owns three fds: the
    program, the outer map and the current inner (config) map; :meth:`close` detaches the
    program if attached and closes all of them, on every path.

    Thread safety: :meth:`reconfigure`, :meth:`attach`, :meth:`detach` and :meth:`close` are
    serialised by an internal lock.
    """

    def __init__(
        self,
        *,
        program: Program,
        outer: ArrayOfMaps,
        inner: ArrayMap,
        config: VnetHashConfig,
        mode: DeviceMode,
        output: RssOutput,
        tables: bytes,
        semantics: Semantics = Semantics.SPEC,
    ) -> None:
        self._program = program
        self._semantics = semantics
        self._outer = outer
        self._inner: ArrayMap | None = inner
        self._config = config
        self._mode = mode
        self._output = output
        self._tables_key = config.key
        self._tables = tables
        self._device: TunTapBase | None = None
        self._swapper: _SlotSwapper | None = None
        self._lock = threading.Lock()
        self._pins: dict[str, str] | None = None
        # Config maps no program reads any more (their grace period is over), with their ids, for
        # the next reconfigurations to fill instead of creating (and the kernel freeing) a 37 KB map
        # each time. Helper threads add to it, hence its own lock.
        self._free_lock = threading.Lock()
        self._free: list[tuple[ArrayMap, int | None]] = []
        self._closing = False
        # Object ids never change for an object's life: asked for once (each ask is a syscall).
        self._program_id: int | None = None
        self._outer_id: int | None = None
        self._inner_id: int | None = None

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
            BpfError: for other bpf(2) failures.
        """
        check_load(config, mode, semantics)
        tables = toeplitz_tables(config.key, semantics=semantics)
        value = config_value(config, tables=tables, semantics=semantics)
        with contextlib.ExitStack() as stack:
            inner = stack.enter_context(ArrayMap.create(CONFIG_VALUE_SIZE, 1, name="pth_rss_cfg"))
            inner.update(0, value)
            outer = stack.enter_context(ArrayOfMaps.create(inner, 1, name="pth_rss_outer"))
            outer.set(0, inner)
            program = stack.enter_context(
                Program.load(generate_rss_program(outer.fd, l3_base(mode), output), name=f"pth_rss_{output.value}")
            )
            stack.pop_all()
        return cls(
            program=program,
            outer=outer,
            inner=inner,
            config=config,
            mode=mode,
            output=output,
            tables=tables,
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

        The result reconfigures in place (a new config map swapped into the pinned outer map) and
        keeps the pins current; it is not attached to a device object until :meth:`adopt_attached`.

        Args:
            directory: the pin directory (``prog``, ``outer``, ``config`` in it).
            config: the configuration the pinned config map holds (from the device's record); its
                value is compared with the map's, byte for byte.
            mode: the device mode the program parses frames for.
            program_id: the program's id when it was pinned; a different id means someone
                replaced the pin, and nothing is taken over.
            semantics: the rules the program was loaded with.

        Raises:
            BpfError: when a pin is missing, the program or slot is not the recorded one, or the
                config map's contents differ from ``config`` (field-level detail in the message).
            ValidationError: for a config the program cannot implement.
        """
        check_supported(config)
        tables = toeplitz_tables(config.key, semantics=semantics)
        program, outer, inner = open_pinned(
            directory, config_value(config, tables=tables, semantics=semantics), program_id=program_id
        )
        paths = {name: os.path.join(directory, name) for name in PIN_NAMES}
        rss = cls(
            program=program,
            outer=outer,
            inner=inner,
            config=config,
            mode=mode,
            output=RssOutput.QUEUE,
            tables=tables,
            semantics=semantics,
        )
        rss._pins = paths
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
        """``{"prog", "outer", "config"}`` pin paths kept current across reconfigurations, or None."""
        return None if self._pins is None else dict(self._pins)

    # ------------------------------------------------------------------ state

    @property
    def config(self) -> VnetHashConfig:
        """The configuration every packet is steered by now."""
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
    def program_id(self) -> int:
        """The program's kernel-wide id (asked for once)."""
        if self._program_id is None:
            self._program_id = self._program.id
        return self._program_id

    @property
    def pool_waits(self) -> int:
        """How many reconfigurations had to wait for a helper thread to end its grace period (all
        :data:`MAX_SWAP_THREADS` of them were busy); 0 when none ever waited."""
        swapper = self._swapper
        return 0 if swapper is None else swapper.pool_waits

    @property
    def device(self) -> TunTapBase | None:
        """The device the program is attached to, or None."""
        return self._device

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._inner is None

    def object_ids(self) -> tuple[int, tuple[int, ...]]:
        """``(program id, map ids)`` of the kernel objects this instance holds now.

        Raises:
            BpfError: when closed.
        """
        inner = self._require_open()
        if self._outer_id is None:
            self._outer_id = self._outer.id
        if self._inner_id is None:
            self._inner_id = inner.id
        return self.program_id, (self._outer_id, self._inner_id)

    def pin(self, directory: str) -> dict[str, str]:
        """Pin the program (``prog``), the outer map (``outer``) and the current inner config map
        (``config``) in ``directory`` on a bpffs, so another process can verify, reconfigure in
        place (a new inner map swapped into ``outer``) or detach them.

        Returns:
            ``{"prog": path, "outer": path, "config": path}``.

        Raises:
            BpfError: when closed, or as :func:`pytun_hash.bpf.pin.pin` (``EEXIST`` when a pin exists).
        """
        with self._lock:
            inner = self._require_open()
            paths = {name: os.path.join(directory, name) for name in PIN_NAMES}
            pin(self._program, paths["prog"])
            pin(self._outer, paths["outer"])
            pin(inner, paths["config"])
            self._pins = paths
            return dict(paths)

    def _require_open(self) -> ArrayMap:
        if self._inner is None:
            raise BpfError(errno.EBADF, "EbpfRss", "this eBPF RSS instance was closed; load a new one")
        return self._inner

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

    # ------------------------------------------------------------------ reconfiguration

    def reconfigure(self, config: VnetHashConfig, *, wait: bool = False) -> None:
        """Switch every following packet to ``config`` atomically, without detaching.

        Key, indirection table, hash types and unclassified queue may all change; each packet
        is steered entirely by the old or entirely by the new config (module documentation).
        When this returns, every packet whose steering starts afterwards uses ``config``.

        Args:
            config: the new configuration (RSS on, no _EX types).
            wait: also wait until no packet that started before the switch is still being
                steered with the old config (one RCU grace period, several milliseconds).
                Otherwise a helper thread of this instance's pool (ended by :meth:`close`) sits
                out that wait, and the next reconfiguration need not wait for it; :meth:`settle`
                waits for all of them.

        Raises:
            ValidationError: for a config the program cannot implement; nothing changes.
            BpfError / PrivilegeError: when the new map cannot be created; nothing changes.
        """
        check_supported(config)
        with self._lock:
            old = self._require_open()
            tables = (
                toeplitz_tables(config.key, semantics=self._semantics)
                if config.key != self._tables_key
                else self._tables
            )
            value = config_value(config, tables=tables, semantics=self._semantics)
            old_id = self._inner_id
            with self._free_lock:
                reused = self._free.pop() if self._free else None
            new, new_id = (
                reused if reused is not None else (ArrayMap.create(CONFIG_VALUE_SIZE, 1, name="pth_rss_cfg"), None)
            )
            try:
                if new_id is None:
                    new_id = new.id
                new.update(0, value)  # no program can read ``new``: it is new, or its grace period is over
                if wait:
                    self._outer.set(0, new)
                else:
                    if self._swapper is None:
                        self._swapper = _SlotSwapper(self._outer, self._retire)
                    # The helper hands ``old`` back once no program can read it any more.
                    self._swapper.swap(new, new_id, retired=(old, old_id))
            except BaseException:
                # Failed or interrupted: the slot holds one of the two maps; record which.
                self._settle_locked()
                if not self._slot_holds(new_id):
                    new.close()
                    raise
                self._install(new, new_id, config, tables)
                if wait:
                    self._retire(old, old_id)
                raise
            self._install(new, new_id, config, tables)
            if wait:
                self._retire(old, old_id)  # the update waited for its grace period

    def _slot_holds(self, map_id: int | None) -> bool:
        if map_id is None:
            return False
        try:
            return self._outer.lookup_id(0) == map_id
        except BpfError:
            return False

    def _retire(self, old: ArrayMap, old_id: int | None = None) -> None:
        """Keep ``old``, which no program can read any more, for reuse (or close it: enough are kept)."""
        with self._free_lock:
            if not self._closing and len(self._free) < FREE_CONFIG_MAPS:
                self._free.append((old, old_id))
                return
        with contextlib.suppress(OSError):  # a helper thread must not fail a swap that was made
            old.close()

    def _install(self, new: ArrayMap, new_id: int | None, config: VnetHashConfig, tables: bytes) -> None:
        self._inner = new
        self._inner_id = new_id
        self._config = config
        self._tables_key, self._tables = config.key, tables
        if self._pins is not None:
            # The pinned config map must be the one in force, or another process would verify and
            # adopt an old configuration. The swap is done already, so a failed pin only loses the
            # pins (nothing pinned is claimed any more), never the new configuration.
            try:
                unpin(self._pins["config"], missing_ok=True)
                pin(new, self._pins["config"])
            except KernelError:
                self._pins = None

    def settle(self) -> None:
        """Wait until no packet can still be steered by a config older than the current one.

        Returns at once after ``reconfigure(..., wait=True)``, or when the grace period of the
        last reconfiguration has passed already.
        """
        with self._lock:
            self._settle_locked()

    def _settle_locked(self) -> None:
        if self._swapper is not None:
            self._swapper.settle()

    # ------------------------------------------------------------------ checks

    def test_run(self, frame: bytes | bytearray | memoryview, *, repeat: int = 1) -> TestRunResult:
        """Run the program on ``frame`` (framed as the device's queues carry it) through ``BPF_PROG_TEST_RUN``.

        Raises:
            ValidationError: for a frame the kernel refuses to test-run (see :func:`frame_for_test_run`).
            BpfError: when the kernel refuses the run.
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
        inner, self._inner = self._inner, None
        if inner is None:
            return
        swapper, self._swapper = self._swapper, None
        if swapper is not None:
            swapper.stop()  # the helpers hand their retired maps back first
        with self._free_lock:
            self._closing = True
            free, self._free = self._free, []
        for unused, _ in free:
            with contextlib.suppress(OSError):
                unused.close()
        try:
            if detach:
                # A deleted device took its steering program with it: nothing to detach.
                with contextlib.suppress(DeviceGoneError):
                    self._detach_locked()
        finally:
            try:
                self._program.close()
            finally:
                try:
                    self._outer.close()
                finally:
                    inner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f"attached to {self._device.name!r}" if self._device is not None else "not attached"
        state = "closed" if self._inner is None else where
        return f"EbpfRss({self._mode.value}, {self._output.value}, {state})"


def open_pinned(
    directory: str, value: bytes, *, program_id: int | None = None
) -> tuple[Program, ArrayOfMaps, ArrayMap]:
    """Open what :meth:`EbpfRss.pin` left in ``directory`` and check that it is one consistent whole:
    the program (of id ``program_id`` when given), the outer map, and the config map, which must be
    the one in the outer map's slot and hold ``value`` byte for byte. The caller owns the three.

    Raises:
        BpfError: when a pin is missing, is not what it should be, or differs from the expected
            state (``ESTALE``: replaced program, another config map in force, other contents).
    """
    paths = {name: os.path.join(directory, name) for name in PIN_NAMES}
    with contextlib.ExitStack() as stack:
        program = stack.enter_context(get_pinned_program(paths["prog"]))
        outer = stack.enter_context(get_pinned_map(paths["outer"]))
        inner = stack.enter_context(get_pinned_map(paths["config"]))
        if not isinstance(outer, ArrayOfMaps) or not isinstance(inner, ArrayMap):
            raise BpfError(errno.EINVAL, f"BPF_OBJ_GET({directory})", "these pins are not an RSS program's maps")
        if program_id is not None and program.id != program_id:
            raise BpfError(
                errno.ESTALE,
                f"BPF_OBJ_GET({paths['prog']})",
                f"the pinned program is id {program.id}, the record says {program_id}: someone replaced it",
            )
        if outer.lookup_id(0) != inner.id:
            raise BpfError(
                errno.ESTALE, f"BPF_OBJ_GET({paths['config']})", "the pinned config map is not the one in force"
            )
        if inner.lookup(0) != value:
            raise BpfError(
                errno.ESTALE,
                f"BPF_MAP_LOOKUP_ELEM({paths['config']})",
                "the pinned config map does not hold the recorded configuration",
            )
        stack.pop_all()
    return program, outer, inner


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
