"""``learning_rate_rates``: anchors, the α cache, order 0, arguments, faults, dtypes, long
runs and the counter, granularities on random trees, each rule's first steps exactly."""

from __future__ import annotations

import functools
import re

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lrr_optax

from .problems import PROBLEMS, optax_promotion, rates_through_a_jump, train

PROBLEM = PROBLEMS["regression"]
# The original algorithm, whatever the shipped defaults are: tests of the recursion's mechanics
# and of the anchors name it explicitly.
# The recursion's steps as written: no warm-up ramp on them, no annealing of the rates' steps,
# falls clipped like rises.
PLAIN_STEPS = dict(warmup_steps=0, anneal_steps=None, spike_threshold=None)
ORIGINAL = dict(
    granularity="parameter", rule="additive", clip=None, schedule="simultaneous", **PLAIN_STEPS
)


def _flat(tree):
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])


# --- anchors: Baydin's SGD-HD and Adam-HD, Chandra's stacked hyperoptimizers -------------


def test_order1_global_equals_baydin_sgd_hd():
    alpha0, beta, steps = 0.05, 0.02, 30
    tx = lrr_optax.learning_rate_rates(
        alpha0,
        (beta,),
        granularity="global",
        rule="additive",
        clip=None,
        bounds=None,
        **PLAIN_STEPS,
    )
    _, state, trajectory, _ = train(tx, steps)

    theta = _flat(PROBLEM.params(jnp.float64))
    unflatten = _unflattener()
    alpha, g_prev = alpha0, np.zeros_like(theta)
    for n in range(steps):
        g = _flat(jax.grad(PROBLEM.loss)(unflatten(theta), n))
        alpha = alpha + beta * g @ g_prev  # α_t = α_{t−1} + β g_t·g_{t−1}
        theta = theta - alpha * g
        g_prev = g
        np.testing.assert_allclose(_flat(trajectory[n]), theta, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(float(state.etas[0]), alpha, rtol=1e-12)


def test_order1_global_equals_baydin_adam_hd():
    alpha0, beta, steps = 0.01, 1e-4, 30
    b1, b2, eps = 0.9, 0.999, 1e-8
    tx = lrr_optax.learning_rate_rates(
        alpha0,
        (beta,),
        granularity="global",
        rule="additive",
        clip=None,
        bounds=None,
        **PLAIN_STEPS,
        direction=optax_promotion(optax.scale_by_adam(b1, b2, eps)),
    )
    _, state, trajectory, _ = train(tx, steps)

    theta = _flat(PROBLEM.params(jnp.float64))
    unflatten = _unflattener()
    alpha = alpha0
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    u_prev = np.zeros_like(theta)
    for n in range(steps):
        g = _flat(jax.grad(PROBLEM.loss)(unflatten(theta), n))
        alpha = alpha + beta * g @ u_prev  # uses the previous *Adam direction*
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        u = (m / (1 - b1 ** (n + 1))) / (np.sqrt(v / (1 - b2 ** (n + 1))) + eps)
        theta = theta - alpha * u
        u_prev = u
        np.testing.assert_allclose(_flat(trajectory[n]), theta, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(float(state.etas[0]), alpha, rtol=1e-10)


@pytest.mark.parametrize("height", [1, 2, 3, 4])
def test_cascade_global_equals_stacked_sgd_hyperoptimizers(height):
    """Chandra et al.'s stack: each level's step size is descended through one step's graph."""
    initial = [0.05] + [0.01] * (height - 1)
    top, steps = 1e-3, 25
    tx = lrr_optax.learning_rate_rates(
        initial[0],
        (*initial[1:], top),
        schedule="cascade",
        granularity="global",
        rule="additive",
        clip=None,
        bounds=None,
        **PLAIN_STEPS,
    )
    _, state, trajectory, _ = train(tx, steps)

    # A hyperoptimizer stack in the manner of "Gradient Descent: The Ultimate Optimizer":
    # the new values are built from the old ones with the previous step's (detached)
    # gradients; backpropagating this step's loss through that one-step graph gives the
    # gradient of every level at once.
    def advance(old_theta, old_levels, grads_theta, grads_levels):
        levels = list(old_levels)
        for j in reversed(range(height)):
            above = top if j == height - 1 else levels[j + 1]
            levels[j] = old_levels[j] - above * grads_levels[j]
        theta = jax.tree.map(lambda p, g: p - levels[0] * g, old_theta, grads_theta)
        return theta, levels

    # At step n the current values are advance(old values, previous gradients); the
    # gradients of step n are those of L_n through that graph, with respect to the old values.
    old = (PROBLEM.params(jnp.float64), [jnp.asarray(x) for x in initial])
    grads = jax.tree.map(jnp.zeros_like, old)
    for n in range(steps):
        current = advance(*old, *grads)

        def loss_through_graph(old, grads=grads, n=n):
            return PROBLEM.loss(advance(*old, *grads)[0], n)

        grads = jax.grad(loss_through_graph)(old)
        old = current
        theta, levels = advance(*old, *grads)
        np.testing.assert_allclose(_flat(trajectory[n]), _flat(theta), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(float(state.etas[0]), float(levels[0]), rtol=1e-12)


def _unflattener():
    params = PROBLEM.params(jnp.float64)
    leaves, treedef = jax.tree.flatten(params)
    shapes = [leaf.shape for leaf in leaves]
    sizes = [leaf.size for leaf in leaves]

    def unflatten(flat):
        parts = np.split(flat, np.cumsum(sizes)[:-1])
        return treedef.unflatten([jnp.asarray(p.reshape(s)) for p, s in zip(parts, shapes)])

    return unflatten


# --- the α cache: its size and the ring -----------------------------------------------------


def _buffers(ring_tree, params):
    """How many parameter-sized buffers a ring (stacked on axis 0) holds."""
    leaves = jax.tree.leaves(ring_tree)
    assert len(leaves) == len(jax.tree.leaves(params))
    sizes = {leaf.shape[0] for leaf in leaves}
    assert len(sizes) == 1
    for leaf, p in zip(leaves, jax.tree.leaves(params), strict=True):
        assert leaf.shape[1:] == p.shape
    return sizes.pop()


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
def test_alpha_cache_size(order, schedule):
    params = PROBLEM.params(jnp.float64)
    tx = lrr_optax.learning_rate_rates(0.1, (1e-3,) * order, **{**ORIGINAL, "schedule": schedule})
    state = tx.init(params)
    buffers = sum(_buffers(ring, params) for ring in state.alphas)
    expected = order * (order - 1) // 2 if schedule == "simultaneous" else max(order - 1, 0)
    assert buffers == expected
    assert len(state.etas) == order
    if order:
        jax.tree.map(
            lambda d, p: np.testing.assert_equal(d.shape, p.shape), state.prev_direction, params
        )


def test_alpha_cache_is_a_ring_written_one_slot_per_step():
    params = PROBLEM.params(jnp.float64)
    order = 5
    tx = lrr_optax.learning_rate_rates(0.05, (0.5,) * order, bounds=None, **ORIGINAL)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for n in range(20):
        new_updates, new_state = update(jax.grad(PROBLEM.loss)(params, n), state, params)
        for j, (old_ring, new_ring) in enumerate(zip(state.alphas, new_state.alphas), start=1):
            slot = n % j
            for old, new in zip(jax.tree.leaves(old_ring), jax.tree.leaves(new_ring)):
                for k in range(j):
                    if k != slot:  # untouched slots are bit-identical
                        np.testing.assert_array_equal(old[k], new[k])
        state = new_state
        params = optax.apply_updates(params, new_updates)
    # After enough steps every slot of every ring holds a distinct, non-zero α.
    for ring in state.alphas:
        for leaf in jax.tree.leaves(ring):
            assert np.all(np.any(leaf != 0, axis=tuple(range(1, leaf.ndim))))


def test_step_reads_and_writes_one_slot_per_order():
    # The compiled step touches the ring with one dynamic slice and one dynamic update per
    # ring of size > 1 and leaf: no concatenation or shifting of the whole cache.
    params = {"w": jnp.zeros((8,), jnp.float32)}
    tx = lrr_optax.learning_rate_rates(0.1, (1e-3,) * 5, **ORIGINAL)
    state = tx.init(params)
    jaxpr = str(jax.make_jaxpr(tx.update)(params, state, params))
    rings_longer_than_one = 3  # sizes 2, 3, 4
    assert len(re.findall(r"\bdynamic_update_slice\b", jaxpr)) == rings_longer_than_one
    assert len(re.findall(r"\bdynamic_slice\b", jaxpr)) == rings_longer_than_one
    assert "concatenate" not in jaxpr


# --- order 0, compilation, odd trees, dtypes ----------------------------------------------


def test_order0_equals_optax_sgd_exactly():
    tx = lrr_optax.learning_rate_rates(0.1, ())
    reference = optax.sgd(0.1)
    params, _, _, _ = train(tx, 10)
    expected, _, _, _ = train(reference, 10)
    jax.tree.map(np.testing.assert_array_equal, params, expected)


def test_order0_scales_any_direction():
    direction = optax_promotion(optax.scale_by_adam())
    tx = lrr_optax.learning_rate_rates(0.01, (), direction=direction)
    reference = optax.chain(optax_promotion(optax.scale_by_adam()), optax.scale(-0.01))
    params, _, _, _ = train(tx, 10)
    expected, _, _, _ = train(reference, 10)
    # Equal up to the order of one multiplication inside a fused kernel, over 10 steps.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=4e-15), params, expected)


def test_order0_accepts_a_schedule():
    schedule = optax.linear_schedule(0.1, 0.01, 5)
    params, _, _, _ = train(lrr_optax.learning_rate_rates(schedule, ()), 8)
    expected, _, _, _ = train(optax.sgd(schedule), 8)
    jax.tree.map(np.testing.assert_array_equal, params, expected)


@pytest.mark.parametrize("rule", ["additive", "normalized", "multiplicative", "log_normalized"])
def test_jit_and_eager_agree(rule):
    tx = lrr_optax.learning_rate_rates(0.05, (1e-2, 1e-3), rule=rule, schedule="simultaneous")
    eager, eager_state, _, _ = train(tx, 8, jit=False)
    jitted, jit_state, _, _ = train(tx, 8, jit=True)
    for a, b in zip(jax.tree.leaves((eager, eager_state)), jax.tree.leaves((jitted, jit_state))):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("granularity", ["parameter", "tensor", "global"])
def test_empty_pytree(granularity):
    tx = lrr_optax.learning_rate_rates(0.1, (1e-2, 1e-3), granularity=granularity)
    state = tx.init({})
    updates, state = jax.jit(tx.update)({}, state, {})
    assert updates == {}
    assert int(state.count) == 1


@pytest.mark.parametrize("granularity", ["parameter", "tensor", "global"])
def test_zero_size_leaves(granularity):
    params = {"empty": jnp.zeros((0, 3)), "w": jnp.ones(2)}
    tx = lrr_optax.learning_rate_rates(0.1, (1e-2, 1e-3), granularity=granularity)
    state = tx.init(params)
    for _ in range(3):
        updates, state = jax.jit(tx.update)(params, state, params)
    assert updates["empty"].shape == (0, 3)
    assert np.all(np.isfinite(updates["w"]))


# --- numeric faults --------------------------------------------------------------------------


POOLED = dict(granularity="parameter", element_share=0.1, anchor=0.01)
ANCHORED = dict(granularity="parameter", anchor=0.01)


@pytest.mark.parametrize(
    "rule, options",
    [pytest.param(rule, {}, id=rule) for rule in lrr_optax.RULES]
    + [
        pytest.param("log_normalized", POOLED, id="log_normalized-pooled"),
        pytest.param("normalized", POOLED, id="normalized-pooled"),
        pytest.param("multiplicative", ANCHORED, id="multiplicative-anchored"),
    ],
)
@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
def test_nonfinite_gradients_never_enter_the_state(rule, options, schedule):
    tx = lrr_optax.learning_rate_rates(0.05, (1e-2, 1e-3), rule=rule, schedule=schedule, **options)
    update = jax.jit(tx.update)  # one program for every kind of bad value
    initial = PROBLEM.params(jnp.float64)
    for bad in (np.nan, np.inf, -np.inf):
        params, state = initial, tx.init(initial)
        rates = []
        for n in range(14):
            grads = jax.grad(PROBLEM.loss)(params, n)
            if n in (4, 7):  # poison one element, then also a whole leaf
                grads = {"w": grads["w"].at[0, 0].set(bad), "b": grads["b"]}
            if n == 7:
                grads["b"] = jnp.full_like(grads["b"], bad)
            if n == 9:  # everything bad
                grads = jax.tree.map(lambda g, bad=bad: jnp.full_like(g, bad), grads)
            before = state
            updates, state = update(grads, state, params)
            for leaf in jax.tree.leaves((state, updates)):
                assert np.all(np.isfinite(leaf))
            if n == 4:
                # Only the bad element is held: the others still step.
                assert updates["w"][0, 0] == 0.0 and np.all(updates["w"][1] != 0.0)
            if n in (7, 9):
                # A wholly non-finite leaf neither moves its parameters nor its rates.
                np.testing.assert_array_equal(updates["b"], 0.0)
                for old, new in zip(before.etas, state.etas):
                    np.testing.assert_array_equal(old["b"], new["b"])
            params = optax.apply_updates(params, updates)
            rates.append(lrr_optax.learning_rates(state))
        assert int(state.count) == 14
        # Training went on: the rates kept adapting after the faults and the loss fell.
        for j in range(2):
            assert np.any(rates[-1][j]["w"] != rates[9][j]["w"])
        assert PROBLEM.loss(params, 0) < PROBLEM.loss(initial, 0)


@pytest.mark.parametrize(
    "spike_threshold, spike_rescale", [(None, False), (5.0, False), (5.0, True)]
)
def test_a_spike_lowers_the_rate_at_once(spike_threshold, spike_rescale):
    # Steady gradients raise η by the clipped step e^(ρc) at most; then the gradient flips
    # and grows 1000-fold (an overshoot): with the spike threshold η falls by far more than
    # the clip allows, without it by exactly the clip; the rescale divides it by about the
    # ratio of the jump as well.
    rho, clip = 0.05, 1.0
    tx = lrr_optax.learning_rate_rates(
        1e-2,
        (rho,),
        granularity="global",
        clip=clip,
        warmup_steps=0,
        anneal_steps=None,
        spike_threshold=spike_threshold,
        spike_rescale=spike_rescale,
    )
    # Long enough that the normaliser's debiasing lets a normalised step reach ~9 (its
    # bound is √((1 − β^k)/(1 − β))).
    etas = rates_through_a_jump(tx, 200, -1000.0)
    rises = np.diff(np.log(etas[:-1]))
    assert np.all(rises <= rho * clip * (1 + 1e-5)) and np.all(rises > 0)
    fall = np.log(etas[-1] / etas[-2])
    if spike_threshold is None:
        np.testing.assert_allclose(fall, -rho * clip, rtol=1e-5)
    elif not spike_rescale:
        # The normalised step is bounded by √(1/(1 − β)) = 10: so is the fall.
        assert -rho * 10 <= fall < -rho * 3
    else:
        # The signal jumped 1000-fold against its last value, and more against the moment
        # (its older, smaller rates): F ≥ 1000/τ = 200; the rate rose by e^(ρc) a step, so
        # the moment is no smaller than a tenth of the last signal's size: F ≤ 2000.
        assert -np.log(2000) - rho * 10 <= fall <= -np.log(200)


def test_a_spike_rescale_never_drives_the_rate_to_zero():
    # A jump far past what the moment resolves divides the rate by 10⁶ at most: a rate at
    # 0 would stay there in log space.
    rho = 0.05
    tx = lrr_optax.learning_rate_rates(
        1e-2, (rho,), granularity="global", warmup_steps=0, anneal_steps=None
    )
    *_, before, after = rates_through_a_jump(tx, 20, -1e15)
    # The fall: at most the cap, times the clip's spike, e^(−ρ·10) (the normalised step's
    # bound at β = 0.99).
    assert before * 1e-6 * np.exp(-rho * 10) * (1 - 1e-5) <= after < before * 1e-3


def test_overflowing_hypergradient_keeps_the_rate():
    # Huge gradients make h⁽ʲ⁾ overflow at high order; the rates stay finite.
    params = {"w": jnp.ones(4, jnp.float32)}
    tx = lrr_optax.learning_rate_rates(1.0, (1.0, 1.0, 1.0, 1.0), bounds=None, **ORIGINAL)
    state = tx.init(params)
    for _ in range(10):
        updates, state = jax.jit(tx.update)({"w": jnp.full(4, 3e10, jnp.float32)}, state)
        for leaf in jax.tree.leaves(state):
            assert np.all(np.isfinite(leaf))


@pytest.mark.parametrize(
    "options",
    [{}, dict(horizon=0.35, horizon_start=5), dict(horizon=0.9, horizon_trace="updates")],
    ids=["one step", "late horizon", "trace of updates"],
)
@pytest.mark.parametrize("granularity", ["parameter", "tensor"])
def test_nonfinite_gradients_with_the_adam_direction(granularity, options):
    # The Adam direction's trace is the update's own input at γ = 0, and a discounted sum
    # of them past ``horizon_start``: bad gradient elements must reach neither it nor the
    # rates, before the horizon starts or after.
    direction = optax_promotion(optax.scale_by_adam())
    tx = lrr_optax.learning_rate_rates(
        1e-2, direction=direction, granularity=granularity, **options
    )
    update = jax.jit(tx.update)
    initial = PROBLEM.params(jnp.float64)
    for bad in (np.nan, np.inf):
        params, state = initial, tx.init(initial)
        for n in range(12):
            grads = jax.grad(PROBLEM.loss)(params, n)
            if n in (3, 6):
                grads = {"w": grads["w"].at[0, 0].set(bad), "b": grads["b"]}
            if n == 8:
                grads = jax.tree.map(lambda g, bad=bad: jnp.full_like(g, bad), grads)
            updates, state = update(grads, state, params)
            for leaf in jax.tree.leaves((state, updates)):
                assert np.all(np.isfinite(leaf))
            params = optax.apply_updates(params, updates)
        assert PROBLEM.loss(params, 0) < PROBLEM.loss(initial, 0)


@pytest.mark.parametrize("granularity", ["parameter", "tensor", "global"])
def test_an_overflowing_direction_never_reaches_the_rates(granularity):
    # A direction that overflows in one element: its step is inf there (as the direction
    # asks) and the trace holds it, but the next hypergradient leaves it out: that element's
    # product where each element has a rate, the whole sum where a leaf or the tree has one
    # (the rate holds for the step), and the step after, the rates move again.
    direction = optax.stateless(lambda g, _: jax.tree.map(jnp.exp, g))
    tx = lrr_optax.learning_rate_rates(1e-3, direction=direction, granularity=granularity)
    step = jax.jit(lrr_optax.update_with_hypergradients(tx))
    params = {"w": jnp.ones(4, jnp.float32), "b": jnp.ones(2, jnp.float32)}
    grads = {
        "w": jnp.asarray([100.0, 0.0, np.log(2.0), np.log(3.0)], jnp.float32),
        "b": jnp.zeros(2, jnp.float32),
    }
    updates, state, _ = step(grads, tx.init(params))
    assert np.isinf(updates["w"][0]) and np.all(np.isfinite(updates["w"][1:]))
    trace = {k: np.asarray(v, np.float64) for k, v in state.prev_direction.items()}
    before = state
    half = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    updates, state, aux = step(half, state)
    h0 = aux.hypergradients[0]
    if granularity == "parameter":
        finite_w = np.where(np.isfinite(trace["w"]), trace["w"], 0.0)
        expected = {"w": -0.5 * finite_w, "b": -0.5 * trace["b"]}
        for name in expected:
            np.testing.assert_allclose(h0[name], expected[name], rtol=1e-6)
    elif granularity == "tensor":
        np.testing.assert_array_equal(h0["w"], 0.0)
        np.testing.assert_allclose(h0["b"], -0.5 * trace["b"].sum(), rtol=1e-6)
        np.testing.assert_array_equal(state.etas[0]["w"], before.etas[0]["w"])
    else:
        # The leaf that overflowed is left out of the tree's sum; the other one counts.
        np.testing.assert_allclose(h0, -0.5 * trace["b"].sum(), rtol=1e-6)
    for leaf in jax.tree.leaves((state, updates)):
        assert np.all(np.isfinite(leaf))
    moved = state
    _, state, aux = step(half, state)
    assert all(np.all(h != 0) for h in jax.tree.leaves(aux.hypergradients[0]))
    for new, old in zip(jax.tree.leaves(state.etas[0]), jax.tree.leaves(moved.etas[0])):
        assert np.all(new != old)


# --- arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(schedule="sideways"), "schedule"),
        (dict(granularity="row"), "granularity"),
        (dict(rule="magic"), "rule"),
        (dict(granularity=("parameter",)), "one per adapted order"),
        (dict(granularity=("global", "parameter")), "finer"),
        (dict(learning_rate=-1.0), "non-negative"),
        (dict(rates=(-1e-3, 1e-4)), "non-negative"),
        (dict(rates=(1e-3, float("nan"))), "non-negative"),
        (dict(clip=0.0), "clip must be positive"),
        (dict(clip=(1.0,)), "one per"),
        (dict(bounds=(1.0, 0.0)), "lo <= hi"),
        (dict(bounds=(1.0,)), "pair"),
        (dict(rates=(optax.constant_schedule(1e-3), 1e-4)), "only the top rate"),
        (dict(state_dtype=jnp.int32), "floating"),
        (dict(normalizer_decay=1.0), "normalizer_decay"),
    ],
)
def test_bad_arguments_raise_at_build_time(kwargs, match):
    kwargs = {"learning_rate": 0.1, "rates": (1e-3, 1e-4), **kwargs}
    with pytest.raises(ValueError, match=match):
        lrr_optax.learning_rate_rates(**kwargs)


def test_direction_must_be_a_transformation():
    with pytest.raises(TypeError, match="GradientTransformation"):
        lrr_optax.learning_rate_rates(0.1, (1e-3,), direction=optax.adam)


def test_traced_rates_are_accepted_and_vmapped():
    params = PROBLEM.params(jnp.float64)
    grads = jax.grad(PROBLEM.loss)(params, 0)

    def two_steps(lr, rate):
        tx = lrr_optax.learning_rate_rates(lr, (rate, 1e-3))
        state = tx.init(params)
        _, state = tx.update(grads, state, params)
        updates, state = tx.update(grads, state, params)
        return updates, state.etas[0]

    lrs = jnp.asarray([1e-3, 1e-2, 1e-1])
    updates, etas = jax.jit(jax.vmap(two_steps))(lrs, jnp.full(3, 1e-2))
    for k, lr in enumerate(lrs):
        expected_updates, expected_eta = two_steps(float(lr), 1e-2)
        np.testing.assert_allclose(updates["w"][k], expected_updates["w"], rtol=1e-12)
        np.testing.assert_allclose(etas["w"][k], expected_eta["w"], rtol=1e-12)


def test_top_rate_schedule():
    schedule = optax.exponential_decay(1e-2, 5, 0.5)
    tx = lrr_optax.learning_rate_rates(0.05, (schedule,), bounds=None, **ORIGINAL)
    impl_step = jax.jit(lrr_optax.update_with_hypergradients(tx))
    params = PROBLEM.params(jnp.float64)
    state = tx.init(params)
    for n in range(6):
        before = state.etas[0]
        _, state, aux = impl_step(jax.grad(PROBLEM.loss)(params, n), state, params)
        rate = jnp.asarray(schedule(jnp.asarray(n, jnp.int32))).astype(jnp.float64)
        expected = jax.tree.map(lambda e, h, rate=rate: e - rate * h, before, aux.hypergradients[0])
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12), state.etas[0], expected
        )


