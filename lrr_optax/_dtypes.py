"""Dtype rules of the state, written once so that strict dtype promotion holds everywhere."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def promote(*dtypes) -> jnp.dtype:
    """The dtype that holds every one of ``dtypes``, whatever promotion mode the user runs."""
    with jax.numpy_dtype_promotion("standard"):
        return jnp.result_type(*dtypes)


def at_least_float32(dtype) -> jnp.dtype:
    """``dtype`` widened to float32 (complex64) when narrower: squares of products of
    gradients, and rates of 1e-6, do not survive half precision."""
    return promote(dtype, jnp.float32)


def real(dtype) -> jnp.dtype:
    """The real dtype of ``dtype`` (float32 for complex64)."""
    return jnp.finfo(dtype).dtype
