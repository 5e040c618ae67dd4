"""The guest's structures: golden bytes, the Linux driver's commands, every refusal by its rule id,
round trips, and arbitrary bytes (only the typed error)."""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytun_hash import HashType, ValidationError, VnetHashConfig
from pytun_hash.errors import DecodeError
from pytun_hash.virtio import (
    DEFAULT_LIMITS,
    RULES,
    VIRTIO_NET_CONFIG_SIZE,
    VIRTIO_NET_CTRL_MQ,
    HashCommand,
    RssCommand,
    VirtioCommandError,
    VirtioNetCtrlAck,
    VirtioNetCtrlMq,
    VirtioNetFeature,
    VirtioNetRssDeviceConfig,
    decode_device_config,
    decode_hash_config,
    decode_rss_config,
    encode_device_config,
    encode_hash_config,
    encode_rss_config,
    feature_names,
    handle_ctrl_mq,
    linux_default_rss_config,
)

# What QEMU advertises: 128 table entries, 40-byte keys, every hash type; here with 8 queue pairs.
QEMU_LIKE = VirtioNetRssDeviceConfig(8, 40, 128, HashType.all_known())
EX_TYPES = HashType.IP_EX | HashType.TCP_EX | HashType.UDP_EX


def le16(v: int) -> bytes:
    return v.to_bytes(2, "little")


def le32(v: int) -> bytes:
    return v.to_bytes(4, "little")


def linux_rss(types: int, table: list[int], unclassified: int, max_tx_vq: int, key: bytes) -> bytes:
    """virtnet_commit_rss_command's scatter list, piece by piece: header, table, trailer, key."""
    head = le32(types) + le16(len(table) - 1) + le16(unclassified)
    return head + b"".join(le16(q) for q in table) + le16(max_tx_vq) + bytes([len(key)]) + key


def linux_hash(types: int, key: bytes, reserved: tuple[int, int, int, int] = (0, 0, 0, 0)) -> bytes:
    return le32(types) + b"".join(le16(w) for w in reserved) + bytes([len(key)]) + key


# -- feature bits and constants ----------------------------------------------------------------------


def test_feature_bits_are_the_spec_numbers() -> None:
    assert [m.bit for m in VirtioNetFeature] == [17, 22, 57, 60]
    assert int(VirtioNetFeature.RSS) == 1 << 60
    assert VirtioNetFeature.from_bits([60, 17]) == VirtioNetFeature.RSS | VirtioNetFeature.CTRL_VQ
    assert feature_names(VirtioNetFeature.RSS | VirtioNetFeature.CTRL_VQ) == ["CTRL_VQ", "RSS"]
    assert (VIRTIO_NET_CTRL_MQ, [int(c) for c in VirtioNetCtrlMq]) == (4, [0, 1, 2])
    assert (int(VirtioNetCtrlAck.OK), int(VirtioNetCtrlAck.ERR)) == (0, 1)
    with pytest.raises(ValidationError):
        VirtioNetFeature.from_bits([5])
    with pytest.raises(ValidationError):
        (VirtioNetFeature.RSS | VirtioNetFeature.MQ).bit  # noqa: B018 - the property raises


# -- golden bytes, written out by hand --------------------------------------------------------------


def test_golden_rss_config() -> None:
    payload = bytes.fromhex("030000000100000000000100020004deadbeef")
    cmd = decode_rss_config(payload)
    assert cmd == RssCommand(HashType.IPV4 | HashType.TCPV4, (0, 1), 0, 2, bytes.fromhex("deadbeef"))
    assert (cmd.indirection_table_mask, cmd.hash_key_length) == (1, 4)
    assert cmd.config == VnetHashConfig(
        rss=True,
        types=HashType.IPV4 | HashType.TCPV4,
        indirection_table=(0, 1),
        key=bytes.fromhex("deadbeef") + bytes(36),
    )
    assert cmd.encode() == payload
    assert encode_rss_config(cmd.config, max_tx_vq=2, hash_key_length=4) == payload


