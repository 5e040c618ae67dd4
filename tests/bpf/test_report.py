"""User-space hash reports: HashReporter fills virtio_net_hdr_v1_hash from the software model."""

from __future__ import annotations

import random
import struct

import pytest

from pytun_hash._abi.virtio_net import HashReport, HashType
from pytun_hash.bpf.report import HashReporter
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.device.tap import DeviceMode
from pytun_hash.errors import DecodeError, ValidationError
from pytun_hash.model import Framing, VnetHeader, build_frame, classify, split_frame, verify_reports
from tests.bpf.frames import random_config, random_ethernet_frame, random_ip_packet

CONFIG = VnetHashConfig(rss=True, report=True, types=HashType(0x3F), key=MICROSOFT_RSS_KEY)
ROW1 = bytes([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 66, 9, 149, 187, 161, 142, 100, 80]) + struct.pack(
    "!HH", 2794, 1766
)


def test_fills_the_published_vector_and_keeps_the_rest() -> None:
    header = VnetHeader(flags=1, csum_start=34, csum_offset=16, num_buffers=1)
    buf = bytearray(build_frame(bytes(12) + b"\x08\x00" + ROW1 + bytes(16), header, vnet_hdr_size=20))
    flow = HashReporter(CONFIG).fill(buf)
    assert (flow.hash_value, flow.report) == (0x51CCC178, HashReport.TCPV4)
    decoded, _frame = split_frame(bytes(buf), 20)
    assert decoded == VnetHeader(
        flags=1, csum_start=34, csum_offset=16, num_buffers=1, hash_value=0x51CCC178, hash_report=HashReport.TCPV4
    )


@pytest.mark.parametrize("mode", [DeviceMode.TAP, DeviceMode.TUN])
@pytest.mark.parametrize("vnet_hdr_size", [20, 24])
@pytest.mark.parametrize("packet_info", [False, True])
def test_random_frames_agree_with_the_model(mode: DeviceMode, vnet_hdr_size: int, packet_info: bool) -> None:
    rng = random.Random(hash((mode.value, vnet_hdr_size, packet_info)) & 0xFFFF)
    config = random_config(rng).replace(report=True)
    reporter = HashReporter(config, mode=mode, vnet_hdr_size=vnet_hdr_size, packet_info=packet_info)
    framing = Framing.ETHERNET if mode is DeviceMode.TAP else Framing.IP
    make = random_ethernet_frame if mode is DeviceMode.TAP else random_ip_packet
    pi = b"\x00\x00\x08\x00" if packet_info else b""
    buffers = []
    for _ in range(300):
        frame = make(rng)
        raw = pi + build_frame(frame, vnet_hdr_size=vnet_hdr_size)
        filled = reporter.filled(raw)
        assert len(filled) == len(raw)
        # Only bytes 12..19 of the header may change.
        at = len(pi)
        assert filled[: at + 12] == raw[: at + 12] and filled[at + 20 :] == raw[at + 20 :]
        expected = classify(frame, config.types, config.key, l2=framing)
        assert struct.unpack_from("<IHH", filled, at + 12) == (expected.hash_value, int(expected.report), 0)
        buffers.append(filled[at:])
    assert verify_reports(buffers, config, vnet_hdr_size=vnet_hdr_size, l2=framing) == []


def test_refuses_what_it_cannot_fill() -> None:
    with pytest.raises(ValidationError, match="report"):
        HashReporter(CONFIG.replace(report=False))
    with pytest.raises(ValidationError, match="at least 20"):
        HashReporter(CONFIG, vnet_hdr_size=12)
    reporter = HashReporter(CONFIG)
    with pytest.raises(DecodeError):
        reporter.report(bytes(19))
    with pytest.raises(ValidationError, match="read-only"):
        reporter.fill(memoryview(bytes(80)))
    with pytest.raises(ValidationError, match="report"):
        reporter.config = CONFIG.replace(report=False)
    reporter.config = CONFIG.replace(types=HashType.IPV4)
    buf = bytearray(build_frame(bytes(12) + b"\x08\x00" + ROW1, vnet_hdr_size=20))
    assert reporter.fill(buf).hash_value == 0x323E8FC2
