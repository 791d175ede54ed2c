"""The state of :func:`learning_rate_rates`: its fields, how it starts, how its α rings are
indexed, and how it is checked."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import _granularity as gr
from ._dtypes import at_least_float32, promote, real
from ._options import Config
from ._rules import PooledMoment

PyTree = Any


class LearningRateRatesState(NamedTuple):
    """State of :func:`learning_rate_rates`.

    The field names are a checkpoint format: they stay stable across releases.

    Attributes:
      count: the number of updates taken so far (int32). Past 2³¹ − 1 it wraps back by a
        multiple of every ring size, so the α rings keep turning and warm-ups stay done.
      etas: the adapted rates, a tuple of pytrees, ``etas[j]`` is η⁽ʲ⁾ for orders
        ``j = 0 … m−1``, shaped by that order's granularity: like the params
        (``"parameter"``), one scalar per leaf (``"tensor"``) or one scalar (``"global"``).
        Empty at order 0.
      alphas: the α cache, a tuple of rings; ``alphas[j − 1]`` holds the last ``L_j``
        values of α⁽ʲ⁻¹⁾ = ∂R_{j−1}/∂η⁽ʲ⁾, stacked on a leading axis of size ``L_j``
        (``j`` for the simultaneous schedule, 1 for cascade) and indexed by
        ``count mod L_j``.
      second_moments: for the normalised rules, the EMA of each order's squared rule
        signal, one pytree per order shaped like ``etas`` (at least float32); empty
        otherwise. With ``element_share`` each per-parameter leaf holds a
        :class:`PooledMoment` instead: the per-element EMA and the EMA of the leaf's summed
        signal squared.
      direction_state: the state of the direction transformation.
      prev_direction: the step the hypergradient of η⁽⁰⁾ looks back along, like the
        params: the last applied direction s_{n−1}·d_{n−1} (s the envelope), or its
        discounted trace u_n = s_{n−1}·d_{n−1} + γ·u_{n−1} with a horizon γ > 0. ``()`` at
        order 0. Where a direction overflowed (inf) it holds that value for one step, as the
        update did; the next hypergradient leaves such elements out.
    """

    count: jax.Array
    etas: tuple[PyTree, ...]
    alphas: tuple[PyTree, ...]
    second_moments: tuple[PyTree, ...]
    direction_state: optax.OptState
    prev_direction: PyTree


class Hypergradients(NamedTuple):
    """What one step computed besides the update (the library's debug hook).

    Attributes:
      hypergradients: the raw h⁽ʲ⁾ of this step for j = 0 … m−1, each shaped like η⁽ʲ⁾:
        the derivative of this step's loss with respect to η⁽ʲ⁾ (``docs/math.md``,
        "Exactness").
      alphas: α⁽ʲ⁾ = ∂R_j/∂η⁽ʲ⁺¹⁾ of this step's rule for j = 0 … m−1.
    """

    hypergradients: tuple[PyTree, ...]
    alphas: tuple[PyTree, ...]


def rate_dtype(config: Config, leaf) -> jnp.dtype:
    """Storage dtype of the rates and α of one parameter leaf.

    Rates stay real for complex parameters; half-precision parameters keep their rates in
    float32 unless ``state_dtype`` says otherwise (a rate of 1e-6 is subnormal in float16).
    """
    if config.state_dtype is not None:
        return config.state_dtype
    return at_least_float32(real(jnp.asarray(gr.unbox(leaf)).dtype))


def trace_dtype(config: Config, leaf) -> jnp.dtype:
    """Storage dtype of the previous direction: the parameter's, complex if it is."""
    dtype = jnp.asarray(gr.unbox(leaf)).dtype
    if config.state_dtype is None:
        return dtype
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return promote(config.state_dtype, jnp.complex64)
    return config.state_dtype


def init(config: Config, params) -> LearningRateRatesState:
    """The state before the first step: d₋₁ = 0 and every cached α = 0."""
    direction_state = config.direction.init(params) if config.direction else optax.EmptyState()
    count = jnp.zeros([], jnp.int32)
    if config.order == 0:
        return LearningRateRatesState(count, (), (), (), direction_state, ())
    for value in config.initial:
        _check_rate_shape(value, params, config)

    def dtype_of(leaf):
        return rate_dtype(config, leaf)

    etas = tuple(
        gr.init_like(params, config.granularities[j], config.initial[j], dtype_of)
        for j in range(config.order)
    )

    def ring_like(eta, size):
        # From zeros_like, so the ring keeps its rate's sharding on the trailing axes;
        # unboxed, since a box's annotations fit the rate's rank, not the ring's.
        eta = gr.unbox(eta)
        return jnp.broadcast_to(jnp.zeros_like(eta)[None], (size, *eta.shape))

    alphas = tuple(
        jax.tree.map(lambda e, size=size: ring_like(e, size), etas[j - 1], is_leaf=gr.is_boxed)
        for j, size in zip(range(1, config.order), config.ring_sizes, strict=True)
    )

    def moment_like(e, pooled: bool):
        elements = jnp.zeros_like(e, at_least_float32(e.dtype))
        if not pooled:
            return elements
        return PooledMoment(elements, jnp.zeros((), elements.dtype))

    second_moments = ()
    if config.normalized:
        second_moments = tuple(
            jax.tree.map(lambda e, j=j: moment_like(e, config.rules[j].pool is not None), eta)
            for j, eta in enumerate(etas)
        )
    prev_direction = jax.tree.map(lambda p: jnp.zeros_like(p, dtype=trace_dtype(config, p)), params)
    return LearningRateRatesState(
        count, etas, alphas, second_moments, direction_state, prev_direction
    )


