"""The bad-input table: for each public entry point, invalid inputs and the typed error each gives.

The tables:

* ``PURE``: refused before any syscall; a guard fails the test if the call opens a file, issues an
  ioctl, opens a socket or calls bpf(2) first.
* ``HASH_CONTROL``: hash control and steering against the emulated kernel of each revision, on a
  FakeTunTap (no privileges; nothing reaches the real kernel at all) and, for the cases a real device
  or program takes part in, on a live TAP under the seccomp emulator; the kernel's call log proves
  that no hash or steering ioctl was issued, and the binding's state (``HashControl.config``,
  ``device.steering``) is unchanged.
* ``KERNEL``: other device calls, where the kernel is the one to refuse (``TUNSETVNETHDRSZ`` below
  10 bytes, ``TUNSETQUEUE`` in the wrong state ...): a typed error with the errno and a sentence,
  and the device object's state unchanged; ``LOOKUPS``, the refusals that need no device (opening a
  missing one, adopting fds that are not queues), run without privileges too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    BusyError,
    DecodeError,
    DeviceFlagsMismatchError,
    DeviceGoneError,
    DeviceNotFoundError,
    FeatureUnsupportedError,
    HashControl,
    HashReport,
    HashType,
    KernelError,
    PytunHashError,
    Revision,
    SteeringConflictError,
    TunOffload,
    UnsupportedError,
    ValidationError,
    VnetHashCapability,
    VnetHashConfig,
    VnetHeader,
    build_frame,
    classify,
    decode_capability,
    decode_plan,
    decode_vnet_hash,
    default_capability,
    encode_capability,
    generate_key,
    ioctl_plan,
    ioctl_request,
    kernel_read_length,
    predict_queue,
    probe_revision,
    split_frame,
    toeplitz_hash,
    toeplitz_hash_batch,
    verify_reports,
)
from pytun_hash.bpf import EbpfRss, Program
from pytun_hash.device import DeviceMode, TunTapBase, TunTapDevice
from pytun_hash.model import rfc_input
from pytun_hash.model.verify import expected_report
from pytun_hash.testing import EmulatedHashState, EmulatorError, FakeTunTap, KernelEmulator
from tests.hardening.conftest import no_syscalls
from tests.harness import BOTH, Harness, MakeHarness

pytestmark = pytest.mark.filterwarnings("ignore::pytun_hash.HashControlWarning")

KEY = MICROSOFT_RSS_KEY
RSS = VnetHashConfig.round_robin(4, key=KEY, table_length=8)
IPV6_ONLY = HashType.IPV6 | HashType.TCPV6 | HashType.UDPV6
FRAME = bytes(12) + b"\x08\x00" + bytes.fromhex("45000014000000004006000001020304") + bytes(24)
_RFC_PAYLOAD = ioctl_plan(RSS, Revision.RFC)[-1].payload


def _any(value: object) -> Any:
    """``value`` typed as Any: these tests pass wrong types on purpose."""
    return value


def _patched(payload: bytes, offset: int, value: bytes) -> bytes:
    return payload[:offset] + value + payload[offset + len(value) :]


@attrs.frozen
class Case:
    """One bad input: ``call`` must raise ``error`` naming ``field`` (or, for kernel errors, with ``errno``)."""

    id: str
    call: Callable[[], object]
    error: type[PytunHashError]
    field: str | None = None
    words: str = ""
    errno: int | None = None


PURE: list[Case] = [
    # --- configuration
    Case("table length 3", lambda: VnetHashConfig(indirection_table=[0, 1, 2]), ValidationError, "indirection_table"),
    Case("table too long", lambda: VnetHashConfig(indirection_table=[0] * 256), ValidationError, "indirection_table"),
    Case(
        "table 10**12 long",
        lambda: VnetHashConfig(indirection_table=range(10**12)),
        ValidationError,
        "indirection_table",
        "1000000000000",
    ),
    Case("endless table", lambda: VnetHashConfig(indirection_table=iter(int, 1)), ValidationError, "indirection_table"),
    Case("negative queue", lambda: VnetHashConfig(indirection_table=[-1]), ValidationError, "indirection_table[0]"),
    Case("queue 65536", lambda: VnetHashConfig(indirection_table=[0, 65536]), ValidationError, "indirection_table[1]"),
    Case(
        "queue as text", lambda: VnetHashConfig(indirection_table=_any(["1"])), ValidationError, "indirection_table[0]"
    ),
    Case("table as text", lambda: VnetHashConfig(indirection_table=_any("0123")), ValidationError, "indirection_table"),
    Case(
        "table as bytes", lambda: VnetHashConfig(indirection_table=_any(b"\0\1")), ValidationError, "indirection_table"
    ),
    Case("table as set", lambda: VnetHashConfig(indirection_table=_any({0, 1})), ValidationError, "indirection_table"),
    Case(
        "table as mapping", lambda: VnetHashConfig(indirection_table=_any({0: 1})), ValidationError, "indirection_table"
    ),
    Case("unclassified 65536", lambda: VnetHashConfig(unclassified_queue=65536), ValidationError, "unclassified_queue"),
    Case(
        "unclassified bool",
        lambda: VnetHashConfig(unclassified_queue=_any(True)),
        ValidationError,
        "unclassified_queue",
    ),
    Case("key 41 bytes", lambda: VnetHashConfig(key=bytes(41)), ValidationError, "key", "at most 40"),
    Case("key odd hex", lambda: VnetHashConfig(key="abc"), ValidationError, "key", "hexadecimal"),
    Case("key as int", lambda: VnetHashConfig(key=_any(5)), ValidationError, "key"),
    Case("unknown type bit", lambda: VnetHashConfig(types=0x200), ValidationError, "types", "0x200"),
    Case("negative types", lambda: VnetHashConfig(types=-1), ValidationError, "types"),
    Case("unknown type name", lambda: VnetHashConfig(types=["TCPV7"]), ValidationError, "types[0]", "TCPV7"),
    Case("types as bytes", lambda: VnetHashConfig(types=_any(b"TCPV4")), ValidationError, "types"),
    Case("types nested", lambda: VnetHashConfig(types=_any([["TCPV4"]])), ValidationError, "types[0]"),
    Case("types bool", lambda: VnetHashConfig(types=True), ValidationError, "types"),
    Case("rss as text", lambda: VnetHashConfig(rss=_any("yes")), ValidationError, "rss"),
    Case("rss without types", lambda: VnetHashConfig(rss=True), ValidationError, "types", "at least one"),
    Case("replace unknown field", lambda: RSS.replace(queues=4), ValidationError, "queues"),
    Case("mapping unknown field", lambda: VnetHashConfig.from_mapping({"rsss": True}), ValidationError, "rsss"),
    Case(
        "mapping not a mapping",
        lambda: VnetHashConfig.from_mapping(_any([("rss", True)])),
        ValidationError,
        None,
        "mapping",
    ),
    Case("mapping key as int", lambda: VnetHashConfig.from_mapping({"key": 5}), ValidationError, "key"),
    Case("round_robin 0 queues", lambda: VnetHashConfig.round_robin(0), ValidationError, "num_queues"),
    Case("round_robin 65537 queues", lambda: VnetHashConfig.round_robin(65537), ValidationError, "num_queues"),
    Case("round_robin bool queues", lambda: VnetHashConfig.round_robin(True), ValidationError, "num_queues"),
    Case(
        "round_robin table 3",
        lambda: VnetHashConfig.round_robin(4, table_length=3),
        ValidationError,
        "indirection_table",
    ),
    Case("generate_key 0", lambda: generate_key(0), ValidationError, "key"),
    Case("generate_key 41", lambda: generate_key(41), ValidationError, "key"),
    Case("generate_key text", lambda: generate_key(_any("40")), ValidationError, "key"),
    Case("capability revision text", lambda: VnetHashCapability(_any("rfc"), 0x3F), ValidationError, "revision"),
    Case(
        "capability negative limit",
        lambda: VnetHashCapability(Revision.RFC, 0x3F, max_indirection_table_length=-1),
        ValidationError,
        "max_indirection_table_length",
    ),
    Case("capability unknown types", lambda: VnetHashCapability(Revision.V12, 1 << 20), ValidationError, "types"),
    # --- codecs
    Case(
        "plan revision text",
        lambda: ioctl_plan(RSS, _any("rfc")),
        ValidationError,
        "revision",
        "Revision.parse",
    ),
    Case("plan of no config", lambda: ioctl_plan(_any("rss")), ValidationError, "config"),
    Case("plan unknown machine", lambda: ioctl_plan(RSS, arch="vax"), ValidationError, "arch", "vax"),
    Case(
        "plan v3 ipv6-only rss",
        lambda: ioctl_plan(RSS.replace(types=IPV6_ONLY), Revision.V3),
        ValidationError,
        "types",
        "4 of the 40 key bytes",
    ),
    Case(
        "plan v12 ipv6-only rss",
        lambda: ioctl_plan(RSS.replace(types=IPV6_ONLY), Revision.V12),
        ValidationError,
        "types",
    ),
    Case("decode empty", lambda: decode_vnet_hash(b""), DecodeError, "payload", "12 bytes"),
    Case("decode an int", lambda: decode_vnet_hash(_any(10**12)), DecodeError, "payload"),
    Case(
        "decode revision text",
        lambda: decode_vnet_hash(bytes(4), _any("v12")),
        ValidationError,
        "revision",
    ),
    Case("decode padding", lambda: decode_vnet_hash(_patched(_RFC_PAYLOAD, 1, b"\1")), DecodeError, "padding"),
    Case(
        "decode unknown flags",
        lambda: decode_vnet_hash(_patched(_RFC_PAYLOAD, 0, b"\x05")),
        DecodeError,
        "flags",
        "0x4",
    ),
    Case(
        "decode mask 255",
        lambda: decode_vnet_hash(_patched(_RFC_PAYLOAD, 8, b"\xff\x00")),
        DecodeError,
        "indirection_table_mask",
    ),
    Case("decode short key", lambda: decode_vnet_hash(_RFC_PAYLOAD[:-1]), DecodeError, "payload"),
    Case("decode v3 pad", lambda: decode_vnet_hash(b"\0\0\1\0" + bytes(4), Revision.V3), DecodeError, "pad"),
    Case(
        "decode v12 unknown setter",
        lambda: decode_vnet_hash(bytes(8), Revision.V12, name="TUNSETVNETHASH"),
        DecodeError,
        "name",
    ),
    Case(
        "decode unknown type bits",
        lambda: decode_vnet_hash(struct.pack("=I", 1 << 12), Revision.V12),
        DecodeError,
        "types",
    ),
    Case("capability 7 bytes", lambda: decode_capability(bytes(7)), DecodeError, "payload"),
    Case("capability padding", lambda: decode_capability(b"\x80\0\1\0\x3f\0\0\0"), DecodeError, "padding"),
    Case("empty plan", lambda: decode_plan([]), DecodeError, "calls"),
    Case(
        "read length wrong revision",
        lambda: kernel_read_length(Revision.RFC, "TUNSETVNETRSS", b""),
        ValidationError,
        "name",
        "v12",
    ),
    Case(
        "encode rfc capability without limit",
        lambda: encode_capability(VnetHashCapability(Revision.RFC, 0x3F)),
        ValidationError,
        "max_indirection_table_length",
    ),
    Case(
        "default capability of text",
        lambda: default_capability(_any("rfc")),
        ValidationError,
        "revision",
    ),
    # --- raw ABI
    Case("unknown ioctl", lambda: ioctl_request("TUNNOPE"), ValidationError, "name", "TUNNOPE"),
    Case("unknown machine", lambda: ioctl_request("TUNSETIFF", arch="vax"), ValidationError, "arch"),
    Case("revision v13", lambda: Revision.parse("v13"), ValidationError, "revision", "v13"),
    Case("revision of an int", lambda: Revision.parse(_any(12)), ValidationError, "revision"),
    Case("report of two type bits", lambda: HashType(3).report, ValidationError, "types"),
    Case("hash type of NONE", lambda: HashReport.NONE.hash_type, ValidationError, "report"),
    # --- model
    Case("toeplitz key text", lambda: toeplitz_hash(_any("key"), b""), ValidationError, "key"),
    Case(
        "classify framing text",
        lambda: classify(FRAME, 0x3F, KEY, l2=_any("ethernet")),
        ValidationError,
        "l2",
    ),
    Case(
        "classify semantics text",
        lambda: classify(FRAME, 0x3F, KEY, semantics=_any("spec")),
        ValidationError,
        "semantics",
    ),
    Case("predict without rss", lambda: predict_queue(VnetHashConfig(), FRAME, 4), ValidationError, "rss"),
    Case("predict 0 queues", lambda: predict_queue(RSS, FRAME, 0), ValidationError, "num_queues"),
    Case("expected report 0 queues", lambda: expected_report(RSS, FRAME, num_queues=0), ValidationError, "num_queues"),
    Case("vnet header flags 256", lambda: VnetHeader(flags=256), ValidationError, "flags"),
    Case("vnet header report 10", lambda: VnetHeader(hash_report=10), ValidationError, "hash_report"),
    Case("vnet header layout 13", lambda: VnetHeader().encode(13), ValidationError, "layout"),
    Case("hash in a 12-byte header", lambda: VnetHeader(hash_value=1).encode(12), ValidationError, "hash_value"),
    Case("decode 5 header bytes", lambda: VnetHeader.decode(bytes(5)), DecodeError, "data"),
    Case("header size 9", lambda: split_frame(bytes(30), 9), ValidationError, "vnet_hdr_size"),
    Case("layout larger than header", lambda: build_frame(b"", layout=20, vnet_hdr_size=12), ValidationError, "layout"),
    Case(
        "verify without hash fields",
        lambda: verify_reports([], RSS, vnet_hdr_size=12),
        ValidationError,
        "vnet_hdr_size",
    ),
    Case("rfc input of 3 bytes", lambda: rfc_input(b"abc"), ValidationError, "data"),
    Case("batch rows differ", lambda: toeplitz_hash_batch(KEY, [b"ab", b"abc"]), ValidationError, "rows[1]"),
    # --- devices (before /dev/net/tun is opened)
    Case("mode as text", lambda: TunTapDevice.create(mode=_any("tap")), ValidationError, "mode"),
    Case("0 queues", lambda: TunTapDevice.create(queues=0), ValidationError, "queues"),
    Case("257 queues", lambda: TunTapDevice.create(queues=257), ValidationError, "queues", "256"),
    Case("queues as text", lambda: TunTapDevice.create(queues=_any("2")), ValidationError, "queues"),
    Case(
        "2 queues single",
        lambda: TunTapDevice.create(queues=2, multi_queue=False),
        ValidationError,
        "queues",
        "multi_queue",
    ),
    Case("name 16 bytes", lambda: TunTapDevice.create("x" * 16), ValidationError, "name"),
    Case("name with slash", lambda: TunTapDevice.create("a/b"), ValidationError, "name"),
    Case("name with space", lambda: TunTapDevice.create("a b"), ValidationError, "name"),
    Case("name with NUL", lambda: TunTapDevice.create("tap0\0x"), ValidationError, "name", "NUL"),
    Case("name not text", lambda: TunTapDevice.create(_any(5)), ValidationError, "name"),
    Case("name two templates", lambda: TunTapDevice.create("a%d%d"), ValidationError, "name"),
    Case("name lone surrogate", lambda: TunTapDevice.create("\ud800"), ValidationError, "name"),
    Case("owner -1", lambda: TunTapDevice.create(owner=-1), ValidationError, "owner"),
    Case("group as text", lambda: TunTapDevice.create(group=_any("0")), ValidationError, "group"),
    Case("open a template", lambda: TunTapDevice.open("tap%d"), ValidationError, "name"),
    Case("adopt nothing", lambda: TunTapDevice.adopt([]), ValidationError, "fds"),
    Case("adopt -1", lambda: TunTapDevice.adopt([-1]), ValidationError, "fds[0]"),
    Case("adopt twice", lambda: TunTapDevice.adopt([3, 3]), ValidationError, "fds"),
    Case("adopt text", lambda: TunTapDevice.adopt(_any(["3"])), ValidationError, "fds[0]"),
    # --- emulator and eBPF (before any thread, filter or map)
    Case("emulator timeout 0", lambda: KernelEmulator(timeout=0), EmulatorError, None, "positive"),
    Case("emulator timeout text", lambda: KernelEmulator(timeout=_any("1")), EmulatorError),
    Case("emulator mode text", lambda: KernelEmulator(mode=_any("thread")), EmulatorError),
    Case("emulator revision text", lambda: KernelEmulator(_any("rfc")), ValidationError, "revision"),
    Case(
        "emulator capability of v3",
        lambda: KernelEmulator(capability=default_capability(Revision.V3)),
        ValidationError,
        "capability",
    ),
    Case("ebpf without rss", lambda: EbpfRss.load(VnetHashConfig(report=True, types=0x3F)), ValidationError),
    Case("ebpf _EX types", lambda: EbpfRss.load(RSS.replace(types=0x1FF)), ValidationError),
    Case("ebpf mode text", lambda: EbpfRss.load(RSS, _any("tap")), ValidationError, "mode"),
    Case("program of no code", lambda: Program.load(b""), ValidationError, "insns"),
    Case("program of 7 bytes", lambda: Program.load(bytes(7)), ValidationError, "insns"),
]


def _check(exc: PytunHashError, case: Case) -> None:
    assert type(exc) is case.error or (isinstance(exc, case.error) and case.error is not PytunHashError), (
        f"{type(exc).__name__} instead of {case.error.__name__}: {exc}"
    )
    if isinstance(exc, ValidationError) and case.field is not None:
        assert exc.field == case.field, f"field {exc.field!r} instead of {case.field!r}: {exc}"
    if isinstance(exc, KernelError):
        assert exc.hint and exc.request
        if case.errno is not None:
            assert exc.errno == case.errno, f"errno {exc.errno} instead of {case.errno}: {exc}"
    assert case.words in str(exc), f"{case.words!r} not in {exc}"


@pytest.mark.parametrize("case", PURE, ids=lambda c: c.id)
def test_refused_before_any_syscall(case: Case) -> None:
    with no_syscalls(), pytest.raises(PytunHashError) as info:
        case.call()
    _check(info.value, case)


# ----------------------------------------------------------------------------- hash control and steering


@attrs.frozen
class Scene:
    """What a hash-control case may use: the device, its control, a program, and a second device."""

    dev: TunTapDevice | FakeTunTap
    control: HashControl
    program: int
    revision: Revision
    harness: Harness

    def other(self, *, queues: int = 2, vnet_hdr: bool = True) -> contextlib.AbstractContextManager[TunTapBase]:
        """Another device of the same kind."""
        return self.harness.other_device(queues=queues, vnet_hdr=vnet_hdr)


def _apply(config: VnetHashConfig) -> Callable[[Scene], object]:
    return lambda s: s.control.apply(config)


def _no_vnet_hdr(s: Scene) -> None:
    with s.other(vnet_hdr=False) as other:
        HashControl(other, revision=s.revision, read_capability=False).apply(RSS.replace(report=True))


def _short_header(s: Scene) -> None:
    s.dev.set_vnet_hdr_size(12)
    try:
        s.control.apply(RSS.replace(report=True))
    finally:
        s.dev.set_vnet_hdr_size(20)


def _steering_then_rss(s: Scene) -> None:
    s.dev.attach_steering_program(s.program)
    try:
        s.control.apply(RSS)
    finally:
        s.dev.detach_steering_program()


def _rss_then_steering(s: Scene) -> None:
    s.control.apply(RSS)
    try:
        s.dev.attach_steering_program(s.program)
    finally:
        s.control.disable()


def _all_queues_detached(s: Scene) -> None:
    attached = s.dev.attached_queues
    for q in attached:
        q.detach()
    try:
        s.control.apply(RSS)
    finally:
        for q in attached:
            q.attach()


def _small_capability(s: Scene) -> None:
    cap = VnetHashCapability(s.revision, 0x3F, max_indirection_table_length=4)
    HashControl(s.dev, revision=s.revision, capability=cap).apply(RSS)


HASH_CONTROL: list[tuple[str, Callable[[Scene], object], type[PytunHashError], str | None, str]] = [
    (
        "types beyond the capability",
        _apply(RSS.replace(types=0x3F | HashType.IP_EX)),
        ValidationError,
        "config",
        "IP_EX",
    ),
    ("table beyond the capability", _small_capability, ValidationError, "config", "at most 4"),
    ("report with a 12-byte header", _short_header, ValidationError, "report", "set_vnet_hdr_size(20)"),
    ("report without a vnet header", _no_vnet_hdr, ValidationError, "report", "vnet_hdr=True"),
    ("apply no config", lambda s: s.control.apply(_any({"rss": True})), ValidationError, "config", ""),
    ("plan no config", lambda s: s.control.plan(_any(None)), ValidationError, "config", ""),
    ("rss while steering", _steering_then_rss, SteeringConflictError, None, "detach_steering_program"),
    ("steering while rss", _rss_then_steering, SteeringConflictError, None, "disable RSS"),
    ("every queue detached", _all_queues_detached, ValidationError, "device", "no attached queue"),
    ("revision as text", lambda s: HashControl(s.dev, revision=_any("rfc")), ValidationError, "revision", ""),
    (
        "capability of another revision",
        lambda s: HashControl(
            s.dev,
            revision=s.revision,
            capability=default_capability(Revision.V12 if s.revision is not Revision.V12 else Revision.RFC),
        ),
        ValidationError,
        "capability",
        "",
    ),
    ("control of no device", lambda s: HashControl(_any("tap0")), ValidationError, "device", ""),
    ("probe revisions as text", lambda s: probe_revision(s.dev, _any(["rfc"])), ValidationError, "revisions", ""),
    ("steering fd -1", lambda s: s.dev.attach_steering_program(-1), ValidationError, "prog_fd", "detach"),
    ("steering fd text", lambda s: s.dev.attach_steering_program(_any("5")), ValidationError, "prog_fd", ""),
    ("steering fd bool", lambda s: s.dev.attach_steering_program(True), ValidationError, "prog_fd", ""),
]
_V3_ONLY: list[tuple[str, Callable[[Scene], object], type[PytunHashError], str | None, str]] = [
    ("ipv6-only rss", _apply(RSS.replace(types=IPV6_ONLY)), ValidationError, "types", "eBPF backend"),
]
#: The cases also run on a real TAP under the seccomp emulator (the rest need no real kernel): the
#: ones a real device or program takes part in, on the RFC; an attach v3 would refuse with EBUSY; and
#: RSS under a real program on v12, whose refusal names its own setter.
_ON_THE_KERNEL = {
    Revision.RFC: {
        "report with a 12-byte header",
        "report without a vnet header",
        "rss while steering",
        "steering while rss",
        "every queue detached",
    },
    Revision.V3: {"steering while rss"},
    Revision.V12: {"rss while steering"},
}


def _hash_control_cases() -> Iterator[Any]:
    for revision in Revision:
        cases = HASH_CONTROL + (_V3_ONLY if revision is not Revision.RFC else [])
        for case in cases:
            yield pytest.param("fake", revision, *case[1:], id=f"fake-{revision.value}-{case[0]}")
            if case[0] in _ON_THE_KERNEL.get(revision, set()):
                yield pytest.param(
                    "kernel", revision, *case[1:], id=f"kernel-{revision.value}-{case[0]}", marks=pytest.mark.kernel
                )


@pytest.mark.parametrize(("where", "revision", "action", "error", "field", "words"), list(_hash_control_cases()))
def test_hash_control_refuses_without_an_ioctl(
    make_harness: MakeHarness,
    where: str,
    revision: Revision,
    action: Callable[[Scene], object],
    error: type[PytunHashError],
    field: str | None,
    words: str,
) -> None:
    h = make_harness(where, revision)
    dev = h.device
    assert isinstance(dev, TunTapDevice | FakeTunTap)
    control = h.run(HashControl, dev, revision=revision)
    scene = Scene(dev, control, h.program(), revision, h)
    before = (control.config, repr(dev.steering), h.state())
    h.reset_log()
    # Setup steps (attach, apply) of a case are trapped calls too; count only the refused one. On the
    # fake nothing at all reaches the real kernel.
    with no_syscalls() if where == "fake" else contextlib.nullcontext(), pytest.raises(error) as info:
        h.run(action, scene)
    refused = [c for c in h.calls if c.errno]
    assert refused == [], f"the kernel was asked and refused: {refused}"
    assert not any(
        c.name.startswith("TUNSETVNET") or c.name == "TUNSETSTEERINGEBPF"
        for c in h.calls
        if not _setup_call(action, c.name)
    ), h.calls
    exc = info.value
    if isinstance(exc, ValidationError):
        assert exc.field == field, exc
    if isinstance(exc, SteeringConflictError):
        assert exc.errno == errno.EBUSY
    assert words in str(exc)
    if action not in _SETUPS:
        assert (control.config, repr(dev.steering), h.state()) == before
    assert_binding_agrees(control, dev, h.state())


def assert_binding_agrees(control: HashControl, dev: TunTapBase, state: EmulatedHashState) -> None:
    """The binding's record (hash control config, steering state) is what the emulated kernel holds (``state``)."""
    if control.config is not None:
        held = state.as_config()
        if control.revision is Revision.RFC or control.config.rss:
            assert held == control.config
        else:  # v3-v11 and v12 hold no table, key or unclassified queue without RSS
            assert (held.rss, held.report, held.types) == (False, control.config.report, control.config.types)
    assert dev.steering.native_rss == state.rss
    assert dev.steering.steering_attached == state.steering_attached


