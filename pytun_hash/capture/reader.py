"""Capture files, read with the standard library: classic pcap and pcapng.

Formats:

* classic libpcap: the microsecond (magic ``a1b2c3d4``) and nanosecond (``a1b23c4d``) formats in
  either byte order;
* pcapng: Section Header Blocks (either byte order, several sections), Interface Description Blocks
  (several interfaces with different link types; ``if_tsresol`` and ``if_tsoffset`` for timestamps),
  Enhanced Packet Blocks and Simple Packet Blocks (interface 0, no timestamp); every other block
  (statistics, name resolution, custom, ...) is skipped.

Link types (:data:`LINK_TYPES`): 1 (Ethernet: TAP frames), 101 (raw IP), 228 (raw IPv4), 229 (raw
IPv6) (TUN packets), and the Linux cooked captures 113 (SLL, ``tcpdump -i any``) and 276 (SLL2). The
model reads a cooked packet as the Ethernet frame with the same ethertype and payload (the cooked
header's protocol field is the ethertype, VLAN tags re-inserted by libpcap included), so a cooked
capture predicts exactly as the Ethernet capture of the same packets (:attr:`CapturePacket.frame`).

Records are read in batches (:meth:`CaptureReader.batches`): the file is read in pieces of
:data:`READ_BYTES`, and a batch holds the offsets of at most ``max_records`` complete records inside
one piece, so files of any size stream through in bounded memory (a piece, at most
:data:`MAX_BLOCK_BYTES` more for a record crossing its end, and the offsets). Iterating a reader
yields the packets one by one from the same batches.

Every malformed file raises :class:`~pytun_hash.errors.ValidationError` (field ``pcap``): an unknown
magic, a header, record or block cut short, a record longer than :data:`MAX_RECORD_BYTES`, a block
longer than :data:`MAX_BLOCK_BYTES` or whose two length fields differ, a packet of an undeclared
interface or of a link type the model cannot read. Files are opened with
:func:`~pytun_hash._files.open_regular_file` (no FIFOs, devices or pseudo-filesystems).
"""

from __future__ import annotations

import io
import os
import struct
from array import array
from collections.abc import Iterator, Sequence
from operator import sub
from types import TracebackType
from typing import Any, cast

import attrs

from pytun_hash._files import open_regular_file
from pytun_hash.errors import ValidationError
from pytun_hash.model.packet import Framing

__all__ = [
    "DEFAULT_BATCH_RECORDS",
    "LINK_TYPES",
    "LINKTYPE_FRAMING",
    "MAX_BLOCK_BYTES",
    "ITER_READ_BYTES",
    "MAX_RECORD_BYTES",
    "MIN_READ_BYTES",
    "READ_BYTES",
    "CapturePacket",
    "CaptureReader",
    "LinkType",
    "PcapPacket",
    "PcapReader",
    "RecordBatch",
]

#: A record longer than this (bytes) means a corrupt file (the largest snapshot length tools use is 256 KiB).
MAX_RECORD_BYTES = 1 << 18
#: A pcapng block longer than this (bytes: a largest record and 64 KiB of options) means a corrupt file.
MAX_BLOCK_BYTES = MAX_RECORD_BYTES + (1 << 16)
#: How much of the file :meth:`CaptureReader.batches` reads at once by default (bytes); batches are
#: cut from such pieces.
READ_BYTES = 4 << 20
#: The smallest piece (bytes): a largest block and the next record's header.
MIN_READ_BYTES = MAX_BLOCK_BYTES + 64
#: The pieces iterating a reader packet by packet reads (bytes): small, as only one packet is used at a time.
ITER_READ_BYTES = 512 << 10
#: Records per batch unless the caller says otherwise.
DEFAULT_BATCH_RECORDS = 65536