def test_golden_hash_config() -> None:
    payload = bytes.fromhex("3f000000000000000000000002aabb")
    cmd = decode_hash_config(payload)
    assert cmd == HashCommand(HashType.supported_by_kernel_series(), b"\xaa\xbb")
    assert cmd.config == VnetHashConfig(report=True, types=0x3F, key=b"\xaa\xbb" + bytes(38))
    assert cmd.encode() == payload
    assert encode_hash_config(cmd.config, hash_key_length=2) == payload


def test_golden_device_config() -> None:
    device = VirtioNetRssDeviceConfig(4, 40, 128, HashType.all_known())
    data = encode_device_config(device, mac=bytes.fromhex("525400123456"), status=1, mtu=1500)
    assert data == bytes.fromhex("52540012345601000400dc05ffffffffff288000ff010000")
    assert len(data) == VIRTIO_NET_CONFIG_SIZE
    assert decode_device_config(data) == device
    assert decode_device_config(data[8:], start=8) == device
    assert decode_device_config(data[17:], start=17, max_virtqueue_pairs=4) == device
    # Later specifications append fields (supported_tunnel_types): ignored.
    assert decode_device_config(data + bytes(4)) == device
    with pytest.raises(DecodeError):
        decode_device_config(data[:23])
    with pytest.raises(ValidationError):
        decode_device_config(data[17:], start=17)
    with pytest.raises(DecodeError):
        decode_device_config(data[:8] + b"\0\0" + data[10:])  # max_virtqueue_pairs 0


# -- what the Linux driver sends --------------------------------------------------------------------


@pytest.mark.parametrize("queue_pairs", [1, 2, 3, 4, 7, 8])
def test_linux_default_rss(queue_pairs: int) -> None:
    key = os.urandom(40)
    types = int(HashType.all_known() & ~EX_TYPES)  # supported & ~_EX, as virtnet_probe masks it
    payload = linux_rss(types, [i % queue_pairs for i in range(128)], 0, queue_pairs, key)
    assert len(payload) == 8 + 256 + 3 + 40
    assert linux_default_rss_config(QEMU_LIKE, queue_pairs, key) == payload
    cmd = decode_rss_config(payload, report=True, limits=QEMU_LIKE)
    config = cmd.config
    assert config is not None
    assert config.indirection_table == tuple(i % queue_pairs for i in range(128))
    assert (config.rss, config.report, config.types, config.key) == (True, True, HashType(0x3F), key)
    assert (cmd.max_tx_vq, cmd.hash_key_length, config.unclassified_queue) == (queue_pairs, 40, 0)
    assert cmd.encode() == payload


@pytest.mark.parametrize("queue_pairs", [1, 4])
def test_linux_hash_only(queue_pairs: int) -> None:
    key = os.urandom(40)
    # Linux 6.14+: the trailer's max_tx_vq lands in reserved[3].
    payload = linux_hash(0x3F, key, (0, 0, 0, queue_pairs))
    assert linux_default_rss_config(QEMU_LIKE, queue_pairs, key, rss=False) == payload
    cmd = decode_hash_config(payload, limits=QEMU_LIKE)
    assert cmd.reserved == (0, 0, 0, queue_pairs)
    assert cmd.config == VnetHashConfig(report=True, types=0x3F, key=key)
    assert cmd.encode() == payload


def test_rxhash_off_is_hash_types_zero() -> None:
    """``ethtool -K eth0 rxhash off`` in the guest: the same command with hash_types 0."""
    payload = linux_rss(0, [i % 4 for i in range(128)], 0, 4, os.urandom(40))
    cmd = decode_rss_config(payload, limits=QEMU_LIKE)
    assert cmd.config is None and cmd.hash_types == 0
    assert decode_hash_config(linux_hash(0, b"")).config is None


def test_a_short_key_means_the_same_zero_padded_and_gives_no_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cmd = decode_rss_config(linux_rss(1, [0], 0, 1, b"\x01\x02"))
    assert cmd.config is not None and cmd.config.key == b"\x01\x02" + bytes(38)


# -- every rule refuses, by its id ------------------------------------------------------------------

SMALL = VirtioNetRssDeviceConfig(4, 20, 16, HashType.supported_by_kernel_series())
GOOD_RSS = linux_rss(0x3F, [0, 1, 2, 3], 0, 4, bytes(range(1, 21)))

