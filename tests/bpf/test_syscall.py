"""bpf(2) from ctypes: syscall numbers, maps, programs, verifier errors, test runs, ids and fd hygiene."""

from __future__ import annotations

import errno
import os

import pytest

from pytun_hash.bpf.insn import BPF_B, BPF_JEQ, BPF_W, Assembler, Reg
from pytun_hash.bpf.maps import ArrayMap, ArrayOfMaps, map_ids
from pytun_hash.bpf.prog import Program, prog_ids
from pytun_hash.bpf.syscall import BPF_SYSCALL_NUMBERS, BpfCmd, MapFlag, ProgType, bpf_error, bpf_syscall_number
from pytun_hash.errors import BpfError, PrivilegeError, ValidationError, VerifierError
from tests.bpf.conftest import wait_released
from tests.hardening.conftest import no_syscalls

R0, R1, R6, R7 = Reg.R0, Reg.R1, Reg.R6, Reg.R7


# ----------------------------------------------------------------------------- no privileges


@pytest.mark.parametrize(
    ("machine", "pointer_size", "multiarch", "expected"),
    [
        ("x86_64", 8, "", 321),
        ("x86_64", 4, "i386-linux-gnu", 357),
        ("x86_64", 4, "x86_64-linux-gnux32", 0x40000000 + 321),
        ("i686", 4, "", 357),
        ("aarch64", 8, "", 280),
        ("aarch64", 4, "", 386),
        ("armv7l", 4, "", 386),
        ("riscv64", 8, "", 280),
        ("loongarch64", 8, "", 280),
        ("ppc64le", 8, "", 361),
        ("ppc", 4, "", 361),
        ("s390x", 8, "", 351),
        ("mips64", 8, "", 5315),
        ("mips64el", 4, "mips64el-linux-gnuabin32", 6319),
        ("mipsel", 4, "", 4355),
        ("sparc64", 8, "", 349),
        ("parisc", 4, "", 341),
        ("alpha", 8, "", 515),
    ],
)
def test_syscall_numbers(machine: str, pointer_size: int, multiarch: str, expected: int) -> None:
    assert bpf_syscall_number(machine, pointer_size=pointer_size, multiarch=multiarch) == expected


def test_syscall_number_of_this_host_and_unknown_machines() -> None:
    assert bpf_syscall_number() in BPF_SYSCALL_NUMBERS.values()
    with pytest.raises(ValueError, match="vax"):
        bpf_syscall_number("vax")


def test_errors_are_typed() -> None:
    denied = bpf_error(BpfCmd.BPF_PROG_LOAD, errno.EPERM)
    assert isinstance(denied, PrivilegeError)
    assert denied.errno == errno.EPERM and denied.request == "bpf(BPF_PROG_LOAD)"
    assert "CAP_BPF" in str(denied)
    big = bpf_error(BpfCmd.BPF_MAP_UPDATE_ELEM, errno.E2BIG)
    assert isinstance(big, BpfError) and "max_entries" in str(big)


# ----------------------------------------------------------------------------- kernel


@pytest.mark.bpf
def test_array_map_update_lookup_and_bounds() -> None:
    with ArrayMap.create(12, 4, name="pth_test") as m:
        assert m.lookup(3) == bytes(12)
        m.update(3, b"abcdefghijkl")
        assert m.lookup(3) == b"abcdefghijkl"
        info = m.info()
        assert (info.value_size, info.max_entries, info.name) == (12, 4, "pth_test")
        assert info.id in map_ids()
        with pytest.raises(ValidationError):
            m.update(4, bytes(12))
        with pytest.raises(ValidationError):
            m.update(0, bytes(11))
    assert m.closed
    with pytest.raises(BpfError) as exc:
        _ = m.fd
    assert exc.value.errno == errno.EBADF
    m.close()  # idempotent


@pytest.mark.bpf
def test_mmapable_array_shares_memory_with_the_kernel() -> None:
    with ArrayMap.create(12, 3, mmapable=True) as m, m.mmap() as view:
        assert m.elem_size == 16
        view.write(1, b"hello")
        assert m.lookup(1)[:5] == b"hello"
        m.update(2, b"0123456789ab")
        assert view.read(2) == b"0123456789ab"
        with pytest.raises(ValidationError):
            view.write(0, bytes(13))
    with ArrayMap.create(4, 1) as plain, pytest.raises(ValidationError, match="MMAPABLE"):
        plain.mmap()
    assert MapFlag.BPF_F_MMAPABLE == 1 << 10