def _setup_call(action: Callable[[Scene], object], name: str) -> bool:
    """Whether trapped call ``name`` is a setup step of ``action`` (the attach before 'rss while steering' ...)."""
    return name in _SETUPS.get(action, set())


_SETUPS: dict[Callable[[Scene], object], set[str]] = {
    _steering_then_rss: {"TUNSETSTEERINGEBPF"},
    _rss_then_steering: {"TUNSETVNETHASH", "TUNSETVNETRSS", "TUNSETVNETREPORTINGAUTOMQ"},
    _short_header: {"TUNSETVNETHDRSZ"},
}


@pytest.mark.parametrize("where", BOTH)
def test_wrong_revision_is_a_typed_error_and_changes_nothing(make_harness: MakeHarness, where: str) -> None:
    # The kernel (emulated) speaks the RFC; the caller insists on v3-v11 or v12.
    h = make_harness(where, Revision.RFC)
    h.reset_log()
    for revision in (Revision.V3, Revision.V12):
        with pytest.raises(FeatureUnsupportedError) as info:
            h.run(HashControl, h.device, revision=revision)
        assert info.value.errno == errno.EINVAL and "eBPF" in info.value.hint
        control = h.run(HashControl, h.device, revision=revision, read_capability=False)
        with pytest.raises(KernelError) as refused:
            h.run(control.apply, RSS)
        assert refused.value.errno == errno.EINVAL and "lacks this revision" in refused.value.hint
        assert control.config is None and not h.device.steering.native_rss
    # The other revisions' request numbers were refused as unknown ioctls, changing nothing.
    assert h.calls and all(c.errno == errno.EINVAL and "[" in c.name for c in h.calls)
    assert h.state().as_config() == VnetHashConfig.disabled().replace(key=bytes(40))


