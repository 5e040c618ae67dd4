"""The one error hierarchy of pytun_hash.

Every exception the package raises on purpose derives from :class:`PytunHashError`, except
:class:`Terminated`: the command line raises it for SIGTERM, and like the ``KeyboardInterrupt`` of
SIGINT (its base class) it is no error, so ``except Exception`` and ``except PytunHashError`` let it
through and it unwinds every ``with`` and ``finally`` on its way out.

Warnings derive from :class:`PytunHashWarning`.

Errors that come from the kernel (or from the binding refusing a call the kernel would mishandle)
are :class:`KernelError` and carry the errno, the ioctl request name and a sentence that says what
to do.
"""

from __future__ import annotations

import errno as _errno
import os
import reprlib

__all__ = [
    "BpfError",
    "BusyError",
    "DecodeError",
    "DeviceFlagsMismatchError",
    "DeviceGoneError",
    "DeviceNotFoundError",
    "FeatureUnsupportedError",
    "KernelError",
    "NotRecordedError",
    "PrivilegeError",
    "PytunHashError",
    "PytunHashWarning",
    "SteeringConflictError",
    "Terminated",
    "UnsupportedError",
    "ValidationError",
    "VerifierError",
    "clip",
    "kernel_error",
    "shorten",
]

#: Characters of a caller's value that an error message repeats (see :func:`shorten`).
MAX_ECHO_CHARS = 64
#: Characters of a :class:`ValidationError`'s rule and field beyond which they are clipped: a
#: message repeats values and lists problems, and must never grow with the input it judges.
MAX_RULE_CHARS = 4096
MAX_FIELD_CHARS = 256
# Integers wider than this are described, not printed: str() of an int is quadratic in its digits
# and refuses more than sys.get_int_max_str_digits() (4,300) digits with a plain ValueError.
_MAX_ECHO_BITS = 256


def clip(text: str, limit: int) -> str:
    """``text`` if it has at most ``limit`` characters, else its start and how long it was, in ``limit`` characters.

    Raises:
        ValueError: when ``limit`` is negative.
    """
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if len(text) <= limit:
        return text
    note = f"... ({len(text)} characters in all)"
    if len(note) >= limit:
        return text[:limit]
    return text[: limit - len(note)] + note


class _BoundedRepr(reprlib.Repr):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxstring = limit
        self.maxlong = limit
        self.maxother = limit

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > _MAX_ECHO_BITS:
            digits = int(x.bit_length() * 0.30103) + 1
            return f"<{'a negative' if x < 0 else 'an'} integer of about {digits} digits>"
        return super().repr_int(x, level)


