"""``pytun-hash predict``: flows and capture files, against the software model."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from pytun_hash import TunTapDevice
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.device.hashctl import probe_revision
from pytun_hash.device.netns import NetworkNamespace
from pytun_hash.model import Framing, predict_queue, semantics_for
from pytun_hash.traffic import Flow

CONFIG = VnetHashConfig(
    rss=True,
    types=0x3F,
    indirection_table=(0, 1, 2, 3, 3, 2, 1, 0),
    key=MICROSOFT_RSS_KEY,
    unclassified_queue=2,
)
FLOWS = [
    "tcp,66.9.149.187:2794,161.142.100.80:1766",
    "udp,199.92.111.2:14230,65.69.140.83:4739",
    "tcp,[3ffe:2501:200:1fff::7]:2794,[3ffe:2501:200:3::1]:1766",
    "icmp,10.0.0.1,10.0.0.2",
    "47,fd00::1,fd00::2",
]


HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)


def write_pcap(
    path: Path, packets: list[bytes], *, linktype: int, magic: int = 0xA1B2C3D4, order: str = "<"
) -> None:
    """A classic pcap file written by hand (independent of the reader under test)."""
    out = struct.pack(f"{order}IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, data in enumerate(packets):
        out += struct.pack(f"{order}IIII", 1700000000 + i, i, len(data), len(data)) + data
    path.write_bytes(out)


def ether(ip: bytes) -> bytes:
    ethertype = b"\x86\xdd" if ip[0] >> 4 == 6 else b"\x08\x00"
    return bytes.fromhex("020000000002020000000001") + ethertype + ip


def sample_flows() -> list[Flow]:
    return [
        Flow(6, "10.1.0.1", "10.1.0.2", 1000 + i, 80) if i % 3 == 0 else
        Flow(17, "fd00::1", "fd00::2", 2000 + i, 53) if i % 3 == 1 else
        Flow(1, f"10.2.0.{i}", "10.2.0.254")
        for i in range(60)
    ]  # fmt: skip


def sample_packets() -> list[bytes]:
    return [f.ip_packet() for f in sample_flows()]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "rss.json"
    path.write_text(json.dumps(CONFIG.to_mapping()))
    return path


def test_flows_match_the_model(cli: Any, config_file: Path) -> None:
    run = cli("predict", "--config", str(config_file), "--queues", "4", *FLOWS, "--json")
    assert run.code == 0, run.err
    doc = run.json()
    assert set(doc) == {"ok", "queues", "config", "semantics", "semantics_source", "flows", "histogram", "reports"}
    assert doc["queues"] == 4 and doc["config"] == CONFIG.to_mapping()
    from pytun_hash.cli.common import parse_flow

    for text, row in zip(FLOWS, doc["flows"], strict=True):
        flow = parse_flow(text)
        assert row["flow"] == str(flow)
        assert row["queue"] == predict_queue(CONFIG, flow.ip_packet(), 4, l2=Framing.IP)
    assert doc["flows"][0]["hash"] == "0x51ccc178" and doc["flows"][0]["report"] == "TCPV4"
    assert [h["queue"] for h in doc["histogram"]] == [0, 1, 2, 3]
    assert sum(h["packets"] for h in doc["histogram"]) == len(FLOWS)
    assert doc["reports"] == {"IPV4": 1, "IPV6": 1, "TCPV4": 1, "TCPV6": 1, "UDPV4": 1}


def test_flags_build_the_same_config(cli: Any) -> None:
    run = cli("predict", "--key", "microsoft", "--table", "0-3,3-0", "--unclassified-queue", "2",
              "--queues", "4", *FLOWS, "--json")  # fmt: skip
    assert run.json()["config"] == CONFIG.to_mapping()


def test_queue_count_folds_table_entries(cli: Any) -> None:
    doc = cli("predict", "--key", "microsoft", "--table", "0-7", *FLOWS[:2], "--json").json()
    assert doc["queues"] == 8  # default: highest table entry + 1
    folded = cli(
        "predict", "--key", "microsoft", "--table", "0-7", "--queues", "3", *FLOWS[:2], "--json"
    ).json()
    assert [r["queue"] for r in folded["flows"]] == [r["queue"] % 3 for r in doc["flows"]]


def test_human_output_has_a_histogram(cli: Any, config_file: Path) -> None:
    run = cli("predict", "--config", str(config_file), "--queues", "4", *FLOWS)
    assert run.code == 0
    assert "tcp 66.9.149.187:2794 -> 161.142.100.80:1766" in run.out
    assert "queue  packets  unclassified  share" in run.out and "reports:" in run.out
    # The busiest queue's bar is the full 40 cells (capsys writes UTF-8: eighth blocks).
    assert "\u2588" * 40 in run.out and "#" not in run.out


@pytest.mark.parametrize(
    ("magic", "order"), [(0xA1B2C3D4, "<"), (0xA1B2C3D4, ">"), (0xA1B23C4D, "<"), (0xA1B23C4D, ">")]
)
@pytest.mark.parametrize("linktype", [1, 101, 228, 229])
def test_pcap_histogram(
    cli: Any, config_file: Path, tmp_path: Path, magic: int, order: str, linktype: int
) -> None:
    packets = sample_packets()
    if linktype == 228:
        packets = [p for p in packets if p[0] >> 4 == 4]
    elif linktype == 229:
        packets = [p for p in packets if p[0] >> 4 == 6]
    framed = [ether(p) for p in packets] if linktype == 1 else packets
    path = tmp_path / "capture.pcap"
    write_pcap(path, framed, linktype=linktype, magic=magic, order=order)
    run = cli(
        "predict",
        "--config",
        str(config_file),
        "--queues",
        "4",
        "--pcap",
        str(path),
        "--per-packet",
        "--json",
    )
    assert run.code == 0, run.err
    doc = run.json()
    framing = Framing.ETHERNET if linktype == 1 else Framing.IP
    expected = [predict_queue(CONFIG, f, 4, l2=framing) for f in framed]
    assert [p["queue"] for p in doc["packets"]] == expected
    assert [h["packets"] for h in doc["histogram"]] == [expected.count(q) for q in range(4)]
    assert doc["pcap"] == {
        "file": str(path), "linktype": linktype, "packets": len(framed), "truncated": 0, "unparsed": 0,
        "format": "pcap", "linktypes": [linktype], "engine": doc["pcap"]["engine"],
    }  # fmt: skip
    assert doc["pcap"]["engine"] in ("batch", "scalar")


def test_pcap_truncated_and_unparsed_packets(cli: Any, config_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "odd.pcap"
    good = ether(Flow(17, "10.0.0.1", "10.0.0.2", 1, 2).ip_packet())
    arp = bytes(12) + b"\x08\x06" + bytes(28)
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 30, 1)
    out += struct.pack("<IIII", 0, 0, 30, len(good)) + good[:30]  # snaplen 30: cut inside the IP header
    out += struct.pack("<IIII", 0, 0, len(arp), len(arp)) + arp
    path.write_bytes(out)
    doc = cli("predict", "--config", str(config_file), "--pcap", str(path), "--json").json()
    assert doc["pcap"]["packets"] == 2 and doc["pcap"]["truncated"] == 1 and doc["pcap"]["unparsed"] == 2
    # Not hashed: the unclassified queue.
    assert doc["histogram"][2] == {"queue": 2, "packets": 2, "unclassified": 2} and doc["reports"] == {"NONE": 2}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x0a\x0d\x0d\x0a" + bytes(40), "pcapng"),
        (b"GIF89a" + bytes(40), "not a pcap or pcapng file"),
        (HEADER[:-4] + struct.pack("<I", 105), "link type 105"),
        (HEADER[:16], "cut short"),
        (HEADER + struct.pack("<IIII", 0, 0, 100, 100) + bytes(10), "record 0 is cut short"),
        (HEADER + struct.pack("<IIII", 0, 0, 1 << 30, 1 << 30), "corrupt"),
    ],
)  # fmt: skip
def test_bad_pcap_files(cli: Any, config_file: Path, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    run = cli("predict", "--config", str(config_file), "--pcap", str(path), "--json")
    assert run.code == 2
    assert message in run.json()["error"]["message"] and run.json()["error"]["field"] == "pcap"
    assert len(run.err.splitlines()) == 1


def test_missing_pcap(cli: Any, config_file: Path, tmp_path: Path) -> None:
    run = cli("predict", "--config", str(config_file), "--pcap", str(tmp_path / "none.pcap"))
    assert run.code == 2 and "cannot read" in run.err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "FLOW arguments or --pcap"),
        (["--queues", "4", "tcp,1.2.3.4:1,1.2.3.5:2"], "no Toeplitz key"),
        (["--key", "microsoft", "tcp,1.2.3.4:1,1.2.3.5:2"], "no indirection table"),
        (["--key", "microsoft", "--queues", "4", "--no-rss", "tcp,1.2.3.4:1,1.2.3.5:2"], "rss off"),
        (["--key", "microsoft", "--queues", "4", "tcp,1.2.3.4,1.2.3.5:2"], "flow.sport"),
        (["--key", "microsoft", "--queues", "4", "tcp;1.2.3.4"], "PROTO,SRC"),
        (["--key", "microsoft", "--queues", "4", "tcp,[::1]x,::2"], "flow.src"),
        (["--key", "microsoft", "--table", "0,1,2", "tcp,1.2.3.4:1,1.2.3.5:2"], "power of two"),
        (
            ["--key", "microsoft", "--queues", "4", "--table-length", "3", "tcp,1.2.3.4:1,1.2.3.5:2"],
            "--table-length",
        ),
        (["--key", "microsoft", "--queues", "4", "--per-packet", "tcp,1.2.3.4:1,1.2.3.5:2"], "--per-packet"),
        (["--key", "microsoft", "--queues", "4", "--section", "x", "tcp,1.2.3.4:1,1.2.3.5:2"], "--section"),
        # Sizes are checked before anything is allocated: a histogram row per queue, a table entry per range step.
        (
            ["--key", "microsoft", "--queues", "65537", "tcp,1.2.3.4:1,1.2.3.5:2"],
            "--queues: a TUN/TAP device has 1..256 queues",
        ),
        (["--key", "microsoft", "--table", "0-100000000", "tcp,1.2.3.4:1,1.2.3.5:2"], "at most 128 entries"),
        (["--key", "microsoft", "--queues", "\uff14", "tcp,1.2.3.4:1,1.2.3.5:2"], "ASCII digits"),
    ],
)
def test_usage_errors(cli: Any, args: list[str], needle: str) -> None:
    run = cli("predict", *args)
    assert run.code == 2, run.out
    assert needle in run.err and run.err.count("\n") == 1


def test_semantics_without_a_device(cli: Any) -> None:
    flow = "tcp,66.9.149.187:2794,161.142.100.80:1766"
    spec = cli("predict", "--key", "microsoft", "--queues", "4", flow, "--json").json()
    assert spec["semantics"] == "spec" and "no --dev" in spec["semantics_source"]
    assert spec["flows"][0]["hash"] == "0x51ccc178"
    rfc = cli("predict", "--key", "microsoft", "--queues", "4", "--semantics", "rfc-2023", flow, "--json").json()
    assert rfc["semantics"] == "rfc-2023" and rfc["flows"][0]["hash"] != "0x51ccc178"
    refused = cli("predict", "--key", "microsoft", "--queues", "4", "--revision", "rfc", flow)
    assert refused.code == 2 and "--dev" in refused.err


@pytest.mark.kernel
def test_predict_for_a_live_device(cli: Any, netns: NetworkNamespace) -> None:
    flow = "udp,10.0.0.1:1000,10.0.0.2:2000"
    with TunTapDevice.create("pred%d", queues=3) as device:
        doc = cli("predict", "--dev", device.name, "--key", "microsoft", flow, "--json").json()
        # Its queue count, and the rules of what the kernel would put in force (probed).
        revision = probe_revision(device).revision
        assert doc["queues"] == 3 and len(doc["config"]["indirection_table"]) == 128
        assert doc["semantics"] == semantics_for(revision).value
        assert ("probed" in doc["semantics_source"]) == (revision is not None)
        named = cli("predict", "--dev", device.name, "--revision", "rfc", "--key", "microsoft", flow, "--json")
        assert named.json()["semantics"] == "rfc-2023" and "named" in named.json()["semantics_source"]
        ebpf = cli("predict", "--dev", device.name, "--backend", "ebpf", "--key", "microsoft", flow, "--json")
        assert ebpf.json()["semantics"] == "spec"
    gone = cli("predict", "--dev", device.name, "--key", "microsoft", flow)
    assert gone.code == 3 and "no TUN/TAP device named" in gone.err


def test_per_packet_output_is_streamed_as_one_json_document(cli: Any, config_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "capture.pcap"
    packets = [ether(p) for p in sample_packets()]
    write_pcap(path, packets, linktype=1)
    run = cli("predict", "--config", str(config_file), "--pcap", str(path), "--per-packet", "--json")
    assert run.code == 0, run.err
    doc = run.json()
    # Entries are written before the outcome is known, so "ok" comes last.
    assert list(doc) == [
        "queues", "config", "semantics", "semantics_source", "packets", "pcap", "histogram", "reports", "ok"
    ]  # fmt: skip
    assert doc["ok"] is True and [p["index"] for p in doc["packets"]] == list(range(len(packets)))
    # One line per entry, so a consumer can follow the stream line by line.
    lines = [line.strip().rstrip(",") for line in run.out.splitlines() if line.strip().startswith('{"index"')]
    assert [json.loads(line) for line in lines] == doc["packets"]
    unstreamed = cli("predict", "--config", str(config_file), "--pcap", str(path), "--json").json()
    assert {k: v for k, v in doc.items() if k != "packets"} == unstreamed


def test_per_packet_text_is_a_line_per_packet(cli: Any, config_file: Path, tmp_path: Path) -> None:
    path = tmp_path / "capture.pcap"
    write_pcap(path, [ether(p) for p in sample_packets()], linktype=1)
    run = cli("predict", "--config", str(config_file), "--pcap", str(path), "--per-packet")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("packet ")))
    assert lines[start].split() == ["packet", "flow", "hash", "report", "queue"]
    rows = [line.split() for line in lines[start + 2 : start + 2 + 60]]
    # packet, then the flow (protocol, source, "->", destination), hash, report, queue.
    assert [int(r[0]) for r in rows] == list(range(60)) and all(r[3] == "->" for r in rows)
    assert [" ".join(r[1:5]) for r in rows] == [str(f) for f in sample_flows()]
    assert all(r[5].startswith("0x") for r in rows)
    assert lines[start + 2 + 60].startswith(f"{path}: link type 1, 60 packets")


def test_a_capture_cut_short_ends_the_streamed_document_with_the_error(
    cli: Any, config_file: Path, tmp_path: Path
) -> None:
    path = tmp_path / "cut.pcap"
    write_pcap(path, [ether(p) for p in sample_packets()], linktype=1)
    path.write_bytes(path.read_bytes()[:-5])
    run = cli("predict", "--config", str(config_file), "--pcap", str(path), "--per-packet", "--json")
    assert run.code == 2 and "record 59 is cut short" in run.err and run.err.count("\n") == 1
    doc = run.json()
    assert doc["ok"] is False and doc["error"]["field"] == "pcap" and len(doc["packets"]) == 59
    text = cli("predict", "--config", str(config_file), "--pcap", str(path), "--per-packet")
    assert text.code == 2 and text.out.count("\n") == 4 + 59  # head, table header, the packets read; no summary


def test_ethtool_equal_and_weight_build_the_table(cli: Any) -> None:
    weighted = cli("predict", "--key", "microsoft", "--weight", "6,2", "--table-length", "8", *FLOWS[:1], "--json")
    assert weighted.json()["config"]["indirection_table"] == [0, 0, 0, 0, 0, 0, 1, 1]  # as ethtool -X weight 6 2
    equal = cli("predict", "--key", "microsoft", "--equal", "3", "--table-length", "8", *FLOWS[:1], "--json")
    assert equal.json()["config"]["indirection_table"] == [0, 1, 2, 0, 1, 2, 0, 1]
    both = cli("predict", "--key", "microsoft", "--equal", "3", "--table", "0-3", *FLOWS[:1])
    assert both.code == 2 and "not allowed with argument" in both.err
    over = cli("predict", "--key", "microsoft", "--weight", "100,29", *FLOWS[:1], "--json")
    assert over.code == 2 and "more than the table's 128 entries" in over.json()["error"]["message"]
    assert cli("predict", "--key", "microsoft", "--weight", "0,0", *FLOWS[:1]).code == 2
