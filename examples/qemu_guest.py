"""A real VMM end to end: the queue pytun_hash predicts is the receive queue a Linux guest under QEMU sees.

1. A persistent 4-queue TAP (20-byte little-endian vnet header) is created in a private network
   namespace and wired there (:func:`pytun_hash.traffic.wire`: addresses, ``IFF_NOARP``, up).
2. QEMU boots a small Linux guest (``make qemu-guest`` builds it from Debian's packages) with the
   TAP's four queue fds, in queue order, as its virtio-net backend:
   ``-netdev tap,fds=A:B:C:D,vhost=off`` and ``-device virtio-net-pci,mq=on,vectors=10,rss=off``.
   QEMU runs in the namespace (the main thread is in it) and dies with this process.
3. The guest's ``/init`` (``examples/guest/init``) enables all 4 queue pairs (``ethtool -L``),
   which makes QEMU detach any steering program from the TAP, and then says it is ready on the
   serial console. Only then does the host put RSS in force with the eBPF backend
   (``Hashing.enable(..., backend=Backend.EBPF)``; QEMU's own ``rss`` stays off).
4. The namespace's stack sends TCP and UDP packets over IPv4 and IPv6 flows to a peer behind the
   TAP; QEMU moves each frame from the TAP queue it landed on to the guest's receive queue of the
   same number, and the guest reports its per-queue counters (``ethtool -S eth0``,
   ``rx_queue_N_packets``) on the serial console. The counts, baseline subtracted, must equal per
   queue what ``predict_queue`` says for every packet.
5. The indirection table is changed live (``hashing.reconfigure``) and step 4 runs again, in the
   same guest; then once more with every table entry on queue 3.
6. The guest changes its queue count (``ethtool -L eth0 combined 1``, then ``4``): QEMU detaches the
   steering program on these multiqueue commands, and the packets no longer all land on queue 3
   (tun's own flow steering spreads them). pytun_hash puts RSS in force again (``Hashing.enable``
   after the guest's change, as the README says) and step 4 matches again.

Run as root, from the repository root after ``make setup`` and ``make qemu-guest``:
``sudo .venv/bin/python examples/qemu_guest.py`` (``--json`` prints a machine-readable verdict;
``--accel tcg`` forces emulation where KVM is missing or does not run guests). Exit status 0 when
every queue got exactly the predicted packets in every configuration in force (and not while QEMU had
detached the program), 1 when not, 2 when the guest failed, 3 when something it needs is missing.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import json
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

from pytun_hash import Backend, Hashing, NetworkNamespace, TunTapDevice, VnetHashConfig, traffic
from pytun_hash.model import Framing, predict_queue

QUEUES = 4
VNET_HDR_SIZE = 20
GUEST_MAC = "52:54:00:12:34:56"
QEMU = "qemu-system-x86_64"
GUEST_DIR = Path(__file__).resolve().parent.parent / ".cache" / "qemu-guest"
KVM_GET_API_VERSION = 0xAE00
KVM_API_VERSION = 12
BOOT_TIMEOUT = {"kvm": 60.0, "tcg": 180.0}
KVM_FIRST_LINE_TIMEOUT = 20.0  # a working KVM runs /init within a few seconds
COUNT_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 20.0
SETTLE = 0.3  # seconds the counters must stay put once every packet arrived


class GuestError(Exception):
    """The guest did not boot, answer or behave as its /init promises."""


class KvmUnusableError(GuestError):
    """Under KVM the guest's /init never ran (QEMU refused the CPU, or the guest hung while booting)."""