# --- each rule's first steps, exactly --------------------------------------------------------

RULES = ("additive", "normalized", "multiplicative", "log_normalized")


def _hooked_run(tx, steps, problem=PROBLEM):
    """Eager steps through the public debug hook: (grads, state before, aux, state after)."""
    hooked = lrr_optax.update_with_hypergradients(tx)
    params = problem.params(jnp.float64)
    state = tx.init(params)
    records = []
    for n in range(steps):
        grads = jax.grad(problem.loss)(params, n)
        updates, new_state, aux = hooked(grads, state, params)
        records.append((grads, state, aux, new_state))
        params, state = optax.apply_updates(params, updates), new_state
    return records


@pytest.mark.parametrize("clip", [None, 0.5])
@pytest.mark.parametrize("rule", RULES)
def test_first_steps_of_each_rule_are_exact(rule, clip):
    """Order 1 on SGD, per parameter, no bounds: h, η and α of the first three steps.

    At the first active step the normaliser's debiased v̂ is u² exactly, so a normalised
    rule moves η by exactly −ρ·sign(h) ("normalized") or to η·exp(−ρ·sign(η·h))
    ("log_normalized"), before the clip.
    """
    rho, beta = 0.02, 0.9
    tx = lrr_optax.learning_rate_rates(
        0.05,
        (rho,),
        granularity="parameter",
        rule=rule,
        clip=clip,
        bounds=None,
        normalizer_decay=beta,
        normalizer_eps=1e-30,
        **PLAIN_STEPS,
    )
    records = _hooked_run(tx, 3)
    c = np.inf if clip is None else clip
    log = rule in ("multiplicative", "log_normalized")
    moment = 0.0
    prev_grads = None
    for n, (grads, before, aux, after) in enumerate(records):
        eta, new_eta = _flat(before.etas[0]), _flat(after.etas[0])
        h = _flat(aux.hypergradients[0])
        g = _flat(grads)
        # h⁽⁰⁾_n = −g_n ⊙ d_{n−1}, with d = g (SGD) and d₋₁ = 0.
        np.testing.assert_array_equal(h, 0.0 if prev_grads is None else -g * prev_grads)
        prev_grads = g
        if n == 0:
            np.testing.assert_array_equal(new_eta, eta)  # nothing to adapt on yet
            continue
        u = eta * h if log else h
        if rule in ("normalized", "log_normalized"):
            k = n  # the steps h⁽⁰⁾ has existed: 1 at the first active step
            moment = beta * moment + (1 - beta) * u**2
            s = u / np.sqrt(moment / (1 - beta**k))
            if k == 1:
                np.testing.assert_allclose(s, np.sign(u), rtol=1e-15)
        else:
            s = u
        s = np.clip(s, -c, c)
        expected = eta * np.exp(-rho * s) if log else eta - rho * s
        np.testing.assert_allclose(new_eta, expected, rtol=1e-14)
        alpha = -expected * s if log else -s
        np.testing.assert_allclose(_flat(aux.alphas[0]), alpha, rtol=1e-13)