DECODE_REFUSALS = [
    ("payload-truncated", "rss", b"\x01\x00\x00", {}),
    ("payload-truncated", "rss", GOOD_RSS[:12], {}),
    ("payload-truncated", "rss", GOOD_RSS[:-1], {}),
    ("payload-trailing-bytes", "rss", GOOD_RSS + b"\0", {}),
    ("hash-types-unsupported", "rss", linux_rss(int(HashType.IP_EX), [0], 0, 1, b"k"), {"limits": SMALL}),
    ("hash-types-unsupported", "rss", linux_rss(0x200, [0], 0, 1, b"k"), {}),
    ("table-length-power-of-two", "rss", linux_rss(1, [0, 0, 0], 0, 1, b"k"), {}),
    ("table-length-exceeds-max", "rss", linux_rss(1, [0] * 32, 0, 1, b"k"), {"limits": SMALL}),
    ("table-length-exceeds-max", "rss", linux_rss(1, [0] * 256, 0, 1, b"k"), {}),
    ("max-tx-vq-out-of-range", "rss", linux_rss(1, [0], 0, 0, b"k"), {}),
    ("max-tx-vq-out-of-range", "rss", linux_rss(1, [0], 0, 5, b"k"), {"limits": SMALL}),
    ("key-length-exceeds-max", "rss", linux_rss(1, [0], 0, 1, bytes(21)), {"limits": SMALL}),
    ("key-length-exceeds-max", "rss", linux_rss(1, [0], 0, 1, bytes(41)), {}),
    ("key-missing", "rss", linux_rss(1, [0], 0, 1, b""), {}),
    ("unclassified-queue-out-of-range", "rss", linux_rss(1, [0, 1], 2, 2, b"k"), {}),
    ("table-entry-out-of-range", "rss", linux_rss(1, [0, 1, 2, 1], 0, 2, b"k"), {}),
    ("payload-truncated", "hash", bytes(12), {}),
    ("payload-truncated", "hash", linux_hash(1, b"key")[:-1], {}),
    ("payload-trailing-bytes", "hash", linux_hash(1, b"key") + b"x", {}),
    ("hash-types-unsupported", "hash", linux_hash(int(HashType.TCP_EX), b"k"), {"limits": SMALL}),
    ("key-length-exceeds-max", "hash", linux_hash(1, bytes(21)), {"limits": SMALL}),
    ("key-missing", "hash", linux_hash(1, b""), {}),
    ("reserved-not-zero", "hash", linux_hash(1, b"k", (0, 0, 0, 4)), {"strict_reserved": True}),
]

CTRL_REFUSALS = [
    ("command-unknown", 1, 0, b"", VirtioNetFeature.MQ),
    ("command-unknown", VIRTIO_NET_CTRL_MQ, 3, b"", VirtioNetFeature.MQ),
    ("feature-not-negotiated", VIRTIO_NET_CTRL_MQ, 1, GOOD_RSS, VirtioNetFeature.CTRL_VQ),
    ("feature-not-negotiated", VIRTIO_NET_CTRL_MQ, 2, linux_hash(1, b"k"), VirtioNetFeature.RSS),
    ("feature-not-negotiated", VIRTIO_NET_CTRL_MQ, 0, le16(2), VirtioNetFeature.RSS),
    ("vq-pairs-out-of-range", VIRTIO_NET_CTRL_MQ, 0, le16(0), VirtioNetFeature.MQ),
    ("vq-pairs-out-of-range", VIRTIO_NET_CTRL_MQ, 0, le16(5), VirtioNetFeature.MQ),
    ("payload-truncated", VIRTIO_NET_CTRL_MQ, 0, b"\x01", VirtioNetFeature.MQ),
]


def test_every_rule_has_a_refusal_test() -> None:
    covered = {r[0] for r in DECODE_REFUSALS} | {r[0] for r in CTRL_REFUSALS}
    assert covered == set(RULES)


