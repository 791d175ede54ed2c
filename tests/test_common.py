"""One battery for every exported constructor, in the manner of optax's contrib tests.

Each of ``learning_rate_rates``, ``lrr_sgd``, ``lrr_sgd(momentum=0.9)``, ``lrr_adam``,
``lrr_adamw`` and the original algorithm's configuration (``problems.FACTORIES``) goes
through the same checks. Convergence on optax's small targets, and optax's own versions
of these checks, run in ``test_optax_common.py``.
"""

from __future__ import annotations

import inspect

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from .problems import FACTORIES, PROBLEMS, train

PROBLEM = PROBLEMS["regression"]
NAMES = list(FACTORIES)
# The options that shape the program rather than hold a number: inject_hyperparams must
# leave them to the factory.
STRUCTURAL = ("schedule", "granularity", "rule", "bounds", "state_dtype", "rates", "direction")
DTYPES = [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64]


def _build(name, **overrides):
    f = FACTORIES[name]
    return f.factory(**{**f.kwargs, **overrides})


def _standard(fn, *args, **kwargs):
    # optax's directions inside the aliases rely on standard promotion.
    with jax.numpy_dtype_promotion("standard"):
        return fn(*args, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_extra_args_are_ignored(name):
    tx = _build(name)
    params = PROBLEM.params(jnp.float64)
    state = tx.init(params)
    for n in range(3):  # past the first step, where every rate is still its initial value
        grads = jax.grad(PROBLEM.loss)(params, n)
        with_extra, new_state = _standard(tx.update, grads, state, params, value=1.0, junk=None)
        without, _ = _standard(tx.update, grads, state, params)
        chex.assert_trees_all_equal(with_extra, without)
        params, state = optax.apply_updates(params, without), new_state


@pytest.mark.parametrize("name", NAMES)
def test_no_recompilation_on_the_second_call(name):
    tx = _build(name)
    traces = []

    @jax.jit
    def step(params, state, n):
        traces.append(None)  # runs once per trace
        grads = jax.grad(PROBLEM.loss)(params, n)
        updates, state = tx.update(grads, state, params, unexpected_extra_arg=1)
        return optax.apply_updates(params, updates), state

    params = PROBLEM.params(jnp.float64)
    state = tx.init(params)
    types = jax.tree.map(jax.typeof, state)
    for n in range(3):
        params, state = _standard(step, params, state, jnp.asarray(n))
    assert len(traces) == 1
    # The state's types (weak types included) are a fixed point of update.
    assert jax.tree.map(jax.typeof, state) == types


@pytest.mark.parametrize("name", NAMES)
def test_tree_map_params(name):
    tx = _build(name)
    params = PROBLEM.params(jnp.float64)
    state = tx.init(params)
    _, state = _standard(tx.update, jax.grad(PROBLEM.loss)(params, 0), state, params)
    same = optax.tree.map_params(tx, lambda v: v, state)
    chex.assert_trees_all_equal(same, state)
    # Every leaf shaped like a parameter is reached; counters are not.
    cast = optax.tree.map_params(tx, lambda v: v.astype(jnp.float32), state)
    assert cast.count.dtype == jnp.int32
    for leaf in jax.tree.leaves((cast.etas[0], cast.prev_direction)) if cast.etas else ():
        if leaf.ndim:
            assert leaf.dtype == jnp.float32


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_equals_the_plain_optimizer(name):
    f = FACTORIES[name]
    signature = inspect.signature(f.factory).parameters
    static_args = tuple(a for a in STRUCTURAL if a in signature)
    # Structural options given explicitly, so that they must reach the factory as such.
    options = dict(schedule="cascade", granularity="parameter", rates=(1e-2, 1e-3))
    if name != "original":
        options |= dict(rule="normalized", bounds=(0.0, 1.0))
    injected = optax.inject_hyperparams(f.factory, static_args=static_args)(**f.kwargs, **options)
    plain = f.factory(**f.kwargs, **options)
    run = train(injected, 6, promotion="standard")
    expected = train(plain, 6, promotion="standard")
    chex.assert_trees_all_close(run.params, expected.params, rtol=1e-12)
    chex.assert_trees_all_close(run.state.inner_state, expected.state, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", NAMES)
def test_multisteps_feeds_the_mean_of_k_gradients(name):
    k, windows = 3, 3
    multi = optax.MultiSteps(_build(name), every_k_schedule=k, accumulator_dtype=jnp.float64)
    params = PROBLEM.params(jnp.float64)
    state = multi.init(params)
    update = jax.jit(multi.update)
    reference = _build(name)
    expected = PROBLEM.params(jnp.float64)
    inner = reference.init(expected)
    for w in range(windows):
        grads = [jax.grad(PROBLEM.loss)(params, w * k + i) for i in range(k)]
        for i, g in enumerate(grads):
            updates, state = _standard(update, g, state, params)
            if i < k - 1:  # nothing moves inside a window
                chex.assert_trees_all_equal(updates, jax.tree.map(jnp.zeros_like, updates))
            params = optax.apply_updates(params, updates)
        mean = jax.tree.map(lambda *g: sum(g) / k, *grads)
        ref_updates, inner = _standard(reference.update, mean, inner, expected)
        expected = optax.apply_updates(expected, ref_updates)
    chex.assert_trees_all_close(params, expected, rtol=1e-12)
    chex.assert_trees_all_close(state.inner_opt_state, inner, rtol=1e-12, atol=1e-300)


# Each optimizer in one half-precision and one full-precision dtype, each dtype with half
# the optimizers: optax's battery (``test_optax_common``) checks the state's stability in
# every pair already.
_COND_CASES = [
    (name, dtype)
    for i, name in enumerate(NAMES)
    for dtype in (DTYPES[i % 2], DTYPES[2 + (i // 2) % 2])
]


@pytest.mark.parametrize(("name", "dtype"), _COND_CASES)
def test_dtypes_are_kept_and_stable_through_lax_cond(name, dtype):
    """Updates come in the params' dtype; a taken and a skipped update give one state
    (structure, shapes, dtypes, weak types), as optax's ``lax.cond`` check requires."""
    tx = _build(name)

    @jax.jit
    def step(params, state, n):
        grads = jax.grad(PROBLEM.loss)(params, n)
        taken = tx.update(grads, state, params)
        for u, p in zip(jax.tree.leaves(taken[0]), jax.tree.leaves(params), strict=True):
            assert u.dtype == p.dtype
        skipped = (jax.tree.map(jnp.zeros_like, params), state)
        assert jax.tree.map(jax.typeof, taken) == jax.tree.map(jax.typeof, skipped)
        # optax's check: lax.cond requires both branches to agree.
        cond = jax.random.randint(jax.random.fold_in(jax.random.key(0), n), (), 0, 2) == 0
        updates, state = jax.lax.cond(cond, lambda: taken, lambda: skipped)
        return optax.apply_updates(params, updates), state

    params = PROBLEM.params(dtype)
    state = tx.init(params)
    for n in range(3):
        params, new_state = _standard(step, params, state, jnp.asarray(n))
        assert all(p.dtype == dtype for p in jax.tree.leaves(params))
        state = jax.lax.cond(n % 2 == 0, lambda s=state: s, lambda s=new_state: s)
    for leaf in jax.tree.leaves(state):
        assert np.all(np.isfinite(np.asarray(leaf, np.float64)))


@pytest.mark.parametrize("name", NAMES)
def test_top_rate_schedule(name):
    # A constant schedule for the top rate is the constant; a decaying one changes training.
    rates = (1e-2, 1e-3)
    plain = train(_build(name, rates=rates), 6, promotion="standard")
    constant = train(
        _build(name, rates=(rates[0], optax.constant_schedule(rates[1]))), 6, promotion="standard"
    )
    chex.assert_trees_all_close(constant.params, plain.params, rtol=1e-14)
    chex.assert_trees_all_close(constant.state, plain.state, rtol=1e-14, atol=1e-300)
    decayed = train(
        _build(name, rates=(rates[0], optax.exponential_decay(rates[1], 1, 0.01))),
        6,
        promotion="standard",
    )
    assert not np.allclose(
        jax.tree.leaves(decayed.state.etas[1])[0], jax.tree.leaves(plain.state.etas[1])[0]
    )