@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
def test_each_order_chains_through_alpha_from_its_lag(schedule):
    """h⁽ʲ⁾_n = h⁽ʲ⁻¹⁾_n ⊙ α⁽ʲ⁻¹⁾_{n−L_j}, L_j = j (simultaneous) or 1 (cascade)."""
    order = 4
    tx = lrr_optax.learning_rate_rates(
        0.05, (0.5,) * order, bounds=None, **{**ORIGINAL, "schedule": schedule}
    )
    records = _hooked_run(tx, 12)
    for n, (_, _, aux, _) in enumerate(records):
        for j in range(1, order):
            lag = j if schedule == "simultaneous" else 1
            alpha = records[n - lag][2].alphas[j - 1] if n >= lag else None
            h_below = _flat(aux.hypergradients[j - 1])
            expected = np.zeros_like(h_below) if alpha is None else h_below * _flat(alpha)
            np.testing.assert_array_equal(_flat(aux.hypergradients[j]), expected)
    # Every order's hypergradient was non-zero by the end: the check tested something.
    assert all(np.any(_flat(h) != 0) for h in records[-1][2].hypergradients)


# --- dtypes, long runs, rates that stay non-negative --------------------------------------

INITIAL = (0.05, 1e-2, 1e-3)  # η⁽⁰⁾, η⁽¹⁾, η⁽²⁾ initial values
TOP = 1e-3
INT32_MAX = int(np.iinfo(np.int32).max)


