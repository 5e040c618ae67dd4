"""Per-device records: format and strict decoding, the atomic root-only store, the per-device lock
across threads and processes, and staleness (with a real TAP in a private namespace)."""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from pytun_hash._abi.revision import Revision
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.device.record import (
    RECORD_VERSION,
    Checked,
    DeviceId,
    DeviceIntent,
    EbpfPins,
    Owner,
    Record,
    RecordFormatError,
    RecordStore,
    StaleReason,
    UnsafeRecordError,
    decode_intent,
    decode_record,
    encode_intent,
    encode_record,
    link_index,
    staleness,
)
from pytun_hash.errors import BusyError, DecodeError, PrivilegeError, ValidationError

ROOT = Path(__file__).resolve().parents[2]
DEV = DeviceId(4026531840, 7, "vm0")
CONFIG = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, report=True)


def _native(device: DeviceId = DEV, **changes: Any) -> Record:
    record = Record(
        device=device,
        backend="native",
        revision=Revision.V12,
        config=CONFIG,
        owner=Owner(1234, 0, ("pytun-hash", "apply", "--dev", device.name), "test"),
        applied_at="2026-12-03T17:44:00.123456+00:00",
    )
    return attrs.evolve(record, **changes)


def _ebpf(device: DeviceId = DEV, program: str | None = None) -> Record:
    base = f"/sys/fs/bpf/pytun_hash/{device.netns}/{device.ifindex}"
    pins = EbpfPins(base, program or f"{base}/prog", {"config": f"{base}/config"}, 42)
    return attrs.evolve(_native(device), backend="ebpf", revision=None, ebpf=pins)


@pytest.fixture
def store(tmp_path: Path) -> RecordStore:
    return RecordStore(str(tmp_path / "records"), owner_uid=os.geteuid())


# ----------------------------------------------------------------------------- format


def _ebpf_unpinned() -> Record:
    """An eBPF record with nothing pinned: report-only (no program), or no bpffs to pin in."""
    return attrs.evolve(_ebpf(), ebpf=None)


def test_an_unpinned_ebpf_record_is_never_stale_for_its_pins() -> None:
    assert staleness(_ebpf_unpinned(), link_index_now=DEV.ifindex, pinned_exists=lambda _: False) is None


@pytest.mark.parametrize("make", [_native, _ebpf, _ebpf_unpinned], ids=["native", "ebpf", "ebpf-unpinned"])
def test_encode_decode_round_trip(make: Callable[[], Record]) -> None:
    record = make()
    text = encode_record(record)
    doc = json.loads(text)
    assert doc["version"] == RECORD_VERSION == 1
    assert doc["config"]["key"] == MICROSOFT_RSS_KEY.hex()  # the key is kept: the record is root-only
    assert doc["device"] == {"netns": 4026531840, "ifindex": 7, "name": "vm0"}
    assert decode_record(text) == record
    assert decode_record(text.encode()) == record


