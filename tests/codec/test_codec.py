"""Codecs: exact bytes per revision, the key-length workaround, strict decoders, round trips."""

from __future__ import annotations

import struct
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    DecodeError,
    HashType,
    IoctlCall,
    Revision,
    ValidationError,
    VnetHashCapability,
    VnetHashConfig,
    decode_capability,
    decode_plan,
    decode_vnet_hash,
    default_capability,
    encode_capability,
    ioctl_plan,
    kernel_key_length,
    kernel_read_length,
    kernel_write_length,
)
from pytun_hash.codec import spec_key_length
from tests.codec.strategies import configs

LE = sys.byteorder == "little"
KEY = MICROSOFT_RSS_KEY
TWO_QUEUES = VnetHashConfig(rss=True, report=True, types=0x3F, indirection_table=(0, 1), key=KEY)


@pytest.mark.skipif(not LE, reason="literal bytes below are little-endian")
def test_rfc_payload_exact_bytes() -> None:
    (call,) = ioctl_plan(TWO_QUEUES, Revision.RFC, arch="x86_64")
    assert call.name == "TUNSETVNETHASH" and call.request == 0x400454E5
    expected = (
        bytes([0x03, 0, 0, 0])  # flags RSS|REPORT, 3 zero padding bytes
        + bytes([0x3F, 0, 0, 0])  # types
        + bytes([0x01, 0x00])  # indirection_table_mask
        + bytes([0x00, 0x00])  # unclassified_queue
        + bytes([0, 0, 1, 0])  # table {0, 1}, host-endian u16
        + KEY
    )
    assert call.payload == expected
    assert len(call.payload) == 56 == kernel_read_length(Revision.RFC, call.name, call.payload)


def test_big_endian_target_payload() -> None:
    (call,) = ioctl_plan(TWO_QUEUES, Revision.RFC, arch="ppc64")
    assert call.request == 0x800454E5
    assert call.payload[:12] == bytes([0x03, 0, 0, 0, 0, 0, 0, 0x3F, 0, 1, 0, 0])
    assert call.payload[12:16] == bytes([0, 0, 0, 1])


@pytest.mark.parametrize(
    ("mask", "types", "expected"),
    [(0, 0, 18), (1, 0x3F, 56), (127, 0x3F, 308), (0, 0x38, 18), (3, 0x01, 60)],
)
def test_rfc_kernel_read_length(mask: int, types: int, expected: int) -> None:
    header = struct.pack("=B3xIHH", 0, types, mask, 0)
    assert kernel_read_length(Revision.RFC, "TUNSETVNETHASH", header) == expected


def test_kernel_key_length_mixes_enums_as_the_kernel_does() -> None:
    assert [kernel_key_length(1 << i) for i in range(9)] == [40, 40, 40, 4, 4, 4, 4, 4, 4]
    assert kernel_key_length(0x3F) == 40 and kernel_key_length(0x38) == 4 and kernel_key_length(0) == 4
    assert [spec_key_length(1 << i) for i in range(9)] == [12, 16, 16, 36, 40, 40, 36, 40, 40]
    assert spec_key_length(0) == 0


def test_rfc_workaround_for_ipv6_only_types() -> None:
    config = VnetHashConfig.round_robin(4, key=KEY, types=HashType.IPV6 | HashType.TCPV6 | HashType.UDPV6)
    first, second = ioctl_plan(config, Revision.RFC)
    assert first.name == second.name == "TUNSETVNETHASH"
    # The first call disables hashing and loads the whole key under an IPv4 type.
    assert first.payload[0] == 0 and struct.unpack_from("=I", first.payload, 4)[0] == HashType.IPV4
    assert kernel_read_length(Revision.RFC, first.name, first.payload) == len(first.payload)
    assert first.payload.endswith(KEY)
    # The second call is read with a 4-byte key by the kernel: only KEY[:4] replaces bytes.
    assert kernel_read_length(Revision.RFC, second.name, second.payload) == len(second.payload) - 36
    assert decode_plan((first, second), Revision.RFC) == config
    # Without the first call a fresh kernel would hold only 4 key bytes.
    assert decode_plan((second,), Revision.RFC).key == KEY[:4] + bytes(36)


def test_workaround_only_without_ipv4_bits() -> None:
    assert len(ioctl_plan(VnetHashConfig.round_robin(2, key=KEY), Revision.RFC)) == 1
    assert len(ioctl_plan(VnetHashConfig(types=HashType.IPV4), Revision.RFC)) == 1
    # Even a disabled config leaves its whole key in force, so the state always equals the config.
    assert len(ioctl_plan(VnetHashConfig.disabled(), Revision.RFC)) == 2


