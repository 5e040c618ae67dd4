"""Fuzzing the configuration loaders: mappings (as JSON/TOML give them), config files (TOML, JSON, any
bytes), hash type expressions and revision names.

Inputs include hostile sizes (:data:`~tests.fuzz.strategies.hostile_values`, :func:`hostile_config_texts`):
integers of thousands of digits, nesting up to 5,000 levels, megabyte strings and lists.

Properties: only pytun_hash's own errors escape, nothing hangs, a refusal names a field and stays short
(:data:`MAX_MESSAGE`) whatever the input's size, and what is accepted survives a round trip through
``to_mapping``/``dump_config``. Special files (FIFOs, symlinks, sockets, directories, devices, /proc and
/sys files) are refused by the readers, and the writer never writes through a symlink, onto a
non-regular file or over a file without ``overwrite``.
"""

from __future__ import annotations

import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytun_hash import Revision, ValidationError, VnetHashConfig
from pytun_hash.capture.reader import PcapReader
from pytun_hash.config import parse_hash_types
from pytun_hash.configfile import MAX_LISTED_PROBLEMS, config_errors, config_from_mapping, dump_config, load_config
from tests.fuzz.harness import call
from tests.fuzz.strategies import (
    config_mappings,
    configs,
    damaged,
    hostile_config_texts,
    json_values,
    special_file,
    special_file_kinds,
)

#: The longest refusal a target accepts: ten listed problems of a few hundred characters each.
MAX_MESSAGE = 4000


@given(data=config_mappings())
def test_from_mapping(data: dict[Any, Any]) -> None:
    built = call(VnetHashConfig.from_mapping, data)
    if not built.ok:
        assert isinstance(built.error, ValidationError) and built.error.field is not None, built.error
        assert len(str(built.error)) <= MAX_MESSAGE
        return
    config = built.get()
    assert VnetHashConfig.from_mapping(config.to_mapping()) == config


@given(data=st.one_of(config_mappings(), json_values))
def test_config_errors_agree_with_config_from_mapping(data: Any) -> None:
    errors = call(config_errors, data).get()
    built = call(config_from_mapping, data)
    # Every problem is reported with its field, and a mapping with none builds.
    assert built.ok == (not errors), f"config_errors {len(errors)} but config_from_mapping {built.error!r}"
    assert all(e.rule for e in errors) and len(errors) <= 7 * (MAX_LISTED_PROBLEMS + 2)
    assert built.ok or len(str(built.error)) <= MAX_MESSAGE


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if math.isfinite(value) else "nan"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    return '""'


@st.composite
def config_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """``(suffix, contents)`` of a TOML or JSON config file, or of anything at all."""
    kind = draw(st.sampled_from(["toml", "json", "valid", "bytes", "hostile"]))
    if kind == "hostile":
        return draw(hostile_config_texts())
    if kind == "bytes":
        return draw(st.sampled_from([".toml", ".json", ".conf", ""])), draw(st.binary(max_size=300))
    if kind == "valid":
        config = draw(configs())
        suffix = draw(st.sampled_from([".toml", ".json"]))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "c" + suffix)
            dump_config(config, path)
            with open(path, "rb") as f:
                return suffix, draw(damaged(f.read()))
    data = {str(k): v for k, v in draw(config_mappings(hostile=False)).items()}
    if kind == "json":
        text = json.dumps(data, default=str)
        return draw(st.sampled_from([".json", ".conf"])), draw(damaged(text.encode()))
    text = "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in data.items())
    return draw(st.sampled_from([".toml", ".conf"])), draw(damaged(text.encode()))


@pytest.fixture(scope="module")
def scratch() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="pytun-hash-fuzz-") as tmp:
        yield tmp


