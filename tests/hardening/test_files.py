"""Files the tool writes and reads (issue 14): one test per finding of the adversarial pass, reproducing the
attack, and the guarantees of pytun_hash/_files.py that fix them. No privileges needed.

Findings:

* ``apply --save FILE`` (``dump_config``) opened FILE with ``open(path, "w")``: it followed a symlink
  planted in a shared sticky directory (overwriting a root-only file), overwrote existing files,
  created FILE 0644 (0666 under umask 0) although it holds the RSS key, and hung on a FIFO. (That the
  save ran after the configuration was in force is tested in tests/cli/test_apply_save.py.)
* ``--config /proc/kmsg`` and ``--pcap /proc/kmsg`` hung: procfs calls it a regular file, and its read
  blocks until the kernel logs something.

Hangs are caught by the fuzz harness's watchdog (``SIGALRM`` interrupts the blocked call in the main
thread), never by timing a call that returns.
"""

from __future__ import annotations

import errno
import io
import os
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytun_hash import _files, _sys
from pytun_hash.capture.reader import PcapReader
from pytun_hash.config import MICROSOFT_RSS_KEY, VnetHashConfig
from pytun_hash.configfile import dump_config, load_config, read_config_file, stage_config
from pytun_hash.errors import ValidationError
from tests.fuzz.harness import watchdog

CONFIG = VnetHashConfig.round_robin(4, key=MICROSOFT_RSS_KEY)
OTHER = VnetHashConfig.round_robin(2, key=MICROSOFT_RSS_KEY)
VICTIM = b"root:$6$secret:19000:0:99999:7:::\n"

#: Regular files of pseudo-filesystems that exist on every Linux system with /proc and /sys mounted.
PROC_KMSG = "/proc/kmsg"
SYSFS_FILES = ["/sys/kernel/uevent_seqnum", "/sys/power/state", "/sys/kernel/mm/transparent_hugepage/enabled"]


def _sysfs_file() -> str:
    for path in SYSFS_FILES:
        if os.path.isfile(path):
            return path
    pytest.skip(f"none of {SYSFS_FILES} exists (is /sys mounted?)")


def _entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """A file the attacker wants overwritten (think /etc/shadow), in a directory of its own."""
    home = tmp_path / "etc"
    home.mkdir()
    path = home / "shadow"
    path.write_bytes(VICTIM)
    path.chmod(0o600)
    yield path
    assert path.read_bytes() == VICTIM and stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A shared sticky directory like /tmp."""
    path = tmp_path / "shared"
    path.mkdir()
    path.chmod(0o1777)
    return path


# ----------------------------------------------------------------------------- finding 1: symlinks


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_symlink_planted_at_the_target_is_refused_and_its_target_untouched(
    victim: Path, shared: Path, overwrite: bool
) -> None:
    planted = shared / "rss.toml"
    planted.symlink_to(victim)
    with watchdog(), pytest.raises(ValidationError, match="symbolic link") as info:
        dump_config(CONFIG, str(planted), overwrite=overwrite)
    assert info.value.field == "save"
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert _entries(shared) == ["rss.toml"]  # no temporary file left behind


def test_a_dangling_symlink_creates_nothing_where_it_points(shared: Path, tmp_path: Path) -> None:
    aim = tmp_path / "cron.d" / "job"
    aim.parent.mkdir()
    (shared / "rss.json").symlink_to(aim)
    with pytest.raises(ValidationError, match="symbolic link"):
        dump_config(CONFIG, str(shared / "rss.json"), overwrite=True)
    assert not aim.exists() and _entries(aim.parent) == []


def test_a_symlink_planted_after_the_check_is_replaced_not_followed(
    victim: Path, shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check before the final step can race; the final step itself never writes through a symlink."""
    target = shared / "rss.toml"
    with stage_config(CONFIG, str(target), overwrite=True) as pending:
        target.symlink_to(victim)
        monkeypatch.setattr(_files.PendingFile, "_check_target", lambda self: None)  # lose the race
        pending.commit()
    assert not target.is_symlink() and load_config(str(target)) == CONFIG


