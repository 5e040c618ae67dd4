"""``pytun-hash handoff``: the privileged step of issue 18's privilege separation, as a command."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytun_hash import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.bpf.shared import SlotWriter
from pytun_hash.device import NetworkNamespace, TunTapDevice
from pytun_hash.model import predict_queue
from tests.device.traffic import PEER_ADDR, udp_socket, wire_tap

QUEUES = 4


@pytest.fixture
def wired(netns: NetworkNamespace) -> Iterator[TunTapDevice]:
    with TunTapDevice.create("ho%d", queues=QUEUES, vnet_hdr=False) as device:
        for queue in device.queues:
            os.set_blocking(queue.fd, False)
        wire_tap(netns, device.name)
        yield device


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytun_hash", "handoff", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _connect(path: Path, child: subprocess.Popen[str]) -> socket.socket:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "handoff never listened"
        time.sleep(0.01)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.connect(str(path))
    return sock


def _show(name: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "pytun_hash", "show", "--dev", name, "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _queues_of(device: TunTapDevice, ports: range) -> list[tuple[int, bytes]]:
    with udp_socket() as sock:
        for port in ports:
            sock.sendto(b"handoff", (PEER_ADDR, port))
    got = []
    for index, queue in enumerate(device.queues):
        while select.select([queue.fd], [], [], 0)[0]:
            got.append((index, os.read(queue.fd, 4096)))
    return got


@pytest.mark.kernel
@pytest.mark.bpf
def test_the_vmm_gets_the_maps_steers_and_its_exit_detaches(wired: TunTapDevice, tmp_path: Path) -> None:
    path = tmp_path / "vm0.sock"
    child = _start("--dev", wired.name, "--socket", str(path), "--key", "microsoft", "--timeout", "30")
    try:
        with _connect(path, child) as sock, SlotWriter.receive(sock) as writer:
            assert os.stat(path).st_mode & 0o777 == 0o600
            assert writer.handoff.queues == QUEUES and writer.handoff.mode == "tap"
            config = VnetHashConfig.round_robin(QUEUES, key=MICROSOFT_RSS_KEY).replace(indirection_table=(2, 3))
            # Recorded and pinned as it was handed over; `show` reads back what the VMM wrote since.
            first = _show(wired.name)
            assert first["backend"] == "ebpf" and first["verified"] is True
            assert first["read_back"] == first["config"] and first["ebpf"]["program_id"] > 0
            writer.write(config)
            frames = _queues_of(wired, range(30000, 30040))
            assert len(frames) == 40
            assert all(queue == predict_queue(config, frame, QUEUES) for queue, frame in frames)
            assert {queue for queue, _ in frames} == {2, 3}
            now = _show(wired.name)
            assert now["verified"] is False and now["config"] == first["config"]
            assert VnetHashConfig.from_mapping(now["read_back"]) == config
            text = subprocess.run(
                [sys.executable, "-m", "pytun_hash", "show", "--dev", wired.name],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "written through them since" in text and "    0:      2     3\n" in text
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 0, err
    doc = json.loads(out)
    assert doc["ok"] and doc["vmm_closed"] and not doc["kept"] and doc["device"] == wired.name
    assert not path.exists()
    # Detached: the kernel's own selection spreads 40 flows again (all on 2 and 3 has odds of 2**-40).
    assert len(Counter(queue for queue, _ in _queues_of(wired, range(31000, 31040)))) > 2
    assert _show(wired.name)["backend"] is None  # and the record went with it


@pytest.mark.kernel
@pytest.mark.bpf
def test_keep_leaves_it_recorded_for_show_and_disable(wired: TunTapDevice, tmp_path: Path) -> None:
    path = tmp_path / "vm0.sock"
    child = _start("--dev", wired.name, "--socket", str(path), "--key", "microsoft", "--keep", "--timeout", "30")
    try:
        with _connect(path, child) as sock, SlotWriter.receive(sock) as writer:
            out, err = child.communicate(timeout=30)
            assert child.returncode == 0, err
            config = VnetHashConfig.round_robin(QUEUES, key=MICROSOFT_RSS_KEY).replace(indirection_table=(1,))
            writer.write(config)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert json.loads(out)["kept"] is True
    # The VMM is gone; its last configuration steers, and `show` reads it back from the pins.
    assert {queue for queue, _ in _queues_of(wired, range(32000, 32020))} == {1}
    shown = _show(wired.name)
    assert shown["backend"] == "ebpf" and VnetHashConfig.from_mapping(shown["read_back"]) == config
    off = subprocess.run(
        [sys.executable, "-m", "pytun_hash", "disable", "--dev", wired.name, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert off.returncode == 0, off.stderr
    assert json.loads(off.stdout)["backend"] == "ebpf" and _show(wired.name)["backend"] is None
    assert len(Counter(queue for queue, _ in _queues_of(wired, range(33000, 33040)))) > 1


@pytest.mark.kernel
@pytest.mark.bpf
def test_refusals(wired: TunTapDevice, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    for args, code, says in (
        (["--dev", "nosuch0", "--socket", str(tmp_path / "a")], 3, "no TUN/TAP device named"),
        (["--dev", wired.name, "--socket", str(taken)], 2, "exists"),
        (["--dev", wired.name, "--fd", "0", "--owner", "0"], 2, "--owner goes with --socket"),
        (["--dev", wired.name, "--socket", str(tmp_path / "b"), "--timeout", "0"], 3, "no VMM connected"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "pytun_hash", "handoff", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == code and says in done.stderr, (args, done.returncode, done.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
