"""What each command imports: only what it uses (issue 17's start-up). Checked by module, not by time."""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from pytun_hash.cli import build_parser
from pytun_hash.cli.parser import COMMANDS
from pytun_hash.model import frames as fr

_PROBE = """
import contextlib, io, json, sys
from pytun_hash.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("pytun_hash", "attr", "numpy", "ctypes")))))
"""


def _modules(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_top_level_help_imports_no_command() -> None:
    loaded = _modules("--help")
    commands = {f"pytun_hash.cli.{module}" for module, _ in COMMANDS.values()}
    assert not loaded & commands, loaded & commands
    assert not any(m.startswith(("attr", "pytun_hash.device", "pytun_hash.bpf")) for m in loaded), sorted(loaded)


@pytest.mark.parametrize("command", ["show", "conformance"])
def test_a_commands_help_imports_its_own_module_only(command: str) -> None:
    loaded = _modules(command, "--help")
    own = f"pytun_hash.cli.{COMMANDS[command][0]}"
    others = {f"pytun_hash.cli.{module}" for module, _ in COMMANDS.values()} - {own}
    assert own in loaded and not loaded & others, loaded & others


def test_the_complete_parser_knows_every_command_with_its_help_line() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in COMMANDS:
        built = sub.choices[name]
        assert built.description and any(a.dest == "json" for a in built._actions), name  # not a stub
    listed = " ".join(parser.format_help().split())
    assert all(" ".join(line.split()) in listed for _, line in COMMANDS.values())


_HASH = ["hash", "--key", "microsoft", "--src", "66.9.149.187", "--sport", "2794", "--dst", "161.142.100.80"]
_HEAVY = ("pytun_hash.device", "pytun_hash.bpf", "pytun_hash.hashing", "pytun_hash.testing", "pytun_hash.probe")


def test_hash_loads_neither_attrs_nor_device_code() -> None:
    # The model's classifier and Toeplitz hash, the light argument parsers, nothing of configs, and
    # no ctypes (the header sizes are constants; the structures live apart).
    loaded = _modules(*_HASH, "--dport", "1766")
    assert "pytun_hash.model.classify" in loaded and "pytun_hash.model.flow" in loaded
    unwanted = {m for m in loaded if m.startswith(("attr", "numpy", "ctypes", "pytun_hash.config", *_HEAVY))}
    assert not unwanted, sorted(unwanted)


def test_predict_for_flows_loads_no_device_or_ebpf_code() -> None:
    loaded = _modules("predict", "--key", "microsoft", "--queues", "4", "tcp,10.0.0.1:1,10.0.0.2:2")
    assert "pytun_hash.config" in loaded and "pytun_hash.cli.predict" in loaded
    assert not any(m.startswith(_HEAVY) for m in loaded), sorted(m for m in loaded if m.startswith(_HEAVY))
    assert "pytun_hash.cli.hashcmd" not in loaded


def test_probe_loads_the_assembler_but_not_the_rss_program() -> None:
    # probe loads a tiny program to see whether bpf(2) works; the RSS generator, the layered
    # programs and the user-space reporter are for commands that put hashing in force.
    loaded = _modules("probe")
    assert "pytun_hash.bpf.insn" in loaded
    unwanted = {"pytun_hash.bpf.rss_program", "pytun_hash.bpf.rss", "pytun_hash.bpf.layered", "pytun_hash.bpf.report"}
    assert not loaded & unwanted, sorted(loaded & unwanted)
    assert not any(m.startswith("pytun_hash.testing") for m in loaded)


def test_predict_pcap_loads_no_traffic_code_and_no_config_file_parser(tmp_path: Path) -> None:
    # predict --pcap without --config: the capture reader, the batch engine and the config, but not
    # the traffic generator (sockets, its attrs classes), the TOML parser or the random names of
    # file staging (hashlib, hmac). Issue 17: its start-up counts in its rate.
    frame = fr.ethernet(fr.ipv4("10.0.0.1", "10.0.0.2", 17, struct.pack(">HHHH", 1, 2, 8, 0)))
    capture = tmp_path / "one.pcap"
    record = struct.pack("<IIII", 0, 0, len(frame), len(frame)) + frame
    capture.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + record)
    probe = _PROBE.replace('"ctypes")', '"ctypes", "tomllib", "secrets", "hmac")')
    done = subprocess.run(
        [sys.executable, "-c", probe, "predict", "--key", "microsoft", "--queues", "4", "--pcap", str(capture)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "pytun_hash.capture.reader" in loaded and "pytun_hash.cli.pcapcmd" in loaded
    unwanted = {m for m in loaded if m.startswith(("pytun_hash.traffic", "tomllib", "secrets", "hmac", *_HEAVY))}
    assert not unwanted, sorted(unwanted)


def test_choosing_the_batch_engine_leaves_the_environment_as_it_was() -> None:
    # numpy is imported with one OpenBLAS thread (its pool costs start-up CPU the engine never
    # uses); afterwards the variable is unset again, as it was.
    script = (
        "import os\nfrom pytun_hash.cli.pcapcmd import choose_engine\n"
        "print(choose_engine(), os.environ.get('OPENBLAS_NUM_THREADS'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True, env=env
    )
    engine, value = done.stdout.split()
    assert engine in ("batch", "scalar") and value == "None", done.stdout