def test_without_overwrite_a_symlink_planted_after_the_check_is_refused(
    victim: Path, shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = shared / "rss.toml"
    pending = stage_config(CONFIG, str(target))
    target.symlink_to(victim)
    monkeypatch.setattr(_files.PendingFile, "_check_target", lambda self: None)
    with pytest.raises(ValidationError, match="already exists"):
        pending.commit()  # link(2) fails with EEXIST on whatever is there: no check to race
    assert target.is_symlink() and _entries(shared) == ["rss.toml"]


# ----------------------------------------------------------------------------- finding 1: overwriting


def test_an_existing_file_is_refused_without_overwrite_and_replaced_with_it(tmp_path: Path) -> None:
    target = tmp_path / "rss.toml"
    dump_config(OTHER, str(target))
    target.chmod(0o644)
    with pytest.raises(ValidationError, match="already exists") as info:
        dump_config(CONFIG, str(target))
    assert info.value.field == "save" and load_config(str(target)) == OTHER
    inode = target.stat().st_ino
    dump_config(CONFIG, str(target), overwrite=True)
    assert load_config(str(target)) == CONFIG
    # A new file took the name: the old inode (and any hard link to it) was never written.
    assert target.stat().st_ino != inode and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert _entries(tmp_path) == ["rss.toml"]


def test_overwrite_replaces_a_hard_link_instead_of_writing_into_it(victim: Path, shared: Path) -> None:
    linked = shared / "rss.json"
    os.link(victim, linked)
    with pytest.raises(ValidationError, match="already exists"):
        dump_config(CONFIG, str(linked))
    dump_config(CONFIG, str(linked), overwrite=True)
    assert load_config(str(linked)) == CONFIG  # the victim fixture checks the victim is unchanged


# ----------------------------------------------------------------------------- finding 1: mode


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_the_file_is_0600_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        dump_config(CONFIG, str(tmp_path / "rss.toml"))
        dump_config(CONFIG, str(tmp_path / "rss.toml"), overwrite=True)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "rss.toml").stat().st_mode) == 0o600


def test_nothing_is_visible_before_commit_and_the_temporary_file_is_private(tmp_path: Path) -> None:
    target = tmp_path / "rss.toml"
    previous = os.umask(0)
    try:
        pending = stage_config(CONFIG, str(target))
    finally:
        os.umask(previous)
    assert not target.exists()
    (temp,) = _entries(tmp_path)
    assert temp.startswith(".pytun-hash-") and stat.S_IMODE((tmp_path / temp).stat().st_mode) == 0o600
    pending.commit()
    pending.commit()  # idempotent
    assert pending.committed and _entries(tmp_path) == ["rss.toml"] and load_config(str(target)) == CONFIG


def test_discard_leaves_the_target_as_it_was(tmp_path: Path) -> None:
    target = tmp_path / "rss.toml"
    dump_config(OTHER, str(target))
    with stage_config(CONFIG, str(target), overwrite=True):
        pass  # what the file records failed: leaving the block discards it
    assert load_config(str(target)) == OTHER and _entries(tmp_path) == ["rss.toml"]
    pending = stage_config(CONFIG, str(target), overwrite=True)
    pending.discard()
    pending.discard()
    with pytest.raises(ValidationError, match="discarded"):
        pending.commit()
    assert load_config(str(target)) == OTHER and _entries(tmp_path) == ["rss.toml"]


def test_a_file_that_appeared_since_staging_is_not_replaced(tmp_path: Path) -> None:
    target = tmp_path / "rss.toml"
    pending = stage_config(CONFIG, str(target))
    target.write_bytes(b"someone else's\n")
    with pytest.raises(ValidationError, match="already exists"):
        pending.commit()
    assert target.read_bytes() == b"someone else's\n" and _entries(tmp_path) == ["rss.toml"]


