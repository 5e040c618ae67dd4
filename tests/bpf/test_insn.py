"""Golden encodings of the eBPF instruction encoder (no privileges needed).

Expected bytes are written out by hand from the eBPF instruction set (code, dst/src
nibbles, little-endian off and imm), not produced by the encoder under test.
"""

from __future__ import annotations

import pytest

from pytun_hash.bpf.insn import (
    BPF_ADD,
    BPF_B,
    BPF_DW,
    BPF_H,
    BPF_JEQ,
    BPF_JLT,
    BPF_JNE,
    BPF_JSET,
    BPF_LSH,
    BPF_TO_BE,
    BPF_W,
    BPF_XOR,
    Assembler,
    Helper,
    Insn,
    Reg,
    encode_program,
)
from pytun_hash.errors import ValidationError

R0, R1, R2, R3, R4, R6, R7, R10 = Reg.R0, Reg.R1, Reg.R2, Reg.R3, Reg.R4, Reg.R6, Reg.R7, Reg.R10


def hexbytes(text: str) -> bytes:
    return bytes.fromhex(text.replace("|", " "))


def test_return_constant_encoding() -> None:
    # "r0 = 2; exit": BPF_ALU64|BPF_MOV|BPF_K then BPF_JMP|BPF_EXIT, as the kernel lays out struct bpf_insn.
    code = Assembler().mov64_imm(R0, 2).exit().encode("little")
    assert code == hexbytes("b7 00 00 00 02 00 00 00 | 95 00 00 00 00 00 00 00")


def test_steer_map_program() -> None:
    # r6=r1; r7=map value (fd 5, off 0); r0=*(u32*)(r7+4); r1=*(u32*)(r7+0);
    # if r1==0 goto exit; r0=LD_ABS_B[37]; exit   (8 slots)
    a = Assembler()
    a.mov64_reg(R6, R1)
    a.ld_map_value(R7, 5, 0)
    a.ldx_mem(BPF_W, R0, R7, 4)
    a.ldx_mem(BPF_W, R1, R7, 0)
    a.jmp_imm(BPF_JEQ, R1, 0, "exit")
    a.ld_abs(BPF_B, 37)
    a.label("exit")
    a.exit()
    assert len(a) == 8
    assert a.encode("little") == hexbytes(
        "bf 16 00 00 00 00 00 00"
        "18 27 00 00 05 00 00 00"
        "00 00 00 00 00 00 00 00"
        "61 70 04 00 00 00 00 00"
        "61 71 00 00 00 00 00 00"
        "15 01 01 00 00 00 00 00"
        "30 00 00 00 25 00 00 00"
        "95 00 00 00 00 00 00 00"
    )


def test_steer_load_bytes_program() -> None:
    # bpf_skb_load_bytes(skb, 37, fp-8, 1), return the byte or 0  (12 slots)
    a = Assembler()
    a.mov64_reg(R6, R1).mov64_reg(R1, R6).mov64_imm(R2, 37)
    a.mov64_reg(R3, R10).alu64_imm(BPF_ADD, R3, -8).mov64_imm(R4, 1)
    a.call(Helper.skb_load_bytes)
    a.jmp_imm(BPF_JNE, R0, 0, "fail")
    a.ldx_mem(BPF_B, R0, R10, -8)
    a.exit()
    a.label("fail")
    a.mov64_imm(R0, 0)
    a.exit()
    assert len(a) == 12
    assert a.encode("little") == hexbytes(
        "bf 16 00 00 00 00 00 00"
        "bf 61 00 00 00 00 00 00"
        "b7 02 00 00 25 00 00 00"
        "bf a3 00 00 00 00 00 00"
        "07 03 00 00 f8 ff ff ff"
        "b7 04 00 00 01 00 00 00"
        "85 00 00 00 1a 00 00 00"
        "55 00 02 00 00 00 00 00"
        "71 a0 f8 ff 00 00 00 00"
        "95 00 00 00 00 00 00 00"
        "b7 00 00 00 00 00 00 00"
        "95 00 00 00 00 00 00 00"
    )