_FIELD = "pcap"
_PCAP_MAGICS = {
    b"\xa1\xb2\xc3\xd4": (">", False),
    b"\xd4\xc3\xb2\xa1": ("<", False),
    b"\xa1\xb2\x3c\x4d": (">", True),
    b"\x4d\x3c\xb2\xa1": ("<", True),
}
_PCAP_GLOBAL = 24  # magic, version major/minor, thiszone, sigfigs, snaplen, network
_PCAP_RECORD = 16
# pcapng block types.
_SHB = 0x0A0D0D0A
_IDB = 1
_SPB = 3
_EPB = 6
_SHB_MAGIC = b"\x0a\x0d\x0d\x0a"
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_EPB_DATA = 28  # block type, length, interface, timestamp (2 words), captured and original length
_SPB_DATA = 12  # block type, length, original length
# Interface Description Block options.
_OPT_END = 0
_OPT_TSRESOL = 9
_OPT_TSOFFSET = 14


@attrs.frozen
class LinkType:
    """A link type the model can read, and how its packets become the frames the model reads.

    Attributes:
        number: the ``LINKTYPE_*`` value.
        name: its short name (``ethernet``, ``raw``, ``ipv4``, ``ipv6``, ``linux-sll``, ``linux-sll2``).
        framing: how the model reads the frames (Ethernet or raw IP).
        skip: bytes of a record before its frame starts (the SLL header's first two fields: the
            rest ends with the protocol, in an Ethernet header's place).
        cooked2: the record is SLL2: its protocol field (first) moves to the Ethernet header's
            ethertype position (12) of a frame made of record bytes ``6:18``, the protocol and the
            payload from byte 20; a record shorter than its 20-byte header gives an empty frame.
    """

    number: int
    name: str
    framing: Framing
    skip: int = 0
    cooked2: bool = False

    def frame(self, data: bytes) -> bytes:
        """The frame the model reads for a record's captured ``data`` (see the class attributes)."""
        if self.cooked2:
            return data[6:18] + data[0:2] + data[20:] if len(data) >= 20 else b""
        return data[self.skip :] if self.skip else data


#: The link types the model can read, by number.
LINK_TYPES: dict[int, LinkType] = {
    1: LinkType(1, "ethernet", Framing.ETHERNET),
    101: LinkType(101, "raw", Framing.IP),
    228: LinkType(228, "ipv4", Framing.IP),
    229: LinkType(229, "ipv6", Framing.IP),
    113: LinkType(113, "linux-sll", Framing.ETHERNET, skip=2),
    276: LinkType(276, "linux-sll2", Framing.ETHERNET, skip=6, cooked2=True),
}
#: How the model frames the packets of each readable link type.
LINKTYPE_FRAMING = {number: link.framing for number, link in LINK_TYPES.items()}
_SUPPORTED = "1 = Ethernet, 101/228/229 = raw IP, 113/276 = Linux cooked"


@attrs.frozen
class _Clock:
    """How a record's two timestamp words become seconds: classic pcap (seconds, fraction * unit)
    or pcapng (a 64-bit count of units, plus an offset in seconds)."""

    pcapng: bool
    unit: float
    offset: int = 0

    def seconds(self, high: int, low: int) -> float:
        if self.pcapng:
            return ((high << 32) | low) * self.unit + self.offset
        return high + low * self.unit


@attrs.frozen
class CapturePacket:
    """One captured packet.

    Attributes:
        timestamp: seconds since the epoch; None for a pcapng Simple Packet Block (it has none).
        data: the captured bytes as recorded (maybe fewer than the packet had: see ``original_length``).
        original_length: the packet's length on the wire, bytes.
        link: its interface's link type.
    """

    timestamp: float | None
    data: bytes
    original_length: int
    link: LinkType = LINK_TYPES[1]

    @property
    def truncated(self) -> bool:
        """Whether the capture kept fewer bytes than the packet had."""
        return len(self.data) < self.original_length

    @property
    def frame(self) -> bytes:
        """The frame the model reads (cooked headers turned into an Ethernet header; see :class:`LinkType`)."""
        return self.link.frame(self.data)

    @property
    def framing(self) -> Framing:
        """How the model reads :attr:`frame`."""
        return self.link.framing


#: The name this class had in ``pytun_hash.cli.pcap``.
PcapPacket = CapturePacket


