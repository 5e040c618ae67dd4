"""Fuzzing the ``pytun-hash`` command line: argument vectors built from the parser's own options,
with plausible and hostile values, including files of every kind (configs, pcaps, /dev/zero, ...).

Values include hostile sizes (:data:`~tests.fuzz.strategies.hostile_arguments`: thousands of digits,
megabyte arguments, huge ranges, digits of other scripts) and config files of hostile sizes (huge
integers, deep nesting, megabyte strings and lists, an empty key).

Properties: ``main`` returns one of the documented exit codes and never 5 (an internal error: an
exception that is not one of the package's own reached the top), ``--json`` output is one JSON
document, no line on stderr is longer than the error line's cap, there is no traceback without
``--debug``, and nothing hangs. Commands that touch
devices run inside the test's anonymous network namespace; ``demo`` is left out (it has its own
tests and takes seconds).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import struct
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytun_hash import VnetHashConfig
from pytun_hash.capture.reader import PcapReader
from pytun_hash.cli import build_parser, main
from pytun_hash.cli.output import MAX_ERROR_LINE_CHARS
from pytun_hash.config import MICROSOFT_RSS_KEY
from pytun_hash.configfile import dump_config
from pytun_hash.device import NetworkNamespace, rtnl
from pytun_hash.model import numpy_available, predict_queue
from tests.capture import builders as cooked
from tests.fuzz.harness import call, watchdog
from tests.fuzz.strategies import damaged, frames, hostile_arguments, ip_packets, special_file

DOCUMENTED_EXIT_CODES = {0, 1, 2, 3, 4}
PURE_COMMANDS = ["hash", "predict", "apply"]  # apply only with --dry-run here
DEVICE_COMMANDS = ["probe", "create", "delete", "apply", "disable"]
DEVICE_NAMES = ["fz0", "fz1", "fz%d", "lo", "nope0", "a" * 16, "x/y", "", "fz0\x00x"]


_PCAP_CONFIG = VnetHashConfig.round_robin(3, key=MICROSOFT_RSS_KEY, table_length=8)


def _pcap(linktype: int, packets: list[bytes], *, order: str = "<", magic: int = 0xA1B2C3D4) -> bytes:
    head = struct.pack(f"{order}IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    return head + b"".join(struct.pack(f"{order}IIII", 1, 2, len(p), len(p)) + p for p in packets)


@pytest.fixture(scope="module")
def files() -> Iterator[dict[str, str]]:
    """Files the fuzzed commands may name: valid, broken, huge, special (FIFOs, symlinks, a socket, /proc and
    /sys files, devices, a directory), missing."""
    with tempfile.TemporaryDirectory(prefix="pytun-hash-cli-fuzz-") as tmp:
        config = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, table_length=8)
        paths: dict[str, str] = {}
        for name in ("config.toml", "config.json"):
            paths[name] = os.path.join(tmp, name)
            dump_config(config, paths[name])
        contents = {
            "broken.toml": b"rss = tru\ntypes = [",
            "broken.json": b'{"rss": true, "types": [1,',
            "wrong.toml": b'rss = "yes"\nindirection_table = [0, 1, 2]\nkey = "zz"\nfoo = 1\n',
            "binary.conf": bytes(range(256)),
            "huge.toml": b"#" * ((1 << 20) + 1),
            "frames.pcap": _pcap(1, [bytes(12) + b"\x08\x00" + bytes.fromhex("4500001c0000000040110000") + bytes(16)]),
            "raw.pcap": _pcap(101, [bytes.fromhex("4500001c00000000401100000a0000010a000002") + bytes(8)] * 3),
            "bigendian.pcap": _pcap(1, [bytes(60)], order=">"),
            "bad-linktype.pcap": _pcap(105, [bytes(20)]),
            "corrupt.pcap": _pcap(1, [bytes(40)])[:-7],
            "absurd.pcap": _pcap(1, [])[:24] + struct.pack("<IIII", 0, 0, 1 << 30, 1 << 30),
            "pcapng.pcap": b"\x0a\x0d\x0d\x0a" + bytes(60),
            # Hostile sizes inside the 1 MiB limit (see tests/hardening/test_inputs.py).
            "bigint.json": b'{"unclassified_queue": ' + b"9" * 5000 + b"}",
            "bighex.toml": b"types = 0x" + b"f" * 5000 + b"\n",
            "deep990.json": b'{"rss": ' + b"[" * 990 + b"]" * 990 + b"}",
            "deep5000.toml": b"types = " + b"[" * 5000 + b"]" * 5000 + b"\n",
            "longstring.json": b'{"key": "' + b"z" * 900_000 + b'"}',
            "manybad.json": b'{"indirection_table": [' + b"-1," * 250_000 + b"-1]}",
            "emptykey.toml": b'key = ""\nindirection_table = [0, 1]\n',
        }
        for name, data in contents.items():
            paths[name] = os.path.join(tmp, name)
            with open(paths[name], "wb") as f:
                f.write(data)
        # Not data at rest: readers refuse them and --save never writes through or onto them.
        specials = ("fifo", "symlink-to-regular", "symlink-to-fifo", "dangling-symlink", "symlink-to-proc", "socket")
        for kind in specials:
            paths[kind] = special_file(kind, tmp, b'rss = true\ntypes = "all"\nkey = "microsoft"\n')
        paths.update(
            {
                "kmsg": "/proc/kmsg",
                "sysfs": "/sys/kernel/uevent_seqnum",
                "dir": tmp,
                "missing": os.path.join(tmp, "missing.toml"),
                "devnull": "/dev/null",
                "devzero": "/dev/zero",
                "proc": "/proc/self/status",
                "save.toml": os.path.join(tmp, "saved.toml"),
                "save.json": os.path.join(tmp, "saved.json"),
                "unwritable": "/proc/self/no/such/dir/x.toml",
            }
        )
        yield paths


def _options(command: str) -> list[argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[command]._actions if not isinstance(a, argparse._HelpAction)]


_OPTIONS = {c: _options(c) for c in {*PURE_COMMANDS, *DEVICE_COMMANDS}}


#: Any argument as execve delivers it: no NUL, and bytes that are not UTF-8 arrive as lone
#: surrogates (os.fsdecode). (NUL in a file name passed through the Python API: see
#: tests/hardening/test_cli_findings.py.)
anything = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=12),
    st.binary(max_size=12).map(lambda b: os.fsdecode(b.replace(b"\0", b""))),
    hostile_arguments,
)


@st.composite
def values(draw: st.DrawFn, action: argparse.Action, paths: dict[str, str]) -> str:
    """A value for ``action``: plausible for its metavar most of the time, anything otherwise."""
    if action.choices is not None and draw(st.integers(0, 4)):
        return str(draw(st.sampled_from(list(action.choices))))
    metavar = str(action.metavar or action.dest).upper()
    plausible: dict[str, st.SearchStrategy[str]] = {
        "ADDR": st.one_of(
            st.sampled_from(["10.0.0.1", "10.0.0.2", "192.168.1.1", "66.9.149.187"]),
            st.sampled_from(["10.0.0.1", "::1", "1.2.3", "fe80::1%lo", "2001:db8::1"]),
            st.ip_addresses().map(str),
        ),
        "PORT": st.one_of(st.integers(0, 65535).map(str), st.integers(-2, 70000).map(str), st.just("\u0668\u0660")),
        "PROTO": st.sampled_from(["tcp", "udp", "tcp", "udp", "icmp", "6", "17", "300", "-1", "gre"]),
        "KEY": st.one_of(
            st.sampled_from(["microsoft", "symmetric", "random"]),
            st.binary(min_size=1, max_size=40).map(bytes.hex),
            st.sampled_from(["0x", "", "6d5a" * 21, "6d:5a:56", "zz"]),
        ),
        "HEX": st.one_of(frames().map(lambda f: f[1].hex()), ip_packets().map(bytes.hex), st.text("0123456789abcdefg")),
        "TYPES": st.sampled_from(["all", "tcpv4,udpv4,ipv4", "ipv6", "ip_ex", "TCPV4|UDPV6", "none", "63", "0x1ff"]),
        "QUEUES": st.sampled_from(
            ["0,1,2,3", "0-3", "3-0", "0-200", "0,,1", "70000", "-1", "0-127", "0-100000000", "0-127,0-1"]
        ),
        "N": st.integers(-1, 300).map(str),
        "Q": st.integers(-1, 70000).map(str),
        "BYTES": st.integers(-1, 70000).map(str),
        "REV": st.sampled_from(["rfc", "v3", "v7", "v11", "v12", "v13", "V12", "latest"]),
        "MACHINE": st.sampled_from(["x86_64", "ppc64", "ppc64le", "mips", "parisc", "s390x", "vax"]),
        "NAME": st.sampled_from(DEVICE_NAMES),
        "USER": st.sampled_from(
            ["0", "root", "nobody", "65534", "-1", "no-such-user", "4294967296", "\u0661\u0660\u0660\u0660", "\uff10"]
        ),
        "GROUP": st.sampled_from(["0", "root", "nogroup", "-1", "no-such-group", "\u0660", "\uff10"]),
        "TABLE": st.sampled_from(["net", "vm.net", "", "rss"]),
        "FILE": st.sampled_from(sorted(paths.values())),
        "SEED": st.integers(-1, 2**40).map(str),
        "{ETHERNET,IP}": st.sampled_from(["ethernet", "ip", "ETHERNET", "tap"]),
        "FLOW": st.sampled_from(
            ["udp,10.0.0.1:5000,10.0.0.2:53", "tcp,[::1]:1,[::2]:2", "icmp,1.1.1.1,2.2.2.2", "tcp,1.1.1.1:0,2.2.2.2"]
        ),
    }
    return draw(plausible.get(metavar, anything) if draw(st.integers(0, 7)) else anything)


def _action(command: str, option: str) -> argparse.Action:
    return next(a for a in _OPTIONS[command] if option in a.option_strings or a.dest == option)


# The shapes of working invocations; each option is then given a drawn value.
_SHAPES: dict[str, list[list[str]]] = {
    "hash": [
        ["--key", "--src", "--dst", "--sport", "--dport", "--proto"],
        ["--key", "--src", "--dst"],
        ["--key", "--frame", "--l2"],
        ["--key", "--input"],
    ],
    "predict": [["--key", "--queues", "flows"], ["--key", "--pcap", "--per-packet"], ["--config", "--queues", "flows"]],
    "apply": [["--dev", "--queues", "--key"], ["--dev", "--config"], ["--dev", "--table", "--key", "--backend"]],
    "create": [["name", "--queues"], ["name", "--queues", "--vnet-hdr-size", "--vnet-le"], ["name", "--tun"]],
    "delete": [["name"]],
    "disable": [["--dev"]],
    "probe": [[], ["--dev"]],
}


@st.composite
def argvs(draw: st.DrawFn, commands: list[str], paths: dict[str, str], *, dry_run: bool) -> list[str]:
    """An argument vector for one of ``commands``: a working shape with drawn values, or any options."""
    command = draw(st.sampled_from(commands))
    argv: list[str] = []
    if draw(st.booleans()):
        argv.append(command)
        for option in draw(st.sampled_from(_SHAPES[command])):
            action = _action(command, option)
            if option.startswith("--"):
                argv.append(option)
            if action.nargs != 0:
                argv.append(draw(values(action, paths)))
        if command == "apply" and dry_run:
            argv.append("--dry-run")
        return argv
    required = [a for a in _OPTIONS[command] if a.required]
    chosen = draw(st.lists(st.sampled_from(_OPTIONS[command]), max_size=8, unique_by=id))
    if draw(st.integers(0, 5)):
        chosen = [*required, *(a for a in chosen if a not in required)]
    for action in chosen:
        if not action.option_strings:  # a positional: a device name, flows
            argv.append(draw(values(action, paths)))
            continue
        argv.append(draw(st.sampled_from(action.option_strings)))
        if action.nargs != 0:
            argv.append(draw(values(action, paths)))
    if command == "apply" and dry_run:
        argv.append("--dry-run")
    if draw(st.integers(0, 9)) == 0:
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(["--json", "--", "-x", "--help", "--debug"])))
    extra = draw(st.sampled_from([[], [], ["--json"], ["--debug"]]))
    return [*extra, command, *argv]


def check_main(argv: list[str]) -> None:
    """Run ``main(argv)`` and check exit code, JSON output and the absence of tracebacks."""
    # Streams as a UTF-8 terminal has them: stdout strict (an unencodable character is an error),
    # stderr with backslash escapes, as Python sets them up.
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", newline="\n")
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="backslashreplace", newline="\n")
    with watchdog(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    printed, errors = (_text(stream) for stream in (out, err))
    options = argv[: argv.index("--")] if "--" in argv else argv
    assert code in DOCUMENTED_EXIT_CODES, f"exit code {code} for {argv!r}: {errors}"
    if "--debug" not in options:
        assert "Traceback" not in errors, errors
        # Error lines repeat what was given; capped, they never grow with it.
        assert all(len(line) <= MAX_ERROR_LINE_CHARS for line in errors.splitlines()), len(errors)
    if "--json" in options and printed.strip() and "--help" not in options and "-h" not in options:
        document = json.loads(printed)
        assert isinstance(document, dict) and document.get("ok") is (code == 0), document


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode("utf-8")


@given(data=st.data())
def test_cli_model_commands(files: dict[str, str], data: st.DataObject) -> None:
    check_main(data.draw(argvs(PURE_COMMANDS, files, dry_run=True)))


@pytest.mark.kernel
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_cli_device_commands(netns: NetworkNamespace, files: dict[str, str], data: st.DataObject) -> None:
    check_main(data.draw(argvs(DEVICE_COMMANDS, files, dry_run=False)))
    # "fz%d" creates a new persistent device each time: keep the namespace small over a long run.
    for link in rtnl.list_links(kind="tun"):
        if link.name not in DEVICE_NAMES:
            rtnl.delete_link(link.name)


@pytest.fixture(scope="module")
def pcap_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pytun-hash-pcap-fuzz-") as tmp:
        yield tmp


@st.composite
def pcap_files(draw: st.DrawFn) -> bytes:
    """A classic pcap, pcapng or Linux cooked (SLL, SLL2) capture of fuzzed frames, often damaged."""
    packets = [draw(frames())[1] for _ in range(draw(st.integers(0, 4)))]
    linktype = draw(st.sampled_from([1, 101, 228, 229, 113, 276, 105, draw(st.integers(0, 2**32 - 1))]))
    if linktype == 113:
        packets = [cooked.sll(p) if draw(st.booleans()) else p for p in packets]
    elif linktype == 276:
        packets = [cooked.sll2(p) if draw(st.booleans()) else p for p in packets]
    order = draw(st.sampled_from(["<", ">"]))
    if draw(st.integers(0, 2)):
        magic = draw(st.sampled_from([0xA1B2C3D4, 0xA1B23C4D, 0x0A0D0D0A, draw(st.integers(0, 2**32 - 1))]))
        return draw(damaged(_pcap(linktype, packets, order=order, magic=magic)))
    return draw(damaged(draw(pcapng_files(linktype & 0xFFFF, packets, order))))


@st.composite
def pcapng_files(draw: st.DrawFn, linktype: int, packets: list[bytes], order: str) -> bytes:
    """A pcapng file: sections, interfaces of several link types (with timestamp options), Enhanced
    and Simple Packet Blocks, and blocks of other and unknown types."""
    data = cooked.shb(order) + cooked.idb(linktype, order, tsresol=draw(st.sampled_from([None, 6, 9, 0x8A, 0xFF])))
    interfaces = 1
    for packet in packets:
        kind = draw(st.sampled_from(["epb", "epb", "epb", "spb", "idb", "other", "section"]))
        if kind == "epb":
            interface = draw(st.integers(0, interfaces))  # now and then one that was not described
            data += cooked.epb(interface, packet, order, stamp=draw(st.integers(0, 2**64 - 1)))
        elif kind == "spb":
            data += cooked.spb(packet, order)
        elif kind == "idb":
            data += cooked.idb(draw(st.sampled_from([1, 101, 113, 276, 147])), order, snaplen=draw(st.integers(0, 99)))
            interfaces += 1
        elif kind == "other":
            data += cooked.block(
                draw(st.sampled_from([2, 4, 5, 0xBAD, draw(st.integers(0, 2**32 - 1))])), packet, order
            )
        else:
            data += cooked.shb(draw(st.sampled_from(["<", ">"]))) + cooked.idb(linktype, order)
            interfaces = 1
    return data


@given(contents=pcap_files())
def test_pcap_reader(pcap_dir: str, contents: bytes) -> None:
    path = os.path.join(pcap_dir, "capture.pcap")
    with open(path, "wb") as f:
        f.write(contents)

    def read_all() -> list[bytes]:
        with PcapReader(path) as reader:
            return [packet.data for packet in reader]

    def read_batches() -> list[bytes]:
        with PcapReader(path) as reader:
            return [packet.data for batch in reader.batches(3) for packet in batch.packets()]

    packets = call(read_all)
    batched = call(read_batches)
    # Batches read the same packets, or fail the same way.
    assert batched.ok == packets.ok and (batched.ok or str(batched.error) == str(packets.error))
    if batched.ok:
        assert batched.get() == packets.get()
    packets = call(read_all)
    if packets.ok:
        assert all(len(p) <= 1 << 18 for p in packets.get())
    if numpy_available():
        # The batch engine predicts what the scalar model predicts for every packet read.
        from pytun_hash.capture.chunks import frame_chunks
        from pytun_hash.model.batch import predict_frames

        def predict_both() -> tuple[list[int], list[int]]:
            batch: list[int] = []
            scalar: list[int] = []
            with PcapReader(path) as reader:
                for chunk in frame_chunks(reader, 2, read_bytes=0):
                    batch.extend(predict_frames(chunk, _PCAP_CONFIG, 3).queues.tolist())
            with PcapReader(path) as reader:
                scalar.extend(predict_queue(_PCAP_CONFIG, p.frame, 3, l2=p.framing) for p in reader)
            return batch, scalar

        predicted = call(predict_both)
        assert predicted.ok == packets.ok
        if predicted.ok:
            assert predicted.get()[0] == predicted.get()[1]
