"""``pytun-hash hash``: published Toeplitz vectors, report selection, input forms, JSON shape, errors."""

from __future__ import annotations

from typing import Any

import pytest

from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.model import Framing, classify

# Microsoft "Verifying the RSS Hash Calculation" (source first): IPv4 and IPv6 rows.
IPV4_ROWS = [
    ("66.9.149.187", 2794, "161.142.100.80", 1766, 0x323E8FC2, 0x51CCC178),
    ("199.92.111.2", 14230, "65.69.140.83", 4739, 0xD718262A, 0xC626B0EA),
    ("38.27.205.30", 48228, "209.142.163.6", 2217, 0x82989176, 0xAFC7327F),
]
IPV6_ROWS = [
    ("3ffe:2501:200:1fff::7", 2794, "3ffe:2501:200:3::1", 1766, 0x2CC18CD5, 0x40207D3D),
    ("3ffe:501:8::260:97ff:fe40:efab", 14230, "ff02::1", 4739, 0x0F0C461C, 0xDDE51BBF),
]

HASH_KEYS = {"ok", "hash", "report", "input", "input_length", "key", "types", "semantics", "flow"}


@pytest.mark.parametrize(("src", "sport", "dst", "dport", "ip_only", "with_ports"), IPV4_ROWS + IPV6_ROWS)
def test_published_vectors(
    cli: Any, src: str, sport: int, dst: str, dport: int, ip_only: int, with_ports: int
) -> None:
    v6 = ":" in src
    for proto, report in (("tcp", "TCPV6" if v6 else "TCPV4"), ("udp", "UDPV6" if v6 else "UDPV4")):
        run = cli("hash", "--key", "microsoft", "--src", src, "--sport", str(sport), "--dst", dst,
                  "--dport", str(dport), "--proto", proto, "--json")  # fmt: skip
        assert run.code == 0, run.err
        doc = run.json()
        assert doc["hash"] == f"{with_ports:#010x}" and doc["report"] == report
    run = cli("hash", "--key", "microsoft", "--src", src, "--dst", dst, "--proto", "icmp", "--json")
    doc = run.json()
    assert doc["hash"] == f"{ip_only:#010x}" and doc["report"] == ("IPV6" if v6 else "IPV4")


def test_json_shape_matches_the_documented_example(cli: Any) -> None:
    run = cli("--json", "hash", "--key", "microsoft", "--src", "66.9.149.187", "--sport", "2794",
              "--dst", "161.142.100.80", "--dport", "1766")  # fmt: skip
    doc = run.json()
    assert set(doc) == HASH_KEYS
    assert doc["ok"] is True and doc["hash"] == "0x51ccc178" and doc["report"] == "TCPV4"
    assert doc["input"] == "420995bba18e64500aea06e6" and doc["input_length"] == 12
    assert doc["key"] == MICROSOFT_RSS_KEY.hex() and doc["semantics"] == "spec"
    assert doc["types"] == ["IPV4", "TCPV4", "UDPV4", "IPV6", "TCPV6", "UDPV6"]
    assert doc["flow"] == "tcp 66.9.149.187:2794 -> 161.142.100.80:1766"
    assert run.err == ""


def test_human_output(cli: Any) -> None:
    run = cli("hash", "--key", "microsoft", "--src", "66.9.149.187", "--sport", "2794",
              "--dst", "161.142.100.80", "--dport", "1766")  # fmt: skip
    assert run.code == 0
    assert run.out.splitlines()[0] == "0x51ccc178  report TCPV4"
    assert "42 09 95 bb a1 8e 64 50 0a ea 06 e6" in run.out


def test_raw_input_has_no_report(cli: Any) -> None:
    doc = cli("hash", "--key", "microsoft", "--input", "42:09:95:bb:a1:8e:64:50", "--json").json()
    assert doc["hash"] == "0x323e8fc2" and doc["report"] is None and doc["flow"] is None


