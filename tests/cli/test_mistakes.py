"""Mistakes a new user makes, each with its warning or refusal (issue 15).

Every silent mistake found by trying the tool as a newcomer gets a test here: the device's
intended queue count, short and published keys, queue numbers the device cannot have, dashed
field names, IPv6 flows without brackets, a device named without ``--dev``; and the rules every
error and document follows: a specific hint per error, no Python reprs, ``ok`` equal to the exit
status, help texts that describe their own command only.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pytun_hash.cli import build_parser
from pytun_hash.cli.hints import GENERIC_HINT
from pytun_hash.config import VnetHashConfig
from pytun_hash.device import NetworkNamespace, TunTapDevice, rtnl
from pytun_hash.device.record import DeviceId, RecordStore
from tests.cli.helpers import run_as_nobody

FLOW = "udp,10.0.0.1:5000,10.0.0.2:53"


def _warnings(run: Any) -> list[str]:
    return [line for line in run.err.splitlines() if line.startswith("pytun-hash: warning: ")]


# ---------------------------------------------------------------- the device's intended queue count


@pytest.mark.kernel
@pytest.mark.bpf
def test_the_help_example_create_then_apply_builds_the_table_over_the_created_queues(
    cli: Any, netns: NetworkNamespace, state_roots: tuple[str, str], tmp_path: Path
) -> None:
    created = cli("create", "tap0", "--queues", "4", "--vnet-hdr-size", "20", "--vnet-le", "--json")
    assert created.code == 0, created.err
    doc = created.json()
    assert doc["queues"] == 4 and os.path.exists(doc["intent"]) and "IFF_PERSIST" in doc["flags"] and doc["persist"]
    saved = tmp_path / "tap0-rss.toml"
    try:
        run = cli("apply", "--dev", "tap0", "--key", "random", "--save", str(saved), "--json")
        assert run.code == 0, run.err
        config = VnetHashConfig.from_mapping(run.json()["config"])
        assert set(config.indirection_table) == {0, 1, 2, 3} and len(config.indirection_table) == 128
        assert saved.exists() and _warnings(run) == []
        shown = cli("show", "--dev", "tap0", "--json").json()
        assert shown["config"] == run.json()["config"]
        assert shown["queues"] == {"count": 4, "source": "intent", "attached": 0}
        assert "4 queue(s) (recorded when it was created; 0 attached now)" in cli("show", "--dev", "tap0").out
    finally:
        deleted = cli("delete", "tap0", "--json")
    assert deleted.code == 0 and deleted.json()["deleted"]
    ident = DeviceId(rtnl.thread_netns_inode(), doc["ifindex"], "tap0")
    store = RecordStore(state_roots[0], owner_uid=os.geteuid())
    # delete removes what was kept for the device: its intent, and the record of the hashing that went with it.
    assert store.read_intent(ident) is None and store.read(ident) is None and not os.path.exists(doc["intent"])
    assert "went with it" in deleted.err


@pytest.mark.kernel
def test_apply_without_a_known_queue_count_says_queues_n(cli: Any, netns: NetworkNamespace) -> None:
    # Made without pytun-hash create (no intent) and held by nobody: nothing tells the queue count.
    with TunTapDevice.create("bare%d", queues=2, vnet_hdr=True, persist=True) as device:
        name = device.name
    try:
        run = cli("apply", "--dev", name, "--key", "random")
        assert run.code == 2 and "no recorded queue count" in run.err and "--queues N" in run.err
        dry = cli("apply", "--dry-run", "--dev", name, "--key", "random")
        assert dry.code == 2 and "--queues N" in dry.err
    finally:
        with TunTapDevice.open(name) as again:
            again.set_persist(False)


@pytest.mark.kernel
@pytest.mark.bpf
def test_queue_numbers_beyond_the_device_warn_and_over_256_are_refused(cli: Any, netns: NetworkNamespace) -> None:
    assert cli("create", "q4", "--queues", "4").code == 0
    try:
        beyond = cli("apply", "--dev", "q4", "--key", "random", "--table", "0-7", "--json")
        assert beyond.code == 0
        (warning,) = beyond.json()["warnings"]
        assert "queue(s) 4, 5, 6, 7" in warning and "4 queue(s) (recorded when it was created" in warning
        unclassified = cli("apply", "--dev", "q4", "--key", "random", "--unclassified-queue", "9", "--json")
        assert any("queue(s) 9" in w for w in unclassified.json()["warnings"])
        too_many = cli("apply", "--dev", "q4", "--key", "random", "--queues", "300")
        assert too_many.code == 2 and "1..256 queues" in too_many.err
        assert cli("disable", "--dev", "q4").code == 0
    finally:
        cli("delete", "q4", "--force")


def test_create_refuses_more_than_256_queues_before_touching_anything(cli: Any) -> None:
    run = cli("create", "big0", "--queues", "300")
    assert run.code == 2 and "256" in run.err and GENERIC_HINT not in run.err


def test_predict_refuses_more_than_256_queues(cli: Any) -> None:
    for flag in ("--queues", "--equal"):
        run = cli("predict", "--key", "microsoft", flag, "300", FLOW)
        assert run.code == 2 and f"{flag}: a TUN/TAP device has 1..256 queues" in run.err


# ---------------------------------------------------------------- keys


def test_a_short_key_warns_with_its_effective_bits(cli: Any, tmp_path: Path) -> None:
    run = cli("predict", "--key", "0102030405", "--queues", "4", FLOW, "--json")
    assert run.code == 0
    (warning,) = run.json()["warnings"]
    assert "5 byte(s)" in warning and "first 40 input bits" in warning
    config = tmp_path / "short.toml"
    config.write_text('rss = true\ntypes = ["udpv4"]\nkey = "0102030405060708"\nindirection_table = [0, 1]\n')
    from_file = cli("predict", "--config", str(config), FLOW, "--json")
    assert from_file.code == 0 and any("first 64 input bits" in w for w in from_file.json()["warnings"])
    whole = cli("predict", "--key", "random", "--queues", "4", FLOW, "--json")
    assert "warnings" not in whole.json()


def test_an_empty_key_is_refused(cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "empty.toml"
    config.write_text('rss = true\nkey = ""\nindirection_table = [0, 1]\n')
    run = cli("predict", "--config", str(config), FLOW)
    assert run.code == 2 and "got none" in run.err


def test_random_key_in_a_file_works(cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "random.toml"
    config.write_text('rss = true\ntypes = ["udpv4"]\nkey = "random"\nindirection_table = [0, 1, 2, 3]\n')
    run = cli("predict", "--config", str(config), FLOW, "--json")
    assert run.code == 0 and len(bytes.fromhex(run.json()["config"]["key"])) == 40


@pytest.mark.kernel
@pytest.mark.bpf
def test_a_published_key_on_a_real_device_warns(cli: Any, netns: NetworkNamespace) -> None:
    assert cli("create", "pub0", "--queues", "2").code == 0
    try:
        for name in ("microsoft", "symmetric"):
            run = cli("apply", "--dev", "pub0", "--key", name, "--json")
            assert run.code == 0 and any(f"published {name} key" in w for w in run.json()["warnings"])
        assert cli("disable", "--dev", "pub0").code == 0
    finally:
        cli("delete", "pub0", "--force")
    # The model has no device to expose: no such warning there.
    assert "warnings" not in cli("predict", "--key", "microsoft", "--queues", "2", FLOW, "--json").json()


# ---------------------------------------------------------------- errors: specific hints, no reprs

# (arguments, a piece of the message, a piece of the hint): ~20 different mistakes.
MISTAKES = [
    (["predict", "--key", "zz", "--queues", "4", FLOW], "expected hexadecimal", "80 hex digits"),
    (["predict", "--key", "ab" * 41, "--queues", "4", FLOW], "got 41", "80 hex digits"),
    (["predict", "--key", "microsoft", "--table", "0,1,2", FLOW], "power of two", "--table 0-3"),
    (["predict", "--key", "microsoft", "--queues", "4", "--types", "tcpv9", FLOW], "unknown hash type", "tcp4"),
    (["predict", "--key", "microsoft", "--queues", "4", "--table-length", "100", FLOW], "power of two", "1 to 128"),
    (["predict", "--key", "microsoft", "--equal", "0", FLOW], "1..256", "queues the VMM attaches"),
    (["predict", "--key", "microsoft", "--weight", "0,0", FLOW], "non-zero", "--weight 2,1,1,1"),
    (["predict", "--key", "microsoft", "--queues", "4", "--unclassified-queue", "70000", FLOW], "0..65535", "(0 is"),
    (["predict", "--key", "microsoft", "--queues", "4", "udp,fe80::1:1,fe80::2:2"], "[ADDRESS]:PORT", "brackets"),
    (["predict", "--key", "microsoft", "--queues", "4", "tcp,1.2.3.4,1.2.3.5:1"], "source port", "PROTO,SRC:PORT"),
    (["predict", "--key", "microsoft", "--queues", "4", "tcp,1.2.3.400:1,1.2.3.5:2"], "not an IP", "PROTO,SRC"),
    (["predict", "--key", "microsoft", "--queues", "4", "xyz,1.2.3.4:1,1.2.3.5:2"], "protocol", "tcp, udp, icmp"),
    (["predict", "--key", "microsoft", "--queues", "4", "tcp,1.2.3.4:1"], "PROTO,SRC", "brackets"),
    (["create", "a/b"], "interface names", "e.g. tap0"),
    (["create", "abcdefghijklmnopq"], "1..15 bytes", "e.g. tap0"),
    (["create", "x0", "--owner", "\u0661\u0660"], "ASCII", "numeric uid"),
    (["apply", "vm0"], "names its device with --dev", "--dev vm0"),
    (["hash", "--key", "microsoft", "--src", "1.2.3.4"], "needs --src and --dst", "hash --help"),
    (["predict", "--key", "microsoft", "--queues", "4", "--revision", "v99", FLOW], "unknown revision", "--help"),
]


@pytest.mark.parametrize(("args", "message", "hint"), MISTAKES, ids=[" ".join(m[0])[:60] for m in MISTAKES])
def test_each_mistake_gets_its_own_hint_and_no_repr(cli: Any, args: list[str], message: str, hint: str) -> None:
    run = cli(*args, "--json")
    assert run.code == 2, run.err
    line = run.err.strip()
    assert line.count("\n") == 0 and message in line and "(hint: " in line and hint in line.split("(hint: ", 1)[1]
    assert GENERIC_HINT not in line
    for leak in ("None", "<", "Revision.", "HashType.", " b'", "(b'", "Traceback"):
        assert leak not in line, leak
    document = json.loads(run.out)
    assert document["ok"] is False and document["error"]["exit_code"] == 2


def test_a_dashed_field_name_in_a_file_says_underscores(cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "dashed.toml"
    config.write_text("unclassified-queue = 3\n")
    run = cli("predict", "--config", str(config), "--queues", "4", "--key", "microsoft", FLOW)
    assert run.code == 2 and "underscores" in run.err and "(hint: write unclassified_queue)" in run.err


# ---------------------------------------------------------------- ok agrees with the exit status

JSON_COMMANDS = [
    ["probe"],
    ["hash", "--key", "microsoft", "--src", "66.9.149.187", "--sport", "2794", "--dst", "161.142.100.80",
     "--dport", "1766"],
    ["predict", "--key", "microsoft", "--queues", "4", FLOW],
    ["apply", "--dry-run", "--revision", "v12", "--queues", "4", "--key", "microsoft"],
    ["predict", "--key", "zz", FLOW],
    ["show", "--dev", "no-such-dev0"],
    ["create", "a/b"],
]  # fmt: skip


@pytest.mark.parametrize("args", JSON_COMMANDS, ids=[" ".join(a)[:40] for a in JSON_COMMANDS])
def test_ok_in_json_agrees_with_the_exit_status(cli: Any, args: list[str]) -> None:
    run = cli(*args, "--json")
    assert json.loads(run.out)["ok"] is (run.code == 0), (run.code, run.out[:300])


def test_probe_as_an_unprivileged_user_says_ok_false_with_its_error_status() -> None:
    done = run_as_nobody("probe", "--json")
    document = json.loads(done.stdout)
    assert done.returncode != 0 and document["ok"] is False and "tun" in document


# ---------------------------------------------------------------- help texts


def _command_help(command: str) -> str:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return str(sub.choices[command].format_help())


@pytest.mark.parametrize(
    ("command", "other"),
    [("apply", "'disable --dev NAME'"), ("disable", "'--save FILE'"), ("create", "'delete NAME'"),
     ("delete", "'create NAME'"), ("hash", "'predict' names"), ("predict", "'hash' computes")],
)  # fmt: skip
def test_each_commands_help_describes_that_command_only(command: str, other: str) -> None:
    text = _command_help(command)
    assert other not in text and f"'{command}" in text and ":mod:" not in text and ":class:" not in text


@pytest.mark.kernel
def test_predict_for_a_device_uses_its_recorded_queue_count(cli: Any, netns: NetworkNamespace) -> None:
    assert cli("create", "pq0", "--queues", "4").code == 0
    try:
        run = cli("predict", "--dev", "pq0", "--backend", "ebpf", "--key", "microsoft", FLOW, "--json")
        assert run.code == 0, run.err
        assert run.json()["queues"] == 4 and len(run.json()["histogram"]) == 4
    finally:
        cli("delete", "pq0", "--force")
    with TunTapDevice.create("pq%d", queues=2, vnet_hdr=True, persist=True) as device:
        name = device.name
    try:  # not made by pytun-hash and held by nobody: the count is unknown, and the error says --queues N
        unknown = cli("predict", "--dev", name, "--backend", "ebpf", "--key", "microsoft", FLOW)
        assert unknown.code == 2 and "--queues N" in unknown.err
        given = cli("predict", "--dev", name, "--backend", "ebpf", "--key", "microsoft", "--queues", "2", FLOW)
        assert given.code == 0, given.err
    finally:
        with TunTapDevice.open(name) as again:
            again.set_persist(False)
