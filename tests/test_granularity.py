"""Granularities: property tests on random pytrees."""

from __future__ import annotations

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import lrr_optax

shapes = st.lists(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4), max_size=4)


def _tree(shape_list, seed):
    rng = np.random.default_rng(seed)
    return {
        f"leaf{i}": jnp.asarray(rng.normal(size=shape), jnp.float64)
        for i, shape in enumerate(shape_list)
    }


@settings(max_examples=12, deadline=None)
@given(shape_list=shapes, seed=st.integers(0, 2**16))
def test_coarse_hypergradients_are_sums_of_fine_ones(shape_list, seed):
    """h⁽⁰⁾ of a tensor rate is the sum of the per-parameter h⁽⁰⁾ over its leaf; global sums all."""
    params = _tree(shape_list, seed)
    grads = [_tree(shape_list, seed + k) for k in (1, 2)]
    hypergradients = {}
    for granularity in ("parameter", "tensor", "global"):
        tx = lrr_optax.learning_rate_rates(0.1, (1e-2,), granularity=granularity)
        step = lrr_optax.update_with_hypergradients(tx)
        state = tx.init(params)
        _, state, _ = step(grads[0], state, params)
        _, _, aux = step(grads[1], state, params)
        hypergradients[granularity] = aux.hypergradients[0]
        # Each rate has the shape its granularity prescribes.
        eta = state.etas[0]
        if granularity == "parameter":
            jax.tree.map(lambda e, p: np.testing.assert_equal(e.shape, p.shape), eta, params)
        elif granularity == "tensor":
            jax.tree.map(lambda e: np.testing.assert_equal(e.shape, ()), eta)
        else:
            assert eta.shape == ()
    per_parameter = hypergradients["parameter"]
    for name in params:
        np.testing.assert_allclose(
            hypergradients["tensor"][name], np.sum(per_parameter[name]), rtol=1e-12, atol=1e-12
        )
    total = sum(float(np.sum(x)) for x in per_parameter.values())
    np.testing.assert_allclose(hypergradients["global"], total, rtol=1e-12, atol=1e-12)


@settings(max_examples=8, deadline=None)
@given(
    shape_list=shapes,
    seed=st.integers(0, 2**16),
    mix=st.sampled_from(
        [
            ("parameter", "parameter", "parameter"),
            ("parameter", "tensor", "global"),
            ("parameter", "global", "global"),
            ("tensor", "tensor", "global"),
            ("global", "global", "global"),
        ]
    ),
    schedule=st.sampled_from(["simultaneous", "cascade"]),
)
def test_any_tree_and_mix_gives_finite_updates_of_the_params_shape(shape_list, seed, mix, schedule):
    params = _tree(shape_list, seed)
    tx = lrr_optax.learning_rate_rates(0.1, (1e-2, 1e-3, 1e-4), granularity=mix, schedule=schedule)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for k in range(4):
        updates, state = update(_tree(shape_list, seed + k), state, params)
    jax.tree.map(lambda u, p: np.testing.assert_equal(u.shape, p.shape), updates, params)
    for leaf in jax.tree.leaves((updates, state)):
        assert np.all(np.isfinite(leaf))
