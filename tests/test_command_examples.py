"""Every command example a user is shown runs as printed.

Two sources: the ``examples:`` of ``pytun-hash --help`` (``pytun_hash.cli.parser._EXAMPLES``, one command
a line), and the ```console blocks of README.md and of the pages in docs/. The convention for the pages
(README.md repeats it in a comment above its first block):

* a ```console block is one session, run in order, so state carries from command to command
  (``create vm0`` before ``apply --dev vm0``);
* a line starting with ``$ `` (as a user) or ``# `` (as root) is a command; a command ending in ``\\``
  continues on the next line; every other line is sample output, shown and not compared;
* a command exits 0, unless it ends in a comment ``# exit status N`` that documents another status;
* blocks that must not run (a QEMU command line, ``make test`` itself) use another fence: ```text, ```sh.

A session runs as root (commands printed with ``sudo`` have it removed), in a fresh anonymous network
namespace (the test thread's: the shell running each command inherits it, so every device it makes goes
with the namespace), each command through ``bash -c`` with:

* ``PATH`` starting with this interpreter's bin directory, so ``pytun-hash`` is this checkout's console
  script, and ``USER`` the name of the effective user (``$USER`` expands to it);
* ``PYTUN_HASH_STATE_DIR`` and ``PYTUN_HASH_BPFFS`` in a temporary directory (never ``/run/pytun_hash`` or
  ``/sys/fs/bpf``; a bpffs mounted there is unmounted afterwards);
* a temporary working directory, where ``--save tap0-rss.toml`` lands, with ``examples`` linked to the
  repository's so that ``examples/configs/rss.toml`` resolves.

Tests that run sessions skip (with the precise reason) only without root, ``/dev/net/tun`` or network
namespaces; the ones that check the extraction run everywhere.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from pytun_hash import _sys
from pytun_hash.bpf.pin import is_bpffs
from pytun_hash.cli.parser import _EXAMPLES
from pytun_hash.hashing.state import BPFFS_ENV, STATE_ENV

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPT = Path(sys.executable).parent / "pytun-hash"
#: Per command; ``demo`` takes about 10 s on an idle 2-core machine.
COMMAND_TIMEOUT = 300

_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})(.*)$")
_PROMPT = re.compile(r"^([$#]) (.*)$")
_EXIT_STATUS = re.compile(r"\s+#\s*exit status (\d+)\s*$")
_SUDO = re.compile(r"(^|&&|\|\||;|\|)(\s*)sudo\s+(?!-)")


@attrs.frozen
class Command:
    """One command as printed (after its prompt), where it was printed, and the status it should exit with."""

    text: str
    where: str
    expected: int = 0

    def as_run(self) -> str:
        """The command handed to ``bash -c``: as printed, without ``sudo`` (this runs as root)."""
        text = _SUDO.sub(r"\1\2", self.text)
        if re.search(r"(^|\s)sudo(\s|$)", text):
            raise ValueError(f"{self.where}: a sudo with options cannot be run as printed: {self.text!r}")
        return text


@attrs.frozen
class Session:
    """Commands run in order in one namespace, sharing a working directory and pytun_hash's state."""

    name: str
    commands: tuple[Command, ...]


def _command(text: str, where: str) -> Command:
    found = _EXIT_STATUS.search(text)
    return Command(text, where, int(found.group(1)) if found else 0)


def help_session(epilog: str = _EXAMPLES) -> Session:
    """The ``examples:`` of ``pytun-hash --help``: one command a line, run as one session."""
    lines = epilog.splitlines()
    start = lines.index("examples:") + 1
    commands = [
        _command(line.strip(), f"pytun-hash --help, example {n}")
        for n, line in enumerate((line for line in lines[start:] if line.strip()), start=1)
    ]
    return Session("pytun-hash --help", tuple(commands))


def console_sessions(text: str, page: str) -> list[Session]:
    """The ```console blocks of a Markdown page, one session each (named ``page:line``)."""
    sessions: list[Session] = []
    fence: str | None = None
    block: list[tuple[int, str]] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        found = _FENCE.match(line)
        if fence is None:
            if found:
                fence = found.group(2)
                info = found.group(3).strip().split()
                block = [] if info[:1] == ["console"] else None
                start = number
            continue
        if found and found.group(2).startswith(fence) and not found.group(3).strip():
            if block is not None:
                sessions.append(Session(f"{page}:{start}", _block_commands(block, page)))
            fence, block = None, None
            continue
        if block is not None:
            block.append((number, line))
    if fence is not None:
        raise ValueError(f"{page}: a code block opened at line {start} is never closed")
    return sessions


def _block_commands(block: list[tuple[int, str]], page: str) -> tuple[Command, ...]:
    commands: list[Command] = []
    pending: tuple[int, str] | None = None
    for number, line in block:
        if pending is not None:
            first, text = pending
            text = text[:-1] + " " + line.strip()
            pending = (first, text) if text.endswith("\\") else None
            if pending is None:
                commands.append(_command(text, f"{page}:{first}"))
            continue
        prompt = _PROMPT.match(line)
        if prompt is None:
            continue  # sample output
        text = prompt.group(2).strip()
        if text.endswith("\\"):
            pending = (number, text)
        else:
            commands.append(_command(text, f"{page}:{number}"))
    if pending is not None:
        raise ValueError(f"{page}:{pending[0]}: the last command continues past the end of its block")
    return tuple(commands)


