"""The fd ownership shared by maps and programs: one fd, released exactly once, on every path."""

from __future__ import annotations

import errno
import os
from types import TracebackType
from typing import ClassVar, Self

from pytun_hash.errors import BpfError


class BpfObject:
    """Owns one BPF object fd (context manager; :meth:`close` is idempotent).

    Subclasses name the object for error messages in :attr:`_KIND` and say how to get a new one
    in :attr:`_AGAIN`.
    """

    _KIND: ClassVar[str] = "bpf object"
    _AGAIN: ClassVar[str] = "create a new one"

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @property
    def fd(self) -> int:
        """The object's fd.

        Raises:
            BpfError: (``EBADF``) when the object was closed.
        """
        if self._fd is None:
            raise BpfError(errno.EBADF, self._KIND, f"the {self._KIND.removeprefix('bpf ')} was closed; {self._AGAIN}")
        return self._fd

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._fd is None

    def close(self) -> None:
        """Release the fd (idempotent). The kernel frees the object once nothing else holds it."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
