"""Steering programs for the layered policy: steer a chosen flow set, fall back to RSS otherwise.

Under :attr:`~pytun_hash.device.SteeringPolicy.LAYERED` (v10 and later) native RSS stays in force
under a steering program; the program takes precedence, and a frame for which it returns
``TUN_STEERINGEBPF_FALLBACK`` (-1, :data:`FALLBACK_RETURN` as the u32 the kernel compares) goes to
RSS (or automatic selection without it). :func:`generate_fallback_program` builds such a program
from :class:`PortRule` values: a frame whose IPv4 or IPv6 TCP/UDP destination port is in a rule's
set goes to that rule's queue (the first matching rule wins); every other frame falls back.

What falls back, besides frames no rule matches: non-IP frames, VLAN-tagged frames, IPv4 fragments
(no ports to read), IPv6 packets whose next header is not TCP or UDP (extension headers are not
walked) and frames cut short. On kernels before v10 the same return value is a queue number
(``(u16)0xffffffff % queues``), so such a program only makes sense with the layered policy.

Packet bytes are copied with ``bpf_skb_load_bytes_relative`` from the MAC header (TAP) or the
network header (TUN), as :mod:`pytun_hash.bpf.rss_program` does, so the program behaves alike on
the tun transmit path and under ``BPF_PROG_TEST_RUN`` (which strips the Ethernet header from
``skb->data`` but keeps the MAC header pointer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pytun_hash._abi.v3 import TUN_STEERINGEBPF_FALLBACK
from pytun_hash.bpf.insn import (
    BPF_ADD,
    BPF_AND,
    BPF_B,
    BPF_H,
    BPF_HDR_START_MAC,
    BPF_HDR_START_NET,
    BPF_JEQ,
    BPF_JLT,
    BPF_JNE,
    BPF_JSET,
    BPF_LSH,
    BPF_RSH,
    BPF_TO_BE,
    Assembler,
    Helper,
    Insn,
    Reg,
)
from pytun_hash.bpf.prog import Program
from pytun_hash.bpf.rss_program import L3Base
from pytun_hash.errors import ValidationError

__all__ = [
    "FALLBACK_RETURN",
    "IPPROTO_TCP",
    "IPPROTO_UDP",
    "MAX_RULE_PORTS",
    "MAX_STEERING_QUEUE",
    "PortRule",
    "generate_fallback_program",
    "load_fallback_program",
]

#: ``TUN_STEERINGEBPF_FALLBACK`` as the u32 a program returns (and ``BPF_PROG_TEST_RUN`` reports).
FALLBACK_RETURN = TUN_STEERINGEBPF_FALLBACK & 0xFFFFFFFF
IPPROTO_TCP = 6
IPPROTO_UDP = 17
#: The highest queue a rule may name (tun has at most 256 queues).
MAX_STEERING_QUEUE = 255
#: Ports over all rules: every port is one compare-and-jump, unrolled.
MAX_RULE_PORTS = 4096

_ETH_P_IP = 0x0800
_ETH_P_IPV6 = 0x86DD
_CTX = Reg.R6
_OFF = Reg.R7  # the offset of the header being read, relative to the copy's start header
_PROTO = Reg.R8
_DPORT = Reg.R9
_HDR = -64  # the L2 or L3 header copy (up to 40 bytes)
_PORTS = -8  # source and destination port


@dataclass(frozen=True)
class PortRule:
    """Steer frames whose TCP/UDP destination port is in ``ports`` to ``queue``.

    Args:
        ports: destination ports, 0..65535 (at least one).
        queue: the queue number returned (tun takes it modulo the attached queue count).
        protocols: the L4 protocols the rule matches, among ``IPPROTO_TCP`` (6) and ``IPPROTO_UDP`` (17).

    Raises:
        ValidationError: for an empty or out-of-range port set, a queue outside 0..255, or another protocol.
    """

    ports: frozenset[int]
    queue: int
    protocols: frozenset[int] = field(default=frozenset({IPPROTO_TCP, IPPROTO_UDP}))

    def __post_init__(self) -> None:
        ports = _int_set("ports", self.ports, 0, 0xFFFF)
        if not ports:
            raise ValidationError("ports", "a rule needs at least one destination port")
        protocols = _int_set("protocols", self.protocols, 0, 0xFF)
        if not protocols or not protocols <= {IPPROTO_TCP, IPPROTO_UDP}:
            raise ValidationError(
                "protocols", f"must be a non-empty subset of {{6 (TCP), 17 (UDP)}}, got {sorted(protocols)}"
            )
        q = self.queue
        if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= MAX_STEERING_QUEUE:
            raise ValidationError("queue", f"must be an integer 0..{MAX_STEERING_QUEUE}, got {q!r}")
        object.__setattr__(self, "ports", ports)
        object.__setattr__(self, "protocols", protocols)


def _int_set(name: str, values: Iterable[int], low: int, high: int) -> frozenset[int]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise ValidationError(name, f"expected a set of integers, got {values!r}")
    out = frozenset(values)
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise ValidationError(name, f"each must be an integer {low}..{high}, got {v!r}")
    return out


class _Gen:
    def __init__(self, base: L3Base) -> None:
        self.a = Assembler()
        self.hdr = BPF_HDR_START_MAC if base is L3Base.ETHERNET else BPF_HDR_START_NET

    def load(self, offset_reg: Reg | None, stack: int, length: int) -> None:
        """``bpf_skb_load_bytes_relative(ctx, offset, fp + stack, length, hdr)``; fall back on failure."""
        a = self.a
        a.mov64_reg(Reg.R1, _CTX)
        if offset_reg is None:
            a.mov64_imm(Reg.R2, 0)
        else:
            a.mov64_reg(Reg.R2, offset_reg)
        a.mov64_reg(Reg.R3, Reg.FP).alu64_imm(BPF_ADD, Reg.R3, stack)
        a.mov64_imm(Reg.R4, length).mov64_imm(Reg.R5, self.hdr)
        a.call(Helper.skb_load_bytes_relative)
        a.jmp_imm(BPF_JNE, Reg.R0, 0, "fallback")

    def be16(self, dst: Reg, stack: int) -> None:
        self.a.ldx_mem(BPF_H, dst, Reg.FP, stack).endian(BPF_TO_BE, dst, 16)


def generate_fallback_program(rules: Sequence[PortRule], base: L3Base = L3Base.ETHERNET) -> list[Insn]:
    """The instructions of a steering program that applies ``rules`` and falls back otherwise.

    Args:
        rules: checked in order; the first whose protocol and destination port match gives the queue.
            An empty sequence gives a program that always falls back.
        base: ``ETHERNET`` for a TAP device, ``IP`` for a TUN device (``IFF_NO_PI``).

    Returns:
        Instructions for :meth:`~pytun_hash.bpf.prog.Program.load` (a socket filter); the program
        returns a rule's queue or :data:`FALLBACK_RETURN`.

    Raises:
        ValidationError: for a rule that is not a :class:`PortRule`, a bad ``base``, or more than
            :data:`MAX_RULE_PORTS` ports over all rules.
    """
    if isinstance(rules, str | bytes) or not isinstance(rules, Sequence):
        raise ValidationError("rules", f"expected a sequence of PortRule, got {rules!r}")
    for rule in rules:
        if not isinstance(rule, PortRule):
            raise ValidationError("rules", f"expected PortRule values, got {rule!r}")
    if not isinstance(base, L3Base):
        raise ValidationError("base", f"expected L3Base.ETHERNET or L3Base.IP, got {base!r}")
    total = sum(len(rule.ports) for rule in rules)
    if total > MAX_RULE_PORTS:
        raise ValidationError("rules", f"at most {MAX_RULE_PORTS} ports over all rules, got {total}")

    g = _Gen(base)
    a = g.a
    a.mov64_reg(_CTX, Reg.R1)
    if base is L3Base.ETHERNET:
        g.load(None, _HDR, 14)
        g.be16(Reg.R1, _HDR + 12)
        a.mov64_imm(_OFF, 14)
        a.jmp_imm(BPF_JEQ, Reg.R1, _ETH_P_IP, "v4")
        a.jmp_imm(BPF_JEQ, Reg.R1, _ETH_P_IPV6, "v6")
        a.ja("fallback")
    else:
        g.load(None, _HDR, 1)
        a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _HDR).alu64_imm(BPF_RSH, Reg.R1, 4)
        a.mov64_imm(_OFF, 0)
        a.jmp_imm(BPF_JEQ, Reg.R1, 4, "v4")
        a.jmp_imm(BPF_JEQ, Reg.R1, 6, "v6")
        a.ja("fallback")
    # IPv4: version 4, a header of at least 20 bytes, not a fragment.
    a.label("v4")
    g.load(_OFF, _HDR, 20)
    a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _HDR)
    a.mov64_reg(Reg.R2, Reg.R1).alu64_imm(BPF_RSH, Reg.R2, 4)
    a.jmp_imm(BPF_JNE, Reg.R2, 4, "fallback")
    a.alu64_imm(BPF_AND, Reg.R1, 0x0F)
    a.jmp_imm(BPF_JLT, Reg.R1, 5, "fallback")
    g.be16(Reg.R2, _HDR + 6)
    a.jmp_imm(BPF_JSET, Reg.R2, 0x3FFF, "fallback")  # MF or a fragment offset: no ports here
    a.ldx_mem(BPF_B, _PROTO, Reg.FP, _HDR + 9)
    a.alu64_imm(BPF_LSH, Reg.R1, 2)
    a.alu64_reg(BPF_ADD, _OFF, Reg.R1)
    a.ja("l4")
    # IPv6: version 6, TCP or UDP right after the fixed header.
    a.label("v6")
    g.load(_OFF, _HDR, 40)
    a.ldx_mem(BPF_B, Reg.R1, Reg.FP, _HDR).alu64_imm(BPF_RSH, Reg.R1, 4)
    a.jmp_imm(BPF_JNE, Reg.R1, 6, "fallback")
    a.ldx_mem(BPF_B, _PROTO, Reg.FP, _HDR + 6)
    a.alu64_imm(BPF_ADD, _OFF, 40)
    a.label("l4")
    a.jmp_imm(BPF_JEQ, _PROTO, IPPROTO_TCP, "ports")
    a.jmp_imm(BPF_JNE, _PROTO, IPPROTO_UDP, "fallback")
    a.label("ports")
    g.load(_OFF, _PORTS, 4)
    g.be16(_DPORT, _PORTS + 2)
    for i, rule in enumerate(rules):
        if len(rule.protocols) == 1:
            (proto,) = rule.protocols
            a.jmp_imm(BPF_JNE, _PROTO, proto, f"next{i}")
        for port in sorted(rule.ports):
            a.jmp_imm(BPF_JEQ, _DPORT, port, f"queue{i}")
        a.label(f"next{i}")
    a.label("fallback")
    a.mov32_imm(Reg.R0, TUN_STEERINGEBPF_FALLBACK)  # zero-extended: 0xffffffff
    a.exit()
    for i, rule in enumerate(rules):
        a.label(f"queue{i}")
        a.mov64_imm(Reg.R0, rule.queue)
        a.exit()
    return a.assemble()


def load_fallback_program(
    rules: Sequence[PortRule], base: L3Base = L3Base.ETHERNET, *, name: str = "layered_steer"
) -> Program:
    """Generate (:func:`generate_fallback_program`) and load the program; attach its fd with
    ``device.attach_steering_program(program.fd)`` under the layered policy.

    Raises:
        ValidationError: as :func:`generate_fallback_program`.
        VerifierError, PrivilegeError, BpfError: as :meth:`~pytun_hash.bpf.prog.Program.load`.
    """
    return Program.load(generate_fallback_program(rules, base), name=name)
