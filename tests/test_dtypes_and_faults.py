"""Dtypes (float32, bfloat16, float16, float64, a float32 state for low precision) and faults
(non-finite gradients, 10⁶ steps and a saturating counter, rates that stay non-negative)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lrr_optax

from .problems import PROBLEMS

PROBLEM = PROBLEMS["regression"]
INITIAL = (0.05, 1e-2, 1e-3)  # η⁽⁰⁾, η⁽¹⁾, η⁽²⁾ initial values
TOP = 1e-3
INT32_MAX = int(np.iinfo(np.int32).max)


def _tx(**options):
    return lrr_optax.learning_rate_rates(INITIAL[0], (*INITIAL[1:], TOP), **options)


# --- dtypes ----------------------------------------------------------------------------------


def _mean_loss(params, batches=12):
    """The loss over the training batches, in float32: one batch alone is too noisy."""
    params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    return np.mean([float(PROBLEM.loss(params, n)) for n in range(batches)])


@pytest.mark.parametrize("state_dtype", [None, jnp.float32])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64])
def test_training_in_each_dtype(dtype, state_dtype):
    tx = _tx(state_dtype=state_dtype, rule="normalized")
    stored = jnp.dtype(state_dtype or dtype)
    # Rates, α and moments: at least float32 by default; the normaliser always.
    rates_dtype = jnp.dtype(state_dtype or (jnp.float64 if dtype == jnp.float64 else jnp.float32))
    moment_dtype = jnp.float64 if rates_dtype == jnp.float64 else jnp.float32

    @jax.jit
    def step(params, state, n):
        grads = jax.grad(PROBLEM.loss)(params, n)
        # optax's dtype-stability check: a taken and a skipped update give one state type.
        skip = jax.random.randint(jax.random.fold_in(jax.random.key(0), n), (), 0, 4) == 0
        updates, new_state = jax.lax.cond(
            skip,
            lambda: (jax.tree.map(jnp.zeros_like, params), state),
            lambda: tx.update(grads, state, params),
        )
        return updates, new_state

    params = PROBLEM.params(dtype)
    state = tx.init(params)
    types = jax.tree.map(jax.typeof, state)
    initial_loss = _mean_loss(params)
    for n in range(12):
        updates, state = step(params, state, n)
        for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
            assert u.dtype == p.dtype  # updates always in the params' dtype
        params = optax.apply_updates(params, updates)
    assert jax.tree.map(jax.typeof, state) == types
    for leaf in jax.tree.leaves((state.etas, state.alphas)):
        assert leaf.dtype == rates_dtype
        assert np.all(np.isfinite(np.asarray(leaf, np.float64)))
    for leaf in jax.tree.leaves(state.second_moments):
        assert leaf.dtype == moment_dtype
    assert jax.tree.leaves(state.prev_direction)[0].dtype == stored
    assert _mean_loss(params) < initial_loss
    # Every order's rate adapts, even the small top-but-one, in half precision too.
    for j, eta in enumerate(state.etas):
        initial = np.float64(INITIAL[j]).astype(rates_dtype)
        assert np.any(np.asarray(eta["w"], np.float64) != initial)


@pytest.mark.parametrize("granularity", ["parameter", "tensor", "global"])
def test_mixed_precision_params_with_a_float32_state(granularity):
    params = {"w": jnp.full((3, 2), 0.3, jnp.bfloat16), "b": jnp.asarray([0.1, -0.2], jnp.float16)}

    def loss(params, n):
        x, y = jax.random.normal(jax.random.fold_in(jax.random.key(0), n), (2, 5, 2), jnp.float32)
        w, b = (p.astype(jnp.float32) for p in (params["w"][:2], params["b"]))
        return jnp.mean(jnp.square(jnp.tanh(x @ w + b) - y))

    tx = _tx(state_dtype=jnp.float32, granularity=granularity)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for n in range(6):
        updates, state = update(jax.grad(loss)(params, n), state, params)
        assert {k: u.dtype for k, u in updates.items()} == {k: p.dtype for k, p in params.items()}
        params = optax.apply_updates(params, updates)
    for leaf in jax.tree.leaves((state.etas, state.alphas, state.prev_direction)):
        assert leaf.dtype == jnp.float32
        assert np.all(np.isfinite(leaf))
    assert np.any(np.asarray(jax.tree.leaves(state.etas[1])[0]) != np.float32(INITIAL[1]))


# --- non-finite gradients --------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("if_finite", [False, True], ids=["bare", "apply_if_finite"])
def test_training_continues_after_non_finite_gradients(bad, if_finite):
    inner = _tx(rule="normalized", direction=None)
    tx = optax.apply_if_finite(inner, max_consecutive_errors=5) if if_finite else inner
    params = PROBLEM.params(jnp.float64)
    state = tx.init(params)
    update = jax.jit(tx.update)
    start_loss = PROBLEM.loss(params, 0)
    rates = []
    for n in range(14):
        grads = jax.grad(PROBLEM.loss)(params, n)
        if n == 4:  # one bad element
            grads = {**grads, "w": grads["w"].at[1, 0].set(bad)}
        if n == 7:  # everything bad
            grads = jax.tree.map(lambda g: jnp.full_like(g, bad), grads)
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        for leaf in jax.tree.leaves((params, state)):
            assert np.all(np.isfinite(leaf))
        if n in (4, 7) and if_finite:
            jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)
        if n == 4 and not if_finite:
            # Only the bad element is held: the others still step.
            assert updates["w"][1, 0] == 0.0 and np.all(updates["w"][0] != 0.0)
        rates.append(lrr_optax.learning_rates(state))
    inner_state = state.inner_state if if_finite else state
    assert int(inner_state.count) == (12 if if_finite else 14)
    # Training went on: the rates kept adapting after the faults and the loss fell.
    for j in range(3):
        assert np.any(rates[-1][j]["w"] != rates[9][j]["w"])
    assert PROBLEM.loss(params, 0) < start_loss


# --- long runs and the counter ---------------------------------------------------------------

# Orders 0 … 4 at the simultaneous schedule: rings of sizes L = 1, 2, 3, 4.
LONG_RATES = (1e-6, 1e-6, 1e-6, 1e-6, 1e-8)


def _long_tx():
    return lrr_optax.learning_rate_rates(1e-3, LONG_RATES, bounds=None, granularity="parameter")


def _gradient(n):
    # Independent of the params, different at every step, never zero.
    return {"w": 0.5 + jnp.sin(0.3 * n.astype(jnp.float64) + jnp.arange(2.0))}


def test_a_million_steps_keep_the_counter_and_the_ring():
    tx = _long_tx()
    hooked = jax.jit(lrr_optax.update_with_hypergradients(tx))
    steps = 10**6
    params = {"w": jnp.zeros(2)}

    @jax.jit
    def run(state):
        def body(n, state):
            return tx.update(_gradient(n), state, params)[1]

        return jax.lax.fori_loop(0, steps - 4, body, state)

    state = run(tx.init(params))
    assert int(state.count) == steps - 4
    written = {}
    for n in range(steps - 4, steps):  # the last 4 steps, with the debug hook
        _, state, aux = hooked(_gradient(jnp.asarray(n)), state, params)
        written[n] = aux.alphas
    assert int(state.count) == steps
    for leaf in jax.tree.leaves(state):
        assert np.all(np.isfinite(leaf))
    # Ring j − 1 (size L = j) holds α⁽ʲ⁻¹⁾ of the last L steps, step n in slot n mod L.
    for j in range(1, len(LONG_RATES)):
        ring = state.alphas[j - 1]["w"]
        assert ring.shape[0] == j
        for n in range(steps - j, steps):
            np.testing.assert_array_equal(ring[n % j], written[n][j - 1]["w"])
            assert np.all(ring[n % j] != 0.0)


@pytest.mark.parametrize("count", [10**6 - 1, 10**6 + 5, INT32_MAX - 2])
def test_large_counts_read_and_write_slot_count_mod_l(count):
    tx = _long_tx()
    hooked = jax.jit(lrr_optax.update_with_hypergradients(tx))
    params = {"w": jnp.zeros(2)}
    state = tx.init(params)
    # Slot k of ring j − 1 holds a value that names it: (j, k) ↦ 1 + j/10 + k/100.
    alphas = tuple(
        {"w": jnp.tile(1.0 + j / 10 + jnp.arange(j)[:, None] / 100, (1, 2))}
        for j in range(1, len(LONG_RATES))
    )
    state = state._replace(
        count=jnp.asarray(count, jnp.int32),
        alphas=alphas,
        prev_direction={"w": jnp.ones(2)},
    )
    # Past the int32 limit the count steps back by lcm(1 … m−1) = 12: every ring keeps its order.
    period = 12
    c = count
    for _ in range(4):  # across the wrap of every ring, and across the count's wrap at the end
        before = state
        _, state, aux = hooked({"w": jnp.ones(2)}, state, params)
        h = aux.hypergradients
        for j in range(1, len(LONG_RATES)):
            ring = before.alphas[j - 1]["w"]
            # h⁽ʲ⁾ = h⁽ʲ⁻¹⁾ ⊙ (slot c mod L of the ring): the slot read is the named one.
            np.testing.assert_allclose(h[j]["w"] / h[j - 1]["w"], ring[c % j], rtol=1e-15)
            new_ring = state.alphas[j - 1]["w"]
            np.testing.assert_array_equal(new_ring[c % j], aux.alphas[j - 1]["w"])
            for k in range(j):
                if k != c % j:
                    np.testing.assert_array_equal(new_ring[k], ring[k])
        expected = c + 1 if c < INT32_MAX else INT32_MAX - period + 1
        assert int(state.count) == expected
        assert expected % period == (c + 1) % period
        c = expected


# --- rates stay non-negative -----------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
@pytest.mark.parametrize("rule", ["additive", "normalized", "multiplicative", "log_normalized"])
def test_rates_never_go_negative_under_the_default_bounds(rule, schedule):
    # Huge rates of rates on a noisy loss push the rates hard both ways.
    tx = lrr_optax.learning_rate_rates(0.01, (10.0, 10.0, 10.0), rule=rule, schedule=schedule)
    params = PROBLEM.params(jnp.float32)

    @jax.jit
    def run(params):
        def body(carry, n):
            params, state = carry
            updates, state = tx.update(jax.grad(PROBLEM.loss)(params, n), state, params)
            lowest = jnp.min(jnp.stack([jnp.min(x) for x in jax.tree.leaves(state.etas)]))
            return (optax.apply_updates(params, updates), state), lowest

        return jax.lax.scan(body, (params, tx.init(params)), jnp.arange(40))

    (_, state), lowest = run(params)
    assert np.all(np.asarray(lowest) >= 0.0)
    for leaf in jax.tree.leaves(state):
        assert np.all(np.isfinite(leaf))