def test_owner_current_and_defaults() -> None:
    me = Owner.current("vmm vm0")
    assert (me.pid, me.uid, me.name) == (os.getpid(), os.geteuid(), "vmm vm0")
    assert me.command and all(isinstance(a, str) for a in me.command)
    record = Record(device=DEV, backend="native", revision=Revision.RFC, config=CONFIG, owner=me)
    assert record.applied_at.endswith("+00:00") and decode_record(encode_record(record)) == record
    assert _ebpf().ebpf is not None and _ebpf().ebpf.map_path("config").endswith("/7/config")  # type: ignore[union-attr]
    with pytest.raises(ValidationError, match="no map named"):
        _ebpf().ebpf.map_path("other")  # type: ignore[union-attr]


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        here = doc
        for part in parents:
            here = here[part]
        here[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        here = doc
        for part in parents:
            here = here[part]
        del here[last]

    return change


BROKEN: list[tuple[str, Callable[[dict[str, Any]], None], str | None]] = [
    ("missing owner", _drop("owner"), "owner"),
    ("unknown field", _set("extra", 1), "extra"),
    ("version 2", _set("version", 2), "version"),
    ("version true", _set("version", True), "version"),
    ("version 1.0", _set("version", 1.0), "version"),
    ("ifindex text", _set("device.ifindex", "7"), "device.ifindex"),
    ("ifindex 0", _set("device.ifindex", 0), "device.ifindex"),
    ("netns negative", _set("device.netns", -1), "device.netns"),
    ("name with slash", _set("device.name", "a/b"), "device.name"),
    ("name template", _set("device.name", "tap%d"), "device.name"),
    ("name too long", _set("device.name", "x" * 16), "device.name"),
    ("device extra", _set("device.mac", "x"), "device.mac"),
    ("device missing", _drop("device.name"), "device.name"),
    ("backend", _set("backend", "xdp"), "backend"),
    ("revision unknown", _set("revision", "v99"), "revision"),
    ("native without revision", _set("revision", None), "revision"),
    ("native with pins", _set("ebpf", {"pin_dir": "/a", "program": "/a/p", "maps": {}, "program_id": 1}), "ebpf"),
    ("config key", _set("config.key", "zz"), "config.key"),
    ("config unknown", _set("config.colour", 1), "config.colour"),
    ("config not an object", _set("config", [1]), "config"),
    ("command text", _set("owner.command", "pytun-hash apply"), "owner.command"),
    ("command item", _set("owner.command", ["a", 1]), "owner.command[1]"),
    ("pid", _set("owner.pid", 0), "owner.pid"),
    ("uid", _set("owner.uid", -1), "owner.uid"),
    ("owner name", _set("owner.name", 5), "owner.name"),
    ("time", _set("applied_at", "yesterday"), "applied_at"),
    ("time not UTC", _set("applied_at", "2026-12-03T17:44:00+02:00"), "applied_at"),
    ("time naive", _set("applied_at", "2026-12-03T17:44:00"), "applied_at"),
]

BROKEN_EBPF: list[tuple[str, Callable[[dict[str, Any]], None], str | None]] = [
    ("ebpf with revision", _set("revision", "v12"), "revision"),
    ("program id", _set("ebpf.program_id", 0), "ebpf.program_id"),
    ("relative map path", _set("ebpf.maps", {"config": "config"}), "ebpf.maps.config"),
    ("dotdot program path", _set("ebpf.program", "/sys/fs/bpf/../etc/x"), "ebpf.program"),
    ("maps list", _set("ebpf.maps", ["/a"]), "ebpf.maps"),
    ("ebpf unknown", _set("ebpf.links", {}), "ebpf.links"),
]


@pytest.mark.parametrize(("what", "change", "field"), BROKEN, ids=[b[0] for b in BROKEN])
def test_decode_names_the_broken_field(what: str, change: Callable[[dict[str, Any]], None], field: str) -> None:
    doc = json.loads(encode_record(_native()))
    change(doc)
    with pytest.raises(RecordFormatError) as exc:
        decode_record(json.dumps(doc), path="/x.json")
    assert exc.value.field == field, what
    assert isinstance(exc.value, DecodeError) and "/x.json" in str(exc.value)


@pytest.mark.parametrize(("what", "change", "field"), BROKEN_EBPF, ids=[b[0] for b in BROKEN_EBPF])
def test_decode_names_the_broken_ebpf_field(what: str, change: Callable[[dict[str, Any]], None], field: str) -> None:
    doc = json.loads(encode_record(_ebpf()))
    change(doc)
    with pytest.raises(RecordFormatError) as exc:
        decode_record(json.dumps(doc))
    assert exc.value.field == field, what


@pytest.mark.parametrize(
    "text",
    ["", "not json", "[1]", "null", '{"version": 1, "version": 1}', "[" * 100_000, b"x" * 70_000],
    ids=["empty", "garbage", "list", "null", "duplicate", "deep", "huge"],
)
def test_decode_refuses_what_is_no_record(text: str | bytes) -> None:
    with pytest.raises(RecordFormatError) as exc:
        decode_record(text)
    assert exc.value.field is None


def test_records_validate_on_construction() -> None:
    with pytest.raises(ValidationError):
        DeviceId(1, 1, "a b")
    with pytest.raises(ValidationError):
        Owner(1, 0, "one string")
    with pytest.raises(ValidationError):
        _native(backend="xdp")
    with pytest.raises(ValidationError):
        _native(version=2)
    with pytest.raises(ValidationError):
        _native(config=CONFIG.to_mapping())


# ----------------------------------------------------------------------------- the store


def _mode(path: str) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_write_read_remove(store: RecordStore) -> None:
    assert store.read(DEV) is None  # no store directory yet
    assert store.devices() == []
    record = _native()
    with store.lock(DEV):
        path = store.write(record)
        assert path == f"{store.root}/4026531840/7-vm0.json" == store.path(DEV)
        assert store.read(DEV) == record
    assert _mode(store.root) == _mode(os.path.dirname(path)) == 0o700
    assert _mode(path) == 0o600
    assert os.path.exists(store.lock_path(DEV))  # kept while the record exists
    assert sorted(os.listdir(os.path.dirname(path))) == ["7-vm0.json", "7-vm0.lock"]  # no temporary left
    other = DeviceId(99, 3, "tap-x.1")
    with store.lock(other):
        store.write(_ebpf(other))
    assert store.devices() == [other, DEV] and store.devices(DEV.netns) == [DEV]
    with store.lock(DEV):
        newer = attrs.evolve(record, config=CONFIG.replace(unclassified_queue=3))
        store.write(newer)
        assert store.read(DEV) == newer
        assert store.remove(DEV) is True
        assert store.remove(DEV) is False
        assert store.read(DEV) is None
    assert not os.path.exists(store.lock_path(DEV))  # no record, no lock file


def test_write_and_remove_need_the_lock(store: RecordStore) -> None:
    with pytest.raises(ValidationError, match="lock"):
        store.write(_native())
    with store.lock(DEV):
        store.write(_native())
    with pytest.raises(ValidationError, match="lock"):
        store.remove(DEV)
    with store.lock(DEV), pytest.raises(ValidationError, match="re-entrant"), store.lock(DEV):
        pass
    with pytest.raises(ValidationError):
        RecordStore("relative/path")


def test_unsafe_files_are_refused_with_the_reason(store: RecordStore, tmp_path: Path) -> None:
    with store.lock(DEV):
        path = store.write(_native())
    os.chmod(path, 0o640)
    with pytest.raises(UnsafeRecordError) as exc:
        store.read(DEV)
    assert "0640" in str(exc.value) and "root-only" in exc.value.hint
    os.chmod(path, 0o600)
    stranger = RecordStore(store.root, owner_uid=os.geteuid() + 1)
    with pytest.raises(UnsafeRecordError, match="owned by uid"):
        stranger.read(DEV)
    # A symlink in place of the record.
    os.rename(path, str(tmp_path / "elsewhere.json"))
    os.symlink(str(tmp_path / "elsewhere.json"), path)
    with pytest.raises(UnsafeRecordError, match="symlink"):
        store.read(DEV)
    with store.lock(DEV), pytest.raises(UnsafeRecordError, match="symlink"):
        store.write(_native())
    os.unlink(path)
    # A directory open to others, and a symlinked namespace directory.
    os.chmod(store.root, 0o755)
    with pytest.raises(UnsafeRecordError, match="0755"):
        store.read(DEV)
    os.chmod(store.root, 0o700)
    real = tmp_path / "ns"
    real.mkdir(mode=0o700)
    os.symlink(str(real), store.directory(55))
    with pytest.raises(UnsafeRecordError, match="symlink"):
        store.read(DeviceId(55, 1, "x"))


def test_a_record_in_the_wrong_place_is_refused(store: RecordStore) -> None:
    with store.lock(DEV):
        path = store.write(_native())
    moved = DeviceId(DEV.netns, 8, "vm0")
    os.link(path, store.path(moved))
    with pytest.raises(RecordFormatError) as exc:
        store.read(moved)
    assert exc.value.field == "device"
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(RecordFormatError):
        store.read(DEV)


def _refused_without_root() -> bool:
    try:
        with RecordStore().lock(DEV):
            return False
    except PrivilegeError as exc:
        return "root" in str(exc)


def test_the_default_store_is_root_only() -> None:
    if os.geteuid() != 0:
        assert _refused_without_root()
        return
    # As root: ask from a child that dropped to nobody (no root-owned state is touched by the refusal).
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 2
        try:
            try:
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
            except PermissionError:
                code = 3
            else:
                code = 0 if _refused_without_root() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code == 3:
        pytest.skip("uid 0 without CAP_SETUID cannot drop to nobody to be refused")
    assert code == 0


# ----------------------------------------------------------------------------- the lock


def test_lock_serialises_threads(store: RecordStore) -> None:
    with store.lock(DEV):
        store.write(_native(config=CONFIG.replace(unclassified_queue=0)))

    def bump() -> None:
        for _ in range(25):
            with store.lock(DEV, timeout=30):
                record = store.read(DEV)
                assert record is not None
                count = record.config.unclassified_queue
                time.sleep(0)
                store.write(attrs.evolve(record, config=record.config.replace(unclassified_queue=count + 1)))

    workers = [threading.Thread(target=bump) for _ in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    final = store.read(DEV)
    assert final is not None and final.config.unclassified_queue == 100


def test_lock_timeout_is_busy(store: RecordStore) -> None:
    outcome: list[BaseException | None] = []

    def contend(timeout: float) -> None:
        try:
            with store.lock(DEV, timeout=timeout):
                outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with store.lock(DEV):
        started = time.monotonic()
        worker = threading.Thread(target=contend, args=(0.1,))
        worker.start()
        worker.join()
        assert time.monotonic() - started >= 0.1
        worker = threading.Thread(target=contend, args=(0,))
        worker.start()
        worker.join()
    assert all(isinstance(o, BusyError) and "holds the lock" in str(o) for o in outcome)
    contend(0)  # free again
    assert outcome[-1] is None
    with pytest.raises(ValidationError), store.lock(DEV, timeout=-1):
        pass


def _increment(store: RecordStore, device: DeviceId, rounds: int) -> None:
    for _ in range(rounds):
        with store.lock(device, timeout=60):
            record = store.read(device)
            assert record is not None
            count = record.config.unclassified_queue
            time.sleep(0.001)  # a wide window for a lost update, were the lock not held
            store.write(attrs.evolve(record, config=record.config.replace(unclassified_queue=count + 1)))


def _fork_racer(store: RecordStore, go: int, rounds: int) -> int:
    """A child process that waits for a byte on ``go``, then increments; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the child: never back into pytest
        if os.read(go, 1) == b"g":
            _increment(store, DEV, rounds)
            code = 0
    finally:
        os._exit(code)


def test_lock_serialises_processes(store: RecordStore) -> None:
    """20 pairs of processes race read-modify-write increments of one record under the lock."""
    pairs, rounds = 20, 5
    with store.lock(DEV):
        store.write(_native(config=CONFIG.replace(unclassified_queue=0)))
    for pair in range(pairs):
        go, start = os.pipe()
        try:
            pids = [_fork_racer(store, go, rounds) for _ in range(2)]
            os.write(start, b"gg")  # both at once
        finally:
            os.close(go)
            os.close(start)
        for pid in pids:
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0, f"pair {pair}"
    final = store.read(DEV)
    assert final is not None and final.config.unclassified_queue == pairs * 2 * rounds


def test_lock_serialises_exec_ed_processes(store: RecordStore) -> None:
    """The same across two freshly started interpreters (no state shared through fork)."""
    with store.lock(DEV):
        store.write(_native(config=CONFIG.replace(unclassified_queue=0)))
    code = textwrap.dedent(
        f"""
        import os, sys
        from tests.device.test_record import DEV, RecordStore, _increment
        sys.stdin.read(1)
        _increment(RecordStore({store.root!r}, owner_uid=os.geteuid()), DEV, 20)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, cwd=ROOT) for _ in range(2)]
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(b"g")
        p.stdin.close()
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    final = store.read(DEV)
    assert final is not None and final.config.unclassified_queue == 40


