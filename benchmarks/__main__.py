"""``python -m benchmarks``: the quality suite (see ``benchmarks/quality/cli.py``)."""

from .quality.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
