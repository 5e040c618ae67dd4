"""``predict --pcap`` on pcapng and Linux cooked captures, and its two engines: the same document
as for the equivalent classic pcap, and the same whichever engine ran (but ``pcap.engine``)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from pytun_hash.cli import pcapcmd
from pytun_hash.cli.output import Progress
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.model import frames as fb
from tests.capture import builders as b

CONFIG = VnetHashConfig(
    rss=True, types=0x1FF, indirection_table=(0, 1, 2, 3, 3, 2, 1, 0), key=MICROSOFT_RSS_KEY, unclassified_queue=2
)


def frames() -> list[bytes]:
    out = []
    for i in range(90):
        if i % 3 == 0:
            packet = fb.ipv4(f"10.0.{i}.1", "10.0.0.2", fb.TCP, fb.tcp(1000 + i, 80))
        elif i % 3 == 1:
            packet = fb.ipv6(f"fd00::{i:x}", "fd00::2", fb.DSTOPTS, fb.dest_options(fb.UDP) + fb.udp(i, 53))
        else:
            packet = fb.ipv4(f"10.1.{i}.1", "10.0.0.2", fb.ICMP, fb.icmp_echo())
        out.append(fb.ethernet(packet, vlans=(0x8100,) * (i % 2)))
    return out


@pytest.fixture
def captures(tmp_path: Path) -> dict[str, Path]:
    fs = frames()
    made = {
        "pcap": b.pcap(1, fs),
        "pcapng": b.shb() + b.idb(1, tsresol=9) + b"".join(b.epb(0, f, stamp=i) for i, f in enumerate(fs)),
        "sll": b.pcap(113, [b.sll(f) for f in fs]),
        "sll2": b.shb(">") + b.idb(276, ">") + b"".join(b.epb(0, b.sll2(f), ">") for f in fs),
    }
    paths = {}
    for name, data in made.items():
        paths[name] = tmp_path / f"capture.{name}"
        paths[name].write_bytes(data)
    return paths


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "rss.json"
    path.write_text(json.dumps(CONFIG.to_mapping()))
    return path


def predict(cli: Any, config_file: Path, path: Path, *extra: str) -> Any:
    run = cli("predict", "--config", str(config_file), "--queues", "4", "--pcap", str(path), "--json", *extra)
    assert run.code == 0, run.err
    return run.json()


def without(document: Any, *keys: str) -> Any:
    return {**document, "pcap": {k: v for k, v in document["pcap"].items() if k not in keys}}


@pytest.mark.parametrize("per_packet", [(), ("--per-packet",)])
def test_every_format_predicts_as_the_classic_pcap(
    cli: Any, config_file: Path, captures: dict[str, Path], per_packet: tuple[str, ...]
) -> None:
    reference = predict(cli, config_file, captures["pcap"], *per_packet)
    assert reference["pcap"]["packets"] == 90 and reference["reports"]["TCPV4"] == 30
    for name in ("pcapng", "sll", "sll2"):
        document = predict(cli, config_file, captures[name], *per_packet)
        assert document["pcap"]["format"] == ("pcapng" if name in ("pcapng", "sll2") else "pcap")
        assert document["pcap"]["linktypes"] == [{"pcapng": 1, "sll": 113, "sll2": 276}[name]]
        ignored = ("file", "format", "linktype", "linktypes")
        assert without(document, *ignored) == without(reference, *ignored), name


@pytest.mark.parametrize("per_packet", [(), ("--per-packet",)])
@pytest.mark.parametrize("semantics", ["spec", "rfc-2023"])
def test_both_engines_give_the_same_document(
    cli: Any,
    config_file: Path,
    captures: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    per_packet: tuple[str, ...],
    semantics: str,
) -> None:
    pytest.importorskip("numpy", reason="the batch engine needs numpy (the pytun_hash[numpy] extra)")
    for path in captures.values():
        batch = predict(cli, config_file, path, "--semantics", semantics, *per_packet)
        with monkeypatch.context() as patch:
            patch.setattr(pcapcmd, "choose_engine", lambda: pcapcmd.SCALAR)
            scalar = predict(cli, config_file, path, "--semantics", semantics, *per_packet)
        assert batch["pcap"]["engine"] == "batch" and scalar["pcap"]["engine"] == "scalar"
        assert without(batch, "engine") == without(scalar, "engine")


def test_both_engines_report_the_same_fault_after_the_same_packets(
    cli: Any, config_file: Path, captures: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = captures["pcapng"]
    path.write_bytes(path.read_bytes()[:-3])
    runs = []
    for engine in (pcapcmd.BATCH, pcapcmd.SCALAR):
        with monkeypatch.context() as patch:
            patch.setattr(pcapcmd, "choose_engine", lambda engine=engine: engine)
            run = cli("predict", "--config", str(config_file), "--pcap", str(path), "--per-packet", "--json")
        assert run.code == 2 and run.json()["error"]["field"] == "pcap"
        runs.append(run.json())
    assert runs[0] == runs[1] and len(runs[0]["packets"]) == 89


def test_engine_without_numpy_is_scalar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pcapcmd, "numpy_available", lambda: False)
    assert pcapcmd.choose_engine() == pcapcmd.SCALAR


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_an_estimated_total_the_share_and_the_rate() -> None:
    stream = _Terminal()
    with Progress(stream, "reading x.pcap", after=0.0, unit="packets") as progress:
        time.sleep(0.01)
        progress.update(250, total=1000, estimated=True)
        progress.update(1000, total=1000)
    first, last = stream.getvalue().split("\r")[1:]
    assert first.startswith("pytun-hash: reading x.pcap: 250/~1000 packets (25%, ") and " packets/s, " in first
    assert last.startswith("pytun-hash: reading x.pcap: 1000/1000 packets (100%, ") and last.endswith(" s)\n")
