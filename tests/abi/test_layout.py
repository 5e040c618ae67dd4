"""Struct layouts: sizes and offsets, and a C program built with the system compiler as the reference."""

from __future__ import annotations

import ctypes
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from pytun_hash import Revision, ioctl_request
from pytun_hash._abi import TUN_IOCTLS, hash_ioctls, ifreq, rfc, v3, v12
from pytun_hash._abi.virtio_net import VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_V1_HASH_SIZE, VIRTIO_NET_HDR_V1_SIZE
from pytun_hash._abi.virtio_net_hdr import virtio_net_hdr, virtio_net_hdr_v1, virtio_net_hdr_v1_hash

STRUCTS: dict[str, type[ctypes.Structure]] = {
    "rfc_tun_vnet_hash_cap": rfc.tun_vnet_hash_cap,
    "rfc_tun_vnet_hash": rfc.tun_vnet_hash,
    "v3_tun_vnet_hash": v3.tun_vnet_hash,
    "v3_tun_vnet_hash_rss": v3.tun_vnet_hash_rss,
    "v12_tun_vnet_rss": v12.tun_vnet_rss,
    "virtio_net_hdr": virtio_net_hdr,
    "virtio_net_hdr_v1": virtio_net_hdr_v1,
    "virtio_net_hdr_v1_hash": virtio_net_hdr_v1_hash,
    "ifreq": ifreq,
}

# (struct, field) -> offset, as each revision's UAPI header lays the structures out (natural alignment;
# the RFC's hidden padding included).
OFFSETS = {
    ("rfc_tun_vnet_hash_cap", "max_indirection_table_length"): 0,
    ("rfc_tun_vnet_hash_cap", "types"): 4,
    ("rfc_tun_vnet_hash", "flags"): 0,
    ("rfc_tun_vnet_hash", "types"): 4,
    ("rfc_tun_vnet_hash", "indirection_table_mask"): 8,
    ("rfc_tun_vnet_hash", "unclassified_queue"): 10,
    ("v3_tun_vnet_hash", "flags"): 0,
    ("v3_tun_vnet_hash", "pad"): 2,
    ("v3_tun_vnet_hash", "types"): 4,
    ("v3_tun_vnet_hash_rss", "indirection_table_mask"): 0,
    ("v3_tun_vnet_hash_rss", "unclassified_queue"): 2,
    ("v12_tun_vnet_rss", "hash_types"): 0,
    ("v12_tun_vnet_rss", "indirection_table_mask"): 4,
    ("v12_tun_vnet_rss", "unclassified_queue"): 6,
    ("virtio_net_hdr", "csum_offset"): 8,
    ("virtio_net_hdr_v1", "num_buffers"): 10,
    ("virtio_net_hdr_v1_hash", "hash_value"): 12,
    ("virtio_net_hdr_v1_hash", "hash_report"): 16,
    ("virtio_net_hdr_v1_hash", "padding"): 18,
    ("ifreq", "ifr_flags"): 16,
}
SIZES = {
    "rfc_tun_vnet_hash_cap": 8,
    "rfc_tun_vnet_hash": 12,
    "v3_tun_vnet_hash": 8,
    "v3_tun_vnet_hash_rss": 4,
    "v12_tun_vnet_rss": 8,
    "virtio_net_hdr": 10,
    "virtio_net_hdr_v1": 12,
    "virtio_net_hdr_v1_hash": 20,
}


@pytest.mark.parametrize(("struct", "size"), sorted(SIZES.items()))
def test_sizes(struct: str, size: int) -> None:
    assert ctypes.sizeof(STRUCTS[struct]) == size


@pytest.mark.parametrize(("key", "offset"), sorted(OFFSETS.items()))
def test_offsets(key: tuple[str, str], offset: int) -> None:
    struct, field = key
    assert getattr(STRUCTS[struct], field).offset == offset


def test_ifreq_size() -> None:
    assert ctypes.sizeof(ifreq) == (40 if ctypes.sizeof(ctypes.c_void_p) == 8 else 32)


