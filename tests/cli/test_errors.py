"""Exit codes, one-line errors with hints, the JSON error document, --debug, help and progress."""

from __future__ import annotations

import errno
import io
import json
import time
from typing import Any

import pytest

from pytun_hash.cli import build_parser, main
from pytun_hash.cli.output import (
    MAX_ERROR_LINE_CHARS,
    MAX_HINT_CHARS,
    MAX_MESSAGE_CHARS,
    CliError,
    ExitCode,
    Output,
    Progress,
    describe_error,
    error_document,
    pairs,
    table,
)
from pytun_hash.errors import (
    BusyError,
    DeviceGoneError,
    FeatureUnsupportedError,
    KernelError,
    PrivilegeError,
    UnsupportedError,
    ValidationError,
)
from pytun_hash.testing import EmulatorError

COMMANDS = ["probe", "create", "delete", "apply", "disable", "hash", "predict", "demo", "compat"]


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ValidationError("types", "bad"), ExitCode.USAGE),
        (CliError("x", "y", ExitCode.KERNEL), ExitCode.KERNEL),
        (PrivilegeError(errno.EPERM, "TUNSETIFF", "be root"), ExitCode.KERNEL),
        (BusyError(errno.EBUSY, "TUNSETSTEERINGEBPF", "detach"), ExitCode.KERNEL),
        (DeviceGoneError(errno.EBADFD, "TUNGETIFF", "reopen"), ExitCode.KERNEL),
        (KernelError(errno.EIO, "read", "retry"), ExitCode.KERNEL),
        (FeatureUnsupportedError(errno.EINVAL, "TUNGETVNETHASHCAP", "use ebpf"), ExitCode.UNSUPPORTED),
        (UnsupportedError(errno.EINVAL, "TUNSETVNETBE", "no cross-endian"), ExitCode.UNSUPPORTED),
        (EmulatorError("no seccomp"), ExitCode.KERNEL),
        (KeyboardInterrupt(), ExitCode.INTERRUPTED),
        (RuntimeError("boom"), ExitCode.INTERNAL),
    ],
)
def test_exit_code_mapping(exc: BaseException, code: ExitCode) -> None:
    got, message, hint = describe_error(exc)
    assert got is code and message
    if code is not ExitCode.INTERRUPTED:
        assert hint


def test_emulator_error_is_recognised_without_the_cli_importing_the_test_kit() -> None:
    code, message, hint = describe_error(EmulatorError("no seccomp"))
    assert code is ExitCode.KERNEL and message == "kernel emulator: no seccomp" and "seccomp" in hint


def test_kernel_error_document() -> None:
    doc = error_document(PrivilegeError(errno.EPERM, "bpf(BPF_PROG_LOAD)", "grant CAP_BPF"))
    assert doc == {
        "ok": False,
        "error": {
            "message": "bpf(BPF_PROG_LOAD) failed with EPERM",
            "hint": "grant CAP_BPF",
            "exit_code": 3,
            "type": "PrivilegeError",
            "errno": "EPERM",
            "request": "bpf(BPF_PROG_LOAD)",
        },
    }


@pytest.mark.parametrize(
    ("exc", "code", "needle"),
    [
        (RuntimeError("boom"), 5, "internal error: RuntimeError: boom"),
        (KeyboardInterrupt(), 130, "interrupted"),
        (
            FeatureUnsupportedError(errno.EINVAL, "TUNGETVNETHASHCAP", "use --backend ebpf"),
            4,
            "use --backend ebpf",
        ),
        (PrivilegeError(errno.EACCES, "open(/dev/net/tun)", "run as root"), 3, "failed with EACCES"),
    ],
)
def test_errors_from_commands(
    cli: Any, monkeypatch: pytest.MonkeyPatch, exc: BaseException, code: int, needle: str
) -> None:
    def handler(args: object, out: object) -> int:
        raise exc

    monkeypatch.setattr("pytun_hash.cli.hashcmd.run_hash", handler)
    run = cli("hash", "--key", "microsoft", "--input", "00")
    assert run.code == code
    assert run.err.count("\n") == 1 and needle in run.err and "Traceback" not in run.err
    debug = cli("hash", "--key", "microsoft", "--input", "00", "--debug")
    assert debug.code == code and "Traceback (most recent call last)" in debug.err
    assert debug.err.rstrip().splitlines()[-1].startswith("pytun-hash: error: ")
    doc = cli("hash", "--key", "microsoft", "--input", "00", "--json").json()
    assert doc["ok"] is False and doc["error"]["exit_code"] == code


def test_usage_errors_are_one_line(cli: Any) -> None:
    for args in (
        ["frobnicate"],
        ["hash", "--bogus"],
        ["create"],
        ["apply", "--backend", "gpu"],
        ["--json", "demo", "x"],
    ):
        run = cli(*args)
        assert run.code == 2, args
        assert (
            run.err.count("\n") == 1
            and run.err.startswith("pytun-hash: error: ")
            and "(hint: see `" in run.err
        )
    assert cli("--json", "frobnicate").json()["error"]["exit_code"] == 2
    assert cli("frobnicate", "--json").json()["error"]["type"] == "CliError"


