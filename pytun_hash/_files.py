"""User-named files, read and written safely: the one owner of every file path a user gives the package.

Reading (:func:`open_regular_file`): the path is first opened ``O_PATH`` (which opens nothing: no
device driver, FIFO or pseudo-file sees an ``open``) and judged there; only a regular file on a
real file system is then opened, ``O_NONBLOCK``, and kept non-blocking, so a read that would wait
is a :class:`~pytun_hash.errors.ValidationError`, never a hang. Pseudo-filesystems
(:data:`PSEUDO_FILESYSTEMS`) are refused by their ``f_type``: their "regular" files can block
(``/proc/kmsg``, ``trace_pipe``), never end, or act when opened or read.

Writing (:func:`stage_file`, :func:`write_file`, :class:`PendingFile`): the whole content goes into a
new temporary file in the target's directory (``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0600 whatever the
umask, ``fsync``), and :meth:`PendingFile.commit` then puts it at the target in one step: ``link``
(or ``renameat2(RENAME_NOREPLACE)``), which fails on anything already there, or, with ``overwrite``,
``rename``, which replaces the directory entry and never writes through it. Either way no symlink is
followed, no FIFO or device is opened, and a reader sees the old file or the whole new one. The
directory is ``fsync``-ed after the change, so the new name survives a crash.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from pytun_hash import _sys
from pytun_hash.errors import ValidationError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["PSEUDO_FILESYSTEMS", "PendingFile", "check_target", "open_regular_file", "stage_file", "write_file"]

#: File systems whose files are not data at rest (``f_type`` magic number -> name): reading them may
#: block, never end, consume kernel state or trigger actions, so config and pcap files are never read
#: from them and nothing is written into them. The numbers are ``linux/magic.h``'s (configfs,
#: mqueue, fusectl and pidfs are defined in their own sources).
PSEUDO_FILESYSTEMS: Mapping[int, str] = {
    0x9FA0: "procfs",
    0x62656572: "sysfs",
    0x64626720: "debugfs",
    0x74726163: "tracefs",
    0x73636673: "securityfs",
    0x27E0EB: "cgroup",
    0x63677270: "cgroup2",
    0x62656570: "configfs",
    0xDE5E81E4: "efivarfs",
    0xCAFE4A11: "bpffs",
    0x1CD1: "devpts",
    0x6165676C: "pstore",
    0xF97CFF8C: "selinuxfs",
    0x43415D53: "smackfs",
    0x5A3C69F0: "apparmorfs",
    0x42494E4D: "binfmt_misc",
    0x6E736673: "nsfs",
    0x50494446: "pidfs",
    0x19800202: "mqueue",
    0x65735543: "fusectl",
    0x7655821: "resctrl",
    0xABBA1974: "xenfs",
    0x9FA1: "openpromfs",
    0x9FA2: "usbdevfs",
    0x6C6F6F70: "binderfs",
}

_TEMP_PREFIX = ".pytun-hash-"


def _check_path(path: str, field: str) -> None:
    if "\0" in path:
        raise ValidationError(field, f"the path {path!r} contains a NUL character")
    if not path:
        raise ValidationError(field, "the path is empty")


def _pseudo(fd: int) -> str | None:
    """The name of the pseudo-filesystem ``fd`` is on, or None for a real file system."""
    return PSEUDO_FILESYSTEMS.get(_sys.fstatfs_type(fd))


# ----------------------------------------------------------------------------- reading


class _NonBlockingFile(io.FileIO):
    """A non-blocking fd whose reads raise ``ValidationError`` instead of returning None on ``EAGAIN``."""

    def __init__(self, fd: int, path: str, field: str) -> None:
        super().__init__(fd, "rb", closefd=True)
        self._path = path
        self._field = field

    def _would_block(self) -> ValidationError:
        return ValidationError(
            self._field, f"reading {self._path} would block (EAGAIN): it is not a file at rest; name a regular file"
        )

    def readinto(self, buffer: WriteableBuffer) -> int:
        count = super().readinto(buffer)
        if count is None:
            raise self._would_block()
        return count

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        data = super().read(size)
        if data is None:
            raise self._would_block()
        return data

    def readall(self) -> bytes:
        # FileIO.readall returns what it got so far on EAGAIN; this one refuses instead.
        parts = []
        while chunk := self.read(io.DEFAULT_BUFFER_SIZE):
            parts.append(chunk)
        return b"".join(parts)


def _reopen(path_fd: int, path: str, identity: tuple[int, int]) -> int:
    """A readable non-blocking fd of the file ``path_fd`` (an ``O_PATH`` fd) holds."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
    try:
        # Through the magic link the very inode that was judged is opened: no path is resolved again.
        return os.open(f"/proc/self/fd/{path_fd}", flags)
    except FileNotFoundError:
        if os.path.isdir("/proc/self/fd"):
            raise
    # No procfs: open the path again and make sure it is still the judged file.
    fd = os.open(path, flags)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != identity:
        os.close(fd)
        raise OSError(errno.ESTALE, "the file was replaced while it was opened")
    return fd


