"""Toeplitz: published known answers, the table-driven paths against the bit-level definition, batches."""

from __future__ import annotations

import struct
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytun_hash import HashReport, HashType, ValidationError
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.model import (
    Toeplitz,
    classify,
    numpy_available,
    rfc_input,
    toeplitz_for,
    toeplitz_hash,
    toeplitz_hash_batch,
    toeplitz_hash_reference,
)
from pytun_hash.model import frames as fr
from pytun_hash.model import toeplitz as toeplitz_module
from tests.model.vectors import MICROSOFT_IPV4, MICROSOFT_IPV6, VPP_KEY_COPIES, VPP_LENGTH_HASHES, Row

needs_numpy = pytest.mark.skipif(not numpy_available(), reason="numpy is not installed (optional extra)")


def _tuple(row: Row) -> tuple[bytes, bytes]:
    addresses = fr.addr(row.src) + fr.addr(row.dst)
    return addresses, addresses + struct.pack(">HH", row.sport, row.dport)


@pytest.mark.parametrize("row", MICROSOFT_IPV4 + MICROSOFT_IPV6, ids=lambda r: f"{r.src}>{r.dst}")
def test_microsoft_verification_rows(row: Row) -> None:
    addresses, four_tuple = _tuple(row)
    assert toeplitz_hash(MICROSOFT_RSS_KEY, addresses) == row.ip_only
    assert toeplitz_hash(MICROSOFT_RSS_KEY, four_tuple) == row.with_ports
    assert toeplitz_hash_reference(MICROSOFT_RSS_KEY, four_tuple) == row.with_ports


def test_microsoft_row_1_byte_stream_and_column_order_pitfall() -> None:
    stream = bytes.fromhex("420995bb a18e6450 0aea 06e6")
    assert toeplitz_hash(MICROSOFT_RSS_KEY, stream) == 0x51CCC178
    assert toeplitz_hash(MICROSOFT_RSS_KEY, stream[:8]) == 0x323E8FC2
    # Feeding the table's columns in printed order (destination first) gives a different value.
    swapped = bytes.fromhex("a18e6450 420995bb 06e6 0aea")
    assert toeplitz_hash(MICROSOFT_RSS_KEY, swapped) == 0xFDE799B2


def test_vpp_length_test_every_length_0_to_235() -> None:
    key = MICROSOFT_RSS_KEY * VPP_KEY_COPIES
    data = bytes(range(len(VPP_LENGTH_HASHES)))
    assert len(VPP_LENGTH_HASHES) == 236
    got = [toeplitz_hash(key, data[:n]) for n in range(len(VPP_LENGTH_HASHES))]
    assert got == list(VPP_LENGTH_HASHES)
    # The same through the batch paths, one length at a time for a few lengths.
    for n in (0, 1, 12, 37, 235):
        assert toeplitz_hash_batch(key, [data[:n]] * 3, use_numpy=False) == [VPP_LENGTH_HASHES[n]] * 3


@pytest.mark.parametrize("row", MICROSOFT_IPV4 + MICROSOFT_IPV6, ids=lambda r: f"{r.src}>{r.dst}")
def test_udp_hashes_equal_tcp_for_the_same_tuple(row: Row) -> None:
    build = fr.ipv4 if "." in row.src else fr.ipv6
    tcp_frame = fr.ethernet(build(row.src, row.dst, fr.TCP, fr.tcp(row.sport, row.dport)))
    udp_frame = fr.ethernet(build(row.src, row.dst, fr.UDP, fr.udp(row.sport, row.dport)))
    types = HashType.supported_by_kernel_series()
    tcp_flow = classify(tcp_frame, types, MICROSOFT_RSS_KEY)
    udp_flow = classify(udp_frame, types, MICROSOFT_RSS_KEY)
    assert tcp_flow.hash_value == udp_flow.hash_value == row.with_ports
    assert tcp_flow.hashed == udp_flow.hashed
    assert (tcp_flow.report, udp_flow.report) in {
        (HashReport.TCPV4, HashReport.UDPV4),
        (HashReport.TCPV6, HashReport.UDPV6),
    }


