"""Back-to-back reconfigurations do not wait for grace periods, proven without a clock.

The slot update (``ArrayOfMaps.set``) is replaced by one that makes the real exchange and then
blocks, standing for a grace period that does not end until the test says so. Reconfigurations
issued meanwhile must still return, each with its configuration in force, and the blocking
update must never run in the caller's thread; only an exhausted pool of helper threads makes a
caller wait.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator

import pytest

from pytun_hash._abi.virtio_net import HashType
from pytun_hash.bpf import rss as rss_module
from pytun_hash.bpf.maps import ArrayMap, ArrayOfMaps, BpfMap
from pytun_hash.bpf.rss import EbpfRss
from pytun_hash.bpf.rss_program import RssOutput
from pytun_hash.config import VnetHashConfig
from pytun_hash.model.toeplitz import toeplitz_hash

SRC, DST = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
PORTS = struct.pack("!HH", 1234, 80)
FRAME = (
    bytes(12) + b"\x08\x00"
    + struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, SRC, DST) + PORTS + bytes(16)
)  # fmt: skip
_GRACE_TIMEOUT = 30.0  # only keeps a broken implementation from hanging the run


def config(i: int) -> VnetHashConfig:
    return VnetHashConfig(rss=True, types=HashType.TCPV4, key=bytes([i + 1]) * 40)


def in_force(rss: EbpfRss, i: int) -> bool:
    return rss.test_run(FRAME).retval == toeplitz_hash(config(i).key, SRC + DST + PORTS)


class GracePeriods:
    """Stands in for ``ArrayOfMaps.set``: the exchange, then (once armed) a wait until :meth:`end`."""

    def __init__(self) -> None:
        self.armed = False
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.threads: list[int] = []
        self.waiting = 0
        self.timed_out = 0
        self._real = ArrayOfMaps.set

    def __call__(self, outer: ArrayOfMaps, index: int, inner: BpfMap) -> None:
        if not self.armed:
            self._real(outer, index, inner)
            return
        # Counted before the exchange: once the new map is visible, its update is counted.
        with self.lock:
            self.threads.append(threading.get_ident())
            self.waiting += 1
        self._real(outer, index, inner)
        if not self.released.wait(_GRACE_TIMEOUT):
            with self.lock:
                self.timed_out += 1
        with self.lock:
            self.waiting -= 1

    def end(self) -> None:
        self.released.set()


@pytest.fixture
def grace(monkeypatch: pytest.MonkeyPatch) -> Iterator[GracePeriods]:
    periods = GracePeriods()

    # A function, not the instance: a class attribute must bind ``self`` (the outer map).
    def set_slot(outer: ArrayOfMaps, index: int, inner: BpfMap) -> None:
        periods(outer, index, inner)

    monkeypatch.setattr(ArrayOfMaps, "set", set_slot)
    try:
        yield periods
    finally:
        periods.end()


@pytest.mark.bpf
def test_back_to_back_reconfigurations_never_wait_for_a_grace_period(grace: GracePeriods) -> None:
    with EbpfRss.load(config(0), output=RssOutput.HASH) as rss:
        grace.armed = True
        for i in range(1, 25):
            rss.reconfigure(config(i))
            assert in_force(rss, i)
        # Every update is still "in its grace period", yet every reconfiguration returned.
        assert grace.waiting == 24
        assert threading.get_ident() not in grace.threads
        assert rss.pool_waits == 0
        grace.end()
        rss.settle()
        assert grace.waiting == 0
        assert in_force(rss, 24)
    assert grace.timed_out == 0


@pytest.mark.bpf
def test_an_exhausted_pool_makes_the_caller_wait(grace: GracePeriods, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rss_module, "MAX_SWAP_THREADS", 2)
    with EbpfRss.load(config(0), output=RssOutput.HASH) as rss:
        grace.armed = True
        rss.reconfigure(config(1))
        rss.reconfigure(config(2))
        assert rss.pool_waits == 0
        third = threading.Thread(target=rss.reconfigure, args=(config(3),))
        third.start()
        # The third swap needs a helper, and both sit out their grace periods: it waits for one.
        while rss.pool_waits == 0:
            third.join(0.01)
        assert third.is_alive() and in_force(rss, 2)
        grace.end()
        third.join()
        assert in_force(rss, 3)
        assert rss.pool_waits == 1
    assert grace.timed_out == 0


@pytest.mark.bpf
def test_wait_true_makes_the_update_in_the_callers_thread(grace: GracePeriods) -> None:
    grace.end()  # a synchronous update must not block the test
    with EbpfRss.load(config(0), output=RssOutput.HASH) as rss:
        grace.armed = True
        rss.reconfigure(config(1), wait=True)
        assert grace.threads == [threading.get_ident()]
        assert in_force(rss, 1)


@pytest.mark.bpf
def test_object_ids_are_asked_for_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with EbpfRss.load(config(0), output=RssOutput.HASH) as rss:
        first = rss.object_ids()
        asked = 0
        real = BpfMap.info

        def counting(self: BpfMap) -> object:
            nonlocal asked
            asked += 1
            return real(self)

        monkeypatch.setattr(BpfMap, "info", counting)
        for i in range(1, 6):
            rss.reconfigure(config(i))
        # At most one id per new config map (to recognise it in the slot), none for what is known.
        assert asked <= 5
        asked_then = asked
        program_id, (outer_id, _) = rss.object_ids()
        assert (program_id, outer_id) == (first[0], first[1][0])
        # (inner_id may be first's again: a replaced map is filled again once its grace period is over)
        assert in_force(rss, 5)
        assert asked == asked_then
        rss.settle()


@pytest.mark.bpf
def test_a_config_map_is_filled_again_only_after_its_grace_period(
    grace: GracePeriods, monkeypatch: pytest.MonkeyPatch
) -> None:
    created = 0
    real_create = ArrayMap.create.__func__  # type: ignore[attr-defined]

    def counting_create(cls: type[ArrayMap], /, *args: object, **kwargs: object) -> ArrayMap:
        nonlocal created
        created += 1
        return real_create(cls, *args, **kwargs)  # type: ignore[no-any-return]

    with EbpfRss.load(config(0), output=RssOutput.HASH) as rss:
        monkeypatch.setattr(ArrayMap, "create", classmethod(counting_create))
        grace.armed = True
        for i in range(1, 9):
            rss.reconfigure(config(i))
            assert in_force(rss, i)
        # Every replaced map is still in its grace period: none may be written, each config got a new map.
        assert created == 8
        grace.end()
        rss.settle()
        for i in range(9, 9 + rss_module.FREE_CONFIG_MAPS):
            rss.reconfigure(config(i))
            assert in_force(rss, i)
        rss.settle()
        # Now the replaced maps came back: the next configs were written into them.
        assert created == 8
    assert grace.timed_out == 0