# The C side declares the structs and macros as the kernel patches do, and takes the existing ones
# from the system's linux/if_tun.h and linux/virtio_net.h.
C_SOURCE = r"""
#include <stdio.h>
#include <stddef.h>
#include <net/if.h>
#include <linux/types.h>
#include <linux/ioctl.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>

struct rfc_tun_vnet_hash_cap { __u16 max_indirection_table_length; __u32 types; };
struct rfc_tun_vnet_hash { __u8 flags; __u32 types; __u16 indirection_table_mask; __u16 unclassified_queue; };
struct v3_tun_vnet_hash { __u16 flags; __u8 pad[2]; __u32 types; };
struct v3_tun_vnet_hash_rss { __u16 indirection_table_mask; __u16 unclassified_queue; };
struct v12_tun_vnet_rss { __u32 hash_types; __u16 indirection_table_mask; __u16 unclassified_queue; };

#define RFC_TUNGETVNETHASHCAP _IO('T', 228)
#define RFC_TUNSETVNETHASH _IOW('T', 229, unsigned int)
#define V3_TUNGETVNETHASHCAP _IOR('T', 228, struct v3_tun_vnet_hash)
#define V3_TUNSETVNETHASH _IOW('T', 229, struct v3_tun_vnet_hash)
#define V12_TUNGETVNETHASHTYPES _IOR('T', 228, __u32)
#define V12_TUNSETVNETREPORTINGAUTOMQ _IOR('T', 229, __u32)
#define V12_TUNSETVNETREPORTINGRSS _IOR('T', 230, struct v12_tun_vnet_rss)
#define V12_TUNSETVNETRSS _IOR('T', 231, struct v12_tun_vnet_rss)

#define S(t) printf("size %s %zu\n", #t, sizeof(struct t))
#define O(t, f) printf("offset %s.%s %zu\n", #t, #f, offsetof(struct t, f))
#define I(n) printf("ioctl %s %lu\n", #n, (unsigned long)(n))

int main(void) {
    S(rfc_tun_vnet_hash_cap); S(rfc_tun_vnet_hash); S(v3_tun_vnet_hash); S(v3_tun_vnet_hash_rss);
    S(v12_tun_vnet_rss); S(virtio_net_hdr); S(virtio_net_hdr_v1); S(virtio_net_hdr_v1_hash); S(ifreq);
    O(rfc_tun_vnet_hash_cap, max_indirection_table_length); O(rfc_tun_vnet_hash_cap, types);
    O(rfc_tun_vnet_hash, flags); O(rfc_tun_vnet_hash, types); O(rfc_tun_vnet_hash, indirection_table_mask);
    O(rfc_tun_vnet_hash, unclassified_queue);
    O(v3_tun_vnet_hash, flags); O(v3_tun_vnet_hash, pad); O(v3_tun_vnet_hash, types);
    O(v3_tun_vnet_hash_rss, indirection_table_mask); O(v3_tun_vnet_hash_rss, unclassified_queue);
    O(v12_tun_vnet_rss, hash_types); O(v12_tun_vnet_rss, indirection_table_mask);
    O(v12_tun_vnet_rss, unclassified_queue);
    O(virtio_net_hdr, flags); O(virtio_net_hdr, gso_type); O(virtio_net_hdr, hdr_len); O(virtio_net_hdr, gso_size);
    O(virtio_net_hdr, csum_start); O(virtio_net_hdr, csum_offset); O(virtio_net_hdr_v1, num_buffers);
    O(virtio_net_hdr_v1_hash, hash_value); O(virtio_net_hdr_v1_hash, hash_report);
    O(virtio_net_hdr_v1, flags); O(virtio_net_hdr_v1, gso_type); O(virtio_net_hdr_v1, hdr_len);
    O(virtio_net_hdr_v1, gso_size); O(virtio_net_hdr_v1, csum_start); O(virtio_net_hdr_v1, csum_offset);
    O(virtio_net_hdr_v1_hash, padding); O(ifreq, ifr_name); O(ifreq, ifr_flags);
    I(TUNSETNOCSUM); I(TUNSETDEBUG); I(TUNSETIFF); I(TUNSETPERSIST); I(TUNSETOWNER); I(TUNSETLINK);
    I(TUNSETGROUP); I(TUNGETFEATURES); I(TUNSETOFFLOAD); I(TUNSETTXFILTER); I(TUNGETIFF); I(TUNGETSNDBUF);
    I(TUNSETSNDBUF); I(TUNATTACHFILTER); I(TUNDETACHFILTER); I(TUNGETVNETHDRSZ); I(TUNSETVNETHDRSZ);
    I(TUNSETQUEUE); I(TUNSETIFINDEX); I(TUNGETFILTER); I(TUNSETVNETLE); I(TUNGETVNETLE); I(TUNSETVNETBE);
    I(TUNGETVNETBE); I(TUNSETSTEERINGEBPF); I(TUNSETFILTEREBPF); I(TUNSETCARRIER); I(TUNGETDEVNETNS);
    I(RFC_TUNGETVNETHASHCAP); I(RFC_TUNSETVNETHASH); I(V3_TUNGETVNETHASHCAP); I(V3_TUNSETVNETHASH);
    I(V12_TUNGETVNETHASHTYPES); I(V12_TUNSETVNETREPORTINGAUTOMQ); I(V12_TUNSETVNETREPORTINGRSS);
    I(V12_TUNSETVNETRSS);
    return 0;
}
"""

