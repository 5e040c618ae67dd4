"""The RSS steering program: generated eBPF that classifies, hashes and picks a queue.

Everything that depends on the configuration lives in one map value (:func:`config_value`):
hash types, table mask, unclassified queue, indirection table, and the Toeplitz lookup
tables. The program code depends only on the device mode (where L3 starts) and on what it
returns (:class:`RssOutput`), so a reconfiguration never needs a new program.

Per packet the program does, with no loops (every step is unrolled by the generator):

1. the configuration: a control map's ``u32 active`` names one of :data:`SHARED_SLOTS` seqlocked
   slots of a slots map, each ``u32 seq`` and a config value; the run remembers ``seq`` and
   checks it again before it returns, and computes again from the slot then active when it changed
   (see :mod:`pytun_hash.bpf.rss` and :mod:`pytun_hash.bpf.shared` for why);
2. L2 (TAP): Ethernet type, skipping up to two 802.1Q/802.1ad tags; (TUN): the IP version
   nibble;
3. classification by the rules of the software model (:mod:`pytun_hash.model.packet` and
   :mod:`pytun_hash.model.classify`): IPv4 fragments (MF set or offset != 0; DF alone is not)
   hash as IP only, otherwise TCP then UDP then IP, as enabled; IPv6 hop-by-hop (0), routing
   (43) and destination options (60) headers are skipped (at most
   :data:`MAX_IPV6_EXT_HEADERS`), a fragment header (44) means IP only; malformed packets
   (IPv4 options, extension headers or TCP/UDP ports cut short) are not hashed;
4. Toeplitz through per-byte-position tables: ``hash = XOR_p T[p][input[p]]``, 5
   instructions per input byte, straight-line, into two accumulators in turn;
5. ``indirection_table[hash & mask]``; an unclassified packet returns ``unclassified_queue``.

The same program also follows the rules of a kernel carrying the October 2023 RFC
(:data:`~pytun_hash.model.Semantics.RFC_2023`), selected by flags in the config value
(:func:`config_value` with ``semantics``): fragments are classified by their protocol and hashed
with ports 0 (:data:`FLAG_FRAGMENT_PORTS`), a zero table entry means ``unclassified_queue`` and an
unclassified packet uses ``indirection_table[0]`` (:data:`FLAG_RFC_QUEUE`); the RFC's byte-reversed
input words are a permutation of the lookup tables, so they cost nothing in the program. The
kernel emulator (:mod:`pytun_hash.testing`) steers emulated RFC devices with it.

Packet bytes are copied to the stack with ``bpf_skb_load_bytes_relative`` from the MAC
header (TAP) or the network header (TUN). On the tun transmit path the MAC header is the
start of the frame; under ``BPF_PROG_TEST_RUN`` it is too, although ``skb->data`` is then
L3 (the test run strips the Ethernet header), so one program serves both. A helper call
costs more than all the rest of the program on CPUs with return thunks (25-30 ns, against
30-40 ns for a whole run of an empty program), so the program makes one: the *bulk path* copies
``min(skb->len, BULK_BYTES)`` bytes at once and parses every header shape (VLAN tags, IPv4
options, IPv6 extension headers) from that copy, with fast paths for TCP/UDP right after a
fixed-size IP header. ``skb->len`` counts from ``skb->data``, which is at or after the MAC
header, so the copy never asks for more than there is. Whenever a byte a decision needs lies
beyond the copy (a truncated frame, a header chain longer than ``BULK_BYTES``, or a frame whose
linear part is shorter than ``skb->len``, which fails the copy), the *exact path* decides
instead: one copy per header, the fixed-size header copies first. A paged frame thus costs one
failed copy more than before the bulk path; ``BPF_PROG_TEST_RUN`` frames are always linear.

The _EX hash types are not implemented (:data:`SUPPORTED_HASH_TYPES`); configs with them are
refused by :func:`check_supported`.
"""

from __future__ import annotations

import enum
import struct
import sys
from array import array

from pytun_hash._abi.virtio_net import HashReport, HashType
from pytun_hash.bpf.insn import (
    BPF_ADD,
    BPF_AND,
    BPF_B,
    BPF_DW,
    BPF_H,
    BPF_HDR_START_MAC,
    BPF_HDR_START_NET,
    BPF_JEQ,
    BPF_JGT,
    BPF_JLE,
    BPF_JLT,
    BPF_JNE,
    BPF_JSET,
    BPF_LSH,
    BPF_RSH,
    BPF_TO_BE,
    BPF_W,
    BPF_XOR,
    Assembler,
    Helper,
    Insn,
    Reg,
)
from pytun_hash.config import MAX_INDIRECTION_TABLE_LENGTH, MAX_KEY_SIZE, VnetHashConfig
from pytun_hash.errors import DecodeError, ValidationError
from pytun_hash.model.classify import Semantics
from pytun_hash.model.packet import MAX_IPV6_EXTENSION_HEADERS, MAX_VLAN_TAGS

__all__ = [
    "CONFIG_VALUE_SIZE",
    "FLAG_FRAGMENT_PORTS",
    "FLAG_RFC_QUEUE",
    "MAX_IPV6_EXT_HEADERS",
    "SUPPORTED_HASH_TYPES",
    "L3Base",
    "RssOutput",
    "SHARED_READ_ATTEMPTS",
    "SHARED_SLOTS",
    "SHARED_SLOT_HEADER",
    "config_value",
    "decode_config_value",
    "generate_shared_rss_program",
    "toeplitz_tables",
]

#: Hash types the program implements; the _EX types (IPv6 home address / routing header
#: type 2 addresses) are refused at apply time.
SUPPORTED_HASH_TYPES = HashType(0x3F)

#: IPv6 extension headers the walk visits at most (the model's bound).
MAX_IPV6_EXT_HEADERS = MAX_IPV6_EXTENSION_HEADERS

#: Longest Toeplitz input: IPv6 source + destination + ports.
MAX_INPUT_BYTES = 36

# Config value layout (host byte order u32 fields).
OFF_TYPES = 0
OFF_MASK = 4
OFF_UNCLASSIFIED = 8
OFF_FLAGS = 12
OFF_TABLE = 16

#: Config flag: the RFC's queue rule (a zero entry means the unclassified queue; unclassified
#: packets use entry 0).
FLAG_RFC_QUEUE = 1 << 0
#: Config flag: fragments are classified by their protocol and hashed with ports 0 (the RFC).
FLAG_FRAGMENT_PORTS = 1 << 1
#: Config flag the program does not read: the configuration asks for hash reports (computed in user
#: space), kept so that the value describes the whole configuration.
FLAG_REPORT = 1 << 2
#: The key itself, after the indirection table (the program reads only its tables): with it a value
#: can be read back as the configuration it carries (:func:`decode_config_value`).
OFF_KEY = OFF_TABLE + 4 * MAX_INDIRECTION_TABLE_LENGTH
OFF_TOEPLITZ = 1024
TOEPLITZ_STRIDE = 256 * 4
CONFIG_VALUE_SIZE = OFF_TOEPLITZ + MAX_INPUT_BYTES * TOEPLITZ_STRIDE

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
ETH_P_8021AD = 0x88A8
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPV6_SKIPPED = (0, 43, 60)
IPV6_FRAGMENT = 44


