"""Packing and parsing the ABI's ctypes structures in either byte order, padding included.

The codecs build every payload from the structures in this package (the ones the gcc test checks
field by field), so the bytes sent are exactly the layout that test covers. A structure in the
other byte order is the same field list on ``ctypes.BigEndianStructure`` or
``LittleEndianStructure``: every field here is at most 4 bytes wide, so the layout is the same on
every architecture family and only the byte order differs.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any, Literal

__all__ = ["ByteOrder", "in_byte_order", "pack", "padding_offsets", "unpack"]

ByteOrder = Literal["little", "big"]

_BASES: dict[str, type[ctypes.Structure]] = {
    "little": ctypes.LittleEndianStructure,
    "big": ctypes.BigEndianStructure,
}


@functools.cache
def in_byte_order(cls: type[ctypes.Structure], order: ByteOrder) -> type[ctypes.Structure]:
    """``cls`` with its fields in byte order ``order`` (``cls`` itself for the host's order)."""
    if order == sys.byteorder:
        return cls
    variant = type(cls.__name__, (_BASES[order],), {"_fields_": cls._fields_})
    return variant


def pack(cls: type[ctypes.Structure], order: ByteOrder, **fields: Any) -> bytes:
    """The bytes of ``cls(**fields)`` in ``order``; padding (hidden or unset) is zero."""
    return bytes(in_byte_order(cls, order)(**fields))


def unpack(cls: type[ctypes.Structure], payload: bytes, order: ByteOrder, offset: int = 0) -> Any:
    """``cls`` (in ``order``) read from ``payload`` at ``offset``; the caller checked the length."""
    return in_byte_order(cls, order).from_buffer_copy(payload, offset)


@functools.cache
def padding_offsets(cls: type[ctypes.Structure]) -> tuple[int, ...]:
    """Offsets of the bytes of ``cls`` that no field covers (hidden padding)."""
    covered: set[int] = set()
    for name, *_ in cls._fields_:
        field = getattr(cls, name)
        covered.update(range(field.offset, field.offset + field.size))
    return tuple(i for i in range(ctypes.sizeof(cls)) if i not in covered)
