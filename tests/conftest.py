"""Shared fixtures and skip logic for the whole suite.

* Tests marked ``kernel`` are skipped, with the precise reason, where they cannot run: not root,
  no ``/dev/net/tun``, or no permission to create a network namespace.
* ``netns``: the test runs inside a fresh anonymous network namespace (IPv6 off, loopback up)
  and the thread is back in its original namespace afterwards.
* ``isolated``: ``netns`` where kernel tests run; elsewhere the test runs in place, but only without
  CAP_NET_ADMIN and CAP_SYS_ADMIN (for rtnetlink lookups, which need no privilege).
* ``unattached_tun_fd``: an fd of ``/dev/net/tun`` never attached to a device (no privilege needed).
* ``make_harness`` (tests/harness.py): a device with an emulated kernel behind it, a FakeTunTap or
  a real TAP under the seccomp emulator.
* Tests marked ``kernel`` or using ``netns`` fail when they leave file descriptors open.
* At the end of the session the run fails when a tun device the suite created, a thread outside
  the initial namespace, or a tun/bpf/netns fd was left behind. Only the suite's own objects are
  judged (tests/tracking.py records them): other processes may create devices, namespaces and
  BPF objects while the suite runs.
* Hypothesis profiles ``ci`` (default) and ``long`` (the fuzzing campaign), selected with the
  ``HYPOTHESIS_PROFILE`` environment variable.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from pytun_hash.device import TunTapDevice
from pytun_hash.device.netns import NetworkNamespace, thread_netns_inode, unshare_netns
from pytun_hash.errors import PytunHashError
from tests import tracking

# make_harness: one device with an emulated kernel behind it, a FakeTunTap or a real TAP under the emulator.
pytest_plugins = ["tests.harness"]

TUN_PATH = "/dev/net/tun"

# Hypothesis profiles, chosen with HYPOTHESIS_PROFILE (default "ci"). They set the example count of
# every property without its own max_examples; the fuzz targets in tests/fuzz take theirs from here.
#   ci:   the short run of every test run (and CI): 200 examples per property.
#   long: the fuzzing campaign, `HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/fuzz -q
#         --hypothesis-show-statistics`: 100,000 examples per target.
# No deadline in either: timing varies on shared CI machines; the fuzz harness has its own per-example
# watchdog that fails a hanging example.
settings.register_profile("ci", max_examples=200, deadline=None, print_blob=True)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("PYTUN_HASH_FUZZ_EXAMPLES", "100000")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
# fd targets that only kernel-facing code creates; other fds (pytest's own files) are not judged.
_LEAK_KINDS = ("/dev/net/tun", "anon_inode:bpf", "net:[", "socket:[", "anon_inode:[seccomp")


_SKIP_REASON = pytest.StashKey[str | None]()
_START = pytest.StashKey[dict[str, object]]()


def kernel_skip_reason(config: pytest.Config) -> str | None:
    """Why kernel tests cannot run here, or None when they can. Probed once per session."""
    if _SKIP_REASON not in config.stash:
        config.stash[_SKIP_REASON] = _probe_kernel()
    return config.stash[_SKIP_REASON]


def _probe_kernel() -> str | None:
    if os.geteuid() != 0:
        return (
            f"not root (euid {os.geteuid()}): TUN/TAP devices and network namespaces need root "
            "(CAP_NET_ADMIN and CAP_SYS_ADMIN)"
        )
    if not os.path.exists(TUN_PATH):
        return f"{TUN_PATH} does not exist (no tun driver; in a container, pass the device in)"
    try:
        os.close(os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return f"cannot open {TUN_PATH}: {os.strerror(exc.errno or errno.EIO)}"
    failure: list[str] = []

    def probe() -> None:
        # A throwaway thread: its namespace and the probe device die with it.
        try:
            unshare_netns()
        except PytunHashError as exc:
            failure.append(f"unshare(CLONE_NEWNET) not permitted: {exc}")
            return
        try:
            TunTapDevice.create("probe%d", queues=2).close()
        except PytunHashError as exc:
            failure.append(f"cannot create a multi-queue TAP in a network namespace: {exc}")

    worker = threading.Thread(target=probe, name="netns-probe")
    worker.start()
    worker.join()
    return failure[0] if failure else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = None
    for item in items:
        if item.get_closest_marker("kernel") is None:
            continue
        reason = reason or kernel_skip_reason(config)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def _fd_targets() -> dict[int, str]:
    targets: dict[int, str] = {}
    for entry in os.listdir("/proc/self/fd"):
        try:
            targets[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
        except OSError:
            continue  # the fd listdir itself used
    return targets


def _leaked(before: dict[int, str], after: dict[int, str]) -> list[str]:
    return [f"fd {fd} -> {target}" for fd, target in sorted(after.items()) if before.get(fd) != target]


@pytest.fixture(autouse=True)
def _fd_leak_check(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a kernel test (``kernel`` marker or ``netns`` fixture) that leaves fds open."""
    judged = request.node.get_closest_marker("kernel") is not None or "netns" in request.fixturenames
    if not judged:
        yield
        return
    before = _fd_targets()
    yield
    leaks = _leaked(before, _fd_targets())
    if leaks:
        pytest.fail("file descriptors left open: " + "; ".join(leaks), pytrace=False)