_PREFIX = {Revision.RFC: "RFC_", Revision.V3: "V3_", Revision.V12: "V12_"}


def _python_side() -> dict[str, int]:
    out: dict[str, int] = {}
    for name, struct in STRUCTS.items():
        # The C program names the virtio and ifreq structs without a revision prefix.
        out[f"size {name}"] = ctypes.sizeof(struct)
        for field_name, *_ in struct._fields_:
            if not field_name.startswith("_") and field_name != "hdr":
                out[f"offset {name}.{field_name}"] = getattr(struct, field_name).offset
    for d in TUN_IOCTLS:
        out[f"ioctl {d.name}"] = ioctl_request(d.name)
    for revision, prefix in _PREFIX.items():
        for d in hash_ioctls(revision):
            out[f"ioctl {prefix}{d.name}"] = ioctl_request(d.name, revision=revision)
    return out


@pytest.fixture(scope="module")
def c_side(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc or cc) on PATH; the C layout cross-check needs one")
    if not Path("/usr/include/linux/if_tun.h").exists():
        pytest.skip("no kernel UAPI headers (/usr/include/linux/if_tun.h); install linux-libc-dev")
    work = tmp_path_factory.mktemp("layout")
    src = work / "layout.c"
    src.write_text(C_SOURCE)
    exe = work / "layout"
    subprocess.run([cc, "-std=gnu11", "-Wall", "-Werror", "-o", str(exe), str(src)], check=True, capture_output=True)
    result = subprocess.run([str(exe)], check=True, capture_output=True, text=True)
    values: dict[str, int] = {}
    for line in result.stdout.splitlines():
        kind, name, value = line.split()
        values[f"{kind} {name}"] = int(value)
    return values


def test_c_compiler_agrees_with_python(c_side: dict[str, int]) -> None:
    python = _python_side()
    assert set(python) <= set(c_side), sorted(set(python) - set(c_side))
    mismatches = {k: (python[k], c_side[k]) for k in python if python[k] != c_side[k]}
    assert mismatches == {}
    # Every value the C side printed was compared.
    assert len(python) == len(c_side), sorted(set(c_side) - set(python))
    if platform.machine() == "x86_64":
        assert c_side["ioctl RFC_TUNSETVNETHASH"] == 0x400454E5


def test_the_header_size_constants_are_the_structures_sizes() -> None:
    # The constants are literals so that reading them loads no ctypes; the structures are the check.
    sizes = (ctypes.sizeof(virtio_net_hdr), ctypes.sizeof(virtio_net_hdr_v1), ctypes.sizeof(virtio_net_hdr_v1_hash))
    assert sizes == (VIRTIO_NET_HDR_SIZE, VIRTIO_NET_HDR_V1_SIZE, VIRTIO_NET_HDR_V1_HASH_SIZE) == (10, 12, 20)