def test_without_hard_links_renameat2_noreplace_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """vfat and some FUSE file systems refuse link(2) with EPERM; RENAME_NOREPLACE keeps the no-overwrite rule."""

    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "rss.json"
    dump_config(CONFIG, str(target))
    assert load_config(str(target)) == CONFIG
    pending = stage_config(OTHER, str(target), overwrite=True)
    monkeypatch.setattr(_files.PendingFile, "_check_target", lambda self: None)
    pending.overwrite = False  # as if the file appeared after a check without overwrite
    with pytest.raises(ValidationError, match="already exists"):
        pending.commit()
    assert load_config(str(target)) == CONFIG and _entries(tmp_path) == ["rss.json"]


def test_a_failed_directory_sync_says_the_file_is_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "rss.toml"
    pending = stage_config(CONFIG, str(target))

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing)  # staging synced the file; only the directory is left
    with pytest.raises(ValidationError, match="was written but may not survive a crash"):
        pending.commit()
    assert pending.committed and load_config(str(target)) == CONFIG and _entries(tmp_path) == ["rss.toml"]


# ----------------------------------------------------------------------------- finding 1: FIFOs and other non-files


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "rss.toml"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_fifo_target_is_refused_at_once(fifo: Path, overwrite: bool) -> None:
    with watchdog(), pytest.raises(ValidationError, match="not a regular file"):
        dump_config(CONFIG, str(fifo), overwrite=overwrite)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and _entries(fifo.parent) == ["rss.toml"]


def test_other_non_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock.toml"))
        for name in ("dir.toml", "sock.toml"):
            with pytest.raises(ValidationError, match="not a regular file"):
                dump_config(CONFIG, str(tmp_path / name), overwrite=True)
    with watchdog(), pytest.raises(ValidationError, match="not a regular file"):
        dump_config(CONFIG, "/dev/null", overwrite=True)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("", "empty"),
        ("a\0b.toml", "NUL"),
        ("/tmp/", "names a directory"),
        ("/tmp/..", "names a directory"),
        ("/no/such/dir/rss.toml", "No such file or directory"),
        ("/proc/self/rss.toml", "on procfs"),
        ("/sys/kernel/rss.toml", "on sysfs"),
    ],
)
def test_bad_targets_are_refused_with_the_field(path: str, needle: str) -> None:
    with watchdog(), pytest.raises(ValidationError, match=needle) as info:
        dump_config(CONFIG, path, overwrite=True)
    assert info.value.field == "save"


def test_check_target_writes_nothing(tmp_path: Path, fifo: Path) -> None:
    _files.check_target(str(tmp_path / "new.md"), "report")
    assert _entries(tmp_path) == ["rss.toml"]
    with pytest.raises(ValidationError, match="not a regular file") as info:
        _files.check_target(str(fifo), "report", overwrite=True)
    assert info.value.field == "report"


def test_write_file_is_stage_and_commit(tmp_path: Path) -> None:
    _files.write_file(str(tmp_path / "report.md"), b"| a |\n", "report")
    assert (tmp_path / "report.md").read_bytes() == b"| a |\n"
    with pytest.raises(ValidationError, match="already exists"):
        _files.write_file(str(tmp_path / "report.md"), b"x", "report")
    _files.write_file(str(tmp_path / "report.md"), b"", "report", overwrite=True)
    assert (tmp_path / "report.md").read_bytes() == b"" and _entries(tmp_path) == ["report.md"]


def test_the_fuzz_campaign_checks_its_report_target_before_running(fifo: Path, tmp_path: Path) -> None:
    from tests.fuzz import campaign

    logs = tmp_path / "logs"
    with watchdog():
        assert campaign.main(["--report", str(fifo), "--logs", str(logs), "no/such::target"]) == 2
    assert not logs.exists()  # refused before anything ran


# ----------------------------------------------------------------------------- finding 2: readers


READERS: list[Callable[[str], object]] = [read_config_file, PcapReader]


@pytest.mark.parametrize("reader", READERS, ids=["config", "pcap"])
def test_proc_kmsg_is_refused_without_reading(reader: Callable[[str], object]) -> None:
    if not os.path.exists(PROC_KMSG):
        pytest.skip(f"{PROC_KMSG} does not exist (kernel without CONFIG_PRINTK, or no /proc)")
    # Judged through O_PATH: refused by its file system type before any open, root or not.
    with watchdog(), pytest.raises(ValidationError, match="on procfs, a pseudo-filesystem") as info:
        reader(PROC_KMSG)
    assert info.value.field in ("config", "pcap")


