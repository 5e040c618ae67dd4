"""The generated RSS program against the software model, through BPF_PROG_TEST_RUN.

Three builds of the same program (queue, hash value, report) run on random frames and must
give exactly what :func:`pytun_hash.model.classify.classify` and ``predict_queue`` give.
"""

from __future__ import annotations

import random
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from pytun_hash._abi.virtio_net import HashReport, HashType
from pytun_hash.bpf.rss import EbpfRss
from pytun_hash.bpf.rss_program import (
    CONFIG_VALUE_SIZE,
    MAX_INPUT_BYTES,
    OFF_MASK,
    OFF_TABLE,
    OFF_TOEPLITZ,
    OFF_TYPES,
    OFF_UNCLASSIFIED,
    TOEPLITZ_STRIDE,
    RssOutput,
    check_supported,
    config_value,
    toeplitz_tables,
)
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.device.tap import DeviceMode
from pytun_hash.errors import BpfError, ValidationError
from pytun_hash.model.classify import Semantics, classify, predict_queue
from pytun_hash.model.packet import Framing
from pytun_hash.model.toeplitz import toeplitz_hash
from tests.bpf.frames import load_builds, random_config, random_ethernet_frame, random_ip_packet

PACKETS_PER_MODE = {DeviceMode.TAP: 10_000, DeviceMode.TUN: 4_000}
CONFIGS_PER_MODE = 8


def table_hash(tables: bytes, data: bytes) -> int:
    h = 0
    for p, b in enumerate(data):
        h ^= struct.unpack_from("=I", tables, p * TOEPLITZ_STRIDE + 4 * b)[0]
    return h


def runnable_in_test_run(frame: bytes) -> bool:
    """The kernel's test run refuses frames shorter than 14 bytes and IPv4/IPv6 ethertypes without a full header."""
    need = {b"\x08\x00": 34, b"\x86\xdd": 54}.get(frame[12:14], 14)
    return len(frame) >= need


# ------------------------------------------------------------------------ pure (no bpf)


def test_tables_reproduce_published_vector() -> None:
    tables = toeplitz_tables(MICROSOFT_RSS_KEY)
    assert len(tables) == MAX_INPUT_BYTES * TOEPLITZ_STRIDE
    row1 = bytes.fromhex("420995bba18e64500aea06e6")
    assert table_hash(tables, row1) == 0x51CCC178
    assert table_hash(tables, row1[:8]) == 0x323E8FC2


def test_tables_agree_with_model_toeplitz() -> None:
    rng = random.Random(7)
    for _ in range(50):
        key = rng.randbytes(40)
        tables = toeplitz_tables(key)
        for n in (8, 12, 32, 36, rng.randrange(0, 37)):
            data = rng.randbytes(n)
            assert table_hash(tables, data) == toeplitz_hash(key, data)


def test_config_value_layout() -> None:
    config = VnetHashConfig(
        rss=True,
        types=HashType.TCPV4 | HashType.IPV6,
        indirection_table=(3, 1, 4, 1),
        key=MICROSOFT_RSS_KEY,
        unclassified_queue=9,
    )
    value = config_value(config)
    assert len(value) == CONFIG_VALUE_SIZE

    def u32(off: int) -> int:
        return int(struct.unpack_from("=I", value, off)[0])

    assert u32(OFF_TYPES) == int(HashType.TCPV4 | HashType.IPV6)
    assert u32(OFF_MASK) == 3
    assert u32(OFF_UNCLASSIFIED) == 9
    assert [u32(OFF_TABLE + 4 * i) for i in range(5)] == [3, 1, 4, 1, 0]
    assert value[OFF_TOEPLITZ:] == toeplitz_tables(MICROSOFT_RSS_KEY)


def test_unsupported_configs_are_refused() -> None:
    with pytest.raises(ValidationError, match="rss=True"):
        check_supported(VnetHashConfig(report=True, types=HashType.IPV4))
    with pytest.raises(ValidationError, match="_EX"):
        check_supported(VnetHashConfig(rss=True, types=HashType.IPV4 | HashType.TCP_EX))
    with pytest.raises(ValidationError, match="_EX"):
        EbpfRss.load(VnetHashConfig(rss=True, types=HashType.IP_EX))


# ------------------------------------------------------------------------ kernel test runs


@pytest.fixture
def builds(request: pytest.FixtureRequest) -> Iterator[dict[RssOutput, EbpfRss]]:
    mode, semantics = request.param
    with load_builds(VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY), mode, semantics) as loaded:
        yield loaded