@attrs.frozen(eq=False)
class RecordBatch:
    """Complete records of one link type lying in one piece of the file, as offsets (no copies).

    Attributes:
        buffer: the piece of the file (never changed once a batch refers to it).
        starts: offset in ``buffer`` of each record's captured data.
        lengths: each record's captured length, or None where it is the ``order`` u32 8 bytes before
            its data, and the original length the u32 4 bytes before (classic pcap records and
            pcapng Enhanced Packet Blocks share that layout; the timestamp words are the 16 and 12
            bytes before).
        originals: original lengths when ``lengths`` is given (Simple Packet Blocks).
        order: ``"<"`` or ``">"``, the byte order of the length and timestamp fields.
        link: the link type of every record.
        first: index in the file of the first record.
    """

    # Sequences of int (``array('q')``: int64 buffers that numpy reads without copying).
    buffer: bytes | bytearray
    starts: Sequence[int]
    lengths: Sequence[int] | None
    originals: Sequence[int] | None
    order: str
    link: LinkType
    first: int
    clock: _Clock | None

    def __len__(self) -> int:
        return len(self.starts)

    def packets(self) -> Iterator[CapturePacket]:
        """The records as :class:`CapturePacket`, in file order."""
        buf, link = self.buffer, self.link
        if self.lengths is None:
            unpack = struct.Struct(self.order + "IIII").unpack_from
            clock = self.clock
            assert clock is not None
            for start in self.starts:
                high, low, captured, original = unpack(buf, start - 16)
                yield CapturePacket(clock.seconds(high, low), bytes(buf[start : start + captured]), original, link)
        else:
            assert self.originals is not None
            for start, captured, original in zip(self.starts, self.lengths, self.originals, strict=True):
                yield CapturePacket(None, bytes(buf[start : start + captured]), original, link)


