"""verify_reports: agreeing buffers give no mismatches; each kind of disagreement is reported."""

from __future__ import annotations

import pytest

from pytun_hash import HashReport, HashType, ValidationError, VnetHashConfig
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.model import (
    FlowHash,
    Framing,
    ReportMismatch,
    Semantics,
    VnetHeader,
    build_frame,
    classify,
    expected_report,
    verify_reports,
)
from pytun_hash.model import frames as fr

KEY = MICROSOFT_RSS_KEY
CONFIG = VnetHashConfig(
    rss=True, report=True, types=HashType.supported_by_kernel_series(), indirection_table=(0, 1, 2, 3), key=KEY
)


def _frames() -> list[bytes]:
    return [fr.ethernet(fr.ipv4("10.0.0.1", "10.0.0.2", fr.TCP, fr.tcp(1000 + i, 80))) for i in range(5)] + [
        fr.ethernet(fr.ipv6("2001:db8::1", "2001:db8::2", fr.UDP, fr.udp(53, 2000))),
        fr.ethernet(bytes(28), 0x0806),
    ]


def _as_read(frame: bytes, flow: FlowHash, vnet_hdr_size: int = 20) -> bytes:
    header = VnetHeader(hash_value=flow.hash_value, hash_report=flow.report)
    return build_frame(frame, header, vnet_hdr_size=vnet_hdr_size)


@pytest.mark.parametrize("semantics", list(Semantics))
def test_correct_reports_verify_clean(semantics: Semantics) -> None:
    buffers = [_as_read(f, classify(f, CONFIG.types, KEY, semantics=semantics)) for f in _frames()]
    assert verify_reports(buffers, CONFIG, semantics=semantics) == []
    assert verify_reports(iter(buffers), CONFIG, semantics=semantics, num_queues=4) == []


def test_header_larger_than_20_bytes_and_tun_framing() -> None:
    packet = fr.ipv4("10.0.0.1", "10.0.0.2", fr.UDP, fr.udp(5, 6))
    flow = classify(packet, CONFIG.types, KEY, l2=Framing.IP)
    assert flow.report is HashReport.UDPV4
    assert verify_reports([_as_read(packet, flow, 24)], CONFIG, vnet_hdr_size=24, l2=Framing.IP) == []


def test_each_disagreement_is_reported_with_its_index() -> None:
    frames = _frames()
    flows = [classify(f, CONFIG.types, KEY) for f in frames]
    buffers = [_as_read(f, flow) for f, flow in zip(frames, flows, strict=True)]
    wrong_value = FlowHash(flows[1].hash_value ^ 1, flows[1].report, flows[1].hashed)
    buffers[1] = _as_read(frames[1], wrong_value)
    buffers[2] = _as_read(frames[2], FlowHash(flows[2].hash_value, HashReport.UDPV4, b""))
    buffers[3] = buffers[3][:12] + b"\x00\x00\x00\x00\x0c\x00" + buffers[3][18:]  # unknown report 12, value 0
    buffers[4] = buffers[4][:15]
    found = verify_reports(buffers, CONFIG)
    assert [m.index for m in found] == [1, 2, 3, 4]
    by_index = {m.index: m for m in found}
    assert by_index[1] == ReportMismatch(
        1,
        flows[1],
        flows[1].hash_value ^ 1,
        HashReport.TCPV4,
        f"hash_value {flows[1].hash_value ^ 1:#010x}, model {flows[1].hash_value:#010x}",
    )
    assert by_index[2].problem == "hash_report UDPV4, model TCPV4"
    assert by_index[3].hash_report == 12 and "unknown value 12" in by_index[3].problem
    assert "hash_value" in by_index[3].problem
    assert by_index[4].hash_value is None and "shorter" in by_index[4].problem


def test_report_off_expects_nothing_reported() -> None:
    silent = CONFIG.replace(report=False)
    frame = _frames()[0]
    assert expected_report(silent, frame) == FlowHash(0, HashReport.NONE, b"")
    assert verify_reports([build_frame(frame, vnet_hdr_size=20)], silent) == []
    mismatch = verify_reports([_as_read(frame, classify(frame, CONFIG.types, KEY))], silent)
    assert len(mismatch) == 1 and mismatch[0].expected.report is HashReport.NONE


def test_argument_validation() -> None:
    with pytest.raises(ValidationError, match="vnet_hdr_size"):
        verify_reports([], CONFIG, vnet_hdr_size=12)
    with pytest.raises(ValidationError, match="num_queues"):
        expected_report(CONFIG, b"", num_queues=0)
