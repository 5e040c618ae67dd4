"""Build the small Linux guest of ``examples/qemu_guest.py`` from Debian's packages (no download).

Inputs, all installed by ``make qemu-guest`` (``apt-get install qemu-system-x86 linux-image-amd64
busybox-static ethtool``):

* the kernel ``/boot/vmlinuz-VERSION`` (the newest one with modules in ``/lib/modules/VERSION``,
  or ``--kernel VERSION``), copied as ``vmlinuz``;
* the modules virtio-net needs that the kernel does not have built in (``virtio_pci``,
  ``virtio_net`` and what ``modules.dep`` says they need), in load order;
* ``/bin/busybox`` (busybox-static), ``ethtool`` and the shared libraries and dynamic loader
  ``ldd`` names for it;
* ``examples/guest/init``, the guest's ``/init``.

Output, in ``--out`` (default ``.cache/qemu-guest``, git-ignored): ``vmlinuz``,
``initramfs.cpio.gz`` (a newc archive written here, so no ``cpio`` tool and no root is needed)
and ``guest.json`` (what went in). Run as ``python3 examples/guest/build_guest.py [--out DIR]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_OUT = ROOT / ".cache" / "qemu-guest"
WANTED_MODULES = ("virtio_pci", "virtio_net")
BUSYBOX = Path("/bin/busybox")
DIRECTORIES = ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "lib", "lib/modules")


class BuildError(Exception):
    """Something the guest needs is not installed."""


def _version_key(version: str) -> list[int | str]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", version)]


def find_kernel(version: str | None) -> tuple[str, Path]:
    """The kernel version and image to boot: ``version``, or the newest one with its modules installed."""
    candidates = []
    for image in Path("/boot").glob("vmlinuz-*"):
        found = image.name.removeprefix("vmlinuz-")
        if (Path("/lib/modules") / found / "modules.dep").exists():
            candidates.append(found)
    if version is not None:
        if version not in candidates:
            raise BuildError(f"no /boot/vmlinuz-{version} with modules in /lib/modules/{version}")
        return version, Path("/boot") / f"vmlinuz-{version}"
    if not candidates:
        raise BuildError("no /boot/vmlinuz-* with its modules: install linux-image-amd64 (make qemu-guest)")
    newest = max(candidates, key=_version_key)
    return newest, Path("/boot") / f"vmlinuz-{newest}"


def _module_name(path: str) -> str:
    return Path(path).name.split(".ko")[0].replace("-", "_")


def modules_to_load(version: str, wanted: tuple[str, ...] = WANTED_MODULES) -> list[str]:
    """Paths (relative to ``/lib/modules/VERSION``) of the modules to insmod, dependencies first;
    built-in ones are left out."""
    base = Path("/lib/modules") / version
    builtin = {_module_name(line) for line in (base / "modules.builtin").read_text().split()}
    deps: dict[str, list[str]] = {}
    paths: dict[str, str] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        path, _, needs = line.partition(":")
        name = _module_name(path)
        paths[name] = path
        deps[name] = [_module_name(n) for n in needs.split()]
    order: list[str] = []

    def visit(name: str) -> None:
        if name in builtin or paths.get(name) in order:
            return
        if name not in paths:
            raise BuildError(f"module {name} is neither built into {version} nor in its modules.dep")
        for dep in reversed(deps[name]):
            visit(dep)
        order.append(paths[name])

    for name in wanted:
        visit(name)
    return order


def shared_libraries(binary: Path) -> list[Path]:
    """The shared libraries and the dynamic loader ``binary`` needs, as ``ldd`` names them."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if match:
            libs.append(Path(match.group(1)))
    return libs


class Cpio:
    """A newc cpio archive (the initramfs format), written entry by entry to ``out``."""

    def __init__(self, out: gzip.GzipFile) -> None:
        self._out = out
        self._inode = 1

    def _entry(self, name: str, mode: int, data: bytes = b"", *, rdev: tuple[int, int] = (0, 0)) -> None:
        encoded = name.encode() + b"\0"
        fields = [self._inode, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        self._inode += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        self._out.write(header + b"\0" * (-len(header) % 4))
        self._out.write(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> None:
        self._entry("TRAILER!!!", 0)


def _add_parents(archive: Cpio, made: set[str], path: str) -> None:
    parts = path.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        directory = "/".join(parts[:i])
        if directory not in made:
            archive.directory(directory)
            made.add(directory)


def build(out: Path, kernel: str | None = None) -> dict[str, Any]:
    """Write ``vmlinuz``, ``initramfs.cpio.gz`` and ``guest.json`` into ``out``; return what guest.json says."""
    version, image = find_kernel(kernel)
    if not BUSYBOX.exists():
        raise BuildError(f"{BUSYBOX} is missing: install busybox-static (make qemu-guest)")
    ethtool = shutil.which("ethtool", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if ethtool is None:
        raise BuildError("ethtool is missing: install ethtool (make qemu-guest)")
    modules = modules_to_load(version)
    libraries = shared_libraries(Path(ethtool))
    out.mkdir(parents=True, exist_ok=True)
    partial = out / "initramfs.cpio.gz.partial"
    with gzip.open(partial, "wb", compresslevel=6) as stream:
        archive = Cpio(stream)
        made: set[str] = set()
        for directory in DIRECTORIES:
            archive.directory(directory)
            made.add(directory)
        archive.char_device("dev/console", 5, 1)
        archive.file("init", (HERE / "init").read_bytes(), 0o755)
        archive.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
        archive.file("sbin/ethtool", Path(ethtool).read_bytes(), 0o755)
        for library in libraries:
            name = str(library).lstrip("/")
            _add_parents(archive, made, name)
            archive.file(name, library.resolve().read_bytes(), 0o755)
        for module in modules:
            name = f"lib/modules/{module}"
            _add_parents(archive, made, name)
            archive.file(name, (Path("/lib/modules") / version / module).read_bytes())
        archive.file("etc/modules.order", "".join(f"{m}\n" for m in modules).encode())
        archive.finish()
    shutil.copyfile(image, out / "vmlinuz.partial")
    os.replace(out / "vmlinuz.partial", out / "vmlinuz")
    os.replace(partial, out / "initramfs.cpio.gz")
    manifest: dict[str, Any] = {
        "kernel": version,
        "modules": modules,
        "busybox": str(BUSYBOX),
        "ethtool": ethtool,
        "libraries": [str(lib) for lib in libraries],
        "initramfs_bytes": (out / "initramfs.cpio.gz").stat().st_size,
    }
    (out / "guest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Build the guest; exit status 0, or 1 with what is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default: %(default)s)")
    parser.add_argument("--kernel", help="kernel version to boot (default: the newest installed)")
    args = parser.parse_args(argv)
    try:
        manifest = build(args.out, args.kernel)
    except (BuildError, OSError, subprocess.CalledProcessError) as exc:
        print(f"build_guest.py: {exc}", file=sys.stderr)
        return 1
    print(
        f"guest in {args.out}: kernel {manifest['kernel']}, modules {', '.join(manifest['modules'])}, "
        f"initramfs {manifest['initramfs_bytes']} bytes"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