def open_regular_file(path: str, field: str) -> BinaryIO:
    """Open ``path`` for binary reading, refusing what could hang, act or is not a file.

    The file is judged on an ``O_PATH`` descriptor before it is opened for reading: it must be a
    regular file (not a directory, FIFO, device or socket) on a real file system (not one of
    :data:`PSEUDO_FILESYSTEMS`, such as ``/proc`` or ``/sys``). The descriptor it is read through stays
    non-blocking. Symlinks are followed: the user named the file. Callers bound their reads (config
    files: 1 MiB).

    Args:
        path: the file named by the user.
        field: the field name for errors (``"config"``, ``"pcap"``).

    Returns:
        A buffered binary reader; a read that would block raises :class:`ValidationError`.

    Raises:
        ValidationError: (naming ``field``) for a NUL in the path, a file that cannot be opened,
            anything but a regular file, a file on a pseudo-filesystem, and (from reads) a read that
            would block.
    """
    _check_path(path, field)
    try:
        path_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError as exc:
        raise ValidationError(field, f"cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(path_fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValidationError(field, f"{path} is not a regular file")
        pseudo = _pseudo(path_fd)
        if pseudo is not None:
            raise ValidationError(
                field,
                f"{path} is on {pseudo}, a pseudo-filesystem whose files may block, never end or act when read; "
                "name a regular file on a real file system",
            )
        fd = _reopen(path_fd, path, (st.st_dev, st.st_ino))
    except OSError as exc:
        raise ValidationError(field, f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(path_fd)
    try:
        raw = _NonBlockingFile(fd, path, field)
    except BaseException:
        os.close(fd)
        raise
    return io.BufferedReader(raw)


# ----------------------------------------------------------------------------- writing


def _refusal(path: str, st: os.stat_result, overwrite: bool) -> str | None:
    """Why what is at the target (``lstat``) may not be replaced, or None when it may."""
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link; it is never followed or replaced: name the file itself"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} exists and is not a regular file (a directory, FIFO, device or socket)"
    if not overwrite:
        return f"{path} already exists; it is replaced only on request (overwrite=True; --force on the command line)"
    return None


class PendingFile:
    """A file written in full beside its target, not visible at the target until :meth:`commit`.

    Made by :func:`stage_file`. As a context manager it discards the temporary file on leaving
    unless it was committed. Not thread-safe.

    Attributes:
        path: the target, as the user named it.
        field: the field name of errors (``"save"``).
        overwrite: whether an existing regular file at the target is replaced.
    """

    def __init__(self, path: str, field: str, overwrite: bool, dir_fd: int, name: str) -> None:
        self.path = path
        self.field = field
        self.overwrite = overwrite
        self._dir_fd: int | None = dir_fd
        self._name = name
        # The temporary file's name in the directory, once it exists (until commit or discard).
        self._temp: str | None = None
        self._committed = False

    @property
    def committed(self) -> bool:
        """Whether :meth:`commit` put the file at its target."""
        return self._committed

    def _fail(self, rule: str) -> ValidationError:
        return ValidationError(self.field, rule)

    def _check_target(self) -> None:
        assert self._dir_fd is not None
        try:
            st = os.stat(self._name, dir_fd=self._dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        rule = _refusal(self.path, st, self.overwrite)
        if rule is not None:
            raise self._fail(rule)

    def _link(self) -> None:
        """Give the temporary file the target's name, failing if anything has that name already."""
        assert self._dir_fd is not None and self._temp is not None
        dir_fd = self._dir_fd
        try:
            os.link(self._temp, self._name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
        except FileExistsError:
            self._check_target()  # says what is there
            raise self._fail(f"{self.path} already exists") from None
        except OSError as exc:
            # vfat, some FUSE and network file systems have no hard links; most know RENAME_NOREPLACE.
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
                raise
        else:
            # The file is at its target now: a temporary name that cannot be removed only wastes space.
            with contextlib.suppress(OSError):
                os.unlink(self._temp, dir_fd=dir_fd)
            self._temp = None
            return
        try:
            _sys.renameat2(dir_fd, self._temp, dir_fd, self._name, _sys.RENAME_NOREPLACE)
        except FileExistsError:
            self._check_target()
            raise self._fail(f"{self.path} already exists") from None
        self._temp = None

    def commit(self) -> None:
        """Put the file at its target: atomically, never through a symlink, never replacing anything
        but a regular file (and that only with ``overwrite``). Idempotent once it succeeded.

        Raises:
            ValidationError: (naming :attr:`field`) when the target became a symlink or non-regular
                file, or (without ``overwrite``) appeared, since :func:`stage_file`; when the file was
                discarded; for an I/O error. The temporary file is removed and the target untouched,
                except when only the final ``fsync`` of the directory failed: then the file is in place
                (:attr:`committed`) but may not survive a crash, and the error says so.
        """
        if self._committed:
            return
        if self._dir_fd is None or self._temp is None:
            raise self._fail(f"the file for {self.path} was discarded; stage it again")
        dir_fd = self._dir_fd
        try:
            self._check_target()
            if self.overwrite:
                # rename replaces the entry itself: a symlink or FIFO put there since the check above is
                # replaced, never followed or opened.
                os.rename(self._temp, self._name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                self._temp = None
            else:
                self._link()
        except OSError as exc:
            self.discard()
            raise self._fail(f"cannot write {self.path}: {exc.strerror}") from None
        except BaseException:
            self.discard()
            raise
        self._committed = True
        try:
            os.fsync(dir_fd)
        except OSError as exc:
            raise self._fail(
                f"{self.path} was written but may not survive a crash: syncing its directory failed: {exc.strerror}"
            ) from None
        finally:
            self._close()

    def discard(self) -> None:
        """Remove the temporary file (the target is left as it is). Idempotent; a no-op after commit."""
        if self._temp is not None and self._dir_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp, dir_fd=self._dir_fd)
        self._temp = None
        self._close()

    def _close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def __enter__(self) -> PendingFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._committed:
            self.discard()

    def __repr__(self) -> str:
        state = "committed" if self._committed else "pending" if self._temp is not None else "discarded"
        return f"PendingFile({self.path!r}, {state})"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _open_target_dir(path: str, field: str) -> tuple[int, str]:
    """``(directory fd, last component)`` of a target path; the directory is on a real file system.

    Raises:
        ValidationError: for a NUL, an empty path or one naming a directory, a missing directory or
            one on a pseudo-filesystem.
    """
    _check_path(path, field)
    directory, name = os.path.split(path)
    if name in ("", ".", ".."):
        raise ValidationError(field, f"{path} names a directory; name a file in it")
    try:
        dir_fd = os.open(directory or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise ValidationError(field, f"cannot write {path}: {directory}: {exc.strerror}") from None
    try:
        pseudo = _pseudo(dir_fd)
    except OSError as exc:
        os.close(dir_fd)
        raise ValidationError(field, f"cannot write {path}: {directory}: {exc.strerror}") from None
    if pseudo is not None:
        os.close(dir_fd)
        raise ValidationError(field, f"{path} is on {pseudo}, a pseudo-filesystem: files are not written there")
    return dir_fd, name


def check_target(path: str, field: str, *, overwrite: bool = False) -> None:
    """Check now that :func:`stage_file` would accept ``path`` as a target (without writing anything).

    For work whose result is written at the end (a long run's report): a bad target fails at the
    start. Whether the directory is writable shows only when writing.

    Raises:
        ValidationError: (naming ``field``) as :func:`stage_file` does for the path and what is at it.
    """
    dir_fd, name = _open_target_dir(path, field)
    with PendingFile(path, field, overwrite, dir_fd, name) as pending:
        pending._check_target()


def stage_file(path: str, data: bytes, field: str, *, overwrite: bool = False) -> PendingFile:
    """Validate ``path`` as a target and write ``data`` to a new temporary file beside it.

    Nothing is visible at ``path`` until :meth:`PendingFile.commit`; so a caller can stage, do
    what the file records, and then commit (or :meth:`PendingFile.discard` if that failed). The
    temporary file is created ``O_EXCL|O_NOFOLLOW`` with mode 0600 (set with ``fchmod``, whatever
    the umask: the file may hold a key), written in full and ``fsync``-ed.

    Args:
        path: the target named by the user; symlinks in its directory part are followed, the last
            component never.
        data: the whole content.
        field: the field name for errors (``"save"``).
        overwrite: replace an existing regular file (never a symlink, directory, FIFO, device or socket).

    Raises:
        ValidationError: (naming ``field``) for a NUL in ``path``, an empty path or one naming a
            directory, a missing or unwritable directory, a directory on a pseudo-filesystem, a
            symlink or non-regular file at the target, an existing file without ``overwrite``, and
            I/O errors (``ENOSPC`` ...). Nothing is left behind.
    """
    dir_fd, name = _open_target_dir(path, field)
    pending = PendingFile(path, field, overwrite, dir_fd, name)
    import secrets  # here: reading a file (a capture, a config) needs no random names

    temp = f"{_TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
    try:
        pending._check_target()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(temp, flags, 0o600, dir_fd=dir_fd)
        pending._temp = temp
        try:
            os.fchmod(fd, 0o600)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        pending.discard()
        raise ValidationError(field, f"cannot write {path}: {exc.strerror}") from None
    except BaseException:
        pending.discard()
        raise
    return pending


def write_file(path: str, data: bytes, field: str, *, overwrite: bool = False) -> None:
    """:func:`stage_file` and :meth:`PendingFile.commit` in one: write ``data`` to ``path`` atomically,
    mode 0600, never through a symlink or onto a non-regular file.

    Raises:
        ValidationError: as :func:`stage_file` and :meth:`PendingFile.commit` do.
    """
    with stage_file(path, data, field, overwrite=overwrite) as pending:
        pending.commit()