def test_types_select_the_report(cli: Any) -> None:
    base = ("hash", "--key", "microsoft", "--src", "66.9.149.187", "--sport", "2794",
            "--dst", "161.142.100.80", "--dport", "1766", "--json")  # fmt: skip
    assert cli(*base, "--types", "ipv4").json()["report"] == "IPV4"
    assert cli(*base, "--types", "ipv4").json()["hash"] == "0x323e8fc2"
    none = cli(*base, "--types", "udpv4").json()
    assert none["report"] == "NONE" and none["hash"] == "0x00000000" and none["input"] == ""


def test_frame_input_matches_the_model(cli: Any) -> None:
    # An Ethernet + IPv4 + UDP frame, and the same packet as raw IP.
    ip = bytes.fromhex("4500001c0000400040110000c0a80001c0a800021388003500080000")
    frame = bytes(12) + b"\x08\x00" + ip
    expected = classify(frame, 0x3F, MICROSOFT_RSS_KEY)
    doc = cli("hash", "--key", "microsoft", "--frame", frame.hex(), "--json").json()
    assert doc["hash"] == f"{expected.hash_value:#010x}" and doc["report"] == "UDPV4"
    raw = cli("hash", "--key", "microsoft", "--frame", ip.hex(), "--l2", "ip", "--json").json()
    assert raw["hash"] == doc["hash"]
    assert expected == classify(ip, 0x3F, MICROSOFT_RSS_KEY, l2=Framing.IP)


def test_rfc_semantics_differ(cli: Any) -> None:
    base = ("hash", "--key", "microsoft", "--input", "420995bba18e6450", "--json")
    spec = cli(*base).json()["hash"]
    rfc = cli(*base, "--semantics", "rfc-2023").json()["hash"]
    assert spec == "0x323e8fc2" and rfc != spec


def test_symmetric_key_is_symmetric(cli: Any) -> None:
    a = cli("hash", "--key", "symmetric", "--src", "10.0.0.1", "--sport", "1000", "--dst", "10.0.0.2",
            "--dport", "80", "--json").json()  # fmt: skip
    b = cli("hash", "--key", "symmetric", "--src", "10.0.0.2", "--sport", "80", "--dst", "10.0.0.1",
            "--dport", "1000", "--json").json()  # fmt: skip
    assert a["hash"] == b["hash"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--key", "nothex", "--src", "1.2.3.4", "--dst", "1.2.3.5"], "--key"),
        (["--key", "00" * 41, "--src", "1.2.3.4", "--dst", "1.2.3.5"], "--key"),
        (["--key", "microsoft", "--src", "1.2.3.4", "--dst", "1.2.3.5", "--sport", "70000"], "--sport"),
        (["--key", "microsoft", "--src", "1.2.3.4", "--dst", "::1"], "--dst"),
        (["--key", "microsoft", "--src", "nope", "--dst", "1.2.3.5"], "--src"),
        (["--key", "microsoft", "--src", "1.2.3.4", "--dst", "1.2.3.5", "--proto", "sctpx"], "protocol"),
        (["--key", "microsoft", "--src", "1.2.3.4", "--dst", "1.2.3.5", "--types", "tcpv9"], "--types[0]"),
        (["--key", "microsoft", "--input", "zz"], "--input"),
    ],
)
def test_bad_values_name_their_field(cli: Any, args: list[str], field: str) -> None:
    run = cli("hash", *args, "--json")
    assert run.code == 2
    doc = run.json()
    assert doc["ok"] is False and doc["error"]["field"] == field and doc["error"]["exit_code"] == 2
    assert len(run.err.strip().splitlines()) == 1 and run.err.startswith("pytun-hash: error: ")
    assert "(hint: " in run.err and "Traceback" not in run.err


def test_conflicting_packet_descriptions(cli: Any) -> None:
    run = cli("hash", "--key", "microsoft", "--input", "00", "--src", "1.2.3.4", "--dst", "1.2.3.5")
    assert run.code == 2 and "one of" in run.err
    run = cli("hash", "--key", "microsoft")
    assert run.code == 2 and "--src and --dst" in run.err
