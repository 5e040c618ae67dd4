"""The argument parser of ``pytun-hash``: every command, its options, the exit codes and examples in ``--help``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from pytun_hash.cli.output import EXIT_CODES_HELP, PROG, CliError, ExitCode
from pytun_hash.errors import shorten

__all__ = ["build_parser"]

_DESCRIPTION = """\
virtio-net hashing (RSS and hash reports) for Linux TUN/TAP devices.

Start with `pytun-hash probe` (what this kernel offers) and `sudo pytun-hash demo`
(RSS end to end on a private TAP, checked against the software model)."""

_EXAMPLES = """\
examples:
  sudo pytun-hash probe
  sudo pytun-hash demo
  pytun-hash hash --key microsoft --src 66.9.149.187 --sport 2794 --dst 161.142.100.80 --dport 1766
  sudo pytun-hash create tap0 --queues 4 --vnet-hdr-size 20 --vnet-le --owner $USER
  sudo pytun-hash apply --dev tap0 --key random --save tap0-rss.toml
  sudo pytun-hash show --dev tap0
  sudo pytun-hash predict --config tap0-rss.toml --queues 4 udp,10.0.0.1:5000,10.0.0.2:53
  pytun-hash apply --dry-run --revision v12 --queues 4 --key microsoft --json
"""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors raise :class:`CliError` (one line, exit 2) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message, f"see `{self.prog} --help`", ExitCode.USAGE)


class _TopParser(_Parser):
    """The top-level parser: a stray word after a command that names its device with ``--dev`` is
    most likely that device (``apply vm0``), and the hint says so."""

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            word = extras[0]
            if command in _DEV_COMMANDS and getattr(parsed, "dev", None) is None and not word.startswith("-"):
                raise CliError(
                    f"unrecognized argument {shorten(word)}: {command} names its device with --dev",
                    f"run `{PROG} {command} --dev {word}`",
                    ExitCode.USAGE,
                )
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


# The commands whose device is an option, not a positional argument.
_DEV_COMMANDS = frozenset({"apply", "disable", "show", "probe", "predict"})


class _Version(argparse.Action):
    """``--version``: looked up only when asked for (``importlib.metadata`` is slow to import)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        sys.stdout.write(f"{parser.prog} {_version()}\n")
        parser.exit()


def _common_options(*, top: bool) -> argparse.ArgumentParser:
    # Subcommands repeat the options with SUPPRESS defaults, so a value given before the
    # command name is not reset by the subcommand's parser.
    parent = _Parser(add_help=False)
    default: object = False if top else argparse.SUPPRESS
    parent.add_argument("--json", action="store_true", default=default, help="print a JSON document on stdout")
    parent.add_argument("--debug", action="store_true", default=default, help="show tracebacks with errors")
    return parent


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("pytun_hash")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


# Every command: its module (imported only when the command is chosen) and its line in `--help`.
COMMANDS: dict[str, tuple[str, str]] = {
    "probe": ("probe", "report what this kernel offers (tun, vnet headers, eBPF, hash ioctl revision)"),
    "create": ("devices", "create a persistent TUN/TAP device"),
    "delete": ("devices", "delete a persistent TUN/TAP device"),
    "apply": ("apply", "put a hashing config in force on a device"),
    "disable": ("apply", "turn hashing off on a device"),
    "show": ("show", "show the hashing in force on a device (like ethtool -x)"),
    "hash": ("hashcmd", "Toeplitz hash and report type of one packet"),
    "predict": ("predict", "queue for flows or for every packet of a pcap"),
    "handoff": ("handoff", "attach RSS an unprivileged VMM reconfigures through mmapped maps (root)"),
    "demo": ("demo", "end-to-end RSS on a private multi-queue TAP, checked against the model (root)"),
    "conformance": ("conformance", "check a kernel's hashing against the virtio spec and its UAPI (root)"),
    "compat": ("compat", "can a guest move between two hosts? (virtio features from two `probe --json` files)"),
}


class _Registrar:
    """What a command module's ``add_parser(s)`` is given as ``sub``: it builds the module's command
    parsers in place of their stubs, with the help line of :data:`COMMANDS`."""

    def __init__(self, action: _LazySubParsers) -> None:
        self._action = action

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        action = self._action
        parser = _Parser(prog=f"{action.prog_prefix} {name}", **kwargs)
        action.choices[name] = parser
        action.built.add(name)
        return parser


class _LazySubParsers(argparse._SubParsersAction):  # type: ignore[type-arg]
    """The command choice: a command's parser is built (its module imported) only when it is chosen,
    so ``pytun-hash --help`` and ``pytun-hash hash`` load nothing of ``apply`` or ``demo``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.built: set[str] = set()
        self.parents: list[argparse.ArgumentParser] = []
        self.prog_prefix = self._prog_prefix

    def build(self, name: str) -> None:
        """Build the parser of command ``name`` (and of its module's other commands)."""
        if name in self.built or name not in COMMANDS:
            return
        module = importlib.import_module(f"pytun_hash.cli.{COMMANDS[name][0]}")
        register = getattr(module, "add_parsers", None) or module.add_parser
        register(_Registrar(self), self.parents)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if isinstance(values, list) and values:
            self.build(str(values[0]))
        super().__call__(parser, namespace, values, option_string)


def build_parser(*, lazy: bool = False) -> argparse.ArgumentParser:
    """The argument parser of ``pytun-hash``.

    Args:
        lazy: build each command's parser only when it is chosen (what ``main`` does; the top-level
            ``--help`` then imports no command module). False (documentation tools, tests): every
            command's parser is built now.
    """
    parser = _TopParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=f"{EXIT_CODES_HELP}\n\n{_EXAMPLES}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(top=True)],
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    parser.register("action", "lazy_parsers", _LazySubParsers)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, action="lazy_parsers")
    assert isinstance(sub, _LazySubParsers)
    sub.parents = [_common_options(top=False)]
    for name, (_, line) in COMMANDS.items():
        sub.add_parser(name, help=line)  # a stub until built: the help line only
    if not lazy:
        for name in COMMANDS:
            sub.build(name)
    return parser
