"""An eBPF instruction encoder and a small assembler with labels.

Opcode constants carry the kernel's names (``include/uapi/linux/bpf_common.h`` and
``linux/bpf.h``). An instruction is 8 bytes: ``code``, a register byte (``dst`` in the low
nibble and ``src`` in the high nibble on little-endian hosts, swapped on big-endian ones),
a signed 16-bit ``off`` and a signed 32-bit ``imm`` in host byte order. ``ld_imm64`` takes
two slots. The :class:`Assembler` methods are named after the kernel's ``BPF_*`` macros
(``BPF_MOV64_IMM`` -> :meth:`Assembler.mov64_imm`), and jump targets may be labels, resolved
when the program is assembled.
"""

from __future__ import annotations

import enum
import struct
import sys
from collections.abc import Iterable

import attrs

from pytun_hash.errors import ValidationError

__all__ = [
    "Assembler",
    "Helper",
    "Insn",
    "Reg",
    "encode_program",
]

# Instruction classes.
BPF_LD = 0x00
BPF_LDX = 0x01
BPF_ST = 0x02
BPF_STX = 0x03
BPF_ALU = 0x04
BPF_JMP = 0x05
BPF_JMP32 = 0x06
BPF_ALU64 = 0x07

# Load/store sizes.
BPF_W = 0x00
BPF_H = 0x08
BPF_B = 0x10
BPF_DW = 0x18

# Load/store modes.
BPF_IMM = 0x00
BPF_ABS = 0x20
BPF_IND = 0x40
BPF_MEM = 0x60
BPF_ATOMIC = 0xC0

# ALU operations.
BPF_ADD = 0x00
BPF_SUB = 0x10
BPF_MUL = 0x20
BPF_DIV = 0x30
BPF_OR = 0x40
BPF_AND = 0x50
BPF_LSH = 0x60
BPF_RSH = 0x70
BPF_NEG = 0x80
BPF_MOD = 0x90
BPF_XOR = 0xA0
BPF_MOV = 0xB0
BPF_ARSH = 0xC0
BPF_END = 0xD0

# Jump operations.
BPF_JA = 0x00
BPF_JEQ = 0x10
BPF_JGT = 0x20
BPF_JGE = 0x30
BPF_JSET = 0x40
BPF_JNE = 0x50
BPF_JSGT = 0x60
BPF_JSGE = 0x70
BPF_CALL = 0x80
BPF_EXIT = 0x90
BPF_JLT = 0xA0
BPF_JLE = 0xB0
BPF_JSLT = 0xC0
BPF_JSLE = 0xD0

# Operand source.
BPF_K = 0x00
BPF_X = 0x08
# Byte-swap direction (BPF_END).
BPF_TO_LE = 0x00
BPF_TO_BE = 0x08

# ld_imm64 src_reg values.
BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2

# bpf_skb_load_bytes_relative() start_header.
BPF_HDR_START_MAC = 0
BPF_HDR_START_NET = 1

_ALU_OPS = frozenset(
    {BPF_ADD, BPF_SUB, BPF_MUL, BPF_DIV, BPF_OR, BPF_AND, BPF_LSH, BPF_RSH, BPF_MOD, BPF_XOR, BPF_MOV, BPF_ARSH}
)
_JMP_OPS = frozenset(
    {BPF_JEQ, BPF_JGT, BPF_JGE, BPF_JSET, BPF_JNE, BPF_JSGT, BPF_JSGE, BPF_JLT, BPF_JLE, BPF_JSLT, BPF_JSLE}
)
_SIZES = frozenset({BPF_W, BPF_H, BPF_B, BPF_DW})


class Reg(enum.IntEnum):
    """eBPF registers. R0 = return value, R1-R5 = arguments (clobbered by calls), R6-R9 =
    callee-saved, R10 = read-only frame pointer."""

    R0 = 0
    R1 = 1
    R2 = 2
    R3 = 3
    R4 = 4
    R5 = 5
    R6 = 6
    R7 = 7
    R8 = 8
    R9 = 9
    R10 = 10
    FP = 10  # alias of R10


class Helper(enum.IntEnum):
    """``BPF_FUNC_*`` helper ids (the ones socket filters may call that pytun_hash uses)."""

    map_lookup_elem = 1
    map_update_elem = 2
    get_prandom_u32 = 7
    get_smp_processor_id = 8
    skb_load_bytes = 26
    skb_load_bytes_relative = 68
    map_push_elem = 87


def _s16(value: int, what: str) -> int:
    if not -0x8000 <= value <= 0x7FFF:
        raise ValidationError(what, f"must fit a signed 16-bit field, got {value}")
    return value


