"""``pytun-hash handoff``: RSS that an unprivileged VMM reconfigures, with no bpf(2) and no capability.

``handoff --dev NAME --socket PATH`` loads the shared RSS program (:mod:`pytun_hash.bpf.shared`) with
the config from ``--config FILE`` and/or flags (as ``apply``'s; a random key without ``--key``), and
attaches it to NAME exclusively (refused with exit 3 while another steering program or native RSS is
in force). It then listens on the Unix socket PATH (created mode 0600 and owned by ``--owner``, so the
VMM's user may connect; an existing PATH is refused) and hands the first process that connects the
two map fds (``SCM_RIGHTS``, protocol ``pytun-hash-rss-maps/1``, docs/vmm.md): from then on that
process reconfigures RSS by writing the maps through ``mmap``. ``--fd N`` sends on a connected
socket inherited as fd N instead, as libvirt hands QEMU its fds.

The program is the eBPF backend's own, put in force through :class:`~pytun_hash.hashing.Hashing`:
the device gets a record and pins like ``apply``'s (refused while anything is recorded on it), so
``pytun-hash show`` reports it, reading the configuration in force back from the pinned maps
(whatever the VMM wrote since), and ``pytun-hash disable`` takes it off.

By default ``handoff`` then waits for the VMM to close its end, detaches the program and removes the
record, so RSS lives as long as the VMM; ``--keep`` exits once the maps are sent and leaves the
program attached, recorded and pinned. Nobody connecting within ``--timeout`` seconds (default 60)
detaches the program and exits 3.

JSON keys of ``handoff``: ``device``, ``program_id``, ``config`` (the first configuration, as in a
config file), ``semantics``, ``socket`` (path, or ``fd:N``), ``kept`` (the program left attached),
``vmm_closed`` (the VMM closed the connection before ``handoff`` ended).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import select
import socket
import time
from typing import Any

from pytun_hash.cli.args import int_arg
from pytun_hash.cli.output import CliError, ExitCode, Output, help_text

__all__ = ["add_parser", "run_handoff"]


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``handoff``."""
    from pytun_hash.cli.common import add_config_arguments

    p = sub.add_parser(
        "handoff",
        parents=parents,
        description=help_text(__doc__, "handoff"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dev", metavar="NAME", required=True, help="the TAP/TUN device the program steers")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", metavar="PATH", help="listen on this Unix socket path (created mode 0600)")
    where.add_argument("--fd", type=int_arg, metavar="N", help="send on this inherited, connected Unix socket")
    p.add_argument("--owner", metavar="USER", help="with --socket: the user (name or uid) the socket belongs to")
    p.add_argument(
        "--queues", type=int_arg, metavar="N", help="round-robin table over N queues (default: the device's)"
    )
    add_config_arguments(p, key_help="Toeplitz key: hex, microsoft, symmetric or random (default: random)")
    p.add_argument("--keep", action="store_true", help="leave the program attached and exit once the maps are sent")
    p.add_argument(
        "--timeout", type=int_arg, default=60, metavar="SECONDS", help="wait this long for the VMM to connect"
    )
    p.set_defaults(handler=run_handoff)


def _listen(path: str, owner: int | None) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600 (owned by ``owner``): only that user may connect.

    It is bound and listening under a temporary name next to ``path`` and then renamed into place
    (``RENAME_NOREPLACE``), so a VMM that connects as soon as ``path`` exists is never refused.
    """
    from pytun_hash import _sys

    if os.path.lexists(path):
        raise CliError(f"{path} exists", "give a path where nothing is, or remove it first", field="--socket")
    directory, name = os.path.split(os.path.abspath(path))
    hidden = f".{name}.{os.getpid()}.tmp"
    temporary = os.path.join(directory, hidden)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    bound = False
    try:
        # Bound under a umask that leaves the socket 0600 from its first instant.
        old = os.umask(0o177)
        try:
            server.bind(temporary)
            bound = True
        finally:
            os.umask(old)
        if owner is not None:
            os.chown(temporary, owner, -1)
        server.listen(1)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            _sys.renameat2(dir_fd, hidden, dir_fd, name, _sys.RENAME_NOREPLACE)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                raise CliError(
                    f"{path} exists", "give a path where nothing is, or remove it first", field="--socket"
                ) from None
            raise
        finally:
            os.close(dir_fd)
        bound = False
    except BaseException:
        server.close()
        if bound:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        raise
    return server


def _accept(server: socket.socket, timeout: int) -> socket.socket:
    ready, _, _ = select.select([server], [], [], timeout)
    if not ready:
        raise CliError(
            f"no VMM connected within {timeout} s", "start the VMM first, or raise --timeout", ExitCode.KERNEL
        )
    connection, _ = server.accept()
    return connection


def _wait_closed(connection: socket.socket) -> bool:
    """Wait until the peer closes its end (the VMM exits); True when it did."""
    while True:
        select.select([connection], [], [])
        try:
            if not connection.recv(4096):
                return True
        except OSError:
            return True


def run_handoff(args: argparse.Namespace, out: Output) -> int:
    """Run ``handoff``; see the module documentation."""
    import warnings

    from pytun_hash.backend import Backend
    from pytun_hash.cli.common import config_from_args, open_device, tun_link
    from pytun_hash.cli.devices import owner_uid
    from pytun_hash.cli.state import warn_stale
    from pytun_hash.device.hashctl import QueueFoldWarning
    from pytun_hash.hashing import Hashing
    from pytun_hash.hashing.state import queue_count

    if args.owner is not None and args.socket is None:
        raise CliError("--owner goes with --socket", "drop --owner, or listen with --socket PATH", field="--owner")
    owner = owner_uid(args.owner) if args.owner is not None else None
    if args.queues is None:
        tun_link(args.dev, hint=f"create it first: `pytun-hash create {args.dev} --queues N`")
        # Counted before this command opens a queue of its own: the VMM's, or the intended count.
        known = queue_count(args.dev).count
    else:
        known = args.queues
    server = _listen(args.socket, owner) if args.socket is not None else None
    connection: socket.socket | None = None
    try:
        with open_device(args.dev) as device:
            queues = known if known is not None else 1
            config = config_from_args(args, queues=queues, key_required=False)
            # handoff's own queue must not take frames: the VMM's queues are the device's.
            if device.multi_queue and len(device.attached_queues) > 0:
                device.detach_queue(device.attached_queues[0])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                # Recorded and pinned like `apply`'s eBPF RSS (`show` reads back what the VMM writes;
                # `disable` takes it off), refused while anything is recorded or attached.
                hashing = Hashing.enable(device, config, backend=Backend.EBPF, owner=f"pytun-hash handoff {args.dev}")
            for warning in caught:
                if not issubclass(warning.category, QueueFoldWarning):  # judged against `queues` above
                    out.warn(str(warning.message))
            warn_stale(hashing.stale, out)
            kept = False
            try:
                rss = hashing.ebpf
                assert rss is not None  # an RSS config on the eBPF backend has its program
                program_id = rss.program_id
                semantics = rss.semantics
                connection = _accept(server, args.timeout) if server is not None else socket.socket(fileno=args.fd)
                rss.handoff(connection, queues=queues)
                closed = False
                if args.keep:
                    # The device holds the program, the program the maps, the VMM its mappings; the
                    # record and the pins stay for `show` and `disable`.
                    hashing.close(keep=True)
                    kept = True
                else:
                    closed = _wait_closed(connection)
            finally:
                if not kept:
                    hashing.close()  # detached, unpinned, the record removed
    finally:
        if connection is not None:
            connection.close()
        if server is not None:
            server.close()
            os.unlink(args.socket)
    document = {
        "device": args.dev,
        "program_id": program_id,
        "config": config.to_mapping(),
        "semantics": semantics.value,
        "socket": args.socket if args.socket is not None else f"fd:{args.fd}",
        "kept": bool(args.keep),
        "vmm_closed": closed,
        "at": time.time(),
    }

    def text() -> str:
        if args.keep:
            return (
                f"{args.dev}: maps handed over; the program (id {program_id}) stays attached, recorded and "
                f"pinned (`pytun-hash show --dev {args.dev}` reads the configuration in force back)"
            )
        return f"{args.dev}: maps handed over; the VMM closed its end, the program (id {program_id}) is detached"

    return out.result(document, text)