# ----------------------------------------------------------------------------- other device calls


def _state(dev: TunTapDevice) -> tuple[object, ...]:
    return (
        [q.fd for q in dev.attached_queues],
        [q.fd for q in dev.detached_queues],
        dev.get_vnet_hdr_size(),
        repr(dev.steering),
        dev.flags,
    )


def _detach_twice(dev: TunTapDevice) -> None:
    queue = dev.queues[-1]
    dev.detach_queue(queue)
    try:
        dev.detach_queue(queue)
    finally:
        dev.attach_queue(queue)


def _foreign_queue(dev: TunTapDevice) -> None:
    with TunTapDevice.create("hf%d") as other:
        dev.detach_queue(other.queues[0])


def _with_pipe(fn: Callable[[int], object]) -> None:
    r, w = os.pipe()
    try:
        fn(r)
    finally:
        os.close(r)
        os.close(w)


def _fresh_tun(fn: Callable[[int], object]) -> None:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fn(fd)
    finally:
        os.close(fd)


def _closed_queue_read(dev: TunTapDevice) -> None:
    with TunTapDevice.create("hc%d") as other:
        queue = other.queues[0]
        queue.close()
        queue.read()


KERNEL: list[tuple[str, Callable[[TunTapDevice], object], type[PytunHashError], int | None, str]] = [
    ("header size -1", lambda d: d.set_vnet_hdr_size(-1), KernelError, errno.EINVAL, "at least 10 bytes"),
    ("header size 9", lambda d: d.set_vnet_hdr_size(9), KernelError, errno.EINVAL, "at least 10 bytes"),
    ("header size 2**40", lambda d: d.set_vnet_hdr_size(2**40), ValidationError, None, "C int"),
    ("header size text", lambda d: d.set_vnet_hdr_size(_any("20")), ValidationError, None, "integer"),
    ("unknown offload bit", lambda d: d.set_offload(1 << 20), KernelError, errno.EINVAL, "offload bits"),
    ("TSO without CSUM", lambda d: d.set_offload(TunOffload.TUN_F_TSO4), KernelError, errno.EINVAL, "TUN_F_CSUM"),
    (
        "attach an attached queue",
        lambda d: d.attach_queue(d.queues[0]),
        KernelError,
        errno.EINVAL,
        "already in the requested state",
    ),
    ("detach a detached queue", _detach_twice, KernelError, errno.EINVAL, "already in the requested"),
    ("queue of another device", _foreign_queue, ValidationError, None, "another device"),
    ("steer with a pipe", lambda d: _with_pipe(d.attach_steering_program), KernelError, errno.EINVAL, "SOCKET_FILTER"),
    ("steer with a closed fd", lambda d: d.attach_steering_program(4000), KernelError, errno.EBADF, "closed"),
    ("owner -1", lambda d: d.set_owner(-1), ValidationError, None, ">= 0"),
    ("owner 2**40", lambda d: d.set_owner(2**40), ValidationError, None, "C int"),
    ("read a closed queue", _closed_queue_read, KernelError, errno.EBADF, "closed"),
    (
        "create with other flags",
        lambda d: TunTapDevice.create(d.name, mode=DeviceMode.TUN),
        DeviceFlagsMismatchError,
        errno.EINVAL,
        "IFF_TUN",
    ),
    (
        "create exclusive",
        lambda d: TunTapDevice.create(d.name, queues=4, exclusive=True),
        BusyError,
        errno.EBUSY,
        "IFF_TUN_EXCL",
    ),
]

