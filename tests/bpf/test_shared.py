"""The maps an unprivileged VMM writes through ``mmap``: the handoff message, the fd checks, the slot protocol."""

from __future__ import annotations

import os
import random
import socket
import struct
from collections.abc import Iterator

import pytest

from pytun_hash import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.bpf.maps import ArrayMap
from pytun_hash.bpf.rss import EbpfRss
from pytun_hash.bpf.rss_program import config_value
from pytun_hash.bpf.shared import (
    CONTROL_VALUE_SIZE,
    PROTOCOL,
    SLOT_HEADER,
    SLOT_VALUE_SIZE,
    SLOTS,
    Handoff,
    SlotWriter,
    receive_maps,
    send_maps,
)
from pytun_hash.device.tap import DeviceMode
from pytun_hash.errors import DecodeError, ValidationError
from pytun_hash.model import Framing, predict_queue
from tests.bpf.frames import random_config, random_ethernet_frame, random_ip_packet
from tests.bpf.test_rss_program import runnable_in_test_run

HANDOFF = Handoff("tap", "spec", 4, 7)
CONFIG = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY, table_length=8)


def test_the_handoff_message_round_trips_and_refuses_other_layouts() -> None:
    assert Handoff.parse(HANDOFF.message()) == HANDOFF
    text = HANDOFF.message().decode()
    bad_ones = [
        b"",
        b"[]",
        b"{}",
        text.replace(PROTOCOL, "other/1").encode(),
        text.replace('"slots": 4', '"slots": 2').encode(),
        text.replace('"tap"', '"x"').encode(),
    ]
    for bad in bad_ones:
        with pytest.raises(DecodeError):
            Handoff.parse(bad)


@pytest.fixture
def maps() -> Iterator[tuple[ArrayMap, ArrayMap]]:
    with (
        ArrayMap.create(CONTROL_VALUE_SIZE, 1, mmapable=True, name="t_ctl") as control,
        ArrayMap.create(SLOT_VALUE_SIZE, SLOTS, mmapable=True, name="t_slots") as slots,
    ):
        yield control, slots


@pytest.mark.bpf
def test_writes_go_to_the_next_slot_whole_then_become_active(maps: tuple[ArrayMap, ArrayMap]) -> None:
    control, slots = maps
    clock = [100.0]
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        send_maps(a, HANDOFF, control.fd, slots.fd)
        handoff, control_fd, slots_fd = receive_maps(b)
    with SlotWriter(control_fd, slots_fd, handoff, clock=lambda: clock[0]) as writer:
        assert (writer.active, writer.generation) == (0, 0)
        configs = [CONFIG.replace(indirection_table=(q,) * 8) for q in range(6)]
        for n, config in enumerate(configs, start=1):
            clock[0] += 1.0
            slot = writer.write(config)
            assert slot == n % SLOTS == writer.active and writer.generation == n
            # Read back through bpf(2), as the program sees it: seq even, the whole value.
            value = slots.lookup(slot)
            (seq,) = struct.unpack_from("=I", value)
            assert seq % 2 == 0 and seq > 0
            assert value[SLOT_HEADER:] == config_value(config)
            assert struct.unpack("=II", control.lookup(0)) == (slot, n)


@pytest.mark.bpf
def test_a_slot_rests_after_it_stopped_being_active(
    maps: tuple[ArrayMap, ArrayMap], monkeypatch: pytest.MonkeyPatch
) -> None:
    control, slots = maps
    waits: list[float] = []
    monkeypatch.setattr("pytun_hash.bpf.shared.time.sleep", waits.append)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        send_maps(a, HANDOFF, control.fd, slots.fd)
        handoff, control_fd, slots_fd = receive_maps(b)
    # A receiver cannot know when the sender last switched slots: every slot rests before its first write.
    with SlotWriter(control_fd, slots_fd, handoff, clock=lambda: 5.0) as writer:
        writer.write(CONFIG)
        assert len(waits) == 1 and waits[0] > 0
    waits.clear()
    # Maps no program has read yet (the loader's): no rest until a slot was active.
    with SlotWriter(os.dup(control.fd), os.dup(slots.fd), handoff, new_maps=True, clock=lambda: 5.0) as writer:
        first = writer.active
        for _ in range(SLOTS - 1):  # the three slots after the active one: never active
            writer.write(CONFIG)
        assert waits == []
        writer.write(CONFIG)  # the first active slot, inactive since the first write, "now" on this clock
        assert writer.active == first and len(waits) == 1 and waits[0] > 0


