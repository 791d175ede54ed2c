"""``python -m benchmarks.speed`` (see ``benchmarks/speed/cli.py``)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