@pytest.mark.parametrize(("rule_id", "kind", "payload", "kwargs"), DECODE_REFUSALS)
def test_refusal(rule_id: str, kind: str, payload: bytes, kwargs: dict[str, Any]) -> None:
    decode = decode_rss_config if kind == "rss" else decode_hash_config
    with pytest.raises(VirtioCommandError) as info:
        decode(payload, **kwargs)
    assert info.value.rule_id == rule_id
    assert f"[{rule_id}]" in str(info.value)
    assert isinstance(info.value, DecodeError) and isinstance(info.value, ValidationError)
    again = pickle.loads(pickle.dumps(info.value))
    assert (again.rule_id, str(again)) == (rule_id, str(info.value))


@pytest.mark.parametrize(("rule_id", "cls", "cmd", "payload", "features"), CTRL_REFUSALS)
def test_ctrl_refusal(rule_id: str, cls: int, cmd: int, payload: bytes, features: VirtioNetFeature) -> None:
    result = handle_ctrl_mq(cls, cmd, payload, features=features, limits=SMALL)
    assert result.ack is VirtioNetCtrlAck.ERR and result.command is None
    assert result.error is not None and result.error.rule_id == rule_id


def test_the_order_follows_qemu() -> None:
    """Several broken rules: the one QEMU checks first is named (table length before the key)."""
    payload = linux_rss(0x3F, [0, 0, 0], 9, 0, b"")
    with pytest.raises(VirtioCommandError) as info:
        decode_rss_config(payload)
    assert info.value.rule_id == "table-length-power-of-two"


def test_ctrl_accepts() -> None:
    features = VirtioNetFeature.CTRL_VQ | VirtioNetFeature.MQ | VirtioNetFeature.RSS | VirtioNetFeature.HASH_REPORT
    rss = handle_ctrl_mq(VIRTIO_NET_CTRL_MQ, 1, GOOD_RSS, features=features, limits=SMALL)
    assert rss.ack is VirtioNetCtrlAck.OK and isinstance(rss.command, RssCommand) and rss.command.report
    pairs = handle_ctrl_mq(VIRTIO_NET_CTRL_MQ, 0, le16(3), features=features, limits=SMALL)
    assert (pairs.ack, pairs.command) == (VirtioNetCtrlAck.OK, 3)
    hashed = handle_ctrl_mq(VIRTIO_NET_CTRL_MQ, 2, linux_hash(1, b"k", (1, 2, 3, 4)), features=features, limits=SMALL)
    assert isinstance(hashed.command, HashCommand) and hashed.command.reserved == (1, 2, 3, 4)


# -- encoding refuses what would change the meaning -------------------------------------------------


def test_encoders_refuse() -> None:
    config = VnetHashConfig.round_robin(4, key=bytes(range(1, 41)))
    with pytest.raises(ValidationError, match="max_tx_vq"):
        encode_rss_config(config, max_tx_vq=3)
    with pytest.raises(ValidationError, match="hash_key_length"):
        encode_rss_config(config, max_tx_vq=4, hash_key_length=20)  # would drop key bytes
    with pytest.raises(ValidationError, match="rss"):
        encode_rss_config(config.replace(rss=False, report=True), max_tx_vq=4)
    with pytest.raises(ValidationError):
        encode_hash_config(config)  # RSS config: the table would be lost
    with pytest.raises(ValidationError):
        RssCommand(1, (0, 0, 0), 0, 1, b"k")
    with pytest.raises(ValidationError):
        HashCommand(1, b"k", (0, 0, 0))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        VirtioNetRssDeviceConfig(0)


# -- round trips and arbitrary bytes ----------------------------------------------------------------


@st.composite
def valid_rss_payloads(draw: st.DrawFn) -> bytes:
    max_tx_vq = draw(st.integers(1, 0x8000))
    queue = st.integers(0, max_tx_vq - 1)
    length = 1 << draw(st.integers(0, 7))
    table = draw(st.lists(queue, min_size=length, max_size=length))
    types = draw(st.integers(0, 0x1FF))
    key = draw(st.binary(min_size=1 if types else 0, max_size=40))
    return linux_rss(types, table, draw(queue), max_tx_vq, key)