def _numpy() -> Any:
    """The numpy module, or None when it is not installed (the reader works without it)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


# How far (seconds) a record's timestamp may be from the first one of its piece for the column-wise
# walk to take it as a record header (a piece holds seconds to hours of traffic).
_STAMP_WINDOW = 1 << 20
# Breaks in the candidates' chain the column-wise walk follows one by one (each false candidate makes
# two); more, and the record-by-record walk is the cheaper one.
_MAX_CHAIN_BREAKS = 4096


def _walk_columns(
    np: Any, buf: bytes | bytearray, start: int, end: int, order: str, nanosecond: bool
) -> tuple[array[int], int] | None:
    """The classic pcap records complete in ``buf[start:end]``, found column-wise: their data offsets
    and the offset of the next record's data; None when this cannot vouch for the answer.

    Candidates are the offsets whose 16 bytes look like a record header of this piece: the timestamp's
    high byte equal to the first record's (one comparison per byte of the piece), then a timestamp
    within :data:`_STAMP_WINDOW` of it, a fraction below one second, a captured length at most
    :data:`MAX_RECORD_BYTES` and the original length. The answer is vouched for when the candidates
    chain of records from ``start`` (candidates in payloads, which the chain never reaches, are
    dropped): each one's length leads to the next, and the record after the last one does not have
    a whole header in the piece. Anything else (a header that does not look like one) returns None,
    and the caller walks record by record: the result is the same either way.
    """
    if end - start < _PCAP_RECORD:
        return None
    # Row p: the four u32 of a record header at byte p (unaligned): one gather per candidate.
    headers = np.ndarray((len(buf) - _PCAP_RECORD + 1, 4), dtype=order + "u4", buffer=buf, strides=(1, 4))
    first = int(headers[start, 0])
    top = 3 if order == "<" else 0  # where the timestamp's high byte is
    data = np.frombuffer(buf, dtype=np.uint8)
    hits = np.flatnonzero(data[start + top : end - _PCAP_RECORD + top + 1] == first >> 24)
    hits += start
    fields = headers[hits]
    captured = fields[:, 2].astype(np.int64)
    keep = (np.abs(fields[:, 0].astype(np.int64) - first) <= _STAMP_WINDOW) & (
        fields[:, 1] < (1_000_000_000 if nanosecond else 1_000_000)
    )
    keep &= (captured <= MAX_RECORD_BYTES) & (captured <= fields[:, 3])
    heads = hits[keep]
    following = heads + _PCAP_RECORD + captured[keep]
    if not len(heads) or heads[0] != start:
        return None
    if not bool((following[:-1] == heads[1:]).all()):
        # Payload bytes may look like a header too (an IPv4 address can pass for a timestamp of the
        # piece's). The chain from the first record never reaches one (a record's length leads to
        # the next record): follow it across the breaks only, a few per piece, and drop the
        # candidates it steps over.
        breaks = np.flatnonzero(following[:-1] != heads[1:])
        if len(breaks) > _MAX_CHAIN_BREAKS:
            return None
        alive = np.ones(len(heads), dtype=bool)
        current = 0  # the record the chain is at; no break between it and the next break
        for brk in breaks.tolist():
            if brk < current:
                continue  # a candidate the chain stepped over
            target = int(following[brk])
            nxt = int(np.searchsorted(heads, target))
            if nxt >= len(heads) or int(heads[nxt]) != target:
                alive[brk + 1 :] = False  # the chain leaves the candidates here (checked below)
                break
            alive[brk + 1 : nxt] = False
            current = nxt
        heads = heads[alive]
        following = following[alive]
        if not bool((following[:-1] == heads[1:]).all()):
            return None
    after = int(following[-1])
    if after > end:  # the last record's data runs past the piece: it is read with the next one
        after = int(heads[-1])
        heads = heads[:-1]
        if not len(heads):
            return None
    elif after + _PCAP_RECORD <= end:  # a whole header there that is no candidate
        return None
    starts = array("q")
    starts.frombytes((heads + _PCAP_RECORD).astype(np.int64).tobytes())
    return starts, after + _PCAP_RECORD


class CaptureReader:
    """Read a classic pcap or a pcapng file (context manager; iterate for packets, or :meth:`batches`).

    Args:
        path: the file.

    Attributes:
        path: the file.
        format: ``"pcap"`` or ``"pcapng"``.
        linktype: the link type of a classic pcap file; of a pcapng file, that of its first interface
            (0 until one is read).
        linktypes: the link types of the interfaces whose packets were read so far.
        nanosecond: a classic pcap file with nanosecond timestamps.
        size: the file's size, bytes.
        position: bytes of the file read and parsed so far (for progress).
        count: packets read so far.
        truncated: packets read so far (by iteration) that the capture truncated.

    Raises:
        ValidationError: (field ``pcap``) when the file cannot be opened, is neither a classic pcap nor
            a pcapng file, its header is malformed, or (classic pcap) its link type is not one of
            :data:`LINK_TYPES`.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        # A buffered reader (what open_regular_file makes): pieces are read into place with readinto.
        self._file = cast(io.BufferedReader, open_regular_file(path, _FIELD))
        try:
            self.size = os.fstat(self._file.fileno()).st_size
            self.count = 0
            self.truncated = 0
            self.position = 0
            self.linktype = 0
            self.linktypes: set[int] = set()
            self.nanosecond = False
            self._started = False
            self._piece = READ_BYTES
            self._open()
        except BaseException:
            self._file.close()
            raise

    def _fail(self, rule: str) -> ValidationError:
        return ValidationError(_FIELD, f"{self.path}: {rule}")

    def _open(self) -> None:
        magic = self._file.read(4)
        self._head = magic
        if magic == _SHB_MAGIC:
            self.format = "pcapng"
            return
        if magic not in _PCAP_MAGICS:
            raise self._fail("not a pcap or pcapng file (unknown magic number)")
        self.format = "pcap"
        self._order, self.nanosecond = _PCAP_MAGICS[magic]
        rest = self._file.read(_PCAP_GLOBAL - 4)
        if len(rest) < _PCAP_GLOBAL - 4:
            raise self._fail("the file header is cut short")
        _major, _minor, _zone, _sigfigs, _snaplen, network = struct.unpack(f"{self._order}HHiIII", rest)
        linktype = network & 0x0FFFFFFF  # the upper bits carry FCS information
        if linktype not in LINK_TYPES:
            raise self._fail(f"link type {linktype} is not supported (only {_SUPPORTED})")
        self.linktype = linktype
        self.linktypes.add(linktype)
        self.position = _PCAP_GLOBAL

    # ------------------------------------------------------------------ reading

    def batches(
        self, max_records: int = DEFAULT_BATCH_RECORDS, *, read_bytes: int = READ_BYTES
    ) -> Iterator[RecordBatch]:
        """Yield the records in batches of at most ``max_records``, in file order (read once).

        A batch refers to a piece of the file of ``read_bytes`` (at least :data:`MIN_READ_BYTES`)
        plus at most a record: memory stays bounded whatever the file's size. :attr:`count` and
        :attr:`position` advance by batch.

        Raises:
            ValidationError: (field ``pcap``) for a malformed file (module documentation), after the
                batches of the records before the fault; or when ``max_records`` < 1.
        """
        if isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1:
            raise ValidationError("max_records", f"must be an integer >= 1, got {max_records!r}")
        if self._started:
            raise ValidationError(_FIELD, f"{self.path}: the records were already read")
        self._started = True
        self._piece = max(int(read_bytes), MIN_READ_BYTES)
        source = self._pcap_batches(max_records) if self.format == "pcap" else self._pcapng_batches(max_records)
        for batch in source:
            self.count += len(batch)
            yield batch

    def __iter__(self) -> Iterator[CapturePacket]:
        """Yield the packets in file order.

        Raises:
            ValidationError: (field ``pcap``) for a malformed file (module documentation), after the
                packets before the fault.
        """
        if self._started:
            raise ValidationError(_FIELD, f"{self.path}: the records were already read")
        self._started = True
        self._piece = ITER_READ_BYTES
        source = self._pcap_batches(1024) if self.format == "pcap" else self._pcapng_batches(256)
        for batch in source:
            for packet in batch.packets():
                self.count += 1
                self.truncated += packet.truncated
                yield packet

    def _read(self, buf: bytes | bytearray, start: int, need: int) -> tuple[bytearray, bool]:
        """A new piece: ``buf[start:]`` then at least ``need`` more bytes of the file (fewer at its
        end); and whether the end was reached. Read straight into the new piece (no copy of it): the
        previous piece stays as it was for the batches that refer to it."""
        size = max(self._piece, need)
        kept = len(buf) - start
        piece = bytearray(kept + size)
        piece[:kept] = memoryview(buf)[start:]
        view = memoryview(piece)
        got = kept
        while got < len(piece):
            n = self._file.readinto(view[got:])
            if not n:
                break
            got += n
        view.release()
        if got < len(piece):
            del piece[got:]
        return piece, got - kept < size

    def _pcap_batches(self, max_records: int) -> Iterator[RecordBatch]:
        order = self._order
        link = LINK_TYPES[self.linktype]
        clock = _Clock(False, 1e-9 if self.nanosecond else 1e-6)
        unpack_u32 = struct.Struct(order + "I").unpack_from
        numpy = _numpy()
        buf: bytes | bytearray = b""
        start = 0
        base = _PCAP_GLOBAL  # file offset of buf[0]
        eof = False
        index = 0
        while True:
            if not eof and len(buf) - start < MIN_READ_BYTES:
                base += start
                buf, eof = self._read(buf, start, MIN_READ_BYTES)
                start = 0
            end = len(buf)
            # The walk from record to record is sequential (each length says where the next record
            # starts). With numpy it is first tried column-wise (_walk_columns); otherwise, or when
            # that cannot vouch for its result, it is the one loop per record left, collecting data
            # offsets only. A record is complete when its data ends by the end of the piece.
            found = _walk_columns(numpy, buf, start, end, order, self.nanosecond) if numpy else None
            bad = None
            bad_data = 0
            offsets: list[int] | array[int]
            if found is not None:
                starts, pos = found
                offsets = starts  # only tested for emptiness below
            else:
                offsets = []
                append = offsets.append
                pos = start + _PCAP_RECORD
                limit = end + _PCAP_RECORD
                try:
                    while True:
                        following = pos + _PCAP_RECORD + unpack_u32(buf, pos - 8)[0]
                        if following > limit:
                            break
                        append(pos)
                        pos = following
                except struct.error:  # the piece ends inside the next record's length field
                    pass
            if not offsets:
                rest = buf[start:]
                if len(rest) >= 12 and unpack_u32(rest, 8)[0] > MAX_RECORD_BYTES:
                    raise self._fail(f"record {index} claims {unpack_u32(rest, 8)[0]} bytes; the file is corrupt")
                if not eof:
                    continue
                if not rest:
                    return
                if len(rest) < _PCAP_RECORD:
                    raise self._fail(f"record {index} header is cut short")
                captured = unpack_u32(rest, 8)[0]
                raise self._fail(f"record {index} is cut short ({len(rest) - _PCAP_RECORD} of {captured} bytes)")
            if found is None:
                fence = [*offsets, pos]
                if max(map(sub, fence[1:], offsets)) > MAX_RECORD_BYTES + _PCAP_RECORD:
                    bad = next(i for i, gap in enumerate(map(sub, fence[1:], offsets)) if gap > MAX_RECORD_BYTES + 16)
                    bad_data = fence[bad]
                    del offsets[bad:]
                starts = array("q", offsets)
            for first in range(0, len(starts), max_records):
                part = starts[first : first + max_records]
                self.position = base + part[-1] + unpack_u32(buf, part[-1] - 8)[0]
                yield RecordBatch(buf, part, None, None, order, link, index + first, clock)
            if bad is not None:
                claimed = unpack_u32(buf, bad_data - 8)[0]
                raise self._fail(f"record {index + bad} claims {claimed} bytes; the file is corrupt")
            index += len(starts)
            start = pos - _PCAP_RECORD

    def _pcapng_batches(self, max_records: int) -> Iterator[RecordBatch]:
        buf: bytes | bytearray = self._head
        start = 0
        base = 0
        eof = False
        index = 0
        order = "<"
        u32 = struct.Struct("<I").unpack_from
        interfaces: list[tuple[int, _Clock, int]] = []  # link type, clock, snap length
        section = False
        while True:
            if not eof and len(buf) - start < MIN_READ_BYTES:
                base += start
                buf, eof = self._read(buf, start, MIN_READ_BYTES)
                start = 0
            end = len(buf)
            if start == end:
                return
            if end - start < 12:
                raise self._fail(f"block at byte {base + start} is cut short")
            block_type = u32(buf, start)[0]
            if block_type == _SHB:
                (magic,) = struct.unpack_from("<I", buf, start + 8)
                if magic == _BYTE_ORDER_MAGIC:
                    order = "<"
                elif magic == int.from_bytes(_BYTE_ORDER_MAGIC.to_bytes(4, "little"), "big"):
                    order = ">"
                else:
                    raise self._fail(f"pcapng section header at byte {base + start} has no valid byte-order magic")
                u32 = struct.Struct(order + "I").unpack_from
            elif not section:
                raise self._fail("a pcapng file must start with a section header block")
            length = u32(buf, start + 4)[0]
            smallest = _EPB_DATA + 4 if block_type == _EPB else 12
            if length < smallest or length % 4 or length > MAX_BLOCK_BYTES:
                raise self._fail(f"block at byte {base + start} has an invalid length {length}")
            if start + length > end:
                if eof:
                    raise self._fail(f"block at byte {base + start} is cut short")
                continue  # a refill brings at least MAX_BLOCK_BYTES
            if u32(buf, start + length - 4)[0] != length:
                raise self._fail(f"block at byte {base + start}: its two length fields differ")
            if block_type == _SHB:
                if length < 28:
                    raise self._fail(f"section header at byte {base + start} is too short")
                major = struct.unpack_from(order + "H", buf, start + 12)[0]
                if major != 1:
                    raise self._fail(f"pcapng version {major} is not supported (only 1)")
                section = True
                interfaces = []
            elif block_type == _IDB:
                if length < 20:
                    raise self._fail(f"interface description at byte {base + start} is too short")
                linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, start + 8)
                interfaces.append((linktype, self._interface_clock(buf, start, length, order), snaplen))
                if not self.linktype:
                    self.linktype = linktype
            elif block_type == _EPB:
                stop, batch = self._epb_run(buf, start, end, order, interfaces, index, max_records)
                self.position = base + stop
                index += len(batch)
                yield batch
                start = stop
                continue
            elif block_type == _SPB:
                if not interfaces:
                    raise self._fail(f"simple packet block at byte {base + start} before any interface")
                if length < 16:
                    raise self._fail(f"simple packet block at byte {base + start} is too short")
                original = u32(buf, start + 8)[0]
                snaplen = interfaces[0][2]
                captured = min(original, length - 16, snaplen or original)
                if captured > MAX_RECORD_BYTES:
                    raise self._fail(f"record {index} claims {captured} bytes; the file is corrupt")
                link = self._link(interfaces[0][0], index)
                self.position = base + start + length
                yield RecordBatch(
                    buf,
                    array("q", [start + _SPB_DATA]),
                    array("q", [captured]),
                    array("q", [original]),
                    order,
                    link,
                    index,
                    None,
                )
                index += 1
            start += length
            self.position = base + start

    def _link(self, linktype: int, index: int) -> LinkType:
        link = LINK_TYPES.get(linktype)
        if link is None:
            raise self._fail(f"record {index}: link type {linktype} is not supported (only {_SUPPORTED})")
        self.linktypes.add(linktype)
        return link

    def _epb_run(
        self,
        buf: bytes | bytearray,
        start: int,
        end: int,
        order: str,
        interfaces: list[tuple[int, _Clock, int]],
        index: int,
        max_records: int,
    ) -> tuple[int, RecordBatch]:
        """The Enhanced Packet Blocks from ``start`` of one interface, complete in ``buf`` (at most
        ``max_records``): where the run ends, and the batch."""
        unpack = struct.Struct(order + "7I").unpack_from
        u32 = struct.Struct(order + "I").unpack_from
        interface = unpack(buf, start)[2]
        if interface >= len(interfaces):
            raise self._fail(f"record {index} names interface {interface}, which no block described")
        linktype, clock, _snaplen = interfaces[interface]
        link = self._link(linktype, index)
        offsets: list[int] = []
        pos = start
        while len(offsets) < max_records and pos + _EPB_DATA <= end:
            block_type, length, iface, _high, _low, captured, _original = unpack(buf, pos)
            if block_type != _EPB or iface != interface:
                break
            if length < 32 or length % 4 or length > MAX_BLOCK_BYTES or pos + length > end:
                break  # the main loop reports it, or reads more
            if u32(buf, pos + length - 4)[0] != length:
                break
            if captured > length - 32:
                raise self._fail(f"record {index + len(offsets)} claims more bytes than its block holds")
            if captured > MAX_RECORD_BYTES:
                raise self._fail(f"record {index + len(offsets)} claims {captured} bytes; the file is corrupt")
            offsets.append(pos + _EPB_DATA)
            pos += length
        return pos, RecordBatch(buf, array("q", offsets), None, None, order, link, index, clock)

    def _interface_clock(self, buf: bytes | bytearray, start: int, length: int, order: str) -> _Clock:
        """The timestamp unit and offset an Interface Description Block's options give (default µs)."""
        unit = 1e-6
        offset = 0
        pos = start + 16
        stop = start + length - 4
        while pos + 4 <= stop:
            code, size = struct.unpack_from(order + "HH", buf, pos)
            if code == _OPT_END:
                break
            if pos + 4 + size > stop:
                raise self._fail(f"interface description at byte {start}: an option overruns the block")
            if code == _OPT_TSRESOL and size >= 1:
                resolution = buf[pos + 4]
                exponent = resolution & 0x7F
                # if_tsresol: a power of ten, or of two when the top bit is set (pcapng, section 4.2).
                unit = 2.0**-exponent if resolution & 0x80 else 10.0**-exponent
            elif code == _OPT_TSOFFSET and size >= 8:
                offset = struct.unpack_from(order + "q", buf, pos + 4)[0]
            pos += 4 + size + (-size % 4)
        return _Clock(True, unit, offset)

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._file.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


#: The name this class had in ``pytun_hash.cli.pcap`` (it reads pcapng files too now).
PcapReader = CaptureReader
