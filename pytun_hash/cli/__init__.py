"""The ``pytun-hash`` command line (also ``python -m pytun_hash``).

Commands: ``probe``, ``create``, ``delete``, ``apply``, ``disable``, ``show``, ``hash``, ``predict``,
``demo``; each module of this package documents its command's JSON keys. Every command takes
``--json`` (a JSON document on stdout instead of text) and ``--debug`` (a traceback with
errors). Errors are one line on stderr with a hint; exit codes are listed in
:mod:`pytun_hash.cli.output` and in ``pytun-hash --help``. SIGINT and SIGTERM end any command with
130 and 143 after unwinding what it made (:mod:`pytun_hash.cli.interrupts`).

Importing this package is cheap on purpose: the console script imports it before :func:`main` can
install the signal handlers, so everything else is imported by :func:`main`, under the handlers.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence

from pytun_hash.cli.interrupts import Interrupts, exit_status

# typing.TYPE_CHECKING without importing typing (mypy takes any constant of this name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any

    from pytun_hash.cli.output import Output

__all__ = ["build_parser", "main"]


def build_parser(*, lazy: bool = False) -> argparse.ArgumentParser:
    """The argument parser of ``pytun-hash``: complete, or with each command built when chosen (``lazy``)."""
    from pytun_hash.cli.parser import build_parser as build

    return build(lazy=lazy)


def _wants(argv: Sequence[str], flag: str) -> bool:
    return flag in argv[: argv.index("--")] if "--" in argv else flag in argv


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pytun-hash`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Never raises: errors are reported on stderr as one line (plus a JSON error document on
    stdout with ``--json``) and mapped to the documented exit codes; ``--help`` and
    ``--version`` return 0. SIGINT and SIGTERM raise an interruption that unwinds the command and
    end it with 130 and 143 (one line on stderr); a signal that comes at any time before the end
    sets that status (:mod:`pytun_hash.cli.interrupts`). When it is the program's own ``main`` (the
    console script, ``python -m pytun_hash``: the ``__main__`` module's ``main`` is this function, and
    ``argv`` is None), it owns the process: an interrupted run ends the process instead of returning,
    and the handlers stay until the process ends; otherwise the previous handlers are back when it
    returns.
    """
    # First thing: until the handlers are in, SIGINT raises anywhere and SIGTERM kills outright.
    program = sys.modules.get("__main__")
    interrupts = Interrupts(owns_process=argv is None and getattr(program, "main", None) is main)
    json_mode = debug = False
    out: Output | None = None
    try:
        interrupts.install()
        args_list = list(sys.argv[1:] if argv is None else argv)
        # Known before parsing, so that even usage errors honour them.
        json_mode, debug = _wants(args_list, "--json"), _wants(args_list, "--debug")
        # Everything is imported here, where an interruption ends as one line and an exit code.
        from pytun_hash.cli.output import ExitCode
        from pytun_hash.cli.parser import build_parser as build

        out = _make_output(json_mode)
        with _warnings_to(out):
            parser = build(lazy=True)
            args = parser.parse_args(args_list)
            out.json_mode = json_mode = bool(args.json)
            debug = bool(args.debug)
            if args.command is None:
                parser.print_help(out.stderr)
                code = int(ExitCode.USAGE)
            else:
                code = int(args.handler(args, out))
        # From here a signal only sets the exit status. Set as an attribute, in this block and first thing
        # in the handlers below: a call would give the signal a point to raise outside this try.
        interrupts.deciding = True
    except SystemExit as exc:  # --help, --version
        interrupts.deciding = True
        code = exc.code if isinstance(exc.code, int) else 0
    except BaseException as exc:  # every error ends as one line and an exit code
        interrupts.deciding = True
        code = _failed(exc, out or _make_output(json_mode), debug, interrupts)
    return interrupts.finish(code, lambda signum: _say_interrupted(out or _make_output(json_mode), signum))


@contextlib.contextmanager
def _warnings_to(out: Output) -> Iterator[None]:
    """Show the package's warnings as the command's warnings (one line each, and in the JSON
    document), every time they are given; other warnings go where Python sends them."""
    import warnings

    from pytun_hash.errors import PytunHashWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", PytunHashWarning)
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *rest: Any, **kwargs: Any) -> None:
            if issubclass(category, PytunHashWarning):
                out.warn(str(message))
            else:
                shown(message, category, *rest, **kwargs)

        warnings.showwarning = show
        yield


def _failed(exc: BaseException, out: Output, debug: bool, interrupts: Interrupts) -> int:
    """Report what ended the command (signals are only noted now); return the exit status."""
    import signal

    from pytun_hash.errors import Terminated

    if debug:
        import traceback

        traceback.print_exc(file=out.stderr)
    if isinstance(exc, KeyboardInterrupt) and interrupts.received is None:
        # Not from our handlers (none could be installed here, or the code raised it itself).
        interrupts.received = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
    if interrupts.received is not None:
        return exit_status(interrupts.received)
    code = int(out.error(exc))
    interrupts.reported = True
    return code


def _make_output(json_mode: bool) -> Output:
    """An :class:`~pytun_hash.cli.output.Output` whose result is printed whole or not at all."""
    from pytun_hash.cli._output import GuardedOutput

    return GuardedOutput(json_mode=json_mode)


def _say_interrupted(out: Output, signum: int) -> None:
    """The one line (and with ``--json``, unless a document was printed, the error document) for a signal."""
    import json
    import signal

    from pytun_hash.cli.interrupts import interruption
    from pytun_hash.cli.output import PROG, error_document

    message = "interrupted" if signum == signal.SIGINT else f"terminated ({signal.Signals(signum).name})"
    out.stderr.write(f"{PROG}: error: {message}\n")
    out.stderr.flush()
    if out.json_mode and not getattr(out, "printed", False):
        document = error_document(interruption(signum))
        document["error"].update(message=message, exit_code=exit_status(signum))
        json.dump(document, out.stdout, indent=2)
        out.stdout.write("\n")
        out.stdout.flush()
