"""Output a person reads (issue 15): bars scaled to the busiest queue, the unclassified column,
the flow of every packet with ``--per-packet``, and progress lines only on a terminal."""

from __future__ import annotations

import io
import os
import re
import select
import sys
import tty
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

import pytest

from pytun_hash.cli import main
from pytun_hash.cli import output as output_module
from pytun_hash.cli.charts import BAR_WIDTH, bar, blocks_for
from pytun_hash.cli.output import Output
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.model import classify, predict_queue
from pytun_hash.traffic import Flow
from tests.cli.test_predict import ether, write_pcap

FULL = "\u2588"
EIGHTHS = ["", "\u258f", "\u258e", "\u258d", "\u258c", "\u258b", "\u258a", "\u2589"]


def eighths(text: str) -> int:
    """The length of an eighth-block bar in eighths of a cell (and nothing else may be in ``text``)."""
    full = len(text) - len(text.lstrip(FULL))
    rest = text[full:]
    assert len(rest) <= 1, f"more than one partial cell in {text!r}"
    return 8 * full + (EIGHTHS.index(rest) if rest else 0)


# ----------------------------------------------------------------------------- the bar helper


def test_the_largest_value_gets_the_full_width_and_the_rest_are_proportional() -> None:
    values = [0, 1, 7, 50, 99, 100, 200]
    largest = max(values)
    for v in values:
        hashes = bar(v, largest, blocks=False)
        assert set(hashes) <= {"#"}
        # Rounded half up, but never below one cell for a non-zero value.
        assert len(hashes) == (0 if v == 0 else max(1, (2 * v * BAR_WIDTH + largest) // (2 * largest)))
        blocks = bar(v, largest, blocks=True)
        assert eighths(blocks) == (0 if v == 0 else max(1, (2 * v * BAR_WIDTH * 8 + largest) // (2 * largest)))
    assert bar(200, 200, blocks=False) == "#" * BAR_WIDTH and bar(200, 200, blocks=True) == FULL * BAR_WIDTH
    assert bar(100, 200, blocks=False) == "#" * (BAR_WIDTH // 2)
    assert bar(100, 200, blocks=True) == FULL * (BAR_WIDTH // 2)
    assert bar(3, 8, blocks=True, width=1) == EIGHTHS[3]
    assert bar(5, 10, blocks=False, width=10) == "#####"


def test_a_value_above_zero_is_never_an_empty_bar() -> None:
    assert bar(1, 10**9, blocks=False) == "#"
    assert bar(1, 10**9, blocks=True) == EIGHTHS[1]
    assert bar(0, 10, blocks=True) == bar(0, 0, blocks=True) == bar(5, 0, blocks=False) == ""


def test_blocks_only_where_the_stream_encodes_utf8() -> None:
    assert blocks_for(io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))
    assert blocks_for(io.TextIOWrapper(io.BytesIO(), encoding="UTF8"))
    assert not blocks_for(io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert not blocks_for(io.TextIOWrapper(io.BytesIO(), encoding="latin-1"))
    assert not blocks_for(io.StringIO())  # no encoding: whatever it ends up in, '#' survives


# ----------------------------------------------------------------------------- predict's histogram

# A one-entry table sends every hashed flow to queue 1; with only TCPv4 enabled, the ICMP and UDP
# flows match no type and go to the unclassified queue, 3.
SKEWED = ["--key", "microsoft", "--queues", "4", "--table", "1", "--unclassified-queue", "3", "--types", "tcpv4"]
SKEWED_FLOWS = [
    "tcp,10.0.0.1:1,10.0.0.2:2",
    "tcp,10.0.0.1:3,10.0.0.2:2",
    "tcp,[fd00::1]:4,[fd00::2]:2",  # TCPv6 is not enabled: unclassified
    "icmp,10.0.0.1,10.0.0.2",
    "udp,10.0.0.1:1,10.0.0.2:2",
    "tcp,10.0.0.1:5,10.0.0.2:2",
]


def histogram_rows(text: str) -> dict[int, tuple[int, int, str]]:
    """``queue -> (packets, unclassified, bar)`` from the text histogram."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:4] == ["queue", "packets", "unclassified", "share"])
    rows = {}
    for line in lines[start + 2 :]:
        match = re.fullmatch(r"(\d+) +(\d+) +(\d+) +\d+\.\d%(?:  (.+))?", line)
        if match is None:
            break
        rows[int(match[1])] = (int(match[2]), int(match[3]), match[4] or "")
    return rows


def test_histogram_bars_are_scaled_to_the_busiest_queue(cli: Any) -> None:
    run = cli("predict", *SKEWED, *SKEWED_FLOWS)
    assert run.code == 0, run.err
    rows = histogram_rows(run.out)
    assert {q: r[:2] for q, r in rows.items()} == {0: (0, 0), 1: (3, 0), 2: (0, 0), 3: (3, 3)}
    # Two queues tie for the most packets: both get the full width (the old bars gave each 50%, 20 cells).
    assert rows[1][2] == rows[3][2] == FULL * BAR_WIDTH and rows[0][2] == rows[2][2] == ""
    # Without the last flow: 3 unclassified on queue 3 against 2 hashed on queue 1. Queue 3 is the
    # busiest and gets the full width; queue 1 two thirds of it, to the eighth of a cell.
    fewer = histogram_rows(cli("predict", *SKEWED, *SKEWED_FLOWS[:5]).out)
    assert fewer[1][:2] == (2, 0) and fewer[3][:2] == (3, 3)
    assert eighths(fewer[3][2]) == 8 * BAR_WIDTH
    assert eighths(fewer[1][2]) == round(8 * BAR_WIDTH * 2 / 3)


def test_histogram_bars_are_hashes_where_the_output_is_not_utf8(monkeypatch: pytest.MonkeyPatch) -> None:
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw, encoding="ascii")
    monkeypatch.setattr(sys, "stdout", stdout)
    assert main(["predict", *SKEWED, *SKEWED_FLOWS[:5]]) == 0
    stdout.flush()
    rows = histogram_rows(raw.getvalue().decode("ascii"))
    assert rows[3][2] == "#" * BAR_WIDTH and rows[1][2] == "#" * round(BAR_WIDTH * 2 / 3)


def test_histogram_json_counts_the_unclassified(cli: Any) -> None:
    doc = cli("predict", *SKEWED, *SKEWED_FLOWS, "--json").json()
    assert doc["histogram"] == [
        {"queue": 0, "packets": 0, "unclassified": 0},
        {"queue": 1, "packets": 3, "unclassified": 0},
        {"queue": 2, "packets": 0, "unclassified": 0},
        {"queue": 3, "packets": 3, "unclassified": 3},
    ]
    assert doc["reports"] == {"NONE": 3, "TCPV4": 3}


def test_a_hashed_packet_on_the_unclassified_queue_is_not_counted_unclassified(cli: Any) -> None:
    # Table [3]: hashed TCPv4 flows land on queue 3 too, next to the unclassified ICMP one.
    args = ["--key", "microsoft", "--queues", "4", "--table", "3", "--unclassified-queue", "3", "--types", "tcpv4"]
    doc = cli("predict", *args, "tcp,10.0.0.1:1,10.0.0.2:2", "icmp,10.0.0.1,10.0.0.2", "--json").json()
    assert doc["histogram"][3] == {"queue": 3, "packets": 2, "unclassified": 1}


def test_rfc_rules_count_unclassified_where_the_rfc_puts_them(cli: Any) -> None:
    # The RFC sends an unclassified packet (hash 0) to table[0], and to unclassified_queue only if that is 0.
    args = ["--key", "microsoft", "--queues", "4", "--table", "2,1", "--unclassified-queue", "3", "--types", "tcpv4"]
    doc = cli("predict", *args, "--semantics", "rfc-2023", "icmp,10.0.0.1,10.0.0.2", "--json").json()
    assert doc["flows"][0]["queue"] == 2
    assert [h["unclassified"] for h in doc["histogram"]] == [0, 0, 1, 0]


CONFIG = VnetHashConfig(
    rss=True, types=0x12, indirection_table=(0, 1, 2, 3), key=MICROSOFT_RSS_KEY, unclassified_queue=2
)  # types TCPV4 | TCPV6


def mixed_capture() -> list[bytes]:
    """Ethernet frames: TCP and UDP over IPv4 and IPv6, ICMP, a TCP fragment and an ARP frame."""
    flows = [
        Flow(6, "10.1.0.1", "10.1.0.2", 1000, 80),
        Flow(17, "10.1.0.1", "10.1.0.2", 1000, 53),  # UDPv4 not enabled
        Flow(6, "fd00::1", "fd00::2", 1000, 443),
        Flow(17, "fd00::1", "fd00::2", 5353, 53),  # UDPv6 not enabled
        Flow(1, "10.2.0.1", "10.2.0.2"),
        Flow(6, "10.1.0.3", "10.1.0.2", 1001, 80),
    ]
    frames = [ether(f.ip_packet()) for f in flows]
    fragment = bytearray(flows[0].ip_packet())
    fragment[6:8] = b"\x20\x00"  # MF: the first fragment; ports are never used
    frames.append(ether(bytes(fragment)))
    frames.append(bytes(12) + b"\x08\x06" + bytes(28))  # ARP
    return frames


EXPECTED_FLOWS = [
    "tcp 10.1.0.1:1000 -> 10.1.0.2:80",
    "udp 10.1.0.1:1000 -> 10.1.0.2:53",
    "tcp [fd00::1]:1000 -> [fd00::2]:443",
    "udp [fd00::1]:5353 -> [fd00::2]:53",
    "icmp 10.2.0.1 -> 10.2.0.2",
    "tcp 10.1.0.3:1001 -> 10.1.0.2:80",
    "tcp 10.1.0.1 -> 10.1.0.2 (fragment)",
    None,
]


@pytest.fixture
def capture(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.pcap"
    write_pcap(path, mixed_capture(), linktype=1)
    return path


def config_args() -> list[str]:
    return ["--key", "microsoft", "--table", "0-3", "--unclassified-queue", "2", "--types", "tcpv4,tcpv6"]


def test_pcap_unclassified_column_matches_the_model(cli: Any, capture: Path) -> None:
    doc = cli("predict", *config_args(), "--queues", "4", "--pcap", str(capture), "--json").json()
    frames = mixed_capture()
    queues = [predict_queue(CONFIG, f, 4) for f in frames]
    unclassified = [
        q for f, q in zip(frames, queues, strict=True) if classify(f, CONFIG.types, CONFIG.key).report.name == "NONE"
    ]
    # UDP (types not enabled), ICMP, the fragment (IPv4 not enabled) and ARP: all on queue 2, all unclassified.
    assert Counter(unclassified) == {2: 5}
    assert doc["histogram"] == [
        {"queue": q, "packets": queues.count(q), "unclassified": unclassified.count(q)} for q in range(4)
    ]
    text = cli("predict", *config_args(), "--queues", "4", "--pcap", str(capture))
    rows = histogram_rows(text.out)
    assert {q: r[:2] for q, r in rows.items()} == {q: (queues.count(q), unclassified.count(q)) for q in range(4)}
    assert eighths(rows[2][2]) == 8 * BAR_WIDTH  # the unclassified queue is the busiest


# ----------------------------------------------------------------------------- --per-packet flows

PACKET_ROW = re.compile(r"(\d+) +(.+?) +(0x[0-9a-f]{8}) +([A-Z0-9_]+) +(\d+)")


def test_per_packet_rows_show_the_flow(cli: Any, capture: Path) -> None:
    run = cli("predict", *config_args(), "--queues", "4", "--pcap", str(capture), "--per-packet")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("packet "))
    assert lines[header].split() == ["packet", "flow", "hash", "report", "queue"]
    rows = [PACKET_ROW.fullmatch(line) for line in lines[header + 2 : header + 2 + len(EXPECTED_FLOWS)]]
    assert all(rows), lines
    frames = mixed_capture()
    for index, (row, flow, frame) in enumerate(zip(rows, EXPECTED_FLOWS, frames, strict=True)):
        assert row is not None
        assert int(row[1]) == index and row[2] == (flow or "(no IP flow)")
        assert int(row[5]) == predict_queue(CONFIG, frame, 4)
    # Columns are fixed: the hash starts in the same place on every row with an IPv4 flow.
    starts = {line.index("0x") for line in lines[header + 2 : header + 2 + len(EXPECTED_FLOWS)]}
    assert len(starts) == 1


def test_a_long_flow_pushes_its_line_and_the_row_still_reads(cli: Any, tmp_path: Path) -> None:
    flow = Flow(6, "fd00:1234:5678:9abc:def0:1234:5678:9abc", "fd00:1234:5678:9abc:def0:1234:5678:9abd", 65535, 443)
    path = tmp_path / "v6.pcap"
    write_pcap(path, [flow.ip_packet()], linktype=101)
    run = cli("predict", *config_args(), "--queues", "4", "--pcap", str(path), "--per-packet")
    row = next(line for line in run.out.splitlines() if line.startswith("0 "))
    match = PACKET_ROW.fullmatch(row)
    assert match is not None and match[2] == str(flow) and match[4] == "TCPV6"


def test_per_packet_json_has_the_flow(cli: Any, capture: Path) -> None:
    doc = cli("predict", *config_args(), "--queues", "4", "--pcap", str(capture), "--per-packet", "--json").json()
    assert [p["flow"] for p in doc["packets"]] == EXPECTED_FLOWS
    assert all(list(p) == ["index", "flow", "hash", "report", "queue"] for p in doc["packets"])


def test_per_packet_flows_on_raw_ip_captures(cli: Any, tmp_path: Path) -> None:
    flows = [Flow(17, "192.0.2.1", "198.51.100.7", 40000, 53), Flow(58, "fd00::1", "fd00::2")]
    path = tmp_path / "raw.pcap"
    write_pcap(path, [f.ip_packet() for f in flows], linktype=101)
    doc = cli("predict", *config_args(), "--queues", "4", "--pcap", str(path), "--per-packet", "--json").json()
    assert [p["flow"] for p in doc["packets"]] == [str(f) for f in flows]
    assert doc["packets"][1]["flow"] == "icmpv6 fd00::1 -> fd00::2"


# ----------------------------------------------------------------------------- progress


@pytest.fixture
def pty_stream() -> Iterator[tuple[TextIO, int]]:
    """``(stream, master fd)``: a text stream on a pseudo-terminal's slave side, in raw mode (the
    bytes written arrive at the master as they are), and the fd to read them from."""
    master, slave = os.openpty()
    tty.setraw(slave)
    stream = open(slave, "w", encoding="utf-8", closefd=True)  # noqa: SIM115 - closed below
    try:
        yield stream, master
    finally:
        stream.close()
        os.close(master)


def read_available(fd: int) -> str:
    data = b""
    while select.select([fd], [], [], 0.2)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8")


def test_progress_on_a_terminal(pty_stream: tuple[TextIO, int]) -> None:
    stream, master = pty_stream
    assert stream.isatty()
    with Output(stderr=stream).progress("slow", 10, after=0.0) as progress:
        progress.update(5)
        progress.update(10)  # within the half-second interval: not written until the step ends
    written = read_available(master)
    # Rewritten in place (carriage returns), ended with a newline when the step ends.
    assert written.startswith("\rpytun-hash: slow: 5/10 (") and written.endswith("\n")
    assert written.count("\r") == 2 and "\rpytun-hash: slow: 10/10 (" in written


def test_progress_that_ends_in_an_error_ends_its_line(pty_stream: tuple[TextIO, int]) -> None:
    stream, master = pty_stream
    with pytest.raises(RuntimeError), Output(stderr=stream).progress("slow", after=0.0) as progress:
        progress.update(1)
        raise RuntimeError("boom")
    written = read_available(master)
    assert written.startswith("\rpytun-hash: slow: 1 (") and written.endswith("\n") and written.count("\r") == 1


def test_no_progress_with_json_even_on_a_terminal(pty_stream: tuple[TextIO, int]) -> None:
    stream, master = pty_stream
    with Output(json_mode=True, stderr=stream).progress("slow", 10, after=0.0) as progress:
        progress.update(5)
    assert read_available(master) == ""


@pytest.mark.parametrize("kind", ["pipe", "file", "stringio"])
def test_no_progress_when_stderr_is_not_a_terminal(kind: str, tmp_path: Path) -> None:
    if kind == "pipe":
        read_end, write_end = os.pipe()
        stream: TextIO = open(write_end, "w")  # noqa: SIM115 - closed below
    elif kind == "file":
        stream = open(tmp_path / "err", "w")  # noqa: SIM115 - closed below
    else:
        stream = io.StringIO()
    with Output(stderr=stream).progress("slow", 10, after=0.0) as progress:
        progress.update(5)
    if kind == "pipe":
        stream.close()
        with os.fdopen(read_end) as f:
            assert f.read() == ""
    elif kind == "file":
        stream.close()
        assert (tmp_path / "err").read_text() == ""
    else:
        assert isinstance(stream, io.StringIO) and stream.getvalue() == ""


def fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reading of the progress clock is a second after the last: every update is due."""
    ticks = iter(range(10**6))
    monkeypatch.setattr(output_module, "time", SimpleNamespace(monotonic=lambda: float(next(ticks))))


def pcap_argv(capture: Path, *extra: str) -> list[str]:
    return ["predict", *config_args(), "--queues", "4", "--pcap", str(capture), *extra]


def test_predict_shows_progress_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, pty_stream: tuple[TextIO, int], capture: Path
) -> None:
    stream, master = pty_stream
    fake_clock(monkeypatch)
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert main(pcap_argv(capture)) == 0
    written = read_available(master)
    assert f"\rpytun-hash: reading {capture}: " in written and " packets/s, " in written
    # The last report counts every packet of the capture, all of the file.
    packets = len(mixed_capture())
    name = re.escape(str(capture))
    assert re.search(
        rf"\rpytun-hash: reading {name}: {packets}/{packets} packets \(100%, [\d,]+ packets/s, \d+\.\d s\)\n$", written
    )
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert main(pcap_argv(capture, "--json")) == 0
    assert read_available(master) == ""


def test_predict_shows_no_progress_when_stderr_is_captured(
    cli: Any, monkeypatch: pytest.MonkeyPatch, capture: Path
) -> None:
    fake_clock(monkeypatch)
    for extra in ([], ["--per-packet"], ["--json"]):
        run = cli(*pcap_argv(capture, *extra))
        assert run.code == 0 and run.err == ""
