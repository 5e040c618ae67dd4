"""What every fuzz target checks: only pytun_hash's own errors escape, each one says something, and nothing hangs.

A target calls the code under test through :func:`call`, which

* returns an :class:`Outcome`: the result, or the :class:`~pytun_hash.errors.PytunHashError` the
  code raised (after checking that the error names what went wrong: a non-empty message; a rule
  for validation errors; an errno, request and hint for kernel errors);
* lets every other exception through, which fails the example (hypothesis then shrinks it);
* fails the example with :class:`Hang` when the call runs longer than :data:`HANG_SECONDS`
  (a ``SIGALRM`` watchdog; pytest runs tests in the main thread, where the signal lands).
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Generic, ParamSpec, TypeVar, cast

from pytun_hash.errors import KernelError, PytunHashError, ValidationError

P = ParamSpec("P")
T = TypeVar("T")

#: Wall-clock seconds one call may take before it counts as a hang. The slowest target (a CLI
#: command reading a 1 MiB file) takes well under a second.
HANG_SECONDS = 10.0


class Hang(Exception):  # noqa: N818 - the name is what the failure report should say
    """A fuzzed call ran longer than :data:`HANG_SECONDS`."""


@contextlib.contextmanager
def watchdog(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise :class:`Hang` in the calling (main) thread when the block runs longer than ``seconds``."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; pytest never runs tests elsewhere
        return

    fired: list[bool] = []

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        fired.append(True)
        raise Hang(f"the call did not return within {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    # The handler can run where Python drops what it raises (a garbage-collector callback, a
    # __del__): the long campaign once lost a Hang that way. The call returned, but too late.
    if fired:
        raise Hang(f"the call did not return within {seconds:g} s (the alarm was raised where Python drops it)")


def check_error(exc: PytunHashError) -> None:
    """Fail unless ``exc`` says what went wrong (and, for kernel errors, what to do)."""
    assert str(exc).strip(), f"{type(exc).__name__} with an empty message"
    if isinstance(exc, ValidationError):
        assert exc.rule.strip(), f"{type(exc).__name__} without a rule"
    if isinstance(exc, KernelError):
        assert isinstance(exc.errno, int) and exc.errno > 0, f"{exc!r} carries no errno"
        assert exc.request and exc.hint.strip(), f"{exc!r} lacks a request name or a hint"


@dataclasses.dataclass(frozen=True)
class Outcome(Generic[T]):
    """What one call did: returned ``value`` (``error`` None), or raised ``error``."""

    value: T | None
    error: PytunHashError | None

    @property
    def ok(self) -> bool:
        """Whether the call returned."""
        return self.error is None

    def get(self) -> T:
        """The value of a call that returned (fails the example otherwise)."""
        assert self.error is None, f"the call raised {self.error!r}"
        return cast(T, self.value)


def call(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Outcome[T]:
    """Run ``fn(*args, **kwargs)`` under the watchdog; an error of the package's own is caught, checked and returned."""
    with watchdog():
        try:
            return Outcome(fn(*args, **kwargs), None)
        except PytunHashError as exc:
            check_error(exc)
            return Outcome(None, exc)