@pytest.mark.parametrize(
    ("emit", "expected"),
    [
        (lambda a: a.endian(BPF_TO_BE, R1, 16), "dc 01 00 00 10 00 00 00"),
        (lambda a: a.st_mem(BPF_W, R10, -4, 0), "62 0a fc ff 00 00 00 00"),
        (lambda a: a.stx_mem(BPF_B, R10, R3, -88), "73 3a a8 ff 00 00 00 00"),
        # BPF_STX | BPF_DW | BPF_ATOMIC = 0xdb, imm BPF_ADD: the lock xadd of libbpf's __sync_fetch_and_add.
        (lambda a: a.atomic_add(BPF_DW, R1, R2, 0), "db 21 00 00 00 00 00 00"),
        (lambda a: a.ldx_mem(BPF_H, R1, R10, -52), "69 a1 cc ff 00 00 00 00"),
        (lambda a: a.ldx_mem(BPF_DW, R2, R7, 8), "79 72 08 00 00 00 00 00"),
        (lambda a: a.alu64_imm(BPF_LSH, R1, 2), "67 01 00 00 02 00 00 00"),
        (lambda a: a.alu64_reg(BPF_XOR, R0, R1), "af 10 00 00 00 00 00 00"),
        (lambda a: a.alu64_reg(BPF_ADD, R1, R7), "0f 71 00 00 00 00 00 00"),
        (lambda a: a.alu32_imm(BPF_ADD, R0, -1), "04 00 00 00 ff ff ff ff"),
        (lambda a: a.mov32_reg(R0, R1), "bc 10 00 00 00 00 00 00"),
        (lambda a: a.jmp_imm(BPF_JSET, R2, 0x3FFF, 3), "45 02 03 00 ff 3f 00 00"),
        (lambda a: a.jmp_imm(BPF_JLT, R1, 38, -2), "a5 01 fe ff 26 00 00 00"),
        (lambda a: a.jmp_reg(BPF_JEQ, R1, R2, 1), "1d 21 01 00 00 00 00 00"),
        (lambda a: a.jmp32_imm(BPF_JEQ, R1, 4, 0), "16 01 00 00 04 00 00 00"),
        (lambda a: a.ja(5), "05 00 05 00 00 00 00 00"),
        (lambda a: a.ld_ind(BPF_W, R7, 12), "40 70 00 00 0c 00 00 00"),
        (lambda a: a.call(Helper.skb_load_bytes_relative), "85 00 00 00 44 00 00 00"),
        (lambda a: a.mov64_imm(R0, 0xFFFFFFFF), "b7 00 00 00 ff ff ff ff"),
        (
            lambda a: a.ld_map_fd(R1, 3),
            "18 11 00 00 03 00 00 00 | 00 00 00 00 00 00 00 00",
        ),
        (
            lambda a: a.ld_imm64(R2, 0x1122334455667788),
            "18 02 00 00 88 77 66 55 | 00 00 00 00 44 33 22 11",
        ),
    ],
)
def test_single_instruction_encodings(emit: object, expected: str) -> None:
    a = Assembler()
    emit(a)  # type: ignore[operator]
    assert a.encode("little") == hexbytes(expected)


def test_big_endian_layout_swaps_register_nibbles_and_fields() -> None:
    # On big-endian hosts dst is the high nibble and off/imm are big-endian.
    insn = Insn(0xBF, dst=6, src=1)
    assert insn.encode("big") == hexbytes("bf 61 00 00 00 00 00 00")
    insn = Insn(0x07, dst=3, off=0, imm=-8)
    assert insn.encode("big") == hexbytes("07 30 00 00 ff ff ff f8")
    assert Insn.decode(insn.encode("big"), "big") == insn


def test_decode_round_trip() -> None:
    a = Assembler().mov64_reg(R6, R1).ld_map_value(R7, 9, 16).ldx_mem(BPF_W, R0, R7, -4).exit()
    insns = a.assemble()
    raw = encode_program(insns, "little")
    assert [Insn.decode(raw[i : i + 8], "little") for i in range(0, len(raw), 8)] == insns


def test_labels_resolve_forward_and_backward() -> None:
    a = Assembler()
    a.label("top")
    a.mov64_imm(R0, 0)
    a.jmp_imm(BPF_JEQ, R0, 0, "end")  # slot 1 -> slot 4: off 2
    a.ld_imm64(R1, 1)  # slots 2-3
    a.label("end")
    a.ja("top")  # slot 4 -> slot 0: off -5
    insns = a.assemble()
    assert insns[1].off == 2
    assert insns[4].off == -5


def test_assembler_rejects_bad_input() -> None:
    with pytest.raises(ValidationError, match="undefined label"):
        Assembler().ja("nowhere").assemble()
    with pytest.raises(ValidationError, match="defined twice"):
        Assembler().label("x").label("x")
    with pytest.raises(ValidationError, match=r"R0\.\.R10"):
        Assembler().mov64_imm(11, 0)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="16-bit"):
        Insn(0x05, off=40000)
    with pytest.raises(ValidationError, match="32-bit"):
        Insn(0xB7, imm=1 << 32)
    with pytest.raises(ValidationError, match="64-bit form"):
        Assembler().ld_abs(BPF_DW, 0)
    with pytest.raises(ValidationError, match="conditional jump"):
        Assembler().jmp_imm(0x80, R0, 0, 1)
    a = Assembler().jmp_imm(BPF_JEQ, R0, 0, "far")
    for _ in range(40000):
        a.raw(Insn(0xB7))
    a.label("far")
    with pytest.raises(ValidationError, match="signed 16-bit"):
        a.assemble()