@settings(max_examples=200, deadline=None)
@given(key=st.binary(max_size=48), data=st.binary(max_size=60), zeros=st.integers(0, 50))
def test_zero_byte_suffix_never_changes_the_hash(key: bytes, data: bytes, zeros: int) -> None:
    assert toeplitz_hash(key, data + bytes(zeros)) == toeplitz_hash(key, data)


@settings(max_examples=300, deadline=None)
@given(key=st.binary(max_size=64), data=st.binary(max_size=80))
def test_table_driven_equals_bit_level_definition(key: bytes, data: bytes) -> None:
    expected = toeplitz_hash_reference(key, data)
    assert Toeplitz(key).hash(data) == expected
    assert toeplitz_hash(key, data) == expected


@pytest.mark.parametrize("length", [0, 1, 3, 4, 7, 8, 11, 12, 13, 20, 24, 32, 36, 39, 40, 41, 64])
def test_every_block_decomposition_matches_the_definition(length: int) -> None:
    data = bytes((37 * i + 11) & 0xFF for i in range(length))
    for key in (MICROSOFT_RSS_KEY, MICROSOFT_RSS_KEY[:5], MICROSOFT_RSS_KEY[:12], MICROSOFT_RSS_KEY * 2, b""):
        assert Toeplitz(key).function(length)(data) == toeplitz_hash_reference(key, data), (length, len(key))


def test_bits_past_the_key_count_as_zero() -> None:
    short = MICROSOFT_RSS_KEY[:16]
    data = bytes(range(1, 37))
    assert toeplitz_hash(short, data) == toeplitz_hash(short + bytes(24), data)
    # Bytes at positions >= len(key) cannot change the hash.
    assert toeplitz_hash(short, data[:16]) == toeplitz_hash(short, data[:16] + b"\xff" * 20)
    assert toeplitz_hash(b"", data) == 0


def test_symmetric_key_is_symmetric() -> None:
    key = bytes.fromhex("6d5a") * 20
    a, b = fr.addr("10.1.2.3"), fr.addr("192.0.2.77")
    ports_ab, ports_ba = struct.pack(">HH", 1234, 80), struct.pack(">HH", 80, 1234)
    h1 = toeplitz_hash(key, a + b + ports_ab)
    assert h1 == toeplitz_hash(key, b + a + ports_ba)
    assert h1 >> 16 == h1 & 0xFFFF


def test_byte_table_is_the_contribution_of_each_byte_value() -> None:
    tz = Toeplitz(MICROSOFT_RSS_KEY)
    for position in (0, 5, 39):
        table = tz.byte_table(position)
        assert len(table) == 256
        for value in (0, 1, 0x80, 0xA5, 0xFF):
            data = bytes(position) + bytes([value])
            assert table[value] == toeplitz_hash_reference(MICROSOFT_RSS_KEY, data)
    assert tz.byte_table(40) == (0,) * 256
    with pytest.raises(ValidationError):
        tz.byte_table(-1)


def test_key_validation() -> None:
    with pytest.raises(ValidationError):
        toeplitz_hash("6d5a", b"")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Toeplitz(None)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Toeplitz(b"k").function(-1)
    # bytearray and memoryview keys work and equal the bytes key.
    data = bytes(range(12))
    expected = toeplitz_hash(MICROSOFT_RSS_KEY, data)
    assert toeplitz_hash(bytearray(MICROSOFT_RSS_KEY), data) == expected
    assert toeplitz_hash(memoryview(bytearray(MICROSOFT_RSS_KEY)), data) == expected
    assert repr(Toeplitz(b"\x01\x02")) == "Toeplitz(key=bytes.fromhex('0102'))"


