"""The ``uapi.*`` rules: what the hash ioctls read, write, refuse and commit, measured with raw calls.

Every payload is built here with :mod:`struct` in the layout the revision under test documents
(rfc-uapi.md section 1, revisions.md), host-endian, and issued through libc at a raw address
(:mod:`pytun_hash.conformance._raw`); byte counts are measured at an unreadable page. Nothing goes
through :class:`~pytun_hash.device.hashctl.HashControl` or the codec's ``ioctl_plan``: their checks
and workarounds (the full-key preload, the exclusion guard) would hide what is measured. The
documented expectations use only pure arithmetic (:func:`pytun_hash.codec.kernel_key_length`, the
series' key-length function as written, and :func:`pytun_hash.codec.spec_key_length`).

Revisions: ``RFC`` (8 Oct 2023), ``V3`` (v3-v9: 8-byte ``tun_vnet_hash`` + ``tun_vnet_hash_rss``,
``EBUSY`` exclusion), ``V10`` (v10-v11: the same ABI, a steering program takes precedence), ``V12``
(``TUNGETVNETHASHTYPES`` and three setters with ``tun_vnet_rss``, precedence). "Set" below means
``TUNSETVNETHASH`` (RFC, V3, V10) or each of ``TUNSETVNETREPORTINGAUTOMQ``,
``TUNSETVNETREPORTINGRSS`` and ``TUNSETVNETRSS`` (V12); "get" means ``TUNGETVNETHASHCAP`` or
``TUNGETVNETHASHTYPES``.

What each rule expects, per revision (the basis in the second column; details and reasons below):

| rule | basis | RFC | V3 (v3-v9) | V10 (v10-v11) | V12 |
|---|---|---|---|---|---|
| capability | UAPI | 8 B ``{128, 0, 0x3f}``, needs a device | 8 B ``{0x0003, 0, 0x3f}``, no device | as V3 | ``0x3f`` |
| byte-counts | UAPI | ``12 + 2(mask+1) + key`` | 8; RSS ``12 + 2(mask+1) + key`` | as V3 | 4; ``8 + 2(mask+1) + key`` |
| key-length | UAPI | 40: **deviation** (4) | 40: **deviation** (4) | **deviation** | **deviation** |
| bad-mask | UAPI | mask >= 128: ``EINVAL`` | every u16 mask, table read whole | as V3 | as V3 |
| report-header | UAPI | ``EINVAL`` | v5-v9 accepted; v3/v4 ``EBUSY`` | accepted | accepted |
| unknown-flags | UAPI | ignored (or ``EINVAL``) | ignored (or ``EINVAL``) | as V3 | skip: no flags |
| unknown-types | UAPI | ignored (or ``EINVAL``) | as RFC | as RFC | as RFC |
| padding | UAPI | ignored (or ``EINVAL``) | ignored (or ``EINVAL``) | as V3 | skip: no padding |
| deleted-device | UAPI | set, get: ``EBADFD`` | set ``EBADFD``; get answers | as V3 | as V3 |
| fault | UAPI | ``EFAULT`` for every byte copied | as RFC | as RFC | as RFC |
| atomic-commit | UAPI | failed set changes nothing | as RFC | as RFC | as RFC |
| exclusion | CHOICE (RFC), UAPI | ``EBUSY``: **deviation** (silent trade) | ``EBUSY`` | program first | as V10 |

* ``uapi.capability``: the RFC's ``TUNGETVNETHASHCAP`` sits after tun's device lookup (``EBADFD`` on
  an unattached fd) and copies 8 bytes ``{max_indirection_table_length 128, hidden pad 0, types
  0x3f}`` although it is encoded ``_IO``; v3 allowed it before ``TUNSETIFF`` and writes ``{flags
  REPORT|RSS = 0x0003, pad 0, types 0x3f}`` (the whole series applied); v12's ``TUNGETVNETHASHTYPES``
  writes the u32 ``0x3f`` without a device. Padding must come back zero (no kernel memory leaks, as
  MST asked). The bytes written are measured, not assumed.
* ``uapi.byte-counts``: rfc-uapi.md section 7, facts 13-14: the RFC reads the 12-byte header, the
  table and the key whatever the flags say (18 bytes at least); v3-v11 read 8 bytes without RSS and
  ``8 + 4`` plus table and key with it; v12's AUTOMQ reads 4, its RSS setters ``8`` plus table and
  key. The key part may be what the series' key-length function gives (40 if ``types & 7`` else 4),
  the documented 40, or what the spec's hash needs; which one is judged once, by ``uapi.key-length``.
* ``uapi.key-length``: with RSS on, a non-empty supported type set must load the documented 40-byte
  key (``TUN_VNET_HASH_MAX_KEY_SIZE``; every device must support a 40-byte key). The series'
  ``virtio_net_hash_key_length()`` tests hash-report values against type bits and reads 4 bytes for
  type sets without an IPv4 bit in every revision from the RFC to v12 (rfc-uapi.md section 3), so
  all four deviate: the IPv6 hash then uses key bytes 4..39 from an earlier call (RFC) or
  uninitialised memory (v3+). An empty type set hashes nothing; unsupported bits are
  ``uapi.unknown-types``'.
* ``uapi.bad-mask``: the RFC refuses ``mask >= 128`` (its advertised maximum) with ``EINVAL`` right
  after the header; v3+ bound the mask only by its u16 (no maximum is advertised), so ``0xffff`` is
  accepted and its 128 KiB table read. A mask whose table is not a power of two is the driver's
  fault in the spec, which says nothing of the device's answer: ``EINVAL`` or acceptance with all
  ``mask + 1`` entries read (``hash & mask`` then stays inside the table) both pass [CHOICE].
* ``uapi.report-header``: the RFC refuses REPORT with a header under 20 bytes or not little-endian,
  and a ``TUNSETVNETHDRSZ`` under 20 while REPORT is set (``EINVAL``); v3/v4 answered ``EBUSY``; from
  v5 REPORT is accepted and takes effect once the header is 20 bytes, the hash fields always
  little-endian. For V3 either answer passes if every case gives the same. Big-endian headers exist
  only with ``CONFIG_TUN_VNET_CROSS_LE``; elsewhere that part is noted, not judged.
* ``uapi.unknown-flags``, ``uapi.unknown-types``, ``uapi.padding``: no revision checks them (the RFC
  author: unknown flags "are ignored"; v3's pad "should be filled with zero"; for types, Akihiko
  declined Jason's request to filter). The spec makes unsupported types the driver's fault ("A
  driver MUST NOT set any VIRTIO_NET_HASH_TYPE_ flags that are not supported by a device") and says
  nothing of the device's answer. So ignoring them passes, and so does ``EINVAL`` (the review's
  suggestion); what must not happen is that they change what the kernel reads, or another errno.
* ``uapi.deleted-device``: every set needs the device (``EBADFD`` from tun's lookup before any copy;
  documented from v5); the get ioctls of v3+ need none and keep answering.
* ``uapi.fault``: ``copy_from_user``/``copy_to_user`` fail with ``EFAULT`` on the first inaccessible
  byte: every accessible prefix shorter than what the call copies (measured; ``uapi.byte-counts``
  judges that count) faults.
* ``uapi.atomic-commit``: every revision copies everything before it commits (verified on an RFC
  kernel): a set that faults in its table or at the last byte it reads leaves the previous
  configuration in force.
* ``uapi.exclusion``: the review of the RFC asked for ``EBUSY`` both ways and the author agreed; the
  RFC's code still trades silently (enabling RSS detaches the program, attaching one clears RSS),
  so it deviates from that agreement [CHOICE: the project adopted it, decision 5]. v3-v9 implement
  ``EBUSY`` (detaching with -1 always allowed); from v10 the program takes precedence and RSS steers
  again once it is detached [UAPI].

So, with each revision's documented behaviour (what the emulator reproduces), the RFC deviates in
``uapi.key-length`` and ``uapi.exclusion`` and passes every other rule; V3, V10 and V12 deviate
only in ``uapi.key-length``; V12 skips ``uapi.unknown-flags`` and ``uapi.padding``.

Frames: ``uapi.atomic-commit`` and ``uapi.exclusion`` cannot ask the kernel what is in force (no
revision has a way to read the configuration back), so they look at the data path: a configuration
is recognised by the queue its frames take and the hash fields they carry. Without a usable data
path, atomic-commit is skipped and exclusion is judged on its errnos alone.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

from pytun_hash._abi import Revision
from pytun_hash.bpf.insn import Assembler, Reg
from pytun_hash.bpf.prog import Program
from pytun_hash.codec import kernel_key_length, spec_key_length
from pytun_hash.conformance._raw import (
    PAGE,
    FrameSender,
    GuardedBuffer,
    Measurement,
    Observed,
    ioctl_int,
    marked_frames,
    udp4_frame,
)
from pytun_hash.conformance.context import Context
from pytun_hash.conformance.rules import RULES, Basis, RuleResult, Status, rule
from pytun_hash.device import TunTapDevice
from pytun_hash.errors import PytunHashError

__all__: list[str] = []

_RFC_RSS, _RFC_REPORT = 0x01, 0x02
_V3_REPORT, _V3_RSS = 0x0001, 0x0002
# The documented key size of every revision (TUN_VNET_HASH_MAX_KEY_SIZE; the spec's minimum rss_max_key_size).
_KEY_SIZE = 40
_SUPPORTED = 0x3F
_RFC_MAX_TABLE = 128
# Two keys of 40 distinct nonzero bytes (an all-zero key would make every hash 0).
_KEY_A = bytes(range(0x11, 0x11 + _KEY_SIZE))
_KEY_B = bytes(range(0x91, 0x91 + _KEY_SIZE))
# Bytes after a payload, so that a kernel reading more than documented is measured instead of faulting.
_SLACK = 64
_TUN_PATH = "/dev/net/tun"


# -- the revision's layouts ---------------------------------------------------------------------


@attrs.frozen
class _Call:
    """One set call as a rule issues it: the ioctl's name, its payload and a label for the evidence."""

    name: str
    payload: bytes
    label: str


