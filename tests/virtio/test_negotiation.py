"""What a VMM may advertise per host, and whether a guest can move between two hosts."""

from __future__ import annotations

from typing import Any

import pytest

from pytun_hash import HashType, Revision, ValidationError, VnetHashCapability
from pytun_hash.virtio import (
    HostCapability,
    VirtioNetFeature,
    advertised,
    compare,
    host_from_probe,
)
from tests.virtio import probes

F = VirtioNetFeature
ALL_HASHING = F.CTRL_VQ | F.RSS | F.HASH_REPORT
SIX = HashType.supported_by_kernel_series()


def test_the_captured_mainline_host_is_ebpf() -> None:
    host = host_from_probe(probes.ebpf_host())
    assert (host.backend, host.revision, host.types, host.report, host.multi_queue) == ("ebpf", None, SIX, True, True)
    assert host.name.startswith("kernel 6.18")
    ad = advertised(host, queues=4)
    assert ad.features == ALL_HASHING | F.MQ
    dc = ad.device_config
    assert (dc.max_virtqueue_pairs, dc.rss_max_key_size, dc.rss_max_indirection_table_length) == (4, 40, 128)
    assert dc.supported_hash_types == SIX  # the program implements no _EX type
    assert ad.withheld == ()


def test_ebpf_without_user_space_reports_offers_no_hash_report() -> None:
    ad = advertised(host_from_probe(probes.ebpf_host(), user_space_reports=False))
    assert ad.features == F.CTRL_VQ | F.RSS
    assert any(reason.startswith("HASH_REPORT") for reason in ad.withheld)


@pytest.mark.parametrize("revision", [Revision.RFC, Revision.V3, Revision.V10, Revision.V12])
def test_native_revisions(revision: Revision) -> None:
    ad = advertised(HostCapability.native(revision), queues=2)
    assert ad.features == ALL_HASHING | F.MQ
    assert ad.device_config.rss_max_indirection_table_length == 128


def test_a_v3_capability_without_reports() -> None:
    cap = VnetHashCapability(Revision.V3, SIX, None, rss=True, report=False)
    assert advertised(HostCapability.native(Revision.V3, cap)).features == F.CTRL_VQ | F.RSS
    cap = VnetHashCapability(Revision.V3, SIX, None, rss=False, report=True)
    ad = advertised(HostCapability.native(Revision.V3, cap))
    assert ad.features == F.CTRL_VQ | F.HASH_REPORT
    assert ad.device_config.rss_max_indirection_table_length == 0
    assert ad.device_config.rss_max_key_size == 40


def test_a_small_rfc_table_cannot_offer_rss() -> None:
    """A device offering RSS must advertise 128 entries at least."""
    ad = advertised(host_from_probe(probes.rfc_host(max_table=64)))
    assert ad.features == F.CTRL_VQ | F.HASH_REPORT
    assert any("64" in reason for reason in ad.withheld)


def test_nothing_offers_nothing() -> None:
    ad = advertised(host_from_probe(probes.bare_host()), queues=2)
    assert ad.features == F.MQ | F.CTRL_VQ
    assert (ad.device_config.rss_max_key_size, int(ad.device_config.supported_hash_types)) == (0, 0)


def test_one_queue_offers_no_mq() -> None:
    ad = advertised(HostCapability.ebpf())
    assert F.MQ not in ad.features and ad.device_config.max_virtqueue_pairs == 1