def test_cache_is_bounded_and_shares_tables() -> None:
    first = toeplitz_for(MICROSOFT_RSS_KEY)
    assert toeplitz_for(bytearray(MICROSOFT_RSS_KEY)) is first
    for i in range(toeplitz_module.TOEPLITZ_CACHE_SIZE + 3):
        toeplitz_for(bytes([i]) * 40)
    assert len(toeplitz_module._TABLES_BY_KEY) <= toeplitz_module.TOEPLITZ_CACHE_SIZE
    assert toeplitz_for(MICROSOFT_RSS_KEY).hash(bytes(8)) == 0


@settings(max_examples=50, deadline=None)
@given(
    key=st.binary(max_size=48),
    length=st.integers(0, 50),
    count=st.integers(0, 20),
    seed=st.binary(min_size=1, max_size=8),
)
def test_pure_batch_equals_scalar(key: bytes, length: int, count: int, seed: bytes) -> None:
    rows = [bytes((seed[(i + j) % len(seed)] * (j + 3) + i) & 0xFF for j in range(length)) for i in range(count)]
    assert toeplitz_hash_batch(key, rows, use_numpy=False) == [toeplitz_hash_reference(key, r) for r in rows]


@needs_numpy
@pytest.mark.parametrize("length", [0, 1, 8, 12, 13, 32, 36, 41, 100])
@pytest.mark.parametrize("key", [MICROSOFT_RSS_KEY, MICROSOFT_RSS_KEY[:7], MICROSOFT_RSS_KEY * 3])
def test_numpy_batch_equals_scalar(length: int, key: bytes) -> None:
    import numpy as np

    rng = np.random.default_rng(length)
    count = 20000 if length == 12 else 300  # more than one numpy chunk for the common width
    matrix = rng.integers(0, 256, size=(count, length), dtype=np.uint8)
    rows = [bytes(r) for r in matrix]
    expected = [toeplitz_hash(key, r) for r in rows]
    assert toeplitz_hash_batch(key, rows, use_numpy=True) == expected
    assert toeplitz_for(key).hash_array(matrix).tolist() == expected
    assert toeplitz_for(key).hash_array(matrix.astype(np.int64)).tolist() == expected
    assert toeplitz_hash_batch(key, iter(rows)) == expected  # default: numpy when installed


@needs_numpy
def test_numpy_batch_rejects_bad_arrays() -> None:
    import numpy as np

    tz = toeplitz_for(MICROSOFT_RSS_KEY)
    with pytest.raises(ValidationError):
        tz.hash_array(np.zeros(12, dtype=np.uint8))
    with pytest.raises(ValidationError):
        tz.hash_array(np.full((2, 12), 256, dtype=np.int64))
    with pytest.raises(ValidationError):
        tz.hash_array(np.zeros((2, 12), dtype=np.float64))
    assert tz.hash_array(np.zeros((0, 12), dtype=np.uint8)).tolist() == []


def test_batch_rejects_mixed_lengths_and_missing_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match=r"rows\[1\]"):
        toeplitz_hash_batch(MICROSOFT_RSS_KEY, [bytes(12), bytes(8)])
    assert toeplitz_hash_batch(MICROSOFT_RSS_KEY, []) == []
    # Without numpy the default falls back to pure Python, and requiring it is an error.
    monkeypatch.setitem(sys.modules, "numpy", None)
    assert not numpy_available()
    rows = [bytes(range(12)), bytes(range(12, 24))]
    assert toeplitz_hash_batch(MICROSOFT_RSS_KEY, rows) == [toeplitz_hash(MICROSOFT_RSS_KEY, r) for r in rows]
    with pytest.raises(ValidationError, match="numpy"):
        toeplitz_hash_batch(MICROSOFT_RSS_KEY, rows, use_numpy=True)


def test_rfc_input_reverses_each_word_on_little_endian_hosts() -> None:
    data = bytes(range(12))
    expected = bytes([3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8]) if sys.byteorder == "little" else data
    assert rfc_input(data) == expected
    with pytest.raises(ValidationError):
        rfc_input(bytes(6))