def _revision(ctx: Context) -> Revision:
    if ctx.revision is None:
        # The runner skips every uapi rule before it gets here (eBPF mode, or no hash ioctls).
        raise PytunHashError("the uapi rules need a revision under test")
    return ctx.revision


def _get_name(rev: Revision) -> str:
    return "TUNGETVNETHASHTYPES" if rev is Revision.V12 else "TUNGETVNETHASHCAP"


def _get_size(rev: Revision) -> int:
    return 4 if rev is Revision.V12 else 8


def _table(mask: int, entries: Sequence[int] | None = None) -> bytes:
    values = list(entries) if entries is not None else [i % 4 for i in range(mask + 1)]
    return struct.pack(f"={mask + 1}H", *values)


def _rss(
    rev: Revision,
    *,
    types: int = _SUPPORTED,
    mask: int = 0,
    entries: Sequence[int] | None = None,
    unclassified: int = 0,
    key: bytes = _KEY_A,
    report: bool = False,
    extra_flags: int = 0,
    pad: bytes | None = None,
) -> _Call:
    """The call that turns RSS on (reporting too when ``report``) in ``rev``'s layout, host-endian."""
    table = _table(mask, entries)
    label = f"RSS{'+REPORT' if report else ''} types {types:#x} mask {mask:#x}"
    if extra_flags:
        label += f", unknown flag {extra_flags:#x}"
    if pad is not None:
        label += f", padding {pad.hex()}"
    if rev is Revision.RFC:
        flags = _RFC_RSS | (_RFC_REPORT if report else 0) | extra_flags
        head = struct.pack("=B3sIHH", flags, pad or bytes(3), types, mask, unclassified)
        return _Call("TUNSETVNETHASH", head + table + key, label)
    if rev.abi is Revision.V3:
        flags = _V3_RSS | (_V3_REPORT if report else 0) | extra_flags
        head = struct.pack("=H2sIHH", flags, pad or bytes(2), types, mask, unclassified)
        return _Call("TUNSETVNETHASH", head + table + key, label)
    name = "TUNSETVNETREPORTINGRSS" if report else "TUNSETVNETRSS"
    return _Call(name, struct.pack("=IHH", types, mask, unclassified) + table + key, label)


def _report_only(rev: Revision, *, types: int = _SUPPORTED, pad: bytes | None = None) -> _Call:
    """The call that turns hash reporting on without RSS (v12: ``TUNSETVNETREPORTINGAUTOMQ``)."""
    label = f"REPORT types {types:#x}" + ("" if pad is None else f", padding {pad.hex()}")
    if rev is Revision.RFC:
        head = struct.pack("=B3sIHH", _RFC_REPORT, pad or bytes(3), types, 0, 0)
        return _Call("TUNSETVNETHASH", head + _table(0) + _KEY_A, label)
    if rev.abi is Revision.V3:
        return _Call("TUNSETVNETHASH", struct.pack("=H2sI", _V3_REPORT, pad or bytes(2), types), label)
    return _Call("TUNSETVNETREPORTINGAUTOMQ", struct.pack("=I", types), f"AUTOMQ types {types:#x}")


def _off(rev: Revision, *, flags: int = 0, types: int = 0, mask: int = 0) -> _Call:
    """The call that turns hashing off; ``flags`` other bits alone (for the unknown-flag checks)."""
    label = f"flags {flags:#x} alone" if flags else f"off types {types:#x} mask {mask:#x}"
    if rev is Revision.RFC:
        # The RFC reads the table and the key even now: 18 bytes at least.
        head = struct.pack("=B3xIHH", flags, types, mask, 0)
        return _Call("TUNSETVNETHASH", head + _table(mask) + _KEY_A, label)
    if rev.abi is Revision.V3:
        return _Call("TUNSETVNETHASH", struct.pack("=H2xI", flags, types), label)
    return _Call("TUNSETVNETREPORTINGAUTOMQ", struct.pack("=I", 0), "AUTOMQ types 0 (off)")


