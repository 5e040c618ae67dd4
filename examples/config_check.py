"""Load a hashing config from TOML, validate it, and print every error with its field.

``.venv/bin/python examples/config_check.py FILE.toml [...]`` (from the repository root, after
``make setup``) checks each file; without arguments it
checks the two bundled ones, ``configs/rss.toml`` (valid) and ``configs/broken.toml`` (every
field wrong in its own way). A valid file prints the config it describes and what the software
model makes of one flow under it.

Exit status: 0 when every file is valid, 2 when any has errors. No privileges needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pytun_hash import ValidationError, VnetHashConfig
from pytun_hash.configfile import config_errors, config_from_mapping, read_config_file
from pytun_hash.model import Framing, classify, queue_for_flow
from pytun_hash.traffic import Flow

HERE = Path(__file__).resolve().parent
BUNDLED = (HERE / "configs" / "rss.toml", HERE / "configs" / "broken.toml")


def check(path: Path) -> VnetHashConfig | list[ValidationError]:
    """The config in ``path``, or every error found in it."""
    try:
        data = read_config_file(str(path))
    except ValidationError as exc:  # unreadable, too large, not TOML
        return [exc]
    errors = config_errors(data)
    return errors or config_from_mapping(data)


def describe(config: VnetHashConfig) -> list[str]:
    """A few lines on what ``config`` does, with one flow as an example."""
    flow = Flow(6, "66.9.149.187", "161.142.100.80", 2794, 1766)
    result = classify(flow.ip_packet(), config.types, config.key, l2=Framing.IP)
    queues = config.max_queue + 1
    lines = [
        f"  rss={config.rss} report={config.report} types={config.types!r}",
        f"  indirection table: {len(config.indirection_table)} entries over queues 0..{config.max_queue}",
        f"  key: {config.key.hex()}",
    ]
    if config.rss:
        queue = queue_for_flow(config, result, queues)
        lines.append(
            f"  {flow}: hash {result.hash_value:#010x} {result.report.name}, queue {queue} of {queues}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Check the files named in ``argv`` (default: the bundled ones)."""
    args = sys.argv[1:] if argv is None else argv
    paths = [Path(a) for a in args] or list(BUNDLED)
    status = 0
    for path in paths:
        outcome = check(path)
        if isinstance(outcome, VnetHashConfig):
            print(f"{path}: valid")
            print("\n".join(describe(outcome)))
            continue
        status = 2
        print(f"{path}: {len(outcome)} error(s)")
        for error in outcome:
            print(f"  {error.field or '(file)'}: {error.rule}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
