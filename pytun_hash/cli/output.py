"""What the CLI prints: human text or JSON on stdout, one-line errors and progress on stderr, exit codes.

Exit codes (the same table is in ``pytun-hash --help``):

==  ===========================================================================================
0   success
1   a check failed: ``demo`` saw a packet on another queue than predicted (or a wrong hash
    report, or a lost packet)
2   usage or validation error: bad arguments, an invalid configuration (the message names the
    field), an unreadable or malformed config or pcap file
3   kernel or permission error: a syscall failed (not root, no such device, device busy ...)
4   feature unsupported: the kernel lacks what was asked for (``--backend native`` without the
    hash ioctls, no tun driver, no usable backend at all)
5   internal error (a bug): rerun with ``--debug`` for the traceback
130 interrupted (Ctrl-C)
==  ===========================================================================================

Errors are one line on stderr, ``pytun-hash: error: <message> (hint: <what to do>)``; with
``--json`` stdout also gets ``{"ok": false, "error": {...}}`` (see :func:`error_document`).
Every successful JSON document starts with ``"ok": true`` (``demo`` sets it to its verdict) and
carries ``"warnings"`` (a list of sentences, also printed on stderr) when there were any.
"""

from __future__ import annotations

import enum
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TextIO

from pytun_hash.errors import (
    FeatureUnsupportedError,
    KernelError,
    PytunHashError,
    UnsupportedError,
    ValidationError,
)

__all__ = [
    "EXIT_CODES_HELP",
    "CliError",
    "ExitCode",
    "Output",
    "Progress",
    "describe_error",
    "error_document",
    "help_text",
    "pairs",
    "table",
]

PROG = "pytun-hash"


class ExitCode(enum.IntEnum):
    """The documented exit statuses of ``pytun-hash`` (see the module documentation)."""

    OK = 0
    MISMATCH = 1
    USAGE = 2
    KERNEL = 3
    UNSUPPORTED = 4
    INTERNAL = 5
    INTERRUPTED = 130
    TERMINATED = 143


EXIT_CODES_HELP = """exit codes:
  0    success
  1    a check failed (demo: a packet on another queue than predicted, a wrong or lost report)
  2    usage or validation error (bad arguments, invalid config, malformed file)
  3    kernel or permission error (not root, no such device, device busy ...)
  4    feature unsupported by this kernel (e.g. --backend native without the hash ioctls)
  5    internal error (a bug): rerun with --debug
  130  interrupted (SIGINT, Ctrl-C)
  143  terminated (SIGTERM)"""


class CliError(PytunHashError):
    """An error the CLI reports as is: a message, a hint and an exit code.

    Attributes:
        message: what went wrong, one sentence.
        hint: what to do about it, one sentence (may be empty).
        code: the exit status.
        field: the argument or config field at fault, if one is.
    """

    def __init__(
        self, message: str, hint: str = "", code: ExitCode = ExitCode.USAGE, *, field: str | None = None
    ) -> None:
        self.message = message
        self.hint = hint
        self.code = code
        self.field = field
        super().__init__(message)


def describe_error(exc: BaseException) -> tuple[ExitCode, str, str]:
    """Map an exception to ``(exit code, message, hint)`` for the one-line error report."""
    if isinstance(exc, CliError):
        return exc.code, exc.message, exc.hint
    if isinstance(exc, ValidationError):
        message = f"invalid {exc.field}: {exc.rule}" if exc.field else exc.rule
        return ExitCode.USAGE, message, "fix the value named above (see --help for the accepted forms)"
    if isinstance(exc, (FeatureUnsupportedError, UnsupportedError)):
        name = _errno_name(exc.errno)
        return ExitCode.UNSUPPORTED, f"{exc.request} failed with {name}", exc.hint
    if isinstance(exc, KernelError):
        name = _errno_name(exc.errno)
        message = f"{exc.request} failed with {name}"
        if exc.detail:
            message = f"{message} [{exc.detail}]"
        return ExitCode.KERNEL, message, exc.hint
    if _is_emulator_error(exc):
        return (
            ExitCode.KERNEL,
            f"kernel emulator: {exc}",
            "see the emulator's requirements (seccomp user notification)",
        )
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, "interrupted", ""
    if isinstance(exc, PytunHashError):
        return ExitCode.KERNEL, str(exc), ""
    return (
        ExitCode.INTERNAL,
        f"internal error: {type(exc).__name__}: {exc}",
        "this is a bug in pytun-hash; rerun with --debug and report the traceback",
    )


def _is_emulator_error(exc: BaseException) -> bool:
    """True for the test kit's :class:`~pytun_hash.testing.EmulatorError`, without importing the test kit.

    Only ``demo --emulate`` loads :mod:`pytun_hash.testing`; an ``EmulatorError`` cannot exist before
    it is loaded, so looking it up among the loaded modules is enough.
    """
    testing = sys.modules.get("pytun_hash.testing")
    emulator_error = getattr(testing, "EmulatorError", None)
    return isinstance(emulator_error, type) and isinstance(exc, emulator_error)


def _errno_name(err: int | None) -> str:
    import errno as _errno

    if err is None:
        return "an error"
    return _errno.errorcode.get(err, f"errno {err}")


