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
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pytun_hash._files import PendingFile, open_regular_file, stage_file
from pytun_hash.config import MAX_KEY_SIZE, MICROSOFT_RSS_KEY, VnetHashConfig, generate_key, parse_hash_types
from pytun_hash.errors import ValidationError

__all__ = [
    "KNOWN_KEYS",
    "MAX_CONFIG_BYTES",
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

#: Keys that may be given by name. Both are public: anyone can craft flows that collide under
#: them, so use them for tests and interoperability only.
KNOWN_KEYS: Mapping[str, bytes] = {
    "microsoft": MICROSOFT_RSS_KEY,
    # A 16-bit pattern repeated: hash(a, b) == hash(b, a) for every flow (both directions on one queue).
    "symmetric": bytes.fromhex("6d5a") * (MAX_KEY_SIZE // 2),
}

_FIELDS = tuple(f.name for f in attrs.fields(VnetHashConfig))


def parse_key(text: str, field: str = "key") -> bytes:
    """A key given as hex (``6d5a56...``, colons and spaces allowed), a name in :data:`KNOWN_KEYS`,
    or ``random`` (40 fresh bytes from ``os.urandom``).

    Raises:
        ValidationError: naming ``field``, for bad hex or more than 40 bytes.
    """
    name = text.strip().lower()
    if name in KNOWN_KEYS:
        return KNOWN_KEYS[name]
    if name == "random":
        return generate_key()
    try:
        raw = bytes.fromhex(name.replace(":", "").replace(" ", "").removeprefix("0x"))
    except ValueError:
        known = ", ".join([*KNOWN_KEYS, "random"])
        raise ValidationError(field, f"expected hexadecimal bytes or one of {known}, got {text!r}") from None
    if not raw or len(raw) > MAX_KEY_SIZE:
        raise ValidationError(field, f"a key has 1..{MAX_KEY_SIZE} bytes, got {len(raw)}")
    return raw


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
    try:
        data: object = json.loads(text) if is_json else tomllib.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ValidationError("config", f"{path}: invalid JSON at {where}: {exc.msg}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError("config", f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ValidationError("config", f"{path}: nested too deeply to be a config") from None
    if section is not None:
        for part in section.split("."):
            if not isinstance(data, dict) or part not in data:
                raise ValidationError("config", f"{path} has no table named {section!r}")
            data = data[part]
    if not isinstance(data, dict):
        raise ValidationError("config", f"{path} must hold a table (TOML) or an object (JSON) of config fields")
    return data


def _resolve_key(data: dict[str, Any]) -> None:
    key = data.get("key")
    if isinstance(key, str) and key.strip().lower() in KNOWN_KEYS:
        data["key"] = KNOWN_KEYS[key.strip().lower()].hex()


def _entry_errors(name: str, values: Sequence[object], probe: Any) -> list[ValidationError]:
    errors = []
    for i, value in enumerate(values):
        try:
            probe(value)
        except ValidationError as exc:
            errors.append(ValidationError(f"{name}[{i}]", exc.rule))
    return errors


def _field_errors(name: str, value: object) -> list[ValidationError]:
    if name == "types" and isinstance(value, list):
        return _entry_errors("types", value, lambda v: parse_hash_types([v]))
    if name == "indirection_table" and isinstance(value, list):
        errors = _entry_errors("indirection_table", value, lambda v: VnetHashConfig(indirection_table=(v,)))
        try:
            VnetHashConfig(indirection_table=(0,) * len(value))
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

    Unknown fields, each field's own rules (every bad table entry and type name separately),
    and, when those pass, the rules that tie fields together. Empty when the mapping is valid.
    """
    if not isinstance(data, Mapping):
        return [ValidationError(None, f"expected a table of config fields, got {type(data).__name__}")]
    work = dict(data)
    _resolve_key(work)
    errors: list[ValidationError] = []
    for name in work:
        if name not in _FIELDS:
            errors.append(ValidationError(str(name), f"unknown field; known fields: {', '.join(_FIELDS)}"))
    for name in _FIELDS:
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
        ValidationError: listing every problem (``field`` is the first problem's field).
    """
    errors = config_errors(data)
    if errors:
        if len(errors) == 1:
            raise errors[0]
        listed = "; ".join(str(e) for e in errors)
        raise ValidationError(errors[0].field, f"{len(errors)} problems: {listed}")
    assert isinstance(data, Mapping)
    work = dict(data)
    _resolve_key(work)
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