def _tx3(**options):
    return lrr_optax.learning_rate_rates(INITIAL[0], (*INITIAL[1:], TOP), **options)


# --- dtypes ----------------------------------------------------------------------------------


def _mean_loss(params, batches=12):
    """The loss over the training batches, in float32: one batch alone is too noisy."""
    params = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    return np.mean([float(PROBLEM.loss(params, n)) for n in range(batches)])


@pytest.mark.parametrize(
    "horizon", [{}, dict(horizon=0.9, horizon_trace="updates")], ids=["one step", "updates"]
)
@pytest.mark.parametrize("state_dtype", [None, jnp.float32])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16, jnp.float64])
def test_training_in_each_dtype(dtype, state_dtype, horizon):
    # No warm-up: 12 steps of a ramp from 1e-3 are below float16's resolution.
    tx = _tx3(state_dtype=state_dtype, rule="normalized", **PLAIN_STEPS, **horizon)
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
    initial = [np.float64(INITIAL[j]).astype(rates_dtype) for j in range(len(state.etas))]
    moved = [False] * len(state.etas)
    for n in range(12):
        updates, state = step(params, state, n)
        for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
            assert u.dtype == p.dtype  # updates always in the params' dtype
        params = optax.apply_updates(params, updates)
        for j, eta in enumerate(state.etas):
            # A rate that moved and came back (steps of ±η⁽ʲ⁺¹⁾) still adapted.
            moved[j] |= bool(np.any(np.asarray(eta["w"], np.float64) != initial[j]))
    assert jax.tree.map(jax.typeof, state) == types
    for leaf in jax.tree.leaves((state.etas, state.alphas)):
        assert leaf.dtype == rates_dtype
        assert np.all(np.isfinite(np.asarray(leaf, np.float64)))
    for leaf in jax.tree.leaves(state.second_moments):
        assert leaf.dtype == moment_dtype
    assert jax.tree.leaves(state.prev_direction)[0].dtype == stored
    assert _mean_loss(params) < initial_loss
    # Every order's rate adapts, even the small top-but-one, in half precision too.
    assert all(moved)


