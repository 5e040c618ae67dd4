"""``Hashing``: how hashing is turned on, changed, read and turned off on a device, by any process.

A device's hashing outlives the process that configured it, so every :class:`Hashing` operation
is a read-modify-write of the device's record (:mod:`pytun_hash.hashing.state`) under the device's
lock: concurrent ``enable``/``reconfigure``/``disable`` from any processes run one after the
other, and what each one reports in force is true when it returns. The strict exclusion between
native RSS and a steering program is judged on the record too, so it holds across processes.

Ownership: an object acts only while the record is the one it wrote. When another process
replaced, adopted or disabled the device's hashing since, :meth:`Hashing.reconfigure` and
:meth:`Hashing.disable` raise :class:`~pytun_hash.errors.BusyError` and :meth:`Hashing.close`
only releases this object's file descriptors.

Devices the kernel does not have (``pytun_hash.testing.FakeTunTap``) have no record: the same
operations then act on the object alone.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from types import TracebackType
from typing import Self

import attrs

from pytun_hash._abi import Revision
from pytun_hash.backend import Backend, BackendChoice, choose_backend
from pytun_hash.bpf.report import HashReporter
from pytun_hash.bpf.rss import EbpfRss
from pytun_hash.config import VnetHashConfig
from pytun_hash.device.base import TunTapBase
from pytun_hash.device.record import BackendName, Checked, DeviceId, Owner, Record, RecordStore, StaleRecord
from pytun_hash.errors import BpfError, BusyError, NotRecordedError, SteeringConflictError, ValidationError
from pytun_hash.hashing.backends import EbpfBackend, HashingBackend, NativeBackend, take_off
from pytun_hash.hashing.state import StateLocation, checked_record, drop_stale, now, sweep_recreated
from pytun_hash.model.classify import Semantics
from pytun_hash.model.semantics import semantics_for

__all__ = ["Hashing", "Removal"]


def _describe(record: Record) -> str:
    what = record.backend + (f" revision {record.revision.value}" if record.revision else "")
    o = record.owner
    who = f"pid {o.pid}" + (f" ({o.name})" if o.name else "")
    return f"{what} hashing applied by {who} at {record.applied_at}"


class _Place:
    """Where one device's record lives, and how its lock is taken (nothing for a fake device)."""

    def __init__(
        self, device: TunTapBase, state: StateLocation | None, lock_timeout: float | None, *, record: bool = True
    ) -> None:
        self.ident: DeviceId | None = device.device_id() if record else None
        self.state = state if state is not None else StateLocation.from_environment()
        self.store: RecordStore | None = self.state.store() if self.ident is not None else None
        self.lock_timeout = lock_timeout
        self.stale: list[StaleRecord] = []
        # The record this place wrote last and its file's identity right after: while the file is
        # still that one, the record need not be read and decoded again to be known.
        self._written: tuple[Record, tuple[int, ...] | None] | None = None

    @contextlib.contextmanager
    def locked(self, *, sweep: bool = True) -> Iterator[Record | None]:
        """Hold the device's lock; yield its trusted record (stale ones are removed and kept in :attr:`stale`).

        ``sweep=False`` skips looking for records of earlier devices of the same name: once one sweep
        was done with the device open, no other device can take its name in its namespace.
        """
        if self.store is None or self.ident is None:
            yield None
            return
        if sweep:
            self.stale.extend(sweep_recreated(self.store, self.ident))
        with self.store.lock(self.ident, timeout=self.lock_timeout):
            written, self._written = self._written, None
            if written is not None and written[1] is not None and written[1] == _identity(self.store.path(self.ident)):
                # The file is the one written last (same inode, size, times, owner and mode: any
                # replacement, rewrite or chmod changes one), so it holds ``written[0]``; it is only
                # checked for staleness, as a read would.
                stale = self.store.check(written[0], link_index_now=self.ident.ifindex)
                if stale is not None:
                    drop_stale(stale)
                checked = Checked(stale=stale) if stale is not None else Checked(record=written[0])
                if stale is None:
                    self._written = written
            else:
                checked = checked_record(self.store, self.ident, link_index_now=self.ident.ifindex)
            if checked.stale is not None:
                self.stale.append(checked.stale)
            yield checked.record

    def write(self, backend: HashingBackend, config: VnetHashConfig, owner: Owner) -> Record | None:
        """Record what is in force now (the caller holds the lock), even a config with RSS and reports
        off: the record says what was applied until :meth:`Hashing.disable` removes it."""
        if self.store is None or self.ident is None:
            return None
        name: BackendName = "native" if backend.kind is Backend.NATIVE else "ebpf"
        record = Record(self.ident, name, backend.revision, config, owner, ebpf=backend.pins())
        self._written = None
        path = self.store.write(record)
        self._written = (record, _identity(path))
        return record

    def remove(self) -> None:
        self._written = None
        if self.store is not None and self.ident is not None:
            self.store.remove(self.ident)


