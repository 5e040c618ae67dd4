"""``python -m pytun_hash``: the ``pytun-hash`` command line."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    try:
        from pytun_hash.cli import main

        code = main()
    except KeyboardInterrupt:
        # Ctrl-C before main() had its handlers in (while the command line was still importing):
        # the documented status and line, not a traceback.
        sys.stderr.write("pytun-hash: error: interrupted\n")
        code = 130
    raise SystemExit(code)
