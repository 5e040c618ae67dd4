"""SIGINT and SIGTERM in the command line: exit 130 or 143, one line on stderr, nothing left behind.

:func:`pytun_hash.cli.main` installs :class:`Interrupts` before it imports anything else. The handlers
raise ``KeyboardInterrupt`` (SIGINT) or :class:`~pytun_hash.errors.Terminated` (SIGTERM, itself a
``KeyboardInterrupt``) in the main thread, so every ``with`` and ``finally`` on the way out runs: devices
are closed, namespaces left, BPF objects released, records and locks given back, files closed.

Three rules keep that unwinding whole:

* **One interruption at a time.** While an interruption unwinds (it is the exception being handled, or
  one in its chain), a further signal is noted and not raised: a second Ctrl-C cannot cut a cleanup
  short. If an interruption was swallowed and the program goes on, the next signal raises again.
* **Steps that must not stop half-way.** :class:`deferred` holds signals back while a block runs, and
  raises the interruption when it ends; :class:`guarded` builds and enters a context manager as one such
  step and exits it as another, so it is either not entered at all or entered and exited.
* **The outcome is decided once.** Whatever reaches ``main`` (an error a cleanup raised instead of the
  interruption included), a signal received before the process ends makes the exit status 128 + its
  number. Once ``main`` has returned, the handler flushes stdout and stderr and ends the process at once
  with that status: nothing is left to unwind.

A signal can land where Python lets no exception out: in a weakref callback or a ``__del__``, which the
import system and the garbage collector run at any point. Python drops what is raised there, with an
"Exception ignored" traceback; while the handlers are installed, that interruption is taken from
``sys.unraisablehook`` instead, and the signal delivered again a moment later, where it can raise.

Python runs signal handlers in the main thread only, so all of this is about the main thread;
:class:`deferred` and :class:`guarded` hold nothing back in other threads (none is interrupted there).
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import FrameType, TracebackType
from typing import Generic, TypeVar

from pytun_hash.errors import Terminated

__all__ = ["SIGNALS", "Interrupts", "deferred", "exit_status", "guarded", "interruption", "unwinding"]

T = TypeVar("T")

#: The signals :class:`Interrupts` handles.
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def exit_status(signum: int) -> int:
    """The exit status for a process ended by ``signum``, as a shell reports it: 128 + its number."""
    return 128 + signum


def interruption(signum: int) -> KeyboardInterrupt:
    """The exception ``signum`` raises: ``KeyboardInterrupt`` for SIGINT, :class:`~pytun_hash.errors.Terminated`
    for the others."""
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def unwinding() -> bool:
    """True while an interruption unwinds in the calling thread: it is the exception being handled (in an
    ``except`` or ``finally`` block or an ``__exit__``), or one the exception being handled replaced."""
    exc = sys.exception()
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


class _State:
    """What the handler of the running ``main()`` shares with :class:`deferred` (one per process)."""

    def __init__(self) -> None:
        self.active: Interrupts | None = None
        self.depth = 0
        self.pending: int | None = None


_STATE = _State()


def _in_main_thread() -> bool:
    active = _STATE.active
    return active is not None and _thread.get_ident() == active.thread


class Interrupts:
    """SIGINT and SIGTERM handling for one run of the command line (see the module documentation).

    Args:
        owns_process: the process ends when the run ends (the console script, ``python -m``): an
            interrupted run ends the process in :meth:`finish`, and after it a signal ends the process
            at once. Otherwise (``main`` called by a program or a test) :meth:`finish` puts the
            previous handlers back.

    Attributes:
        received: the first signal received since :meth:`install`, or None.
        reported: a line about the outcome (an error, or the interruption) is on stderr already.
        deciding: the run's outcome is being reported: a signal is only noted (it still sets the exit
            status), so the report is never cut short. An attribute, not a method, so that setting it
            first thing in an ``except`` block leaves no point where a signal could raise before it.
    """

    def __init__(self, *, owns_process: bool) -> None:
        self.owns_process = owns_process
        self.received: int | None = None
        self.reported = False
        self.thread = _thread.get_ident()
        self.deciding = False
        self._previous: dict[int, _Handler] = {}
        self._previous_unraisable = sys.unraisablehook
        self._in_hook = False
        self._resend_lock = _thread.allocate_lock()
        self._final: int | None = None
        self._report: Callable[[int], None] = lambda signum: None

    def install(self) -> bool:
        """Install the handlers; False (nothing installed) outside the main thread or inside another run.

        Raises:
            OSError: when ``sigaction`` fails (it does not for these signals).
        """
        if _STATE.active is not None:
            return False
        try:
            previous: dict[int, _Handler] = {signum: signal.signal(signum, self._handle) for signum in SIGNALS}
        except ValueError:  # not the main thread: Python delivers signals to the main thread only
            return False
        self._previous = previous
        self._previous_unraisable = sys.unraisablehook
        sys.unraisablehook = self._unraisable
        self.thread = _thread.get_ident()
        _STATE.active = self
        _STATE.depth = 0
        _STATE.pending = None
        return True

    def finish(self, code: int, report: Callable[[int], None]) -> int:
        """End the run: the exit status, ``code`` unless a signal came (then 128 + its number, and
        ``report(signum)`` says so on stderr unless :attr:`reported`).

        With ``owns_process``, an interrupted run ends the process here (stdout and stderr flushed):
        everything it made has unwound, and Python's own shutdown could only change the status (on
        3.11 a ``KeyboardInterrupt`` that once left an ``eval`` of a string, as ``namedtuple`` runs
        while a module imports, makes the interpreter kill itself with SIGINT at exit). After an
        uninterrupted run a signal ends the process at once (``owns_process``), or the previous
        handlers are back (otherwise).
        """
        self.deciding = True
        self._report = report
        seen: int | None = None
        while True:
            seen = self.received
            if seen is not None:
                code = exit_status(seen)
                self._say(seen)
                if self.owns_process:
                    self._end_now()
            if self.owns_process:
                # From here the handler ends the process itself, with this status.
                self._final = code
            elif _STATE.active is self:
                self._restore()
            # A signal noted after `seen` was read, and before the line above took effect, decides too.
            if self.received == seen:
                return code

    def _say(self, signum: int) -> None:
        if not self.reported:
            self.reported = True
            # A closed or full stderr cannot change the exit status.
            with contextlib.suppress(Exception):
                self._report(signum)

    def _restore(self) -> None:
        with self._resend_lock:
            for signum, handler in self._previous.items():
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
            if sys.unraisablehook == self._unraisable:
                sys.unraisablehook = self._previous_unraisable
            _STATE.active = None
        _STATE.depth = 0
        _STATE.pending = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
        if self._final is not None:
            self._end_now()
        if self.deciding:
            return
        if self._in_hook:
            self._redeliver(signum)
            return
        if _STATE.depth:
            if not unwinding() and _STATE.pending is None:
                _STATE.pending = signum
            return
        if unwinding():
            return
        raise interruption(signum)

    def _unraisable(self, unraisable: sys.UnraisableHookArgs) -> None:
        """``sys.unraisablehook`` while installed: an interruption raised where Python cannot let an
        exception out (a weakref callback, a ``__del__``: the import system and the garbage collector run
        them at any point) was dropped there; instead of its traceback, it is delivered again."""
        exc = unraisable.exc_value
        if _STATE.active is not self or not isinstance(exc, KeyboardInterrupt):
            self._previous_unraisable(unraisable)
            return
        self._in_hook = True
        try:
            self._redeliver(exc.signum if isinstance(exc, Terminated) else signal.SIGINT)
        finally:
            self._in_hook = False

    def _redeliver(self, signum: int) -> None:
        """Send ``signum`` to the main thread again, from a helper thread, once it has left this place."""
        import threading

        def send() -> None:
            # Not once the outcome is being reported (the signal is noted already), nor after the
            # previous handlers are back (they would get it): _restore takes the same lock.
            with self._resend_lock, contextlib.suppress(OSError, ValueError):
                if _STATE.active is self and not self.deciding:
                    signal.pthread_kill(self.thread, signum)

        timer = threading.Timer(0.001, send)
        timer.daemon = True
        timer.start()

    def _end_now(self) -> None:
        """``main`` has returned: say so if nothing did, flush what was written, and end the process."""
        assert self.received is not None
        self._say(self.received)
        for stream in (sys.stdout, sys.stderr):
            # Interrupted inside a write of that stream, or closed: nothing more can be done for it.
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(exit_status(self.received))


class deferred:  # noqa: N801 - used like a function: `with deferred():`
    """Hold SIGINT and SIGTERM back in the main thread while the block runs (context manager; nests).

    A signal that comes meanwhile is raised as its interruption when the outermost block ends, unless an
    interruption is unwinding already. Only the handlers :class:`Interrupts` installed hold back; without
    them (a program using the library, another thread), nothing changes.

    Raises:
        KeyboardInterrupt: (:class:`~pytun_hash.errors.Terminated` for SIGTERM) when the outermost block
            ends after a signal came during it.
    """

    def __init__(self) -> None:
        self._active = False

    def __enter__(self) -> deferred:
        self._active = _in_main_thread()
        if self._active:
            _STATE.depth += 1
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._active:
            return
        self._active = False
        _STATE.depth -= 1
        if _STATE.depth or _STATE.pending is None:
            return
        signum, _STATE.pending = _STATE.pending, None
        if isinstance(exc, KeyboardInterrupt) or unwinding():
            return  # the interruption on its way out stands for this signal too
        raise interruption(signum) from exc


class guarded(Generic[T]):  # noqa: N801 - used like a function: `with guarded(factory) as x:`
    """A context manager built, entered and left so that SIGINT and SIGTERM cannot leave it half done.

    ``factory()`` builds it and its ``__enter__`` runs in one :class:`deferred` step; its ``__exit__`` in
    another. A signal during the first is raised only after the context manager was left again (the
    ``with`` body never runs); so it is either not entered at all, or entered and exited.

    Args:
        factory: builds the context manager (``lambda: TunTapDevice.create("tap%d")``).

    Raises:
        KeyboardInterrupt: (:class:`~pytun_hash.errors.Terminated` for SIGTERM) on entry, after leaving
            the context manager again, or on exit, after leaving it, when a signal came meanwhile; and
            whatever ``factory``, its ``__enter__`` or its ``__exit__`` raise.
    """

    def __init__(self, factory: Callable[[], AbstractContextManager[T]]) -> None:
        self._factory = factory
        self._cm: AbstractContextManager[T] | None = None

    def __enter__(self) -> T:
        hold = deferred().__enter__()
        try:
            cm = self._factory()
            value = cm.__enter__()
        except BaseException:
            hold.__exit__(*sys.exc_info())
            raise
        try:
            # Raises a signal that came while entering; as late as here, it is caught below all the same.
            hold.__exit__(None, None, None)
            self._cm = cm
            return value
        except BaseException:
            self._cm = None
            cm.__exit__(*sys.exc_info())
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        cm, self._cm = self._cm, None
        if cm is None:
            return None
        with deferred():
            return cm.__exit__(exc_type, exc, tb)
