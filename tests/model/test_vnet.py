"""virtio-net header codecs: exact bytes per layout and byte order, split and build, validation."""

from __future__ import annotations

import ctypes
import sys

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytun_hash import DecodeError, HashReport, ValidationError
from pytun_hash._abi.virtio_net import VirtioNetHdrFlag
from pytun_hash._abi.virtio_net_hdr import virtio_net_hdr, virtio_net_hdr_v1, virtio_net_hdr_v1_hash
from pytun_hash.model import (
    VNET_HDR_LAYOUTS,
    VnetHeader,
    build_frame,
    default_layout,
    hash_tail,
    read_hash_fields,
    split_frame,
    write_hash_fields,
)

FULL = VnetHeader(
    flags=VirtioNetHdrFlag.NEEDS_CSUM,
    gso_type=0x81,
    hdr_len=0x0102,
    gso_size=0x0304,
    csum_start=0x0506,
    csum_offset=0x0708,
    num_buffers=0x090A,
    hash_value=0x0B0C0D0E,
    hash_report=HashReport.TCPV6,
    hash_padding=0x1112,
)
LEGACY_ONLY = VnetHeader(flags=1, gso_type=1, hdr_len=0x0102, gso_size=0x0304, csum_start=0x0506, csum_offset=0x0708)


def test_layouts_match_the_abi_structs() -> None:
    assert (
        ctypes.sizeof(virtio_net_hdr),
        ctypes.sizeof(virtio_net_hdr_v1),
        ctypes.sizeof(virtio_net_hdr_v1_hash),
    ) == VNET_HDR_LAYOUTS
    assert virtio_net_hdr_v1.num_buffers.offset == 10
    assert (virtio_net_hdr_v1_hash.hash_value.offset, virtio_net_hdr_v1_hash.hash_report.offset) == (12, 16)
    if sys.byteorder == "little":  # the ctypes structs are native-endian
        raw = virtio_net_hdr_v1_hash.from_buffer_copy(FULL.encode(20))
        assert (raw.hdr.csum_offset, raw.hdr.num_buffers) == (FULL.csum_offset, FULL.num_buffers)
        assert (raw.hash_value, raw.hash_report, raw.padding) == (0x0B0C0D0E, HashReport.TCPV6, 0x1112)


def test_golden_bytes_little_endian() -> None:
    assert FULL.encode(20) == bytes.fromhex("01 81 0201 0403 0605 0807 0a09 0e0d0c0b 0500 1211")
    no_hash = attrs.evolve(FULL, hash_value=0, hash_report=HashReport.NONE, hash_padding=0)
    assert no_hash.encode(12) == bytes.fromhex("01 81 0201 0403 0605 0807 0a09")
    assert LEGACY_ONLY.encode(10) == bytes.fromhex("01 01 0201 0403 0605 0807")
    assert VnetHeader(num_buffers=1).encode(12) == bytes(10) + b"\x01\x00"


def test_golden_bytes_big_endian_legacy_fields_only() -> None:
    # Legacy fields follow the device's endianness; num_buffers and the hash fields stay little-endian.
    assert FULL.encode(20, little_endian=False) == bytes.fromhex("01 81 0102 0304 0506 0708 0a09 0e0d0c0b 0500 1211")
    assert LEGACY_ONLY.encode(10, little_endian=False) == bytes.fromhex("01 01 0102 0304 0506 0708")


@pytest.mark.parametrize("little_endian", [True, False])
def test_decode_inverts_encode(little_endian: bool) -> None:
    encoded = FULL.encode(20, little_endian=little_endian)
    assert VnetHeader.decode(encoded, 20, little_endian=little_endian) == FULL
    legacy = LEGACY_ONLY.encode(10, little_endian=little_endian)
    assert VnetHeader.decode(legacy + b"extra", 10, little_endian=little_endian) == LEGACY_ONLY
    v1 = VnetHeader(flags=2, num_buffers=3)
    assert VnetHeader.decode(v1.encode(12, little_endian=little_endian), 12, little_endian=little_endian) == v1


