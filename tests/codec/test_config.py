"""VnetHashConfig and VnetHashCapability: validation, constructors, mapping round trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given

from pytun_hash import (
    MICROSOFT_RSS_KEY,
    HashType,
    Revision,
    ValidationError,
    VnetHashCapability,
    VnetHashConfig,
    default_capability,
)
from tests.codec.strategies import configs


def test_defaults_are_disabled() -> None:
    c = VnetHashConfig.disabled()
    assert not c.rss and not c.report and not c.enabled
    assert c.indirection_table == (0,) and c.indirection_table_mask == 0
    assert c.key == bytes(40)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"indirection_table": (0, 1, 2)}, "indirection_table", "power of two"),
        ({"indirection_table": ()}, "indirection_table", "power of two"),
        ({"indirection_table": tuple(range(256))}, "indirection_table", "power of two from 1 to 128"),
        ({"indirection_table": (0, 65536)}, "indirection_table[1]", "0..65535"),
        ({"indirection_table": (0, -1)}, "indirection_table[1]", "0..65535"),
        ({"indirection_table": (0, "1")}, "indirection_table[1]", "integer"),
        ({"indirection_table": "01"}, "indirection_table", "sequence"),
        ({"unclassified_queue": 70000}, "unclassified_queue", "0..65535"),
        ({"unclassified_queue": True}, "unclassified_queue", "integer"),
        ({"key": bytes(41)}, "key", "at most 40"),
        ({"key": "zz"}, "key", "hexadecimal"),
        ({"key": 5}, "key", "bytes"),
        ({"types": 0x200}, "types", "unknown hash type bits"),
        ({"types": ["TCPV4", "SCTP"]}, "types[1]", "unknown hash type"),
        ({"rss": True}, "types", "at least one"),
        ({"report": True, "types": 0}, "types", "at least one"),
        ({"rss": 1}, "rss", "true or false"),
    ],
)
def test_validation_names_field_and_rule(changes: dict[str, object], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as info:
        VnetHashConfig(**changes)  # type: ignore[arg-type]
    assert info.value.field == field
    assert words in info.value.rule


def test_short_key_is_zero_padded() -> None:
    c = VnetHashConfig(key=b"\x01\x02")
    assert c.key == b"\x01\x02" + bytes(38)
    assert VnetHashConfig(key="01:02") == c


def test_round_robin() -> None:
    c = VnetHashConfig.round_robin(3, key=MICROSOFT_RSS_KEY)
    assert c.rss and not c.report
    assert c.types == HashType.supported_by_kernel_series()
    assert len(c.indirection_table) == 128
    assert c.indirection_table[:6] == (0, 1, 2, 0, 1, 2)
    assert c.max_queue == 2
    small = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, table_length=4, types=["TCPV4", "UDPV4"])
    assert small.indirection_table == (0, 1, 2, 3) and small.types == HashType.TCPV4 | HashType.UDPV4
    with pytest.raises(ValidationError):
        VnetHashConfig.round_robin(0)
    with pytest.raises(ValidationError):
        VnetHashConfig.round_robin(4, table_length=3)


def test_generated_keys_are_random_never_the_well_known_key() -> None:
    a = VnetHashConfig.round_robin(2)
    b = VnetHashConfig.round_robin(2)
    assert a.key != b.key
    assert MICROSOFT_RSS_KEY not in (a.key, b.key)


def test_types_parsing_forms() -> None:
    assert VnetHashConfig(types="tcpv4|udpv4").types == HashType.TCPV4 | HashType.UDPV4
    assert VnetHashConfig(types=["all"]).types == 0x3F
    assert VnetHashConfig(types=0x3F).types == 0x3F


@given(configs())
def test_mapping_round_trip(config: VnetHashConfig) -> None:
    data = json.loads(json.dumps(config.to_mapping()))
    assert VnetHashConfig.from_mapping(data) == config


def test_from_mapping_errors_name_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        VnetHashConfig.from_mapping({"rss": True, "types": ["TCPV4"], "indirection_tabel": [0]})
    assert info.value.field == "indirection_tabel"
    with pytest.raises(ValidationError) as info:
        VnetHashConfig.from_mapping({"key": [1, 2]})
    assert info.value.field == "key"
    with pytest.raises(ValidationError) as info:
        VnetHashConfig.from_mapping([("rss", True)])  # type: ignore[arg-type]
    assert info.value.field is None


def test_capability_violations_lists_every_problem() -> None:
    cap = VnetHashCapability(Revision.RFC, HashType(0x3F), max_indirection_table_length=64)
    bad = VnetHashConfig(
        rss=True, report=True, types=HashType(0x3F) | HashType.IP_EX, indirection_table=tuple(range(128))
    )
    problems = cap.violations(bad)
    assert len(problems) == 2
    assert any("IP_EX" in p for p in problems) and any("at most 64" in p for p in problems)
    with pytest.raises(ValidationError):
        cap.check(bad)
    cap.check(VnetHashConfig.round_robin(4, table_length=64))
    report_only = VnetHashCapability(Revision.V3, HashType(0x3F), rss=False)
    assert report_only.violations(VnetHashConfig.round_robin(2)) == [
        "rss: this kernel does not support RSS (only hash reporting)"
    ]


def test_default_capabilities() -> None:
    assert default_capability(Revision.RFC).max_indirection_table_length == 128
    assert default_capability(Revision.V3).max_indirection_table_length is None
    assert all(default_capability(r).types == 0x3F for r in Revision)


def test_ethtool_flow_type_names_are_aliases() -> None:
    from pytun_hash.config import ETHTOOL_FLOW_TYPES, parse_hash_types

    assert parse_hash_types("tcp4,udp6") == HashType.TCPV4 | HashType.UDPV6
    assert parse_hash_types(["ip4", "TCP6", "tcpv4"]) == HashType.IPV4 | HashType.TCPV6 | HashType.TCPV4
    assert set(ETHTOOL_FLOW_TYPES.values()) == set(HashType(0x3F))  # the _EX types have no ethtool name
    with pytest.raises(ValidationError) as info:
        parse_hash_types("tcp9")
    assert "ethtool's ip4" in info.value.rule


def test_weighted_table_fills_as_ethtool_does() -> None:
    from pytun_hash.config import weighted_table

    assert weighted_table([1, 1, 1, 1], 8) == (0, 0, 1, 1, 2, 2, 3, 3)
    assert weighted_table([0, 1], 4) == (1, 1, 1, 1)  # a weight of 0 gives a queue no entry
    table = weighted_table([1, 2, 1], 128)
    assert [table.count(q) for q in range(3)] == [32, 64, 32]
    for bad in ([], [0, 0], [-1, 2], [129], [True]):
        with pytest.raises(ValidationError):
            weighted_table(bad, 128)


def test_a_short_key_warns_with_its_effective_bits_and_a_whole_one_does_not() -> None:
    import warnings

    from pytun_hash.config import WeakKeyWarning

    with pytest.warns(WeakKeyWarning, match=r"5 byte\(s\).*first 40 input bits"):
        config = VnetHashConfig(key=b"\x01\x02\x03\x04\x05")
    assert config.key == b"\x01\x02\x03\x04\x05" + bytes(35)
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeakKeyWarning)
        VnetHashConfig(key=bytes(range(40)))
        VnetHashConfig()  # no key at all: the all-zero key has its own warning where it is applied