def shorten(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """A ``repr`` of ``value`` of at most ``limit`` characters, for repeating a caller's value in a message.

    Safe for any value: long text and containers are cut, nesting is shown to three levels, and an
    integer of more than 256 bits is described by its number of digits (``str`` of a huge integer
    is slow and raises ``ValueError`` past 4,300 digits).

    Raises:
        ValueError: when ``limit`` is below 8 (too short to show anything).
    """
    if limit < 8:
        raise ValueError(f"limit must be >= 8, got {limit}")
    text = _BoundedRepr(limit).repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PytunHashError(Exception):
    """Base class of every error pytun_hash raises."""


class PytunHashWarning(UserWarning):
    """Base class of every warning pytun_hash gives: something is accepted but probably not what was meant.

    The command line shows each as one ``warning:`` line (and under ``"warnings"`` with ``--json``).
    """


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM: ``pytun-hash`` raises this from its handler and exits 143.

    A :class:`KeyboardInterrupt`, so code that unwinds or stops on Ctrl-C (SIGINT) does the same for SIGTERM.

    Attributes:
        signum: the signal that was received (``signal.SIGTERM``).
    """

    def __init__(self, signum: int = 15) -> None:
        self.signum = signum
        super().__init__(f"terminated by signal {signum}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.signum,))


class ValidationError(PytunHashError, ValueError):
    """A value breaks a rule; raised before any syscall.

    Attributes:
        field: dotted name of the offending field (``"indirection_table[3]"``), or None; at most
            :data:`MAX_FIELD_CHARS` characters (a longer one is clipped).
        rule: the rule that was broken, as a sentence; at most :data:`MAX_RULE_CHARS` characters.
        hint: what to do about it, when the raising code knows better than the field's usual
            advice (the command line shows it); None otherwise.
    """

    def __init__(self, field: str | None, rule: str, *, hint: str | None = None) -> None:
        self.field = None if field is None else clip(field, MAX_FIELD_CHARS)
        self.rule = clip(rule, MAX_RULE_CHARS)
        self.hint = None if hint is None else clip(hint, MAX_RULE_CHARS)
        super().__init__(f"{self.field}: {self.rule}" if self.field else self.rule)


class NotRecordedError(PytunHashError, LookupError):
    """Nothing is recorded for a device: pytun_hash put no hashing in force there (or the record was stale)."""


class DecodeError(ValidationError):
    """A byte payload is not a valid encoding for the revision it was decoded as."""


class KernelError(PytunHashError, OSError):
    """An ioctl or syscall failed, or the binding refused it for a kernel-level reason.

    Attributes:
        errno: the errno value (``errno.EBUSY`` ...), as the kernel gave it or would give it.
        request: the request name (``"TUNSETVNETHASH"``, ``"bpf(BPF_PROG_LOAD)"`` ...).
        hint: one sentence that tells the user what to do.
    """

    def __init__(self, err: int, request: str, hint: str, *, detail: str | None = None) -> None:
        self.request = request
        self.hint = hint
        self.detail = detail
        name = _errno.errorcode.get(err, str(err))
        text = f"{request} failed with {name} ({os.strerror(err)}): {hint}"
        if detail:
            text = f"{text} [{detail}]"
        super().__init__(err, text)

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.errno, self.request, self.hint), {"detail": self.detail})


class FeatureUnsupportedError(KernelError):
    """The running kernel lacks the feature (for example: no hash ioctls of any revision)."""


class UnsupportedError(KernelError):
    """The kernel refused a setting it does not support (for example big-endian vnet headers)."""


class DeviceGoneError(KernelError):
    """The TUN/TAP device behind a queue fd was deleted (``EBADFD``), or the fd was never attached."""


class DeviceNotFoundError(KernelError):
    """No network device of that name or index exists (``ENODEV``) in the caller's namespace."""


class PrivilegeError(KernelError):
    """The caller lacks a capability (``EPERM``/``EACCES``)."""


class BusyError(KernelError):
    """The operation conflicts with the device's current state (``EBUSY``)."""


class SteeringConflictError(BusyError):
    """Native RSS and an eBPF steering program are mutually exclusive; no ioctl was issued."""


class DeviceFlagsMismatchError(KernelError):
    """``TUNSETIFF`` named an existing device whose flags differ from the requested ones."""


class BpfError(KernelError):
    """A ``bpf(2)`` command failed."""


class VerifierError(BpfError):
    """The eBPF verifier rejected a program; :attr:`log` holds its log."""

    def __init__(self, err: int, request: str, hint: str, *, log: str = "") -> None:
        self.log = log
        tail = log.strip().splitlines()[-3:] if log else []
        super().__init__(err, request, hint, detail=" | ".join(tail) or None)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.errno, self.request, self.hint), {"log": self.log})


_GENERIC_HINTS: dict[int, tuple[type[KernelError], str]] = {
    _errno.EBADFD: (
        DeviceGoneError,
        "the queue fd has no live device: it was never attached (no TUNSETIFF) or the device was "
        "deleted; open the device again",
    ),
    _errno.EPERM: (
        PrivilegeError,
        "run as root or grant CAP_NET_ADMIN (CAP_BPF and CAP_NET_ADMIN for eBPF) in the device's network namespace",
    ),
    _errno.EACCES: (
        PrivilegeError,
        "the caller may not open or use the device: run as root, or make /dev/net/tun accessible "
        "and grant CAP_NET_ADMIN",
    ),
    _errno.EBUSY: (
        BusyError,
        "the device is in a state that conflicts with this call; undo the conflicting setting "
        "first (or check that no other process holds the queue)",
    ),
    _errno.ENODEV: (
        DeviceNotFoundError,
        "no such network device in this network namespace; check the name (ip link) and the namespace",
    ),
    _errno.EBADF: (KernelError, "the file descriptor is closed or not valid; use an open queue fd"),
    _errno.EFAULT: (KernelError, "the kernel could not read or write the argument buffer; this is a bug"),
    _errno.ENOTTY: (UnsupportedError, "the file descriptor is not a TUN/TAP queue"),
    # Also what a seccomp-trapped call returns once its supervisor is gone.
    _errno.ENOSYS: (
        FeatureUnsupportedError,
        "the kernel does not implement this call; under pytun_hash.testing.KernelEmulator it means the "
        "emulator's supervisor is gone (run() timed out or failed): close the emulator and start a new one",
    ),
}


def kernel_error(err: int, request: str, hint: str | None = None, *, detail: str | None = None) -> KernelError:
    """Build the most specific :class:`KernelError` for ``err`` on ``request``.

    Args:
        err: the errno value.
        request: the request name.
        hint: an actionable sentence; when None a generic one for ``err`` is used.
        detail: extra context appended to the message.
    """
    cls, generic = _GENERIC_HINTS.get(err, (KernelError, "see the kernel documentation of this request"))
    return cls(err, request, hint or generic, detail=detail)