class L3Base(enum.Enum):
    """Where the packet bytes the program reads start.

    ``ETHERNET``: a TAP device; L2 is parsed from the MAC header. ``IP``: a TUN device
    (``IFF_TUN|IFF_NO_PI``); the network header is the IP header.
    """

    ETHERNET = "ethernet"
    IP = "ip"


class RssOutput(enum.Enum):
    """What the generated program returns.

    ``QUEUE``: the steering build, ``indirection_table[hash & mask]`` or the unclassified
    queue. ``HASH``: the Toeplitz value (0 when unclassified). ``REPORT``: the
    :class:`HashReport` value it classified the packet as (0 = NONE). The last two exist to
    check the program against the software model through ``BPF_PROG_TEST_RUN``.
    """

    QUEUE = "queue"
    HASH = "hash"
    REPORT = "report"


def _windows(key: bytes) -> list[int]:
    """32-bit key windows starting at every bit offset 0..8*MAX_INPUT_BYTES-1."""
    k = int.from_bytes(key[:MAX_KEY_SIZE].ljust(MAX_KEY_SIZE, b"\0") + b"\0\0\0\0", "big")
    total = (MAX_KEY_SIZE + 4) * 8
    return [(k >> (total - 32 - i)) & 0xFFFFFFFF for i in range(MAX_INPUT_BYTES * 8)]


# _LANES[k]: a 1 in each of the first 2**k 32-bit lanes of an integer.
_LANES = tuple(sum(1 << (32 * i) for i in range(1 << k)) for k in range(8))


def toeplitz_tables(key: bytes, *, semantics: Semantics = Semantics.SPEC) -> bytes:
    """The Toeplitz lookup tables for ``key``: ``T[p][b]`` as host-order u32, p-major.

    ``T[p][b]`` is the XOR of the 32-bit key windows at bits ``8p + j`` for every set bit
    ``j`` (MSB first) of byte value ``b``, so the Toeplitz hash of ``data`` is the XOR of
    ``T[p][data[p]]``. Each table is built by doubling, lane-parallel in one integer: the
    entries for bits 0..k-1 are followed by the same entries XORed with bit k's window.

    Under ``RFC_2023`` the kernel fed input byte ``p`` at position ``p ^ 3`` (each 32-bit word
    byte-reversed, on a little-endian host; every input is whole words), so position ``p`` gets
    the table of position ``p ^ 3``.
    """
    w = _windows(key)
    swap = 3 if semantics is Semantics.RFC_2023 and sys.byteorder == "little" else 0
    out = bytearray()
    for q in range(MAX_INPUT_BYTES):
        p = q ^ swap
        table = 0
        for k in range(8):
            table |= (table ^ (w[8 * p + 7 - k] * _LANES[k])) << (32 << k)
        out += table.to_bytes(TOEPLITZ_STRIDE, "little")
    if sys.byteorder == "big":
        entries = array("I", out)
        entries.byteswap()
        return entries.tobytes()
    return bytes(out)


def check_supported(config: VnetHashConfig) -> None:
    """Refuse what the eBPF program cannot do.

    Raises:
        ValidationError: for a config without RSS, or with _EX hash types.
    """
    if not config.rss:
        raise ValidationError("rss", "eBPF RSS steers packets: the config must have rss=True")
    extra = config.types & ~SUPPORTED_HASH_TYPES
    if extra:
        raise ValidationError(
            "types",
            f"{extra!r} (IPv6 _EX types) are not implemented by the eBPF program; remove them "
            "(IPv6 packets with extension headers then hash by their fixed-header addresses)",
        )


def config_value(
    config: VnetHashConfig, *, tables: bytes | None = None, semantics: Semantics = Semantics.SPEC
) -> bytes:
    """The inner-map value that carries ``config`` for the program (``CONFIG_VALUE_SIZE`` bytes).

    Args:
        config: an RSS config with supported types (see :func:`check_supported`).
        tables: :func:`toeplitz_tables` of ``config.key`` (for ``semantics``) when already computed.
        semantics: whose rules the program follows for this config (the flags it sets).

    Raises:
        ValidationError: for unsupported configs, an unknown ``semantics``, or ``tables`` of the
            wrong size.
    """
    check_supported(config)
    if not isinstance(semantics, Semantics):
        raise ValidationError("semantics", f"expected a Semantics member, got {semantics!r}")
    if tables is None:
        tables = toeplitz_tables(config.key, semantics=semantics)
    flags = FLAG_RFC_QUEUE | FLAG_FRAGMENT_PORTS if semantics is Semantics.RFC_2023 else 0
    if config.report:
        flags |= FLAG_REPORT
    if len(tables) != MAX_INPUT_BYTES * TOEPLITZ_STRIDE:
        raise ValidationError("tables", f"expected {MAX_INPUT_BYTES * TOEPLITZ_STRIDE} bytes, got {len(tables)}")
    table = list(config.indirection_table) + [0] * (MAX_INDIRECTION_TABLE_LENGTH - len(config.indirection_table))
    head = struct.pack(
        f"=IIII{MAX_INDIRECTION_TABLE_LENGTH}I",
        int(config.types),
        config.indirection_table_mask,
        config.unclassified_queue,
        flags,
        *table,
    )
    return (head + config.key).ljust(OFF_TOEPLITZ, b"\0") + tables


def decode_config_value(value: bytes) -> tuple[VnetHashConfig, Semantics]:
    """The configuration a :func:`config_value` value carries, and the rules it was written for.

    Raises:
        DecodeError: for a value of another size, or one :func:`config_value` would not have written
            (every byte is checked by writing the decoded configuration again).
    """
    if len(value) != CONFIG_VALUE_SIZE:
        raise DecodeError("config value", f"expected {CONFIG_VALUE_SIZE} bytes, got {len(value)}")
    types, mask, unclassified, flags = struct.unpack_from("=IIII", value, OFF_TYPES)
    semantics = Semantics.RFC_2023 if flags & FLAG_RFC_QUEUE else Semantics.SPEC
    if mask >= MAX_INDIRECTION_TABLE_LENGTH or mask & (mask + 1):
        raise DecodeError("config value", f"table mask {mask:#x} is not a power of two minus one below 128")
    table = struct.unpack_from(f"={mask + 1}I", value, OFF_TABLE)
    try:
        config = VnetHashConfig(
            rss=True,
            report=bool(flags & FLAG_REPORT),
            types=HashType(types),
            indirection_table=table,
            key=value[OFF_KEY : OFF_KEY + MAX_KEY_SIZE],
            unclassified_queue=unclassified,
        )
        again = config_value(config, semantics=semantics)
    except ValidationError as exc:
        raise DecodeError("config value", f"not a configuration: {exc}") from None
    if again != value:
        raise DecodeError("config value", "these bytes are not a value pytun_hash wrote (written again they differ)")
    return config, semantics


#: ``offsetof(struct __sk_buff, len)``.
SKB_LEN = 0