# ----------------------------------------------------------------------------- staleness


def test_staleness_reasons() -> None:
    native, ebpf = _native(), _ebpf()
    assert staleness(native, link_index_now=7) is None
    gone = staleness(native, link_index_now=None)
    assert gone is not None and gone.reason is StaleReason.DEVICE_GONE and gone.record == native
    again = staleness(native, link_index_now=9)
    assert again is not None and again.reason is StaleReason.DEVICE_RECREATED and "ifindex 9" in again.detail
    assert "device-recreated" in str(again)
    assert staleness(ebpf, link_index_now=7, pinned_exists=lambda p: True) is None
    unpinned = staleness(ebpf, link_index_now=7, pinned_exists=lambda p: False)
    assert unpinned is not None and unpinned.reason is StaleReason.PROGRAM_UNPINNED
    assert staleness(native, link_index_now=7, pinned_exists=lambda p: False) is None  # native pins nothing


def test_check_removes_a_stale_record(store: RecordStore, tmp_path: Path) -> None:
    prog = tmp_path / "prog"
    prog.write_bytes(b"")
    record = _ebpf(program=str(prog))
    with store.lock(DEV):
        store.write(record)
        assert store.read_checked(DEV, link_index_now=7) == Checked(record=record)
        prog.unlink()
        checked = store.read_checked(DEV, link_index_now=7)
        assert checked.record is None and checked.stale is not None
        assert checked.stale.reason is StaleReason.PROGRAM_UNPINNED
        assert store.read(DEV) is None  # removed, never trusted
        assert store.read_checked(DEV, link_index_now=7) == Checked()