def _identity(path: str) -> tuple[int, ...] | None:
    """What tells one version of a file from another without reading it (None: no such file)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mode, st.st_uid, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@attrs.frozen
class Removal:
    """What :meth:`Hashing.remove` did.

    Attributes:
        record: the record whose hashing was taken off (None: nothing was recorded).
        forced: without a record and with ``force``: the backend whose off switch was used.
        stale: stale records found and removed on the way.
        at: when, taken under the device's lock (UTC ISO 8601, as records write times).
    """

    record: Record | None
    forced: BackendChoice | None
    stale: list[StaleRecord]
    at: str


class Hashing:
    """The hashing in force on one device, through one backend (context manager).

    Build it with :meth:`enable` (put a configuration in force) or :meth:`adopt` (take over what
    the device's record says is in force, from any process). :meth:`close` turns hashing off
    unless ``keep=True``, which leaves it in force for as long as the device lives, recorded and
    (eBPF) pinned, for another process to :meth:`adopt`.

    Attributes:
        device: the device.
        choice: how the backend was chosen.
    """

    def __init__(
        self,
        device: TunTapBase,
        choice: BackendChoice,
        backend: HashingBackend,
        config: VnetHashConfig,
        *,
        place: _Place,
        record: Record | None,
        owner: Owner,
    ) -> None:
        self.device = device
        self.choice = choice
        self._backend = backend
        self._config = config
        self._place = place
        self._record = record
        self._owner = owner
        self._reporter: HashReporter | None = None
        self._closed = False

    # ------------------------------------------------------------------ construction

    @classmethod
    def enable(
        cls,
        device: TunTapBase,
        config: VnetHashConfig,
        *,
        backend: Backend = Backend.AUTO,
        revision: Revision | None = None,
        replace: bool = False,
        state: StateLocation | None = None,
        owner: str | None = None,
        lock_timeout: float | None = None,
        record: bool = True,
    ) -> Hashing:
        """Put ``config`` in force on ``device`` with the chosen backend, and record it.

        Args:
            device: the device (with an attached queue when the native backend is probed).
            config: the configuration.
            backend: ``AUTO`` (native when the kernel has a hash UAPI revision, else eBPF),
                ``NATIVE`` or ``EBPF``.
            revision: the native revision to use instead of probing.
            replace: when the device's record says hashing is in force already (this process's or
                another's), replace it: in place when the backend stays (eBPF: the pinned program
                switches to ``config`` without being detached), else the old one is taken off
                first. Without it that case raises :class:`~pytun_hash.errors.SteeringConflictError`.
            state: where records and pins live (default: :meth:`StateLocation.from_environment`).
            owner: a name for the record's owner (``"vmm vm0"``).
            lock_timeout: seconds to wait for the device's lock at most (None: as long as it takes).
            record: False keeps nothing outside this process (no record, no pins, no lock), for a
                device that lives no longer than the process (a scratch device in a private
                namespace, as ``pytun-hash demo`` uses): a process killed mid-way then leaves no pin
                holding its program alive.

        Raises:
            SteeringConflictError: (``EBUSY``) hashing is recorded on the device and ``replace`` is
                off; or native RSS while a steering program is attached, or eBPF while native RSS is
                enabled; nothing is changed.
            ValidationError: for a config the backend cannot implement (eBPF: _EX hash types), or
                reports without a 20-byte little-endian vnet header (both backends).
            FeatureUnsupportedError: ``NATIVE`` requested on a kernel without the hash ioctls.
            BusyError: ``EWOULDBLOCK`` when ``lock_timeout`` passed.
            KernelError: when the kernel refuses a call.
        """
        if not isinstance(config, VnetHashConfig):
            raise ValidationError("config", f"expected a VnetHashConfig, got {type(config).__name__}")
        place = _Place(device, state, lock_timeout, record=record)
        who = Owner.current(owner)
        with place.locked() as old:
            if old is not None and not replace:
                raise SteeringConflictError(
                    errno.EBUSY,
                    "Hashing.enable",
                    f"{_describe(old)} is in force on {device.name!r}; take it over with Hashing.adopt, or "
                    "pass replace=True (`pytun-hash apply` replaces, `pytun-hash disable` removes it)",
                )
            choice = choose_backend(device, backend, revision=revision)
            if config.report:
                device.check_report_header()
            impl = cls._backend_for(device, choice, old, place)
            impl.apply(config)
            written = place.write(impl, config, who)
        return cls(device, choice, impl, config, place=place, record=written, owner=who)

    @staticmethod
    def _backend_for(device: TunTapBase, choice: BackendChoice, old: Record | None, place: _Place) -> HashingBackend:
        """The backend to apply with, taking over what ``old`` put in force when it is the same kind."""
        if old is not None:
            same = (old.backend == "native") == (choice.backend is Backend.NATIVE) and old.revision == choice.revision
            if same and old.backend == "native":
                assert old.revision is not None
                return NativeBackend(device, old.revision, config=old.config)
            if same:
                try:
                    return EbpfBackend.adopt(device, old, state=place.state, ident=place.ident)
                except (BpfError, ValidationError):
                    pass  # pins not as recorded: take the program off and load a new one
            take_off(device, old)
        if choice.backend is Backend.NATIVE:
            assert choice.revision is not None
            return NativeBackend(device, choice.revision)
        return EbpfBackend(device, state=place.state if place.ident is not None else None, ident=place.ident)

    @classmethod
    def adopt(
        cls,
        device: TunTapBase,
        *,
        state: StateLocation | None = None,
        owner: str | None = None,
        lock_timeout: float | None = None,
    ) -> Hashing:
        """Take over the hashing the device's record says is in force (applied by any process).

        The record is rewritten with this process as its owner, so the object that applied it
        notices and stops acting on it. Nothing in the kernel changes.

        Raises:
            NotRecordedError: nothing is recorded for the device (or only a stale record, removed).
            BpfError: when the eBPF record's pins are not what it says (replaced by someone).
            FeatureUnsupportedError: a native record on a kernel that does not answer its revision.
            BusyError: ``EWOULDBLOCK`` when ``lock_timeout`` passed.
            KernelError: when the store or the kernel cannot be read.
        """
        place = _Place(device, state, lock_timeout)
        who = Owner.current(owner)
        with place.locked() as record:
            if record is None:
                where = "" if place.ident is None else f" under {place.state.records}"
                raise NotRecordedError(
                    f"nothing is recorded for {device.name!r}{where}: pytun_hash put no hashing in force there "
                    "(or its record was stale); use Hashing.enable"
                )
            impl: HashingBackend
            if record.backend == "native":
                assert record.revision is not None
                impl = NativeBackend(device, record.revision, config=record.config)
                choice = BackendChoice(Backend.NATIVE, record.revision, "adopted from the device's record")
            else:
                impl = EbpfBackend.adopt(device, record, state=place.state, ident=place.ident)
                choice = BackendChoice(Backend.EBPF, None, "adopted from the device's record")
            mine = place.write(impl, record.config, who)
        return cls(device, choice, impl, record.config, place=place, record=mine, owner=who)

    @classmethod
    def recorded(
        cls, device: TunTapBase, *, state: StateLocation | None = None, lock_timeout: float | None = None
    ) -> Record | None:
        """What the device's record says is in force (None: nothing), read under its lock; stale
        records are removed and never returned.

        Raises:
            BusyError: ``EWOULDBLOCK`` when ``lock_timeout`` passed.
            KernelError: when the store cannot be read.
        """
        place = _Place(device, state, lock_timeout)
        with place.locked() as record:
            return record

    @classmethod
    def remove(
        cls,
        device: TunTapBase,
        *,
        force: bool = False,
        backend: Backend = Backend.AUTO,
        revision: Revision | None = None,
        state: StateLocation | None = None,
        lock_timeout: float | None = None,
    ) -> Removal:
        """Take off what the device's record says pytun_hash put in force, and remove the record,
        under one hold of the device's lock (whoever applied it).

        Without a record nothing is changed: a steering program another program attached (QEMU,
        libvirt) is left alone, unless ``force``: then the chosen backend's off switch is used
        anyway (native: the disabled configuration; eBPF: whatever program is attached is detached).

        Raises:
            BusyError: ``EWOULDBLOCK`` when ``lock_timeout`` passed.
            KernelError: when the kernel refuses (the record is removed all the same).
        """
        place = _Place(device, state, lock_timeout)
        with place.locked() as record:
            if record is not None:
                try:
                    take_off(device, record)
                finally:
                    place.remove()
                return Removal(record, None, list(place.stale), now())
            if not force:
                return Removal(None, None, list(place.stale), now())
            choice = choose_backend(device, backend, revision=revision)
            if choice.backend is Backend.NATIVE:
                assert choice.revision is not None
                NativeBackend(device, choice.revision).disable()
            else:
                device.detach_steering_program()
            return Removal(None, choice, list(place.stale), now())

    # ------------------------------------------------------------------ what is in force

    @property
    def backend(self) -> Backend:
        """``NATIVE`` or ``EBPF``."""
        return self.choice.backend

    @property
    def config(self) -> VnetHashConfig:
        """The configuration in force through this object."""
        return self._config

    @property
    def record(self) -> Record | None:
        """The device's record as this object last wrote it (None: nothing in force, or no record kept)."""
        return self._record

    @property
    def state(self) -> StateLocation:
        """Where the device's record and pins live."""
        return self._place.state

    @property
    def stale(self) -> tuple[StaleRecord, ...]:
        """Stale records of this device found (and removed, never trusted) by this object's operations."""
        return tuple(self._place.stale)

    @property
    def revision(self) -> Revision | None:
        """The native revision in force; None on the eBPF backend."""
        return self._backend.revision

    @property
    def semantics(self) -> Semantics:
        """The rules the hashing in force follows: the native revision's, or the specification on eBPF.

        Predict and verify this device's queues and reports with these (see
        :func:`pytun_hash.model.semantics_for`).
        """
        return semantics_for(self.revision)

    @property
    def reports_in_user_space(self) -> bool:
        """True when the kernel will not write hash reports, so user space must compute them."""
        return self.backend is Backend.EBPF and self._config.report

    @property
    def reporter(self) -> HashReporter | None:
        """The hash-report filler for buffers read from the device's queues (eBPF with reports on),
        following every :meth:`reconfigure`; None when the kernel writes reports (native) or
        reports are off.

        Raises:
            ValidationError: when the device's vnet header cannot carry reports.
        """
        if not self.reports_in_user_space:
            return None
        if self._reporter is None:
            self._reporter = HashReporter(
                self._config,
                mode=self.device.mode,
                vnet_hdr_size=self.device.get_vnet_hdr_size(),
                packet_info=self.device.packet_info,
                semantics=self.semantics,
            )
        return self._reporter

    @property
    def ebpf(self) -> EbpfRss | None:
        """The steering program, when the eBPF backend steers through this object."""
        return self._backend.rss if isinstance(self._backend, EbpfBackend) else None

    # ------------------------------------------------------------------ changes

    def _check_open(self) -> None:
        if self._closed:
            raise ValidationError("hashing", "this Hashing object was closed; enable or adopt hashing again")

    @contextlib.contextmanager
    def _owned(self, request: str, *, sweep: bool = True) -> Iterator[None]:
        """Hold the device's lock while its record is still the one this object wrote."""
        with self._place.locked(sweep=sweep) as current:
            if current != self._record:
                now = "nothing is recorded" if current is None else f"{_describe(current)} is in force"
                raise BusyError(
                    errno.EBUSY,
                    request,
                    f"{self.device.name!r} was changed by another process since this object's last change "
                    f"({now}); take it over again with Hashing.adopt",
                )
            yield

    def reconfigure(self, config: VnetHashConfig) -> None:
        """Switch to ``config`` without a window of no steering (eBPF: a free slot written, then made active).

        A config with RSS off on eBPF detaches the program (report-only needs none).

        Raises:
            BusyError: another process changed the device's hashing since (adopt it again).
            ValidationError, SteeringConflictError, KernelError: as :meth:`enable`.
        """
        self._check_open()
        if not isinstance(config, VnetHashConfig):
            raise ValidationError("config", f"expected a VnetHashConfig, got {type(config).__name__}")
        # No sweep for earlier devices of the same name: enable/adopt did one while this object held
        # the device open, and it still does, so none can have appeared since (a change is then a
        # read and a write of this device's record only).
        with self._owned("Hashing.reconfigure", sweep=False):
            if config.report:
                self.device.check_report_header()
            self._backend.apply(config)
            self._config = config
            if self._reporter is not None and config.report:
                self._reporter.config = config  # a filler handed out keeps filling with what is in force
            self._record = self._place.write(self._backend, config, self._owner)

    def disable(self) -> None:
        """Turn RSS and hash reports off and remove the device's record.

        Raises:
            BusyError: another process changed the device's hashing since (adopt it again).
            KernelError: when the kernel refuses the call.
        """
        self._check_open()
        with self._owned("Hashing.disable"):
            try:
                self._backend.disable()
            finally:
                self._config = VnetHashConfig.disabled()
                self._place.remove()
                self._record = None

    def close(self, *, keep: bool = False) -> None:
        """Release this object; hashing is turned off unless ``keep`` (idempotent).

        With ``keep`` the configuration stays in force, recorded (and for eBPF pinned), for as long
        as the device lives. When another process took the device's hashing over since, nothing in
        force is touched either way.

        Raises:
            KernelError: when turning hashing off fails (the fds are released all the same).
        """
        if self._closed:
            return
        try:
            if not keep and (self._config.enabled or self._record is not None):
                with contextlib.suppress(BusyError):
                    self.disable()
        finally:
            self._closed = True
            self._backend.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.backend.value
        return f"Hashing({self.device.name!r}, {state})"
