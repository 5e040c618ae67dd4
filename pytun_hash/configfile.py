"""Hashing configurations from TOML or JSON files and key names, with every error named.

A config file holds the fields of :meth:`VnetHashConfig.to_mapping
<pytun_hash.config.VnetHashConfig.to_mapping>` at its top level (or in a table named by
``section``, dotted for nested tables)::

    rss = true
    report = true
    types = ["TCPV4", "UDPV4", "IPV4", "TCPV6", "UDPV6", "IPV6"]   # or "all", or 63
    indirection_table = [0, 1, 2, 3]
    key = "6d5a56da255b0ec2..."        # 40 bytes of hex, or a name: "microsoft", "symmetric"
    unclassified_queue = 0

Files are read with a size limit (:data:`MAX_CONFIG_BYTES`); TOML through :mod:`tomllib`,
JSON through :mod:`json` (chosen by the extension, else by the first character).
:func:`config_errors` checks every field on its own, so a file with several mistakes gets all
of them reported, each with its field.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pytun_hash._files import PendingFile, open_regular_file, stage_file
from pytun_hash.config import (
    MAX_INDIRECTION_TABLE_LENGTH,
    VnetHashConfig,
    check_table_length,
    parse_hash_types,
)
from pytun_hash.errors import MAX_ECHO_CHARS, ValidationError, clip, shorten
from pytun_hash.keys import KNOWN_KEYS, known_key_name, parse_key

__all__ = [
    "known_key_name",
    "KNOWN_KEYS",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_LISTED_PROBLEMS",
    "config_errors",
    "config_from_mapping",
    "dump_config",
    "load_config",
    "parse_key",
    "read_config_file",
    "stage_config",
]

#: Config files larger than this (bytes) are refused before parsing.
MAX_CONFIG_BYTES = 1 << 20
#: Levels of nesting allowed in the table of config fields (the table itself is level 1, a list
#: value level 2); a deeper table is refused before any field is judged.
MAX_CONFIG_DEPTH = 8
#: Problems that :func:`config_from_mapping` lists in its message (the rest are counted), and
#: entries of one list field (or unknown fields) that :func:`config_errors` reports one by one.
MAX_LISTED_PROBLEMS = 10

_FIELDS = tuple(f.name for f in attrs.fields(VnetHashConfig))


def read_config_file(path: str, *, section: str | None = None) -> dict[str, Any]:
    """Read a TOML or JSON config file into a mapping (no validation of the fields yet).

    Args:
        path: the file; ``.toml`` is TOML, ``.json`` JSON, anything else is sniffed (``{`` = JSON).
        section: read the fields from this table/object instead of the top level; dots name
            nested tables (``"vm.net.hash"``).

    Raises:
        ValidationError: (field ``config``) when the file cannot be read, is larger than
            :data:`MAX_CONFIG_BYTES`, does not parse, or lacks ``section``.
    """
    with open_regular_file(path, "config") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_CONFIG_BYTES:
            raise ValidationError("config", f"{path} is {size} bytes; config files are limited to 1 MiB")
        try:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ValidationError("config", f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValidationError("config", f"{path} is larger than 1 MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError("config", f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    is_json = path.endswith(".json") or (not path.endswith(".toml") and text.lstrip().startswith("{"))
    import tomllib  # here: a command given no config file (predict --pcap ...) does not load the parser

    try:
        data: object = json.loads(text) if is_json else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ValidationError("config", f"{path}: invalid JSON at {where}: {exc.msg}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError("config", f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ValidationError("config", f"{path}: nested too deeply to be a config") from None
    except ValueError as exc:
        # Both parsers convert decimal integers with int(), which refuses more digits than
        # sys.get_int_max_str_digits() with a plain ValueError (no position is known).
        if "integer string conversion" in str(exc):
            limit = sys.get_int_max_str_digits()
            raise ValidationError("config", f"{path}: a number has more than {limit} digits") from None
        raise ValidationError("config", f"{path}: cannot be parsed: {clip(str(exc), 200)}") from None
    if section is not None:
        for part in section.split("."):
            if not isinstance(data, dict) or part not in data:
                raise ValidationError("config", f"{path} has no table named {shorten(section)}")
            data = data[part]
    if not isinstance(data, dict):
        raise ValidationError("config", f"{path} must hold a table (TOML) or an object (JSON) of config fields")
    if _deeper_than(data, MAX_CONFIG_DEPTH):
        raise ValidationError("config", f"{path}: the config table is nested more than {MAX_CONFIG_DEPTH} levels deep")
    return data


def _deeper_than(data: object, limit: int) -> bool:
    """Whether lists and tables in ``data`` nest more than ``limit`` levels (iteratively: no recursion)."""
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _name(key: object) -> str:
    """A field name as a message shows it: text as it is (clipped), anything else as a short repr."""
    return clip(key, MAX_ECHO_CHARS) if isinstance(key, str) else shorten(key)


def _key_errors(data: dict[Any, Any]) -> list[ValidationError]:
    """Parse a key given as text with :func:`parse_key` (as ``--key`` is), in place; its error, if any.

    Bytes (from Python callers) take the same path as their hex, so an empty key is refused however it comes.
    """
    key = data.get("key")
    if isinstance(key, (bytes, bytearray, memoryview)):
        key = bytes(key).hex()
    if not isinstance(key, str):
        return []
    try:
        data["key"] = parse_key(key, "key").hex()
    except ValidationError as exc:
        # Judged here, so the field checks must not judge it again.
        del data["key"]
        return [exc]
    return []


def _entry_errors(name: str, values: Sequence[object], probe: Any, *, limit: int) -> list[ValidationError]:
    """The errors of the first ``limit`` entries of ``values``; probing stops after
    :data:`MAX_LISTED_PROBLEMS` of them, so a huge list of bad entries costs no more than a short one."""
    errors: list[ValidationError] = []
    for i, value in enumerate(values[:limit]):
        try:
            probe(value)
        except ValidationError as exc:
            if len(errors) == MAX_LISTED_PROBLEMS:
                errors.append(ValidationError(name, f"{name}[{i}] is invalid too; later entries were not checked"))
                break
            errors.append(ValidationError(f"{name}[{i}]", exc.rule))
    return errors


def _field_errors(name: str, value: object) -> list[ValidationError]:
    if name == "types" and isinstance(value, list):
        return _entry_errors("types", value, lambda v: parse_hash_types([v]), limit=len(value))
    if name == "indirection_table" and isinstance(value, list):
        # Only entries that a valid table can have are probed: a list of a million is judged by its length.
        errors = _entry_errors(
            "indirection_table",
            value,
            lambda v: VnetHashConfig(indirection_table=(v,)),
            limit=MAX_INDIRECTION_TABLE_LENGTH,
        )
        try:
            check_table_length(len(value))
        except ValidationError as exc:
            errors.append(exc)
        return errors
    # Alone, with a type set, so no rule that ties fields together fires.
    base: dict[str, Any] = {} if name == "types" else {"types": 1}
    try:
        VnetHashConfig.from_mapping({**base, name: value})
    except ValidationError as exc:
        return [exc]
    return []


def config_errors(data: object) -> list[ValidationError]:
    """Every problem of a config mapping, each as a :class:`ValidationError` naming its field.

    Unknown fields, each field's own rules (every bad table entry and type name separately, up to
    :data:`MAX_LISTED_PROBLEMS` a field, then one error saying that more were not checked), and,
    when those pass, the rules that tie fields together. A key given as text is read by
    :func:`parse_key`, as ``--key`` is. Empty when the mapping is valid.
    """
    if not isinstance(data, Mapping):
        return [ValidationError(None, f"expected a table of config fields, got {type(data).__name__}")]
    work = dict(data)
    key_errors = _key_errors(work)
    errors: list[ValidationError] = []
    unknown = [name for name in work if name not in _FIELDS]
    for name in unknown[:MAX_LISTED_PROBLEMS]:
        meant = name.replace("-", "_") if isinstance(name, str) else None
        if meant in _FIELDS:
            # --unclassified-queue on the command line is unclassified_queue in a file.
            errors.append(
                ValidationError(
                    _name(name), "unknown field: config fields are written with underscores", hint=f"write {meant}"
                )
            )
            continue
        errors.append(ValidationError(_name(name), f"unknown field; known fields: {', '.join(_FIELDS)}"))
    if len(unknown) > MAX_LISTED_PROBLEMS:
        errors.append(ValidationError(None, f"{len(unknown) - MAX_LISTED_PROBLEMS} more unknown fields"))
    for name in _FIELDS:
        if name == "key":
            errors.extend(key_errors)
        if name in work:
            errors.extend(_field_errors(name, work[name]))
    if not errors:
        try:
            VnetHashConfig.from_mapping(work)
        except ValidationError as exc:
            errors.append(exc)
    return errors


def config_from_mapping(data: object) -> VnetHashConfig:
    """Validate ``data`` with :func:`config_errors` and build the config.

    Raises:
        ValidationError: listing the problems (``field`` is the first problem's field); past
            :data:`MAX_LISTED_PROBLEMS` the rest are only counted, so the message stays short.
    """
    errors = config_errors(data)
    if errors:
        if len(errors) == 1:
            raise errors[0]
        listed = "; ".join(str(e) for e in errors[:MAX_LISTED_PROBLEMS])
        if len(errors) > MAX_LISTED_PROBLEMS:
            listed += f"; and {len(errors) - MAX_LISTED_PROBLEMS} more"
        raise ValidationError(errors[0].field, f"{len(errors)} problems: {listed}", hint=errors[0].hint)
    assert isinstance(data, Mapping)
    work = dict(data)
    _key_errors(work)
    return VnetHashConfig.from_mapping(work)


def load_config(path: str, *, section: str | None = None) -> VnetHashConfig:
    """Read and validate a config file (see the module documentation).

    Raises:
        ValidationError: for an unreadable or malformed file, or an invalid config (every problem listed).
    """
    return config_from_mapping(read_config_file(path, section=section))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _config_text(config: VnetHashConfig, path: str) -> str:
    mapping = config.to_mapping()
    if path.endswith(".toml"):
        return "".join(f"{k} = {_toml_value(v)}\n" for k, v in mapping.items())
    return json.dumps(mapping, indent=2) + "\n"


def stage_config(config: VnetHashConfig, path: str, *, overwrite: bool = False) -> PendingFile:
    """Validate ``path`` and write ``config`` beside it (as :func:`dump_config` would); visible at
    ``path`` only after :meth:`~pytun_hash._files.PendingFile.commit`.

    For callers that must know the file can be written before they act on the config (``apply
    --save``): stage, apply, then commit, or discard when applying failed.

    Args:
        config: the configuration (with its key: the file is created mode 0600).
        path: the target; ``.toml`` is written as TOML, anything else as JSON.
        overwrite: replace an existing regular file (never a symlink or a non-regular file).

    Raises:
        ValidationError: (field ``save``) for a target that is a symlink, not a regular file, or
            exists without ``overwrite``; a missing or unwritable directory; I/O errors.
    """
    return stage_file(path, _config_text(config, path).encode("utf-8"), "save", overwrite=overwrite)


def dump_config(config: VnetHashConfig, path: str, *, overwrite: bool = False) -> None:
    """Write ``config`` to ``path`` as TOML (``.toml``) or JSON (otherwise), readable by :func:`load_config`.

    The file is written atomically (a reader sees no file, the old one or the whole new one),
    mode 0600 whatever the umask (it holds the key), never through a symlink or onto a FIFO,
    device or directory, and an existing file is replaced only with ``overwrite``.

    Raises:
        ValidationError: (field ``save``) when the file cannot or may not be written (see :func:`stage_config`).
    """
    with stage_config(config, path, overwrite=overwrite) as pending:
        pending.commit()