@pytest.mark.parametrize("granularity", ["parameter", "tensor", "global"])
def test_mixed_precision_params_with_a_float32_state(granularity):
    params = {"w": jnp.full((3, 2), 0.3, jnp.bfloat16), "b": jnp.asarray([0.1, -0.2], jnp.float16)}

    def loss(params, n):
        x, y = jax.random.normal(jax.random.fold_in(jax.random.key(0), n), (2, 5, 2), jnp.float32)
        w, b = (p.astype(jnp.float32) for p in (params["w"][:2], params["b"]))
        return jnp.mean(jnp.square(jnp.tanh(x @ w + b) - y))

    tx = _tx3(state_dtype=jnp.float32, granularity=granularity)
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


# --- long runs and the counter ---------------------------------------------------------------

# Orders 0 … 4 at the simultaneous schedule: rings of sizes L = 1, 2, 3, 4.
LONG_RATES = (1e-6, 1e-6, 1e-6, 1e-6, 1e-8)


def _long_tx3():
    return lrr_optax.learning_rate_rates(
        1e-3, LONG_RATES, bounds=None, granularity="parameter", schedule="simultaneous"
    )


def _gradient(n):
    # Independent of the params, different at every step, never zero.
    return {"w": 0.5 + jnp.sin(0.3 * n.astype(jnp.float64) + jnp.arange(2.0))}