@pytest.fixture(scope="session", autouse=True)
def session_state_roots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """Records and pins of CLI commands run by any test go to temporary roots, never to
    ``/run/pytun_hash`` or ``/sys/fs/bpf`` (``tests/cli`` gives each test its own roots)."""
    from pytun_hash import _sys
    from pytun_hash.bpf.pin import is_bpffs
    from pytun_hash.hashing.state import BPFFS_ENV, STATE_ENV

    base = tmp_path_factory.mktemp("session-state")
    os.chmod(base, 0o700)
    records, bpffs = str(base / "records"), str(base / "bpffs")
    saved = {k: os.environ.get(k) for k in (STATE_ENV, BPFFS_ENV)}
    os.environ[STATE_ENV], os.environ[BPFFS_ENV] = records, bpffs
    yield records, bpffs
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    while os.path.isdir(bpffs) and is_bpffs(bpffs):
        _sys.umount2(bpffs, _sys.MNT_DETACH)


@pytest.fixture
def netns(request: pytest.FixtureRequest) -> Iterator[NetworkNamespace]:
    """Run the test inside a new anonymous network namespace (IPv6 off, ``lo`` up).

    The namespace belongs to the test's thread; devices created in it vanish with it.
    """
    reason = kernel_skip_reason(request.config)
    if reason:
        pytest.skip(reason)
    with NetworkNamespace(ipv6=False) as ns:
        yield ns
    assert not ns.active


_CAP_NET_ADMIN, _CAP_SYS_ADMIN = 12, 21


def _effective_capabilities() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


@pytest.fixture
def isolated(request: pytest.FixtureRequest) -> Iterator[None]:
    """Nothing the test does to links can reach the host's: inside a fresh network namespace where kernel
    tests run (``netns``), or, where they cannot, here without CAP_NET_ADMIN and CAP_SYS_ADMIN, where
    the kernel refuses every change. For tests that only look links up (rtnetlink needs no privilege).
    """
    if kernel_skip_reason(request.config) is None:
        request.getfixturevalue("netns")
    elif _effective_capabilities() & (1 << _CAP_NET_ADMIN | 1 << _CAP_SYS_ADMIN):
        pytest.skip("no private network namespace, and this process could change the host's links")
    yield


@pytest.fixture
def unattached_tun_fd() -> Iterator[int]:
    """An fd of ``/dev/net/tun`` never attached to a device (no ``TUNSETIFF``): it needs no privilege.

    tun answers every device ioctl on it with ``EBADFD``; the emulator traps its hash ioctls all the
    same (it is a TUN/TAP character device). Skips where ``/dev/net/tun`` cannot be opened.
    """
    try:
        fd = os.open(TUN_PATH, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        pytest.skip(f"cannot open {TUN_PATH}: {os.strerror(exc.errno or errno.EIO)}")
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.fixture
def tap(netns: NetworkNamespace) -> Iterator[TunTapDevice]:
    """A 4-queue TAP with a 20-byte vnet header in the test's namespace (suites may override it)."""
    with TunTapDevice.create("tap%d", queues=4, vnet_hdr=True) as dev:
        dev.set_vnet_hdr_size(20)
        yield dev


# ----------------------------------------------------------------------------- session check


def _threads_elsewhere(inode: int) -> list[str]:
    stray = []
    for tid in os.listdir("/proc/self/task"):
        try:
            if os.stat(f"/proc/self/task/{tid}/ns/net").st_ino != inode:
                stray.append(tid)
        except OSError:
            continue  # the thread just ended
    return stray


def pytest_sessionstart(session: pytest.Session) -> None:
    tracking.install()
    start: dict[str, object] = {}
    session.config.stash[_START] = start
    start["netns"] = thread_netns_inode()
    start["fds"] = _fd_targets()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    start = session.config.stash.get(_START, None)
    if not start:
        return
    problems: list[str] = []
    inode = start["netns"]
    assert isinstance(inode, int)
    if thread_netns_inode() != inode:
        problems.append("the main thread ended the session in another network namespace")
    stray = _threads_elsewhere(inode)
    if stray:
        problems.append(f"threads still inside other network namespaces: {', '.join(stray)}")
    # Only what the suite itself created counts: other processes may add devices meanwhile.
    left = tracking.devices_left(inode)
    if left:
        problems.append("tun devices the suite created are left in the initial namespace: " + ", ".join(left))
    before_fds = start["fds"]
    assert isinstance(before_fds, dict)
    fds = [leak for leak in _leaked(before_fds, _fd_targets()) if any(k in leak for k in _LEAK_KINDS)]
    if fds:
        problems.append("kernel fds left open: " + "; ".join(fds))
    if problems:
        start["problems"] = problems
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    problems = terminalreporter.config.stash.get(_START, {}).get("problems")
    if isinstance(problems, list) and problems:
        terminalreporter.section("leftovers after the session", sep="=", red=True)
        for line in problems:
            terminalreporter.write_line(f"FAIL: {line}", red=True)
