"""Test configuration: float64 for the oracles, strict dtype promotion everywhere."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
