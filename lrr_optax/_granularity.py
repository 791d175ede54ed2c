"""Granularities of a rate: one value per element, per leaf, or for the whole pytree.

A rate at granularity ``"parameter"`` is a pytree shaped like the parameters; at
``"tensor"`` it is a pytree of scalars with the parameters' structure; at ``"global"``
it is one scalar array. Going up the orders a granularity may only get coarser, so
the two operations needed are *reduce* (sum a finer tree onto a coarser one, the
``reduce_j`` of ``docs/math.md``) and *expand* (broadcast a coarser rate back onto the
leaves of a finer tree so that elementwise rules can combine them).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

Granularity = Literal["parameter", "tensor", "global"]

GRANULARITIES: tuple[Granularity, ...] = ("parameter", "tensor", "global")
# Coarseness rank: a rate may sit above one of equal or lower rank only.
_RANK = {name: rank for rank, name in enumerate(GRANULARITIES)}


def is_coarser_or_equal(upper: Granularity, lower: Granularity) -> bool:
    """Whether a rate at ``upper`` granularity may adapt one at ``lower``."""
    return _RANK[upper] >= _RANK[lower]


def is_boxed(x) -> bool:
    """Whether ``x`` wraps an array in metadata made for the parameter's shape.

    Such boxes (e.g. flax's ``nnx.Variable``) implement ``__jax_array__`` without being
    arrays. State that is not shaped like its parameter is stored unboxed, or the box's
    sharding annotation would be applied to an array of another rank.
    """
    return hasattr(x, "__jax_array__") and not isinstance(x, jax.Array)


def unbox(x):
    """The array inside ``x`` when it is a box (see :func:`is_boxed`), else ``x``."""
    return jnp.asarray(x) if is_boxed(x) else x


def init_like(params, granularity: Granularity, value, dtype_of):
    """A rate of the given granularity filled with ``value``.

    ``dtype_of(leaf)`` gives the storage dtype for a parameter leaf; a global rate takes
    the dtype of the first leaf (float32 for an empty tree).
    """
    # ``full_like`` gives each rate its parameter's sharding; ``jnp.array`` copies, so no
    # two state leaves (nor the caller's ``value``) share a buffer, which donation forbids.
    if granularity == "parameter":
        return jax.tree.map(lambda p: jnp.full_like(p, value, dtype_of(p)), params)
    if granularity == "tensor":
        return jax.tree.map(
            lambda p: jnp.array(value, dtype_of(unbox(p))), params, is_leaf=is_boxed
        )
    leaves = jax.tree.leaves(params)
    dtype = dtype_of(leaves[0]) if leaves else jnp.float32
    return jnp.array(value, dtype)


def reduce(tree, source: Granularity, target: Granularity, dtype):
    """Sum ``tree`` (shaped by ``source``) onto the entries of a ``target`` rate."""
    if source == target:
        return tree
    if target == "tensor":  # source is "parameter"
        return jax.tree.map(jnp.sum, tree)
    # target "global": every leaf folds into one scalar of the global rate's dtype.
    total = jnp.zeros((), dtype)
    for leaf in jax.tree.leaves(tree):
        total = total + jnp.sum(leaf).astype(dtype)
    return total


def expand(rate, source: Granularity, target: Granularity, like):
    """Broadcastable view of a ``source`` rate on the entries of a ``target`` tree ``like``.

    Tensor rates are scalars per leaf and broadcast by themselves; a global rate is one
    scalar that every leaf of a finer tree shares.
    """
    if source == "global" and target != "global":
        return jax.tree.map(lambda _: rate, like)
    return rate
