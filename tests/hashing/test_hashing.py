"""``Hashing``, the one entry: records, pins and the device lock shared by every process.

Cross-process cases run real child processes in the test's private namespace (root, ``kernel``
and ``bpf``); the native backend runs under the seccomp kernel emulator; what needs no kernel
runs on a ``FakeTunTap``.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import textwrap

import pytest

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    Backend,
    BusyError,
    Hashing,
    NotRecordedError,
    Revision,
    SteeringConflictError,
    ValidationError,
    VnetHashConfig,
    predict_queue,
)
from pytun_hash.device import TunTapDevice
from pytun_hash.hashing import StateLocation, verify
from pytun_hash.testing import FakeTunTap, KernelEmulator
from tests import tracking
from tests.bpf.frames import random_ethernet_frame

CONFIG = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, table_length=8)
OTHER = CONFIG.replace(indirection_table=(3, 2, 1, 0) * 2)

_PRELUDE = """
import sys
from pytun_hash import Backend, Hashing, VnetHashConfig
from pytun_hash.device import TunTapDevice
name = sys.argv[1]
"""


def _child(code: str, *args: str) -> str:
    """Run ``code`` (after a prelude naming the device ``name``) in a separate Python process."""
    run = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def _frames() -> list[bytes]:
    rng = random.Random(13)
    frames: list[bytes] = []
    while len(frames) < 32:
        frame = random_ethernet_frame(rng)
        if len(frame) >= 54:  # BPF_PROG_TEST_RUN refuses a cut IPv4/IPv6 header
            frames.append(frame)
    return frames


def _steers_as(hashing: Hashing, config: VnetHashConfig) -> None:
    """The attached program (reached through BPF_PROG_TEST_RUN) sends each frame where the model says."""
    rss = hashing.ebpf
    assert rss is not None
    for frame in _frames():
        assert rss.test_run(frame).retval == predict_queue(config, frame, 4)


@pytest.mark.kernel
@pytest.mark.bpf
def test_a_applies_b_adopts_and_reconfigures_in_place_c_removes(tap: TunTapDevice) -> None:
    _child(
        """
        with TunTapDevice.open(name) as dev:
            config = VnetHashConfig.round_robin(4, key=bytes.fromhex(sys.argv[2]), table_length=8)
            Hashing.enable(dev, config, backend=Backend.EBPF, owner="A").close(keep=True)
        """,
        tap.name,
        MICROSOFT_RSS_KEY.hex(),
    )
    recorded = Hashing.recorded(tap)
    assert recorded is not None and recorded.config == CONFIG and recorded.owner.name == "A"
    assert recorded.ebpf is not None and verify(recorded)
    with Hashing.adopt(tap, owner="B") as b:
        assert b.backend is Backend.EBPF and b.config == CONFIG and b.ebpf is not None
        assert b.ebpf.program.id == recorded.ebpf.program_id
        _steers_as(b, CONFIG)
        b.reconfigure(OTHER)
        _steers_as(b, OTHER)
        assert b.record is not None and b.record.owner.name == "B" and b.record.config == OTHER
        assert b.record.ebpf == recorded.ebpf  # in place: same program, same pins, new config map
        assert verify(b.record)
        b.close(keep=True)
    removed = _child(
        """
        with TunTapDevice.open(name) as dev:
            removal = Hashing.remove(dev)
            print(removal.record.owner.name, removal.record.config.indirection_table[0])
        """,
        tap.name,
    )
    assert removed == "B 3"
    assert Hashing.recorded(tap) is None
    assert not os.path.exists(recorded.ebpf.pin_dir)


@pytest.mark.kernel
@pytest.mark.bpf
def test_an_object_stops_acting_once_another_took_over(tap: TunTapDevice) -> None:
    first = Hashing.enable(tap, CONFIG, backend=Backend.EBPF)
    second = Hashing.adopt(tap)
    with pytest.raises(BusyError) as info:
        first.reconfigure(OTHER)
    assert "Hashing.adopt" in info.value.hint and "another process" in info.value.hint
    with pytest.raises(BusyError):
        first.disable()
    first.close()  # releases its fds only: the configuration is second's now
    assert second.record is not None and Hashing.recorded(tap) == second.record and verify(second.record)
    program = second.record.ebpf
    assert program is not None
    second.close()
    assert Hashing.recorded(tap) is None and not tap.steering.steering_attached
    assert not os.path.exists(program.pin_dir)


@pytest.mark.kernel
@pytest.mark.bpf
def test_enable_refuses_what_is_recorded_unless_replace(tap: TunTapDevice) -> None:
    with Hashing.enable(tap, CONFIG, backend=Backend.EBPF) as first:
        assert first.ebpf is not None
        with pytest.raises(SteeringConflictError) as info:
            Hashing.enable(tap, OTHER, backend=Backend.EBPF)
        assert "replace=True" in info.value.hint
        with Hashing.enable(tap, OTHER, backend=Backend.EBPF, replace=True) as second:
            assert second.ebpf is not None and second.ebpf.program.id == first.ebpf.program.id
            _steers_as(second, OTHER)
    # first's close found the device taken over and left it; second's took it off.
    assert Hashing.recorded(tap) is None and not tap.steering.steering_attached


@pytest.mark.kernel
@pytest.mark.bpf
def test_the_reporter_follows_every_reconfigure(tap: TunTapDevice) -> None:
    with Hashing.enable(tap, CONFIG.replace(report=True), backend=Backend.EBPF) as hashing:
        reporter = hashing.reporter
        assert reporter is not None and reporter.config == hashing.config
        hashing.reconfigure(OTHER.replace(report=True))
        assert hashing.reporter is reporter and reporter.config == OTHER.replace(report=True)
        hashing.reconfigure(OTHER)
        assert hashing.reporter is None


@pytest.mark.kernel
@pytest.mark.bpf
def test_report_only_needs_no_program_and_is_recorded(tap: TunTapDevice) -> None:
    with Hashing.enable(tap, CONFIG, backend=Backend.EBPF) as hashing:
        program = hashing.ebpf
        assert program is not None
        program_id = program.program.id
        hashing.reconfigure(CONFIG.replace(rss=False, report=True))
        assert hashing.ebpf is None and not tap.steering.steering_attached
        assert tracking.program_freed(program_id)
        record = hashing.record
        assert record is not None and record.backend == "ebpf" and record.ebpf is None
        assert not record.config.rss and record.config.report


@pytest.mark.kernel
def test_a_native_record_is_adopted_and_ownership_holds(tap: TunTapDevice) -> None:
    with KernelEmulator(Revision.V3) as emu:
        first = emu.run(Hashing.enable, tap, CONFIG)
        assert first.backend is Backend.NATIVE and first.revision is Revision.V3
        recorded = Hashing.recorded(tap)
        assert recorded is not None and (recorded.backend, recorded.revision) == ("native", Revision.V3)
        assert not verify(recorded)  # native configurations cannot be read back
        second = emu.run(Hashing.adopt, tap)
        assert second.config == CONFIG and second.revision is Revision.V3
        emu.run(second.reconfigure, OTHER)
        assert emu.device_state(tap.queues[0].fd).as_config() == OTHER
        with pytest.raises(BusyError):
            emu.run(first.reconfigure, CONFIG)
        assert emu.device_state(tap.queues[0].fd).as_config() == OTHER
        emu.run(first.close)
        emu.run(second.close)
        assert not emu.device_state(tap.queues[0].fd).as_config().enabled
    assert Hashing.recorded(tap) is None


@pytest.mark.kernel
def test_the_exclusion_holds_through_the_record(tap: TunTapDevice) -> None:
    """Native RSS recorded by one object refuses eBPF from another with EBUSY, and the reverse."""
    with KernelEmulator(Revision.V3) as emu:
        native = emu.run(Hashing.enable, tap, CONFIG)
        with pytest.raises(SteeringConflictError):
            emu.run(Hashing.enable, tap, CONFIG, backend=Backend.EBPF)
        emu.run(native.close)


def test_adopt_without_a_record_says_what_to_do(tap_or_skip: TunTapDevice) -> None:
    with pytest.raises(NotRecordedError) as info:
        Hashing.adopt(tap_or_skip)
    assert "Hashing.enable" in str(info.value)


@pytest.fixture
def tap_or_skip(tap: TunTapDevice) -> TunTapDevice:
    return tap


@pytest.mark.parametrize("backend", [Backend.NATIVE, Backend.EBPF])
def test_both_backends_check_the_report_header_first(backend: Backend) -> None:
    with FakeTunTap(Revision.V3) as fake:  # a 10-byte vnet header, as a new device has
        with pytest.raises(ValidationError) as info:
            Hashing.enable(fake, CONFIG.replace(report=True), backend=backend, revision=Revision.V3)
        assert info.value.field == "report" and "set_vnet_hdr_size(20)" in info.value.rule
        assert not fake.kernel_state().enabled and fake.attached_program is None


def test_a_device_the_kernel_lacks_keeps_no_record(state_roots: tuple[str, str]) -> None:
    with FakeTunTap(Revision.V3) as fake:
        hashing = Hashing.enable(fake, CONFIG)
        assert hashing.record is None and hashing.backend is Backend.NATIVE
        hashing.reconfigure(OTHER)
        assert fake.kernel_state().as_config() == OTHER
        hashing.close()
        assert not fake.kernel_state().enabled
    assert not os.path.exists(state_roots[0]) or not os.listdir(state_roots[0])
    assert StateLocation.from_environment().records == state_roots[0]


def test_state_location_from_the_environment() -> None:
    assert StateLocation.from_environment({}) == StateLocation("/run/pytun_hash", "/sys/fs/bpf")
    env = {"PYTUN_HASH_STATE_DIR": "/tmp/r", "PYTUN_HASH_BPFFS": "/tmp/b"}
    assert StateLocation.from_environment(env) == StateLocation("/tmp/r", "/tmp/b")
    with pytest.raises(ValidationError):
        StateLocation("relative")


@pytest.mark.kernel
@pytest.mark.bpf
def test_record_false_keeps_nothing_outside_the_process(tap: TunTapDevice, state_roots: tuple[str, str]) -> None:
    with Hashing.enable(tap, CONFIG, backend=Backend.EBPF, record=False) as hashing:
        assert hashing.record is None and hashing.ebpf is not None and hashing.ebpf.pins is None
        assert Hashing.recorded(tap) is None
        _steers_as(hashing, CONFIG)
        hashing.reconfigure(OTHER)
        _steers_as(hashing, OTHER)
    assert not tap.steering.steering_attached
    for root in state_roots:
        assert not os.path.exists(root) or not any(files for _, _, files in os.walk(root))