def kvm_usable() -> bool:
    """True when ``/dev/kvm`` opens read-write and answers the stable API version."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, KVM_GET_API_VERSION) == KVM_API_VERSION
    except OSError:
        return False
    finally:
        os.close(fd)


class Guest:
    """QEMU running the guest, and the guest's serial console (QEMU's stdin and stdout)."""

    def __init__(self, argv: list[str], pass_fds: list[int]) -> None:
        # setpriv --pdeathsig: QEMU is killed when this process dies, whatever kills it; a new
        # session keeps a terminal's Ctrl-C for this process, which then stops QEMU in order.
        prefix = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            prefix + argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=pass_fds,
            start_new_session=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin: IO[bytes] = self.process.stdin
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.console: list[str] = []
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip("\r\n")
            self.console.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> str:
        """The next console line starting with ``prefix`` (a ``PYTUN-ERROR`` line or QEMU's exit raises)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GuestError(f"no {prefix!r} line from the guest within {timeout:.0f} s{self._tail()}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise GuestError(f"QEMU exited (status {self.process.wait()}){self._tail()}")
            if line.startswith("PYTUN-ERROR"):
                raise GuestError(f"the guest says: {line}{self._tail()}")
            if line.startswith(prefix):
                return line

    def last_words(self, waited: float) -> str:
        """Why the guest never spoke: QEMU's exit status and last line, or how long it was silent."""
        status = self.process.poll()
        if status is None:
            return f"the guest's /init did not run within {waited:.0f} s"
        last = next((line for line in reversed(self.console) if line.strip()), "")
        return f"QEMU exited with status {status}" + (f": {last}" if last else "")

    def _tail(self) -> str:
        return "; console:\n  " + "\n  ".join(self.console[-15:]) if self.console else ""

    @staticmethod
    def tag(label: str) -> str:
        """``label`` as one word of the console protocol."""
        return re.sub(r"[^A-Za-z0-9.-]+", "-", label)

    def send(self, command: str) -> None:
        """Write one command line to the guest's console."""
        self._stdin.write(command.encode() + b"\n")
        self._stdin.flush()

    def counts(self, tag: str) -> list[int]:
        """The guest's ``rx_queue_N_packets`` counters now."""
        tag = self.tag(tag)
        self.send(f"COUNT {tag}")
        line = self.expect(f"PYTUN-COUNTS {tag} ", COUNT_TIMEOUT)
        fields = line.split()[2:]
        if len(fields) != QUEUES or not all(f.isdigit() for f in fields):
            raise GuestError(f"unexpected counters line {line!r}")
        return [int(f) for f in fields]

    def channels(self, tag: str, combined: int) -> None:
        """Have the guest run ``ethtool -L eth0 combined N`` (a multiqueue control command to QEMU)."""
        tag = self.tag(tag)
        self.send(f"CHANNELS {tag} {combined}")
        line = self.expect(f"PYTUN-CHANNELS {tag} ", COUNT_TIMEOUT)
        if not line.endswith(f"combined={combined}"):
            raise GuestError(f"the guest did not switch to {combined} queue pairs: {line!r}")

    def close(self) -> None:
        """Power the guest off (kill QEMU if it does not exit), and release the pipes. Idempotent."""
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                self.send("POWEROFF")
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        with contextlib.suppress(OSError):
            self._stdin.close()
        self._reader.join(timeout=5)
        assert self.process.stdout is not None
        self.process.stdout.close()


def qemu_argv(guest_dir: Path, accel: str, fds: list[int]) -> list[str]:
    """The QEMU command line: the guest's kernel and initramfs, a 4-queue virtio-net on the TAP's fds."""
    cpu = ["-cpu", "host"] if accel == "kvm" else []
    return [
        QEMU,
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-machine", f"pc,accel={accel}",
        *cpu,
        "-smp", "1",
        "-m", "256",
        "-kernel", str(guest_dir / "vmlinuz"),
        "-initrd", str(guest_dir / "initramfs.cpio.gz"),
        "-append", f"console=ttyS0 quiet loglevel=3 panic=-1 pytun.queues={QUEUES}",
        "-serial", "stdio",
        "-netdev", f"tap,id=net0,fds={':'.join(map(str, fds))},vhost=off",
        "-device", f"virtio-net-pci,netdev=net0,mq=on,vectors={2 * QUEUES + 2},rss=off,hash=off,mac={GUEST_MAC}",
    ]  # fmt: skip


def predicted_counts(config: VnetHashConfig, flows: list[traffic.Flow], hashing: Hashing) -> list[int]:
    """Packets per queue the model predicts for one packet of every flow, with the semantics in force."""
    counts = [0] * QUEUES
    for flow in flows:
        counts[predict_queue(config, flow.ip_packet(), QUEUES, l2=Framing.IP, semantics=hashing.semantics)] += 1
    return counts


def run_phase(
    label: str,
    guest: Guest,
    ns: NetworkNamespace,
    flows: list[traffic.Flow],
    rounds: int,
    hashing: Hashing,
    *,
    steered: bool = True,
) -> dict[str, Any]:
    """Send every flow ``rounds`` times; return the guest's per-queue counts and the model's.

    ``steered``: the program is expected in force (counts equal to the prediction), else detached by
    QEMU (counts expected to differ).
    """
    per_round = predicted_counts(hashing.config, flows, hashing)
    predicted = [n * rounds for n in per_round]
    baseline = guest.counts(f"{label}-baseline")
    started = time.monotonic()
    sent = 0
    current = baseline
    for r in range(rounds):
        sent += traffic.send(ns, flows)
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        while True:  # one round at a time: a TAP queue holds 500 frames, a virtqueue 256
            current = guest.counts(f"{label}-{r}")
            if sum(current) - sum(baseline) >= sent or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    while True:  # anything late or extra shows up now
        time.sleep(SETTLE)
        settled = guest.counts(f"{label}-settled")
        if settled == current:
            break
        current = settled
    observed = [now - before for now, before in zip(current, baseline, strict=True)]
    return {
        "label": label,
        "indirection_table": list(hashing.config.indirection_table),
        "flows": len(flows),
        "sent": sent,
        "baseline": baseline,
        "predicted": predicted,
        "observed": observed,
        "steered": steered,
        "match": observed == predicted,
        "as_expected": (observed == predicted) == steered,
        "seconds": round(time.monotonic() - started, 3),
    }


def _terminate(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt  # the same orderly teardown as Ctrl-C


def run(args: argparse.Namespace, accel: str) -> dict[str, Any]:
    """Everything, set up and torn down in order, with accelerator ``accel``; the verdict as a dict."""
    started = time.monotonic()
    rng = random.Random(args.seed)
    flows = traffic.spread_flows(args.flows, seed=args.seed)
    result: dict[str, Any] = {"accelerator": accel, "queues": QUEUES, "flows": len(flows), "rounds": args.rounds}
    with contextlib.ExitStack() as stack:
        ns = stack.enter_context(NetworkNamespace(ipv6=False))
        device = TunTapDevice.create("qemu%d", queues=QUEUES, vnet_hdr=True, persist=True)
        name = device.name
        stack.callback(ns.delete_link, name)  # persistent: it outlives its fds until deleted
        stack.enter_context(device)
        device.set_vnet_hdr_size(VNET_HDR_SIZE)
        device.set_vnet_le(True)
        traffic.wire(ns, device)  # before QEMU reads the queues: wire drains them
        fds = [q.fd for q in device.attached_queues]
        guest = Guest(qemu_argv(args.guest, accel, fds), fds)
        stack.callback(guest.close)
        if accel == "kvm" and args.accel == "auto":
            try:
                guest.expect("PYTUN-BOOTED", KVM_FIRST_LINE_TIMEOUT)
            except GuestError:
                raise KvmUnusableError(guest.last_words(KVM_FIRST_LINE_TIMEOUT)) from None
        ready = guest.expect("PYTUN-READY", BOOT_TIMEOUT[accel])
        result["boot_seconds"] = round(time.monotonic() - guest.started, 2)
        enabled = dict(re.findall(r"(\w+)=(\d+)", ready))
        if enabled.get("combined") != str(QUEUES) or enabled.get("rx_queues") != str(QUEUES):
            raise GuestError(f"the guest did not enable {QUEUES} queue pairs: {ready!r}")
        result["device"] = name
        result["vnet_hdr_size_after_qemu"] = device.get_vnet_hdr_size()
        # After the guest's last multiqueue command: from here on QEMU leaves steering alone.
        in_force: list[Hashing] = []

        def disable_all() -> None:
            for each in reversed(in_force):
                each.close()

        stack.callback(disable_all)
        config = VnetHashConfig.round_robin(QUEUES, key=rng.randbytes(40))
        hashing = Hashing.enable(device, config, backend=Backend.EBPF, record=False)
        in_force.append(hashing)
        result["backend"] = hashing.backend.value
        result["semantics"] = hashing.semantics.name
        phases = [run_phase("round-robin", guest, ns, flows, args.rounds, hashing)]
        table = tuple(rng.randrange(QUEUES) for _ in range(len(config.indirection_table)))
        reconfigured = config.replace(indirection_table=table)
        hashing.reconfigure(reconfigured)
        phases.append(run_phase("reconfigured", guest, ns, flows, args.rounds, hashing))
        hashing.reconfigure(config.replace(indirection_table=(QUEUES - 1,)))
        phases.append(run_phase(f"all on queue {QUEUES - 1}", guest, ns, flows, args.rounds, hashing))
        # The guest's multiqueue commands: QEMU detaches the tap's steering program on each.
        guest.channels("fewer", 1)
        guest.channels("all", QUEUES)
        phases.append(run_phase("after the guest's ethtool -L", guest, ns, flows, 1, hashing, steered=False))
        hashing.close()  # what it would detach is gone already; TUNSETSTEERINGEBPF -1 is harmless
        hashing = Hashing.enable(device, reconfigured, backend=Backend.EBPF, record=False)
        in_force.append(hashing)
        phases.append(run_phase("enabled again", guest, ns, flows, args.rounds, hashing))
        result["phases"] = phases
    result["run_seconds"] = round(time.monotonic() - started, 2)
    result["ok"] = all(p["as_expected"] for p in phases)
    return result


def report(result: dict[str, Any]) -> None:
    """Print the verdict for people."""
    print(
        f"{QEMU} ({result['accelerator']}): guest booted and enabled {QUEUES} queue pairs in "
        f"{result['boot_seconds']:.2f} s; TAP {result['device']} steered by the {result['backend']} backend "
        f"(vnet header {result['vnet_hdr_size_after_qemu']} bytes as QEMU left it)"
    )
    for phase in result["phases"]:
        table = collections.Counter(phase["indirection_table"])
        share = ", ".join(f"q{q}: {table[q]}" for q in range(QUEUES))
        print(
            f"{phase['label']}: {phase['sent']} packets over {phase['flows']} flows "
            f"(table entries {share}) in {phase['seconds']:.2f} s"
        )
        if not phase["steered"]:
            verdict = "as expected" if phase["as_expected"] else "UNEXPECTEDLY"
            print(f"  QEMU detached the program: the guest's counts differ from the prediction {verdict}")
        for q in range(QUEUES):
            same = phase["predicted"][q] == phase["observed"][q]
            verdict = ("ok" if same else "DIFFERENT") if phase["steered"] else ("same" if same else "different")
            print(
                f"  queue {q}: predicted {phase['predicted'][q]:5d}  guest rx_queue_{q}_packets "
                f"+{phase['observed'][q]:5d}  {verdict}"
            )
    if "kvm" in result:
        print(f"(KVM {result['kvm']})")
    print(f"run time {result['run_seconds']:.2f} s")
    print("OK" if result["ok"] else "FAILED")


def main(argv: list[str] | None = None) -> int:
    """Boot the guest, steer, send, compare, reconfigure, compare again, and after the guest's queue
    change; print the verdict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    parser.add_argument("--guest", type=Path, default=GUEST_DIR, help="the built guest (default: %(default)s)")
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto", help="KVM when usable, else TCG")
    parser.add_argument("--flows", type=int, default=256, help="flows (TCP/UDP over IPv4/IPv6; default 256)")
    parser.add_argument("--rounds", type=int, default=4, help="packets per flow and configuration (default 4)")
    parser.add_argument("--seed", type=int, default=19, help="seed of the flows, the key and the random table")
    args = parser.parse_args(argv)
    missing = []
    if os.geteuid() != 0:
        missing.append("root (a network namespace, a TAP device and eBPF)")
    if shutil.which(QEMU) is None:
        missing.append(f"{QEMU} (make qemu-guest installs qemu-system-x86)")
    if not all((args.guest / f).exists() for f in ("vmlinuz", "initramfs.cpio.gz")):
        missing.append(f"the guest in {args.guest} (make qemu-guest builds it)")
    if not os.path.exists("/dev/net/tun"):
        missing.append("/dev/net/tun")
    if missing:
        print(f"qemu_guest.py needs {'; '.join(missing)}", file=sys.stderr)
        return 3
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.accel != "auto":
            result = run(args, args.accel)
        elif not kvm_usable():
            result = run(args, "tcg")
            result["kvm"] = "/dev/kvm is missing or does not answer"
        else:
            try:
                result = run(args, "kvm")
            except KvmUnusableError as exc:  # /dev/kvm answers, but cannot run this guest (nested, odd CPU models)
                print(f"qemu_guest.py: KVM unusable, using TCG: {exc}", file=sys.stderr)
                result = run(args, "tcg")
                result["kvm"] = f"unusable: {exc}"
    except GuestError as exc:
        print(f"qemu_guest.py: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qemu_guest.py: interrupted; QEMU, the TAP and the namespace are gone", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        report(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
