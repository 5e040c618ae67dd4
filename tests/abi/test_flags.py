"""Flag and enum values of the raw ABI."""

from __future__ import annotations

import pytest

from pytun_hash import HashReport, HashType, TunFlag, TunOffload
from pytun_hash._abi import rfc, v3


def test_hash_types_are_bits_0_to_8() -> None:
    names = ["IPV4", "TCPV4", "UDPV4", "IPV6", "TCPV6", "UDPV6", "IP_EX", "TCP_EX", "UDP_EX"]
    assert [HashType[n].value for n in names] == [1 << i for i in range(9)]
    assert HashType.supported_by_kernel_series() == 0x3F
    assert HashType.all_known() == 0x1FF


def test_hash_report_values_and_relation_to_types() -> None:
    assert [r.value for r in HashReport] == list(range(10))
    for report in list(HashReport)[1:]:
        assert report.hash_type == 1 << (report.value - 1)
        assert report.hash_type.report is report
    with pytest.raises(ValueError):
        _ = HashReport.NONE.hash_type
    with pytest.raises(ValueError):
        _ = (HashType.IPV4 | HashType.TCPV4).report


def test_types_and_reports_are_distinct_types() -> None:
    # The kernel series confused these two; in Python they must never compare as the same kind.
    assert not isinstance(HashReport.TCPV4, HashType)
    assert not isinstance(HashType.TCPV4, HashReport)


def test_revision_flags_differ() -> None:
    assert int(rfc.TunVnetHashFlag.TUN_VNET_HASH_RSS) == 0x01
    assert int(rfc.TunVnetHashFlag.TUN_VNET_HASH_REPORT) == 0x02
    assert int(v3.TunVnetHashFlag.TUN_VNET_HASH_REPORT) == 0x0001
    assert int(v3.TunVnetHashFlag.TUN_VNET_HASH_RSS) == 0x0002
    assert set(rfc.TunVnetHashFlag.__members__) == set(v3.TunVnetHashFlag.__members__)
    assert not issubclass(rfc.TunVnetHashFlag, v3.TunVnetHashFlag)


def test_tun_flags() -> None:
    assert int(TunFlag.IFF_NOFILTER) == int(TunFlag.IFF_NO_PI) == 0x1000
    features = TunFlag(0x7173)
    for f in ("IFF_TUN", "IFF_TAP", "IFF_NAPI", "IFF_NAPI_FRAGS", "IFF_NO_CARRIER", "IFF_MULTI_QUEUE",
              "IFF_NO_PI", "IFF_ONE_QUEUE", "IFF_VNET_HDR"):
        assert TunFlag[f] in features
    assert int(TunFlag.IFF_ATTACH_QUEUE) == 0x200 and int(TunFlag.IFF_DETACH_QUEUE) == 0x400
    assert int(TunOffload.TUN_F_CSUM) == 1 and int(TunOffload.TUN_F_USO6) == 0x40
