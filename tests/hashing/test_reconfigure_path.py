"""What one ``Hashing.reconfigure`` does: no sweep for earlier devices of the same name, and no
read of a record file that is still the one this object wrote; any change to the file (another
writer, a rewrite in place, a chmod) brings the full read and its checks back."""

from __future__ import annotations

import os

import pytest

from pytun_hash import MICROSOFT_RSS_KEY, Backend, BusyError, Hashing, VnetHashConfig
from pytun_hash.device import TunTapDevice
from pytun_hash.device.record import RecordStore
from pytun_hash.hashing import StateLocation, verify
from pytun_hash.hashing import state as hashing_state

CONFIGS = [
    VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, table_length=8).replace(unclassified_queue=q) for q in range(4)
]


class Calls:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        self.sweeps = 0
        real_read, real_sweep = hashing_state.checked_record, hashing_state.sweep_recreated

        def read(*args: object, **kwargs: object) -> object:
            self.reads += 1
            return real_read(*args, **kwargs)  # type: ignore[arg-type]

        def sweep(*args: object, **kwargs: object) -> object:
            self.sweeps += 1
            return real_sweep(*args, **kwargs)  # type: ignore[arg-type]

        # Where Hashing looks them up.
        monkeypatch.setattr("pytun_hash.hashing.core.checked_record", read)
        monkeypatch.setattr("pytun_hash.hashing.core.sweep_recreated", sweep)


def _record_path(tap: TunTapDevice) -> str:
    state = StateLocation.from_environment()
    return RecordStore(state.records, owner_uid=os.geteuid()).path(tap.device_id())


@pytest.mark.kernel
@pytest.mark.bpf
def test_reconfigure_reads_nothing_it_wrote_itself(tap: TunTapDevice, monkeypatch: pytest.MonkeyPatch) -> None:
    with Hashing.enable(tap, CONFIGS[0], backend=Backend.EBPF) as hashing:
        calls = Calls(monkeypatch)
        for i in range(1, 12):
            hashing.reconfigure(CONFIGS[i % 4])
            assert (calls.reads, calls.sweeps) == (0, 0)
        assert hashing.record is not None and hashing.record.config == CONFIGS[3]
        assert Hashing.recorded(tap) == hashing.record
        assert hashing.record is not None and verify(hashing.record)


@pytest.mark.kernel
@pytest.mark.bpf
@pytest.mark.parametrize("change", ["touch", "chmod"])
def test_a_changed_record_file_is_read_again(tap: TunTapDevice, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    with Hashing.enable(tap, CONFIGS[0], backend=Backend.EBPF) as hashing:
        hashing.reconfigure(CONFIGS[1])
        calls = Calls(monkeypatch)
        path = _record_path(tap)
        if change == "touch":
            stat = os.stat(path)
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
        else:
            os.chmod(path, 0o600 if os.stat(path).st_mode & 0o777 != 0o600 else 0o400)
        hashing.reconfigure(CONFIGS[2])
        assert (calls.reads, calls.sweeps) == (1, 0)
        hashing.reconfigure(CONFIGS[3])  # written by this object again: known once more
        assert (calls.reads, calls.sweeps) == (1, 0)
        assert Hashing.recorded(tap) == hashing.record


@pytest.mark.kernel
@pytest.mark.bpf
def test_a_record_written_by_another_object_still_stops_this_one(tap: TunTapDevice) -> None:
    first = Hashing.enable(tap, CONFIGS[0], backend=Backend.EBPF)
    first.reconfigure(CONFIGS[1])
    second = Hashing.adopt(tap)
    second.reconfigure(CONFIGS[2])
    with pytest.raises(BusyError):
        first.reconfigure(CONFIGS[3])
    first.close()
    assert Hashing.recorded(tap) == second.record
    second.close()
