"""Fuzzing the byte decoders of the hash UAPI: set payloads, capabilities, plans, kernel read lengths,
the seccomp emulator's kernel, which decodes whatever memory the traced code points it at, and the eBPF
program's configuration values, which ``show`` reads back from maps a VMM writes.

Properties: only pytun_hash's own errors escape (the emulated kernel: only an errno), nothing hangs,
and what a decoder accepts encodes back to the same bytes.
"""

from __future__ import annotations

import errno

import attrs
from hypothesis import given
from hypothesis import strategies as st

from pytun_hash import Revision, VnetHashCapability, ioctl_plan
from pytun_hash._abi import HashType, hash_ioctls
from pytun_hash.bpf.rss_program import SUPPORTED_HASH_TYPES, config_value, decode_config_value
from pytun_hash.codec import (
    IoctlCall,
    decode_capability,
    decode_plan,
    decode_vnet_hash,
    encode_capability,
    kernel_key_length,
    kernel_read_length,
)
from pytun_hash.config import MAX_KEY_SIZE, VnetHashConfig
from pytun_hash.model.classify import Semantics
from pytun_hash.testing.kernel import EmulatedKernel, KernelErrno
from tests.fuzz.harness import call, watchdog
from tests.fuzz.strategies import configs, damaged, hash_types, revisions
from tests.testing.fake_call import FAKE_DEVICE, FakeCall

SET_NAMES = {r: [d.name for d in hash_ioctls(r)[1:]] for r in Revision}


@st.composite
def set_payloads(draw: st.DrawFn, revision: Revision) -> tuple[str | None, bytes, bool]:
    """``(setter name, payload, intact)``: a plan call's payload, often damaged, or random bytes."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.sampled_from([None, *SET_NAMES[revision], "TUNNOPE"])), draw(st.binary(max_size=400)), False
    config = draw(configs())
    if revision is not Revision.RFC and config.rss and not config.types & 0x7:
        config = attrs.evolve(config, types=config.types | 0x1)
    last = ioctl_plan(config, revision)[-1]
    payload = draw(damaged(last.payload))
    name = last.name if revision is Revision.V12 else draw(st.sampled_from([None, last.name]))
    return name, payload, payload == last.payload


@given(revision=revisions, data=st.data())
def test_decode_vnet_hash(revision: Revision, data: st.DataObject) -> None:
    name, payload, intact = data.draw(set_payloads(revision))
    decoded = call(decode_vnet_hash, payload, revision, name=name)
    if intact:
        assert decoded.ok, f"a payload the encoder built was refused: {decoded.error}"
    if not decoded.ok:
        return
    config = decoded.get()
    # Whatever the decoder accepts, the encoder turns back into the same bytes (v3+ refuse RSS
    # type sets without IPv4 types, which their kernels mishandle; the decoder still reads them).
    plan = call(ioctl_plan, config, revision)
    if plan.ok:
        last = plan.get()[-1]
        assert last.payload == payload
        if name is not None and revision is Revision.V12:
            assert last.name == name


@given(revision=revisions, data=st.data())
def test_decode_capability(revision: Revision, data: st.DataObject) -> None:
    if data.draw(st.booleans()):
        limit = data.draw(st.integers(0, 0xFFFF)) if revision is Revision.RFC else None
        cap = VnetHashCapability(
            revision,
            data.draw(hash_types()),
            max_indirection_table_length=limit,
            rss=data.draw(st.booleans()) if revision.abi is Revision.V3 else True,
            report=data.draw(st.booleans()) if revision.abi is Revision.V3 else True,
        )
        payload = data.draw(damaged(encode_capability(cap)))
    else:
        payload = data.draw(st.binary(max_size=16))
    decoded = call(decode_capability, payload, revision)
    if decoded.ok:
        assert encode_capability(decoded.get()) == payload


@given(revision=revisions, data=st.data())
def test_decode_plan(revision: Revision, data: st.DataObject) -> None:
    calls = []
    for _ in range(data.draw(st.integers(0, 3))):
        name, payload, _intact = data.draw(set_payloads(revision))
        calls.append(IoctlCall(name or SET_NAMES[revision][0], 0, payload))
    state = call(decode_plan, calls, revision)
    if state.ok:
        assert isinstance(state.get(), VnetHashConfig)


@given(revision=revisions, data=st.data())
def test_kernel_read_length(revision: Revision, data: st.DataObject) -> None:
    name, payload, intact = data.draw(set_payloads(revision))
    request = name if name in SET_NAMES[revision] else SET_NAMES[revision][0]
    length = call(kernel_read_length, revision, request, payload)
    if not length.ok:
        assert not intact, f"the read length of an intact payload is unknown: {length.error}"
        return
    assert length.get() >= 4
    if intact:
        config = decode_vnet_hash(payload, revision, name=name)
        unread = MAX_KEY_SIZE - kernel_key_length(config.types) if len(payload) > 12 else 0
        # The kernel copies the fixed part, the table and only keylen(types) key bytes.
        assert length.get() == len(payload) - unread


# ----------------------------------------------------------------------------- the emulated kernel

_ERRNOS = {errno.EFAULT, errno.EINVAL, errno.EBADFD, errno.EBUSY}


@given(revision=revisions, data=st.data())
def test_emulated_kernel_answers_any_memory_with_an_errno(revision: Revision, data: st.DataObject) -> None:
    kernel = EmulatedKernel(revision)
    names = sorted(set(kernel.requests.values()))
    for _ in range(data.draw(st.integers(1, 4))):
        name = data.draw(st.sampled_from(names))
        if name in {"TUNSETSTEERINGEBPF", "TUNSETVNETHDRSZ"}:
            memory = data.draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x03\0\0\0", b"\x14\0\0\0", b"", b"\x05\0"]))
        else:
            _name, memory, _intact = data.draw(set_payloads(revision))
        fake = FakeCall(
            memory,
            device_present=data.draw(st.integers(0, 9)) > 0,
            hdr_sz=data.draw(st.sampled_from([10, 12, 20, 24])),
            little_endian=data.draw(st.booleans()),
        )
        with watchdog():
            try:
                result = kernel.handle(name, fake)
            except KernelErrno as exc:
                assert exc.errno in _ERRNOS, f"{name} answered errno {exc.errno}"
                continue
        assert result == 0
        snapshot = kernel.snapshot(FAKE_DEVICE.key)
        # What the state shows is what the kernel holds: the table has mask+1 entries and 40 key bytes.
        assert len(snapshot.key) == MAX_KEY_SIZE
        if snapshot.indirection_table:
            assert len(snapshot.indirection_table) == snapshot.indirection_table_mask + 1
        call(snapshot.as_config)


@given(config=configs(), rules=st.sampled_from(list(Semantics)), data=st.data())
def test_decode_config_value(config: VnetHashConfig, rules: Semantics, data: st.DataObject) -> None:
    # The eBPF program's configuration value, as a VMM holding the slots map may leave it: pytun-hash
    # show reads it back (decode_config_value) from maps anyone with the fds can write.
    config = attrs.evolve(config, rss=True, types=(config.types & SUPPORTED_HASH_TYPES) or HashType.IPV4)
    value = config_value(config, semantics=rules)
    payload = data.draw(damaged(value)) if data.draw(st.booleans()) else data.draw(st.binary(max_size=64))
    decoded = call(decode_config_value, payload)
    if payload == value:
        assert decoded.ok and decoded.get() == (config, rules), decoded.error
    if decoded.ok:
        again, semantics = decoded.get()
        assert config_value(again, semantics=semantics) == payload
