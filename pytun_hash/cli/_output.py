"""The command line's :class:`~pytun_hash.cli.output.Output`, as :func:`pytun_hash.cli.main` uses it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pytun_hash.cli.interrupts import deferred
from pytun_hash.cli.output import ExitCode, Output

__all__ = ["GuardedOutput"]


class GuardedOutput(Output):
    """:class:`~pytun_hash.cli.output.Output` whose result is printed whole or not at all (SIGINT and
    SIGTERM wait until it is out), and which knows whether it was printed.

    Attributes:
        printed: the command's result is on stdout.
    """

    printed = False

    def result(self, document: Mapping[str, Any], text: str | Callable[[], str], code: ExitCode = ExitCode.OK) -> int:
        """Print the command's result (see :meth:`Output.result`) before any signal is acted on."""
        with deferred():
            status = super().result(document, text, code)
            self.printed = True
        return status
