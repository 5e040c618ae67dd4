"""Security: every padding byte the binding sends is zero, no shell is ever invoked, files are read
with size limits, and nothing defaults to a well-known Toeplitz key."""

from __future__ import annotations

import ast
import contextlib
import ctypes
import inspect
import io
import json
import os
import pkgutil
import struct
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pytun_hash
from pytun_hash import (
    MICROSOFT_RSS_KEY,
    HashControl,
    HashControlWarning,
    Revision,
    ValidationError,
    VnetHashCapability,
    VnetHashConfig,
    VnetHeader,
    build_frame,
    encode_capability,
    ioctl_plan,
)
from pytun_hash._abi import KNOWN_MACHINES, rfc, v3, v12
from pytun_hash._abi.tun import ifreq
from pytun_hash._abi.virtio_net_hdr import virtio_net_hdr, virtio_net_hdr_v1, virtio_net_hdr_v1_hash
from pytun_hash.bpf import syscall as bpf_syscall
from pytun_hash.capture.reader import PcapReader
from pytun_hash.cli import main
from pytun_hash.configfile import KNOWN_KEYS, MAX_CONFIG_BYTES, load_config, read_config_file
from pytun_hash.device import NetworkNamespace, rtnl
from pytun_hash.device.primitives import encode_ifreq
from pytun_hash.testing import FakeTunTap
from tests.fuzz.strategies import configs
from tests.harness import MakeHarness

PACKAGE = Path(pytun_hash.__file__).parent
KEY = MICROSOFT_RSS_KEY

# ----------------------------------------------------------------------------- padding


def padding(cls: type[ctypes.Structure]) -> list[int]:
    """Byte offsets of ``cls`` that no named field covers, plus explicit ``pad`` fields."""
    covered: set[int] = set()
    for name, *_ in cls._fields_:
        if name.lstrip("_").startswith("pad") or name == "_ifr_pad":
            continue
        field = getattr(cls, name)
        covered.update(range(field.offset, field.offset + field.size))
    return [i for i in range(ctypes.sizeof(cls)) if i not in covered]


def test_padding_of_the_uapi_structs_is_where_the_kernel_has_it() -> None:
    assert padding(rfc.tun_vnet_hash_cap) == [2, 3]
    assert padding(rfc.tun_vnet_hash) == [1, 2, 3]
    assert padding(v3.tun_vnet_hash) == [2, 3]
    assert padding(v3.tun_vnet_hash_rss) == []
    assert padding(v12.tun_vnet_rss) == []
    assert padding(virtio_net_hdr_v1_hash) == [18, 19]  # the u16 after hash_report


_HEADERS: dict[tuple[Revision, str], type[ctypes.Structure]] = {
    (Revision.RFC, "TUNSETVNETHASH"): rfc.tun_vnet_hash,
    (Revision.V3, "TUNSETVNETHASH"): v3.tun_vnet_hash,
    (Revision.V12, "TUNSETVNETRSS"): v12.tun_vnet_rss,
    (Revision.V12, "TUNSETVNETREPORTINGRSS"): v12.tun_vnet_rss,
}


@given(
    config=configs(),
    revision=st.sampled_from(list(Revision)),
    arch=st.sampled_from(KNOWN_MACHINES),
)
def test_every_plan_payload_has_zero_padding(config: VnetHashConfig, revision: Revision, arch: str) -> None:
    if revision is not Revision.RFC and config.rss and not config.types & 0x7:
        config = config.replace(types=config.types | 0x1)
    plan = ioctl_plan(config, revision, arch=arch)
    for call in plan:
        header = _HEADERS.get((revision.abi, call.name))
        if header is None:  # TUNSETVNETREPORTINGAUTOMQ: a bare u32
            assert len(call.payload) == 4
            continue
        assert all(call.payload[i] == 0 for i in padding(header)), call.payload[: ctypes.sizeof(header)].hex()
        # Nothing follows but the table and the 40-byte key (RFC: always; v3: with RSS).
        rss_part = 4 if revision.abi is Revision.V3 else 0
        if revision.abi is Revision.V3 and len(call.payload) == 8:
            continue
        table = 2 * len(config.indirection_table) if call is plan[-1] else 2  # the key-loading call: 1 entry
        assert len(call.payload) == ctypes.sizeof(header) + rss_part + table + 40


