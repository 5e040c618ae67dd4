"""The test kit's own error."""

from __future__ import annotations

from pytun_hash.errors import PytunHashError

__all__ = ["EmulatorError"]


class EmulatorError(PytunHashError):
    """The seccomp kernel emulator failed (supervisor gone, filter not installable, ...)."""
