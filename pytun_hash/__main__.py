"""``python -m pytun_hash``: the ``pytun-hash`` command line."""

from __future__ import annotations

from pytun_hash.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
