"""Run the conformance rules on a kernel: natively, under the kernel emulator, or against the eBPF program."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from pytun_hash._abi import Revision
from pytun_hash.conformance.context import Context, Mode
from pytun_hash.conformance.rules import RULES, Rule, RuleResult, Status, select
from pytun_hash.device import NetworkNamespace
from pytun_hash.errors import PytunHashError, ValidationError, shorten

__all__ = ["SuiteResult", "run_suite"]


@attrs.frozen
class SuiteResult:
    """The suite's outcome on one kernel.

    Attributes:
        kernel: the running kernel's release (``uname -r``).
        mode: native, emulated or eBPF.
        revision: the revision under test (None in eBPF mode, and natively on a kernel without the ioctls).
        results: one result per rule run, in order.
    """

    kernel: str
    mode: Mode
    revision: Revision | None
    results: tuple[RuleResult, ...]

    @property
    def ok(self) -> bool:
        """True when no rule found a deviation."""
        return not any(r.status is Status.DEVIATION for r in self.results)

    def count(self, status: Status) -> int:
        """How many rules ended with ``status``."""
        return sum(r.status is status for r in self.results)

    def to_mapping(self) -> dict[str, Any]:
        """The JSON document: ``ok``, ``kernel``, ``revision``, ``mode``, ``rules``."""
        return {
            "ok": self.ok,
            "kernel": self.kernel,
            "revision": None if self.revision is None else self.revision.value,
            "mode": self.mode.value,
            "rules": [r.to_mapping() for r in self.results],
        }


def _run_rule(rule: Rule, ctx: Context) -> RuleResult:
    if ctx.mode is Mode.EBPF and rule.family == "uapi":
        return rule.result(Status.SKIP, "the eBPF backend has no hash ioctls: uapi rules need --revision or --emulate")
    if ctx.revision is None and ctx.mode is Mode.NATIVE:
        return rule.result(
            Status.SKIP, "this kernel answers none of the hash ioctls: run with --emulate R or --backend ebpf"
        )
    try:
        return rule.check(ctx)
    except (PytunHashError, OSError) as exc:
        # The rule expected the kernel to answer otherwise: what it got is the evidence.
        return rule.result(
            Status.DEVIATION,
            f"the rule could not complete: {shorten(str(exc), 200)}",
            error={"type": type(exc).__name__, "message": str(exc)},
        )


def _native_revision() -> Revision | None:
    """The revision the running kernel speaks, probed on a scratch device (None: no hash ioctls)."""
    from pytun_hash.device import TunTapDevice
    from pytun_hash.probe import refine_revision, tap_probe_hash

    with TunTapDevice.create("confprobe%d", queues=2, vnet_hdr=True) as device:
        found = tap_probe_hash(device).revision
    return refine_revision(found)


def run_suite(
    mode: Mode,
    *,
    revision: Revision | None = None,
    rules: Iterable[str] | None = None,
    progress: Callable[[Rule, RuleResult], None] | None = None,
) -> SuiteResult:
    """Run the rules selected by ``rules`` (shell patterns; all by default) in a private network namespace.

    Args:
        mode: ``NATIVE`` (the running kernel's ioctls; ``revision`` says which revision's UAPI
            to hold it to, default: the one it answers), ``EMULATED`` (``revision`` under
            :class:`~pytun_hash.testing.KernelEmulator`, data path included) or ``EBPF`` (the
            generated steering program; uapi rules are skipped).
        revision: see ``mode``; required for ``EMULATED``.
        rules: shell-style patterns of rule ids (``uapi.*``, ``data.toeplitz``).
        progress: called after each rule with its result.

    Raises:
        ValidationError: for a pattern that matches no rule, or ``EMULATED`` without a revision.
        PrivilegeError, KernelError: when the namespace or the devices cannot be made (root needed).
        EmulatorError: when the emulator cannot start (no seccomp user notification).
    """
    # The rule modules register themselves when imported.
    from pytun_hash.conformance import data, uapi  # noqa: F401

    chosen = select(rules, RULES)
    if mode is Mode.EMULATED and revision is None:
        raise ValidationError("revision", "the emulated mode needs the revision to emulate")
    kernel = os.uname().release

    def body() -> SuiteResult:
        with NetworkNamespace(ipv6=True) as ns:
            under_test = revision
            if mode is Mode.NATIVE and under_test is None:
                under_test = _native_revision()
            ctx = Context(mode, None if mode is Mode.EBPF else under_test, ns)
            results = []
            for rule in chosen:
                result = _run_rule(rule, ctx)
                results.append(result)
                if progress is not None:
                    progress(rule, result)
        return SuiteResult(kernel, mode, ctx.revision, tuple(results))

    if mode is Mode.EMULATED:
        # The test kit is only loaded for this mode.
        from pytun_hash.testing import KernelEmulator

        assert revision is not None
        with KernelEmulator(revision, timeout=120.0) as emu:
            return emu.run(body)
    return body()
