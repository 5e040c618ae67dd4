"""SIGINT and SIGTERM inside ``main()``: the exit status, the one line, what unwinds and what waits.

The command is replaced by one that signals its own process at a chosen point, so each rule of
:mod:`pytun_hash.cli.interrupts` is checked where it matters: in the command, in a cleanup, in a
step that must not stop half-way, while the result is printed, after the outcome was reported.
``tests/hardening/test_signals.py`` sends real signals to real processes at many points.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

import pytest

from pytun_hash.cli import interrupts, main
from pytun_hash.cli.interrupts import Interrupts, deferred, guarded
from pytun_hash.cli.output import ExitCode, Output
from pytun_hash.device.netns import call_on_thread
from pytun_hash.errors import KernelError, Terminated

HASH = ("hash", "--key", "microsoft", "--input", "00")


def signal_self(signum: int) -> None:
    """Send ``signum`` to this process and give the handler the chance to act (it raises, or notes)."""
    os.kill(os.getpid(), signum)
    for _ in range(100):  # the handler runs between bytecodes of the main thread, at the latest here
        time.sleep(0.001)


@pytest.fixture
def command(monkeypatch: pytest.MonkeyPatch) -> Callable[[Callable[[Any, Output], int]], None]:
    """``command(fn)``: ``pytun-hash hash`` runs ``fn(args, out)`` instead."""

    def use(fn: Callable[[Any, Output], int]) -> None:
        monkeypatch.setattr("pytun_hash.cli.hashcmd.run_hash", fn)

    return use


@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_ends_the_command(cli: Any, command: Any, signum: int, code: int, line: str) -> None:
    unwound: list[type[BaseException]] = []

    def run(args: Any, out: Output) -> int:
        try:
            signal_self(signum)
        except BaseException as exc:
            unwound.append(type(exc))
            raise
        raise AssertionError("the signal did not interrupt the command")

    command(run)
    done = cli(*HASH)
    assert done.code == code and done.err == f"pytun-hash: error: {line}\n" and done.out == ""
    assert unwound == [KeyboardInterrupt if signum == signal.SIGINT else Terminated]
    doc = cli(*HASH, "--json").json()
    assert doc["ok"] is False and doc["error"]["exit_code"] == code and doc["error"]["message"] == line
    assert doc["error"]["type"] == ("KeyboardInterrupt" if signum == signal.SIGINT else "Terminated")


def test_main_puts_the_previous_handlers_back(cli: Any, command: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the program's own main (the console script, python -m) keeps its handlers to the end."""
    before = {s: signal.getsignal(s) for s in interrupts.SIGNALS}
    hook = sys.unraisablehook
    command(lambda args, out: 0)
    assert cli(*HASH).code == 0
    monkeypatch.setattr(sys, "argv", ["pytun-hash", *HASH])
    assert main() == 0  # no argv, but this test run's __main__ is not pytun-hash's
    assert {s: signal.getsignal(s) for s in interrupts.SIGNALS} == before and sys.unraisablehook == hook
    assert interrupts._STATE.active is None


def test_an_error_raised_by_a_cleanup_instead_still_exits_130(cli: Any, command: Any) -> None:
    """The cause of most lost 130s: a cleanup that fails while the interruption unwinds replaces it."""

    def run(args: Any, out: Output) -> int:
        try:
            signal_self(signal.SIGINT)
        finally:
            raise KernelError(5, "close", "a cleanup that fails on its own")
        return 0

    command(run)
    done = cli(*HASH)
    assert done.code == 130 and done.err == "pytun-hash: error: interrupted\n"


def test_a_second_signal_does_not_cut_the_cleanup_short(cli: Any, command: Any) -> None:
    steps: list[str] = []

    def run(args: Any, out: Output) -> int:
        try:
            signal_self(signal.SIGINT)
        finally:
            steps.append("cleanup started")
            signal_self(signal.SIGTERM)  # noted while the first one unwinds
            steps.append("cleanup done")
        return 0

    command(run)
    done = cli(*HASH)
    assert steps == ["cleanup started", "cleanup done"]
    assert done.code == 130 and done.err.count("\n") == 1


def test_a_swallowed_interruption_still_sets_the_status_and_the_next_one_raises(cli: Any, command: Any) -> None:
    def run(args: Any, out: Output) -> int:
        with contextlib.suppress(KeyboardInterrupt):
            signal_self(signal.SIGINT)
        with pytest.raises(Terminated):
            signal_self(signal.SIGTERM)  # not unwinding any more: raised again
        return 0

    command(run)
    done = cli(*HASH)
    assert done.code == 130 and done.err == "pytun-hash: error: interrupted\n"


def test_an_interruption_dropped_in_a_weakref_callback_comes_again(cli: Any, command: Any) -> None:
    """Python drops (and prints as "Exception ignored") what a weakref callback or a ``__del__`` raises;
    the import system and the garbage collector run those at any point, so a signal can land there."""
    caught: list[str] = []

    class Thing:
        pass

    def run(args: Any, out: Output) -> int:
        thing = Thing()
        ref = weakref.ref(thing, lambda _: signal_self(signal.SIGTERM))
        try:
            del thing  # the callback runs here: the Terminated it raises goes nowhere
            for _ in range(10_000):
                time.sleep(0.001)  # ... and comes again here
        except Terminated:
            caught.append("delivered again")
            raise
        assert ref() is None
        return 0

    command(run)
    done = cli(*HASH)
    assert caught == ["delivered again"]
    assert done.code == 143 and done.err == "pytun-hash: error: terminated (SIGTERM)\n"