@given(types=st.integers(0, 0x1FF), limit=st.integers(0, 0xFFFF), rss=st.booleans(), report=st.booleans())
def test_capability_encodings_have_zero_padding(types: int, limit: int, rss: bool, report: bool) -> None:
    payload = encode_capability(VnetHashCapability(Revision.RFC, types, max_indirection_table_length=limit))
    assert payload[2:4] == b"\0\0"
    payload = encode_capability(VnetHashCapability(Revision.V3, types, rss=rss, report=report))
    assert payload[2:4] == b"\0\0"
    assert len(encode_capability(VnetHashCapability(Revision.V12, types))) == 4


@given(
    value=st.integers(0, 0xFFFFFFFF),
    size=st.integers(20, 64),
    little_endian=st.booleans(),
)
def test_vnet_header_encodings_have_zero_padding(value: int, size: int, little_endian: bool) -> None:
    header = VnetHeader(flags=1, gso_type=1, hdr_len=0xFFFF, num_buffers=0xFFFF, hash_value=value, hash_report=9)
    encoded = header.encode(20, little_endian=little_endian)
    assert all(encoded[i] == 0 for i in padding(virtio_net_hdr_v1_hash))
    frame = build_frame(b"\xaa" * 8, header, vnet_hdr_size=size, little_endian=little_endian)
    assert frame[20:size] == bytes(size - 20)  # between the header and the frame
    for layout, cls in ((10, virtio_net_hdr), (12, virtio_net_hdr_v1)):
        assert padding(cls) == [] and len(VnetHeader(flags=1).encode(layout)) == layout


@given(
    name=st.text(st.characters(codec="ascii", categories=["L", "N"]), min_size=1, max_size=15),
    flags=st.integers(0, 0xFFFF),
)
def test_ifreq_has_zero_padding(name: str, flags: int) -> None:
    raw = encode_ifreq(name, flags)
    assert len(raw) == ctypes.sizeof(ifreq)
    assert raw[len(name) : 16] == bytes(16 - len(name))  # after the name
    assert raw[18:] == bytes(len(raw) - 18)  # after ifr_flags: the rest of the union


def test_bpf_attributes_have_zero_padding() -> None:
    structs = [
        obj
        for obj in vars(bpf_syscall).values()
        if isinstance(obj, type) and issubclass(obj, ctypes.Structure) and obj.__name__.startswith("bpf_attr")
    ]
    assert len(structs) >= 5
    for cls in structs:
        attr = cls()
        for field in cls._fields_:
            name, ctype = field[0], field[1]
            if name.lstrip("_").startswith("pad"):
                continue
            if issubclass(ctype, ctypes.Array):
                setattr(attr, name, b"\xff" * (ctypes.sizeof(ctype) - 1))
            else:
                setattr(attr, name, (1 << (8 * ctypes.sizeof(ctype))) - 1)
        raw = bytes(attr)
        assert [raw[i] for i in padding(cls)] == [0] * len(padding(cls)), cls.__name__


@given(kind=st.integers(0, 0x7FFF), payload=st.binary(max_size=12))
def test_netlink_attributes_have_zero_padding(kind: int, payload: bytes) -> None:
    attr = rtnl._attr(kind, payload)
    length = 4 + len(payload)
    assert struct.unpack_from("=H", attr)[0] == length and len(attr) % 4 == 0
    assert attr[length:] == bytes(len(attr) - length)
    info = rtnl._ifinfo(7, 0xFFFFFFFF, 0xFFFFFFFF)
    assert info[1] == 0  # the padding byte after ifi_family


