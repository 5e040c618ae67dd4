"""Golden ioctl numbers: every TUN ioctl and every revision's hash ioctls, per architecture family."""

from __future__ import annotations

import pytest

from pytun_hash import Revision, ioctl_request
from pytun_hash._abi import TUN_IOCTLS, hash_ioctls
from pytun_hash._abi.ioc import KNOWN_MACHINES, IocDir, byteorder_for, layout_for

# Literal values as the kernel headers define them on x86_64 (linux/if_tun.h and the hash series).
X86_64_TUN = {
    "TUNSETNOCSUM": 0x400454C8,
    "TUNSETDEBUG": 0x400454C9,
    "TUNSETIFF": 0x400454CA,
    "TUNSETPERSIST": 0x400454CB,
    "TUNSETOWNER": 0x400454CC,
    "TUNSETLINK": 0x400454CD,
    "TUNSETGROUP": 0x400454CE,
    "TUNGETFEATURES": 0x800454CF,
    "TUNSETOFFLOAD": 0x400454D0,
    "TUNSETTXFILTER": 0x400454D1,
    "TUNGETIFF": 0x800454D2,
    "TUNGETSNDBUF": 0x800454D3,
    "TUNSETSNDBUF": 0x400454D4,
    "TUNATTACHFILTER": 0x401054D5,
    "TUNDETACHFILTER": 0x401054D6,
    "TUNGETVNETHDRSZ": 0x800454D7,
    "TUNSETVNETHDRSZ": 0x400454D8,
    "TUNSETQUEUE": 0x400454D9,
    "TUNSETIFINDEX": 0x400454DA,
    "TUNGETFILTER": 0x801054DB,
    "TUNSETVNETLE": 0x400454DC,
    "TUNGETVNETLE": 0x800454DD,
    "TUNSETVNETBE": 0x400454DE,
    "TUNGETVNETBE": 0x800454DF,
    "TUNSETSTEERINGEBPF": 0x800454E0,
    "TUNSETFILTEREBPF": 0x800454E1,
    "TUNSETCARRIER": 0x400454E2,
    "TUNGETDEVNETNS": 0x000054E3,
}

X86_64_HASH = {
    Revision.RFC: {"TUNGETVNETHASHCAP": 0x000054E4, "TUNSETVNETHASH": 0x400454E5},
    Revision.V3: {"TUNGETVNETHASHCAP": 0x800854E4, "TUNSETVNETHASH": 0x400854E5},
    Revision.V10: {"TUNGETVNETHASHCAP": 0x800854E4, "TUNSETVNETHASH": 0x400854E5},
    Revision.V12: {
        "TUNGETVNETHASHTYPES": 0x800454E4,
        "TUNSETVNETREPORTINGAUTOMQ": 0x800454E5,
        "TUNSETVNETREPORTINGRSS": 0x800854E6,
        "TUNSETVNETRSS": 0x800854E7,
    },
}

# One or more values per other family, as their asm/ioctl.h encodes them.
OTHER_ARCHES = [
    ("aarch64", "TUNSETIFF", 0x400454CA),
    ("riscv64", "TUNGETFEATURES", 0x800454CF),
    ("s390x", "TUNSETSTEERINGEBPF", 0x800454E0),
    ("i686", "TUNATTACHFILTER", 0x400854D5),  # 32-bit: sizeof(struct sock_fprog) == 8
    ("armv7l", "TUNGETFILTER", 0x800854DB),
    ("ppc64le", "TUNSETIFF", 0x800454CA),  # powerpc: WRITE = 4 << 29
    ("ppc64le", "TUNGETFEATURES", 0x400454CF),  # READ = 2 << 29
    ("ppc64le", "TUNGETDEVNETNS", 0x200054E3),  # NONE = 1 << 29
    ("ppc64le", "TUNATTACHFILTER", 0x801054D5),
    ("mips64", "TUNSETIFF", 0x800454CA),
    ("mips", "TUNATTACHFILTER", 0x800854D5),
    ("sparc64", "TUNGETVNETHDRSZ", 0x400454D7),
    ("alpha", "TUNSETQUEUE", 0x800454D9),
    ("parisc", "TUNSETIFF", 0x800454CA),  # parisc: WRITE = 2 << 30
    ("parisc", "TUNGETFEATURES", 0x400454CF),  # READ = 1 << 30
    ("parisc", "TUNATTACHFILTER", 0x800854D5),
]