#: Refusals that need no device of the test's: rtnetlink lookups and fds that are not queues. They need
#: no privilege either, so they run everywhere (in a private namespace where one can be made).
LOOKUPS: list[tuple[str, Callable[[], object], type[PytunHashError], int | None, str]] = [
    ("open a missing device", lambda: TunTapDevice.open("nope0"), DeviceNotFoundError, errno.ENODEV, "nope0"),
    ("open loopback", lambda: TunTapDevice.open("lo"), KernelError, errno.EINVAL, "not a TUN/TAP"),
    ("adopt a closed fd", lambda: TunTapDevice.adopt([4000]), KernelError, errno.EBADF, "closed"),
    (
        "adopt a pipe",
        lambda: _with_pipe(lambda fd: TunTapDevice.adopt([fd])),
        UnsupportedError,
        errno.ENOTTY,
        "not a TUN/TAP",
    ),
    (
        "adopt a fresh tun fd",
        lambda: _fresh_tun(lambda fd: TunTapDevice.adopt([fd])),
        DeviceGoneError,
        errno.EBADFD,
        "never attached",
    ),
]


@pytest.mark.kernel
@pytest.mark.parametrize(("action", "error", "err", "words"), [pytest.param(*c[1:], id=c[0]) for c in KERNEL])
def test_kernel_refusals_are_typed_and_change_nothing(
    tap: TunTapDevice,
    action: Callable[[TunTapDevice], object],
    error: type[PytunHashError],
    err: int | None,
    words: str,
) -> None:
    before = _state(tap)
    with pytest.raises(error) as info:
        action(tap)
    exc = info.value
    assert type(exc) is error, f"{type(exc).__name__}: {exc}"
    if err is not None:
        assert isinstance(exc, KernelError) and exc.errno == err and exc.hint
    assert words in str(exc)
    assert _state(tap) == before


@pytest.mark.parametrize(("action", "error", "err", "words"), [pytest.param(*c[1:], id=c[0]) for c in LOOKUPS])
def test_lookup_refusals_are_typed(
    isolated: None,
    action: Callable[[], object],
    error: type[PytunHashError],
    err: int | None,
    words: str,
) -> None:
    with pytest.raises(error) as info:
        action()
    exc = info.value
    assert type(exc) is error, f"{type(exc).__name__}: {exc}"
    if err is not None:
        assert isinstance(exc, KernelError) and exc.errno == err and exc.hint
    assert words in str(exc)
