"""The layered steering policy (v10+, opt-in): native RSS in force under a steering program.

On a FakeTunTap for v10-v11 and v12, and on a real TAP under the seccomp KernelEmulator for v12
(``kernel``, with a real fallback program): both orders are allowed and the emulated kernel then
holds both. The strict default still refuses with ``EBUSY``; the RFC and v3-v9 refuse the policy.
"""

from __future__ import annotations

import contextlib
import errno

import pytest

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    Revision,
    SteeringConflictError,
    SteeringPolicy,
    ValidationError,
    VnetHashConfig,
)
from pytun_hash.bpf import PortRule, load_fallback_program
from pytun_hash.device import SteeringState
from pytun_hash.device.hashctl import HashControl
from pytun_hash.testing import FakeTunTap
from tests.harness import FAKE, KERNEL, Harness, MakeHarness

KEY = MICROSOFT_RSS_KEY
PRECEDENCE = [
    pytest.param(FAKE.values[0], Revision.V10, id="fake-v10"),
    pytest.param(FAKE.values[0], Revision.V12, id="fake-v12"),
    pytest.param(KERNEL.values[0], Revision.V12, id="kernel-v12", marks=[*KERNEL.marks, pytest.mark.bpf]),
]


def _program(h: Harness, stack: contextlib.ExitStack) -> int:
    if h.where == "fake":
        return h.program()
    rules = [PortRule(frozenset({443}), queue=1)]
    return stack.enter_context(load_fallback_program(rules)).fd


@pytest.mark.parametrize(("where", "revision"), PRECEDENCE)
def test_layered_allows_rss_under_an_attached_program(
    make_harness: MakeHarness, where: str, revision: Revision
) -> None:
    h = make_harness(where, revision)
    dev = h.device
    with contextlib.ExitStack() as stack:
        program = _program(h, stack)
        control = h.run(HashControl, dev, revision=revision)
        dev.steering.set_policy(SteeringPolicy.LAYERED, revision)
        h.run(dev.attach_steering_program, program)
        config = VnetHashConfig.round_robin(4, key=KEY)
        h.run(control.apply, config)
        state = h.state()
        assert state.rss and state.steering_attached
        assert dev.steering.native_rss and dev.steering.steering_attached
        h.run(dev.detach_steering_program)
        h.run(control.disable)


@pytest.mark.parametrize(("where", "revision"), PRECEDENCE)
def test_layered_allows_a_program_over_rss(make_harness: MakeHarness, where: str, revision: Revision) -> None:
    h = make_harness(where, revision)
    dev = h.device
    with contextlib.ExitStack() as stack:
        program = _program(h, stack)
        control = h.run(HashControl, dev, revision=revision)
        dev.steering.set_policy(SteeringPolicy.LAYERED, revision)
        h.run(control.apply, VnetHashConfig.round_robin(4, key=KEY, report=True))
        h.run(dev.attach_steering_program, program)
        state = h.state()
        assert state.rss and state.report and state.steering_attached
        # Back to strict: the next request is judged by the strict rule again.
        dev.steering.set_policy(SteeringPolicy.STRICT)
        h.run(dev.detach_steering_program)
        h.reset_log()
        with pytest.raises(SteeringConflictError) as info:
            h.run(dev.attach_steering_program, program)
        assert info.value.errno == errno.EBUSY and h.calls == []
        h.run(control.disable)


@pytest.mark.parametrize("revision", [Revision.V10, Revision.V12])
def test_strict_stays_the_default_and_refuses(revision: Revision) -> None:
    with FakeTunTap(revision) as dev:
        assert dev.steering.policy is SteeringPolicy.STRICT
        control = HashControl(dev, revision=revision)
        dev.attach_steering_program(901)
        with pytest.raises(SteeringConflictError) as info:
            control.apply(VnetHashConfig.round_robin(4, key=KEY))
        assert info.value.errno == errno.EBUSY
        assert not dev.kernel_state().rss


@pytest.mark.parametrize("revision", [Revision.RFC, Revision.V3])
def test_layered_is_refused_before_v10(revision: Revision) -> None:
    with FakeTunTap(revision) as dev:
        with pytest.raises(ValidationError) as info:
            dev.steering.set_policy(SteeringPolicy.LAYERED, revision)
        message = str(info.value)
        assert "v10 or later" in message and revision.value in message
        assert dev.steering.policy is SteeringPolicy.STRICT


def test_layered_needs_a_revision_and_a_policy_member() -> None:
    state = SteeringState()
    with pytest.raises(ValidationError, match="v10"):
        state.set_policy(SteeringPolicy.LAYERED)
    with pytest.raises(ValidationError, match="SteeringPolicy"):
        state.set_policy("layered")  # type: ignore[arg-type]
    state.set_policy(SteeringPolicy.LAYERED, Revision.V10)
    assert state.policy is SteeringPolicy.LAYERED and state.policy_revision is Revision.V10
    state.record_steering(5, "user")
    state.ensure_can_enable_native_rss()  # the policy's revision has precedence
    # A request named for a revision without precedence is still judged strictly.
    with pytest.raises(SteeringConflictError):
        state.ensure_can_enable_native_rss(revision=Revision.V3)
    state.set_policy(SteeringPolicy.STRICT)
    assert state.policy_revision is None
    with pytest.raises(SteeringConflictError):
        state.ensure_can_enable_native_rss()