def _layout(rev: Revision, call: _Call) -> tuple[int, int | None]:
    """What the documented layout reads for ``call``: (bytes before the key, the hash types) or (all, None).

    rfc-uapi.md section 7, facts 13-14: the RFC reads the header, the table and the key whatever its
    flags; v3-v11 read the 8-byte header alone without RSS; v12's AUTOMQ reads its u32.
    """
    p = call.payload
    if rev is Revision.RFC:
        types, mask = struct.unpack_from("=4xIH", p)
        return 12 + 2 * (mask + 1), types
    if rev.abi is Revision.V3:
        flags, types = struct.unpack_from("=H2xI", p)
        if not flags & _V3_RSS:
            return 8, None
        (mask,) = struct.unpack_from("=H", p, 8)
        return 12 + 2 * (mask + 1), types
    if call.name == "TUNSETVNETREPORTINGAUTOMQ":
        return 4, None
    types, mask = struct.unpack_from("=IH", p)
    return 8 + 2 * (mask + 1), types


def _documented_read(rev: Revision, call: _Call) -> int:
    """Bytes the documented layout reads, the key as the series' key-length function gives it."""
    before_key, types = _layout(rev, call)
    return before_key + (0 if types is None else kernel_key_length(types))


def _rss_header(rev: Revision) -> int:
    """Bytes in front of the table in an RSS call."""
    return 8 if rev is Revision.V12 else 12


# -- evidence -----------------------------------------------------------------------------------


def _en(err: int) -> str:
    """An errno as the evidence shows it: ``ok``, ``EFAULT`` ..."""
    return "ok" if err == 0 else errno.errorcode.get(err, str(err))


def _measured(m: Measurement) -> dict[str, Any]:
    return {"bytes": m.count, "errno": _en(m.errno)}


@attrs.define
class _Cases:
    """The checks a rule made, each with what was expected and what was observed."""

    rows: list[dict[str, Any]] = attrs.field(factory=list)

    def check(self, case: str, expected: Any, observed: Any, ok: bool | None = None, **more: Any) -> bool:
        """Record one check (passed when ``observed == expected`` unless ``ok`` says); return whether it passed."""
        good = expected == observed if ok is None else ok
        self.rows.append({"case": case, "expected": expected, "observed": observed, **more, "ok": good})
        return good

    def note(self, case: str, observed: Any, **more: Any) -> None:
        """Record a fact that is evidence but not judged."""
        self.rows.append({"case": case, "observed": observed, **more})

    @property
    def departures(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("ok") is False]

    def evidence(self, inputs: Any, expected: Any, limit: int = 8) -> dict[str, Any]:
        """``inputs``, ``expected``, and every check made (passing), or the first departures and their count."""
        bad = self.departures
        out: dict[str, Any] = {"inputs": inputs, "expected": expected}
        if bad:
            out["departures"] = bad[:limit]
            out["departure_count"] = len(bad)
            out["checked"] = sum("ok" in r for r in self.rows)
        else:
            out["observed"] = self.rows
        return out

    def first(self, count: int = 4) -> str:
        """The first departures in one line."""
        return "; ".join(f"{r['case']}: {r['observed']} (expected {r['expected']})" for r in self.departures[:count])


def _result(rule_id: str, status: Status, summary: str, basis: Basis, evidence: dict[str, Any]) -> RuleResult:
    registered = next(r for r in RULES if r.id == rule_id)
    return registered.result(status, summary, basis=basis, **evidence)


def _judge(rule_id: str, cases: _Cases, ok: str, bad: str, basis: Basis, inputs: Any, expected: Any) -> RuleResult:
    """PASS with summary ``ok`` when every check held, else DEVIATION with ``bad`` and the departures."""
    status = Status.DEVIATION if cases.departures else Status.PASS
    return _result(rule_id, status, bad if cases.departures else ok, basis, cases.evidence(inputs, expected))


def _fd(device: TunTapDevice) -> int:
    return device.attached_queues[0].fd


def _buffer_for(*calls: _Call) -> GuardedBuffer:
    return GuardedBuffer(max([PAGE, *(len(c.payload) + _SLACK for c in calls)]))


def _with_slack(call: _Call) -> bytes:
    return call.payload + bytes(_SLACK)


def _issue(ctx: Context, buf: GuardedBuffer, fd: int, call: _Call, accessible: int | None = None) -> int:
    """Issue ``call`` on ``fd`` (``accessible`` bytes of it readable); its errno."""
    return buf.call(fd, ctx.request(call.name), call.payload, accessible)[0]


def _measure(ctx: Context, buf: GuardedBuffer, fd: int, call: _Call) -> Measurement:
    return buf.measure(fd, ctx.request(call.name), _with_slack(call))


# -- uapi.capability ----------------------------------------------------------------------------


def _documented_capability(rev: Revision) -> dict[str, int]:
    if rev is Revision.RFC:
        return {"max_indirection_table_length": _RFC_MAX_TABLE, "padding": 0, "types": _SUPPORTED}
    if rev.abi is Revision.V3:
        return {"flags": _V3_REPORT | _V3_RSS, "padding": 0, "types": _SUPPORTED}
    return {"types": _SUPPORTED}


def _decode_capability(rev: Revision, raw: bytes) -> dict[str, int]:
    if rev is Revision.V12:
        return {"types": struct.unpack_from("=I", raw)[0]}
    first, pad, types = struct.unpack_from("=HHI", raw)
    name = "max_indirection_table_length" if rev is Revision.RFC else "flags"
    return {name: first, "padding": pad, "types": types}


def _hexed(fields: dict[str, int]) -> dict[str, str]:
    return {k: hex(v) for k, v in fields.items()}


