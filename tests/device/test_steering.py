"""The steering rule's owner, without a kernel: refusals, the requests they name per revision, records.

The kernel and emulator tests (``test_queues_steering.py``, ``tests/hashctl``) check that no ioctl
is issued when these refuse.
"""

from __future__ import annotations

import errno
import threading

import pytest

from pytun_hash._abi import Revision, ioctl_def
from pytun_hash.device import SteeringState
from pytun_hash.device.steering import HashRequests, hash_requests
from pytun_hash.errors import BusyError, DeviceGoneError, SteeringConflictError, ValidationError


class FakeDevice:
    """A device for the rule: a name, and whether it was deleted (what ``TUNGETIFF`` would say)."""

    def __init__(self, state: SteeringState | None = None) -> None:
        self.name = "tap7"
        self.deleted = False
        self.asked = 0
        self.state = state

    def raise_if_deleted(self) -> None:
        self.asked += 1
        if self.deleted:
            assert self.state is not None
            self.state.device_deleted()  # as TunTapDevice does when TUNGETIFF says EBADFD
            raise DeviceGoneError(errno.EBADFD, "TUNGETIFF", "the device was deleted")


def _device_state() -> tuple[SteeringState, FakeDevice]:
    device = FakeDevice()
    state = SteeringState(device)
    device.state = state
    return state, device


def test_steering_is_refused_while_native_rss_is_on() -> None:
    state = SteeringState()
    state.ensure_can_attach_steering()
    state.native_rss = True
    with pytest.raises(SteeringConflictError) as info:
        state.ensure_can_attach_steering()
    assert info.value.errno == errno.EBUSY
    assert info.value.request == "TUNSETSTEERINGEBPF"
    assert "disable RSS" in info.value.hint and "TUNSETVNETHASH" in info.value.hint
    assert "this device" in info.value.hint


def test_reports_alone_do_not_block_steering() -> None:
    state = SteeringState()
    state.native_report = True
    state.ensure_can_attach_steering()
    state.record_steering(7, "user")
    assert state.steering_attached


def test_native_rss_is_refused_while_a_program_is_attached() -> None:
    state = SteeringState()
    state.ensure_can_enable_native_rss()
    state.record_steering(9, "ebpf-rss")
    with pytest.raises(SteeringConflictError) as info:
        state.ensure_can_enable_native_rss()
    assert info.value.errno == errno.EBUSY
    assert info.value.request == "TUNSETVNETHASH"
    assert "ebpf-rss" in info.value.hint
    assert "detach_steering_program" in info.value.hint
    state.record_steering(None, "ebpf-rss")
    assert state.steering_owner is None
    state.ensure_can_enable_native_rss()


@pytest.mark.parametrize(
    ("revision", "get", "set_rss"),
    [
        (Revision.RFC, "TUNGETVNETHASHCAP", "TUNSETVNETHASH"),
        (Revision.V3, "TUNGETVNETHASHCAP", "TUNSETVNETHASH"),
        (Revision.V10, "TUNGETVNETHASHCAP", "TUNSETVNETHASH"),
        (Revision.V12, "TUNGETVNETHASHTYPES", "TUNSETVNETRSS"),
    ],
)
def test_refusals_name_the_requests_of_the_revision_in_force(revision: Revision, get: str, set_rss: str) -> None:
    assert hash_requests(revision) == HashRequests(get=get, set_rss=set_rss)
    assert ioctl_def(get, revision).name == get and ioctl_def(set_rss, revision).name == set_rss
    state = SteeringState()
    state.record_steering(3, "user")
    with pytest.raises(SteeringConflictError) as info:
        state.ensure_can_enable_native_rss(revision=revision)
    assert info.value.request == set_rss
    state.record_steering(None, None)
    state.record_native(rss=True, report=False, revision=revision)
    with pytest.raises(SteeringConflictError) as info:
        state.ensure_can_attach()  # no revision named: the one recorded with the native state
    assert info.value.request == "TUNSETSTEERINGEBPF" and f"({set_rss})" in info.value.hint


def test_a_named_revision_wins_over_the_recorded_one() -> None:
    state = SteeringState()
    state.record_native(rss=True, report=True, revision=Revision.RFC)
    with pytest.raises(SteeringConflictError) as info:
        state.ensure_can_attach(revision=Revision.V12)
    assert "TUNSETVNETRSS" in info.value.hint
    with pytest.raises(ValidationError):
        hash_requests("v12")  # type: ignore[arg-type]


def test_an_exclusive_attach_is_refused_while_any_program_is_attached() -> None:
    state, device = _device_state()
    state.ensure_can_attach(owner="ebpf-rss", exclusive=True)
    state.record_steering(5, "user")
    state.ensure_can_attach(owner="user")  # replacing is what the kernel does
    with pytest.raises(BusyError) as info:
        state.ensure_can_attach(owner="ebpf-rss", exclusive=True)
    assert not isinstance(info.value, SteeringConflictError)
    assert info.value.errno == errno.EBUSY and info.value.request == "TUNSETSTEERINGEBPF"
    assert "attached by user" in info.value.hint and "'tap7'" in info.value.hint
    assert "ebpf-rss asked" in info.value.hint and "detach it first" in info.value.hint
    assert device.asked == 1  # the device was asked whether it still exists before refusing


def test_refusals_on_a_deleted_device_say_so_and_clear_the_record() -> None:
    state, device = _device_state()
    state.record_steering(5, "user")
    device.deleted = True
    with pytest.raises(DeviceGoneError):
        state.ensure_can_enable_native_rss(revision=Revision.V12)
    assert not state.steering_attached and state.steering_owner is None
    state.ensure_can_enable_native_rss()  # nothing recorded any more: allowed
    state.record_native(rss=True, report=True, revision=Revision.V3)
    with pytest.raises(DeviceGoneError):
        state.ensure_can_attach(owner="user")
    assert (state.native_rss, state.native_report, state.native_revision) == (False, False, None)
    state.record_steering(6, "ebpf-rss")
    with pytest.raises(DeviceGoneError):
        state.ensure_can_attach(owner="ebpf-rss", exclusive=True)
    assert device.asked == 3


def test_allowed_requests_ask_the_device_nothing() -> None:
    state, device = _device_state()
    state.ensure_can_attach(owner="user", exclusive=True)
    state.ensure_can_enable_native_rss(revision=Revision.RFC)
    state.record_native(rss=False, report=True, revision=Revision.RFC)
    state.ensure_can_attach()
    assert device.asked == 0


def test_steering_lock_is_reentrant_and_excludes_other_threads() -> None:
    state = SteeringState()
    seen: list[bool] = []
    with state.lock, state.lock:
        worker = threading.Thread(target=lambda: seen.append(state.lock.acquire(timeout=0.05)))
        worker.start()
        worker.join()
    assert seen == [False]
