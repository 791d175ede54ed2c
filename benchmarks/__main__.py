"""Quick benchmark: an MLP on scikit-learn's digits, lrr_optax against optax.adam.

Run ``python -m benchmarks`` from the repository root. It trains the same MLP with
``lrr_optax`` (its defaults) and with ``optax.adam`` at initial learning rates from 1e-5
to 1, prints a table of final full-batch train loss and test accuracy, and writes
``benchmarks/results/digits_quick.png`` and ``digits_quick.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=2)
    args = parser.parse_args(argv)

    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    import jax

    jax.config.update("jax_compilation_cache_dir", str(Path(__file__).parent / ".cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    from . import _digits

    lrs = [10.0**e for e in range(-5, 1)]
    methods = _digits.METHODS
    start = time.time()
    table = _digits.sweep(methods, lrs, seeds=args.seeds, steps=args.steps)
    elapsed = time.time() - start
    RESULTS.mkdir(exist_ok=True)
    header = (
        f"Command: `python -m benchmarks --steps {args.steps} --seeds {args.seeds}`  \n"
        f"Date: {datetime.date.today()}  \n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, jax {jax.__version__}  \n"
        f"Wall time: {elapsed:.0f} s\n\n"
    )
    markdown = header + _digits.markdown_table(table, lrs)
    (RESULTS / "digits_quick.md").write_text(markdown)
    print(markdown)
    _digits.plot(table, lrs, RESULTS / "digits_quick.png")
    print(f"wrote {RESULTS / 'digits_quick.md'} and {RESULTS / 'digits_quick.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
