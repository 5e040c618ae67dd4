"""Concurrency: 8 threads race apply, disable, steering attach and detach on one device, against the
emulated kernel of each revision: on a FakeTunTap (no privileges) and on a real TAP through the seccomp
emulator (``kernel``: the RFC and v3). At every instant (the emulator's state log has a snapshot after
every change) native RSS and a steering program are never both in force, the kernel never had to
resolve a conflict itself, nothing deadlocks, and at the end the binding's record is the kernel's.
"""

from __future__ import annotations

import itertools
import random
import threading
from collections import Counter
from collections.abc import Callable

import pytest

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    BusyError,
    HashControl,
    Revision,
    SteeringConflictError,
    VnetHashConfig,
)
from pytun_hash.bpf import EbpfRss, Program
from pytun_hash.device import DeviceMode, TunTapDevice
from pytun_hash.testing import KernelEmulator
from tests.hardening.test_bad_input import assert_binding_agrees
from tests.harness import MakeHarness

pytestmark = pytest.mark.filterwarnings("ignore::pytun_hash.HashControlWarning")

THREADS = 8
ITERATIONS = 250
#: Seconds the racing threads get before the test calls it a deadlock.
DEADLOCK_SECONDS = 60.0

RSS = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, table_length=16)
RSS_REPORT = RSS.replace(report=True)
REPORT_ONLY = VnetHashConfig(report=True, types=0x3F, key=MICROSOFT_RSS_KEY)


def _race(operations: dict[str, Callable[[], object]]) -> tuple[Counter[str], list[BaseException]]:
    """Run ``operations`` at random from THREADS threads, ITERATIONS each; count outcomes; fail on a deadlock."""
    outcomes: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)
    names = sorted(operations)

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            start.wait(timeout=10)
            for _ in range(ITERATIONS):
                name = rng.choice(names)
                try:
                    operations[name]()
                    outcome = f"{name}: ok"
                except SteeringConflictError:
                    outcome = f"{name}: conflict"
                except BusyError:
                    outcome = f"{name}: busy"
                with lock:
                    outcomes[outcome] += 1
        except BaseException as exc:
            errors.append(exc)

    # Started by the emulator's worker, these threads carry its seccomp filter and namespace.
    threads = [threading.Thread(target=worker, args=(seed,), name=f"race-{seed}") for seed in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=DEADLOCK_SECONDS)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"deadlock: {stuck} still running after {DEADLOCK_SECONDS:g} s"
    return outcomes, errors


#: Every revision without a kernel; on a real TAP under the seccomp emulator, the RFC (a conflict let
#: through would be resolved silently) and v3 (it would answer EBUSY).
RACES = [pytest.param("fake", r, id=f"fake-{r.value}") for r in Revision] + [
    pytest.param("kernel", r, id=f"kernel-{r.value}", marks=pytest.mark.kernel) for r in (Revision.RFC, Revision.V3)
]


@pytest.mark.parametrize(("where", "revision"), RACES)
def test_racing_apply_disable_attach_detach(make_harness: MakeHarness, where: str, revision: Revision) -> None:
    h = make_harness(where, revision, timeout=DEADLOCK_SECONDS + 30)
    tap, program = h.device, h.program()
    control = h.run(HashControl, tap, revision=revision)
    h.reset_log()
    operations: dict[str, Callable[[], object]] = {
        "apply rss": lambda: control.apply(RSS),
        "apply rss+report": lambda: control.apply(RSS_REPORT),
        "apply report": lambda: control.apply(REPORT_ONLY),
        "disable": control.disable,
        "attach": lambda: tap.attach_steering_program(program),
        "detach": tap.detach_steering_program,
    }
    outcomes, errors = h.run(_race, operations)
    assert not errors, errors
    snapshots = [state for _index, state in h.states]
    calls = list(h.calls)
    assert_binding_agrees(control, tap, h.state())
    # At every instant: never RSS and a steering program together ...
    both = [s for s in snapshots if s.rss and s.steering_attached]
    assert not both, f"{len(both)} snapshots with RSS and a steering program in force"
    # ... the RFC kernel never silently cleared RSS for an attach ...
    for before, after in itertools.pairwise(snapshots):
        assert not (before.rss and after.steering_attached), "the kernel resolved a conflict the binding let through"
    # ... and no kernel refused a call for a conflict (v3-v11 answer EBUSY).
    assert [c for c in calls if c.errno] == []
    assert sum(outcomes.values()) == THREADS * ITERATIONS
    # The race really raced: both sides were refused at times, and both got through at times.
    assert outcomes["apply rss: conflict"] + outcomes["apply rss+report: conflict"] > 0, outcomes
    assert outcomes["attach: conflict"] > 0 and outcomes["attach: ok"] > 0, outcomes
    assert len(snapshots) > THREADS * ITERATIONS // 4
    print(
        f"\n{where} {revision.value}: {THREADS} threads, {sum(outcomes.values())} operations, {len(calls)} trapped "
        f"calls, {len(snapshots)} state snapshots checked; {dict(outcomes)}"
    )


@pytest.mark.kernel
def test_racing_ebpf_rss_and_native_rss(tap: TunTapDevice, need_seccomp: None, program: Program) -> None:
    """The eBPF backend counts as a steering program: racing it against native RSS keeps them apart."""
    with EbpfRss.load(RSS, DeviceMode.TAP) as ebpf, KernelEmulator(Revision.V12, timeout=DEADLOCK_SECONDS + 30) as emu:
        control = emu.run(HashControl, tap, revision=Revision.V12)
        emu.reset_log()
        operations: dict[str, Callable[[], object]] = {
            "apply rss": lambda: control.apply(RSS),
            "disable": control.disable,
            "ebpf attach": lambda: ebpf.attach(tap),
            "ebpf detach": ebpf.detach,
        }
        outcomes, errors = emu.run(_race, operations)
        assert not errors, errors
        snapshots = [state for _index, state in emu.states]
        assert_binding_agrees(control, tap, emu.device_state(tap.queues[0].fd))
        # The eBPF instance and the device agree on whether the program is attached.
        assert (ebpf.device is tap) == tap.steering.steering_attached
        emu.run(ebpf.detach)
    assert outcomes["ebpf attach: ok"] > 0 and outcomes["apply rss: ok"] > 0, outcomes
    assert outcomes["ebpf attach: conflict"] + outcomes["apply rss: conflict"] > 0, outcomes
    assert not [s for s in snapshots if s.rss and s.steering_attached]
