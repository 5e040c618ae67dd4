"""One device with an emulated kernel behind it, reached two ways, for the tests of hash control.

* ``fake``: a :class:`~pytun_hash.testing.FakeTunTap`, whose hash ioctls the emulator's kernel logic
  answers in-process: no root, no seccomp, no ``bpf(2)``; steering programs are fake fd numbers.
* ``kernel``: a real TAP in the test's network namespace, its hash ioctls trapped by the seccomp
  :class:`~pytun_hash.testing.KernelEmulator` (root); steering programs are loaded for real.

Both answer with the same handlers and log alike (:attr:`Harness.calls`, :attr:`Harness.states`), so
a test written against :class:`Harness` runs on either. Parametrize it with :data:`FAKE` (everything
that needs no real kernel) or :data:`BOTH` (the representative cases that keep the seccomp path
covered); the ``kernel`` parameter carries the ``kernel`` mark and skips where that cannot run.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

import pytest

from pytun_hash import Revision, VnetHashCapability
from pytun_hash.bpf import Assembler, Program, Reg
from pytun_hash.device import NetworkNamespace, TunTapBase, TunTapDevice
from pytun_hash.testing import EmulatedCall, EmulatedHashState, EmulatorError, FakeTunTap, KernelEmulator

P = ParamSpec("P")
T = TypeVar("T")

FAKE = pytest.param("fake", id="fake")
KERNEL = pytest.param("kernel", id="kernel", marks=pytest.mark.kernel)
BOTH = [FAKE, KERNEL]

_FAKE_PROGRAMS = itertools.count(900)


class Harness(abc.ABC):
    """A device, the emulated kernel behind it, and a steering program for it.

    Attributes:
        where: ``"fake"`` or ``"kernel"``.
        revision: the emulated revision.
        device: the device (4 queues, a 20-byte vnet header unless asked otherwise).
    """

    where: str
    revision: Revision
    device: TunTapBase

    @abc.abstractmethod
    def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Call ``fn`` where the emulated kernel answers its hash ioctls."""

    @property
    @abc.abstractmethod
    def calls(self) -> list[EmulatedCall]:
        """Every trapped call since the last :meth:`reset_log`."""

    @property
    @abc.abstractmethod
    def states(self) -> list[tuple[int, EmulatedHashState]]:
        """``(call index, snapshot)`` after every call that changed a hash state."""

    @abc.abstractmethod
    def reset_log(self) -> None:
        """Forget the calls and states logged so far."""

    @abc.abstractmethod
    def state(self, device: TunTapBase | None = None) -> EmulatedHashState:
        """The hash state the emulated kernel holds for ``device`` (default: :attr:`device`)."""

    @abc.abstractmethod
    def delete(self) -> None:
        """Delete :attr:`device` under its open queues (``ip link del``)."""

    @abc.abstractmethod
    def program(self) -> int:
        """The fd of a steering program for :attr:`device` (one per harness)."""

    @abc.abstractmethod
    def other_device(self, *, queues: int = 2, vnet_hdr: bool = True) -> contextlib.AbstractContextManager[TunTapBase]:
        """Another device of the same kind, behind the same kind of emulated kernel."""


class FakeHarness(Harness):
    where = "fake"

    def __init__(self, revision: Revision, device: FakeTunTap) -> None:
        self.revision = revision
        self.device = self.fake = device
        self._program = next(_FAKE_PROGRAMS)

    def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return fn(*args, **kwargs)

    @property
    def calls(self) -> list[EmulatedCall]:
        return self.fake.calls

    @property
    def states(self) -> list[tuple[int, EmulatedHashState]]:
        return self.fake.states

    def reset_log(self) -> None:
        self.fake.reset_log()

    def state(self, device: TunTapBase | None = None) -> EmulatedHashState:
        device = device or self.device
        assert isinstance(device, FakeTunTap)
        return device.kernel_state()

    def delete(self) -> None:
        self.fake.delete()

    def program(self) -> int:
        return self._program

    @contextlib.contextmanager
    def other_device(self, *, queues: int = 2, vnet_hdr: bool = True) -> Iterator[TunTapBase]:
        with FakeTunTap(self.revision, name="fake1", queues=queues, vnet_hdr=vnet_hdr) as other:
            yield other


class EmulatorHarness(Harness):
    where = "kernel"

    def __init__(
        self,
        revision: Revision,
        device: TunTapDevice,
        emu: KernelEmulator,
        netns: NetworkNamespace,
        stack: contextlib.ExitStack,
    ) -> None:
        self.revision = revision
        self.device = self.tap = device
        self.emu = emu
        self.netns = netns
        self._stack = stack
        self._program: Program | None = None

    def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.emu.run(fn, *args, **kwargs)

    @property
    def calls(self) -> list[EmulatedCall]:
        return self.emu.calls

    @property
    def states(self) -> list[tuple[int, EmulatedHashState]]:
        return self.emu.states

    def reset_log(self) -> None:
        self.emu.reset_log()

    def state(self, device: TunTapBase | None = None) -> EmulatedHashState:
        device = device or self.device
        assert isinstance(device, TunTapDevice)
        if device.queues:
            with contextlib.suppress(EmulatorError):  # deleted: look it up by name instead
                return self.emu.device_state(device.queues[0].fd)
        return self.emu.device_state(device.name)

    def delete(self) -> None:
        self.netns.delete_link(self.device.name)

    def program(self) -> int:
        if self._program is None:
            code = Assembler().mov64_imm(Reg.R0, 0).exit().assemble()
            self._program = self._stack.enter_context(Program.load(code, name="harness_q0"))
        return self._program.fd

    @contextlib.contextmanager
    def other_device(self, *, queues: int = 2, vnet_hdr: bool = True) -> Iterator[TunTapBase]:
        with TunTapDevice.create("hd%d", queues=queues, vnet_hdr=vnet_hdr) as other:
            yield other


MakeHarness = Callable[..., Harness]


@pytest.fixture
def make_harness() -> Iterator[MakeHarness]:
    """``make_harness(where, revision, *, queues=4, vnet_hdr_size=20, capability=None, data_path=None)``.

    ``vnet_hdr_size=None`` leaves the device's default (10 bytes); ``data_path`` and ``timeout`` are
    the emulator's (the fake has neither). ``kernel`` harnesses share one network namespace per test,
    entered on the test's thread.
    """
    with contextlib.ExitStack() as stack:
        namespaces: list[NetworkNamespace] = []

        def namespace() -> NetworkNamespace:
            # Entered first and left last: the devices and the emulator are gone before the namespace.
            if not namespaces:
                namespaces.append(stack.enter_context(NetworkNamespace(ipv6=False)))
            return namespaces[0]

        def make(
            where: str,
            revision: Revision,
            *,
            queues: int = 4,
            vnet_hdr_size: int | None = 20,
            capability: VnetHashCapability | None = None,
            data_path: bool | None = None,
            timeout: float = 10.0,
        ) -> Harness:
            harness: Harness
            if where == "fake":
                fake = stack.enter_context(FakeTunTap(revision, queues=queues, capability=capability))
                harness = FakeHarness(revision, fake)
            else:
                netns = namespace()
                tap = stack.enter_context(TunTapDevice.create("hd%d", queues=queues, vnet_hdr=True))
                emu = stack.enter_context(
                    KernelEmulator(revision, capability=capability, data_path=data_path, timeout=timeout)
                )
                harness = EmulatorHarness(revision, tap, emu, netns, stack)
            if vnet_hdr_size is not None:
                harness.device.set_vnet_hdr_size(vnet_hdr_size)
            return harness

        yield make
