"""The kernel's ``_IOC`` encoding, per architecture family.

Linux packs an ioctl request as ``dir | size | type | nr``, but the width of the
size field and the values of the direction bits differ between architecture
families (``include/uapi/asm-generic/ioctl.h`` and the ``arch/*/include/uapi/asm/ioctl.h``
overrides). Hard-coding the x86 numbers, as several Python TUN libraries do, gives
wrong requests on powerpc, mips, sparc, alpha and parisc.
"""

from __future__ import annotations

import enum
import platform
import sys

import attrs

from pytun_hash._abi.layout import ByteOrder
from pytun_hash.errors import ValidationError, shorten


class IocDir(enum.Flag):
    """Direction of an ioctl's data transfer, as seen from user space."""

    NONE = 0
    WRITE = enum.auto()
    READ = enum.auto()


@attrs.frozen
class IocLayout:
    """Bit layout of ``_IOC`` for one architecture family."""

    family: str
    size_bits: int
    dir_bits: int
    none: int
    read: int
    write: int
    pointer_size: int = 8

    @property
    def nr_shift(self) -> int:
        return 0

    @property
    def type_shift(self) -> int:
        return 8

    @property
    def size_shift(self) -> int:
        return 16

    @property
    def dir_shift(self) -> int:
        return 16 + self.size_bits

    def encode(self, direction: IocDir, type_: int, nr: int, size: int) -> int:
        """Return the request number ``_IOC(dir, type, nr, size)``.

        Raises:
            ValidationError: (a ValueError) when ``type_``, ``nr`` or ``size`` do not fit their fields.
        """
        if not 0 <= type_ < 256 or not 0 <= nr < 256:
            raise ValidationError("ioctl", f"type {type_:#x} and nr {nr:#x} must each fit in 8 bits")
        if not 0 <= size < (1 << self.size_bits):
            raise ValidationError("ioctl", f"size {size} does not fit the {self.size_bits}-bit field of {self.family}")
        bits = self.none if direction == IocDir.NONE else 0
        if IocDir.READ in direction:
            bits |= self.read
        if IocDir.WRITE in direction:
            bits |= self.write
        return (bits << self.dir_shift) | (size << self.size_shift) | (type_ << self.type_shift) | nr


# asm-generic/ioctl.h: x86, arm, arm64, riscv, s390, loongarch, ...
GENERIC = IocLayout("generic", size_bits=14, dir_bits=2, none=0, read=2, write=1)
GENERIC32 = attrs.evolve(GENERIC, family="generic32", pointer_size=4)
# arch/{powerpc,mips,sparc,alpha}/include/uapi/asm/ioctl.h: 13 size bits, 3 direction bits.
THREE_DIR_BITS = IocLayout("powerpc/mips/sparc/alpha", size_bits=13, dir_bits=3, none=1, read=2, write=4)
THREE_DIR_BITS32 = attrs.evolve(THREE_DIR_BITS, family="powerpc/mips/sparc (32-bit)", pointer_size=4)
# arch/parisc/include/uapi/asm/ioctl.h: generic widths, READ and WRITE swapped.
PARISC = IocLayout("parisc", size_bits=14, dir_bits=2, none=0, read=1, write=2, pointer_size=4)
PARISC64 = attrs.evolve(PARISC, family="parisc64", pointer_size=8)

_MACHINES: dict[str, IocLayout] = {
    "x86_64": GENERIC,
    "amd64": GENERIC,
    "i386": GENERIC32,
    "i486": GENERIC32,
    "i586": GENERIC32,
    "i686": GENERIC32,
    "aarch64": GENERIC,
    "arm64": GENERIC,
    "armv6l": GENERIC32,
    "armv7l": GENERIC32,
    "armv8l": GENERIC32,
    "riscv64": GENERIC,
    "riscv32": GENERIC32,
    "s390x": GENERIC,
    "loongarch64": GENERIC,
    "ppc64le": THREE_DIR_BITS,
    "ppc64": THREE_DIR_BITS,
    "ppc": THREE_DIR_BITS32,
    "ppcle": THREE_DIR_BITS32,
    "mips": THREE_DIR_BITS32,
    "mipsel": THREE_DIR_BITS32,
    "mips64": THREE_DIR_BITS,
    "mips64el": THREE_DIR_BITS,
    "sparc": THREE_DIR_BITS32,
    "sparc64": THREE_DIR_BITS,
    "alpha": THREE_DIR_BITS,
    "parisc": PARISC,
    "parisc64": PARISC64,
}

KNOWN_MACHINES: tuple[str, ...] = tuple(sorted(_MACHINES))

_BIG_ENDIAN_MACHINES = frozenset({"ppc64", "ppc", "mips", "mips64", "sparc", "sparc64", "s390x", "parisc", "parisc64"})


def byteorder_for(machine: str | None = None) -> ByteOrder:
    """``"little"`` or ``"big"``: the byte order of ``machine`` (None = this host).

    The hash UAPI structs and the RFC's indirection table are host-endian, so a payload
    built for another machine must use that machine's order.

    Raises:
        ValidationError: (a ValueError) for a machine name this table does not know.
    """
    if machine is None:
        return "little" if sys.byteorder == "little" else "big"
    layout_for(machine)
    return "big" if machine in _BIG_ENDIAN_MACHINES else "little"


def layout_for(machine: str | None = None) -> IocLayout:
    """Return the ``_IOC`` layout of ``machine`` (``platform.machine()`` spelling; None = this host).

    Raises:
        ValidationError: (a ValueError) for a machine name this table does not know.
    """
    name = platform.machine() if machine is None else machine
    try:
        return _MACHINES[name]
    except (KeyError, TypeError):
        raise ValidationError("arch", f"unknown machine {shorten(name)}; known: {', '.join(KNOWN_MACHINES)}") from None
