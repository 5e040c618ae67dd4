"""Argument conversions of the commands that only compute (``hash``, ``predict``) and of every other.

The light half of :mod:`pytun_hash.cli.common`: nothing here imports device, eBPF or attrs code, so
``pytun-hash hash`` starts about as fast as ``pytun-hash --help``. :mod:`~pytun_hash.cli.common`
re-exports every name.
"""

from __future__ import annotations

import argparse
import re

from pytun_hash._abi.revision import Revision
from pytun_hash._abi.virtio_net import HashType
from pytun_hash.errors import ValidationError, shorten
from pytun_hash.model.classify import Semantics
from pytun_hash.model.flow import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP
from pytun_hash.model.packet import Framing

__all__ = [
    "ALL_TYPES",
    "MAX_INT_DIGITS",
    "int_arg",
    "parse_framing",
    "parse_int",
    "parse_revision",
    "parse_semantics",
    "protocol_number",
]

_PROTOCOLS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP, "icmp": IPPROTO_ICMP}
#: The hash types a command enables when none are given: the six IPv4/IPv6 types every revision has.
ALL_TYPES = HashType.supported_by_kernel_series()


def parse_revision(text: str) -> Revision:
    """``rfc``, ``v3`` ... ``v11``, ``v12`` (argparse type)."""
    try:
        return Revision.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(exc.rule if isinstance(exc, ValidationError) else str(exc)) from None


def parse_semantics(text: str) -> Semantics:
    """``spec`` or ``rfc-2023`` (argparse type)."""
    try:
        return Semantics(text.strip().lower())
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown semantics {text!r}: use spec or rfc-2023") from None


def parse_framing(text: str) -> Framing:
    """``ethernet`` (TAP frames) or ``ip`` (TUN packets) (argparse type)."""
    value = text.strip().lower()
    if value in ("ethernet", "eth", "tap"):
        return Framing.ETHERNET
    if value in ("ip", "raw", "tun"):
        return Framing.IP
    raise argparse.ArgumentTypeError(f"unknown framing {text!r}: use ethernet or ip")


#: Digits (and a sign) an integer argument may have; every number the CLI takes (ports, queues,
#: uids, table lengths, seeds) fits in 64 bits, which is 20 digits.
MAX_INT_DIGITS = 20
_DECIMAL = re.compile(r"-?[0-9]+")
_PREFIXED = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|[0-9]+)")


def parse_int(text: str, field: str, *, prefixed: bool = False) -> int:
    """An integer a user typed: ASCII decimal digits with an optional leading ``-`` (with ``prefixed``
    also ``0x``/``0o``/``0b`` forms), at most :data:`MAX_INT_DIGITS` digits.

    The one parser of numbers on the command line: ``int()`` alone takes digits of any script
    (Arabic-Indic ``"\\u0661\\u0660\\u0660\\u0660"`` is 1000, a fullwidth ``"\\uff10"`` is 0),
    surrounding whitespace, ``_`` and ``+``, so an identifier would not be what it looks like;
    and it spends quadratic time on thousands of digits.

    Raises:
        ValidationError: naming ``field``.
    """
    if len(text) > MAX_INT_DIGITS + 3:
        raise ValidationError(
            field, f"expected a number of at most {MAX_INT_DIGITS} digits, got {len(text)} characters"
        )
    if not (_PREFIXED if prefixed else _DECIMAL).fullmatch(text):
        raise ValidationError(field, f"expected a number in ASCII digits, got {shorten(text)}")
    try:
        return int(text, 0 if prefixed else 10)
    except ValueError:  # "010" with prefixed: int() refuses leading zeros in base 0
        raise ValidationError(field, f"not a number: {shorten(text)}") from None


def int_arg(text: str) -> int:
    """:func:`parse_int` as an argparse type: its refusal becomes the usage error of the option.

    Raises:
        argparse.ArgumentTypeError: with the rule :func:`parse_int` broke.
    """
    try:
        return parse_int(text, "argument")
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.rule) from None


def protocol_number(text: str, version: int) -> int:
    """An IP protocol: ``tcp``, ``udp``, ``icmp`` (ICMPv6 for IPv6) or a number 0..255.

    Raises:
        ValidationError: (field ``protocol``) for anything else.
    """
    name = text.strip().lower()
    if name in ("icmp", "icmpv6", "icmp6"):
        return IPPROTO_ICMPV6 if version == 6 else IPPROTO_ICMP
    if name in _PROTOCOLS:
        return _PROTOCOLS[name]
    try:
        number = parse_int(name, "protocol", prefixed=True)
    except ValidationError:
        raise ValidationError("protocol", f"use tcp, udp, icmp or a protocol number, got {shorten(text)}") from None
    if not 0 <= number <= 255:
        raise ValidationError("protocol", f"protocol numbers are 0..255, got {number}")
    return number