def test_a_signal_after_an_error_was_reported_adds_no_line(cli: Any, command: Any, monkeypatch: Any) -> None:
    real_error = Output.error

    def error(self: Output, exc: BaseException) -> ExitCode:
        code = real_error(self, exc)
        signal_self(signal.SIGTERM)  # only noted: the outcome is being reported
        return code

    monkeypatch.setattr(Output, "error", error)

    def run(args: Any, out: Output) -> int:
        raise KernelError(1, "TUNSETIFF", "be root")

    command(run)
    done = cli(*HASH)
    assert done.code == 143 and done.err.count("\n") == 1 and "TUNSETIFF" in done.err


def test_the_result_is_printed_whole_then_the_signal_counts(cli: Any, command: Any, monkeypatch: Any) -> None:
    real_dump = json.dump

    def dump(obj: Any, fp: Any, **kwargs: Any) -> None:
        if obj.get("ok") is True:
            signal_self(signal.SIGINT)  # in the middle of printing the document: held back
        real_dump(obj, fp, **kwargs)

    monkeypatch.setattr(json, "dump", dump)

    def run(args: Any, out: Output) -> int:
        out.result({"value": 1}, "one")
        return 0

    command(run)
    done = cli(*HASH, "--json")
    assert done.code == 130 and json.loads(done.out) == {"ok": True, "value": 1}  # no error document after it
    assert done.err == "pytun-hash: error: interrupted\n"


class _Resource:
    """A context manager that logs its life, and can signal the process while it enters or exits."""

    def __init__(self, log: list[str], *, signal_in: str = "") -> None:
        self.log = log
        self.signal_in = signal_in

    def __enter__(self) -> _Resource:
        self.log.append("enter")
        if self.signal_in == "enter":
            signal_self(signal.SIGINT)
        self.log.append("entered")
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None, tb: TracebackType | None) -> None:
        self.log.append("exit")
        if self.signal_in == "exit":
            signal_self(signal.SIGINT)
        self.log.append("exited")


@pytest.fixture
def handlers() -> Iterator[Interrupts]:
    """The CLI's handlers, as ``main()`` installs them, for the duration of the test."""
    handling = Interrupts(owns_process=False)
    assert handling.install()
    try:
        yield handling
    finally:
        handling.finish(0, lambda signum: None)


def test_guarded_enter_is_whole_and_left_again_when_interrupted(handlers: Interrupts) -> None:
    log: list[str] = []
    with pytest.raises(KeyboardInterrupt), guarded(lambda: _Resource(log, signal_in="enter")):
        log.append("body")
    assert log == ["enter", "entered", "exit", "exited"]  # entered whole, left again, body never ran


def test_guarded_exit_is_whole(handlers: Interrupts) -> None:
    log: list[str] = []
    with pytest.raises(KeyboardInterrupt), guarded(lambda: _Resource(log, signal_in="exit")):
        log.append("body")
    assert log == ["enter", "entered", "body", "exit", "exited"]


def test_deferred_nests_and_raises_once_at_the_outermost_end(handlers: Interrupts) -> None:
    log: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        with deferred():
            with deferred():
                signal_self(signal.SIGINT)
                log.append("inner done")
            log.append("outer done")
        log.append("not reached")
    assert log == ["inner done", "outer done"] and handlers.received == signal.SIGINT


def test_deferred_holds_nothing_without_the_handlers() -> None:
    """A program using the library keeps Python's own Ctrl-C: raised where it lands."""
    log: list[str] = []
    # Python's own handler, as such a program has it (whatever an earlier test left installed).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), deferred():
            signal.raise_signal(signal.SIGINT)
            log.append("not reached")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert log == []


def test_deferred_holds_nothing_in_other_threads(handlers: Interrupts) -> None:
    depth: list[int] = []

    def other() -> None:
        with deferred():
            depth.append(interrupts._STATE.depth)

    worker = threading.Thread(target=other)
    worker.start()
    worker.join()
    assert depth == [0]


def test_a_helper_thread_ends_before_the_interruption_passes_on(handlers: Interrupts) -> None:
    """run_in_netns and the probe: the caller's cleanup starts only once its helper thread has ended."""
    release = threading.Event()
    ended: list[bool] = []

    def helper() -> int:
        release.wait(60)
        ended.append(True)
        return 1

    threading.Timer(0.05, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    threading.Timer(0.2, release.set).start()
    with pytest.raises(KeyboardInterrupt):
        call_on_thread(helper, name="test-helper")
    assert ended == [True]


def test_terminated_is_an_interruption_and_travels(handlers: Interrupts) -> None:
    exc = pickle.loads(pickle.dumps(Terminated(signal.SIGTERM)))
    assert isinstance(exc, Terminated) and exc.signum == signal.SIGTERM
    assert isinstance(exc, KeyboardInterrupt) and not isinstance(exc, Exception)


def test_outside_the_main_thread_main_installs_nothing(cli: Any, command: Any) -> None:
    seen: list[Any] = []

    def run(args: Any, out: Output) -> int:
        seen.append(signal.getsignal(signal.SIGTERM))
        return 0

    command(run)
    worker = threading.Thread(target=lambda: seen.append(cli(*HASH).code))
    worker.start()
    worker.join()
    assert seen == [signal.getsignal(signal.SIGTERM), 0]