@pytest.mark.bpf
def test_array_of_maps_swaps_inner_maps() -> None:
    with ArrayMap.create(8) as a, ArrayMap.create(8) as b, ArrayOfMaps.create(a, 2) as outer:
        outer.set(0, a)
        assert outer.lookup_id(0) == a.id
        outer.set(0, b)
        assert outer.lookup_id(0) == b.id
        with pytest.raises(BpfError) as exc:
            outer.lookup_id(1)
        assert exc.value.errno == errno.ENOENT
        with ArrayMap.create(16) as wrong, pytest.raises(BpfError) as exc:
            outer.set(1, wrong)
        assert exc.value.errno == errno.EINVAL
        outer.clear(0)
        with pytest.raises(BpfError):
            outer.lookup_id(0)


@pytest.mark.bpf
def test_constant_program_loads_and_runs() -> None:
    with Program.load(Assembler().mov64_imm(R0, 2).exit().assemble(), name="pth_const") as prog:
        result = prog.test_run(bytes(60), repeat=10)
        assert result.retval == 2
        assert result.duration_ns > 0
        info = prog.info()
        assert info.prog_type == ProgType.BPF_PROG_TYPE_SOCKET_FILTER
        assert info.xlated_insns == 2 and info.name == "pth_const"
        assert info.id in prog_ids()
        with pytest.raises(ValidationError, match="14"):
            prog.test_run(bytes(10))


@pytest.mark.bpf
def test_map_value_program_reads_its_map() -> None:
    # A program reading its map value directly: r0 = value[1] unless value[0] is set, then the byte at L3 offset 23.
    with ArrayMap.create(8, 1) as cfg:
        a = Assembler()
        a.mov64_reg(R6, R1).ld_map_value(R7, cfg.fd, 0)
        a.ldx_mem(BPF_W, R0, R7, 4).ldx_mem(BPF_W, R1, R7, 0)
        a.jmp_imm(BPF_JEQ, R1, 0, "out").ld_abs(BPF_B, 23).label("out").exit()
        with Program.load(a.assemble()) as prog:
            frame = bytes(range(60))
            cfg.update(0, (0).to_bytes(4, "little") + (7).to_bytes(4, "little"))
            assert prog.test_run(frame).retval == 7
            cfg.update(0, (1).to_bytes(4, "little") + (7).to_bytes(4, "little"))
            assert prog.test_run(frame).retval == 23 + 14  # the test run strips the Ethernet header
            assert prog.info().map_ids == (cfg.id,)


@pytest.mark.bpf
def test_map_value_access_needs_a_single_entry_array() -> None:
    with ArrayMap.create(8, 4) as cfg:
        a = Assembler().ld_map_value(R7, cfg.fd, 0).ldx_mem(BPF_W, R0, R7, 0).exit()
        with pytest.raises(BpfError) as exc:
            Program.load(a.assemble())
        # ENOTSUPP: array_map_direct_value_addr() refuses arrays of more than one entry.
        assert exc.value.errno == 524


@pytest.mark.bpf
def test_verifier_rejection_carries_the_log() -> None:
    with pytest.raises(VerifierError) as exc:
        Program.load(Assembler().exit().assemble())
    assert exc.value.errno == errno.EACCES
    assert "R0 !read_ok" in exc.value.log
    assert "R0 !read_ok" in str(exc.value)
    with pytest.raises(VerifierError) as exc:
        Program.load(Assembler().ld_abs(BPF_B, 0).exit().assemble(), log_level=1)
    assert "R6 !read_ok" in exc.value.log


@pytest.mark.bpf
def test_verbose_log_on_success() -> None:
    with Program.load(Assembler().mov64_imm(R0, 0).exit().assemble(), log_level=2) as prog:
        assert "processed 2 insns" in prog.verifier_log


@pytest.mark.bpf
def test_other_program_types_load_too() -> None:
    insns = Assembler().mov64_imm(R0, 0).exit().assemble()
    with Program.load(insns, prog_type=ProgType.BPF_PROG_TYPE_SCHED_CLS) as prog:
        assert prog.info().prog_type == ProgType.BPF_PROG_TYPE_SCHED_CLS


@pytest.mark.bpf
def test_objects_are_released_on_close() -> None:
    with ArrayMap.create(8) as m:
        a = Assembler().ld_map_value(R7, m.fd, 0).ldx_mem(BPF_W, R0, R7, 0).exit()
        prog = Program.load(a.assemble())
        ids = ({prog.id}, {m.id})
    fds_before = len(os.listdir("/proc/self/fd"))
    prog.close()
    assert len(os.listdir("/proc/self/fd")) == fds_before - 1
    assert wait_released(*ids) == (set(), set())


def test_bad_inputs_are_refused_before_any_syscall() -> None:
    # No bpf(2) privilege needed: nothing reaches the kernel.
    with no_syscalls():
        with pytest.raises(ValidationError, match="multiple of 8"):
            Program.load(b"\x95\x00\x00")
        with pytest.raises(ValidationError, match="name"):
            ArrayMap.create(4, 1, name="a name with spaces")
        with pytest.raises(ValidationError):
            ArrayMap.create(0, 1)