def all_sessions() -> list[Session]:
    """The help's session, then every console block of README.md and docs/*.md."""
    sessions = [help_session()]
    for page in PAGES:
        sessions.extend(console_sessions(page.read_text(), str(page.relative_to(ROOT))))
    return sessions


# ----------------------------------------------------------------------------- extraction (no privileges)


def test_the_help_examples_are_all_found() -> None:
    session = help_session()
    printed = [line.strip() for line in _EXAMPLES.splitlines()[1:] if line.strip()]
    assert [c.text for c in session.commands] == printed and len(printed) >= 5
    assert all(c.expected == 0 for c in session.commands)
    as_run = [c.as_run() for c in session.commands]
    assert all(text.startswith("pytun-hash ") for text in as_run), as_run
    assert "pytun-hash create tap0 --queues 4 --vnet-hdr-size 20 --vnet-le --owner $USER" in as_run


def test_the_readme_shows_console_sessions_and_each_runs_something() -> None:
    sessions = console_sessions((ROOT / "README.md").read_text(), "README.md")
    assert len(sessions) >= 2
    for session in sessions:
        assert session.commands, f"{session.name}: a console block without a command (use ```text for output)"
    first = [c.as_run().split()[:2] for c in sessions[0].commands]
    assert ["pytun-hash", "create"] in first and ["pytun-hash", "apply"] in first
    assert ["pytun-hash", "disable"] in first and ["pytun-hash", "delete"] in first


def test_the_convention() -> None:
    page = "\n".join(
        [
            "```console",
            "$ sudo pytun-hash create vm0 --owner $USER",
            "created persistent tap vm0",
            "# pytun-hash apply --dev vm0 \\",
            "    --equal 4",
            "#output, not a command (no space after the prompt)",
            "$ pytun-hash predict --dev vm0 udp,1.2.3.4,5.6.7.8  # exit status 2",
            "```",
            "",
            "```text",
            "# qemu-system-x86_64 -netdev tap,ifname=vm0",
            "```",
            "````console",
            "$ true && sudo pytun-hash delete vm0",
            "```",
            "````",
        ]
    )
    first, second = console_sessions(page, "page.md")
    assert first.name == "page.md:1" and second.name == "page.md:13"
    assert [(c.where, c.as_run(), c.expected) for c in first.commands] == [
        ("page.md:2", "pytun-hash create vm0 --owner $USER", 0),
        ("page.md:4", "pytun-hash apply --dev vm0  --equal 4", 0),
        ("page.md:7", "pytun-hash predict --dev vm0 udp,1.2.3.4,5.6.7.8  # exit status 2", 2),
    ]
    assert [c.as_run() for c in second.commands] == ["true && pytun-hash delete vm0"]
    with pytest.raises(ValueError, match="sudo with options"):
        Command("sudo -E pytun-hash demo", "x").as_run()
    with pytest.raises(ValueError, match="never closed"):
        console_sessions("```console\n$ true\n", "open.md")


# ----------------------------------------------------------------------------- running them (root)


@pytest.fixture
def session_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A working directory (``examples`` linked in) and the environment the session's commands get."""
    if not SCRIPT.exists():
        pytest.skip(f"the pytun-hash console script is not installed next to {sys.executable} (pip install -e .)")
    base = tmp_path_factory.mktemp("examples")
    os.chmod(base, 0o700)
    work = base / "cwd"
    work.mkdir()
    (work / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    env = dict(os.environ)
    env.update(
        PATH=f"{SCRIPT.parent}{os.pathsep}{env.get('PATH', os.defpath)}",
        USER=pwd.getpwuid(os.geteuid()).pw_name,
        **{STATE_ENV: str(base / "records"), BPFFS_ENV: str(base / "bpffs")},
    )
    env.pop("PYTHONPATH", None)
    yield work, env
    bpffs = env[BPFFS_ENV]
    while os.path.isdir(bpffs) and is_bpffs(bpffs):
        _sys.umount2(bpffs, _sys.MNT_DETACH)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(nothing)"


@pytest.mark.kernel
@pytest.mark.parametrize("session", all_sessions(), ids=lambda s: s.name)
def test_the_examples_run_as_printed(
    session: Session, netns: object, session_env: tuple[Path, dict[str, str]]
) -> None:
    work, env = session_env
    assert shutil.which("pytun-hash", path=env["PATH"]) == str(SCRIPT)
    for command in session.commands:
        done = subprocess.run(
            ["bash", "-c", command.as_run()],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        assert done.returncode == command.expected, (
            f"{command.where}: `{command.text}` exited {done.returncode}, expected {command.expected}\n"
            f"ran: bash -c {command.as_run()!r} in {work}\n"
            f"stderr:\n{_tail(done.stderr)}\nstdout:\n{_tail(done.stdout)}"
        )
