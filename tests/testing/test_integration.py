"""The emulator as a referee: the codec's plans and the binding's hash control, run against it.

The plans run against the kernel logic on a FakeTunTap for every revision and through the seccomp
emulator for two; hash control runs unmodified through the seccomp emulator for every revision (its
fake-device counterparts are in tests/hashctl).
"""

from __future__ import annotations

import errno

import pytest
from hypothesis import HealthCheck, given, settings

from pytun_hash._abi import Revision, hash_ioctls
from pytun_hash.codec import ioctl_plan, kernel_read_length
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.device.hashctl import HashControl
from pytun_hash.device.netns import NetworkNamespace
from pytun_hash.device.tap import TunTapDevice
from pytun_hash.testing import EmulatedHashState, KernelEmulator
from tests.codec.strategies import configs
from tests.testing.bench import FAKE, MakeBench
from tests.testing.helpers import TUNSETVNETHDRSZ


def held(state: EmulatedHashState, config: VnetHashConfig, revision: Revision) -> bool:
    """Whether ``state`` holds ``config`` as far as ``revision``'s kernel keeps it."""
    if revision is Revision.RFC or config.rss:
        # The RFC stores every field of every call; v3+ store table, key and queue with RSS.
        return state.as_config() == config
    types = int(config.types) if (config.report or revision.abi is Revision.V3) else 0
    return (state.rss, state.report, state.types) == (False, config.report, types)


_PLANS = [pytest.param("fake", r, id=f"fake-{r.value}") for r in Revision] + [
    # Through the seccomp emulator: the RFC's and v12's structures (v3-v11 share the RFC's path).
    pytest.param("kernel", r, id=f"kernel-{r.value}", marks=pytest.mark.kernel) for r in (Revision.RFC, Revision.V12)
]


@pytest.mark.parametrize(("where", "revision"), _PLANS)
def test_codec_plans_put_the_config_in_force(make_bench: MakeBench, where: str, revision: Revision) -> None:
    """Every call of ioctl_plan is read exactly as kernel_read_length says, and the result is the config."""
    b = make_bench(where, revision)
    assert b.device_set_int(TUNSETVNETHDRSZ, 20) == 0
    calls_before = len(b.calls)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(config=configs(ipv4_types_when_rss=revision is not Revision.RFC))
    def check(config: VnetHashConfig) -> None:
        start = len(b.calls)
        plan = ioctl_plan(config, revision)
        for call in plan:
            assert b.ioctl(call.request, bytearray(call.payload)) == 0
        seen = b.calls[start:]
        assert [c.name for c in seen] == [c.name for c in plan]
        for call, got in zip(plan, seen, strict=True):
            assert got.bytes_read == kernel_read_length(revision, call.name, call.payload)
        assert held(b.state(), config, revision)

    check()
    assert len(b.calls) > calls_before


@pytest.mark.parametrize("where", [FAKE])
def test_rfc_ipv6_only_plan_leaves_the_whole_key_in_force(make_bench: MakeBench, where: str) -> None:
    """The binding always loads the whole key: the plan first loads all 40 bytes, then sends the IPv6-only call."""
    config = VnetHashConfig(rss=True, types=0x38, indirection_table=(0, 1), key=MICROSOFT_RSS_KEY)
    b = make_bench(where, Revision.RFC)
    # Make the key bytes beyond 4 stale first, as an earlier user of the device would.
    other = VnetHashConfig(rss=False, types=0x3F, key=bytes(range(40)))
    for call in [*ioctl_plan(other), *ioctl_plan(config)]:
        assert b.ioctl(call.request, bytearray(call.payload)) == 0
    state = b.state()
    assert state.key == MICROSOFT_RSS_KEY and state.key_loaded == 4
    # Sending only the final call would have left bytes 4..39 of the other key in force.
    assert [s.key_loaded for _, s in b.states] == [40, 40, 4]


@pytest.mark.kernel
# The RFC's and v12's ioctls; v3-v11 run the same path, and tests/testing/test_fake.py runs hash control
# through the seccomp emulator on every revision, comparing it call by call with the fake.
@pytest.mark.parametrize("revision", [Revision.RFC, Revision.V12])
def test_hash_control_runs_unmodified_against_the_emulator(revision: Revision, netns: NetworkNamespace) -> None:
    config = VnetHashConfig(rss=True, report=True, types=0x3F, indirection_table=(0, 1, 1, 0), key=MICROSOFT_RSS_KEY)
    with TunTapDevice.create("emuhc%d", queues=2) as device, KernelEmulator(revision) as emu:
        device.set_vnet_hdr_size(20)
        control = emu.run(HashControl, device)  # probes V12, V3, RFC: only `revision` answers
        # v10-v11 share v3's numbers: a probe cannot tell them apart and names the older one.
        assert control.revision is revision.abi
        emu.run(control.apply, config)
        state = emu.device_state(device.attached_queues[0].fd)
        assert state.as_config() == config
        emu.run(control.disable)
        assert not emu.device_state(device.attached_queues[0].fd).enabled
        # The probe's other revisions were answered EINVAL by the emulator; this one's succeeded.
        own = [c for c in emu.calls if "[" not in c.name]
        assert own[0].name == hash_ioctls(revision)[0].name and own[0].errno == 0
        assert all(c.errno == errno.EINVAL for c in emu.calls[: emu.calls.index(own[0])])