@pytest.mark.parametrize("reader", READERS, ids=["config", "pcap"])
def test_pseudo_filesystem_files_are_refused(reader: Callable[[str], object], tmp_path: Path) -> None:
    sysfs = _sysfs_file()
    (tmp_path / "link.toml").symlink_to("/proc/self/status")
    for path, kind in [(sysfs, "sysfs"), ("/proc/self/status", "procfs"), (str(tmp_path / "link.toml"), "procfs")]:
        with watchdog(), pytest.raises(ValidationError, match=f"on {kind}, a pseudo-filesystem"):
            reader(path)


def test_every_pseudo_filesystem_is_named_once() -> None:
    assert len(set(_files.PSEUDO_FILESYSTEMS.values())) == len(_files.PSEUDO_FILESYSTEMS)
    assert _files.PSEUDO_FILESYSTEMS[0x9FA0] == "procfs" and _files.PSEUDO_FILESYSTEMS[0x62656572] == "sysfs"
    assert _sys.statfs_type("/proc") in _files.PSEUDO_FILESYSTEMS
    with open(__file__, "rb") as f:
        assert _sys.fstatfs_type(f.fileno()) not in _files.PSEUDO_FILESYSTEMS


def test_a_device_is_judged_without_being_opened(monkeypatch: pytest.MonkeyPatch) -> None:
    """Opening some devices acts (a watchdog arms, a tape rewinds): readers look at them through O_PATH only."""
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: str, flags: int, *args: object, **kwargs: object) -> int:
        opened.append((str(path), flags))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    for path in ("/dev/null", "/dev/zero", "/proc/self/status"):
        with pytest.raises(ValidationError):
            read_config_file(path)
    assert opened and all(flags & os.O_PATH for _, flags in opened), opened


def test_a_read_that_would_block_is_a_validation_error() -> None:
    """The reader's fd stays non-blocking: EAGAIN is refused, never waited out (shown on a pipe)."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with io.BufferedReader(_files._NonBlockingFile(read_end, "pipe", "pcap")) as reader:
            with watchdog(), pytest.raises(ValidationError, match="would block") as info:
                reader.read(4)
            assert info.value.field == "pcap"
            os.write(write_end, b"ab")
            assert reader.raw.read(2) == b"ab"
            with watchdog(), pytest.raises(ValidationError, match="would block"):
                reader.raw.readall()
            with watchdog(), pytest.raises(ValidationError, match="would block"):
                reader.raw.readinto(bytearray(4))
    finally:
        os.close(write_end)


def test_a_regular_file_still_reads_in_full(tmp_path: Path) -> None:
    path = tmp_path / "rss.toml"
    dump_config(CONFIG, str(path))
    with _files.open_regular_file(str(path), "config") as f:
        assert os.get_blocking(f.fileno()) is False
        assert f.read(1 << 20) == path.read_bytes()
        assert f.read(1) == b""


def test_without_proc_the_path_is_opened_again_and_must_be_the_judged_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open, real_isdir = os.open, os.path.isdir
    swap: dict[str, str] = {}

    def no_proc(path: str, flags: int, *args: object, **kwargs: object) -> int:
        if str(path).startswith("/proc/self/fd/"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
        if not flags & os.O_PATH:
            path = swap.get(str(path), path)
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", no_proc)
    monkeypatch.setattr(os.path, "isdir", lambda p: False if p == "/proc/self/fd" else real_isdir(p))
    path, other = tmp_path / "rss.toml", tmp_path / "other.toml"
    dump_config(CONFIG, str(path))
    dump_config(OTHER, str(other))
    assert load_config(str(path)) == CONFIG
    # The name now leads elsewhere between the judging and the opening: refused.
    monkeypatch.setitem(swap, str(path), str(other))
    with pytest.raises(ValidationError, match="replaced while it was opened"):
        read_config_file(str(path))
