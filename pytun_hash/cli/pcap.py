"""Classic libpcap files, read with the standard library.

Supported: the microsecond (magic ``a1b2c3d4``) and nanosecond (``a1b23c4d``) formats in
either byte order, link types 1 (Ethernet: TAP frames), 101 (raw IP), 228 (raw IPv4) and 229
(raw IPv6) (TUN packets). pcapng files are recognised and refused with a hint. Records are
read one at a time, so files of any size stream through in constant memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from types import TracebackType
from typing import BinaryIO

import attrs

from pytun_hash._files import open_regular_file
from pytun_hash.errors import ValidationError
from pytun_hash.model import Framing

__all__ = ["LINKTYPE_FRAMING", "MAX_RECORD_BYTES", "PcapPacket", "PcapReader"]

#: The link types the hash model can read, and how their packets are framed.
LINKTYPE_FRAMING = {1: Framing.ETHERNET, 101: Framing.IP, 228: Framing.IP, 229: Framing.IP}
#: A record longer than this (bytes) means a corrupt file (the largest snapshot length tools use is 256 KiB).
MAX_RECORD_BYTES = 1 << 18

_MAGICS = {
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\x3c\x4d": (">", True),
    b"\x4d\x3c\xb2\xa1": ("<", True),
}
_PCAPNG = b"\x0a\x0d\x0d\x0a"
_GLOBAL_REST = 20  # version major/minor, thiszone, sigfigs, snaplen, network
_RECORD = 16


@attrs.frozen
class PcapPacket:
    """One captured packet.

    Attributes:
        timestamp: seconds since the epoch.
        data: the captured bytes (maybe fewer than the packet had: see ``original_length``).
        original_length: the packet's length on the wire, bytes.
    """

    timestamp: float
    data: bytes
    original_length: int

    @property
    def truncated(self) -> bool:
        """Whether the capture kept fewer bytes than the packet had."""
        return len(self.data) < self.original_length


class PcapReader:
    """Read a classic pcap file record by record (context manager; iterate for packets).

    Args:
        path: the file.

    Attributes:
        linktype: the file's link type (``LINKTYPE_*``).
        framing: how the hash model must read the packets.
        nanosecond: whether timestamps have nanosecond resolution.
        count: packets read so far.
        truncated: packets read so far that the capture truncated.

    Raises:
        ValidationError: (field ``pcap``) when the file cannot be opened, is not a classic pcap
            file, or has a link type the model cannot read.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: BinaryIO = open_regular_file(path, "pcap")
        try:
            self._order, self.nanosecond, self.linktype = self._read_header()
        except BaseException:
            self._file.close()
            raise
        self.framing = LINKTYPE_FRAMING[self.linktype]
        self.count = 0
        self.truncated = 0

    def _fail(self, rule: str) -> ValidationError:
        return ValidationError("pcap", f"{self.path}: {rule}")

    def _read_header(self) -> tuple[str, bool, int]:
        magic = self._file.read(4)
        if magic == _PCAPNG:
            raise self._fail(
                "this is a pcapng file; convert it with `editcap -F pcap IN OUT` or `tcpdump -r IN -w OUT`"
            )
        if magic not in _MAGICS:
            raise self._fail("not a pcap file (unknown magic number)")
        order, nanosecond = _MAGICS[magic]
        rest = self._file.read(_GLOBAL_REST)
        if len(rest) < _GLOBAL_REST:
            raise self._fail("the file header is cut short")
        _major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack(f"{order}HHiIII", rest)
        linktype = network & 0x0FFFFFFF  # the upper bits carry FCS information
        if linktype not in LINKTYPE_FRAMING:
            raise self._fail(f"link type {linktype} is not supported (only 1 = Ethernet, 101/228/229 = raw IP)")
        return order, nanosecond, linktype

    def __iter__(self) -> Iterator[PcapPacket]:
        """Yield the packets in file order.

        Raises:
            ValidationError: for a record whose header or data is cut short, or an absurd length.
        """
        record = struct.Struct(f"{self._order}IIII")
        scale = 1e-9 if self.nanosecond else 1e-6
        while True:
            head = self._file.read(_RECORD)
            if not head:
                return
            if len(head) < _RECORD:
                raise self._fail(f"record {self.count} header is cut short")
            seconds, fraction, included, original = record.unpack(head)
            if included > MAX_RECORD_BYTES:
                raise self._fail(f"record {self.count} claims {included} bytes; the file is corrupt")
            data = self._file.read(included)
            if len(data) < included:
                raise self._fail(f"record {self.count} is cut short ({len(data)} of {included} bytes)")
            packet = PcapPacket(seconds + fraction * scale, data, original)
            self.count += 1
            self.truncated += packet.truncated
            yield packet

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()

    def __enter__(self) -> PcapReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
