"""The record lifecycle of ``Hashing`` without privileges: a ``FakeTunTap`` given a namespace number
keeps a record like a real device, so adoption, ownership, replacement, removal, the exclusion judged
on the record and the device lock are all checked here with the native backend (the fake's kernel)."""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Iterator

import pytest

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    Backend,
    BusyError,
    FeatureUnsupportedError,
    Hashing,
    NotRecordedError,
    Revision,
    SteeringConflictError,
    VnetHashConfig,
)
from pytun_hash.device.record import DeviceId, Owner, Record, StaleReason
from pytun_hash.hashing import StateLocation
from pytun_hash.testing import FakeTunTap

CONFIG = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, table_length=8)
OTHER = CONFIG.replace(indirection_table=(3, 2, 1, 0) * 2)
NETNS = 4026530000


@pytest.fixture
def where(tmp_path_factory: pytest.TempPathFactory) -> StateLocation:
    base = tmp_path_factory.mktemp("records")
    os.chmod(base, 0o700)
    return StateLocation(str(base / "records"), str(base / "bpffs"))


@pytest.fixture
def fake() -> Iterator[FakeTunTap]:
    with FakeTunTap(Revision.V3, netns=NETNS) as device:
        yield device


def test_enable_records_and_adopt_takes_over(fake: FakeTunTap, where: StateLocation) -> None:
    assert Hashing.recorded(fake, state=where) is None
    first = Hashing.enable(fake, CONFIG, state=where, owner="first")
    record = Hashing.recorded(fake, state=where)
    assert record == first.record and record is not None
    assert (record.backend, record.revision, record.owner.name) == ("native", Revision.V3, "first")
    assert record.config == CONFIG
    second = Hashing.adopt(fake, state=where, owner="second")
    assert second.config == CONFIG and second.revision is Revision.V3 and second.backend is Backend.NATIVE
    second.reconfigure(OTHER)
    assert fake.kernel_state().as_config() == OTHER
    with pytest.raises(BusyError) as info:
        first.reconfigure(CONFIG)
    assert info.value.errno == errno.EBUSY and "second" in info.value.hint
    assert fake.kernel_state().as_config() == OTHER  # refused before any ioctl
    first.close()  # taken over: left alone
    assert fake.kernel_state().as_config() == OTHER
    second.close()
    assert not fake.kernel_state().enabled and Hashing.recorded(fake, state=where) is None


def test_the_record_is_a_root_only_file(fake: FakeTunTap, where: StateLocation) -> None:
    with Hashing.enable(fake, CONFIG, state=where) as hashing:
        ident = fake.device_id()
        assert ident is not None and hashing.record is not None and hashing.record.device == ident
        path = where.store().path(ident)
        mode = os.stat(path).st_mode
        assert stat.S_ISREG(mode) and stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
        with open(path) as kept:
            assert CONFIG.key.hex() in kept.read()  # the key is kept: hence 0600
    assert not os.path.exists(path)


def test_enable_refuses_a_recorded_device_unless_replace(fake: FakeTunTap, where: StateLocation) -> None:
    first = Hashing.enable(fake, CONFIG, state=where, owner="first")
    fake.reset_log()
    with pytest.raises(SteeringConflictError) as info:
        Hashing.enable(fake, OTHER, state=where)
    assert "first" in info.value.hint and "replace=True" in info.value.hint
    assert fake.calls == []  # refused on the record, before any ioctl
    second = Hashing.enable(fake, OTHER, state=where, replace=True)
    assert fake.kernel_state().as_config() == OTHER
    with pytest.raises(BusyError):
        first.disable()
    second.disable()
    assert not fake.kernel_state().enabled and Hashing.recorded(fake, state=where) is None
    first.close()
    second.close()


def test_the_exclusion_is_judged_on_the_record(fake: FakeTunTap, where: StateLocation) -> None:
    """Native RSS recorded by one object refuses eBPF from another, with no bpf(2) call at all."""
    with Hashing.enable(fake, CONFIG, state=where):
        with pytest.raises(SteeringConflictError):
            Hashing.enable(fake, CONFIG, backend=Backend.EBPF, state=where)
        assert fake.attached_program is None


