"""Fixtures of the hardening tests: probes for seccomp and bpf(2), a TAP in the test's namespace,
a trivial steering program, and a guard that fails any syscall a refusal should not need."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import socket
from collections.abc import Iterator

import pytest

from pytun_hash import _sys
from pytun_hash.bpf import Assembler, Program, Reg
from pytun_hash.errors import PytunHashError
from pytun_hash.testing import EmulatorError, KernelEmulator


@functools.cache
def seccomp_skip_reason() -> str | None:
    """Why the seccomp emulator cannot run here, or None."""
    try:
        KernelEmulator().close()
    except EmulatorError as exc:
        return f"seccomp user notification unavailable: {exc}"
    return None


@functools.cache
def bpf_skip_reason() -> str | None:
    """Why socket-filter programs cannot be loaded here, or None."""
    try:
        trivial_program().close()
    except PytunHashError as exc:
        return f"bpf(BPF_PROG_LOAD) refused (needs CAP_BPF or root): {exc}"
    return None


def trivial_program() -> Program:
    """A loaded ``r0 = 0; exit`` socket filter (steers everything to queue 0)."""
    return Program.load(Assembler().mov64_imm(Reg.R0, 0).exit().assemble(), name="hardening_q0")


@pytest.fixture
def need_seccomp() -> None:
    reason = seccomp_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def program() -> Iterator[Program]:
    """A trivial steering program (skips where bpf(2) is refused)."""
    reason = bpf_skip_reason()
    if reason:
        pytest.skip(reason)
    with trivial_program() as prog:
        yield prog


@contextlib.contextmanager
def no_syscalls() -> Iterator[None]:
    """Fail the test if the block opens a file, issues an ioctl, opens a socket, calls bpf(2) (or any raw
    syscall) or changes namespaces.

    A refusal of bad input must come before any of these: the guards replace the functions every
    kernel-facing path of pytun_hash goes through.
    """

    def guard(name: str) -> object:
        def refuse(*args: object, **kwargs: object) -> object:
            raise AssertionError(f"{name} was called although the input should have been refused first")

        return refuse

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "open", guard("os.open"))
        patch.setattr(fcntl, "ioctl", guard("ioctl"))
        patch.setattr(socket, "socket", guard("socket"))
        patch.setattr(_sys, "_SYSCALL", guard("syscall(2): bpf, seccomp, pidfd_getfd"))
        patch.setattr(_sys, "_SETNS", guard("setns"))
        patch.setattr(_sys, "_UNSHARE", guard("unshare"))
        yield