# Stack layout (offsets from the frame pointer R10). The packet buffer holds the frame in
# canonical positions whatever its real layout: Ethernet header at _B, the L3 header at
# _B + 14, and the transport ports right after a 20-byte IPv4 / 40-byte IPv6 header, so
# one copy of the hashing code serves every path.
_KEY = -4  # u32 map key 0
_B = -64  # 58 bytes: Ethernet (14) + IPv6 header (40) + ports (4)
_TAGS = _B - 4 * MAX_VLAN_TAGS  # the 4-byte VLAN tags (slow path)
_EXT = (_TAGS - 8) & ~7  # 8 bytes: start of an IPv6 extension header, or a probe byte
_NEXTHDR = _EXT - 8  # the upper-layer protocol across a helper call
_L3 = _B + 14
_V4_PORTS = _L3 + 20
_V6_PORTS = _L3 + 40
# Each helper call costs about as much as the rest of the program (return thunks on this
# class of CPU), so the common case is one copy of L3 header + ports: IPv6's size first,
# IPv4's size when the frame is shorter than that.
_FAST_V4 = 20 + 4
_FAST_V6 = 40 + 4

# Callee-saved registers across helper calls.
_CTX = Reg.R6
_CFG = Reg.R7
_OFF = Reg.R8  # L3 offset, then L4 offset (slow path)
_REP = Reg.R9  # hash types while classifying, then the HashReport value

#: Bytes the bulk path copies at most: Ethernet, two tags, and enough for IPv4 with 40 bytes of
#: options or IPv6 with eight 8-byte extension headers (or fewer, longer ones), ports included.
BULK_BYTES = 256
# The copy starts 14 bytes into the buffer for TUN too, so the IP header is 2 bytes past a 4-byte
# boundary in both modes (and behind VLAN tags): the verifier wants every stack load aligned to
# its size, and the fast paths load aligned half-words and words from the IP header.
_BUF = (_NEXTHDR - 14 - BULK_BYTES) & ~7
# Bulk path registers (no helper call after its one copy, so R0-R5 are free too).
_N = Reg.R8  # bytes copied; the exact path reuses R8 as _OFF
_L3OFF = Reg.R5  # L3 offset in the copy
_L4OFF = Reg.R0  # L4 offset in the copy (IPv4 options, IPv6 extension headers)
_L3P = Reg.R2  # fp + _BUF + L3 offset
_L4P = Reg.R3  # fp + _BUF + L4 offset
_ACC2 = Reg.R5  # the second Toeplitz accumulator (L3 offset no longer needed)
_TBASE = Reg.R8  # config value + _TBASE_OFF while hashing (n no longer needed)
_TBASE_OFF = OFF_TOEPLITZ + 16 * TOEPLITZ_STRIDE


def _raw16(value: int) -> int:
    """A network-order u16 as the program's half-word load reads it on this host."""
    return int.from_bytes(value.to_bytes(2, "big"), sys.byteorder)


def _raw32(data: bytes) -> int:
    """Four packet bytes as the program's word load reads them on this host."""
    return int.from_bytes(data, sys.byteorder)


def _s32(value: int) -> int:
    """A u32 as the signed 32-bit immediate field holds it."""
    return value - (1 << 32) if value & 0x80000000 else value


# Where the program finds its configuration (pytun_hash.bpf.shared): a control map's ``u32 active``
# names one of SHARED_SLOTS slots; each slot is ``u32 seq`` (odd while written), ``u32`` reserved,
# then :func:`config_value`.
#: Slots a writer cycles through.
SHARED_SLOTS = 4
#: Bytes before the config value in a slot.
SHARED_SLOT_HEADER = 8
#: Times a frame is computed before the program gives up on a slot rewritten under it (queue 0).
SHARED_READ_ATTEMPTS = 4
# Below everything the program uses, each in a slot of its own and spilled whole (the verifier then
# knows the attempt count exactly, and so that the retry loop ends): the seq read first, the
# attempts so far. The slot itself is found again from the config pointer, which no path changes.
_S_SEQ = (_BUF - 8) & ~7
_S_TRY = _S_SEQ - 8
assert _S_TRY >= -512, "the program's stack does not fit"


