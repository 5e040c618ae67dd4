"""Config files and keys: every error named with its field, size limits, TOML/JSON, round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.configfile import (
    KNOWN_KEYS,
    MAX_CONFIG_BYTES,
    config_errors,
    config_from_mapping,
    dump_config,
    load_config,
    parse_key,
    read_config_file,
)
from pytun_hash.errors import ValidationError


def fields(errors: list[ValidationError]) -> list[str | None]:
    return [e.field for e in errors]


def test_every_error_is_reported_with_its_field() -> None:
    data = {
        "rss": "yes",
        "report": 1,
        "types": ["TCPV4", "BOGUS", 3, "ALSO_BOGUS"],
        "indirection_table": [0, -1, 2, 70000, "x"],
        "key": "zz",
        "unclassified_queue": True,
        "queues": 4,
        "extra": None,
    }
    got = fields(config_errors(data))
    assert got == [
        "queues",
        "extra",
        "rss",
        "report",
        "types[1]",
        "types[3]",
        "indirection_table[1]",
        "indirection_table[3]",
        "indirection_table[4]",
        "indirection_table",
        "key",
        "unclassified_queue",
    ]


def test_cross_field_rules_come_after_field_rules() -> None:
    assert fields(config_errors({"rss": True})) == ["types"]
    assert fields(config_errors({"rss": True, "types": "bogus"})) == ["types[0]"]
    assert config_errors({"rss": True, "types": "all", "indirection_table": [0, 1]}) == []


def test_non_mapping() -> None:
    assert fields(config_errors([1, 2])) == [None]


def test_config_from_mapping_lists_all_problems() -> None:
    with pytest.raises(ValidationError) as info:
        config_from_mapping({"rss": "x", "key": 5})
    assert info.value.field == "rss" and "2 problems" in str(info.value) and "key" in str(info.value)
    with pytest.raises(ValidationError) as single:
        config_from_mapping({"rss": "x"})
    assert single.value.field == "rss" and "problems" not in str(single.value)


def test_named_keys_in_files() -> None:
    config = config_from_mapping({"rss": True, "types": "ipv4", "key": "Microsoft"})
    assert config.key == MICROSOFT_RSS_KEY
    assert config_from_mapping({"key": "symmetric"}).key == bytes.fromhex("6d5a") * 20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("microsoft", MICROSOFT_RSS_KEY),
        ("SYMMETRIC", KNOWN_KEYS["symmetric"]),
        ("0x0102", b"\x01\x02"),
        ("01:02 03", b"\x01\x02\x03"),
    ],
)
def test_parse_key(text: str, expected: bytes) -> None:
    assert parse_key(text) == expected


def test_parse_key_random_and_errors() -> None:
    a, b = parse_key("random"), parse_key("random")
    assert len(a) == 40 and a != b
    for bad in ("", "xyz", "00" * 41):
        with pytest.raises(ValidationError) as info:
            parse_key(bad, "--key")
        assert info.value.field == "--key"


def test_toml_and_json_files(tmp_path: Path) -> None:
    config = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, report=True, table_length=8)
    for name in ("c.toml", "c.json", "c.conf"):
        path = tmp_path / name
        dump_config(config, str(path))
        assert load_config(str(path)) == config
    assert (tmp_path / "c.toml").read_text().startswith("rss = true\n")
    json.loads((tmp_path / "c.json").read_text())


def test_sections(tmp_path: Path) -> None:
    path = tmp_path / "vmm.toml"
    path.write_text('[net.hash]\nrss = true\ntypes = "all"\nindirection_table = [0, 1]\nkey = "microsoft"\n')
    assert load_config(str(path), section="net.hash").indirection_table == (0, 1)
    with pytest.raises(ValidationError) as info:
        load_config(str(path), section="net")
    assert info.value.field == "hash"  # a table where fields were expected
    with pytest.raises(ValidationError, match=r"no table named 'net\.nope'"):
        load_config(str(path), section="net.nope")


def test_section_lookup(tmp_path: Path) -> None:
    path = tmp_path / "vmm.toml"
    path.write_text(
        'name = "vm1"\n[hash]\nrss = true\ntypes = "all"\nindirection_table = [0, 1]\nkey = "microsoft"\n'
    )
    config = load_config(str(path), section="hash")
    assert config.rss and config.indirection_table == (0, 1)
    with pytest.raises(ValidationError, match="no table named 'nothere'"):
        read_config_file(str(path), section="nothere")


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("bad.toml", b"rss = = true", "invalid TOML"),
        ("bad.json", b'{"rss": tru', "invalid JSON at line 1"),
        ("list.json", b"[1, 2]", "must hold a table"),
        ("bin.toml", b"\xff\xfe", "not UTF-8"),
    ],
)
def test_malformed_files(tmp_path: Path, name: str, content: bytes, needle: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValidationError, match=needle) as info:
        read_config_file(str(path))
    assert info.value.field == "config"


def test_size_limit_and_missing_file(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(ValidationError, match="limited to 1 MiB"):
        read_config_file(str(big))
    with pytest.raises(ValidationError, match="cannot read"):
        read_config_file(str(tmp_path / "missing.toml"))


def test_dump_to_unwritable_path(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        dump_config(VnetHashConfig(), str(tmp_path / "no" / "such" / "dir.toml"))
    assert info.value.field == "save"