def error_document(exc: BaseException) -> dict[str, Any]:
    """The ``--json`` error object: ``{"ok": false, "error": {...}}``.

    Keys of ``error``: ``message``, ``hint``, ``exit_code``, ``type`` (the exception class
    name), and where known ``errno`` (symbolic, e.g. ``"EPERM"``), ``request`` (the failed
    request) and ``field`` (the invalid argument or config field).
    """
    code, message, hint = describe_error(exc)
    error: dict[str, Any] = {
        "message": message,
        "hint": hint,
        "exit_code": int(code),
        "type": type(exc).__name__,
    }
    if isinstance(exc, KernelError):
        error["errno"] = _errno_name(exc.errno)
        error["request"] = exc.request
    if isinstance(exc, (ValidationError, CliError)) and exc.field is not None:
        error["field"] = exc.field
    return {"ok": False, "error": error}


def help_text(doc: str | None) -> str:
    """A module docstring as ``--help`` text: reStructuredText literals become 'quoted'."""
    return (doc or "").replace("``", "'")


def pairs(rows: Sequence[tuple[str, object]], *, indent: str = "") -> str:
    """``name  value`` lines with the names padded to one width."""
    width = max((len(name) for name, _ in rows), default=0)
    return "\n".join(f"{indent}{name.ljust(width)}  {value}" for name, value in rows)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], *, indent: str = "") -> str:
    """A plain-text table with left-aligned columns separated by two spaces."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(indent + line for line in lines)


def printable(text: str) -> str:
    """``text`` with lone surrogates (undecodable bytes, e.g. in a device name) as backslash escapes.

    Such names are valid to the kernel and reach Python through ``surrogateescape``, but a UTF-8
    stream refuses to write them; escaping keeps the output one readable line.
    """
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class Output:
    """Where a command's result goes: human text or a JSON document on stdout; warnings on stderr.

    The streams are looked up when used (not when built), so redirecting ``sys.stdout`` works.

    Args:
        json_mode: print JSON documents instead of text.
        stdout: the result stream (default ``sys.stdout`` at the time of writing).
        stderr: the diagnostics stream (default ``sys.stderr`` at the time of writing).
    """

    def __init__(self, *, json_mode: bool = False, stdout: TextIO | None = None, stderr: TextIO | None = None):
        self.json_mode = json_mode
        self._stdout = stdout
        self._stderr = stderr
        self.warnings: list[str] = []

    @property
    def stdout(self) -> TextIO:
        """The result stream."""
        return self._stdout or sys.stdout

    @property
    def stderr(self) -> TextIO:
        """The diagnostics stream."""
        return self._stderr or sys.stderr

    def result(self, document: Mapping[str, Any], text: str | Callable[[], str]) -> None:
        """Print the command's result: ``document`` as JSON (with ``"ok": true`` first unless it says
        otherwise and the warnings under ``"warnings"``), or ``text``."""
        if self.json_mode:
            body: dict[str, Any] = {"ok": True}
            body.update(document)
            if self.warnings:
                body["warnings"] = list(self.warnings)
            json.dump(body, self.stdout, indent=2)
            self.stdout.write("\n")
        else:
            rendered = text() if callable(text) else text
            self.stdout.write(printable(rendered).rstrip("\n") + "\n")
        self.stdout.flush()

    def warn(self, message: str) -> None:
        """A warning: on stderr now, and in the JSON document's ``warnings`` list."""
        self.warnings.append(message)
        self.stderr.write(printable(f"{PROG}: warning: {message}\n"))
        self.stderr.flush()

    def error(self, exc: BaseException) -> ExitCode:
        """Report ``exc`` (one line on stderr; the JSON error document on stdout in JSON mode).

        Returns:
            The exit code for ``exc``.
        """
        code, message, hint = describe_error(exc)
        line = f"{PROG}: error: {message}"
        if hint:
            line = f"{line} (hint: {hint})"
        self.stderr.write(printable(line.replace("\n", " ")) + "\n")
        self.stderr.flush()
        if self.json_mode:
            json.dump(error_document(exc), self.stdout, indent=2)
            self.stdout.write("\n")
            self.stdout.flush()
        return code

    def progress(self, what: str, total: int | None = None, *, after: float = 1.0) -> Progress:
        """A progress reporter for a long step (see :class:`Progress`)."""
        return Progress(self.stderr, what, total, after=after)


class Progress:
    """Progress on stderr for a step that may take more than a second (context manager).

    Nothing is printed until ``after`` seconds have passed; then at most every half second a
    line ``pytun-hash: <what>: <done>[/<total>]`` (rewritten in place on a terminal), and a
    final line when the step ends.

    Args:
        stream: where to write.
        what: the step's name.
        total: the number of units, if known.
        after: seconds before the first report.
    """

    _INTERVAL = 0.5

    def __init__(self, stream: TextIO, what: str, total: int | None = None, *, after: float = 1.0) -> None:
        self._stream = stream
        self._what = what
        self._total = total
        self._after = after
        self._start = time.monotonic()
        self._last = 0.0
        self._shown = False
        self.done = 0

    def update(self, done: int) -> None:
        """Record ``done`` units finished; print when due."""
        self.done = done
        now = time.monotonic()
        if now - self._start < self._after or now - self._last < self._INTERVAL:
            return
        self._last = now
        self._write(final=False)

    def _write(self, *, final: bool) -> None:
        count = f"{self.done}/{self._total}" if self._total is not None else str(self.done)
        elapsed = time.monotonic() - self._start
        text = f"{PROG}: {self._what}: {count} ({elapsed:.1f} s)"
        tty = getattr(self._stream, "isatty", lambda: False)()
        if tty:
            self._stream.write("\r" + printable(text) + ("\n" if final else ""))
        else:
            self._stream.write(printable(text) + "\n")
        self._stream.flush()
        self._shown = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._shown and exc_type is None:
            self._write(final=True)