def test_v3_payloads() -> None:
    (call,) = ioctl_plan(TWO_QUEUES, Revision.V3, arch="x86_64")
    assert call.request == 0x400854E5
    flags, pad, types, mask, unclassified = struct.unpack_from("=H2sIHH", call.payload)
    assert (flags, pad, types, mask, unclassified) == (0x0003, b"\0\0", 0x3F, 1, 0)
    assert len(call.payload) == 8 + 4 + 4 + 40
    report_only = VnetHashConfig(report=True, types=HashType.TCPV4)
    (call,) = ioctl_plan(report_only, Revision.V3)
    assert call.payload == struct.pack("=H2xI", 0x0001, 0x02)
    assert kernel_read_length(Revision.V3, call.name, call.payload) == 8


def test_v12_setter_choice() -> None:
    rss = VnetHashConfig.round_robin(2, key=KEY, table_length=2)
    names = {
        "rss": ioctl_plan(rss, Revision.V12)[0].name,
        "rss+report": ioctl_plan(rss.replace(report=True), Revision.V12)[0].name,
        "report": ioctl_plan(VnetHashConfig(report=True, types=0x3F), Revision.V12)[0].name,
        "off": ioctl_plan(VnetHashConfig.disabled(), Revision.V12)[0].name,
    }
    assert names == {
        "rss": "TUNSETVNETRSS",
        "rss+report": "TUNSETVNETREPORTINGRSS",
        "report": "TUNSETVNETREPORTINGAUTOMQ",
        "off": "TUNSETVNETREPORTINGAUTOMQ",
    }
    assert ioctl_plan(VnetHashConfig.disabled(), Revision.V12)[0].payload == bytes(4)
    (call,) = ioctl_plan(rss, Revision.V12, arch="x86_64")
    assert call.request == 0x800854E7
    assert struct.unpack_from("=IHH", call.payload) == (0x3F, 1, 0)
    assert len(call.payload) == 8 + 4 + 40 == kernel_read_length(Revision.V12, call.name, call.payload)


@pytest.mark.parametrize("revision", [Revision.V3, Revision.V12])
def test_later_revisions_refuse_short_key_rss(revision: Revision) -> None:
    config = VnetHashConfig.round_robin(2, key=KEY, types=HashType.TCPV6)
    with pytest.raises(ValidationError) as info:
        ioctl_plan(config, revision)
    assert info.value.field == "types" and "IPv4" in info.value.rule


def _full(config: VnetHashConfig, revision: Revision) -> bool:
    return revision is Revision.RFC or config.rss


@pytest.mark.parametrize("revision", list(Revision))
@given(config=configs(ipv4_types_when_rss=True))
def test_round_trip(revision: Revision, config: VnetHashConfig) -> None:
    calls = ioctl_plan(config, revision)
    decoded = decode_vnet_hash(calls[-1].payload, revision, name=calls[-1].name)
    replayed = decode_plan(calls, revision)
    if _full(config, revision):
        # The revision carries every field: exact round trip.
        assert replayed == config
        if revision is not Revision.RFC or len(calls) == 1:
            assert decoded == config
    else:
        # v3+ without RSS carry only report and types; the steering fields decode as defaults.
        expected = VnetHashConfig(report=config.report, types=config.types if config.report or revision
                                  .abi is Revision.V3 else 0)
        assert decoded == replayed == expected
    for call in calls:
        assert isinstance(call, IoctlCall)
        assert kernel_read_length(revision, call.name, call.payload) <= len(call.payload)


@pytest.mark.parametrize("revision", list(Revision))
@given(data=st.binary(max_size=400), name_index=st.integers(0, 3))
def test_malformed_payloads_raise_decode_error(revision: Revision, data: bytes, name_index: int) -> None:
    names = [None, "TUNSETVNETRSS", "TUNSETVNETREPORTINGRSS", "TUNSETVNETREPORTINGAUTOMQ"]
    name = names[name_index] if revision is Revision.V12 else None
    try:
        config = decode_vnet_hash(data, revision, name=name)
    except DecodeError:
        return
    # Anything accepted must re-encode to the same bytes.
    calls = ioctl_plan(config, revision)
    assert calls[-1].payload == data