class _Gen:
    """Emits the program into an :class:`Assembler`; one method per part."""

    def __init__(self, control_map_fd: int, slots_map_fd: int, base: L3Base, output: RssOutput) -> None:
        self.a = Assembler()
        self.control_map_fd = control_map_fd
        self.slots_map_fd = slots_map_fd
        self.base = base
        self.output = output
        self.hdr = BPF_HDR_START_MAC if base is L3Base.ETHERNET else BPF_HDR_START_NET
        self.l3 = 14 if base is L3Base.ETHERNET else 0
        # Where the frame (TAP) or packet (TUN) starts in the bulk buffer, and where the copy ends.
        self.bulk_at = 14 - self.l3
        self.bulk_end = self.bulk_at + BULK_BYTES

    def load(self, offset_reg: Reg | None, offset: int, stack: int, length: int, on_fail: str) -> None:
        """``bpf_skb_load_bytes_relative(ctx, offset_reg + offset, fp + stack, length, hdr)``."""
        a = self.a
        a.mov64_reg(Reg.R1, _CTX)
        if offset_reg is None:
            a.mov64_imm(Reg.R2, offset)
        else:
            a.mov64_reg(Reg.R2, offset_reg)
            if offset:
                a.alu64_imm(BPF_ADD, Reg.R2, offset)
        a.mov64_reg(Reg.R3, Reg.FP).alu64_imm(BPF_ADD, Reg.R3, stack)
        a.mov64_imm(Reg.R4, length).mov64_imm(Reg.R5, self.hdr)
        a.call(Helper.skb_load_bytes_relative)
        a.jmp_imm(BPF_JNE, Reg.R0, 0, on_fail)

    def skip_if_shorter(self, length: int, target: str) -> None:
        """Jump to ``target`` when ``skb->len < length``, sparing a copy that would fail.

        ``skb->len`` counts from ``skb->data``, which is at or after the MAC header, so it is
        a lower bound of the bytes a MAC-relative copy can reach: at worst (a test run, where
        data is L3) a copy that would have fitted is skipped and a slower path is taken.
        """
        self.a.ldx_mem(BPF_W, Reg.R1, _CTX, SKB_LEN)
        self.a.jmp_imm(BPF_JLT, Reg.R1, length, target)

    def be16(self, dst: Reg, stack: int) -> None:
        self.a.ldx_mem(BPF_H, dst, Reg.FP, stack).endian(BPF_TO_BE, dst, 16)

    def hash_bytes(self, first_pos: int, stack: int, count: int) -> None:
        """``r0 ^= T[p][fp[stack + i]]`` for ``p = first_pos + i``: 5 instructions a byte."""
        a = self.a
        high_base = False
        for i in range(count):
            p = first_pos + i
            off = OFF_TOEPLITZ + p * TOEPLITZ_STRIDE
            a.ldx_mem(BPF_B, Reg.R1, Reg.FP, stack + i)
            a.alu64_imm(BPF_LSH, Reg.R1, 2)
            if off > 0x7FFF:
                # The 16-bit offset field cannot reach the last tables: use a shifted base.
                if not high_base:
                    a.mov64_reg(Reg.R2, _CFG).alu64_imm(BPF_ADD, Reg.R2, 0x8000)
                    high_base = True
                a.alu64_reg(BPF_ADD, Reg.R1, Reg.R2)
                off -= 0x8000
            else:
                a.alu64_reg(BPF_ADD, Reg.R1, _CFG)
            a.ldx_mem(BPF_W, Reg.R1, Reg.R1, off)
            a.alu64_reg(BPF_XOR, Reg.R0, Reg.R1)

    def pick_l4(self, prefix: str, proto_reg: Reg, tcp: HashType, udp: HashType, ip: str) -> None:
        """TCP before UDP: jump to ``{prefix}_tcp`` / ``{prefix}_udp`` if that type is on, else to ``ip``."""
        a = self.a
        a.jmp_imm(BPF_JNE, proto_reg, IPPROTO_TCP, f"{prefix}_not_tcp")
        a.jmp_imm(BPF_JSET, _REP, int(tcp), f"{prefix}_tcp")
        a.ja(ip)
        a.label(f"{prefix}_not_tcp")
        a.jmp_imm(BPF_JNE, proto_reg, IPPROTO_UDP, ip)
        a.jmp_imm(BPF_JSET, _REP, int(udp), f"{prefix}_udp")
        a.ja(ip)

    def set_report(self, prefix: str, tcp: HashReport, udp: HashReport, then: str) -> None:
        a = self.a
        a.label(f"{prefix}_tcp")
        a.mov64_imm(_REP, int(tcp))
        a.ja(then)
        a.label(f"{prefix}_udp")
        a.mov64_imm(_REP, int(udp))
        a.ja(then)

    def ethernet(self) -> None:
        """TAP: one copy of Ethernet + IPv6 header + ports; shorter frames retry with IPv4's size."""
        a = self.a
        self.skip_if_shorter(14 + _FAST_V6, "fast_v4")
        self.load(None, 0, _B, 14 + _FAST_V6, "fast_v4")
        self.be16(Reg.R1, _B + 12)
        a.jmp_imm(BPF_JEQ, Reg.R1, ETH_P_IP, "v4_fast")
        a.jmp_imm(BPF_JEQ, Reg.R1, ETH_P_IPV6, "v6_fast")
        a.ja("l2_tags")
        a.label("fast_v4")
        self.skip_if_shorter(14 + _FAST_V4, "short_frame")
        self.load(None, 0, _B, 14 + _FAST_V4, "short_frame")
        self.be16(Reg.R1, _B + 12)
        a.jmp_imm(BPF_JEQ, Reg.R1, ETH_P_IP, "v4_fast")
        a.jmp_imm(BPF_JEQ, Reg.R1, ETH_P_IPV6, "v6_slow")
        a.ja("l2_tags")
        # Frames shorter than the IPv4 copy, or with VLAN tags: one header at a time.
        a.label("short_frame")
        self.load(None, 0, _B, 14, "unclassified")
        self.be16(Reg.R1, _B + 12)
        a.label("l2_tags")
        for depth in range(MAX_VLAN_TAGS):
            a.jmp_imm(BPF_JEQ, Reg.R1, ETH_P_8021Q, f"tag{depth}")
            a.jmp_imm(BPF_JEQ, Reg.R1, ETH_P_8021AD, f"tag{depth}")
            a.ja("l2_done")
            a.label(f"tag{depth}")
            self.load(None, 14 + 4 * depth, _TAGS + 4 * depth, 4, "unclassified")
            a.mov64_imm(_OFF, 18 + 4 * depth)
            self.be16(Reg.R1, _TAGS + 4 * depth + 2)
        a.label("l2_done")
        a.jmp_imm(BPF_JEQ, Reg.R1, ETH_P_IPV6, "v6_slow")
        a.jmp_imm(BPF_JNE, Reg.R1, ETH_P_IP, "unclassified")
        self.load(_OFF, 0, _L3, 20, "unclassified")
        a.ja("v4_hdr_loaded")

    def raw_ip(self) -> None:
        """TUN: the IP version nibble decides; the same copy sizes as for TAP, without Ethernet."""
        a = self.a
        self.skip_if_shorter(_FAST_V6, "fast_v4")
        self.load(None, 0, _L3, _FAST_V6, "fast_v4")
        a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _L3).alu64_imm(BPF_RSH, Reg.R1, 4)
        a.jmp_imm(BPF_JEQ, Reg.R1, 4, "v4_fast")
        a.jmp_imm(BPF_JEQ, Reg.R1, 6, "v6_fast")
        a.ja("unclassified")
        a.label("fast_v4")
        self.skip_if_shorter(_FAST_V4, "short_packet")
        self.load(None, 0, _L3, _FAST_V4, "short_packet")
        a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _L3).alu64_imm(BPF_RSH, Reg.R1, 4)
        a.jmp_imm(BPF_JEQ, Reg.R1, 4, "v4_fast")
        a.jmp_imm(BPF_JEQ, Reg.R1, 6, "v6_slow")
        a.ja("unclassified")
        a.label("short_packet")
        self.load(None, 0, _L3, 20, "unclassified")
        a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _L3).alu64_imm(BPF_RSH, Reg.R1, 4)
        a.jmp_imm(BPF_JEQ, Reg.R1, 4, "v4_hdr_loaded")
        a.ja("unclassified")  # an IPv6 packet always has the 24 bytes of the IPv4 copy

    def ipv4(self) -> None:
        a = self.a
        # Fast path: a 20-byte header with the 4 bytes behind it copied (the ports of TCP/UDP).
        a.label("v4_fast")
        a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _L3)
        a.jmp_imm(BPF_JNE, Reg.R1, 0x45, "v4_hdr_loaded")
        self.be16(Reg.R2, _L3 + 6)
        a.jmp_imm(BPF_JSET, Reg.R2, 0x3FFF, "v4_fragment")  # MF or a fragment offset; DF alone is not
        a.ldx_mem(BPF_B, Reg.R3, Reg.FP, _L3 + 9)
        self.pick_l4("v4f", Reg.R3, HashType.TCPV4, HashType.UDPV4, "v4_ip")
        self.set_report("v4f", HashReport.TCPV4, HashReport.UDPV4, "v4_l4_hash")
        # General path: the 20 fixed header bytes are at _L3; options and ports are checked
        # and copied one at a time.
        a.label("v4_hdr_loaded")
        a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _L3)
        a.mov64_reg(Reg.R2, Reg.R1).alu64_imm(BPF_RSH, Reg.R2, 4)
        a.jmp_imm(BPF_JNE, Reg.R2, 4, "unclassified")
        a.alu64_imm(BPF_AND, Reg.R1, 0x0F)
        a.jmp_imm(BPF_JLT, Reg.R1, 5, "unclassified")
        a.alu64_imm(BPF_LSH, Reg.R1, 2)
        a.alu64_reg(BPF_ADD, _OFF, Reg.R1)  # the L4 offset
        a.jmp_imm(BPF_JEQ, Reg.R1, 20, "v4_no_options")
        # A header whose options are cut short is malformed: its last byte must be there.
        self.load(_OFF, -1, _EXT, 1, "unclassified")
        a.label("v4_no_options")
        self.be16(Reg.R2, _L3 + 6)
        a.jmp_imm(BPF_JSET, Reg.R2, 0x3FFF, "v4_fragment")
        a.ldx_mem(BPF_B, Reg.R3, Reg.FP, _L3 + 9)
        a.jmp_imm(BPF_JEQ, Reg.R3, IPPROTO_TCP, "v4_ports")
        a.jmp_imm(BPF_JNE, Reg.R3, IPPROTO_UDP, "v4_ip")
        # TCP and UDP packets must carry their ports, whichever types are enabled.
        a.label("v4_ports")
        self.load(_OFF, 0, _V4_PORTS, 4, "unclassified")
        a.ldx_mem(BPF_B, Reg.R3, Reg.FP, _L3 + 9)
        self.hash_family(4, ports=_V4_PORTS, addresses=_L3 + 12, address_bytes=8)
        a.ja("select")
        # A fragment hashes as IP only, unless the config says to classify it by its protocol
        # with ports 0 (the RFC).
        a.label("v4_fragment")
        self.fragment_ports(_V4_PORTS, "v4_ip")
        a.ldx_mem(BPF_B, Reg.R3, Reg.FP, _L3 + 9)
        a.ja("v4_family")

    def ipv6(self) -> None:
        a = self.a
        a.label("v6_slow")
        self.load(_OFF, 0, _L3, 40, "unclassified")
        a.ja("v6_hdr_loaded")
        # Fast path: header and the 4 bytes behind it are copied; they are the ports when
        # the next header is TCP or UDP.
        a.label("v6_fast")
        a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _L3).alu64_imm(BPF_RSH, Reg.R1, 4)
        a.jmp_imm(BPF_JNE, Reg.R1, 6, "unclassified")
        a.ldx_mem(BPF_B, Reg.R3, Reg.FP, _L3 + 6)
        a.jmp_imm(BPF_JEQ, Reg.R3, IPPROTO_TCP, "v6f_l4")
        a.jmp_imm(BPF_JNE, Reg.R3, IPPROTO_UDP, "v6_walk")
        a.label("v6f_l4")
        self.pick_l4("v6f", Reg.R3, HashType.TCPV6, HashType.UDPV6, "v6_ip")
        self.set_report("v6f", HashReport.TCPV6, HashReport.UDPV6, "v6_l4_hash")
        # General path: walk the extension headers (unrolled, bounded). Each one must be
        # complete: its 2-byte start, then its last byte, are copied.
        a.label("v6_hdr_loaded")
        a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _L3).alu64_imm(BPF_RSH, Reg.R1, 4)
        a.jmp_imm(BPF_JNE, Reg.R1, 6, "unclassified")
        a.ldx_mem(BPF_B, Reg.R3, Reg.FP, _L3 + 6)
        a.label("v6_walk")
        a.alu64_imm(BPF_ADD, _OFF, 40)
        for i in range(MAX_IPV6_EXT_HEADERS):
            a.jmp_imm(BPF_JEQ, Reg.R3, IPV6_FRAGMENT, "v6_fragment")
            for nh in IPV6_SKIPPED:
                a.jmp_imm(BPF_JEQ, Reg.R3, nh, f"v6_ext{i}")
            a.ja("v6_l4")
            a.label(f"v6_ext{i}")
            self.load(_OFF, 0, _EXT, 2, "unclassified")
            a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _EXT + 1)
            a.alu64_imm(BPF_ADD, Reg.R1, 1).alu64_imm(BPF_LSH, Reg.R1, 3)
            a.alu64_reg(BPF_ADD, _OFF, Reg.R1)
            self.load(_OFF, -1, _EXT + 2, 1, "unclassified")
            a.ldx_mem(BPF_B, Reg.R3, Reg.FP, _EXT)
        # Still inside extension headers after the bound: the walk stops there, and the
        # upper-layer protocol is that header (not TCP/UDP): IP only.
        for nh in (IPV6_FRAGMENT, *IPV6_SKIPPED):
            a.jmp_imm(BPF_JEQ, Reg.R3, nh, "v6_ip")
        a.ja("v6_l4")
        a.label("v6_fragment")
        # A fragment hashes as IP only, once its 8-byte header is known to be complete (or, with
        # FLAG_FRAGMENT_PORTS, by the protocol its header names, with ports 0).
        self.load(_OFF, 0, _EXT, 8, "unclassified")
        self.fragment_ports(_V6_PORTS, "v6_ip")
        a.ldx_mem(BPF_B, Reg.R3, Reg.FP, _EXT)
        a.ja("v6_family")
        a.label("v6_l4")
        a.jmp_imm(BPF_JEQ, Reg.R3, IPPROTO_TCP, "v6_ports")
        a.jmp_imm(BPF_JNE, Reg.R3, IPPROTO_UDP, "v6_ip")
        a.label("v6_ports")
        a.stx_mem(BPF_B, Reg.FP, Reg.R3, _NEXTHDR)
        self.load(_OFF, 0, _V6_PORTS, 4, "unclassified")
        a.ldx_mem(BPF_B, Reg.R3, Reg.FP, _NEXTHDR)
        self.hash_family(6, ports=_V6_PORTS, addresses=_L3 + 8, address_bytes=32)

    def hash_family(self, version: int, *, ports: int, addresses: int, address_bytes: int) -> None:
        """The tail both IP versions share: TCP/UDP (protocol in R3) hashes the ports too, else IP only.

        Toeplitz input order is source and destination address, then the ports; the ports are
        hashed first at their input offset (``address_bytes``) so both paths end in one address loop.
        """
        a = self.a
        fam = f"v{version}"
        a.label(f"{fam}_family")
        tcp, udp, ip = (
            (HashType.TCPV4, HashType.UDPV4, HashType.IPV4)
            if version == 4
            else (HashType.TCPV6, HashType.UDPV6, HashType.IPV6)
        )
        self.pick_l4(f"{fam}s", Reg.R3, tcp, udp, f"{fam}_ip")
        self.set_report(f"{fam}s", tcp.report, udp.report, f"{fam}_l4_hash")
        a.label(f"{fam}_l4_hash")
        a.mov64_imm(Reg.R0, 0)
        self.hash_bytes(address_bytes, ports, 4)
        a.ja(f"{fam}_addresses")
        a.label(f"{fam}_ip")
        a.jmp_imm(BPF_JSET, _REP, int(ip), f"{fam}_ip_on")
        a.ja("unclassified")
        a.label(f"{fam}_ip_on")
        a.mov64_imm(_REP, int(ip.report))
        a.mov64_imm(Reg.R0, 0)
        a.label(f"{fam}_addresses")
        self.hash_bytes(0, addresses, address_bytes)

    def fragment_ports(self, ports: int, otherwise: str) -> None:
        """Jump to ``otherwise`` unless the config classifies fragments by protocol; else zero the ports."""
        a = self.a
        a.ldx_mem(BPF_W, Reg.R1, _CFG, OFF_FLAGS)
        a.jmp_imm(BPF_JSET, Reg.R1, FLAG_FRAGMENT_PORTS, f"{otherwise}_frag")
        a.ja(otherwise)
        a.label(f"{otherwise}_frag")
        # The ports sit at 2-byte aligned stack offsets: two half-word stores.
        a.st_mem(BPF_H, Reg.FP, ports, 0)
        a.st_mem(BPF_H, Reg.FP, ports + 2, 0)

    # ------------------------------------------------------------------ bulk path
    #
    # One copy of min(skb->len, BULK_BYTES) bytes, then every header is parsed from the stack with
    # no further helper call (each costs more than the whole parse). Whenever a byte the decision
    # needs lies beyond what was copied, the bulk path gives up and the exact path below (one copy
    # per header) decides: it is the reference for truncated, non-linear and very long headers.

    def bulk_copy(self) -> None:
        """``n = min(skb->len, BULK_BYTES)`` bytes from the start of the frame into ``_BUF``; in R8
        the end of the copy in the buffer."""
        a = self.a
        a.ldx_mem(BPF_W, Reg.R4, _CTX, SKB_LEN)
        # Shorter packets cannot be classified from a bulk copy anyway; the exact path decides.
        a.jmp_imm(BPF_JLT, Reg.R4, self.l3 + 20, "exact")
        a.jmp_imm(BPF_JLE, Reg.R4, BULK_BYTES, "bulk_sized")
        a.mov64_imm(Reg.R4, BULK_BYTES)
        a.label("bulk_sized")
        a.mov64_reg(_N, Reg.R4)
        if self.bulk_at:
            a.alu64_imm(BPF_ADD, _N, self.bulk_at)  # offsets in the buffer, as the parse uses them
        a.mov64_reg(Reg.R1, _CTX).mov64_imm(Reg.R2, 0)
        a.mov64_reg(Reg.R3, Reg.FP).alu64_imm(BPF_ADD, Reg.R3, _BUF + self.bulk_at)
        a.mov64_imm(Reg.R5, self.hdr)
        a.call(Helper.skb_load_bytes_relative)
        # Fails when the frame's linear part is shorter than skb->len (paged data).
        a.jmp_imm(BPF_JNE, Reg.R0, 0, "exact")

    def bulk_ptr(self, dst: Reg, offset_reg: Reg) -> None:
        """``dst = fp + _BUF + offset_reg``: a pointer into the copy (bounded offset)."""
        self.a.mov64_reg(dst, Reg.FP).alu64_imm(BPF_ADD, dst, _BUF).alu64_reg(BPF_ADD, dst, offset_reg)

    def bulk_need(self, offset_reg: Reg, length: int) -> None:
        """Go to the exact path unless ``offset_reg + length <= n`` (the bytes were copied)."""
        a = self.a
        a.mov64_reg(Reg.R1, offset_reg).alu64_imm(BPF_ADD, Reg.R1, length)
        a.jmp_reg(BPF_JGT, Reg.R1, _N, "exact")

    def bulk_ethernet(self) -> None:
        """TAP: ethertype and up to two tags, compared as raw (network order) half-words."""
        a = self.a
        self.bulk_copy()
        ip, ip6 = _raw16(ETH_P_IP), _raw16(ETH_P_IPV6)
        q, ad = _raw16(ETH_P_8021Q), _raw16(ETH_P_8021AD)
        for depth in range(MAX_VLAN_TAGS + 1):
            a.ldx_mem(BPF_H, Reg.R1, Reg.FP, _BUF + 12 + 4 * depth)
            a.mov64_imm(_L3OFF, 14 + 4 * depth)
            a.jmp_imm(BPF_JEQ, Reg.R1, ip, "b4")
            a.jmp_imm(BPF_JEQ, Reg.R1, ip6, "b6")
            if depth < MAX_VLAN_TAGS:
                # The next tag's ethertype is at most 22 bytes in, within the bytes checked above.
                a.jmp_imm(BPF_JEQ, Reg.R1, q, f"btag{depth}")
                a.jmp_imm(BPF_JNE, Reg.R1, ad, "unclassified")
                a.label(f"btag{depth}")
        a.ja("unclassified")

    def bulk_ip(self) -> None:
        """TUN: the version nibble decides."""
        a = self.a
        self.bulk_copy()
        a.mov64_imm(_L3OFF, self.bulk_at)
        a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _BUF + self.bulk_at).alu64_imm(BPF_RSH, Reg.R1, 4)
        a.jmp_imm(BPF_JEQ, Reg.R1, 4, "b4")
        a.jmp_imm(BPF_JEQ, Reg.R1, 6, "b6")
        a.ja("unclassified")

    def bulk_ipv4(self) -> None:
        a = self.a
        a.label("b4")
        self.bulk_need(_L3OFF, 20)
        self.bulk_ptr(_L3P, _L3OFF)
        # Fast path: no options, TCP or UDP, not a fragment, all in one masked word compare.
        a.ldx_mem(BPF_B, Reg.R1, _L3P, 0)
        a.jmp_imm(BPF_JNE, Reg.R1, 0x45, "b4_general")
        a.ldx_mem(BPF_W, Reg.R4, _L3P, 6)
        a.alu32_imm(BPF_AND, Reg.R4, _s32(_raw32(bytes([0x3F, 0xFF, 0, 0xFF]))))
        a.jmp_imm(BPF_JEQ, Reg.R4, _raw32(bytes([0, 0, 0, IPPROTO_TCP])), "b4_fast_tcp")
        a.jmp_imm(BPF_JNE, Reg.R4, _raw32(bytes([0, 0, 0, IPPROTO_UDP])), "b4_general")
        self.bulk_need(_L3OFF, 24)
        a.jmp_imm(BPF_JSET, _REP, int(HashType.UDPV4), "b4_fast_udp")
        a.ja("b4_ip")
        a.label("b4_fast_tcp")
        self.bulk_need(_L3OFF, 24)
        a.jmp_imm(BPF_JSET, _REP, int(HashType.TCPV4), "b4_fast_tcp_on")
        a.ja("b4_ip")
        a.label("b4_fast_udp")
        a.mov64_imm(_REP, int(HashReport.UDPV4))
        a.ja("b4_fast_hash")
        a.label("b4_fast_tcp_on")
        a.mov64_imm(_REP, int(HashReport.TCPV4))
        a.label("b4_fast_hash")
        # Addresses and ports are contiguous: one run of 12 input bytes.
        self.toeplitz([(_L3P, 12, 0, 12)])
        a.ja("select")

        # General path: any IHL, fragments, other protocols.
        a.label("b4_general")
        a.ldx_mem(BPF_B, Reg.R1, _L3P, 0)
        a.mov64_reg(Reg.R4, Reg.R1).alu64_imm(BPF_RSH, Reg.R4, 4)
        a.jmp_imm(BPF_JNE, Reg.R4, 4, "unclassified")
        a.alu64_imm(BPF_AND, Reg.R1, 0x0F)
        a.jmp_imm(BPF_JLT, Reg.R1, 5, "unclassified")
        a.alu64_imm(BPF_LSH, Reg.R1, 2)
        a.mov64_reg(_L4OFF, _L3OFF).alu64_reg(BPF_ADD, _L4OFF, Reg.R1)
        # Options cut short: the exact path decides (the header is malformed there).
        a.jmp_reg(BPF_JGT, _L4OFF, _N, "exact")
        a.ldx_mem(BPF_B, Reg.R4, _L3P, 9)
        a.ldx_mem(BPF_H, Reg.R1, _L3P, 6).endian(BPF_TO_BE, Reg.R1, 16)
        a.jmp_imm(BPF_JSET, Reg.R1, 0x3FFF, "b4_fragment")  # MF or an offset; DF alone is not
        a.jmp_imm(BPF_JEQ, Reg.R4, IPPROTO_TCP, "b4_ports")
        a.jmp_imm(BPF_JNE, Reg.R4, IPPROTO_UDP, "b4_ip")
        # TCP and UDP packets must carry their ports, whichever types are enabled.
        a.label("b4_ports")
        self.bulk_need(_L4OFF, 4)
        self.pick_l4("b4s", Reg.R4, HashType.TCPV4, HashType.UDPV4, "b4_ip")
        self.set_report("b4s", HashReport.TCPV4, HashReport.UDPV4, "b4_l4_hash")
        a.label("b4_l4_hash")
        self.bulk_ptr(_L4P, _L4OFF)
        self.toeplitz([(_L3P, 12, 0, 8), (_L4P, 0, 8, 4)])
        a.ja("select")
        a.label("b4_fragment")
        # With FLAG_FRAGMENT_PORTS the protocol decides and the ports count as 0, whose table
        # entries are 0: the addresses are the whole hash.
        a.ldx_mem(BPF_W, Reg.R1, _CFG, OFF_FLAGS)
        a.jmp_imm(BPF_JSET, Reg.R1, FLAG_FRAGMENT_PORTS, "b4_frag_ports")
        a.ja("b4_ip")
        a.label("b4_frag_ports")
        self.pick_l4("b4f", Reg.R4, HashType.TCPV4, HashType.UDPV4, "b4_ip")
        self.set_report("b4f", HashReport.TCPV4, HashReport.UDPV4, "b4_addresses")
        a.label("b4_ip")
        a.jmp_imm(BPF_JSET, _REP, int(HashType.IPV4), "b4_ip_on")
        a.ja("unclassified")
        a.label("b4_ip_on")
        a.mov64_imm(_REP, int(HashReport.IPV4))
        a.label("b4_addresses")
        self.toeplitz([(_L3P, 12, 0, 8)])
        a.ja("select")

    def bulk_ipv6(self) -> None:
        a = self.a
        a.label("b6")
        self.bulk_need(_L3OFF, 40)
        self.bulk_ptr(_L3P, _L3OFF)
        a.ldx_mem(BPF_B, Reg.R1, _L3P, 0).alu64_imm(BPF_RSH, Reg.R1, 4)
        a.jmp_imm(BPF_JNE, Reg.R1, 6, "unclassified")
        a.ldx_mem(BPF_B, Reg.R4, _L3P, 6)
        a.mov64_reg(_L4OFF, _L3OFF).alu64_imm(BPF_ADD, _L4OFF, 40)
        # Fast path: TCP or UDP right after the fixed header; addresses and ports contiguous.
        a.jmp_imm(BPF_JEQ, Reg.R4, IPPROTO_TCP, "b6_fast")
        a.jmp_imm(BPF_JNE, Reg.R4, IPPROTO_UDP, "b6_walk")
        a.label("b6_fast")
        self.bulk_need(_L3OFF, 44)
        self.pick_l4("b6f", Reg.R4, HashType.TCPV6, HashType.UDPV6, "b6_ip")
        self.set_report("b6f", HashReport.TCPV6, HashReport.UDPV6, "b6_fast_hash")
        a.label("b6_fast_hash")
        self.toeplitz([(_L3P, 8, 0, 36)])
        a.ja("select")
        # The extension headers (unrolled, bounded), as the exact path walks them: each must be
        # complete (its 2-byte start, then its last byte).
        a.label("b6_walk")
        for i in range(MAX_IPV6_EXT_HEADERS):
            a.jmp_imm(BPF_JEQ, Reg.R4, IPV6_FRAGMENT, "b6_fragment")
            for nh in IPV6_SKIPPED:
                a.jmp_imm(BPF_JEQ, Reg.R4, nh, f"b6_ext{i}")
            a.ja("b6_l4")
            a.label(f"b6_ext{i}")
            self.bulk_need_const_bound(_L4OFF, 2)
            self.bulk_ptr(_L4P, _L4OFF)
            a.ldx_mem(BPF_B, Reg.R4, _L4P, 0)
            a.ldx_mem(BPF_B, Reg.R1, _L4P, 1)
            a.alu64_imm(BPF_ADD, Reg.R1, 1).alu64_imm(BPF_LSH, Reg.R1, 3)
            a.alu64_reg(BPF_ADD, _L4OFF, Reg.R1)
            a.jmp_reg(BPF_JGT, _L4OFF, _N, "exact")
        for nh in (IPV6_FRAGMENT, *IPV6_SKIPPED):
            a.jmp_imm(BPF_JEQ, Reg.R4, nh, "b6_ip")
        a.ja("b6_l4")
        a.label("b6_fragment")
        self.bulk_need_const_bound(_L4OFF, 8)
        a.ldx_mem(BPF_W, Reg.R1, _CFG, OFF_FLAGS)
        a.jmp_imm(BPF_JSET, Reg.R1, FLAG_FRAGMENT_PORTS, "b6_frag_ports")
        a.ja("b6_ip")
        a.label("b6_frag_ports")
        self.bulk_ptr(_L4P, _L4OFF)
        a.ldx_mem(BPF_B, Reg.R4, _L4P, 0)
        self.pick_l4("b6fr", Reg.R4, HashType.TCPV6, HashType.UDPV6, "b6_ip")
        self.set_report("b6fr", HashReport.TCPV6, HashReport.UDPV6, "b6_addresses")
        a.label("b6_l4")
        a.jmp_imm(BPF_JEQ, Reg.R4, IPPROTO_TCP, "b6_ports")
        a.jmp_imm(BPF_JNE, Reg.R4, IPPROTO_UDP, "b6_ip")
        a.label("b6_ports")
        self.bulk_need_const_bound(_L4OFF, 4)
        self.pick_l4("b6s", Reg.R4, HashType.TCPV6, HashType.UDPV6, "b6_ip")
        self.set_report("b6s", HashReport.TCPV6, HashReport.UDPV6, "b6_l4_hash")
        a.label("b6_l4_hash")
        self.bulk_ptr(_L4P, _L4OFF)
        self.toeplitz([(_L3P, 8, 0, 32), (_L4P, 0, 32, 4)])
        a.ja("select")
        a.label("b6_ip")
        a.jmp_imm(BPF_JSET, _REP, int(HashType.IPV6), "b6_ip_on")
        a.ja("unclassified")
        a.label("b6_ip_on")
        a.mov64_imm(_REP, int(HashReport.IPV6))
        a.label("b6_addresses")
        self.toeplitz([(_L3P, 8, 0, 32)])
        a.ja("select")

    def bulk_need_const_bound(self, offset_reg: Reg, length: int) -> None:
        """:meth:`bulk_need`, and a constant bound on ``offset_reg`` that the verifier can see
        (it does not carry ``offset_reg + length <= n`` back to ``offset_reg``)."""
        self.a.jmp_imm(BPF_JGT, offset_reg, self.bulk_end - length, "exact")
        self.bulk_need(offset_reg, length)

    def toeplitz(self, spans: list[tuple[Reg, int, int, int]]) -> None:
        """R0 = the Toeplitz hash of the bytes at ``(base, offset, first input position, count)`` spans.

        ``T[p][b]`` is loaded through one base register in the middle of the tables, so every
        position is within reach of the 16-bit offset field, and XORed into two accumulators in
        turn, halving the chain of dependent XORs.
        """
        a = self.a
        a.mov64_reg(_TBASE, _CFG).alu64_imm(BPF_ADD, _TBASE, _TBASE_OFF)
        accs = (Reg.R0, _ACC2)
        temps = (Reg.R1, Reg.R4)
        k = 0
        for base, offset, first, count in spans:
            for i in range(count):
                tmp, acc = temps[k % 2], accs[k % 2]
                a.ldx_mem(BPF_B, tmp, base, offset + i)
                a.alu64_imm(BPF_LSH, tmp, 2).alu64_reg(BPF_ADD, tmp, _TBASE)
                off = OFF_TOEPLITZ + (first + i) * TOEPLITZ_STRIDE - _TBASE_OFF
                if k < 2:
                    a.ldx_mem(BPF_W, acc, tmp, off)
                else:
                    a.ldx_mem(BPF_W, tmp, tmp, off)
                    a.alu64_reg(BPF_XOR, acc, tmp)
                k += 1
        if k == 1:
            a.mov64_imm(_ACC2, 0)
        a.alu64_reg(BPF_XOR, Reg.R0, _ACC2)

    def epilogue(self) -> None:
        a = self.a
        a.label("select")
        if self.output is RssOutput.QUEUE:
            a.ldx_mem(BPF_W, Reg.R1, _CFG, OFF_MASK)
            a.alu64_reg(BPF_AND, Reg.R0, Reg.R1)
            # Redundant for a valid mask; it lets the verifier bound the table index.
            a.alu64_imm(BPF_AND, Reg.R0, MAX_INDIRECTION_TABLE_LENGTH - 1)
            a.alu64_imm(BPF_LSH, Reg.R0, 2)
            a.alu64_reg(BPF_ADD, Reg.R0, _CFG)
            a.ldx_mem(BPF_W, Reg.R0, Reg.R0, OFF_TABLE)
            # The RFC's rule: a zero entry stands for the unclassified queue.
            a.jmp_imm(BPF_JNE, Reg.R0, 0, "selected")
            a.ldx_mem(BPF_W, Reg.R1, _CFG, OFF_FLAGS)
            a.jmp_imm(BPF_JSET, Reg.R1, FLAG_RFC_QUEUE, "unclassified_queue")
            a.label("selected")
        elif self.output is RssOutput.REPORT:
            a.mov64_reg(Reg.R0, _REP)
        self.ret()
        a.label("unclassified")
        if self.output is RssOutput.QUEUE:
            # The RFC's rule: an unclassified packet (hash 0) takes entry 0.
            a.ldx_mem(BPF_W, Reg.R1, _CFG, OFF_FLAGS)
            a.mov64_imm(Reg.R0, 0)
            a.jmp_imm(BPF_JSET, Reg.R1, FLAG_RFC_QUEUE, "select")
            a.label("unclassified_queue")
            a.ldx_mem(BPF_W, Reg.R0, _CFG, OFF_UNCLASSIFIED)
        else:
            a.mov64_imm(Reg.R0, 0)
        self.ret()
        # Unreachable: the slot index is masked to the map's size, so the lookup cannot fail; the
        # verifier wants the null check all the same.
        a.label("no_config")
        a.mov64_imm(Reg.R0, 0)
        a.exit()

    def prologue(self) -> None:
        """Find the active slot, remember its ``seq`` and point _CFG at its config value."""
        a = self.a
        a.mov64_reg(_CTX, Reg.R1)
        a.mov64_imm(Reg.R1, 0)
        a.stx_mem(BPF_DW, Reg.FP, Reg.R1, _S_TRY)
        a.label("attempt")
        a.ld_map_value(Reg.R1, self.control_map_fd, 0)
        a.ldx_mem(BPF_W, Reg.R2, Reg.R1, 0)
        a.alu64_imm(BPF_AND, Reg.R2, SHARED_SLOTS - 1)
        a.stx_mem(BPF_W, Reg.FP, Reg.R2, _KEY)
        a.ld_map_fd(Reg.R1, self.slots_map_fd)
        a.mov64_reg(Reg.R2, Reg.FP).alu64_imm(BPF_ADD, Reg.R2, _KEY)
        a.call(Helper.map_lookup_elem)
        a.jmp_imm(BPF_JEQ, Reg.R0, 0, "no_config")
        a.ldx_mem(BPF_W, Reg.R1, Reg.R0, 0)
        a.jmp_imm(BPF_JSET, Reg.R1, 1, "retry")  # being written: the writer switches to it only after
        a.stx_mem(BPF_DW, Reg.FP, Reg.R1, _S_SEQ)
        a.alu64_imm(BPF_ADD, Reg.R0, SHARED_SLOT_HEADER)
        a.mov64_reg(_CFG, Reg.R0)
        a.ldx_mem(BPF_W, _REP, _CFG, OFF_TYPES)

    def ret(self) -> None:
        """Return R0, the result, if the slot did not change meanwhile."""
        self.a.ja("seq_check")

    def finish(self) -> None:
        """The slot check every return goes through, and the retry."""
        a = self.a
        a.label("seq_check")
        # _CFG is the slot's config value, right after its seq: no register or spill of its own.
        a.ldx_mem(BPF_W, Reg.R2, _CFG, -SHARED_SLOT_HEADER)
        a.ldx_mem(BPF_DW, Reg.R3, Reg.FP, _S_SEQ)
        a.jmp_reg(BPF_JNE, Reg.R2, Reg.R3, "retry")
        a.exit()
        a.label("retry")
        a.ldx_mem(BPF_DW, Reg.R1, Reg.FP, _S_TRY)
        a.alu64_imm(BPF_ADD, Reg.R1, 1)
        a.stx_mem(BPF_DW, Reg.FP, Reg.R1, _S_TRY)
        a.jmp_imm(BPF_JLT, Reg.R1, SHARED_READ_ATTEMPTS, "attempt")
        a.mov64_imm(Reg.R0, 0)
        a.exit()

    def generate(self) -> list[Insn]:
        self.prologue()
        if self.base is L3Base.ETHERNET:
            self.bulk_ethernet()
        else:
            self.bulk_ip()
        self.bulk_ipv4()
        self.bulk_ipv6()
        # The exact path: R8 and R9 as it expects them (the bulk path leaves R9 alone until it
        # has decided, and gives up before it does).
        self.a.label("exact")
        self.a.mov64_imm(_OFF, self.l3)
        if self.base is L3Base.ETHERNET:
            self.ethernet()
        else:
            self.raw_ip()
        self.ipv4()
        self.ipv6()
        self.epilogue()
        self.finish()
        return self.a.assemble()


def generate_shared_rss_program(
    control_map_fd: int, slots_map_fd: int, base: L3Base = L3Base.ETHERNET, output: RssOutput = RssOutput.QUEUE
) -> list[Insn]:
    """Generate the steering program whose config an unprivileged process writes (:mod:`pytun_hash.bpf.shared`).

    Args:
        control_map_fd: a one-entry ``BPF_F_MMAPABLE`` array of 8 bytes whose first ``u32`` names the
            active slot.
        slots_map_fd: a ``BPF_F_MMAPABLE`` array of :data:`SHARED_SLOTS` values of
            :data:`SHARED_SLOT_HEADER` + :data:`CONFIG_VALUE_SIZE` bytes.
        base: TAP (Ethernet) or TUN (IP) framing.
        output: what the program returns.

    Returns:
        The instructions, for :meth:`pytun_hash.bpf.prog.Program.load` as a socket filter.
    """
    return _Gen(control_map_fd, slots_map_fd, base, output).generate()