@rule("uapi.capability", "the get ioctl answers with the hash types and limits the revision documents")
def capability(ctx: Context) -> RuleResult:
    """Call the get ioctl on an attached queue and on an fd without a device; measure what it writes.

    Raises:
        KernelError: when the scratch device cannot be made.
        OSError: when ``/dev/net/tun`` cannot be opened.
    """
    rev = _revision(ctx)
    name, size = _get_name(rev), _get_size(rev)
    request = ctx.request(name)
    documented = _hexed(_documented_capability(rev))
    cases = _Cases()
    with ctx.scratch(2) as dev, GuardedBuffer() as buf:
        written = buf.measure(_fd(dev), request, bytes(size + _SLACK))
        cases.check("bytes written", {"bytes": size, "errno": "ok"}, _measured(written))
        err, out = buf.call(_fd(dev), request, bytes(size))
        if cases.check(f"{name} on an attached queue", "ok", _en(err)):
            for field, value in _hexed(_decode_capability(rev, out)).items():
                cases.check(field, documented[field], value)
        unattached = os.open(_TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
        try:
            err, out = buf.call(unattached, request, bytes(size))
        finally:
            os.close(unattached)
    # The RFC put the ioctl after tun's device lookup; v3 allowed it before TUNSETIFF, v12 kept that.
    if rev is Revision.RFC:
        cases.check(f"{name} on an fd without TUNSETIFF", "EBADFD", _en(err))
    elif cases.check(f"{name} on an fd without TUNSETIFF", "ok", _en(err)):
        cases.check("answer without a device", documented, _hexed(_decode_capability(rev, out)))
    fields = ", ".join(f"{k} {v}" for k, v in documented.items())
    device = "needs a device (EBADFD without)" if rev is Revision.RFC else "answers with or without a device"
    return _judge(
        "uapi.capability",
        cases,
        f"{name} writes {size} bytes {{{fields}}} and {device}",
        cases.first(),
        Basis.UAPI,
        {"ioctl": name, "request": hex(ctx.request(name))},
        {"contents": documented, "bytes": size, "without a device": "EBADFD" if rev is Revision.RFC else "the same"},
    )


# -- uapi.byte-counts ---------------------------------------------------------------------------


def _count_calls(rev: Revision) -> Iterator[_Call]:
    """Calls over flags, type sets (none, IPv4, IPv6 family, all) and masks, each measured."""
    types_sets = (0x00, 0x01, 0x38, _SUPPORTED)
    # v3+ bound the mask only by its u16: tables longer than the RFC's 128 entries are valid there.
    masks = (0, 1, 7, 127) if rev is Revision.RFC else (0, 1, 7, 127, 255, 1023)
    if rev is Revision.RFC:
        for types in types_sets:
            for mask in masks:
                yield _off(rev, types=types, mask=mask)
                yield _rss(rev, types=types, mask=mask)
                yield _rss(rev, types=types, mask=mask, report=True)
        return
    yield _off(rev)
    for types in (0x00, _SUPPORTED):
        yield _report_only(rev, types=types)
    for types in types_sets:
        for mask in masks:
            yield _rss(rev, types=types, mask=mask)
            yield _rss(rev, types=types, mask=mask, report=True)


def _key_lengths(types: int) -> list[int]:
    """Key lengths ``uapi.byte-counts`` accepts (``uapi.key-length`` judges them): the series', the spec's, 40."""
    return sorted({kernel_key_length(types), spec_key_length(types), _KEY_SIZE})


@rule("uapi.byte-counts", "the set ioctls read exactly the bytes the revision's layout documents")
def byte_counts(ctx: Context) -> RuleResult:
    """Measure the bytes each set call reads at an unreadable page, for many flags, type sets and masks.

    Raises:
        KernelError: when the scratch device cannot be made.
    """
    rev = _revision(ctx)
    calls = list(_count_calls(rev))
    cases = _Cases()
    keys: dict[str, int] = {}
    # REPORT needs a 20-byte little-endian header on the RFC; the scratch device has one.
    with ctx.scratch(2) as dev, _buffer_for(*calls) as buf:
        for call in calls:
            m = _measure(ctx, buf, _fd(dev), call)
            before_key, types = _layout(rev, call)
            allowed = [before_key] if types is None else [before_key + k for k in _key_lengths(types)]
            ok = m.errno == 0 and m.count in allowed
            if ok and types is not None and m.count is not None:
                keys[f"{types:#x}"] = m.count - before_key
            shown = (
                allowed[0]
                if len(allowed) == 1
                else {"header and table": before_key, "plus key": _key_lengths(types or 0)}
            )
            cases.check(f"{call.name}: {call.label}", shown, _measured(m), ok=ok)
    layout = {
        Revision.RFC: "12 + 2*(mask+1) + key, whatever the flags",
        Revision.V3: "8 without RSS, else 8 + 4 + 2*(mask+1) + key",
        Revision.V10: "8 without RSS, else 8 + 4 + 2*(mask+1) + key",
        Revision.V12: "AUTOMQ 4; RSS setters 8 + 2*(mask+1) + key",
    }[rev]
    bad = cases.departures
    return _judge(
        "uapi.byte-counts",
        cases,
        f"{len(calls)} calls read as documented, {layout} (key bytes by type set: "
        + ", ".join(f"{t}: {n}" for t, n in keys.items())
        + ")",
        f"{len(bad)} of {len(calls)} calls read other than documented: {cases.first(3)}",
        Basis.UAPI,
        {"calls": len(calls), "slack_after_payload": _SLACK},
        {"layout": layout, "key": "judged by uapi.key-length: any of the series' length, the spec's, or 40"},
    )


# -- uapi.key-length ----------------------------------------------------------------------------

_KEY_TYPE_SETS = (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x07, 0x38, 0x09, _SUPPORTED)


@rule("uapi.key-length", "with RSS on, the set ioctl reads the whole 40-byte key for every supported type set")
def key_length(ctx: Context) -> RuleResult:
    """Measure the key bytes read for each supported type set (mask 0), against the documented 40.

    Raises:
        KernelError: when the scratch device cannot be made.
    """
    rev = _revision(ctx)
    cases = _Cases()
    short: dict[int, list[str]] = {}
    with ctx.scratch(2) as dev, GuardedBuffer() as buf:
        for types in _KEY_TYPE_SETS:
            m = _measure(ctx, buf, _fd(dev), _rss(rev, types=types))
            key = None if m.count is None else m.count - _rss_header(rev) - 2
            ok = m.errno == 0 and key is not None and key >= _KEY_SIZE
            cases.check(
                f"types {types:#x}", _KEY_SIZE, key, ok=ok, errno=_en(m.errno), hash_needs=spec_key_length(types)
            )
            if not ok and key is not None:
                short.setdefault(key, []).append(f"{types:#x}")
    bad = "; ".join(
        f"reads {n} key bytes for type sets {', '.join(t)}" + (" (no IPv4 bit)" if n == 4 else "")
        for n, t in sorted(short.items())
    )
    if short:
        stale = "left from an earlier call" if rev is Revision.RFC else "uninitialised kernel memory"
        bad += f": the hash then uses key bytes {min(short)}..39 {stale}, not the key given"
    return _judge(
        "uapi.key-length",
        cases,
        f"the whole {_KEY_SIZE}-byte key is read for every supported type set",
        bad or f"the key read could not be measured: {cases.first()}",
        Basis.UAPI,
        {"type_sets": [f"{t:#x}" for t in _KEY_TYPE_SETS], "mask": 0, "rss": True},
        {"key_bytes": _KEY_SIZE, "why": "the documented key field (TUN_VNET_HASH_MAX_KEY_SIZE)"},
    )


# -- uapi.bad-mask ------------------------------------------------------------------------------

_OVER_RFC_MAX = (128, 255, 0x8000, 0xFFFF)
_NOT_POWER = (2, 5, 100)


@rule("uapi.bad-mask", "table masks over the documented maximum are refused; other masks bound the table read")
def bad_mask(ctx: Context) -> RuleResult:
    """Set RSS with masks at and over the maximum, and masks whose table is not a power of two.

    Raises:
        KernelError: when the scratch device cannot be made.
    """
    rev = _revision(ctx)
    cases = _Cases()
    calls = [(mask, _rss(rev, mask=mask)) for mask in (127, *_OVER_RFC_MAX, *_NOT_POWER)]
    with ctx.scratch(2) as dev, _buffer_for(*(c for _, c in calls)) as buf:
        for mask, call in calls:
            got = _measured(_measure(ctx, buf, _fd(dev), call))
            whole = {"bytes": _documented_read(rev, call), "errno": "ok"}
            refused = {"bytes": _rss_header(rev), "errno": "EINVAL"}
            if mask in _NOT_POWER:
                # The spec makes a non-power-of-two table the driver's fault, and is silent on the device.
                cases.check(
                    f"mask {mask:#x} ({mask + 1} entries)",
                    [whole, refused],
                    got,
                    ok=got in (whole, refused),
                    basis="choice",
                )
            elif rev is Revision.RFC and mask >= _RFC_MAX_TABLE:
                cases.check(f"mask {mask:#x} (over the maximum 127)", refused, got, basis="uapi")
            else:
                cases.check(f"mask {mask:#x}", whole, got, basis="uapi")
    if rev is Revision.RFC:
        ok = "masks over 127 are refused with EINVAL before the table is read; mask 127 and others read whole"
        over = "mask >= 128 -> EINVAL after the 12-byte header (CAP's maximum 128); mask 127 accepted"
    else:
        ok = "every u16 mask, 0xffff included, is accepted with its whole table read (no maximum documented)"
        over = "no maximum but the u16: accepted, the whole table read"
    return _judge(
        "uapi.bad-mask",
        cases,
        ok,
        cases.first(),
        Basis.UAPI,
        {"masks": [hex(m) for m, _ in calls]},
        {"over the maximum": over, "not 2^n-1": "EINVAL after the header, or accepted with mask+1 entries read"},
    )


# -- uapi.report-header -------------------------------------------------------------------------


def _report_calls(rev: Revision) -> list[_Call]:
    return [_report_only(rev), _rss(rev, report=True)]


def _report_refusal(rev: Revision) -> int | None:
    """The answer to reporting under a short or big-endian header; None for V3 (v3/v4 EBUSY, v5-v9 0)."""
    if rev is Revision.RFC:
        return errno.EINVAL
    return 0 if rev.steering_precedence else None


@rule("uapi.report-header", "hash reporting with a vnet header under 20 bytes or big-endian, as documented")
def report_header(ctx: Context) -> RuleResult:
    """Ask for reports with 10/12/19-byte headers, shrink the header while reporting, try big-endian.

    Raises:
        KernelError: when a scratch device cannot be made.
    """
    rev = _revision(ctx)
    cases = _Cases()
    set_size = ctx.request("TUNSETVNETHDRSZ")
    off = _off(rev)
    answer = _report_refusal(rev)

    def expect(case: str, observed: int) -> None:
        nonlocal answer
        if answer is None:
            # v3-v9: the first answer says which (v3/v4 EBUSY, v5-v9 accepted); every other must agree.
            answer = observed if observed in (0, errno.EBUSY) else 0
        cases.check(case, _en(answer), _en(observed))

    with ctx.scratch(2, vnet_hdr_size=10) as dev, GuardedBuffer() as buf:
        fd = _fd(dev)
        for size in (10, 12, 19):
            cases.check(f"TUNSETVNETHDRSZ({size}) while not reporting", "ok", _en(ioctl_int(fd, set_size, size)))
            for call in _report_calls(rev):
                err = _issue(ctx, buf, fd, call)
                expect(f"{call.label} with a {size}-byte header", err)
                if err == 0:
                    _issue(ctx, buf, fd, off)
        cases.check("TUNSETVNETHDRSZ(20)", "ok", _en(ioctl_int(fd, set_size, 20)))
        for call in _report_calls(rev):
            if not cases.check(f"{call.label} with a 20-byte header", "ok", _en(_issue(ctx, buf, fd, call))):
                continue
            shrink = ioctl_int(fd, set_size, 12)
            expect(f"TUNSETVNETHDRSZ(12) while {call.label}", shrink)
            if shrink == 0:
                ioctl_int(fd, set_size, 20)
            _issue(ctx, buf, fd, off)
        cases.check("TUNSETVNETHDRSZ(12) once reporting is off", "ok", _en(ioctl_int(fd, set_size, 12)))
    with ctx.scratch(2, vnet_hdr_size=20, little_endian=False) as dev, GuardedBuffer() as buf:
        big = ioctl_int(_fd(dev), ctx.request("TUNSETVNETBE"), 1)
        if big:
            # Big-endian vnet headers exist only with CONFIG_TUN_VNET_CROSS_LE (or on big-endian hosts).
            cases.note("TUNSETVNETBE(1)", _en(big), meaning="no big-endian vnet header on this kernel: not checked")
        else:
            for call in _report_calls(rev):
                expect(f"{call.label} with a big-endian header", _issue(ctx, buf, _fd(dev), call))
    documented = {
        Revision.RFC: "EINVAL: REPORT needs a >= 20-byte little-endian header",
        Revision.V3: "v5-v9 accepted (effective once >= 20 bytes, fields always LE); v3/v4 EBUSY",
        Revision.V10: "accepted: effective once the header is >= 20 bytes; hash fields always little-endian",
        Revision.V12: "accepted: effective once the header is >= 20 bytes; hash fields always little-endian",
    }[rev]
    if answer:
        shown = f"refused with {_en(answer)}" + (" (v3/v4)" if rev is Revision.V3 else "")
    else:
        shown = "accepted" + (" (v5-v9)" if rev is Revision.V3 else "")
    return _judge(
        "uapi.report-header",
        cases,
        f"reporting with a header under 20 bytes or big-endian is {shown}, as documented",
        cases.first(),
        Basis.UAPI,
        {"header_sizes": [10, 12, 19], "shrink_to": 12, "big_endian": "TUNSETVNETBE(1) where the kernel has it"},
        documented,
    )


# -- uapi.unknown-flags / unknown-types / padding -----------------------------------------------


def _ignored_or_refused(ctx: Context, cases: _Cases, buf: GuardedBuffer, fd: int, base: _Call, odd: _Call) -> None:
    """Check that ``odd`` is refused with ``EINVAL`` or read exactly as ``base`` is (its odd bits ignored)."""
    same = _measured(_measure(ctx, buf, fd, base))
    got = _measure(ctx, buf, fd, odd)
    refused = got.errno == errno.EINVAL
    cases.check(
        odd.label,
        [same, "EINVAL"],
        _measured(got),
        ok=refused or _measured(got) == same,
        outcome="refused" if refused else "accepted",
    )


def _outcome(cases: _Cases) -> str:
    outcomes = {r.get("outcome") for r in cases.rows}
    if outcomes == {"accepted"}:
        return "accepted and ignored (the same bytes read)"
    if outcomes == {"refused"}:
        return "refused with EINVAL"
    return "some refused with EINVAL, the others ignored"


@rule("uapi.unknown-flags", "unknown flag bits are ignored (as documented) or refused, never misread")
def unknown_flags(ctx: Context) -> RuleResult:
    """Set unknown flag bits alone and with RSS; compare with the same call without them.

    Raises:
        KernelError: when the scratch device cannot be made.
    """
    rev = _revision(ctx)
    if rev is Revision.V12:
        return _result(
            "uapi.unknown-flags", Status.SKIP, "v12 has no flags word: the ioctl says what is on", Basis.UAPI, {}
        )
    bits = (0x04, 0x08, 0x10, 0x40, 0x80) if rev is Revision.RFC else (0x0004, 0x0008, 0x0100, 0x8000)
    cases = _Cases()
    with ctx.scratch(2) as dev, GuardedBuffer() as buf:
        for bit in bits:
            _ignored_or_refused(ctx, cases, buf, _fd(dev), _rss(rev, mask=1), _rss(rev, mask=1, extra_flags=bit))
            _ignored_or_refused(ctx, cases, buf, _fd(dev), _off(rev), _off(rev, flags=bit))
    return _judge(
        "uapi.unknown-flags",
        cases,
        f"unknown flag bits {', '.join(hex(b) for b in bits)}: {_outcome(cases)}",
        f"unknown flag bits change what the kernel reads, or fail otherwise than EINVAL: {cases.first(2)}",
        Basis.UAPI,
        {"flag_bits": [hex(b) for b in bits], "with": ["RSS", "nothing else"]},
        "ignored (RFC: 'Currently they are ignored'; no later revision added a check), or EINVAL",
    )


_UNKNOWN_TYPES = (0x40, 0x80, 0x100, 0x200, 0x10000, 0x80000000)


@rule("uapi.unknown-types", "unsupported and undefined hash type bits are ignored or refused, never misread")
def unknown_types(ctx: Context) -> RuleResult:
    """Add each unsupported (EX) or undefined type bit to the supported set; compare with the set alone.

    Raises:
        KernelError: when the scratch device cannot be made.
    """
    rev = _revision(ctx)
    cases = _Cases()
    with ctx.scratch(2) as dev, GuardedBuffer() as buf:
        for bit in _UNKNOWN_TYPES:
            types = _SUPPORTED | bit
            _ignored_or_refused(ctx, cases, buf, _fd(dev), _rss(rev, mask=1), _rss(rev, mask=1, types=types))
            _ignored_or_refused(ctx, cases, buf, _fd(dev), _report_only(rev), _report_only(rev, types=types))
    return _judge(
        "uapi.unknown-types",
        cases,
        f"type bits outside 0x3f: {_outcome(cases)}",
        f"type bits outside 0x3f change what the kernel reads, or fail otherwise than EINVAL: {cases.first(2)}",
        Basis.UAPI,
        {"added_to_0x3f": [hex(b) for b in _UNKNOWN_TYPES], "with": ["RSS", "reporting alone"]},
        "ignored (documented: user space sets only supported types; the spec: a driver must not), or EINVAL",
    )


@rule("uapi.padding", "non-zero padding bytes are ignored or refused, never misread")
def padding(ctx: Context) -> RuleResult:
    """Fill the header's padding with non-zero bytes; compare with the same call zero-padded.

    Raises:
        KernelError: when the scratch device cannot be made.
    """
    rev = _revision(ctx)
    if rev is Revision.V12:
        return _result("uapi.padding", Status.SKIP, "v12's tun_vnet_rss has no padding", Basis.UAPI, {})
    pads: tuple[bytes, ...]
    if rev is Revision.RFC:
        pads, where = (b"\xff\0\0", b"\0\xff\0", b"\0\0\xff", b"\xa5\xa5\xa5"), "3 hidden bytes at offsets 1-3"
    else:
        pads, where = (b"\xff\0", b"\0\xff", b"\xa5\xa5"), "pad[2] at offsets 2-3"
    cases = _Cases()
    with ctx.scratch(2) as dev, GuardedBuffer() as buf:
        for pad in pads:
            _ignored_or_refused(ctx, cases, buf, _fd(dev), _rss(rev, mask=1), _rss(rev, mask=1, pad=pad))
            _ignored_or_refused(ctx, cases, buf, _fd(dev), _report_only(rev), _report_only(rev, pad=pad))
    return _judge(
        "uapi.padding",
        cases,
        f"non-zero padding ({where}): {_outcome(cases)}",
        f"non-zero padding changes what the kernel reads, or fails otherwise than EINVAL: {cases.first(2)}",
        Basis.UAPI,
        {"padding": where, "values": [p.hex() for p in pads]},
        "not checked (RFC: copied, never checked; v3+: 'should be filled with zero', not enforced), or EINVAL",
    )


# -- uapi.deleted-device ------------------------------------------------------------------------


def _set_calls(rev: Revision) -> list[_Call]:
    """One call per set ioctl of ``rev``."""
    if rev is Revision.V12:
        return [_report_only(rev), _rss(rev, report=True), _rss(rev)]
    return [_rss(rev)]


@rule("uapi.deleted-device", "after the device is deleted under a held fd, the set ioctls answer EBADFD")
def deleted_device(ctx: Context) -> RuleResult:
    """Delete the scratch device over rtnetlink while its queue fd is held, then call set and get on it.

    Raises:
        KernelError: when the scratch device cannot be made or deleted.
    """
    rev = _revision(ctx)
    cases = _Cases()
    get_name = _get_name(rev)
    with ctx.scratch(2) as dev, GuardedBuffer() as buf:
        fd = _fd(dev)
        for call in _set_calls(rev):
            cases.check(f"{call.name} before the deletion", "ok", _en(_issue(ctx, buf, fd, call)))
        ctx.netns.delete_link(dev.name)
        for call in _set_calls(rev):
            # EBADFD with no byte readable: the device lookup comes before any copy.
            got = _measured(_measure(ctx, buf, fd, call))
            cases.check(f"{call.name} after the deletion", {"bytes": 0, "errno": "EBADFD"}, got)
        err = buf.call(fd, ctx.request(get_name), bytes(_get_size(rev)))[0]
        cases.check(f"{get_name} after the deletion", "EBADFD" if rev is Revision.RFC else "ok", _en(err))
    get = "EBADFD too" if rev is Revision.RFC else "still answers (it needs no device)"
    return _judge(
        "uapi.deleted-device",
        cases,
        f"once the device is gone every set answers EBADFD before reading anything; {get_name} {get}",
        cases.first(),
        Basis.UAPI,
        {"deleted_with": "rtnetlink RTM_DELLINK while the queue fd is open"},
        {
            "set": "EBADFD (documented from v5; the RFC looks the device up first)",
            "get": "EBADFD" if rev is Revision.RFC else "answers without a device",
        },
    )


# -- uapi.fault ---------------------------------------------------------------------------------


def _every_prefix_faults(cases: _Cases, case: str, copied: Measurement, issue: Callable[[int], int]) -> int:
    """Check that the call faults with each of ``0 .. count-1`` bytes accessible; the positions checked.

    ``copied`` is the measured count (the binary search of :meth:`GuardedBuffer.measure` assumed
    what this checks exhaustively); ``issue(k)`` makes the call with ``k`` bytes accessible.
    """
    if copied.count is None or copied.errno:
        cases.check(case, "a call that succeeds with its bytes accessible", _measured(copied))
        return 0
    count = copied.count
    wrong = [k for k in range(count) if issue(k) != errno.EFAULT]
    shown = f"0..{count - 1}" if not wrong else f"all but {wrong[:8]}"
    cases.check(f"{case} ({count} bytes)", {"EFAULT with": f"0..{count - 1}"}, {"EFAULT with": shown})
    return count


@rule("uapi.fault", "EFAULT for an unreadable byte anywhere in what the ioctls copy")
def fault(ctx: Context) -> RuleResult:
    """With any of the bytes a call copies inaccessible, the call must fail with ``EFAULT``.

    How many bytes each call copies is measured (``uapi.byte-counts`` judges that); here every
    shorter accessible prefix is tried, for a set call of each kind and for the get ioctl.

    Raises:
        KernelError: when the scratch device cannot be made.
    """
    rev = _revision(ctx)
    cases = _Cases()
    calls = {f"{c.name}: {c.label}": c for c in (*_set_calls(rev), _rss(rev, mask=1, report=True), _report_only(rev))}
    name, size = _get_name(rev), _get_size(rev)
    positions = 0
    with ctx.scratch(2) as dev, GuardedBuffer() as buf:
        fd = _fd(dev)
        for label, call in calls.items():
            issue = functools.partial(_issue, ctx, buf, fd, call)
            positions += _every_prefix_faults(cases, label, _measure(ctx, buf, fd, call), issue)
        written = buf.measure(fd, ctx.request(name), bytes(size + _SLACK))
        positions += _every_prefix_faults(
            cases, f"{name} (written)", written, lambda k: buf.call(fd, ctx.request(name), bytes(size), k)[0]
        )
    return _judge(
        "uapi.fault",
        cases,
        f"EFAULT at each of the {positions} inaccessible positions of {len(calls) + 1} calls",
        cases.first(),
        Basis.UAPI,
        {"calls": [*calls, name]},
        "EFAULT whenever any byte the call copies is inaccessible (every shorter accessible prefix)",
    )


# -- frames: which configuration is in force ----------------------------------------------------

_SRC, _DST = "10.77.0.1", "10.77.0.2"
_FLOWS = 16


def _wire(ctx: Context, dev: TunTapDevice) -> FrameSender:
    """Bring ``dev`` up without IPv6 (no router solicitations or MLD on its queues) and open a sender."""
    with contextlib.suppress(PytunHashError):
        # No IPv6 at all leaves nothing to silence; marked_frames drops stray frames anyway.
        ctx.netns.write_sysctl(f"net.ipv6.conf.{dev.name}.disable_ipv6", 1)
    ctx.netns.set_link_up(dev.name)
    return FrameSender(dev.name)


def _observe(dev: TunTapDevice, sender: FrameSender, marker: bytes) -> dict[int, Observed]:
    """Send :data:`_FLOWS` UDP flows (source ports 40000 + i) and read them back: flow -> what was seen."""
    for i in range(_FLOWS):
        sender.send(udp4_frame(_SRC, _DST, 40000 + i, 4789, marker + b"%04d" % i))
    return {int(o.tag[:4]): o for o in marked_frames(dev, marker, 20)}


def _flow_view(seen: dict[int, Observed]) -> dict[str, Any]:
    """Each flow's queue and ``[hash value, report]`` (None without a hash header), for the evidence."""
    view: dict[str, Any] = {}
    for flow, o in sorted(seen.items()):
        fields = o.hash_fields
        view[str(flow)] = {"queue": o.queue, "hash": None if fields is None else [hex(fields[0]), fields[1]]}
    return view


# -- uapi.atomic-commit -------------------------------------------------------------------------

_REPORT_UDPV4 = 3


@rule("uapi.atomic-commit", "a set that fails leaves the previous configuration in force")
def atomic_commit(ctx: Context) -> RuleResult:
    """Apply A, then a set B that faults at its first table byte and one that faults at its last byte.

    A: RSS and reports, types 0x3f, table {1}, unclassified 1, key A. B: types IPv4 only, table
    {2}, unclassified 2, key B. Under A a UDP flow goes to queue 1 and reports UDPv4 (3); any part
    of B in force moves it to queue 2, makes it report IPv4 (1), or changes its hash value.

    Raises:
        KernelError: when the scratch device cannot be made or wired.
        OSError: when frames cannot be sent.
    """
    rev = _revision(ctx)
    if not ctx.data_path:
        return _result(
            "uapi.atomic-commit",
            Status.SKIP,
            "no data path: frames are the only witness of what is in force, and the kernel cannot be asked",
            Basis.UAPI,
            {},
        )
    a = _rss(rev, entries=[1], unclassified=1, key=_KEY_A, report=True)
    b = _rss(rev, types=0x01, entries=[2], unclassified=2, key=_KEY_B, report=True)
    cases = _Cases()
    inputs: dict[str, Any] = {"A": f"{a.label}, table {{1}}, unclassified 1", "flows": _FLOWS}
    inputs["B"] = f"{b.label}, table {{2}}, unclassified 2"
    with ctx.scratch(4) as dev, _wire(ctx, dev) as sender, GuardedBuffer() as buf:
        fd = _fd(dev)
        # Where B's last byte is: measured (a successful set of B), then A applied again.
        size = _measure(ctx, buf, fd, b)
        err = _issue(ctx, buf, fd, a)
        if err or size.errno or size.count is None:
            inputs["B read"] = _measured(size)
            summary = f"the sets could not be made to succeed: A {_en(err)}, B {_measured(size)}"
            return _result("uapi.atomic-commit", Status.DEVIATION, summary, Basis.UAPI, {"inputs": inputs})
        before = _observe(dev, sender, b"pytun-hash-atomic-A")
        inputs["under A"] = _flow_view(before)
        seen_a = len(before) == _FLOWS and all(
            o.queue == 1 and o.hash_fields is not None and o.hash_fields[1] == _REPORT_UDPV4 for o in before.values()
        )
        if not seen_a:
            summary = "A is not visible on the data path (frames not on queue 1 with report UDPv4): nothing to judge"
            return _result("uapi.atomic-commit", Status.SKIP, summary, Basis.UAPI, {"inputs": inputs})
        faults = {"the first table byte": _rss_header(rev), f"the last byte read ({size.count - 1})": size.count - 1}
        inputs["fault at"] = faults
        for where, accessible in faults.items():
            cases.check(f"B with {where} unreadable", "EFAULT", _en(_issue(ctx, buf, fd, b, accessible)))
            after = _flow_view(_observe(dev, sender, b"pytun-hash-atomic-%d" % accessible))
            changed = {flow: seen for flow, seen in after.items() if seen != inputs["under A"].get(flow)}
            observed = (
                "as under A" if len(after) == _FLOWS and not changed else {"read": len(after), "changed": changed}
            )
            cases.check(f"flows after B failed at {where}", "as under A", observed)
    return _judge(
        "uapi.atomic-commit",
        cases,
        f"sets failing at their first table byte and at their last byte leave A in force ({_FLOWS} flows unchanged)",
        f"a failed set changed what is in force: {cases.first(2)}",
        Basis.UAPI,
        inputs,
        "EFAULT, and every flow keeps the queue, report and hash value it had under A",
    )


# -- uapi.exclusion -----------------------------------------------------------------------------

_PROGRAM_QUEUE, _RSS_QUEUE = 3, 1
_WHO = {"rss": "RSS", "program": "the program", "automq": "the kernel's automatic spread"}
_PROGRAM_FIRST, _RSS_FIRST = "program then RSS", "RSS then program"


def _expected_exclusion(rev: Revision) -> dict[str, dict[str, str]]:
    if rev.steering_precedence:
        # v10+: no EBUSY; the program steers while attached, RSS takes over again once it is detached.
        return {
            _PROGRAM_FIRST: {"attach": "ok", "rss": "ok", "in force": "program", "detach": "ok", "after": "rss"},
            _RSS_FIRST: {"rss": "ok", "attach": "ok", "in force": "program", "detach": "ok", "after": "rss"},
        }
    # The RFC (as its review asked and its author agreed) and v3-v9: the second call fails with EBUSY.
    return {
        _PROGRAM_FIRST: {"attach": "ok", "rss": "EBUSY", "in force": "program", "detach": "ok", "after": "automq"},
        _RSS_FIRST: {"rss": "ok", "attach": "EBUSY", "in force": "rss", "detach": "ok", "after": "rss"},
    }


def _steered_by(seen: dict[int, Observed]) -> str:
    """``program`` (every flow on its queue), ``rss`` (every flow on the table's), else ``automq``."""
    if len(seen) < _FLOWS:
        return f"lost frames ({len(seen)} of {_FLOWS} read)"
    queues = {o.queue for o in seen.values()}
    if queues == {_PROGRAM_QUEUE}:
        return "program"
    if queues == {_RSS_QUEUE}:
        return "rss"
    # 16 flows spread by the kernel's own flow hash all land on one queue once in 4^15.
    return "automq"


def _exclusion_order(ctx: Context, rev: Revision, order: str, program: Program) -> tuple[dict[str, str], str]:
    """Run one order on a fresh device: the steps' answers and who steered; and who steered under RSS alone."""
    rss = _rss(rev, entries=[_RSS_QUEUE], unclassified=_RSS_QUEUE)
    steering = ctx.request("TUNSETSTEERINGEBPF")
    got: dict[str, str] = {}
    alone = "not looked at"
    with ctx.scratch(4) as dev, _wire(ctx, dev) as sender, GuardedBuffer() as buf:
        fd = _fd(dev)
        marker = b"pytun-hash-exclusion-" + order.split(maxsplit=1)[0].encode()
        if order == _PROGRAM_FIRST:
            got["attach"] = _en(ioctl_int(fd, steering, program.fd))
            got["rss"] = _en(_issue(ctx, buf, fd, rss))
        else:
            got["rss"] = _en(_issue(ctx, buf, fd, rss))
            alone = _steered_by(_observe(dev, sender, marker + b"-alone-"))
            got["attach"] = _en(ioctl_int(fd, steering, program.fd))
        got["in force"] = _steered_by(_observe(dev, sender, marker + b"-both-"))
        got["detach"] = _en(ioctl_int(fd, steering, -1))
        got["after"] = _steered_by(_observe(dev, sender, marker + b"-after-"))
    return got, alone


@rule("uapi.exclusion", "RSS and an attached steering program, in both orders, as the revision's contract says")
def exclusion(ctx: Context) -> RuleResult:
    """Attach a steering program then enable RSS, and the reverse, each on a fresh device; see who steers.

    The program sends every frame to queue 3, RSS (table {1}) to queue 1; neither leaves the kernel's
    automatic spread. Judged against ``EBUSY`` both ways for the RFC (what its review asked and its
    author agreed to) and v3-v9, and against precedence of the program from v10.

    Raises:
        KernelError: when a scratch device cannot be made or wired.
        OSError: when frames cannot be sent.
    """
    rev = _revision(ctx)
    basis = Basis.CHOICE if rev is Revision.RFC else Basis.UAPI
    try:
        program = Program.load(Assembler().mov64_imm(Reg.R0, _PROGRAM_QUEUE).exit().assemble())
    except PytunHashError as exc:
        return _result("uapi.exclusion", Status.SKIP, f"no steering program can be loaded: {exc}", basis, {})
    expected = _expected_exclusion(rev)
    with program:
        first, _ = _exclusion_order(ctx, rev, _PROGRAM_FIRST, program)
        second, alone = _exclusion_order(ctx, rev, _RSS_FIRST, program)
    observed = {_PROGRAM_FIRST: first, _RSS_FIRST: second}
    # Who steers is judged only where RSS alone was seen steering (the data path works).
    frames = ctx.data_path and alone == "rss"
    cases = _Cases()
    for order, steps in expected.items():
        for step, want in steps.items():
            if step in ("in force", "after") and not frames:
                cases.note(f"{order}: {step}", observed[order][step], meaning="not judged: RSS alone not seen")
            else:
                cases.check(f"{order}: {step}", want, observed[order][step])
    if rev.steering_precedence:
        ok = "both calls succeed in either order; the program steers, RSS again once it is detached"
    else:
        ok = "EBUSY in both orders: neither call disables the other; detaching always works"
    bad = cases.first()
    if first["rss"] == "ok" and second["attach"] == "ok" and not rev.steering_precedence:
        bad = (
            f"silent trade instead of EBUSY: enabling RSS under a program returned ok and "
            f"{_WHO.get(first['in force'], first['in force'])} steered; attaching a program under RSS returned "
            f"ok and {_WHO.get(second['in force'], second['in force'])} steered "
            f"({_WHO.get(second['after'], second['after'])} after its detach)"
        )
    contract = {
        Revision.RFC: "EBUSY both ways (the RFC review: Willem asked, Akihiko agreed); the RFC's code trades",
        Revision.V3: "EBUSY both ways (v3-v9); detaching (-1) always allowed",
        Revision.V10: "the steering program takes precedence (v10+); RSS stays configured underneath",
        Revision.V12: "the steering program takes precedence (v10+); RSS stays configured underneath",
    }[rev]
    inputs = {
        "program": f"r0 = {_PROGRAM_QUEUE}",
        "rss": f"table {{{_RSS_QUEUE}}}",
        "flows": _FLOWS,
        "rss alone": alone,
    }
    evidence = cases.evidence(inputs, {"contract": contract, "steps": expected})
    evidence["steps"] = observed
    return _result(
        "uapi.exclusion",
        Status.DEVIATION if cases.departures else Status.PASS,
        bad if cases.departures else ok,
        basis,
        evidence,
    )
