"""Fuzzing the software model: the frame parser, classification and queue prediction, the virtio-net
header codecs and the report verifier, with well-formed frames that are then damaged.

Properties: only pytun_hash's own errors escape, nothing hangs, and what comes out is consistent
(addresses of the right size, offsets inside the frame, hashes agreeing with the reference
Toeplitz, queues inside the device).
"""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st

from pytun_hash import HashReport, ValidationError, VnetHashConfig
from pytun_hash._abi.virtio_net import VIRTIO_NET_HDR_V1_HASH_SIZE
from pytun_hash.model import (
    Framing,
    Semantics,
    VnetHeader,
    build_frame,
    classify,
    parse_frame,
    predict_queue,
    split_frame,
    toeplitz_hash_reference,
    verify_reports,
)
from pytun_hash.model.toeplitz import rfc_input
from tests.fuzz.harness import call
from tests.fuzz.strategies import configs, damaged, frames, hash_types

semantics = st.sampled_from(list(Semantics))


@given(framed=frames(), types=hash_types(), key=st.binary(max_size=40), rules=semantics)
def test_parse_and_classify_any_frame(framed: tuple[Framing, bytes], types: int, key: bytes, rules: Semantics) -> None:
    framing, frame = framed
    parsed = call(parse_frame, frame, framing).get()  # the contents of a frame never make it raise
    if parsed is not None:
        size = 4 if parsed.version == 4 else 16
        assert parsed.version in (4, 6) and len(parsed.src) == len(parsed.dst) == size
        assert parsed.l4_offset is None or 0 < parsed.l4_offset <= len(frame)
        assert parsed.ports is None or (len(parsed.ports) == 4 and not parsed.fragment)
        for extra in (parsed.home_address, parsed.rh2_address):
            assert extra is None or len(extra) == 16
    flow = call(classify, frame, types, key, l2=framing, semantics=rules).get()
    if flow.report is HashReport.NONE:
        assert flow.hash_value == 0 and flow.hashed == b""
        return
    assert parsed is not None, "a frame the parser refused was hashed"
    assert flow.report.hash_type & types or rules is Semantics.RFC_2023
    fed = flow.hashed if rules is Semantics.SPEC else rfc_input(flow.hashed)
    assert flow.hash_value == toeplitz_hash_reference(key.ljust(40, b"\0"), fed)


@given(framed=frames(), config=configs(), num_queues=st.integers(1, 256), rules=semantics)
def test_predict_queue_stays_inside_the_device(
    framed: tuple[Framing, bytes], config: VnetHashConfig, num_queues: int, rules: Semantics
) -> None:
    framing, frame = framed
    queue = call(predict_queue, config, frame, num_queues, l2=framing, semantics=rules)
    if not config.rss:
        assert isinstance(queue.error, ValidationError) and queue.error.field == "rss"
        return
    assert 0 <= queue.get() < num_queues


@given(
    data=st.data(),
    header_size=st.integers(0, 40),
    layout=st.sampled_from([None, 10, 12, 20, 13]),
    little_endian=st.booleans(),
)
def test_vnet_header_codecs(data: st.DataObject, header_size: int, layout: int | None, little_endian: bool) -> None:
    if data.draw(st.booleans()):
        header = VnetHeader(
            flags=data.draw(st.integers(0, 7)),
            gso_type=data.draw(st.integers(0, 255)),
            hdr_len=data.draw(st.integers(0, 0xFFFF)),
            num_buffers=data.draw(st.integers(0, 0xFFFF)),
            hash_value=data.draw(st.integers(0, 0xFFFFFFFF)),
            hash_report=data.draw(st.sampled_from(list(HashReport))),
        )
        built = call(build_frame, b"frame", header, vnet_hdr_size=max(header_size, 10), layout=layout)
        buffer = data.draw(damaged(built.value or b""))
    else:
        buffer = data.draw(st.binary(max_size=64))
    split = call(split_frame, buffer, header_size, layout=layout, little_endian=little_endian)
    if split.ok:
        header, frame = split.get()
        assert frame == buffer[header_size:]
        chosen = layout or max(n for n in (10, 12, 20) if n <= header_size)
        # Decoding is exact: encoding the header again gives the bytes it came from.
        assert header.encode(chosen, little_endian=little_endian) == buffer[:chosen]
    decoded = call(VnetHeader.decode, buffer, data.draw(st.sampled_from([10, 12, 20, 7])))
    if decoded.ok:
        assert isinstance(decoded.get(), VnetHeader)


@given(data=st.data(), config=configs(), header_size=st.integers(0, 32), rules=semantics)
def test_verify_reports_on_any_buffers(
    data: st.DataObject, config: VnetHashConfig, header_size: int, rules: Semantics
) -> None:
    buffers = []
    for _ in range(data.draw(st.integers(0, 4))):
        _framing, frame = data.draw(frames())
        head = struct.pack("<IH", data.draw(st.integers(0, 0xFFFFFFFF)), data.draw(st.integers(0, 12)))
        buffers.append(data.draw(damaged(bytes(12) + head + bytes(max(header_size - 18, 0)) + frame)))
    mismatches = call(verify_reports, buffers, config, vnet_hdr_size=header_size, semantics=rules)
    if header_size < VIRTIO_NET_HDR_V1_HASH_SIZE:
        assert mismatches.error is not None
        return
    found = mismatches.get()
    assert [m.index for m in found] == sorted({m.index for m in found})
    assert all(0 <= m.index < len(buffers) and m.problem for m in found)
