"""Capture files as numpy chunks: whatever the chunk size and the file format, the batch model
predicts every packet as the scalar model does."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytun_hash import HashType, VnetHashConfig
from pytun_hash.capture.reader import CaptureReader
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.model import Semantics, classify, queue_for_flow
from pytun_hash.model import frames as fb
from tests.capture import builders as b

np = pytest.importorskip("numpy", reason="capture chunks need numpy (the pytun_hash[numpy] extra)")

from pytun_hash.capture.chunks import frame_chunks  # noqa: E402 (after the numpy check)
from pytun_hash.model.batch import predict_chunks, predict_frames  # noqa: E402

CONFIG = VnetHashConfig(
    rss=True, types=HashType(0x1FF), indirection_table=(0, 1, 2, 3, 3, 2, 1, 0), key=MICROSOFT_RSS_KEY
)


def frames() -> list[bytes]:
    out = []
    for i in range(120):
        src = f"10.0.{i}.1"
        if i % 4 == 0:
            packet = fb.ipv4(src, "10.9.9.9", fb.TCP, fb.tcp(1000 + i, 80))
        elif i % 4 == 1:
            packet = fb.ipv6(f"2001:db8::{i:x}", "2001:db8::1", fb.UDP, fb.udp(2000 + i, 53))
        elif i % 4 == 2:
            packet = fb.ipv6(f"2001:db8::{i:x}", "2001:db8::1", fb.HOPOPTS, fb.hop_by_hop(fb.TCP) + fb.tcp(i, 443))
        else:
            packet = fb.ipv4(src, "10.9.9.9", fb.UDP, fb.udp(i, 4789), mf=True)
        frame = fb.ethernet(packet, vlans=(0x8100,) * (i % 3))
        out.append(frame[: len(frame) - (i % 7 == 6) * 30])  # now and then cut short
    return out


def files(tmp_path: Path) -> dict[str, Path]:
    fs = frames()
    made = {
        "pcap": b.pcap(1, fs),
        "pcap-be-ns": b.pcap(1, fs, order=">", magic=b.PCAP_NS),
        "sll": b.pcap(113, [b.sll(f) for f in fs]),
        "sll2": b.pcap(276, [b.sll2(f) for f in fs]),
        "pcapng": b.shb() + b.idb(1) + b"".join(b.epb(0, f) for f in fs),
        "pcapng-mixed": b.shb(">")
        + b.idb(1, ">")
        + b.idb(113, ">")
        + b.idb(276, ">")
        + b"".join(
            b.epb(0, f, ">") if i % 3 == 0 else b.epb(1, b.sll(f), ">") if i % 3 == 1 else b.epb(2, b.sll2(f), ">")
            for i, f in enumerate(fs)
        ),
    }
    paths = {}
    for name, data in made.items():
        paths[name] = tmp_path / f"{name}.cap"
        paths[name].write_bytes(data)
    return paths


@pytest.mark.parametrize("semantics", list(Semantics))
def test_every_format_and_chunk_size_matches_the_scalar_model(tmp_path: Path, semantics: Semantics) -> None:
    expected = []
    for frame in frames():
        flow = classify(frame, CONFIG.types, CONFIG.key, semantics=semantics)
        expected.append((flow.hash_value, int(flow.report), queue_for_flow(CONFIG, flow, 4, semantics=semantics)))
    for name, path in files(tmp_path).items():
        for size in (1, 7, 65536):
            got: list[tuple[int, int, int]] = []
            with CaptureReader(str(path)) as reader:
                for chunk in frame_chunks(reader, size, read_bytes=0):
                    assert 1 <= len(chunk) <= size
                    result = predict_frames(chunk, CONFIG, 4, semantics=semantics)
                    got.extend(
                        zip(result.hashes.tolist(), result.reports.tolist(), result.queues.tolist(), strict=True)
                    )
            assert got == expected, (name, size)


def test_summaries_do_not_depend_on_chunks(tmp_path: Path) -> None:
    summaries = set()
    for path in files(tmp_path).values():
        for size in (1, 7, 65536):
            with CaptureReader(str(path)) as reader:
                summary = predict_chunks(frame_chunks(reader, size), CONFIG, 4)
            summaries.add((summary.packets, summary.histogram, summary.unclassified, tuple(summary.reports.items())))
            assert summary.truncated == 0  # frames cut short, but recorded whole
    assert len(summaries) == 1


@pytest.mark.parametrize("linktype", [1, 101, 113, 276])
@pytest.mark.parametrize("length", [0, 1, 5, 13, 19])
def test_short_records_at_the_end_of_the_file_are_frames_too(tmp_path: Path, linktype: int, length: int) -> None:
    # The long fuzz campaign found it: an empty SLL2 record as the file's last bytes made the batch
    # engine refuse the chunk ("a frame lies outside the buffer") where the scalar reader gave b"".
    record = bytes(range(1, length + 1))
    for name, data in (
        ("pcap", b.pcap(linktype, [record])),
        ("pcapng-epb", b.shb() + b.idb(linktype) + b.epb(0, record)),
        ("pcapng-spb", b.shb() + b.idb(linktype) + b.spb(record)),
    ):
        path = tmp_path / f"{name}-{linktype}-{length}.cap"
        path.write_bytes(data)
        with CaptureReader(str(path)) as reader:
            scalar = [(p.frame, p.framing) for p in reader]
        with CaptureReader(str(path)) as reader:
            chunks = list(frame_chunks(reader, 4, read_bytes=0))
        frames = [chunk.frame(i) for chunk in chunks for i in range(len(chunk))]
        assert frames == [frame for frame, _ in scalar], (name, frames, scalar)