@given(file=config_files(), section=st.sampled_from([None, None, "net", "vm.net", ""]))
def test_load_config_from_any_file(scratch: str, file: tuple[str, bytes], section: str | None) -> None:
    suffix, contents = file
    path = os.path.join(scratch, "config" + suffix)
    with open(path, "wb") as f:
        f.write(contents)
    loaded = call(load_config, path, section=section)
    if loaded.ok:
        saved = os.path.join(scratch, "saved" + suffix if suffix in (".toml", ".json") else "saved.json")
        dump_config(loaded.get(), saved, overwrite=True)
        assert load_config(saved) == loaded.get()
    else:
        assert isinstance(loaded.error, ValidationError) and loaded.error.field is not None
        # However large the file, the message is short: values are shortened and problems counted.
        assert len(str(loaded.error)) <= MAX_MESSAGE, len(str(loaded.error))


def _read_pcap(path: str) -> int:
    with PcapReader(path) as reader:
        return sum(1 for _ in reader)


def _snapshot(directory: str) -> dict[str, tuple[int, bytes | str | None]]:
    """Every entry of ``directory``: its type bits and its contents (file), target (symlink) or None."""
    seen: dict[str, tuple[int, bytes | str | None]] = {}
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            seen[name] = (stat.S_IFMT(mode), os.readlink(path))
        elif stat.S_ISREG(mode):
            with open(path, "rb") as f:
                seen[name] = (stat.S_IFMT(mode), f.read(1 << 20))
        else:
            seen[name] = (stat.S_IFMT(mode), None)
    return seen


@given(
    kind=special_file_kinds,
    config=configs(),
    suffix=st.sampled_from([".toml", ".json"]),
    overwrite=st.booleans(),
    umask=st.sampled_from([0o000, 0o022, 0o077]),
)
def test_special_files(kind: str, config: VnetHashConfig, suffix: str, overwrite: bool, umask: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pytun-hash-special-") as tmp:
        saved = os.path.join(tmp, "saved" + suffix)
        dump_config(config, saved)
        with open(saved, "rb") as f:
            contents = f.read(1 << 20)
        path = special_file(kind, tmp, contents, suffix)
        if kind.startswith("/") and not os.path.lexists(path) and not kind.endswith("/new.toml"):
            return  # not on this system
        for reader in (load_config, _read_pcap):
            read = call(reader, path)
            if kind in ("regular", "symlink-to-regular") and reader is load_config:
                assert read.get() == config
            elif not read.ok:
                assert isinstance(read.error, ValidationError) and read.error.field in ("config", "pcap"), read.error
            else:
                raise AssertionError(f"{reader.__name__} accepted {kind} {path}")
        before = _snapshot(tmp)
        previous = os.umask(umask)
        try:
            written = call(dump_config, config, path, overwrite=overwrite)
        finally:
            os.umask(previous)
        after = _snapshot(tmp)
        if kind == "missing" or (kind == "regular" and overwrite):
            assert written.ok and stat.S_IMODE(os.lstat(path).st_mode) == 0o600, written.error
            assert load_config(path) == config
            assert set(after) == set(before) | {os.path.basename(path)}
        else:
            assert isinstance(written.error, ValidationError) and written.error.field == "save", written.error
            assert after == before, f"a refused write changed {tmp}"


REVISION_NAMES = ["rfc", "V7", " v12 ", "v3", "v1", "v13", "v03", "v٣", "v²"]


@given(text=st.one_of(st.text(max_size=40), st.sampled_from(REVISION_NAMES)))
def test_revision_names(text: str) -> None:
    parsed = call(Revision.parse, text)
    if parsed.ok:
        assert isinstance(parsed.get(), Revision)


@given(
    value=st.one_of(
        st.text(max_size=40),
        st.lists(st.one_of(st.text(max_size=8), st.integers(-1, 0x400), st.booleans(), st.none()), max_size=6),
        st.integers(-(2**40), 2**40),
        json_values,
    )
)
def test_hash_type_expressions(value: Any) -> None:
    parsed = call(parse_hash_types, value)
    if parsed.ok:
        assert 0 <= int(parsed.get()) <= 0x1FF