@pytest.mark.parametrize(("name", "value"), sorted(X86_64_TUN.items()))
def test_tun_ioctls_x86_64(name: str, value: int) -> None:
    assert ioctl_request(name, arch="x86_64") == value


def test_tun_table_is_complete_and_in_numeric_order() -> None:
    assert [d.name for d in TUN_IOCTLS] == list(X86_64_TUN)
    assert [d.nr for d in TUN_IOCTLS] == list(range(200, 228))


@pytest.mark.parametrize("revision", list(Revision))
def test_hash_ioctls_x86_64(revision: Revision) -> None:
    got = {d.name: ioctl_request(d.name, arch="x86_64", revision=revision) for d in hash_ioctls(revision)}
    assert got == X86_64_HASH[revision]


@pytest.mark.parametrize(("arch", "name", "value"), OTHER_ARCHES)
def test_other_families(arch: str, name: str, value: int) -> None:
    assert ioctl_request(name, arch=arch) == value


def test_hash_ioctls_on_powerpc() -> None:
    assert ioctl_request("TUNGETVNETHASHCAP", arch="ppc64le") == 0x200054E4
    assert ioctl_request("TUNSETVNETHASH", arch="ppc64le") == 0x800454E5
    assert ioctl_request("TUNGETVNETHASHCAP", arch="ppc64le", revision=Revision.V3) == 0x400854E4
    assert ioctl_request("TUNSETVNETRSS", arch="parisc", revision=Revision.V12) == 0x400854E7


def test_host_default_matches_named_host() -> None:
    import platform

    if platform.machine() not in KNOWN_MACHINES:
        pytest.skip(f"host machine {platform.machine()!r} is not in the table")
    assert ioctl_request("TUNSETIFF") == ioctl_request("TUNSETIFF", arch=platform.machine())


def test_unknown_names_and_machines() -> None:
    with pytest.raises(ValueError, match="belongs to revision"):
        ioctl_request("TUNSETVNETRSS")  # a v12 name asked of the RFC revision
    with pytest.raises(ValueError, match="not an ioctl"):
        ioctl_request("TUNNOPE")
    with pytest.raises(ValueError, match="unknown machine"):
        ioctl_request("TUNSETIFF", arch="vax")


def test_encode_field_limits() -> None:
    generic = layout_for("x86_64")
    assert generic.encode(IocDir.READ | IocDir.WRITE, ord("T"), 1, 4) == 0xC0045401
    with pytest.raises(ValueError):
        generic.encode(IocDir.READ, ord("T"), 1, 1 << 14)
    with pytest.raises(ValueError):
        layout_for("ppc64le").encode(IocDir.READ, ord("T"), 1, 1 << 13)
    with pytest.raises(ValueError):
        generic.encode(IocDir.READ, 256, 1, 4)


def test_byteorder_table() -> None:
    assert byteorder_for("x86_64") == "little"
    assert byteorder_for("ppc64") == "big"
    assert byteorder_for("ppc64le") == "little"
    assert byteorder_for("s390x") == "big"


def test_revision_parse() -> None:
    assert Revision.parse("RFC") is Revision.RFC
    assert Revision.parse("v7") is Revision.V3
    assert Revision.parse("v9") is Revision.V3
    assert Revision.parse("v10") is Revision.V10
    assert Revision.parse("V11") is Revision.V10
    assert [r.abi for r in Revision] == [Revision.RFC, Revision.V3, Revision.V3, Revision.V12]
    assert [r.steering_precedence for r in Revision] == [False, False, True, True]
    assert Revision.parse("v12") is Revision.V12
    with pytest.raises(ValueError):
        Revision.parse("v13")
    # Found by the long fuzzing run: str.isdigit() accepts superscripts that int() refuses.
    with pytest.raises(ValueError):
        Revision.parse("v\u00b2")