def _verdict(a: dict[str, Any], b: dict[str, Any], **kwargs: Any) -> tuple[bool, list[str]]:
    queues = kwargs.pop("queues", 4)
    result = compare(
        advertised(host_from_probe(a, **kwargs), queues=queues), advertised(host_from_probe(b, **kwargs), queues=queues)
    )
    return result.compatible, [d.field for d in result.differences]


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "expected"),
    [
        (probes.ebpf_host, probes.ebpf_host, {}, (True, [])),
        (probes.rfc_host, probes.ebpf_host, {}, (True, [])),
        (probes.ebpf_host, probes.rfc_host, {}, (True, [])),
        (probes.v12_host, probes.rfc_host, {}, (True, [])),
        (probes.rfc_host, probes.v12_host, {}, (True, [])),
        # vhost-net: an eBPF host cannot deliver reports, the RFC kernel writes them.
        (probes.rfc_host, probes.ebpf_host, {"user_space_reports": False}, (False, ["features"])),
        (probes.ebpf_host, probes.rfc_host, {"user_space_reports": False}, (True, [])),
        (
            probes.ebpf_host,
            probes.bare_host,
            {},
            (False, ["features", "supported_hash_types", "rss_max_key_size", "rss_max_indirection_table_length"]),
        ),
        (probes.bare_host, probes.ebpf_host, {}, (True, [])),
    ],
)
def test_compat_verdicts(a: Any, b: Any, kwargs: dict[str, Any], expected: tuple[bool, list[str]]) -> None:
    assert _verdict(a(), b(), **kwargs) == expected


def test_v12_to_a_small_rfc_table_says_by_how_much() -> None:
    a = advertised(host_from_probe(probes.v12_host()), queues=4)
    b = advertised(host_from_probe(probes.rfc_host(max_table=64)), queues=4)
    result = compare(a, b)
    assert not result.compatible
    by_field = {d.field: d for d in result.differences}
    assert set(by_field) == {"features", "rss_max_indirection_table_length"}
    assert "VIRTIO_NET_F_RSS" in by_field["features"].message
    table = by_field["rss_max_indirection_table_length"]
    assert (table.a, table.b) == (128, 0) and "128 fewer" in table.message


def test_hash_types_and_queue_pairs_differences() -> None:
    wide = HostCapability("native", Revision.V12, HashType.all_known(), 128, True, True)
    a, b = advertised(wide, queues=8), advertised(HostCapability.ebpf(), queues=4)
    result = compare(a, b)
    fields = {d.field: d for d in result.differences}
    assert set(fields) == {"supported_hash_types", "max_virtqueue_pairs"}
    assert "IP_EX|TCP_EX|UDP_EX" in fields["supported_hash_types"].message
    assert fields["max_virtqueue_pairs"].to_mapping() == {
        "field": "max_virtqueue_pairs",
        "a": 8,
        "b": 4,
        "message": "max_virtqueue_pairs: B offers 4 queue pairs, 4 fewer than A's 8",
    }


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d.update(hash_ioctls={"revision": "v99"}), "hash_ioctls.revision"),
        (lambda d: d.update(hash_ioctls={"revision": 3}), "hash_ioctls.revision"),
        (lambda d: d["bpf"].update(usable="yes"), "bpf.usable"),
        (lambda d: d.update(kernel=5), "kernel"),
        (lambda d: d.update(hash_ioctls={"revision": "rfc", "capability": {"types": ["NOPE"]}}), None),
    ],
)
def test_malformed_probe_documents(edit: Any, field: str | None) -> None:
    document = probes.ebpf_host()
    edit(document)
    with pytest.raises(ValidationError) as info:
        host_from_probe(document)
    if field is not None:
        assert info.value.field == field


def test_not_a_probe_document() -> None:
    values: list[Any] = [[], {"hello": 1}, "text"]
    for value in values:
        with pytest.raises(ValidationError):
            host_from_probe(value)


def test_host_capability_validation() -> None:
    with pytest.raises(ValidationError):
        HostCapability("native")  # a native host names its revision
    with pytest.raises(ValidationError):
        HostCapability("ebpf", Revision.V12)
    with pytest.raises(ValidationError):
        HostCapability("kernel")
    with pytest.raises(ValidationError):
        advertised(HostCapability.ebpf(), queues=0)
    with pytest.raises(ValidationError):
        HostCapability.native(Revision.V12, VnetHashCapability(Revision.RFC, SIX, 128))