def _s32(value: int, what: str) -> int:
    if not -0x80000000 <= value <= 0xFFFFFFFF:
        raise ValidationError(what, f"must fit a 32-bit field, got {value}")
    return value - (1 << 32) if value > 0x7FFFFFFF else value


@attrs.frozen
class Insn:
    """One 8-byte eBPF instruction slot.

    Attributes:
        code: opcode byte (class | size/op | mode/source).
        dst: destination register number (0-10).
        src: source register number (0-10), or a pseudo value for ``ld_imm64``.
        off: signed 16-bit offset.
        imm: signed 32-bit immediate (an unsigned value up to 0xffffffff is stored as its
            two's complement).
    """

    code: int
    dst: int = 0
    src: int = 0
    off: int = 0
    imm: int = 0

    def __attrs_post_init__(self) -> None:
        if not 0 <= self.code <= 0xFF:
            raise ValidationError("code", f"must be a byte, got {self.code}")
        for name, reg in (("dst", self.dst), ("src", self.src)):
            if not 0 <= reg <= 0xF:
                raise ValidationError(name, f"must fit 4 bits, got {reg}")
        _s16(self.off, "off")
        object.__setattr__(self, "imm", _s32(self.imm, "imm"))

    def encode(self, byteorder: str = sys.byteorder) -> bytes:
        """The 8 bytes the kernel reads for this slot, in ``byteorder`` (``"little"``/``"big"``)."""
        if byteorder == "little":
            return struct.pack("<BBhi", self.code, (self.src << 4) | self.dst, self.off, self.imm)
        return struct.pack(">BBhi", self.code, (self.dst << 4) | self.src, self.off, self.imm)

    @classmethod
    def decode(cls, raw: bytes, byteorder: str = sys.byteorder) -> Insn:
        """Parse 8 bytes written by :meth:`encode`.

        Raises:
            ValidationError: when ``raw`` is not 8 bytes.
        """
        if len(raw) != 8:
            raise ValidationError("insn", f"an instruction is 8 bytes, got {len(raw)}")
        if byteorder == "little":
            code, regs, off, imm = struct.unpack("<BBhi", raw)
            return cls(code, regs & 0xF, regs >> 4, off, imm)
        code, regs, off, imm = struct.unpack(">BBhi", raw)
        return cls(code, regs >> 4, regs & 0xF, off, imm)


def encode_program(insns: Iterable[Insn], byteorder: str = sys.byteorder) -> bytes:
    """Concatenate the encodings of ``insns``."""
    return b"".join(i.encode(byteorder) for i in insns)


Target = str | int
"""A jump target: a label name, or a relative offset in instruction slots (as the kernel counts)."""


@attrs.define
class _Pending:
    index: int
    target: str


