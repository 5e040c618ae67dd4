"""The capture reader: classic pcap, pcapng and Linux cooked captures built byte by byte, read
packet by packet and in batches; every malformed file is a ValidationError."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytun_hash.capture.reader import (
    LINK_TYPES,
    MAX_RECORD_BYTES,
    CaptureReader,
)
from pytun_hash.errors import ValidationError
from pytun_hash.model import Framing
from pytun_hash.model import frames as fb
from tests.capture import builders as b

HUGE = MAX_RECORD_BYTES + 1
FRAMES = [
    fb.ethernet(fb.ipv4("10.0.0.1", "10.0.0.2", fb.TCP, fb.tcp(1000, 80))),
    fb.ethernet(fb.ipv6("2001:db8::1", "2001:db8::2", fb.UDP, fb.udp(53, 5353)), vlans=(0x8100,)),
    fb.ethernet(fb.arp_request("10.0.0.1", "10.0.0.2"), fb.ETH_P_ARP),
    fb.ethernet(fb.ipv4("10.0.0.3", "10.0.0.4", fb.UDP, fb.udp(1, 2)), vlans=(0x88A8, 0x8100)),
]


def read(path: Path) -> list[tuple[float | None, bytes, Framing, int]]:
    with CaptureReader(str(path)) as reader:
        return [(p.timestamp, p.frame, p.framing, p.original_length) for p in reader]


def write(tmp_path: Path, data: bytes, name: str = "capture") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("magic", [b.PCAP_US, b.PCAP_NS])
def test_classic_pcap(tmp_path: Path, order: str, magic: int) -> None:
    path = write(tmp_path, b.pcap(1, FRAMES, order=order, magic=magic))
    with CaptureReader(str(path)) as reader:
        packets = list(reader)
        assert reader.format == "pcap" and reader.linktype == 1 and reader.count == len(FRAMES)
        assert reader.nanosecond == (magic == b.PCAP_NS) and reader.position == path.stat().st_size
    assert [p.data for p in packets] == FRAMES
    scale = 1e-9 if magic == b.PCAP_NS else 1e-6
    assert [p.timestamp for p in packets] == [1700000000 + i + i * scale for i in range(len(FRAMES))]


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_interfaces_link_types_and_timestamps(tmp_path: Path, order: str) -> None:
    ip = FRAMES[0][14:]
    data = (
        b.shb(order, b.option(1, b"a comment", order) + b.option(0, b"", order))
        + b.idb(1, order)  # microseconds (default)
        + b.block(0x0BAD, b"unknown block, skipped", order)
        + b.idb(101, order, tsresol=9, tsoffset=100)  # nanoseconds, offset 100 s
        + b.idb(276, order, tsresol=0x80 | 10)  # 2^-10 s
        + b.epb(0, FRAMES[0], order, stamp=1_500_000)
        + b.epb(1, ip, order, stamp=2_000_000_000)
        + b.block(5, bytes(16), order)  # an interface statistics block
        + b.epb(2, b.sll2(FRAMES[1]), order, stamp=3 * 1024)
        + b.epb(0, FRAMES[2][:20], order, original=len(FRAMES[2]))
        + b.spb(FRAMES[3], order)
    )
    path = write(tmp_path, data)
    cooked = b.sll2(FRAMES[1])
    assert read(path) == [
        (1.5, FRAMES[0], Framing.ETHERNET, len(FRAMES[0])),
        (102.0, ip, Framing.IP, len(ip)),
        # The SLL2 record reads as an Ethernet frame with the same ethertype and payload.
        (3.0, cooked[6:18] + FRAMES[1][12:], Framing.ETHERNET, len(cooked)),
        (0.0, FRAMES[2][:20], Framing.ETHERNET, len(FRAMES[2])),
        (None, FRAMES[3], Framing.ETHERNET, len(FRAMES[3])),
    ]
    with CaptureReader(str(path)) as reader:
        packets = list(reader)
        assert reader.format == "pcapng" and reader.linktype == 1 and reader.linktypes == {1, 101, 276}
        assert reader.truncated == 1 and packets[3].truncated


def test_several_sections_reset_interfaces_and_byte_order(tmp_path: Path) -> None:
    data = b.shb("<") + b.idb(101, "<") + b.epb(0, FRAMES[0][14:], "<")
    data += b.shb(">") + b.idb(1, ">") + b.epb(0, FRAMES[0], ">", stamp=7)
    got = read(write(tmp_path, data))
    assert [(f, framing) for _, f, framing, _ in got] == [(FRAMES[0][14:], Framing.IP), (FRAMES[0], Framing.ETHERNET)]
    assert got[1][0] == pytest.approx(7e-6)


@pytest.mark.parametrize("linktype", [113, 276])
def test_cooked_captures_read_as_ethernet(tmp_path: Path, linktype: int) -> None:
    cook = b.sll if linktype == 113 else b.sll2
    path = write(tmp_path, b.pcap(linktype, [cook(f) for f in FRAMES]))
    got = read(path)
    # The frame the model reads: the same ethertype (tags included) and payload as the Ethernet frame.
    assert [f[12:] for _, f, _, _ in got] == [f[12:] for f in FRAMES]
    assert all(framing is Framing.ETHERNET for _, _, framing, _ in got)
    assert [len(f) for _, f, _, _ in got] == [len(e) for e in FRAMES]


@pytest.mark.parametrize("linktype", [113, 276])
def test_cooked_records_shorter_than_their_header(tmp_path: Path, linktype: int) -> None:
    link = LINK_TYPES[linktype]
    for n in range(0, 22):
        frame = link.frame(bytes(range(n)))
        assert len(frame) == (max(n - 2, 0) if linktype == 113 else (0 if n < 20 else n - 6))


def test_batches_and_iteration_agree_whatever_the_batch_size(tmp_path: Path) -> None:
    frames = [FRAMES[i % 4][: 20 + i % 50] for i in range(300)]
    for data in (b.pcap(1, frames), b.shb() + b.idb(1) + b"".join(b.epb(0, f) for f in frames)):
        path = write(tmp_path, data)
        for size in (1, 7, 65536):
            with CaptureReader(str(path)) as reader:
                got = [p.data for batch in reader.batches(size) for p in batch.packets()]
                assert reader.count == len(frames)
            assert got == frames


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a pcap or pcapng file"),
        (b"GIF89a" + bytes(40), "not a pcap or pcapng file"),
        (b.pcap(1, [])[:20], "cut short"),
        (b.pcap(105, []), "link type 105"),
        (b.pcap(1, [bytes(60)])[:-1], "record 0 is cut short"),
        (b.pcap(1, [bytes(60)])[:30], "record 0 header is cut short"),
        (b.pcap(1, [])[:24] + struct.pack("<IIII", 0, 0, HUGE, 0) + bytes(HUGE), "corrupt"),
        (b.pcap(1, [bytes(10)] * 3)[:24 + 26] + struct.pack("<IIII", 0, 0, 1 << 30, 0), "record 1 claims"),
        (b"\x0a\x0d\x0d\x0a" + bytes(40), "byte-order magic"),
        (b.shb()[:-4] + b"\x01\x00\x00\x00", "length fields differ"),
        (b.shb()[:20], "cut short"),
        (b.block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 2, 0, -1)), "version 2"),
        (b.shb() + b.epb(0, bytes(20)), "interface 0"),
        (b.shb() + b.idb(147) + b.epb(0, bytes(20)), "link type 147"),
        (b.shb() + b.spb(bytes(20)), "before any interface"),
        (b.shb() + b.idb(1) + b.block(6, struct.pack("<IIIII", 0, 0, 0, 100, 100)), "more bytes than its block"),
        (b.shb() + b.idb(1) + struct.pack("<II", 6, 13) + bytes(20), "invalid length"),
        (b.shb() + b.idb(1) + struct.pack("<II", 6, 1 << 30) + bytes(20), "invalid length"),
        (b.shb() + b.idb(1) + b.block(6, bytes(8)), "invalid length"),
        (b.shb() + b.block(1, struct.pack("<HHI", 1, 0, 0) + struct.pack("<HH", 9, 200)), "overruns"),
        (b.idb(1) + b.epb(0, bytes(20)), "not a pcap or pcapng file"),
        (b.shb() + b"\x01\x00", "cut short"),
    ],
)  # fmt: skip
def test_malformed_files(tmp_path: Path, data: bytes, message: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ValidationError, match=message) as info:
        read(path)
    assert info.value.field == "pcap"


def test_the_packets_before_a_fault_are_read(tmp_path: Path) -> None:
    path = write(tmp_path, b.pcap(1, FRAMES)[:-3])
    seen: list[bytes] = []
    with CaptureReader(str(path)) as reader, pytest.raises(ValidationError, match="record 3 is cut short"):
        seen.extend(p.data for p in reader)
    assert seen == FRAMES[:3]


def test_records_are_read_once(tmp_path: Path) -> None:
    path = write(tmp_path, b.pcap(1, FRAMES))
    with CaptureReader(str(path)) as reader:
        list(reader)
        with pytest.raises(ValidationError, match="already read"):
            list(reader)
        with pytest.raises(ValidationError, match="already read"):
            list(reader.batches())
    with CaptureReader(str(path)) as reader, pytest.raises(ValidationError, match="max_records"):
        list(reader.batches(0))


def test_a_large_capture_crosses_pieces(tmp_path: Path) -> None:
    # Records of every size across several 4 MiB pieces, one as large as allowed.
    frames = [bytes([i % 256]) * (i * 97 % 1500) for i in range(6000)] + [bytes(MAX_RECORD_BYTES)]
    frames += frames[:3000]
    for data in (b.pcap(1, frames), b.shb() + b.idb(1) + b"".join(b.epb(0, f) for f in frames)):
        path = write(tmp_path, data)
        with CaptureReader(str(path)) as reader:
            got = [p.data for batch in reader.batches(1000) for p in batch.packets()]
            assert reader.position == path.stat().st_size
        assert got == frames
        with CaptureReader(str(path)) as reader:
            assert [p.data for p in reader] == frames


# ----------------------------------------------------------------------------- hostile files


@st.composite
def capture_files(draw: st.DrawFn) -> bytes:
    """A pcap or pcapng file (several sections and interfaces, cooked link types), often damaged."""
    frames = draw(st.lists(st.sampled_from(FRAMES).map(lambda f: f[: draw(st.integers(0, len(f)))]), max_size=5))
    order = draw(st.sampled_from(["<", ">"]))
    linktype = draw(st.sampled_from([1, 101, 113, 276, 228, 229, draw(st.integers(0, 0xFFFF))]))
    if draw(st.booleans()):
        data = b.pcap(linktype, frames, order=order, magic=draw(st.sampled_from([b.PCAP_US, b.PCAP_NS])))
    else:
        data = b.shb(order) + b.idb(linktype, order, tsresol=draw(st.sampled_from([None, 0, 9, 0x8A, 255])))
        data += b.idb(1, order)
        for frame in frames:
            kind = draw(st.sampled_from(["epb", "epb", "spb", "unknown", "section"]))
            if kind == "epb":
                data += b.epb(draw(st.integers(0, 2)), frame, order, stamp=draw(st.integers(0, 2**64 - 1)))
            elif kind == "spb":
                data += b.spb(frame, order)
            elif kind == "unknown":
                data += b.block(draw(st.integers(0, 2**32 - 1)), frame, order)
            else:
                data += b.shb(order) + b.idb(linktype, order)
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 3))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        what = draw(st.sampled_from(["byte", "cut", "length"]))
        if what == "byte":
            out[i] = draw(st.integers(0, 255))
        elif what == "cut":
            del out[i:]
        else:
            out[i : i + 4] = struct.pack("<I", draw(st.sampled_from([0, 11, 13, 1 << 20, 1 << 31, 2**32 - 1])))
    return bytes(out)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=capture_files())
def test_hostile_files_read_or_raise_validation_errors(scratch: Path, data: bytes) -> None:
    path = write(scratch, data)
    iterated: list[bytes] = []
    try:
        with CaptureReader(str(path)) as reader:
            for packet in reader:
                assert len(packet.data) <= MAX_RECORD_BYTES
                assert packet.timestamp is None or not math.isnan(packet.timestamp)
                iterated.append(packet.data)
    except ValidationError as exc:
        assert exc.field == "pcap"
        error: str | None = str(exc)
    else:
        error = None
    # Batches of any size give the same packets, and the same error after them.
    for size in (1, 3):
        batched: list[bytes] = []
        try:
            with CaptureReader(str(path)) as reader:
                for batch in reader.batches(size):
                    batched.extend(p.data for p in batch.packets())
        except ValidationError as exc:
            assert str(exc) == error
        else:
            assert error is None
        assert batched == iterated


# ----------------------------------------------------------------------------- the column-wise walk


def _tricky_capture(jumps: bool) -> bytes:
    """Records whose payloads hold copies of record headers (a capture of a capture), timestamps that
    jump, lengths of every size: the column-wise walk must find exactly the records the loop finds."""
    records = []
    fake = struct.pack("<IIII", 1700000000, 5, 20, 20)
    for i in range(3000):
        body = bytes([i % 251]) * (i % 97)
        if i % 5 == 0:
            body = fake + body + fake[: i % 16]
        records.append(body)
    out = b.pcap(1, records)
    # Timestamps far apart in the second half (the column-wise walk's window does not hold them).
    data = bytearray(out)
    pos = 24
    for i in range(len(records)):
        if jumps and i > 2000:
            struct.pack_into("<I", data, pos, (1700000000 + i * 100_000_000) % 4_000_000_000)
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
    return bytes(data)


@pytest.mark.parametrize("jumps", [False, True])
@pytest.mark.parametrize("cut", [0, 1, 7, 100])
def test_the_column_walk_finds_what_the_loop_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cut: int, jumps: bool
) -> None:
    pytest.importorskip("numpy", reason="the column-wise walk needs numpy")
    from pytun_hash.capture import reader as module

    data = _tricky_capture(jumps)
    path = write(tmp_path, data[: len(data) - cut])
    # Without jumps the column-wise walk vouches for its result (the fake headers dropped); with
    # them it does not, and the loop walks.
    found = module._walk_columns(module._numpy(), data, 24, len(data) - cut, "<", False)
    assert (found is None) == jumps

    def packets() -> tuple[list[bytes], str | None]:
        seen: list[bytes] = []
        try:
            with CaptureReader(str(path)) as reader:
                for batch in reader.batches(500, read_bytes=0):
                    seen.extend(p.data for p in batch.packets())
        except ValidationError as exc:
            return seen, str(exc)
        return seen, None

    with_columns = packets()
    monkeypatch.setattr(module, "_numpy", lambda: None)
    assert packets() == with_columns
    assert len(with_columns[0]) == 3000 - (cut > 0)


@st.composite
def _payloads_with_fake_headers(draw: st.DrawFn) -> list[bytes]:
    """Records whose payloads hold runs of things that pass for record headers of the piece: fakes
    whose lengths chain among themselves, lead into the next real record, or run past the piece."""
    records = []
    for _ in range(draw(st.integers(1, 60))):
        body = b""
        for _ in range(draw(st.integers(0, 3))):
            captured = draw(st.integers(0, 80))
            fake = struct.pack("<IIII", 1700000000 + draw(st.integers(0, 5)), 7, captured, captured)
            body += fake + draw(st.binary(max_size=captured + 8))
        records.append(body + draw(st.binary(max_size=30)))
    return records


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_payloads_with_fake_headers(), cut=st.integers(0, 40))
def test_the_column_walk_agrees_with_the_loop_on_any_fake_headers(records: list[bytes], cut: int) -> None:
    np = pytest.importorskip("numpy", reason="the column-wise walk needs numpy")
    from pytun_hash.capture import reader as module

    data = b.pcap(1, records)
    end = max(24, len(data) - cut)
    found = module._walk_columns(np, data, 24, end, "<", False)
    if found is None:
        return  # it did not vouch: the loop walks, as the caller does
    starts, after = found
    # The loop: every record complete in data[24:end], by its own length.
    expected = []
    pos = 24
    while pos + 16 <= end:
        captured = struct.unpack_from("<I", data, pos + 8)[0]
        if pos + 16 + captured > end:
            break
        expected.append(pos + 16)
        pos += 16 + captured
    assert list(starts) == expected
    assert after == pos + 16