@pytest.mark.bpf
@pytest.mark.parametrize(
    "builds",
    [(m, s) for s in Semantics for m in (DeviceMode.TAP, DeviceMode.TUN)],
    indirect=True,
    ids=[f"{m.value}-{s.value}" for s in Semantics for m in (DeviceMode.TAP, DeviceMode.TUN)],
)
def test_program_matches_model_on_random_packets(builds: dict[RssOutput, EbpfRss]) -> None:
    mode = builds[RssOutput.QUEUE].mode
    semantics = builds[RssOutput.QUEUE].semantics
    framing = Framing.ETHERNET if mode is DeviceMode.TAP else Framing.IP
    make = random_ethernet_frame if mode is DeviceMode.TAP else random_ip_packet
    rng = random.Random(20240601 if mode is DeviceMode.TAP else 20240602)
    total = PACKETS_PER_MODE[mode]
    reports: Counter[HashReport] = Counter()
    mismatches: list[str] = []
    for c in range(CONFIGS_PER_MODE):
        config = random_config(rng)
        for rss in builds.values():
            rss.reconfigure(config)
        checked = 0
        while checked < total // CONFIGS_PER_MODE:
            frame = make(rng)
            if mode is DeviceMode.TAP and not runnable_in_test_run(frame):
                continue
            checked += 1
            flow = classify(frame, config.types, config.key, l2=framing, semantics=semantics)
            queue = predict_queue(config, frame, 0x10000, l2=framing, semantics=semantics)
            got = (
                builds[RssOutput.HASH].test_run(frame).retval,
                builds[RssOutput.REPORT].test_run(frame).retval,
                builds[RssOutput.QUEUE].test_run(frame).retval,
            )
            want = (flow.hash_value, int(flow.report), queue)
            reports[flow.report] += 1
            if got != want and len(mismatches) < 10:
                mismatches.append(f"config {c} types {config.types!r} frame {frame.hex()}: bpf {got} model {want}")
    assert not mismatches, "\n".join(mismatches)
    print(f"{mode.value} {semantics.value}: {sum(reports.values())} frames agree; reports {dict(reports)}")
    # The generator must have reached every classification outcome.
    assert set(reports) == {HashReport(i) for i in range(7)}, reports
    assert sum(reports.values()) == total
    assert min(reports.values()) >= total // 100


@pytest.mark.bpf
def test_published_vector_through_the_program() -> None:
    config = VnetHashConfig(rss=True, types=HashType.TCPV4 | HashType.IPV4, key=MICROSOFT_RSS_KEY)
    ip = bytes([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]) + bytes([66, 9, 149, 187, 161, 142, 100, 80])
    frame = bytes(12) + b"\x08\x00" + ip + struct.pack("!HH", 2794, 1766) + bytes(16)
    with EbpfRss.load(config, output=RssOutput.HASH) as rss:
        assert rss.test_run(frame).retval == 0x51CCC178
        rss.reconfigure(config.replace(types=HashType.IPV4))
        assert rss.test_run(frame).retval == 0x323E8FC2
    with EbpfRss.load(config, DeviceMode.TUN, output=RssOutput.REPORT) as rss:
        assert rss.test_run(frame[14:]).retval == HashReport.TCPV4


@pytest.mark.bpf
def test_reconfiguration_under_test_runs_never_mixes_keys() -> None:
    """A hash computed half with the old tables and half with the new ones would match neither key."""
    rng = random.Random(99)
    keys = [rng.randbytes(40) for _ in range(6)]
    src, dst = rng.randbytes(16), rng.randbytes(16)
    ip6 = struct.pack("!IHBB16s16s", 0x60000000, 20, 6, 64, src, dst) + struct.pack("!HH", 1234, 80) + bytes(16)
    frame = bytes(12) + b"\x86\xdd" + ip6
    expected = {toeplitz_hash(k, src + dst + struct.pack("!HH", 1234, 80)) for k in keys}
    assert len(expected) == len(keys)
    seen: Counter[int] = Counter()
    stop = threading.Event()
    config = VnetHashConfig(rss=True, types=HashType.TCPV6, key=keys[0])
    with EbpfRss.load(config, output=RssOutput.HASH) as rss:

        def run() -> None:
            while not stop.is_set():
                seen[rss.test_run(frame).retval] += 1

        worker = threading.Thread(target=run)
        worker.start()
        try:
            for i in range(1, 30):
                rss.reconfigure(config.replace(key=keys[i % len(keys)]), wait=i % 3 == 0)
                assert rss.test_run(frame).retval == toeplitz_hash(keys[i % len(keys)], src + dst + b"\x04\xd2\x00P")
                time.sleep(0.001)
        finally:
            stop.set()
            worker.join()
        rss.settle()
    assert sum(seen.values()) > 100
    assert set(seen) <= expected, set(seen) - expected
    assert len(set(seen)) >= 3


@pytest.mark.bpf
def test_refused_reconfiguration_changes_nothing() -> None:
    config = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY)
    with EbpfRss.load(config, output=RssOutput.REPORT) as rss:
        generation = rss.writer.generation
        with pytest.raises(ValidationError):
            rss.reconfigure(config.replace(types=HashType.IPV4 | HashType.UDP_EX))
        assert rss.config == config
        assert rss.writer.generation == generation  # no slot was written
    assert rss.closed
    with pytest.raises(BpfError):
        rss.reconfigure(config)
