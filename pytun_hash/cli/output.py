"""What the CLI prints: human text or JSON on stdout, one-line errors and progress on stderr, exit codes.

Exit codes (the same table is in ``pytun-hash --help``):

==  ===========================================================================================
0   success
1   a check failed: ``demo`` saw a packet on another queue than predicted (or a wrong hash
    report, or a lost packet); ``compat``: the second host offers less than the first advertised
2   usage or validation error: bad arguments, an invalid configuration (the message names the
    field), an unreadable or malformed config or pcap file
3   kernel or permission error: a syscall failed (not root, no such device, device busy ...)
4   feature unsupported: the kernel lacks what was asked for (``--backend native`` without the
    hash ioctls, no tun driver, no usable backend at all)
5   internal error (a bug): rerun with ``--debug`` for the traceback
130 interrupted (SIGINT, Ctrl-C)
143 terminated (SIGTERM)
==  ===========================================================================================

Errors are one line on stderr, ``pytun-hash: error: <message> (hint: <what to do>)``, at most
:data:`MAX_ERROR_LINE_CHARS` characters however long the input it quotes; with ``--json`` stdout
also gets ``{"ok": false, "error": {...}}`` (see :func:`error_document`).
Every result document starts with ``"ok"``, true exactly when the exit status is 0 (a ``demo``
that found a mismatch, a ``probe`` that finds no usable backend: false, with the result), and
carries ``"warnings"`` (a list of sentences, also printed on stderr) when there were any. A
streamed document (see :meth:`Output.stream`) is the exception: its entries are written before the
outcome is known, so ``"ok"`` is its last key, and an error after the stream began ends the same
document with ``"error"`` and ``"ok": false``.
"""

from __future__ import annotations

import enum
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TextIO

from pytun_hash.cli.hints import hint_for
from pytun_hash.errors import (
    FeatureUnsupportedError,
    KernelError,
    PytunHashError,
    Terminated,
    UnsupportedError,
    ValidationError,
    clip,
)

