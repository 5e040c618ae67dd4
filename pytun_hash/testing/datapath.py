"""The emulated kernel's data path: which queue a frame takes and what its hash header says.

For every device whose hash state the emulator changed, :class:`DeviceDataPath` makes the real
device behave, for frames read through the emulator, as the emulated revision's kernel would:

* **Queue choice.** While the emulated state has RSS on and no steering program of the code
  under test takes precedence, the real device is steered by pytun_hash's RSS program
  (:mod:`pytun_hash.bpf.rss_program`) loaded with the emulated table, key, types and
  unclassified queue, under the revision's rules (:func:`pytun_hash.model.semantics_for`: the
  RFC's queue rule and byte order, the specification from v3 on). It is attached and detached
  behind the code under test, following the emulated exclusion rules: the RFC drops one for the
  other, v3-v9 refuse with ``EBUSY`` (so the two never meet), v10 and later let the code's
  program take precedence and put RSS back when it is detached.
* **When a frame was hashed.** A kernel with the series decides at transmit time whether and how
  a frame is hashed (RFC: a mark in the skb; v3+: an skb extension), and reads the decision back
  when the frame is read. The emulator learns the transmit time through a recorder: a
  socket-filter program attached with ``TUNSETFILTEREBPF`` that keeps every frame whole and
  pushes ``{length, queue, first 96 bytes}`` into a queue map. Before every change of the
  emulated state the records are collected and tagged with the state in force until then, so a
  frame read later is reported with the state it was hashed under (RFC: "queued while flags were
  0 and read after REPORT was set -> not marked"). A frame without a record (it was queued
  before the recorder, or the code under test replaced the recorder with its own filter) is
  taken as hashed under the state in force when it is read.
* **The header.** :meth:`DeviceDataPath.header_writes` turns what the real kernel wrote into
  what the revision writes, as a list of byte ranges: RFC, a 20-byte ``virtio_net_hdr_v1_hash``
  (num_buffers 0) when REPORT is set at read time, ``vnet_hdr_sz >= 20`` and the frame was
  marked, else the 10-byte header; the bytes up to ``vnet_hdr_sz`` are skipped, not written
  (the caller's buffer keeps them). v3-v9 (as v6-v9): ``min(20, sz)`` bytes with num_buffers 1,
  hash fields when the frame carries a hash, zeros to ``sz``. v10+: the same with num_buffers 0.

Limits, documented where they bite: the number of queues (the RFC and later hash only with at
least 2) is sampled when records are collected, not per frame; in report-only mode v3+ report
``skb->hash`` for frames with an L4 hash and the queue index otherwise, and the emulator always
reports the queue index (the model calls the other case unpredictable anyway); a steering
program that returns ``TUN_STEERINGEBPF_FALLBACK`` is not chained to the emulated RSS (the real
kernel then truncates -1 to a queue number); tables longer than 128 entries are not steered.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import struct
import sys
import threading
from collections.abc import Callable

import attrs

from pytun_hash._abi import TUN_IOCTLS, TunFlag, layout_for
from pytun_hash._abi.revision import Revision
from pytun_hash._abi.virtio_net import VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_V1_HASH_SIZE, HashReport, HashType
from pytun_hash.bpf.insn import (
    BPF_DW,
    BPF_JLE,
    BPF_JLT,
    BPF_W,
    Assembler,
    Helper,
    Insn,
    Reg,
)
from pytun_hash.bpf.maps import ArrayMap, MappedArray, QueueMap
from pytun_hash.bpf.prog import Program
from pytun_hash.bpf.rss import EbpfRss
from pytun_hash.config import MAX_INDIRECTION_TABLE_LENGTH, VnetHashConfig
from pytun_hash.device.tap import DeviceMode
from pytun_hash.model.classify import FlowHash, Semantics, classify
from pytun_hash.model.packet import Framing
from pytun_hash.model.semantics import semantics_for
from pytun_hash.model.vnet import hash_tail
from pytun_hash.testing.kernel import EmulatedHashState, KernelErrno

__all__ = ["HEAD_BYTES", "DeviceDataPath", "HashContext", "generate_recorder"]

#: Bytes of each frame the recorder keeps to match the frame when it is read.
HEAD_BYTES = 96
_RECORD = struct.Struct(f"=II{HEAD_BYTES}s")
_RECORD_SLOTS = 4096
_PENDING_LIMIT = 16384
_SUPPORTED = int(HashType.supported_by_kernel_series())
_TUN = {d.name: d.request(layout_for()) for d in TUN_IOCTLS}
_E = "<" if sys.byteorder == "little" else ">"
# offsetof(struct __sk_buff, len / queue_mapping)
_SKB_LEN = 0
_SKB_QUEUE_MAPPING = 12
_BPF_EXIST = 2
_REC = -8 - ((_RECORD.size + 7) & ~7)


def generate_recorder(queue_map_fd: int, counter_map_fd: int) -> list[Insn]:
    """The recorder: push ``{skb->len, skb->queue_mapping, first HEAD_BYTES bytes}`` and keep the frame.

    Attached with ``TUNSETFILTEREBPF``, it runs in tun's transmit path after the queue was chosen;
    it returns ``skb->len`` so nothing is trimmed. A full queue map drops its oldest record. After
    each push it adds 1 to the 64-bit counter at value 0 of the (mmap-able) array map
    ``counter_map_fd``, so the emulator sees that nothing was pushed without a ``bpf(2)`` call.
    """
    a = Assembler()
    a.mov64_reg(Reg.R6, Reg.R1)
    for off in range(0, _RECORD.size + 7 & ~7, 8):
        a.st_mem(BPF_DW, Reg.FP, _REC + off, 0)
    a.ldx_mem(BPF_W, Reg.R4, Reg.R6, _SKB_LEN)
    a.stx_mem(BPF_W, Reg.FP, Reg.R4, _REC)
    a.ldx_mem(BPF_W, Reg.R1, Reg.R6, _SKB_QUEUE_MAPPING)
    a.stx_mem(BPF_W, Reg.FP, Reg.R1, _REC + 4)
    a.jmp_imm(BPF_JLE, Reg.R4, HEAD_BYTES, "short")
    a.mov64_imm(Reg.R4, HEAD_BYTES)
    a.label("short")
    a.jmp_imm(BPF_JLT, Reg.R4, 1, "push")
    a.mov64_reg(Reg.R1, Reg.R6)
    a.mov64_imm(Reg.R2, 0)
    a.mov64_reg(Reg.R3, Reg.FP).alu64_imm(0x00, Reg.R3, _REC + 8)
    a.call(Helper.skb_load_bytes)
    a.label("push")
    a.ld_map_fd(Reg.R1, queue_map_fd)
    a.mov64_reg(Reg.R2, Reg.FP).alu64_imm(0x00, Reg.R2, _REC)
    a.mov64_imm(Reg.R3, _BPF_EXIST)
    a.call(Helper.map_push_elem)
    # Counted after the push: a reader that sees the count finds the record in the queue.
    a.ld_map_value(Reg.R1, counter_map_fd, 0)
    a.mov64_imm(Reg.R2, 1)
    a.atomic_add(BPF_DW, Reg.R1, Reg.R2, 0)
    a.ldx_mem(BPF_W, Reg.R0, Reg.R6, _SKB_LEN)
    a.exit()
    return a.assemble()


@attrs.frozen
class HashContext:
    """The emulated hash state a frame was (or is) hashed under.

    Attributes:
        state: the emulated device state.
        numqueues: attached queues when it was sampled (None: unknown, taken as enough).
    """

    state: EmulatedHashState
    numqueues: int | None = None

    @property
    def enough_queues(self) -> bool:
        """tun hashes only in ``ndo_select_queue``, which the core calls only with 2 queues or more."""
        return self.numqueues is None or self.numqueues >= 2


class _Record:
    """One transmitted frame not read yet: where it went, how to recognise it, what it was hashed under."""

    __slots__ = ("context", "done", "head", "length", "queue", "seq")

    def __init__(self, seq: int, queue: int, length: int, head: bytes, context: HashContext) -> None:
        self.seq = seq
        self.queue = queue
        self.length = length
        self.head = head
        self.context = context
        self.done = False


class _Pending:
    """The records not matched yet, found by frame (length and head) and dropped per queue in order.

    A queue delivers its frames in order, so when a frame of queue ``q`` is matched, older records
    of ``q`` belong to frames that were dropped or read elsewhere: they are retired. Memory is
    bounded by :data:`_PENDING_LIMIT` records (the oldest go first).
    """

    def __init__(self) -> None:
        self._seq = 0
        self._live = 0
        self._all: collections.deque[_Record] = collections.deque()
        self._by_key: dict[tuple[int, bytes], collections.deque[_Record]] = {}
        self._by_queue: dict[int, collections.deque[_Record]] = {}

    def __len__(self) -> int:
        return self._live

    def add(self, queue: int, length: int, head: bytes, context: HashContext) -> None:
        record = _Record(self._seq, queue, length, head, context)
        self._seq += 1
        self._live += 1
        self._all.append(record)
        self._by_key.setdefault((length, head), collections.deque()).append(record)
        self._by_queue.setdefault(queue, collections.deque()).append(record)
        while self._live > _PENDING_LIMIT:
            self._retire(self._all.popleft())
        while self._all and self._all[0].done:
            self._all.popleft()

    def _retire(self, record: _Record) -> None:
        if not record.done:
            record.done = True
            self._live -= 1

    def match(self, frame: bytes, truncated: bool) -> _Record | None:
        """The oldest live record of ``frame`` (``truncated``: only its head is known), retired."""
        found: _Record | None = None
        candidates = self._by_key.get((len(frame), frame[:HEAD_BYTES]))
        if candidates is not None:
            while candidates and candidates[0].done:
                candidates.popleft()
            if candidates:
                found = candidates.popleft()
        elif truncated:
            found = next((r for r in self._all if not r.done and frame[: len(r.head)] == r.head), None)
        if found is None:
            return None
        self._retire(found)
        # Older records of the same queue were for frames that will never be read through here.
        line = self._by_queue[found.queue]
        while line and (line[0].done or line[0].seq < found.seq):
            self._retire(line.popleft())
        return found

    def clear(self) -> None:
        self.__init__()  # type: ignore[misc]


@attrs.frozen
class _Hashed:
    """What the kernel stored for a frame at transmit time (RFC: the mark; v3+: the extension)."""

    value: int
    report: int


#: Steering configs a device's data path keeps for states seen recently.
_STEERING_CONFIGS_KEPT = 16


def _steering_config(state: EmulatedHashState) -> VnetHashConfig | None:
    """The RSS config the steering program needs for ``state``; None when it cannot be steered exactly."""
    table = state.indirection_table
    mask = state.indirection_table_mask
    if not table or mask >= MAX_INDIRECTION_TABLE_LENGTH:
        return None
    length = 1
    while length < mask + 1:
        length <<= 1
    # table[hash & mask] == expanded[hash & (length - 1)] for any mask, power of two or not.
    expanded = tuple(table[i & mask] for i in range(length))
    types = state.types & _SUPPORTED
    if not types:
        # Nothing is ever classified: every frame takes the unclassified path, which the RFC
        # sends to entry 0 (unless it is 0). One constant queue, expressed as a valid config.
        queue = state.unclassified_queue
        if state.revision is Revision.RFC and table[0]:
            queue = table[0]
        return VnetHashConfig(
            rss=True, types=HashType.IPV4, indirection_table=(queue,), key=state.key, unclassified_queue=queue
        )
    return VnetHashConfig(
        rss=True,
        types=types,
        indirection_table=expanded,
        key=state.key,
        unclassified_queue=state.unclassified_queue,
    )


class DeviceDataPath:
    """The emulated data path of one device (see the module documentation).

    Args:
        revision: the emulated revision.
        ifname: the device name (for messages).
        flags: the device's ``TUNGETIFF`` flags (TAP/TUN, packet information, vnet header).

    Thread safety: every method takes the instance's lock.
    """

    def __init__(self, revision: Revision, ifname: str, flags: int) -> None:
        self.revision = revision
        self.ifname = ifname
        self.flags = flags
        self.semantics: Semantics = semantics_for(revision)
        self.framing = Framing.ETHERNET if flags & TunFlag.IFF_TAP else Framing.IP
        self.lock = threading.RLock()
        self._queue_map: QueueMap | None = None
        self._counter_map: ArrayMap | None = None
        self._counter: MappedArray | None = None
        # The recorder's push count when the queue map was last found empty: while the count is
        # the same, nothing was recorded since, and collecting needs no bpf(2) call (most trapped
        # calls happen with no traffic in between: this saved a fifth of an emulated ioctl).
        self._drained_at = 0
        self._recorder: Program | None = None
        self._steering: EbpfRss | None = None
        # Steering configs of recent states: building one validates the whole table (a third of
        # an emulated set's cost), and callers put the same few configs in force again and again.
        self._steering_configs: dict[EmulatedHashState, VnetHashConfig | None] = {}
        self._steering_attached = False
        #: The state the attached program steers by (None when none of ours is attached).
        self._synced: EmulatedHashState | None = None
        self._context: HashContext | None = None
        self._pending = _Pending()
        self.recorded = 0
        self.matched = 0
        #: The queue count last sampled (when records were collected); None before.
        self.numqueues: int | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def steering_attached(self) -> bool:
        """True while the emulator's RSS program steers the real device."""
        return self._steering_attached

    @property
    def context(self) -> HashContext | None:
        """The state frames are hashed under now (None before the first change)."""
        return self._context

    def collect(self, numqueues: Callable[[], int | None]) -> int:
        """Move the recorder's records into the pending list, tagged with the state in force; return how many.

        Call it before every change of the emulated state and before matching a read.
        ``numqueues`` is asked for the device's queue count only when there are records to tag.
        """
        with self.lock:
            if self._queue_map is None or self._context is None or self._counter is None:
                return 0
            pushed = int.from_bytes(self._counter.read(0, 0, 8), sys.byteorder)
            if pushed == self._drained_at:
                return 0
            context: HashContext | None = None
            count = 0
            while (raw := self._queue_map.pop()) is not None:
                if context is None:
                    self.numqueues = numqueues()
                    context = attrs.evolve(self._context, numqueues=self.numqueues)
                length, queue, head = _RECORD.unpack(raw)
                self._pending.add(queue, length, head[: min(length, HEAD_BYTES)], context)
                count += 1
            # Read before popping: a record pushed since is counted above it, and collected next time.
            self._drained_at = pushed
            self.recorded += count
            return count

    def update(self, fd: int, state: EmulatedHashState) -> None:
        """Follow a change of the emulated state: recorder in place, steering program as the rules say.

        ``fd`` is a queue fd of the device (this process's), used for the attach calls.

        Raises:
            KernelErrno: when an attach call fails (``EBADFD`` when the device is gone).
        """
        with self.lock:
            if self._context is None or self._context.state is not state:
                self._context = HashContext(state)  # snapshots of an unchanged state are one object
            self._ensure_recorder(fd)
            self._sync_steering(fd, state)

    def _ensure_recorder(self, fd: int) -> None:
        if self._recorder is not None:
            return
        with contextlib.ExitStack() as undo:
            queue_map = undo.enter_context(QueueMap.create(_RECORD.size, _RECORD_SLOTS, name="pth_emu_rec"))
            counter_map = undo.enter_context(ArrayMap.create(8, 1, mmapable=True, name="pth_emu_cnt"))
            counter = undo.enter_context(counter_map.mmap())
            program = undo.enter_context(
                Program.load(generate_recorder(queue_map.fd, counter_map.fd), name="pth_emu_rec")
            )
            _set_int(fd, "TUNSETFILTEREBPF", program.fd)
            undo.pop_all()
        self._queue_map, self._counter_map, self._counter, self._recorder = queue_map, counter_map, counter, program
        self._drained_at = 0

    def _steering_config_of(self, state: EmulatedHashState) -> VnetHashConfig | None:
        try:
            return self._steering_configs[state]
        except KeyError:
            pass
        config = _steering_config(state)
        if len(self._steering_configs) >= _STEERING_CONFIGS_KEPT:
            del self._steering_configs[next(iter(self._steering_configs))]
        self._steering_configs[state] = config
        return config

    def _sync_steering(self, fd: int, state: EmulatedHashState) -> None:
        if self._steering_attached and (state is self._synced or state == self._synced):
            return  # the program attached steers by this very state (a configuration applied again)
        config = self._steering_config_of(state) if state.rss else None
        # A program of the code under test: the RFC cleared RSS when it attached, v3-v9 refused
        # one of the two, v10+ let it take precedence. Either way ours is not in force.
        want = config is not None and not state.steering_attached
        if not want:
            if self._steering_attached and not state.steering_attached:
                _set_int(fd, "TUNSETSTEERINGEBPF", -1)
            self._steering_attached = False
            self._synced = None
            return
        assert config is not None
        if self._steering is None:
            mode = DeviceMode.TAP if self.framing is Framing.ETHERNET else DeviceMode.TUN
            self._steering = EbpfRss.load(config, mode, semantics=self.semantics)
        elif self._steering.config != config:
            self._steering.reconfigure(config, wait=True)
        if not self._steering_attached:
            _set_int(fd, "TUNSETSTEERINGEBPF", self._steering.program.fd)
            self._steering_attached = True
        self._synced = state

    def steering_replaced(self) -> None:
        """The code under test attached its own program, which replaced the emulator's on the device."""
        with self.lock:
            self._steering_attached = False
            self._synced = None

    # -- reads ---------------------------------------------------------------------------------

    def _hashed(self, frame: bytes, context: HashContext, queue: int | None) -> _Hashed | None:
        """What the kernel stored for ``frame`` at transmit time under ``context`` (None: nothing)."""
        state = context.state
        if not context.enough_queues:
            return None
        if self.revision is Revision.RFC:
            if not state.flags & 0x03:
                return None
            flow = self._classify(frame, state)
            return _Hashed(flow.hash_value, int(flow.report))
        if state.steering_attached:
            return None  # the code's program picked the queue; nothing was hashed
        if state.rss:
            flow = self._classify(frame, state)
            if flow.report is HashReport.NONE or not state.report:
                return None
            return _Hashed(flow.hash_value, int(flow.report))
        if state.report:
            # Automatic selection with reports: the report type is classified, the value is the
            # automatic choice's (the queue index for frames without an L4 hash).
            flow = self._classify(frame, state)
            return _Hashed(queue if queue is not None else 0, int(flow.report))
        return None

    def _classify(self, frame: bytes, state: EmulatedHashState) -> FlowHash:
        return classify(frame, state.types & _SUPPORTED, state.key, l2=self.framing, semantics=self.semantics)

    def header_writes(self, data: bytes, count: int, vnet_hdr_sz: int, now: HashContext) -> list[tuple[int, bytes]]:
        """The byte ranges the emulated kernel writes for one read that returned ``data``.

        Args:
            data: what the real kernel's read returned (packet information, vnet header, frame).
            count: how many bytes the caller asked for (a shorter frame was truncated to fit).
            vnet_hdr_sz: the device's vnet header size (0 without ``IFF_VNET_HDR``).
            now: the emulated state at read time.

        Returns:
            ``(offset, bytes)`` ranges covering what the caller's buffer receives; gaps are bytes
            the revision's kernel skips (leaves as they were).
        """
        with self.lock:
            pi = 0 if self.flags & TunFlag.IFF_NO_PI else 4
            start = pi + vnet_hdr_sz
            if vnet_hdr_sz == 0 or len(data) < start:
                return [(0, data)]
            frame = data[start:]
            record = self._pending.match(frame, truncated=len(data) >= count)
            if record is not None:
                self.matched += 1
            context = record.context if record is not None else now
            hashed = self._hashed(frame, context, record.queue if record is not None else None)
            base = data[pi : pi + VIRTIO_NET_HDR_SIZE]
            writes: list[tuple[int, bytes]] = [(0, data[:pi])] if pi else []
            room = vnet_hdr_sz >= VIRTIO_NET_HDR_V1_HASH_SIZE
            if self.revision is Revision.RFC:
                # REPORT is checked again at read time; the bytes after the header are skipped.
                if hashed is not None and now.state.report and room:
                    writes.append((pi, base + hash_tail(0, hashed.value, hashed.report)))
                else:
                    writes.append((pi, base))
            else:
                # v3+ look the hash up only with room for it, and zero-fill up to vnet_hdr_sz.
                num_buffers = 1 if self.revision is Revision.V3 else 0
                value, report = (hashed.value, hashed.report) if hashed is not None and room else (0, 0)
                full = base + hash_tail(num_buffers, value, report)
                writes.append((pi, full[:vnet_hdr_sz].ljust(vnet_hdr_sz, b"\0")))
            writes.append((start, frame))
            return writes

    # -- teardown ------------------------------------------------------------------------------

    def detach(self, fd: int) -> None:
        """Take the emulator's programs off the device through queue fd ``fd`` (best effort)."""
        with self.lock, contextlib.suppress(KernelErrno):
            if self._steering_attached:
                _set_int(fd, "TUNSETSTEERINGEBPF", -1)
                self._steering_attached = False
            if self._recorder is not None:
                _set_int(fd, "TUNSETFILTEREBPF", -1)

    def close(self) -> None:
        """Free the programs and maps (the kernel keeps attached programs alive on their own)."""
        with self.lock:
            for obj in (self._steering, self._recorder, self._counter, self._counter_map, self._queue_map):
                if obj is not None:
                    obj.close()
            self._steering = None
            self._recorder = None
            self._counter = None
            self._counter_map = None
            self._queue_map = None
            self._steering_attached = False
            self._pending.clear()


def _set_int(fd: int, name: str, value: int) -> None:
    try:
        fcntl.ioctl(fd, _TUN[name], struct.pack(f"{_E}i", value))
    except OSError as exc:
        raise KernelErrno(exc.errno or errno.EIO) from None