class Assembler:
    """Accumulates instructions; jumps may name labels defined before or after them.

    Every method appends one instruction (two for the ``ld_imm64`` family) and returns
    ``self`` so calls can be chained. :meth:`assemble` resolves labels.

    Raises (from the emitting methods):
        ValidationError: for an invalid register, size, operation or out-of-range field.
    """

    def __init__(self) -> None:
        self._insns: list[Insn] = []
        self._labels: dict[str, int] = {}
        self._pending: list[_Pending] = []

    def __len__(self) -> int:
        return len(self._insns)

    # -- structure -------------------------------------------------------------------------

    def label(self, name: str) -> Assembler:
        """Define ``name`` at the next instruction slot.

        Raises:
            ValidationError: when ``name`` is already defined.
        """
        if name in self._labels:
            raise ValidationError("label", f"{name!r} is defined twice")
        self._labels[name] = len(self._insns)
        return self

    def has_label(self, name: str) -> bool:
        """True when ``name`` has been defined."""
        return name in self._labels

    def raw(self, insn: Insn) -> Assembler:
        """Append ``insn`` as is."""
        self._insns.append(insn)
        return self

    def _jump(self, code: int, dst: int, src: int, imm: int, target: Target) -> Assembler:
        if isinstance(target, str):
            self._pending.append(_Pending(len(self._insns), target))
            self._insns.append(Insn(code, dst, src, 0, imm))
        else:
            self._insns.append(Insn(code, dst, src, target, imm))
        return self

    def assemble(self) -> list[Insn]:
        """Return the instructions with every label reference resolved.

        Raises:
            ValidationError: for an undefined label or a jump farther than 32767 slots.
        """
        insns = list(self._insns)
        for p in self._pending:
            if p.target not in self._labels:
                raise ValidationError("label", f"jump to undefined label {p.target!r}")
            off = self._labels[p.target] - (p.index + 1)
            insns[p.index] = attrs.evolve(insns[p.index], off=_s16(off, f"jump to {p.target!r}"))
        return insns

    def encode(self, byteorder: str = sys.byteorder) -> bytes:
        """:meth:`assemble` then encode."""
        return encode_program(self.assemble(), byteorder)

    # -- ALU -------------------------------------------------------------------------------

    def alu64_imm(self, op: int, dst: Reg, imm: int) -> Assembler:
        """``BPF_ALU64_IMM(op, dst, imm)``: ``dst = dst op imm`` on 64 bits (imm sign-extended)."""
        return self.raw(Insn(BPF_ALU64 | _alu(op) | BPF_K, _reg(dst), 0, 0, imm))

    def alu64_reg(self, op: int, dst: Reg, src: Reg) -> Assembler:
        """``BPF_ALU64_REG(op, dst, src)``: ``dst = dst op src`` on 64 bits."""
        return self.raw(Insn(BPF_ALU64 | _alu(op) | BPF_X, _reg(dst), _reg(src)))

    def alu32_imm(self, op: int, dst: Reg, imm: int) -> Assembler:
        """``BPF_ALU32_IMM(op, dst, imm)``: 32-bit operation, upper half of ``dst`` zeroed."""
        return self.raw(Insn(BPF_ALU | _alu(op) | BPF_K, _reg(dst), 0, 0, imm))

    def alu32_reg(self, op: int, dst: Reg, src: Reg) -> Assembler:
        """``BPF_ALU32_REG(op, dst, src)``: 32-bit operation, upper half of ``dst`` zeroed."""
        return self.raw(Insn(BPF_ALU | _alu(op) | BPF_X, _reg(dst), _reg(src)))

    def mov64_imm(self, dst: Reg, imm: int) -> Assembler:
        """``BPF_MOV64_IMM(dst, imm)``."""
        return self.alu64_imm(BPF_MOV, dst, imm)

    def mov64_reg(self, dst: Reg, src: Reg) -> Assembler:
        """``BPF_MOV64_REG(dst, src)``."""
        return self.alu64_reg(BPF_MOV, dst, src)

    def mov32_imm(self, dst: Reg, imm: int) -> Assembler:
        """``BPF_MOV32_IMM(dst, imm)``: ``dst = (u32)imm``."""
        return self.alu32_imm(BPF_MOV, dst, imm)

    def mov32_reg(self, dst: Reg, src: Reg) -> Assembler:
        """``BPF_MOV32_REG(dst, src)``: ``dst = (u32)src``."""
        return self.alu32_reg(BPF_MOV, dst, src)

    def endian(self, to: int, dst: Reg, bits: int) -> Assembler:
        """``BPF_ENDIAN(BPF_TO_BE|BPF_TO_LE, dst, 16|32|64)``: byte-swap to ``to`` order and truncate."""
        if to not in (BPF_TO_BE, BPF_TO_LE) or bits not in (16, 32, 64):
            raise ValidationError("endian", f"need BPF_TO_BE/BPF_TO_LE and 16/32/64 bits, got {to}/{bits}")
        return self.raw(Insn(BPF_ALU | BPF_END | to, _reg(dst), 0, 0, bits))

    # -- memory ----------------------------------------------------------------------------

    def ldx_mem(self, size: int, dst: Reg, src: Reg, off: int) -> Assembler:
        """``BPF_LDX_MEM(size, dst, src, off)``: ``dst = *(size *)(src + off)``."""
        return self.raw(Insn(BPF_LDX | _size(size) | BPF_MEM, _reg(dst), _reg(src), off))

    def stx_mem(self, size: int, dst: Reg, src: Reg, off: int) -> Assembler:
        """``BPF_STX_MEM(size, dst, src, off)``: ``*(size *)(dst + off) = src``."""
        return self.raw(Insn(BPF_STX | _size(size) | BPF_MEM, _reg(dst), _reg(src), off))

    def atomic_add(self, size: int, dst: Reg, src: Reg, off: int) -> Assembler:
        """``BPF_ATOMIC_OP(size, BPF_ADD, dst, src, off)``: ``*(size *)(dst + off) += src``, atomically
        (the instruction once called ``BPF_XADD``; ``size`` is ``BPF_W`` or ``BPF_DW``)."""
        return self.raw(Insn(BPF_STX | _size(size) | BPF_ATOMIC, _reg(dst), _reg(src), off, BPF_ADD))

    def st_mem(self, size: int, dst: Reg, off: int, imm: int) -> Assembler:
        """``BPF_ST_MEM(size, dst, off, imm)``: ``*(size *)(dst + off) = imm``."""
        return self.raw(Insn(BPF_ST | _size(size) | BPF_MEM, _reg(dst), 0, off, imm))

    def ld_imm64(self, dst: Reg, value: int, *, pseudo: int = 0) -> Assembler:
        """``BPF_LD_IMM64_RAW(dst, pseudo, value)``: two slots, low 32 bits first."""
        if not -(1 << 63) <= value < (1 << 64):
            raise ValidationError("imm64", f"must fit 64 bits, got {value}")
        value &= (1 << 64) - 1
        self.raw(Insn(BPF_LD | BPF_DW | BPF_IMM, _reg(dst), pseudo, 0, value & 0xFFFFFFFF))
        return self.raw(Insn(0, 0, 0, 0, value >> 32))

    def ld_map_fd(self, dst: Reg, map_fd: int) -> Assembler:
        """``BPF_LD_MAP_FD(dst, map_fd)``: the verifier replaces the fd with the map pointer."""
        return self.ld_imm64(dst, map_fd, pseudo=BPF_PSEUDO_MAP_FD)

    def ld_map_value(self, dst: Reg, map_fd: int, offset: int) -> Assembler:
        """``BPF_LD_MAP_VALUE(dst, map_fd, offset)``: address of byte ``offset`` of element 0.

        The kernel allows this only on single-entry array maps (ENOTSUPP otherwise).
        """
        self.raw(Insn(BPF_LD | BPF_DW | BPF_IMM, _reg(dst), BPF_PSEUDO_MAP_VALUE, 0, map_fd))
        return self.raw(Insn(0, 0, 0, 0, offset))

    def ld_abs(self, size: int, imm: int) -> Assembler:
        """``BPF_LD_ABS(size, imm)``: ``r0 = ntoh(*(size *)(skb->data + imm))``; needs ctx in R6."""
        if size == BPF_DW:
            raise ValidationError("size", "LD_ABS has no 64-bit form")
        return self.raw(Insn(BPF_LD | _size(size) | BPF_ABS, 0, 0, 0, imm))

    def ld_ind(self, size: int, src: Reg, imm: int) -> Assembler:
        """``BPF_LD_IND(size, src, imm)``: like :meth:`ld_abs` at ``src + imm``."""
        if size == BPF_DW:
            raise ValidationError("size", "LD_IND has no 64-bit form")
        return self.raw(Insn(BPF_LD | _size(size) | BPF_IND, 0, _reg(src), 0, imm))

    # -- control flow ----------------------------------------------------------------------

    def jmp_imm(self, op: int, dst: Reg, imm: int, target: Target) -> Assembler:
        """``BPF_JMP_IMM(op, dst, imm, off)``: 64-bit compare with an immediate."""
        return self._jump(BPF_JMP | _jmp(op) | BPF_K, _reg(dst), 0, imm, target)

    def jmp_reg(self, op: int, dst: Reg, src: Reg, target: Target) -> Assembler:
        """``BPF_JMP_REG(op, dst, src, off)``: 64-bit compare of two registers."""
        return self._jump(BPF_JMP | _jmp(op) | BPF_X, _reg(dst), _reg(src), 0, target)

    def jmp32_imm(self, op: int, dst: Reg, imm: int, target: Target) -> Assembler:
        """``BPF_JMP32_IMM(op, dst, imm, off)``: compare the low 32 bits with an immediate."""
        return self._jump(BPF_JMP32 | _jmp(op) | BPF_K, _reg(dst), 0, imm, target)

    def ja(self, target: Target) -> Assembler:
        """``BPF_JMP_A(off)``: unconditional jump."""
        return self._jump(BPF_JMP | BPF_JA, 0, 0, 0, target)

    def call(self, helper: int) -> Assembler:
        """``BPF_EMIT_CALL(helper)``: arguments in R1-R5, result in R0, R1-R5 clobbered."""
        return self.raw(Insn(BPF_JMP | BPF_CALL, 0, 0, 0, int(helper)))

    def exit(self) -> Assembler:
        """``BPF_EXIT_INSN()``: return R0."""
        return self.raw(Insn(BPF_JMP | BPF_EXIT))


def _reg(r: int) -> int:
    if not 0 <= int(r) <= 10:
        raise ValidationError("register", f"must be R0..R10, got {r!r}")
    return int(r)


def _alu(op: int) -> int:
    if op not in _ALU_OPS:
        raise ValidationError("op", f"not an ALU operation with operands: {op:#x}")
    return op


def _jmp(op: int) -> int:
    if op not in _JMP_OPS:
        raise ValidationError("op", f"not a conditional jump operation: {op:#x}")
    return op


def _size(size: int) -> int:
    if size not in _SIZES:
        raise ValidationError("size", f"must be BPF_B, BPF_H, BPF_W or BPF_DW, got {size:#x}")
    return size
