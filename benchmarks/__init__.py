"""lrr_optax's benchmarks: ``python -m benchmarks`` (quality) and ``python -m benchmarks.speed``."""
