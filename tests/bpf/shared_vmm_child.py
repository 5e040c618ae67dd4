"""The unprivileged VMM of tests/bpf/test_shared_e2e.py: run as uid 65534, no capabilities, no_new_privs.

It receives the two map fds on the socket whose number is ``argv[1]``, reports what it may do, then
writes every configuration it is sent (one JSON mapping per message) through the mmapped maps and
answers with the generation now in force. It makes no ``bpf(2)`` call of its own but one, to show
that it may not.
"""

from __future__ import annotations

import errno
import json
import socket
import sys

from pytun_hash import VnetHashConfig
from pytun_hash.bpf.maps import ArrayMap
from pytun_hash.bpf.shared import SlotWriter
from pytun_hash.errors import KernelError


def _status() -> dict[str, str]:
    with open("/proc/self/status") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def _bpf_refused() -> str:
    try:
        with ArrayMap.create(4, 1):
            return "allowed"
    except KernelError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def main() -> int:
    sock = socket.socket(fileno=int(sys.argv[1]))
    with sock, SlotWriter.receive(sock) as writer:
        status = _status()
        sock.send(
            json.dumps(
                {
                    "uid": status["Uid"].split()[0],
                    "cap_eff": status["CapEff"].strip(),
                    "no_new_privs": status["NoNewPrivs"].strip(),
                    "bpf_map_create": _bpf_refused(),
                    "semantics": writer.handoff.semantics,
                }
            ).encode()
        )
        while message := sock.recv(1 << 16):
            writer.write(VnetHashConfig.from_mapping(json.loads(message)))
            sock.send(json.dumps({"generation": writer.generation, "active": writer.active}).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