@pytest.mark.parametrize(
    ("where", "revision"),
    [pytest.param("fake", r, id=f"fake-{r.value}") for r in Revision]
    + [pytest.param("kernel", Revision.RFC, id="kernel-rfc", marks=pytest.mark.kernel)],
)
def test_bytes_the_kernel_copied_have_zero_padding(make_harness: MakeHarness, where: str, revision: Revision) -> None:
    """End to end: the raw header the (emulated) kernel copied from the caller, padding included.

    On a FakeTunTap for every revision, and through the seccomp emulator's reads of the caller's
    memory for the RFC, whose header has the most padding (3 bytes).
    """
    h = make_harness(where, revision)
    control = h.run(HashControl, h.device, revision=revision)
    for config in (
        VnetHashConfig.round_robin(4, key=KEY, report=True),
        VnetHashConfig.round_robin(4, key=KEY, table_length=1),
        VnetHashConfig(report=True, types=0x3F, key=KEY),
    ):
        h.run(control.apply, config)
        header = h.state().header
        cls = _HEADERS.get((revision.abi, "TUNSETVNETRSS" if revision is Revision.V12 else "TUNSETVNETHASH"))
        assert cls is not None and header
        if revision is not Revision.V12:
            assert all(header[i] == 0 for i in padding(cls)), header.hex()


# ----------------------------------------------------------------------------- no shell

_SHELL_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("os", "posix_spawn"),
    ("os", "posix_spawnp"),
    *{("os", f"exec{s}") for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")},
    *{("os", f"spawn{s}") for s in ("l", "le", "lp", "lpe", "v", "ve", "vp", "vpe")},
}
_SHELL_MODULES = {"subprocess", "pty", "commands", "popen2", "shlex"}


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_shell_in_the_package(path: Path) -> None:
    tree = ast.parse(path.read_text())
    offenders = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            offenders += [a.name for a in node.names if a.name.split(".")[0] in _SHELL_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in _SHELL_MODULES:
            offenders.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            offenders += [a.name for a in node.names if ("os", a.name) in _SHELL_CALLS]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if (node.value.id, node.attr) in _SHELL_CALLS:
                offenders.append(f"{node.value.id}.{node.attr}")
        elif isinstance(node, ast.keyword) and node.arg == "shell":
            offenders.append("shell=...")
    assert offenders == [], f"{path.relative_to(PACKAGE)} can start a shell or a program: {offenders}"


@contextlib.contextmanager
def no_programs() -> Iterator[None]:
    """Fail if anything starts a program (a shell included) while the block runs."""

    def refuse(*args: object, **kwargs: object) -> object:
        raise AssertionError(f"a program was started: {args!r}")

    with pytest.MonkeyPatch.context() as patch:
        for _module, name in _SHELL_CALLS:
            if hasattr(os, name):
                patch.setattr(os, name, refuse)
        patch.setattr(subprocess, "Popen", refuse)
        yield


def _cli(*argv: str) -> int:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main(list(argv))


def test_no_program_is_started_by_the_commands_without_devices() -> None:
    with no_programs():
        assert _cli("hash", "--key", "microsoft", "--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "icmp") == 0
        assert _cli("predict", "--key", "random", "--queues", "4", "udp,10.0.0.1:1,10.0.0.2:2") == 0
        assert _cli("apply", "--dry-run", "--queues", "4", "--revision", "v12") == 0
        # Without privileges the probe reports what it could not check (exit 3 or 4): no program either.
        assert _cli("probe") in (0, 3, 4)


@pytest.mark.kernel
def test_no_program_is_started_at_run_time(netns: NetworkNamespace) -> None:
    with no_programs():
        assert _cli("probe") == 0
        assert _cli("create", "sh0", "--queues", "2") == 0
        assert _cli("apply", "--dev", "sh0", "--queues", "2") == 0
        assert _cli("disable", "--dev", "sh0") == 0
        assert _cli("delete", "sh0") == 0


# ----------------------------------------------------------------------------- files


def _unbounded_reads(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            method = node.func.attr
            bare = not node.args and not node.keywords
            if (method in ("read", "readlines", "readline") and bare) or method in ("read_text", "read_bytes"):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_files_are_read_with_a_size_limit(path: Path) -> None:
    lines = _unbounded_reads(ast.parse(path.read_text()))
    assert lines == [], f"{path.relative_to(PACKAGE)}: reads without a size limit at lines {lines}"


def test_config_files_over_the_limit_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ValidationError, match="1 MiB"):
        read_config_file(str(big))
    with pytest.raises(ValidationError, match="not a regular file"):
        read_config_file("/dev/zero")  # endless, with no size to ask: refused before any read
    fits = tmp_path / "fits.toml"
    fits.write_bytes(b"#" * (MAX_CONFIG_BYTES - 1) + b"\n")
    assert load_config(str(fits)) == VnetHashConfig()
    assert _cli("apply", "--dry-run", "--config", str(big)) == 2


def test_pcap_records_over_the_limit_are_refused(tmp_path: Path) -> None:
    capture = tmp_path / "absurd.pcap"
    capture.write_bytes(
        struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1) + struct.pack("<IIII", 0, 0, 1 << 30, 1 << 30)
    )
    with PcapReader(str(capture)) as reader, pytest.raises(ValidationError, match="corrupt"):
        list(reader)


# ----------------------------------------------------------------------------- well-known keys

_WELL_KNOWN = {KEY, *KNOWN_KEYS.values()}
_WELL_KNOWN_TEXT = {k.hex() for k in _WELL_KNOWN} | set(KNOWN_KEYS)


def _public_callables() -> Iterator[tuple[str, Callable[..., object]]]:
    for info in pkgutil.walk_packages([str(PACKAGE)], "pytun_hash."):
        if info.name.endswith("__main__"):
            continue
        module = __import__(info.name, fromlist=["_"])
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != info.name:
                continue
            if inspect.isclass(obj):
                yield f"{info.name}.{name}", obj
                for member_name, member in vars(obj).items():
                    if callable(member) or isinstance(member, (classmethod, staticmethod)):
                        yield f"{info.name}.{name}.{member_name}", getattr(obj, member_name)
            elif callable(obj):
                yield f"{info.name}.{name}", obj


def test_no_default_is_a_well_known_key() -> None:
    checked = 0
    for where, fn in _public_callables():
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):
            continue
        for parameter in signature.parameters.values():
            checked += 1
            default = parameter.default
            if isinstance(default, (bytes, bytearray)):
                assert bytes(default) not in _WELL_KNOWN, f"{where}({parameter.name}=...) defaults to a public key"
            if isinstance(default, str):
                assert default.lower() not in _WELL_KNOWN_TEXT, f"{where}({parameter.name}={default!r})"
        if inspect.isclass(fn) and attrs.has(fn):
            for field in attrs.fields(fn):
                assert field.default not in _WELL_KNOWN and field.default not in _WELL_KNOWN_TEXT, where
    assert checked > 300