def test_a_million_steps_keep_the_counter_and_the_ring():
    tx = _long_tx3()
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
    tx = _long_tx3()
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


# --- granularities: property tests on random pytrees ---------------------------------------

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
    granularities = ("parameter", "tensor", "global")

    @jax.jit  # one compilation per drawn tree rather than one per granularity and step
    def two_steps(params, grads):
        etas, hypergradients = {}, {}
        for granularity in granularities:
            tx = lrr_optax.learning_rate_rates(0.1, (1e-2,), granularity=granularity)
            step = lrr_optax.update_with_hypergradients(tx)
            _, state, _ = step(grads[0], tx.init(params), params)
            _, _, aux = step(grads[1], state, params)
            etas[granularity] = state.etas[0]
            hypergradients[granularity] = aux.hypergradients[0]
        return etas, hypergradients

    etas, hypergradients = two_steps(params, grads)
    # Each rate has the shape its granularity prescribes.
    jax.tree.map(lambda e, p: np.testing.assert_equal(e.shape, p.shape), etas["parameter"], params)
    jax.tree.map(lambda e: np.testing.assert_equal(e.shape, ()), etas["tensor"])
    assert etas["global"].shape == ()
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


@functools.partial(jax.jit, static_argnames="spike_rescale")
def _rates_under_scaled_loss(factor, jump_at, *, spike_rescale=True):
    """η⁽⁰⁾, η⁽¹⁾ after each of 40 steps and the final parameters, with the loss times
    ``factor``, the initial rate 0.05/``factor`` and a 1000-fold jump at step ``jump_at``
    (all traced: one program for every example)."""
    tx = lrr_optax.learning_rate_rates(0.05 / factor, spike_rescale=spike_rescale)
    params = PROBLEM.params(jnp.float64)

    def step(carry, n):
        params, state = carry
        jump = jnp.where(n == jump_at, -1000.0, 1.0)
        grads = jax.tree.map(lambda g: factor * jump * g, jax.grad(PROBLEM.loss)(params, n))
        updates, state = tx.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), state.etas

    (params, _), etas = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(40))
    return etas, params


@settings(max_examples=6, deadline=None)
@given(scale=st.floats(-3.0, 3.0), jump_at=st.integers(12, 30))
def test_the_default_rates_do_not_see_the_loss_scale(scale, jump_at):
    # log_normalized moves a rate by a normalised signal, the spike and its rescale by
    # ratios: the loss times c with the initial rate over c takes the same steps, η⁽⁰⁾ c
    # times smaller, through a gradient that jumps 1000-fold (spike and rescale).
    c = 10.0**scale

    def close(a, b):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-8), a, b)

    (base_etas, base_params), (etas, params) = (
        _rates_under_scaled_loss(jnp.float64(f), jump_at) for f in (1.0, c)
    )
    close(base_etas[0], jax.tree.map(lambda e: c * e, etas[0]))
    close(base_etas[1], etas[1])
    close(base_params, params)
    # The jump is one the rescale acts on.
    plain, _ = _rates_under_scaled_loss(jnp.float64(1.0), jump_at, spike_rescale=False)
    assert not np.allclose(plain[0]["w"][-1], base_etas[0]["w"][-1], rtol=1e-3)