@pytest.mark.kernel
def test_a_recreated_device_makes_its_record_stale(netns: NetworkNamespace, tmp_path: Path) -> None:
    store = RecordStore(str(tmp_path / "records"), owner_uid=os.geteuid())
    with TunTapDevice.create("rec0", queues=2) as tap:
        device = DeviceId.of_link("rec0")
        assert device == DeviceId(netns.inode, tap.ifindex, "rec0")
        with store.lock(device):
            store.write(_native(device))
            assert store.read_checked(device, link_index_now=link_index("rec0")).record is not None
    # Deleted (closing a non-persistent device deletes it), then created again with the same name.
    assert link_index("rec0") is None
    with TunTapDevice.create("rec0", queues=2) as again:
        assert again.ifindex != device.ifindex
        with store.lock(device):
            checked = store.read_checked(device, link_index_now=link_index("rec0"))
        assert checked.stale is not None and checked.stale.reason is StaleReason.DEVICE_RECREATED
        assert store.read(device) is None and store.devices() == []
        # The new device's record, then the device gone: stale as gone.
        fresh = DeviceId.of_link("rec0")
        with store.lock(fresh):
            store.write(_native(fresh))
    with store.lock(fresh):
        checked = store.read_checked(fresh, link_index_now=link_index("rec0"))
    assert checked.stale is not None and checked.stale.reason is StaleReason.DEVICE_GONE
    assert os.listdir(store.directory(fresh.netns)) == []