__all__ = [
    "EXIT_CODES_HELP",
    "MAX_ERROR_LINE_CHARS",
    "MAX_HINT_CHARS",
    "MAX_MESSAGE_CHARS",
    "CliError",
    "EntryStream",
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

#: Characters of an error's message, hint and field, and of the whole error line, that the CLI prints:
#: messages quote what the user gave, and the user may give megabytes.
MAX_MESSAGE_CHARS = 1024
MAX_HINT_CHARS = 512
MAX_FIELD_CHARS = 128
MAX_ERROR_LINE_CHARS = 2048


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
  1    a check failed (demo: a packet on another queue than predicted, a wrong or lost report;
       compat: the second host offers less than the first advertised)
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
    """Map an exception to ``(exit code, message, hint)`` for the one-line error report.

    The message has at most :data:`MAX_MESSAGE_CHARS` characters and the hint at most
    :data:`MAX_HINT_CHARS`; longer ones are cut and say how long they were.
    """
    code, message, hint = _describe(exc)
    return code, clip(message, MAX_MESSAGE_CHARS), clip(hint, MAX_HINT_CHARS)


def _describe(exc: BaseException) -> tuple[ExitCode, str, str]:
    if isinstance(exc, CliError):
        return exc.code, exc.message, exc.hint
    if isinstance(exc, ValidationError):
        message = f"invalid {exc.field}: {exc.rule}" if exc.field else exc.rule
        return ExitCode.USAGE, message, hint_for(exc)
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
    if isinstance(exc, Terminated):
        return ExitCode.TERMINATED, "terminated", ""
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
        error["field"] = clip(exc.field, MAX_FIELD_CHARS)
    return {"ok": False, "error": error}


_COMMANDS = frozenset(
    {"probe", "create", "delete", "apply", "disable", "show", "hash", "predict", "demo", "conformance", "compat"}
)
# A paragraph that starts with a command's name (or its JSON keys) begins that command's part.
_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")
_COMMAND_PARAGRAPH = re.compile(r"(?:JSON keys of )?``(?:pytun-hash )?([a-z]+)")


def help_text(doc: str | None, command: str | None = None) -> str:
    """A module docstring as ``--help`` text: reStructuredText literals become 'quoted'.

    A module of two commands documents them one after the other; with ``command``, only the first
    paragraph (the module's title) and that command's paragraphs are kept, so ``apply --help`` does
    not print ``disable``'s description. A paragraph that starts with a command's name (``apply
    --dev NAME ...``, ``JSON keys of predict``) starts that command's part.
    """
    text = doc or ""
    if command is not None:
        paragraphs = text.strip().split("\n\n")
        kept, current = paragraphs[:1], None
        for paragraph in paragraphs[1:]:
            match = _COMMAND_PARAGRAPH.match(paragraph)
            if match and match.group(1) in _COMMANDS:
                current = match.group(1)
            if current in (None, command):
                kept.append(paragraph)
        text = "\n\n".join(kept)
    # Sphinx roles (:mod:`pytun_hash.x`, :class:`~a.B`) read as the bare name.
    return _ROLE.sub(lambda m: m.group(1).rsplit(".", 1)[-1] if m.group(0).count("~") else m.group(1), text).replace(
        "``", "'"
    )


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
        self._stream: EntryStream | None = None

    @property
    def stdout(self) -> TextIO:
        """The result stream."""
        return self._stdout or sys.stdout

    @property
    def stderr(self) -> TextIO:
        """The diagnostics stream."""
        return self._stderr or sys.stderr

    def result(self, document: Mapping[str, Any], text: str | Callable[[], str], code: ExitCode = ExitCode.OK) -> int:
        """Print the command's result: ``document`` as JSON (``"ok"`` first, true exactly when
        ``code`` is 0, and the warnings under ``"warnings"``), or ``text``.

        Returns:
            ``code``, the command's exit status, so that a command ends with ``return out.result(...)``
            and its JSON cannot say ``ok`` while it exits with an error.
        """
        if self.json_mode:
            import json  # only JSON output needs it: not loaded at start-up

            body: dict[str, Any] = {"ok": code == ExitCode.OK}
            body.update(document)
            body["ok"] = code == ExitCode.OK
            if self.warnings:
                body["warnings"] = list(self.warnings)
            json.dump(body, self.stdout, indent=2)
            self.stdout.write("\n")
        else:
            rendered = text() if callable(text) else text
            self.stdout.write(printable(rendered).rstrip("\n") + "\n")
        self.stdout.flush()
        return int(code)

    def stream(self, head: Mapping[str, Any], key: str, text_head: str) -> EntryStream:
        """Start a result whose list ``key`` is written entry by entry (see :class:`EntryStream`).

        Memory stays constant however many entries follow: nothing of an entry is kept once written.

        Args:
            head: the members of the JSON document that come before ``key``.
            key: the name of the streamed list.
            text_head: what human output prints before the first entry.
        """
        self._stream = EntryStream(self, head, key, text_head)
        return self._stream

    def warn(self, message: str) -> None:
        """A warning: on stderr now, and in the JSON document's ``warnings`` list (at most
        :data:`MAX_MESSAGE_CHARS` characters); a warning given already is not repeated."""
        message = clip(message, MAX_MESSAGE_CHARS)
        if message in self.warnings:
            return  # the same value judged again on its way through (a config is built in steps)
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
        # Last, as escaping can lengthen the line: the one cap that holds whatever came before.
        self.stderr.write(clip(printable(line.replace("\n", " ")), MAX_ERROR_LINE_CHARS) + "\n")
        self.stderr.flush()
        stream, self._stream = self._stream, None
        if stream is not None and stream.open:
            stream.fail(exc)
        elif self.json_mode:
            import json

            json.dump(error_document(exc), self.stdout, indent=2)
            self.stdout.write("\n")
            self.stdout.flush()
        return code

    def progress(self, what: str, total: int | None = None, *, after: float = 1.0, unit: str | None = None) -> Progress:
        """A progress reporter for a long step (see :class:`Progress`); silent with ``--json``, and
        unless stderr is a terminal."""
        return Progress(self.stderr, what, total, after=after, enabled=not self.json_mode, unit=unit)


def _member(name: str, value: Any) -> str:
    """``"name": value`` as a member of a top-level object printed with ``indent=2``."""
    import json  # only JSON output needs it: not loaded at start-up

    return f"  {json.dumps(name)}: " + json.dumps(value, indent=2).replace("\n", "\n  ")


class EntryStream:
    """A command's result whose list of entries is written while it is produced (from :meth:`Output.stream`).

    JSON: the document's head members are written at once, then each entry (one line each) into the
    list named ``key``, then :meth:`finish` writes the tail members, ``"warnings"`` and ``"ok": true``:
    one valid JSON document. When an error ends the command after the stream began,
    :meth:`Output.error` closes the same document with ``"error"`` and ``"ok": false``.

    Text: ``text_head`` at once, a line per entry, and the tail text at the end.
    """

    def __init__(self, out: Output, head: Mapping[str, Any], key: str, text_head: str) -> None:
        import json  # only JSON output needs it: not loaded at start-up

        self._out = out
        self._count = 0
        self.open = True
        if out.json_mode:
            members = [_member(name, value) for name, value in head.items()]
            out.stdout.write("{\n" + "".join(m + ",\n" for m in members) + f"  {json.dumps(key)}: [")
        elif text_head:
            out.stdout.write(printable(text_head).rstrip("\n") + "\n")

    def entry(self, item: Mapping[str, Any], text: str) -> None:
        """Write one entry: ``item`` in JSON mode, the line ``text`` otherwise (buffered; nothing is kept)."""
        import json  # only JSON output needs it: not loaded at start-up

        stdout = self._out.stdout
        if self._out.json_mode:
            stdout.write(("," if self._count else "") + "\n    " + json.dumps(item))
        else:
            stdout.write(printable(text) + "\n")
        self._count += 1

    def _close(self, tail: Mapping[str, Any]) -> None:
        self.open = False
        stdout = self._out.stdout
        stdout.write("\n  ]" if self._count else "]")
        for name, value in tail.items():
            stdout.write(",\n" + _member(name, value))
        stdout.write("\n}\n")
        stdout.flush()

    def finish(self, tail: Mapping[str, Any], text: str | Callable[[], str]) -> None:
        """End the result: ``tail`` members (then warnings and ``"ok": true``) in JSON mode, ``text`` otherwise."""
        out = self._out
        if out.json_mode:
            members = dict(tail)
            if out.warnings:
                members["warnings"] = list(out.warnings)
            members["ok"] = True
            self._close(members)
        else:
            self.open = False
            rendered = text() if callable(text) else text
            out.stdout.write(printable(rendered).rstrip("\n") + "\n")
            out.stdout.flush()
        out._stream = None

    def fail(self, exc: BaseException) -> None:
        """End the JSON document with ``exc`` as :func:`error_document` gives it (nothing more in text mode)."""
        if not self._out.json_mode:
            self.open = False
            self._out.stdout.flush()
            return
        members: dict[str, Any] = {}
        if self._out.warnings:
            members["warnings"] = list(self._out.warnings)
        members.update(error_document(exc))
        members["ok"] = members.pop("ok")
        self._close(members)


class Progress:
    """Progress on stderr for a step that may take more than a second (context manager).

    Only on a terminal: a person watching a long step wants to see it move, but in a pipe, a
    file or a log a line per half second is clutter, so there nothing at all is written. On a
    terminal nothing is printed until ``after`` seconds have passed; then at most every half
    second the line ``pytun-hash: <what>: <done>[/<total>]`` is rewritten in place, and it is
    ended when the step ends. With a ``unit`` the line also says the share done and the rate:
    ``<done>/[~]<total> <unit> (<percent>, <rate> <unit>/s, <seconds> s)``, ``~`` marking a total
    that is an estimate (:meth:`update` may revise it).

    Args:
        stream: where to write.
        what: the step's name.
        total: the number of units, if known.
        after: seconds before the first report.
        enabled: False silences it even on a terminal (``--json``: machine-read output).
        unit: what is counted (``"packets"``): show the percentage and the rate too.
    """

    _INTERVAL = 0.5

    def __init__(
        self,
        stream: TextIO,
        what: str,
        total: int | None = None,
        *,
        after: float = 1.0,
        enabled: bool = True,
        unit: str | None = None,
    ) -> None:
        self._stream = stream
        self._enabled = enabled and _isatty(stream)
        self._what = what
        self._total = total
        self._after = after
        self._start = time.monotonic()
        self._last = 0.0
        self._shown = False
        self._unit = unit
        self._estimated = False
        self.done = 0

    def update(self, done: int, *, total: int | None = None, estimated: bool = False) -> None:
        """Record ``done`` units finished (and a new ``total``, an estimate when ``estimated``); print when due."""
        self.done = done
        if total is not None:
            self._total = total
            self._estimated = estimated
        if not self._enabled:
            return
        now = time.monotonic()
        if now - self._start < self._after or now - self._last < self._INTERVAL:
            return
        self._last = now
        self._write(final=False)

    def _write(self, *, final: bool) -> None:
        elapsed = time.monotonic() - self._start
        if self._unit is None:
            count = f"{self.done}/{self._total}" if self._total is not None else str(self.done)
            text = f"{PROG}: {self._what}: {count} ({elapsed:.1f} s)"
        else:
            total = "" if self._total is None else f"/{'~' if self._estimated else ''}{self._total}"
            share = f"{self.done / self._total:.0%}, " if self._total else ""
            rate = f"{self.done / elapsed:,.0f} {self._unit}/s, " if elapsed > 0 else ""
            text = f"{PROG}: {self._what}: {self.done}{total} {self._unit} ({share}{rate}{elapsed:.1f} s)"
        self._stream.write("\r" + printable(text) + ("\n" if final else ""))
        self._stream.flush()
        self._shown = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._shown:
            return
        if exc_type is None:
            self._write(final=True)
        else:
            # End the line being rewritten, so that the error report starts a line of its own.
            self._stream.write("\n")
            self._stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