@given(valid_rss_payloads(), st.booleans())
def test_rss_payload_round_trip(payload: bytes, report: bool) -> None:
    cmd = decode_rss_config(payload, report=report)
    assert cmd.encode() == payload
    if cmd.config is not None:
        assert cmd.config.report is report
        again = encode_rss_config(cmd.config, max_tx_vq=cmd.max_tx_vq, hash_key_length=max(cmd.hash_key_length, 1))
        if cmd.hash_key_length:
            assert again == payload


@given(st.integers(0, 0x1FF), st.binary(max_size=40), st.tuples(*[st.integers(0, 0xFFFF)] * 4))
def test_hash_payload_round_trip(types: int, key: bytes, reserved: tuple[int, int, int, int]) -> None:
    if types and not key:
        return  # key-missing: refused (its own test)
    payload = linux_hash(types, key, reserved)
    assert decode_hash_config(payload).encode() == payload


@st.composite
def rss_configs(draw: st.DrawFn) -> tuple[VnetHashConfig, int, int]:
    queues = draw(st.integers(1, 64))
    length = 1 << draw(st.integers(0, 7))
    table = draw(st.lists(st.integers(0, queues - 1), min_size=length, max_size=length))
    types = draw(st.integers(1, 0x1FF))
    key = draw(st.binary(min_size=1, max_size=40))
    config = VnetHashConfig(
        rss=True,
        report=draw(st.booleans()),
        types=types,
        indirection_table=table,
        key=key.ljust(40, b"\0"),
        unclassified_queue=draw(st.integers(0, queues - 1)),
    )
    needed = max(len(key.rstrip(b"\0")), 1)
    return config, draw(st.integers(queues, 0x8000)), draw(st.integers(needed, 40))


@given(rss_configs())
def test_config_round_trip(case: tuple[VnetHashConfig, int, int]) -> None:
    config, max_tx_vq, key_length = case
    payload = encode_rss_config(config, max_tx_vq=max_tx_vq, hash_key_length=key_length)
    cmd = decode_rss_config(payload, report=config.report)
    assert (cmd.config, cmd.max_tx_vq, cmd.hash_key_length) == (config, max_tx_vq, key_length)
    if not config.rss or not config.report:
        return
    report_only = config.replace(rss=False, indirection_table=(0,), unclassified_queue=0)
    assert decode_hash_config(encode_hash_config(report_only, hash_key_length=key_length)).config == report_only


limits_strategy = st.builds(
    VirtioNetRssDeviceConfig,
    st.integers(1, 0x8000),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(0, 0x1FF),
)


@given(st.binary(max_size=400), st.one_of(st.none(), limits_strategy), st.booleans())
def test_arbitrary_bytes_raise_only_the_typed_error(
    payload: bytes, limits: VirtioNetRssDeviceConfig | None, strict: bool
) -> None:
    for decode in (
        lambda: decode_rss_config(payload, limits=limits),
        lambda: decode_hash_config(payload, limits=limits, strict_reserved=strict),
    ):
        with contextlib.suppress(VirtioCommandError):
            decode()


@given(valid_rss_payloads(), st.integers(0, 300), st.integers(0, 255))
def test_mutated_payloads_raise_only_the_typed_error(payload: bytes, where: int, value: int) -> None:
    mutated = bytearray(payload)
    if mutated:
        mutated[where % len(mutated)] = value
    try:
        cmd = decode_rss_config(bytes(mutated), limits=QEMU_LIKE)
    except VirtioCommandError:
        return
    assert cmd.encode() == bytes(mutated)
    assert cmd.config is None or cmd.config.max_queue < cmd.max_tx_vq


@given(limits_strategy)
def test_device_config_round_trip(device: VirtioNetRssDeviceConfig) -> None:
    data = encode_device_config(device)
    assert decode_device_config(data) == device
    assert struct.unpack_from("<H", data, 8)[0] == device.max_virtqueue_pairs


def test_default_limits_are_what_the_package_holds() -> None:
    assert (DEFAULT_LIMITS.key_limit, DEFAULT_LIMITS.table_limit) == (40, 128)
    assert VirtioNetRssDeviceConfig(1, 255, 0xFFFF).key_limit == 40
