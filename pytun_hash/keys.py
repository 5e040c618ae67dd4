"""Toeplitz keys: their size, the published ones by name, random ones, and the one parser of keys users write.

Light on purpose (the standard library only): ``pytun-hash hash --key microsoft`` needs this and the
model, not the typed configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pytun_hash.errors import ValidationError, shorten

__all__ = [
    "KNOWN_KEYS",
    "MAX_KEY_SIZE",
    "MICROSOFT_RSS_KEY",
    "generate_key",
    "kernel_key_length",
    "known_key_name",
    "parse_key",
    "spec_key_length",
]

#: The longest Toeplitz key, in bytes (virtio's ``rss_max_key_size`` minimum and every revision's maximum).
MAX_KEY_SIZE = 40

#: The well-known 40-byte Toeplitz key from Microsoft's "Verifying the RSS Hash Calculation"
#: (also Intel 82599 and DPDK's default). For tests and interop only: a published key lets
#: anyone craft flows that collide on one queue, so nothing in pytun_hash defaults to it.
MICROSOFT_RSS_KEY = bytes.fromhex("6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa")


def generate_key(length: int = MAX_KEY_SIZE) -> bytes:
    """Return ``length`` random key bytes from ``os.urandom``.

    Raises:
        ValidationError: when ``length`` is not an integer in 1..40.
    """
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_KEY_SIZE:
        raise ValidationError("key", f"length must be 1..{MAX_KEY_SIZE} bytes, got {shorten(length)}")
    return os.urandom(length)


#: Keys that may be given by name. Both are public: anyone can craft flows that collide under
#: them, so use them for tests and interoperability only.
KNOWN_KEYS: Mapping[str, bytes] = {
    "microsoft": MICROSOFT_RSS_KEY,
    # A 16-bit pattern repeated: hash(a, b) == hash(b, a) for every flow (both directions on one queue).
    "symmetric": bytes.fromhex("6d5a") * (MAX_KEY_SIZE // 2),
}


def known_key_name(key: bytes) -> str | None:
    """The name of ``key`` in :data:`KNOWN_KEYS` (as stored: zero-padded to 40 bytes), or None."""
    padded = bytes(key).ljust(MAX_KEY_SIZE, b"\0")
    return next((name for name, known in KNOWN_KEYS.items() if known.ljust(MAX_KEY_SIZE, b"\0") == padded), None)


def parse_key(text: str, field: str = "key") -> bytes:
    """A key given as hex (``6d5a56...``, colons and spaces allowed), a name in :data:`KNOWN_KEYS`,
    or ``random`` (40 fresh bytes from ``os.urandom``).

    The one parser of keys a user writes: ``--key`` and the ``key`` of a config file both come here.

    Returns:
        1 to 40 bytes.

    Raises:
        ValidationError: naming ``field``, for bad hex, no bytes at all (an empty key would be all
            zero: every flow on one queue) or more than 40 bytes.
    """
    name = text.strip().lower()
    if name in KNOWN_KEYS:
        return KNOWN_KEYS[name]
    if name == "random":
        return generate_key()
    try:
        raw = bytes.fromhex(name.replace(":", "").replace(" ", "").removeprefix("0x"))
    except ValueError:
        known = ", ".join([*KNOWN_KEYS, "random"])
        raise ValidationError(field, f"expected hexadecimal bytes or one of {known}, got {shorten(text)}") from None
    if not raw:
        # Padded to 40 zero bytes, an empty key hashes every flow to 0: all of them on one queue.
        raise ValidationError(
            field, f"a key has 1..{MAX_KEY_SIZE} bytes, got none (an empty key puts every flow on one queue)"
        )
    if len(raw) > MAX_KEY_SIZE:
        raise ValidationError(field, f"a key has 1..{MAX_KEY_SIZE} bytes, got {len(raw)}")
    return raw


# The virtio hash-type bits (pytun_hash._abi.virtio_net.HashType), as plain numbers: this module stays
# free of the ABI package.
_IPV4, _TCPV4, _UDPV4, _IPV6, _TCPV6, _UDPV6, _IP_EX, _TCP_EX, _UDP_EX = (1 << i for i in range(9))


def kernel_key_length(types: int) -> int:
    """Key bytes the kernel series copies for ``types``: ``40 if types & 0x7 else 4``.

    This is the series' ``virtio_net_hash_key_length()`` as written (it mixes hash-report
    values with hash-type bits); every revision from the RFC to v12 has it.
    """
    return MAX_KEY_SIZE if int(types) & 0x7 else 4


def spec_key_length(types: int) -> int:
    """Key bytes the virtio specification needs for ``types``: the longest input plus 4 (0 when empty)."""
    t = int(types)
    if t & (_TCPV6 | _UDPV6 | _TCP_EX | _UDP_EX):
        return 40
    if t & (_IPV6 | _IP_EX):
        return 36
    if t & (_TCPV4 | _UDPV4):
        return 16
    if t & _IPV4:
        return 12
    return 0
