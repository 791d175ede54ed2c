"""Inside optax's wrappers: chain, MultiSteps, apply_if_finite, masked, partition,
inject_hyperparams, tree_map_params; extra arguments; dtype stability under lax.cond."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lrr_optax

from .problems import PROBLEMS, optax_promotion, train

PROBLEM = PROBLEMS["regression"]
RATES = (1e-2, 1e-3)
# The build-time options that inject_hyperparams would otherwise take for hyperparameters
# because they are numbers; the order is the length of ``rates``, fixed by its shape.
STATIC = ("normalizer_decay", "normalizer_eps")


def _lrr(**options):
    return lrr_optax.learning_rate_rates(0.05, RATES, **options)


def _grads(params, n, poison=False):
    grads = jax.grad(PROBLEM.loss)(params, n)
    if poison:
        grads = {**grads, "w": grads["w"].at[0, 1].set(jnp.nan)}
    return grads


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


# --- chain -----------------------------------------------------------------------------------


def test_chain_after_clipping_with_decayed_weights():
    clip, decay, steps = 0.5, 1e-2, 10
    chained = optax.chain(optax.clip_by_global_norm(clip), optax.add_decayed_weights(decay), _lrr())
    params, state, *_ = train(chained, steps)

    # The same by hand: the transformation sees the clipped, decayed gradient.
    tx = _lrr()

    @jax.jit
    def by_hand(params, state, n):
        g = jax.grad(PROBLEM.loss)(params, n)
        norm = optax.tree.norm(g)
        g = jax.tree.map(lambda x: x * jnp.minimum(1.0, clip / norm), g)
        g = jax.tree.map(lambda x, p: x + decay * p, g, params)
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    expected = PROBLEM.params(jnp.float64)
    inner = tx.init(expected)
    for n in range(steps):
        expected, inner = by_hand(expected, inner, n)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), params, expected)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12),
        lrr_optax.learning_rates(state),
        inner.etas,
    )


# --- MultiSteps ------------------------------------------------------------------------------


def _multi_steps(tx, k, accumulator_dtype=jnp.float32):
    # MultiSteps itself relies on implicit promotion (its step counters).
    multi_steps = optax.MultiSteps(tx, every_k_schedule=k, accumulator_dtype=accumulator_dtype)
    return optax_promotion(multi_steps.gradient_transformation())


def test_multisteps_feeds_the_mean_of_k_gradients():
    k, windows = 3, 4
    tx = _multi_steps(_lrr(), k, accumulator_dtype=jnp.float64)  # its default is float32
    params = PROBLEM.params(jnp.float64)
    state = tx.init(params)
    update = jax.jit(tx.update)

    reference = _lrr()
    expected = PROBLEM.params(jnp.float64)
    inner = reference.init(expected)
    for w in range(windows):
        grads = [jax.grad(PROBLEM.loss)(params, w * k + i) for i in range(k)]
        for g in grads:
            updates, state = update(g, state, params)
            params = optax.apply_updates(params, updates)
        mean = jax.tree.map(lambda *g: sum(g) / k, *grads)
        ref_updates, inner = reference.update(mean, inner, expected)
        expected = optax.apply_updates(expected, ref_updates)
    assert int(state.inner_opt_state.count) == windows
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), params, expected)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12),
        lrr_optax.learning_rates(state),
        inner.etas,
    )


# --- apply_if_finite -------------------------------------------------------------------------


def test_apply_if_finite_skips_a_non_finite_step():
    tx = optax.apply_if_finite(_lrr(), max_consecutive_errors=3)
    params = PROBLEM.params(jnp.float64)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for n in range(8):
        before = state
        updates, state = update(_grads(params, n, poison=n in (2, 5)), state, params)
        if n in (2, 5):
            _assert_trees_equal(state.inner_state, before.inner_state)
            jax.tree.map(lambda u: np.testing.assert_array_equal(u, 0.0), updates)
        else:
            assert int(state.inner_state.count) == int(before.inner_state.count) + 1
        params = optax.apply_updates(params, updates)
    assert int(state.total_notfinite) == 2
    assert int(state.inner_state.count) == 6
    assert lrr_optax.learning_rates(state) is state.inner_state.etas


# --- masked and partition --------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["parameter", "global"])
def test_masked_adapts_only_the_masked_in_leaves(granularity):
    tx = optax.masked(_lrr(granularity=granularity), {"w": True, "b": False})
    params, state, *_ = train(tx, 6)

    # The same transformation on the "w" leaf alone; "b" takes the raw gradient.
    sub = _lrr(granularity=granularity)
    expected = PROBLEM.params(jnp.float64)
    inner = sub.init({"w": expected["w"]})
    for n in range(6):
        g = jax.grad(PROBLEM.loss)(expected, n)
        updates, inner = sub.update({"w": g["w"]}, inner, {"w": expected["w"]})
        expected = optax.apply_updates(expected, {"w": updates["w"], "b": g["b"]})
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), params, expected)
    etas = lrr_optax.learning_rates(state)
    # A rate the spike rescale lowered went through 1 − w, the signal's share of its moment
    # (docs/math.md), which turns the two programs' last-bit differences into a few hundred
    # ulps when the jump is large.
    if granularity == "parameter":
        np.testing.assert_allclose(etas[0]["w"], inner.etas[0]["w"], rtol=1e-12)
    else:
        np.testing.assert_allclose(etas[0], inner.etas[0], rtol=1e-12)


def test_partition_gives_each_group_its_own_rates():
    labels = {"w": "fast", "b": "slow"}
    fast = _lrr()
    slow = lrr_optax.learning_rate_rates(0.01, (1e-3,), granularity="global")
    for combine in (optax.partition, optax.multi_transform):
        tx = combine({"fast": fast, "slow": slow}, labels)
        params, state, *_ = train(tx, 5)

        expected = PROBLEM.params(jnp.float64)
        states = {"fast": fast.init({"w": expected["w"]}), "slow": slow.init({"b": expected["b"]})}
        for n in range(5):
            g = jax.grad(PROBLEM.loss)(expected, n)
            uw, states["fast"] = fast.update({"w": g["w"]}, states["fast"], {"w": expected["w"]})
            ub, states["slow"] = slow.update({"b": g["b"]}, states["slow"], {"b": expected["b"]})
            expected = optax.apply_updates(expected, {"w": uw["w"], "b": ub["b"]})
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), params, expected)

        summary = lrr_optax.summarize(state)
        # One prefix per group, in the order the states appear in the tree.
        assert {key.split("/")[0] for key in summary} == {"0", "1"}
        np.testing.assert_allclose(summary["0/eta0/max"], jnp.max(states["fast"].etas[0]["w"]))
        np.testing.assert_allclose(summary["1/eta0/mean"], states["slow"].etas[0])
        with pytest.raises(ValueError, match="Found 2"):
            lrr_optax.learning_rates(state)


# --- inject_hyperparams ----------------------------------------------------------------------


def test_inject_hyperparams_equals_the_plain_transformation():
    injected = optax.inject_hyperparams(lrr_optax.learning_rate_rates, static_args=STATIC)(
        learning_rate=0.05,
        rates=jnp.asarray(RATES),
        schedule="cascade",
        granularity=("parameter", "tensor"),
        rule="normalized",
        bounds=(0.0, 1.0),
        spike_threshold=2.0,  # injected, so traced
        horizon=0.5,
        horizon_start=4,  # an integer array, traced: the trace's gate is built at any start
    )
    plain = lrr_optax.learning_rate_rates(
        0.05,
        RATES,
        schedule="cascade",
        granularity=("parameter", "tensor"),
        rule="normalized",
        bounds=(0.0, 1.0),
        spike_threshold=2.0,
        horizon=0.5,
        horizon_start=4,
    )
    params, state, *_ = train(injected, 8)
    expected, expected_state, *_ = train(plain, 8)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), params, expected)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13),
        state.inner_state,
        expected_state,
    )
    np.testing.assert_array_equal(state.hyperparams["rates"], RATES)


def test_injected_top_rate_can_be_changed_during_training():
    # Overriding hyperparams["rates"] at step 4 changes the top rate from then on (the
    # lower entries are initial values, used by init only): the same as a top-rate
    # schedule that switches at step 4.
    switch, new_top, steps = 4, 5e-3, 8
    injected = optax.inject_hyperparams(lrr_optax.learning_rate_rates, static_args=STATIC)(
        learning_rate=0.05, rates=jnp.asarray(RATES)
    )
    params = PROBLEM.params(jnp.float64)
    state = injected.init(params)
    update = jax.jit(injected.update)
    for n in range(steps):
        if n == switch:
            state.hyperparams["rates"] = jnp.asarray([RATES[0], new_top])
        updates, state = update(_grads(params, n), state, params)
        params = optax.apply_updates(params, updates)

    def top(count):
        return jnp.where(count < switch, RATES[1], new_top)

    expected, expected_state, *_ = train(
        lrr_optax.learning_rate_rates(0.05, (RATES[0], top)), steps
    )
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), params, expected)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13),
        lrr_optax.learning_rates(state),
        expected_state.etas,
    )


def test_injected_top_rate_schedule():
    schedule = optax.exponential_decay(1e-2, transition_steps=2, decay_rate=0.5)

    def factory(learning_rate, top_rate):
        return lrr_optax.learning_rate_rates(learning_rate, (1e-2, top_rate))

    injected = optax.inject_hyperparams(factory)(learning_rate=0.05, top_rate=schedule)
    params, state, _, states = train(injected, 6)
    expected, expected_state, *_ = train(lrr_optax.learning_rate_rates(0.05, (1e-2, schedule)), 6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), params, expected)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13),
        lrr_optax.learning_rates(state),
        expected_state.etas,
    )
    # The injected value is logged: the rate the step just used.
    for n, s in enumerate(states):
        np.testing.assert_allclose(s.hyperparams["top_rate"], schedule(n), rtol=1e-6)


# --- tree_map_params -------------------------------------------------------------------------


def test_tree_map_params_reaches_every_per_parameter_leaf():
    tx = _lrr(direction=optax_promotion(optax.scale_by_adam()), granularity="parameter")
    params = PROBLEM.params(jnp.float64)
    state = tx.init(params)
    update = jax.jit(tx.update)  # op by op, the per-parameter Adam step took 6 s here
    _, state = update(jax.grad(PROBLEM.loss)(params, 0), state, params)

    cast = optax.tree_map_params(tx, lambda x: x.astype(jnp.float32), state)
    assert cast.count.dtype == jnp.int32
    assert cast.direction_state.count.dtype == jnp.int32
    per_parameter = (cast.etas, cast.alphas, cast.prev_direction, cast.direction_state.mu)
    for leaf in jax.tree.leaves(per_parameter):
        assert leaf.dtype == jnp.float32
    # The α rings are reached too: their leaves are the parameter with a leading slot axis.
    assert cast.alphas[0]["w"].shape == (1, *params["w"].shape)

    marked = optax.tree_map_params(tx, lambda x: x, state, transform_non_params=lambda _: None)
    assert marked.count is None and marked.direction_state.count is None

    # The cast state trains float32 params.
    params32 = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    updates, _ = update(jax.grad(PROBLEM.loss)(params32, 1), cast, params32)
    assert all(u.dtype == jnp.float32 for u in jax.tree.leaves(updates))


# --- extra arguments -------------------------------------------------------------------------


def test_extra_arguments_reach_the_direction_and_are_otherwise_ignored():
    seen = []

    def update(updates, state, params=None, *, scale=1.0, **extra):
        seen.append(sorted(extra))
        return jax.tree.map(lambda g: scale * g, updates), state

    # A direction that takes extra arguments gets them through a chain.
    direction = optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)
    tx = optax.chain(optax.clip_by_global_norm(1e3), _lrr(direction=direction))
    params = PROBLEM.params(jnp.float64)
    grads = jax.grad(PROBLEM.loss)(params, 0)
    state = tx.init(params)
    plain, _ = tx.update(grads, state, params)
    scaled, _ = tx.update(grads, state, params, scale=2.0, value=jnp.ones(()), unknown="x")
    assert seen[-1] == ["unknown", "value"]
    # At the first step the rates have no hypergradient yet: the update is −η⁽⁰⁾ ⊙ d.
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, 2.0 * b), scaled, plain)

    # A direction without extra arguments (a plain GradientTransformation) never sees them.
    sgd = _lrr(direction=optax.identity())
    state = sgd.init(params)
    with_extra, _ = sgd.update(grads, state, params, value=1.0, unknown=None)
    without, _ = sgd.update(grads, state, params)
    _assert_trees_equal(with_extra, without)


# --- lrr_optax.learning_rates / summarize through the wrappers ------------------------------

WRAPPERS = {
    "chain": lambda: optax.chain(optax.clip_by_global_norm(10.0), _lrr()),
    "MultiSteps": lambda: _multi_steps(_lrr(), 1),
    "inject_hyperparams": lambda: optax.inject_hyperparams(
        lrr_optax.learning_rate_rates, static_args=STATIC
    )(learning_rate=0.05, rates=jnp.asarray(RATES)),
    "apply_if_finite": lambda: optax.apply_if_finite(_lrr(), max_consecutive_errors=2),
    "masked": lambda: optax.masked(_lrr(), {"w": True, "b": True}),
}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_learning_rates_and_summarize_see_through(wrapper):
    # With a large clip, a window of one and an all-true mask every wrapper trains like
    # the bare transformation, so the rates read through it must be the bare ones.
    _, state, *_ = train(WRAPPERS[wrapper](), 5)
    _, bare, *_ = train(_lrr(), 5)
    etas = lrr_optax.learning_rates(state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-13), etas, bare.etas)
    summary = jax.jit(lrr_optax.summarize)(state)
    assert sorted(summary) == sorted(lrr_optax.summarize(bare))
    for key, value in lrr_optax.summarize(bare).items():
        np.testing.assert_allclose(summary[key], value, rtol=1e-13)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_state_dtypes_are_stable_under_lax_cond(wrapper, dtype):
    """optax's check on every optimizer: a step and a skipped step give one state type."""
    tx = WRAPPERS[wrapper]()

    @jax.jit
    def step(params, state, n):
        grads = jax.grad(PROBLEM.loss)(params, n)
        # lax.cond needs both branches to give the same types, weak types included.
        cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
        updates, state = jax.lax.cond(
            cond, lambda: tx.update(grads, state, params), lambda: (params, state)
        )
        return optax.apply_updates(params, updates), state

    params = PROBLEM.params(dtype)
    state = tx.init(params)
    for n in range(2):
        params, new_state = step(params, state, n)
        assert all(p.dtype == dtype for p in jax.tree.leaves(params))
        cond = jax.random.randint(jax.random.key(0), (), 0, 2) == 0
        state = jax.lax.cond(cond, lambda s=state: s, lambda s=new_state: s)