def test_decoded_copies_are_independent() -> None:
    doc = json.loads(encode_record(_ebpf()))
    clone = copy.deepcopy(doc)
    clone["ebpf"]["maps"]["extra"] = "/sys/fs/bpf/x"
    assert decode_record(json.dumps(doc)) != decode_record(json.dumps(clone))


def test_a_killed_writers_temporary_file_is_removed_by_the_next_writer(store: RecordStore) -> None:
    """A writer killed between creating its temporary file and the rename leaves it behind; the next
    holder of the lock (no live writer can own it then) removes it on write and on remove."""
    directory = store.directory(DEV.netns)
    for action in ("write", "remove"):
        with store.lock(DEV):
            store.write(_native())
        dead = os.path.join(directory, ".7-vm0.json.12345.678.deadbeef.tmp")
        with open(dead, "w") as f:
            f.write("{")
        other = os.path.join(directory, ".8-vm1.json.1.2.aa.tmp")  # another device's: not ours to judge
        with open(other, "w") as f:
            f.write("{")
        with store.lock(DEV):
            if action == "write":
                store.write(_native())
            else:
                store.remove(DEV)
        assert not os.path.exists(dead) and os.path.exists(other)
        os.unlink(other)
    assert not any(e.endswith(".tmp") for e in os.listdir(directory))


# ----------------------------------------------------------------------------- intents


def _intent(device: DeviceId = DEV, queues: int = 4) -> DeviceIntent:
    owner = Owner(1234, 0, ("pytun-hash", "create", device.name))
    return DeviceIntent(device, queues, owner, created_at="2026-12-03T21:00:00.000000+00:00")


def test_intent_round_trip_and_rules() -> None:
    intent = _intent()
    assert decode_intent(encode_intent(intent)) == intent
    for queues in (0, 257, True):
        with pytest.raises(ValidationError, match="queues"):
            _intent(queues=queues)
    doc = json.loads(encode_intent(intent))
    for change, field in (({"queues": "4"}, "queues"), ({"extra": 1}, "extra"), ({"version": 2}, "version")):
        with pytest.raises(RecordFormatError) as caught:
            decode_intent(json.dumps({**doc, **change}))
        assert caught.value.field == field


def test_intent_store_keeps_the_lock_file_while_either_file_exists(store: RecordStore) -> None:
    assert store.read_intent(DEV) is None
    with store.lock(DEV):
        path = store.write_intent(_intent())
        assert path == store.intent_path(DEV) and store.read_intent(DEV) == _intent()
    assert _mode(path) == 0o600 and os.path.exists(store.lock_path(DEV))
    assert store.devices() == [DEV]  # a device with only an intent is listed
    with store.lock(DEV):
        store.write(_native())
        assert store.remove_intent(DEV) is True and store.remove_intent(DEV) is False
    assert os.path.exists(store.lock_path(DEV))  # the record is left
    with store.lock(DEV):
        store.remove(DEV)
    assert not os.path.exists(store.lock_path(DEV))


def test_a_stale_intent_is_removed_when_read_checked(store: RecordStore) -> None:
    with store.lock(DEV):
        store.write_intent(_intent())
        assert store.read_intent_checked(DEV, link_index_now=DEV.ifindex) == _intent()
        assert store.read_intent_checked(DEV, link_index_now=DEV.ifindex + 1) is None  # re-created
    assert store.read_intent(DEV) is None


def test_intent_writes_need_the_lock(store: RecordStore) -> None:
    with pytest.raises(ValidationError, match="lock"):
        store.write_intent(_intent())