def test_convenience_constructors_make_fresh_keys() -> None:
    keys = {VnetHashConfig.round_robin(4).key for _ in range(8)}
    assert len(keys) == 8 and not keys & _WELL_KNOWN and bytes(40) not in keys


def test_the_cli_makes_up_a_fresh_key_and_never_a_public_one() -> None:
    keys = set()
    for _ in range(4):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            assert main(["apply", "--dry-run", "--queues", "4", "--json"]) == 0
        keys.add(bytes.fromhex(json.loads(out.getvalue())["config"]["key"]))
    assert len(keys) == 4 and not keys & _WELL_KNOWN
    # hash and predict name their key explicitly: no default at all.
    assert _cli("hash", "--src", "10.0.0.1", "--dst", "10.0.0.2", "--proto", "icmp") == 2
    assert _cli("predict", "--queues", "4", "udp,10.0.0.1:1,10.0.0.2:2") == 2


def test_an_all_zero_key_is_warned_about() -> None:
    bare = VnetHashConfig(rss=True, types=0x3F, indirection_table=(0, 1))
    assert bare.key == bytes(40)  # a bare config has no key: every flow would hash to 0
    with FakeTunTap(Revision.RFC, queues=2) as dev:
        control = HashControl(dev, revision=Revision.RFC)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            control.apply(bare)
            control.apply(bare.replace(key=KEY))
        zero_key = [w for w in caught if issubclass(w.category, HashControlWarning) and "all zeros" in str(w.message)]
        assert len(zero_key) == 1
