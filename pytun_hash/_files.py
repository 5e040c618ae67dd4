"""Opening user-named files safely: regular files only, never blocking, never a NUL in the path."""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from pytun_hash.errors import ValidationError

__all__ = ["open_regular_file"]


def open_regular_file(path: str, field: str) -> BinaryIO:
    """Open ``path`` for binary reading, refusing what could hang or is not a file.

    ``O_NONBLOCK`` keeps a FIFO from blocking the open until a writer appears; the file is then
    refused unless it is a regular file, so reads cannot block either.

    Args:
        path: the file named by the user.
        field: the field name for errors (``"config"``, ``"pcap"``).

    Raises:
        ValidationError: (naming ``field``) for a NUL in the path, a file that cannot be opened, or
            anything but a regular file (directory, FIFO, device, socket).
    """
    if "\0" in path:
        raise ValidationError(field, f"the path {path!r} contains a NUL character")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ValidationError(field, f"cannot read {path}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValidationError(field, f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
