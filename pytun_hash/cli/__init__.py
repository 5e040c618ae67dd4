"""The ``pytun-hash`` command line (also ``python -m pytun_hash``).

Commands: ``probe``, ``create``, ``delete``, ``apply``, ``disable``, ``show``, ``hash``, ``predict``,
``demo``; each module of this package documents its command's JSON keys. Every command takes
``--json`` (a JSON document on stdout instead of text) and ``--debug`` (a traceback with
errors). Errors are one line on stderr with a hint; exit codes are listed in
:mod:`pytun_hash.cli.output` and in ``pytun-hash --help``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from pytun_hash.cli import apply, demo, devices, hashcmd, probe, show
from pytun_hash.cli.output import EXIT_CODES_HELP, PROG, CliError, ExitCode, Output

__all__ = ["build_parser", "main"]

_DESCRIPTION = """\
virtio-net hashing (RSS and hash reports) for Linux TUN/TAP devices.

Start with `pytun-hash probe` (what this kernel offers) and `sudo pytun-hash demo`
(RSS end to end on a private TAP, checked against the software model)."""

_EXAMPLES = """\
examples:
  pytun-hash probe
  sudo pytun-hash demo
  pytun-hash hash --key microsoft --src 66.9.149.187 --sport 2794 --dst 161.142.100.80 --dport 1766
  sudo pytun-hash create tap0 --queues 4 --vnet-hdr-size 20 --vnet-le --owner $USER
  sudo pytun-hash apply --dev tap0 --key random --save tap0-rss.toml
  sudo pytun-hash show --dev tap0
  pytun-hash predict --config tap0-rss.toml --queues 4 udp,10.0.0.1:5000,10.0.0.2:53
  pytun-hash apply --dry-run --revision v12 --queues 4 --key microsoft --json
"""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors raise :class:`CliError` (one line, exit 2) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message, f"see `{self.prog} --help`", ExitCode.USAGE)


def _common_options(*, top: bool) -> argparse.ArgumentParser:
    # Subcommands repeat the options with SUPPRESS defaults, so a value given before the
    # command name is not reset by the subcommand's parser.
    parent = _Parser(add_help=False)
    default: object = False if top else argparse.SUPPRESS
    parent.add_argument("--json", action="store_true", default=default, help="print a JSON document on stdout")
    parent.add_argument("--debug", action="store_true", default=default, help="show tracebacks with errors")
    return parent


def _version() -> str:
    try:
        return importlib.metadata.version("pytun_hash")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    """The complete argument parser (for documentation tools and tests)."""
    parser = _Parser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=f"{EXIT_CODES_HELP}\n\n{_EXAMPLES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(top=True)],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parents = [_common_options(top=False)]
    probe.add_parser(sub, parents)
    devices.add_parsers(sub, parents)
    apply.add_parsers(sub, parents)
    show.add_parser(sub, parents)
    hashcmd.add_parsers(sub, parents)
    demo.add_parser(sub, parents)
    return parser


def _wants(argv: Sequence[str], flag: str) -> bool:
    return flag in argv[: argv.index("--")] if "--" in argv else flag in argv


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pytun-hash`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Never raises: errors are reported on stderr as one line (plus a JSON error document on
    stdout with ``--json``) and mapped to the documented exit codes; ``--help`` and
    ``--version`` return 0.
    """
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Known before parsing, so that even usage errors honour them.
    out = Output(json_mode=_wants(args_list, "--json"))
    debug = _wants(args_list, "--debug")
    try:
        parser = build_parser()
        args = parser.parse_args(args_list)
        out.json_mode = bool(args.json)
        debug = bool(args.debug)
        if args.command is None:
            parser.print_help(out.stderr)
            return int(ExitCode.USAGE)
        return int(args.handler(args, out))
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else int(ExitCode.OK)
    except BaseException as exc:  # every error ends as one line and an exit code
        if debug:
            traceback.print_exc(file=out.stderr)
        return int(out.error(exc))