def test_no_command_prints_help(cli: Any) -> None:
    run = cli()
    assert run.code == 2 and "usage: pytun-hash" in run.err and run.out == ""


def test_help_documents_every_command_and_the_exit_codes(cli: Any) -> None:
    with pytest.raises(SystemExit):  # argparse itself, outside main()
        build_parser().parse_args(["--help"])
    run = cli("--help")
    assert run.code == 0
    for command in COMMANDS:
        assert command in run.out
    for code in ("0 ", "1 ", "2 ", "3 ", "4 ", "5 ", "130"):
        assert f"\n  {code}" in run.out
    for command in COMMANDS:
        sub = cli(command, "--help")
        assert sub.code == 0 and "--json" in sub.out and "--debug" in sub.out, command
    assert cli("--version").out.startswith("pytun-hash ")


def test_json_flag_position(cli: Any) -> None:
    before = cli("--json", "hash", "--key", "microsoft", "--input", "00")
    after = cli("hash", "--key", "microsoft", "--input", "00", "--json")
    assert before.json() == after.json()


def test_main_uses_sys_argv(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(
        "sys.argv", ["pytun-hash", "hash", "--key", "microsoft", "--input", "420995bba18e6450"]
    )
    assert main() == 0
    assert capsys.readouterr().out.startswith("0x323e8fc2")


def test_table_and_pairs() -> None:
    assert table(("a", "bb"), [(1, 2), ("long", 3)]) == "a     bb\n----  --\n1     2\nlong  3"
    assert pairs([("x", 1), ("yyy", "z")]) == "x    1\nyyy  z"


def test_output_warnings_go_to_stderr_and_json() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    out = Output(json_mode=True, stdout=stdout, stderr=stderr)
    out.warn("careful")
    out.result({"value": 1}, "unused")
    assert stderr.getvalue() == "pytun-hash: warning: careful\n"
    assert '"warnings": [\n    "careful"\n  ]' in stdout.getvalue() and '"ok": true' in stdout.getvalue()


def test_a_streamed_result_is_one_json_document_with_ok_last() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    out = Output(json_mode=True, stdout=stdout, stderr=stderr)
    stream = out.stream({"head": {"a": [1, 2]}}, "items", "unused")
    stream.entry({"n": 0}, "unused")
    out.warn("careful")
    stream.entry({"n": 1}, "unused")
    stream.finish({"tail": 2}, "unused")
    document = json.loads(stdout.getvalue())
    assert list(document) == ["head", "items", "tail", "warnings", "ok"]
    items = [{"n": 0}, {"n": 1}]
    assert document == {"head": {"a": [1, 2]}, "items": items, "tail": 2, "warnings": ["careful"], "ok": True}


def test_an_error_ends_a_streamed_document_and_text_stops() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    out = Output(json_mode=True, stdout=stdout, stderr=stderr)
    out.stream({}, "items", "unused")
    assert out.error(ValidationError("pcap", "cut short")) == ExitCode.USAGE
    expected = error_document(ValidationError("pcap", "cut short"))
    assert json.loads(stdout.getvalue()) == {"items": [], "error": expected["error"], "ok": False}
    assert stderr.getvalue().startswith("pytun-hash: error: invalid pcap: cut short")
    text_out = io.StringIO()
    out = Output(stdout=text_out, stderr=io.StringIO())
    stream = out.stream({}, "items", "head line")
    stream.entry({}, "row 0")
    out.error(ValidationError("pcap", "cut short"))
    assert text_out.getvalue() == "head line\nrow 0\n"


def test_error_texts_are_capped() -> None:
    code, message, hint = describe_error(CliError("m" * 10**6, "h" * 10**6))
    assert code == ExitCode.USAGE and len(message) == MAX_MESSAGE_CHARS and len(hint) == MAX_HINT_CHARS
    stderr = io.StringIO()
    Output(stderr=stderr).error(ValidationError("f" * 10**5, "\udcff" * 10**6))
    assert stderr.getvalue().count("\n") == 1 and len(stderr.getvalue()) <= MAX_ERROR_LINE_CHARS + 1


class _Terminal(io.StringIO):
    """A stream that says it is a terminal: progress is only written to one."""

    def isatty(self) -> bool:
        return True


def test_progress_only_after_a_second() -> None:
    stream = _Terminal()
    with Progress(stream, "quick", 10) as progress:
        progress.update(5)
    assert stream.getvalue() == ""
    stream = _Terminal()
    with Progress(stream, "slow", 10, after=0.0) as progress:
        time.sleep(0.01)
        progress.update(5)
    # The line is rewritten in place, and ended when the step ends.
    reports = stream.getvalue().split("\r")
    assert reports[0] == "" and reports[1].startswith("pytun-hash: slow: 5/10 (") and len(reports) == 3
    assert reports[2].endswith(")\n")
