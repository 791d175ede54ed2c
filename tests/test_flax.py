"""Flax: nnx.Optimizer (plain and with a model sharded by nnx.with_partitioning) and
flax.training.train_state.TrainState."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen, nnx
from flax.training import train_state

import lrr_optax

from . import _sharded_run as run


def _mlp_loss(params, x, y):
    """The loss of ``run.flax_model`` written out by hand, on a pure params dict."""
    hidden = jnp.tanh(x @ params["l1"]["kernel"] + params["l1"]["bias"])
    return jnp.mean(jnp.square(hidden @ params["l2"]["kernel"] + params["l2"]["bias"] - y))


def test_nnx_optimizer_trains_like_the_optax_loop():
    model, optimizer, _ = run.flax_train(sharded=False, steps=6)

    # The same training as a plain optax loop on the initial params.
    tx = run.flax_tx()
    params = nnx.to_pure_dict(nnx.state(run.flax_model(nnx.Rngs(0), sharded=False), nnx.Param))
    state = tx.init(params)
    update = jax.jit(tx.update)
    losses = []
    for n in range(6):
        loss, grads = jax.value_and_grad(_mlp_loss)(params, *run.flax_batch(n))
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        losses.append(float(loss))
    assert losses[-1] < losses[0]

    trained = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    # Equal up to float32 rounding (the two programs fuse differently).
    close = partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7)
    jax.tree.map(close, trained, params)
    # The rates read straight from the optimizer's state.
    etas = nnx.to_pure_dict(nnx.state(lrr_optax.learning_rates(optimizer.opt_state)))
    assert len(etas) == len(state.etas) == 3
    for j, eta in enumerate(state.etas):
        jax.tree.map(close, etas[j], eta)
    assert int(optimizer.step[...]) == 6


@pytest.mark.xdist_group("sharded_runs")  # with tests/test_sharding.py: one subprocess
@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
def test_nnx_optimizer_with_a_partitioned_model(sharded_runs, axis_type):
    # On 8 devices, a model whose kernels and biases are sharded by nnx.with_partitioning:
    # nnx.Optimizer builds the state with each rate, previous direction and Adam moment
    # sharded like its parameter and each α ring with an extra unsharded slot axis, keeps
    # them so through nnx.jit steps, and trains as one device does.
    out, reports = sharded_runs
    for when, mismatches in reports["flax"][axis_type].items():
        assert mismatches == [], f"{when}: {mismatches}"

    model, optimizer, _ = run.flax_train(sharded=False)
    reference = run.flat_leaves(
        nnx.to_pure_dict(nnx.state(model, nnx.Param)), nnx.to_pure_dict(nnx.state(optimizer))
    )
    sharded = dict(np.load(out / f"flax_{axis_type}.npz"))
    assert sharded.keys() == reference.keys()
    for key, expected in reference.items():
        scale = float(np.max(np.abs(expected), initial=0.0))
        np.testing.assert_allclose(
            sharded[key], expected, rtol=1e-6, atol=1e-6 * scale, err_msg=key
        )


class _LinenMLP(linen.Module):
    @linen.compact
    def __call__(self, x):
        return linen.Dense(2)(jnp.tanh(linen.Dense(8)(x)))


def test_train_state_apply_gradients():
    model = _LinenMLP()
    x0, _ = run.flax_batch(0)
    params = model.init(jax.random.key(0), x0)["params"]
    tx = run.flax_tx()

    def loss(params, x, y):
        return jnp.mean(jnp.square(model.apply({"params": params}, x) - y))

    @partial(jax.jit, donate_argnums=0)
    def step(state, x, y):
        grads = jax.grad(loss)(state.params, x, y)
        return state.apply_gradients(grads=grads)

    # The state is donated: the reference keeps its own copy of the initial params.
    expected = jax.tree.map(jnp.copy, params)
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    expected_state = tx.init(expected)
    update, grad = jax.jit(tx.update), jax.jit(jax.grad(loss))
    for n in range(6):
        state = step(state, *run.flax_batch(n))
        grads = grad(expected, *run.flax_batch(n))
        updates, expected_state = update(grads, expected_state, expected)
        expected = optax.apply_updates(expected, updates)

    assert int(state.step) == 6
    # Equal up to float32 rounding (the two programs fuse differently).
    close = partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7)
    jax.tree.map(close, state.params, expected)
    jax.tree.map(
        close,
        lrr_optax.learning_rates(state.opt_state),
        expected_state.etas,
    )
    initial = model.init(jax.random.key(0), x0)["params"]
    assert loss(state.params, *run.flax_batch(0)) < loss(initial, *run.flax_batch(0))