def ring_read(ring, count, size: int):
    """The slot ``count mod size`` of an α ring."""
    if size == 1:
        return ring[0]
    return jax.lax.dynamic_index_in_dim(ring, count % size, axis=0, keepdims=False)


def ring_write(ring, value, count, size: int):
    """The ring with ``value`` in its slot ``count mod size``."""
    if size == 1:
        return value[None]
    return jax.lax.dynamic_update_index_in_dim(ring, value, count % size, axis=0)


def _check_rate_shape(value, params, config: Config) -> None:
    shape = jnp.shape(value)
    if not shape:
        return
    if set(config.granularities) != {"parameter"}:
        raise ValueError(
            f"An initial rate of shape {shape} needs granularity='parameter' at every order it "
            "sets; per-tensor and global rates are scalars. Pass a scalar."
        )
    for leaf in jax.tree.leaves(params):
        leaf_shape = jnp.shape(leaf)
        if jnp.broadcast_shapes(shape, leaf_shape) != leaf_shape:
            raise ValueError(
                f"An initial rate of shape {shape} would change a parameter of shape "
                f"{leaf_shape} (rates broadcast onto every leaf). Pass a scalar, or an array "
                "that broadcasts to every parameter's shape."
            )


def check(config: Config, state, updates) -> None:
    """Refuse a state made by another configuration (e.g. a checkpoint restored with other
    options), naming the option that differs. Shapes are static: free under ``jit``."""
    if not isinstance(state, LearningRateRatesState):
        raise TypeError(
            "state must be the LearningRateRatesState made by this transformation's init, got "
            f"{type(state).__name__}."
        )
    where = "The state was made with other options: "
    if len(state.etas) != config.order:
        raise ValueError(
            f"{where}it holds {len(state.etas)} adapted orders but len(rates) gives "
            f"{config.order}. Build the transformation with the rates it was saved with."
        )
    if config.order == 0:
        return
    if _shapes(state.prev_direction) != _shapes(updates):
        raise ValueError(
            f"{where}its previous direction has the leaf shapes {_shapes(state.prev_direction)}"
            f" but the updates have {_shapes(updates)}. Init the state from these parameters."
        )
    sizes = tuple({jnp.shape(ring)[0] for ring in jax.tree.leaves(rings)} for rings in state.alphas)
    expected = config.ring_sizes
    if len(sizes) != len(expected) or any(s and s != {e} for s, e in zip(sizes, expected)):
        raise ValueError(
            f"{where}its α rings have sizes {[sorted(s) for s in sizes]} where "
            f"schedule={config.schedule!r} needs {list(expected)}. Use the schedule it was "
            "saved with."
        )
    if bool(state.second_moments) != config.normalized:
        raise ValueError(
            f"{where}it {'has' if state.second_moments else 'has no'} normaliser moments, so "
            f"it was made with a rule {'with' if state.second_moments else 'without'} one; "
            f"rule={config.rules[0].rule!r} is not. Use the rule it was saved with."
        )
    for j, moments in enumerate(state.second_moments):
        pooled, saved = config.rules[j].pool is not None, _pooled(moments)
        if jax.tree.leaves(moments) and saved != pooled:
            raise ValueError(
                f"{where}its order-{j} moments are {'' if saved else 'not '}pooled, "
                f"and element_share={config.rules[j].pool!r} says they "
                f"{'are' if pooled else 'are not'}. Use the element_share it was saved with."
            )
    for j, (eta, granularity) in enumerate(zip(state.etas, config.granularities, strict=True)):
        if not _fits(eta, granularity, updates):
            raise ValueError(
                f"{where}η⁽{j}⁾ is not shaped for granularity {granularity!r} (order {j}). "
                "Use the granularity it was saved with."
            )


def _pooled(moments) -> bool:
    nodes = jax.tree.leaves(moments, is_leaf=lambda x: isinstance(x, PooledMoment))
    return bool(nodes) and all(isinstance(x, PooledMoment) for x in nodes)


def _shapes(tree) -> list[tuple[int, ...]]:
    # Boxes (e.g. flax's nnx.Variable) count as the array they hold.
    return [jnp.shape(gr.unbox(x)) for x in jax.tree.leaves(tree, is_leaf=gr.is_boxed)]


def _fits(eta, granularity: str, updates) -> bool:
    shapes = _shapes(eta)
    bare = jax.tree.structure(eta).num_nodes == 1  # a global rate is one array, not a tree
    if granularity == "global":
        return bare and shapes == [()]
    if bare and jax.tree.structure(updates).num_nodes != 1:
        return False
    if granularity == "tensor":
        return shapes == [()] * len(_shapes(updates))
    return shapes == _shapes(updates)
