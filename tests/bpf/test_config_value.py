"""A config value reads back as the configuration it carries (``show`` reads what steers through it)."""

from __future__ import annotations

import random
import struct

import pytest

from pytun_hash.bpf.rss_program import (
    CONFIG_VALUE_SIZE,
    OFF_KEY,
    OFF_MASK,
    OFF_TOEPLITZ,
    config_value,
    decode_config_value,
)
from pytun_hash.errors import DecodeError
from pytun_hash.model.classify import Semantics
from tests.bpf.frames import random_config


@pytest.mark.parametrize("semantics", list(Semantics))
def test_every_value_reads_back_as_its_configuration(semantics: Semantics) -> None:
    rng = random.Random(1700 + len(semantics.value))
    for _ in range(40):
        config = random_config(rng).replace(report=rng.random() < 0.5)
        value = config_value(config, semantics=semantics)
        assert len(value) == CONFIG_VALUE_SIZE
        assert decode_config_value(value) == (config, semantics)


def test_the_key_is_kept_beside_the_tables_the_program_reads() -> None:
    config = random_config(random.Random(3))
    value = config_value(config)
    assert value[OFF_KEY : OFF_KEY + 40] == config.key
    assert OFF_KEY + 40 <= OFF_TOEPLITZ  # in what was padding: the program's offsets did not move


def test_bytes_no_writer_wrote_are_refused() -> None:
    value = bytearray(config_value(random_config(random.Random(4))))
    with pytest.raises(DecodeError, match="expected"):
        decode_config_value(bytes(value[:-1]))
    tampered = bytearray(value)
    tampered[OFF_TOEPLITZ + 5] ^= 1  # a table entry no key gives
    with pytest.raises(DecodeError, match="written again they differ"):
        decode_config_value(bytes(tampered))
    struct.pack_into("=I", value, OFF_MASK, 5)  # not a power of two minus one
    with pytest.raises(DecodeError, match="power of two"):
        decode_config_value(bytes(value))
    with pytest.raises(DecodeError):
        decode_config_value(bytes(CONFIG_VALUE_SIZE))  # all zero: no types, no RSS table to speak of