@given(
    fields=st.tuples(
        st.integers(0, 0xFF),
        st.integers(0, 0xFF),
        *(st.integers(0, 0xFFFF) for _ in range(5)),
        st.integers(0, 0xFFFFFFFF),
        st.sampled_from(list(HashReport)),
        st.integers(0, 0xFFFF),
    ),
    little_endian=st.booleans(),
)
def test_round_trip_every_field(fields: tuple[int, ...], little_endian: bool) -> None:
    names = ("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset", "num_buffers")
    header = VnetHeader(
        **dict(zip(names, fields[:7], strict=True)),
        hash_value=fields[7],
        hash_report=HashReport(fields[8]),
        hash_padding=fields[9],
    )
    encoded = header.encode(20, little_endian=little_endian)
    assert len(encoded) == 20
    assert VnetHeader.decode(encoded, little_endian=little_endian) == header


def test_fields_that_do_not_fit_the_layout_are_refused() -> None:
    with pytest.raises(ValidationError, match="num_buffers"):
        VnetHeader(num_buffers=1).encode(10)
    with pytest.raises(ValidationError, match="hash_value"):
        VnetHeader(hash_value=1).encode(12)
    with pytest.raises(ValidationError, match="hash_report"):
        VnetHeader(hash_report=HashReport.IPV4).encode(10)
    with pytest.raises(ValidationError, match="layout"):
        FULL.encode(24)


@pytest.mark.parametrize(
    ("field", "value"),
    [("flags", 256), ("gso_type", -1), ("hdr_len", 1 << 16), ("hash_value", 1 << 32), ("num_buffers", True)],
)
def test_construction_validates_ranges(field: str, value: int) -> None:
    with pytest.raises(ValidationError, match=field):
        VnetHeader(**{field: value})


def test_report_values_and_decode_errors() -> None:
    assert VnetHeader(hash_report=5).hash_report is HashReport.TCPV6
    with pytest.raises(ValidationError):
        VnetHeader(hash_report=10)
    with pytest.raises(ValidationError):
        VnetHeader(hash_report="TCPV6")  # type: ignore[arg-type]
    unknown = bytes(16) + b"\x0a\x00" + bytes(2)
    with pytest.raises(DecodeError, match="hash_report"):
        VnetHeader.decode(unknown)
    with pytest.raises(DecodeError):
        VnetHeader.decode(bytes(19))
    with pytest.raises(ValidationError):
        VnetHeader.decode(bytes(20), 11)


def test_default_layout() -> None:
    assert [default_layout(n) for n in (10, 11, 12, 19, 20, 24, 256)] == [10, 10, 12, 12, 20, 20, 20]
    for bad in (9, 0, True):
        with pytest.raises(ValidationError):
            default_layout(bad)


def test_split_and_build_frame() -> None:
    frame = bytes(range(60))
    header = VnetHeader(hash_value=0xDEADBEEF, hash_report=HashReport.UDPV4)
    written = build_frame(frame, header, vnet_hdr_size=24)
    assert len(written) == 24 + 60 and written[20:24] == bytes(4)
    assert split_frame(written, 24) == (header, frame)
    assert split_frame(bytearray(written), 24, layout=12) == (VnetHeader(), frame)
    assert build_frame(frame) == bytes(10) + frame
    assert build_frame(frame, LEGACY_ONLY, vnet_hdr_size=12, little_endian=False) == (
        LEGACY_ONLY.encode(10, little_endian=False) + bytes(2) + frame
    )
    assert split_frame(bytes(12), 12) == (VnetHeader(), b"")
    with pytest.raises(DecodeError):
        split_frame(bytes(19), 20)
    with pytest.raises(ValidationError):
        split_frame(bytes(30), 12, layout=20)
    with pytest.raises(ValidationError):
        build_frame(frame, vnet_hdr_size=12, layout=20)
    with pytest.raises(ValidationError):
        build_frame(frame, header, vnet_hdr_size=12)  # the hash does not fit a 12-byte header


def test_hash_fields_have_one_codec() -> None:
    header = VnetHeader(num_buffers=1, hash_value=0x51CCC178, hash_report=HashReport.TCPV4).encode(20)
    assert header[10:] == hash_tail(1, 0x51CCC178, int(HashReport.TCPV4))
    assert read_hash_fields(header) == (0x51CCC178, int(HashReport.TCPV4))
    buf = bytearray(4) + bytearray(header) + b"frame"
    write_hash_fields(buf, 7, int(HashReport.UDPV6), offset=4)
    assert read_hash_fields(buf, 4) == (7, int(HashReport.UDPV6)) and buf[4:14] == header[:10] and buf[24:] == b"frame"
