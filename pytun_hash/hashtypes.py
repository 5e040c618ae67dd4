"""Hash types as users write them: virtio's names (``TCPV4``), ethtool's flow types (``tcp4``), ``all``, bits.

Light on purpose (the standard library and the ABI's enum only): ``pytun-hash hash --types tcp4``
needs this and the model, not the typed configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pytun_hash._abi.virtio_net import HashType
from pytun_hash.errors import ValidationError, shorten

__all__ = ["DEFAULT_HASH_TYPES", "ETHTOOL_FLOW_TYPES", "parse_hash_types"]

#: ethtool's flow-type names (``ethtool -n/-N ... rx-flow-hash tcp4``) accepted as aliases of the hash
#: types they hash by; the _EX types have none.
ETHTOOL_FLOW_TYPES: dict[str, HashType] = {
    "ip4": HashType.IPV4,
    "tcp4": HashType.TCPV4,
    "udp4": HashType.UDPV4,
    "ip6": HashType.IPV6,
    "tcp6": HashType.TCPV6,
    "udp6": HashType.UDPV6,
}

#: Every type bit the kernel series supports (IPv4/IPv6 x IP/TCP/UDP).
DEFAULT_HASH_TYPES = HashType(0x3F)


def parse_hash_types(value: object, field: str = "types") -> HashType:
    """Turn an int, a :class:`HashType`, a name (``"TCPV4"``, ``"tcpv4|udpv4"``, ethtool's ``"tcp4"``) or a
    list of names into a HashType.

    A list holds names or integers, not further lists; bytes and mappings are refused rather than
    iterated (their elements are not hash types).

    Raises:
        ValidationError: naming ``field`` for unknown names, unknown bits or a wrong type.
    """
    if isinstance(value, HashType):
        result = int(value)
    elif isinstance(value, bool):
        raise ValidationError(field, f"expected hash type names or an integer, got {shorten(value)}")
    elif isinstance(value, int):
        result = value
    elif isinstance(value, str):
        names = [n for n in value.replace(",", "|").split("|") if n.strip()]
        return parse_hash_types(names, field)
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, bytearray, memoryview, Mapping)):
        result = 0
        for i, item in enumerate(value):
            if isinstance(item, str):
                key = item.strip().upper().replace("-", "_")
                if key == "ALL":
                    result |= int(DEFAULT_HASH_TYPES)
                    continue
                alias = ETHTOOL_FLOW_TYPES.get(key.lower())
                if alias is not None:
                    result |= int(alias)
                    continue
                try:
                    result |= int(HashType[key])
                except KeyError:
                    known = ", ".join(m.name or "" for m in HashType) + "; ethtool's " + ", ".join(ETHTOOL_FLOW_TYPES)
                    rule = f"unknown hash type {shorten(item)}; known: {known}"
                    raise ValidationError(f"{field}[{i}]", rule) from None
            elif isinstance(item, int) and not isinstance(item, bool):
                result |= int(parse_hash_types(item, f"{field}[{i}]"))
            else:
                raise ValidationError(f"{field}[{i}]", f"expected a hash type name or an integer, got {shorten(item)}")
    else:
        raise ValidationError(field, f"expected hash type names or an integer, got {type(value).__name__}")
    if result < 0 or result & ~int(HashType.all_known()):
        extra = result & ~0x1FF
        shown = f"{extra:#x}" if extra.bit_length() <= 64 else shorten(extra)
        raise ValidationError(field, f"unknown hash type bits {shown} (known bits: 0x1ff)")
    return HashType(result)
