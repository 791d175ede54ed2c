"""lrr_optax's benchmark suite: ``python -m benchmarks``."""