def _rfc_valid() -> bytearray:
    return bytearray(ioctl_plan(TWO_QUEUES, Revision.RFC)[0].payload)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.__setitem__(1, 1), "padding"),  # non-zero hidden padding
        (lambda b: b.__setitem__(0, 0x07), "flags"),  # unknown flag 0x04
        (lambda b: b.__setitem__(8, 0x80), "indirection_table_mask"),  # mask 128
        (lambda b: b.__setitem__(8, 0x02), "indirection_table_mask"),  # 3 entries
        (lambda b: b.__setitem__(5, 0x02), "types"),  # unknown type bit 0x200
        (lambda b: b.pop(), "payload"),  # short
        (lambda b: b.append(0), "payload"),  # long
    ],
)
def test_rfc_decoder_rejections(mutate: object, field: str) -> None:
    payload = _rfc_valid()
    mutate(payload)  # type: ignore[operator]
    with pytest.raises(DecodeError) as info:
        decode_vnet_hash(bytes(payload), Revision.RFC)
    assert info.value.field == field


def test_v3_and_v12_decoder_rejections() -> None:
    good = ioctl_plan(TWO_QUEUES, Revision.V3)[0].payload
    with pytest.raises(DecodeError):
        decode_vnet_hash(good[:2] + b"\x01" + good[3:], Revision.V3)  # pad
    with pytest.raises(DecodeError):
        decode_vnet_hash(b"\x04" + good[1:], Revision.V3)  # unknown flag
    with pytest.raises(DecodeError):
        decode_vnet_hash(struct.pack("=H2xI", 1, 2) + b"x", Revision.V3)  # trailing bytes without RSS
    with pytest.raises(DecodeError) as info:
        decode_vnet_hash(bytes(12), Revision.V12)
    assert info.value.field == "name"
    with pytest.raises(DecodeError):
        decode_vnet_hash(bytes(12), Revision.V12, name="TUNGETVNETHASHTYPES")


@pytest.mark.parametrize("revision", list(Revision))
def test_capability_round_trip(revision: Revision) -> None:
    cap = default_capability(revision)
    raw = encode_capability(cap)
    assert len(raw) == kernel_write_length(revision, "TUNGETVNETHASHTYPES" if revision is Revision.V12
                                           else "TUNGETVNETHASHCAP")
    assert decode_capability(raw, revision) == cap


@pytest.mark.skipif(not LE, reason="literal bytes below are little-endian")
def test_capability_exact_bytes() -> None:
    assert encode_capability(default_capability(Revision.RFC)) == bytes([0x80, 0, 0, 0, 0x3F, 0, 0, 0])
    assert encode_capability(default_capability(Revision.V3)) == bytes([0x03, 0, 0, 0, 0x3F, 0, 0, 0])
    assert encode_capability(default_capability(Revision.V12)) == bytes([0x3F, 0, 0, 0])
    with pytest.raises(DecodeError):
        decode_capability(bytes([0x80, 0, 1, 0, 0x3F, 0, 0, 0]), Revision.RFC)  # padding
    with pytest.raises(DecodeError):
        decode_capability(bytes(7), Revision.RFC)
    with pytest.raises(DecodeError):
        decode_capability(bytes([0, 0, 0, 0, 0, 4, 0, 0]), Revision.V3)  # unknown type bit 0x400
    with pytest.raises(ValidationError):
        encode_capability(VnetHashCapability(Revision.RFC, 0x3F))


@given(data=st.binary(max_size=16))
def test_capability_decoders_only_raise_decode_error(data: bytes) -> None:
    for revision in Revision:
        try:
            cap = decode_capability(data, revision)
        except DecodeError:
            continue
        assert encode_capability(cap) == data


def test_kernel_read_length_needs_the_fixed_header() -> None:
    with pytest.raises(DecodeError):
        kernel_read_length(Revision.RFC, "TUNSETVNETHASH", bytes(11))
    rss_header = struct.pack("=H2xI", 0x0002, 0x3F)
    with pytest.raises(DecodeError):
        kernel_read_length(Revision.V3, "TUNSETVNETHASH", rss_header)
    assert kernel_read_length(Revision.V3, "TUNSETVNETHASH", rss_header + struct.pack("=HH", 3, 0)) == 8 + 4 + 8 + 40
    assert kernel_read_length(Revision.V12, "TUNSETVNETREPORTINGAUTOMQ", b"") == 4
    assert kernel_read_length(Revision.RFC, "TUNGETVNETHASHCAP", b"") == 0
    with pytest.raises(ValueError):
        kernel_read_length(Revision.RFC, "TUNSETVNETRSS", b"")


def test_decode_plan_rejects_empty() -> None:
    with pytest.raises(DecodeError):
        decode_plan((), Revision.RFC)