def test_remove_takes_off_what_is_recorded_whoever_applied_it(fake: FakeTunTap, where: StateLocation) -> None:
    applied = Hashing.enable(fake, CONFIG, state=where, owner="vmm")
    removal = Hashing.remove(fake, state=where)
    assert removal.record == applied.record and removal.forced is None and removal.at
    assert not fake.kernel_state().enabled and Hashing.recorded(fake, state=where) is None
    applied.close()  # its record is gone: nothing to undo


def test_remove_without_a_record_changes_nothing_unless_forced(fake: FakeTunTap, where: StateLocation) -> None:
    fake.attach_steering_program(7, owner="qemu")
    nothing = Hashing.remove(fake, state=where)
    assert nothing.record is None and nothing.forced is None and fake.attached_program == 7
    forced = Hashing.remove(fake, state=where, force=True, backend=Backend.EBPF)
    assert forced.forced is not None and forced.forced.backend is Backend.EBPF
    assert fake.attached_program is None


def test_adopt_without_a_record(fake: FakeTunTap, where: StateLocation) -> None:
    with pytest.raises(NotRecordedError) as info:
        Hashing.adopt(fake, state=where)
    assert where.records in str(info.value) and "Hashing.enable" in str(info.value)


def test_adopting_a_revision_the_kernel_does_not_speak(where: StateLocation) -> None:
    with FakeTunTap(Revision.V3, netns=NETNS) as v3, FakeTunTap(None, name="fake1", netns=NETNS) as mainline:
        Hashing.enable(v3, CONFIG, state=where).close(keep=True)
        ident = mainline.device_id()
        assert ident is not None
        store = where.store()
        with store.lock(ident):  # mainline's record, written as if a v3 kernel had run it
            store.write(Record(ident, "native", Revision.V3, CONFIG, Owner.current()))
        with pytest.raises(FeatureUnsupportedError):
            Hashing.adopt(mainline, state=where)
        Hashing.remove(v3, state=where)


def test_a_held_lock_times_out_with_ewouldblock(fake: FakeTunTap, where: StateLocation) -> None:
    ident = fake.device_id()
    assert ident is not None
    store = where.store()
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with store.lock(ident):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(BusyError) as info:
            Hashing.enable(fake, CONFIG, state=where, lock_timeout=0)
        assert info.value.errno == errno.EWOULDBLOCK
        assert not fake.kernel_state().enabled
    finally:
        release.set()
        thread.join()


def test_a_record_of_an_earlier_device_with_the_name_is_stale(fake: FakeTunTap, where: StateLocation) -> None:
    ident = fake.device_id()
    assert ident is not None
    earlier = DeviceId(ident.netns, ident.ifindex + 1000, ident.name)
    store = where.store()
    with store.lock(earlier):
        store.write(Record(earlier, "native", Revision.V3, OTHER, Owner.current()))
    with Hashing.enable(fake, CONFIG, state=where) as hashing:
        assert [s.reason for s in hashing.stale] == [StaleReason.DEVICE_RECREATED]
        assert hashing.stale[0].record.device == earlier
    assert store.devices(ident.netns) == []


def test_racing_threads_serialise_on_the_lock(fake: FakeTunTap, where: StateLocation) -> None:
    """Threads race enable(replace) and remove on one device; each operation runs alone under the
    device's lock (times taken under it are distinct), and the end state is what the last one said."""
    results: list[tuple[str, str]] = []
    guard = threading.Lock()

    def apply(i: int) -> None:
        config = CONFIG.replace(unclassified_queue=i % 4)
        hashing = Hashing.enable(fake, config, state=where, replace=True, owner=f"t{i}")
        record = hashing.record
        assert record is not None
        hashing.close(keep=True)
        with guard:
            results.append((record.applied_at, f"apply {i % 4}"))

    def remove() -> None:
        removal = Hashing.remove(fake, state=where)
        with guard:
            results.append((removal.at, "remove"))

    threads = [threading.Thread(target=apply, args=(i,)) for i in range(10)]
    threads += [threading.Thread(target=remove) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({at for at, _ in results}) == len(results) == 20
    last = max(results)[1]
    recorded = Hashing.recorded(fake, state=where)
    if last == "remove":
        assert recorded is None and not fake.kernel_state().enabled
    else:
        assert recorded is not None and f"apply {recorded.config.unclassified_queue}" == last
        assert fake.kernel_state().as_config() == recorded.config
        Hashing.remove(fake, state=where)