@pytest.mark.bpf
def test_the_receiver_checks_the_maps_and_closes_what_it_refuses() -> None:
    before = set(os.listdir("/proc/self/fd"))
    with (
        ArrayMap.create(CONTROL_VALUE_SIZE, 1, name="t_ctl") as plain,  # no BPF_F_MMAPABLE
        ArrayMap.create(SLOT_VALUE_SIZE, SLOTS, mmapable=True, name="t_slots") as slots,
        ArrayMap.create(CONTROL_VALUE_SIZE, 2, mmapable=True, name="t_two") as two,
    ):
        for control, why in ((plain, "BPF_F_MMAPABLE"), (two, "max_entries")):
            a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            with a, b, pytest.raises(ValidationError, match=why):
                send_maps(a, HANDOFF, control.fd, slots.fd)
                receive_maps(b)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with a, b, pytest.raises(DecodeError, match="2 map fds"):
            a.sendmsg([HANDOFF.message()])
            receive_maps(b)
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with a, b, pytest.raises(DecodeError, match="not a pytun-hash-rss-maps/1 message"):
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("=ii", slots.fd, slots.fd))]
            a.sendmsg([HANDOFF.message().replace(PROTOCOL.encode(), b"other/1")], rights)
            receive_maps(b)
    assert set(os.listdir("/proc/self/fd")) == before


@pytest.mark.bpf
@pytest.mark.parametrize("mode", [DeviceMode.TAP, DeviceMode.TUN])
def test_the_shared_program_steers_as_the_model_with_every_config_written(mode: DeviceMode) -> None:
    # The configs are written through the mmapped slots, as an unprivileged VMM writes them; the
    # program (through BPF_PROG_TEST_RUN) must follow each one, slot after slot.
    framing = Framing.ETHERNET if mode is DeviceMode.TAP else Framing.IP
    make = random_ethernet_frame if mode is DeviceMode.TAP else random_ip_packet
    rng = random.Random(1800 + (mode is DeviceMode.TUN))
    config = random_config(rng, max_queue=15)
    with EbpfRss.load(config, mode) as rss:
        for n in range(2 * SLOTS + 1):
            if n:
                config = random_config(rng, max_queue=15)
                rss.writer.write(config)
            checked = 0
            while checked < 60:
                frame = make(rng)
                if mode is DeviceMode.TAP and not runnable_in_test_run(frame):
                    continue
                checked += 1
                want = predict_queue(config, frame, 0x10000, l2=framing)
                assert rss.test_run(frame).retval == want, (n, frame.hex())


@pytest.mark.bpf
def test_a_slot_that_changes_under_the_program_is_never_used() -> None:
    # A slot whose seq is odd is being written: the program computes again from the slot named
    # active then, up to READ_ATTEMPTS times, and never returns what the half-written slot says.
    config = CONFIG.replace(indirection_table=(3,) * 8)
    frame = random_ethernet_frame(random.Random(5))
    while not runnable_in_test_run(frame):
        frame = random_ethernet_frame(random.Random(len(frame)))
    with EbpfRss.load(config) as rss:
        assert rss.test_run(frame).retval == 3
        active = rss.writer.active
        slots = rss.writer._maps()[1]  # as a writer that stopped mid-write would leave it
        base = active * ((SLOT_VALUE_SIZE + 7) & ~7)
        (seq,) = struct.unpack_from("=I", slots, base)
        struct.pack_into("=I", slots, base, seq | 1)
        assert rss.test_run(frame).retval == 0  # gave up after READ_ATTEMPTS: queue 0, not slot data
        struct.pack_into("=I", slots, base, (seq | 1) + 1)
        assert rss.test_run(frame).retval == 3


@pytest.mark.bpf
def test_in_force_reads_back_what_any_holder_of_the_maps_wrote() -> None:
    first = CONFIG
    later = CONFIG.replace(indirection_table=(1, 0), report=True)
    with EbpfRss.load(first) as rss:
        assert rss.in_force() == first
        # Another holder of the maps (a VMM they were handed to) writes through its own mappings.
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with a, b:
            rss.handoff(a, queues=4)
            with SlotWriter.receive(b) as vmm:
                vmm.write(later)
                assert vmm.in_force() == (later, vmm.semantics)
        assert rss.in_force() == later and rss.config == first  # what this instance wrote last
