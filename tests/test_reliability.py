"""``learning_rate_rates`` where a careful user breaks it: each test is one reproducer.

Meta-gradients, low precision, complex parameters, states from other configurations,
overflowing gradients and arguments that must be refused with a message saying what to do.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lrr_optax

from .problems import optax_promotion

T = lrr_optax.learning_rate_rates
P = {"w": jnp.linspace(-1.0, 1.0, 6)}


def _loss(p):
    return jnp.sum((p["w"] - 0.5) ** 2)


# --- 1. derivatives through update (meta-learning) -------------------------------------------


@pytest.mark.parametrize("rule", lrr_optax.RULES)
def test_meta_gradient_through_update_matches_finite_differences(rule):
    def loss_after(lr):
        tx = T(lr, (0.3, 0.01), rule=rule, granularity="parameter")
        params, state = P, tx.init(P)
        for _ in range(3):
            updates, state = tx.update(jax.grad(_loss)(params), state, params)
            params = optax.apply_updates(params, updates)
        return _loss(params)

    lr = jnp.asarray(0.1)
    grad = jax.jit(jax.grad(loss_after))(lr)
    step = 1e-6
    # Compiled: op by op, the three unrolled steps took 5-10 s a rule.
    loss_at = jax.jit(loss_after)
    fd = (loss_at(lr + step) - loss_at(lr - step)) / (2 * step)
    assert np.isfinite(grad)
    np.testing.assert_allclose(grad, fd, rtol=1e-3)

    # And with respect to the parameters themselves.
    tx = T(0.1, (0.3, 0.01), rule=rule)
    grads = jax.grad(
        lambda p: _loss(optax.apply_updates(p, tx.update(jax.grad(_loss)(p), tx.init(p), p)[0]))
    )(P)
    assert np.all(np.isfinite(grads["w"]))


# --- 2. inject_hyperparams on every factory ---------------------------------------------------

FACTORIES = {
    "learning_rate_rates": T,
    "lrr_sgd": lrr_optax.lrr_sgd,
    "lrr_adam": lrr_optax.lrr_adam,
    "lrr_adamw": lrr_optax.lrr_adamw,
}


@pytest.mark.parametrize("name", FACTORIES)
def test_inject_hyperparams_wraps_every_factory(name):
    factory = FACTORIES[name]
    with jax.numpy_dtype_promotion("standard"):  # optax's injection promotes on its own
        plain = factory(1e-2)
        injected = optax.inject_hyperparams(factory)(learning_rate=1e-2)
        params = {"w": jnp.linspace(-1.0, 1.0, 4)}
        grads = {"w": jnp.asarray([0.5, -0.2, 0.1, 0.3])}
        state, state_i = plain.init(params), injected.init(params)
        for _ in range(3):
            updates, state = plain.update(grads, state, params)
            updates_i, state_i = injected.update(grads, state_i, params)
            np.testing.assert_allclose(updates_i["w"], updates["w"], rtol=1e-6)
    assert float(state_i.hyperparams["learning_rate"]) == 1e-2


# --- 3. summarize in low precision ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_summarize_reduces_in_at_least_float32(dtype):
    tx = T(0.01, (0.3, 0.01), granularity="parameter", state_dtype=dtype)
    state = tx.init({"w": jnp.zeros((1000, 1000), dtype)})
    stats = lrr_optax.summarize(state)
    stored = float(jnp.asarray(0.01, dtype))
    np.testing.assert_allclose(float(stats["eta0/mean"]), stored, rtol=1e-5)
    assert float(stats["eta0/min"]) == float(stats["eta0/max"]) == stored


# --- 4. half-precision parameters: the rates move ---------------------------------------------


def test_float16_parameters_adapt_their_rates():
    params = {"w": jnp.linspace(-1.0, 1.0, 8, dtype=jnp.float16)}

    def loss(p):
        # Small gradients, as deep in training: the rule's squared signal underflows float16.
        return 1e-2 * jnp.sum((p["w"].astype(jnp.float32) - 0.5) ** 2)

    tx = lrr_optax.lrr_sgd(1e-2)
    state = tx.init(params)
    update = jax.jit(tx.update)
    for _ in range(100):
        updates, state = update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert updates["w"].dtype == jnp.float16
    eta0 = float(state.etas[0]["w"])
    assert eta0 != pytest.approx(1e-2, rel=1e-3)
    assert float(loss(params)) < float(loss({"w": jnp.linspace(-1.0, 1.0, 8, dtype=jnp.float16)}))


# --- 5. complex parameters --------------------------------------------------------------------


def test_complex_parameters_follow_the_real_pair_problem():
    # optax's convention: the update descends along the conjugated JAX gradient.
    target = jnp.asarray([1.0 + 2.0j, -0.5 + 0.25j, 0.3 - 1.0j])
    z0 = jnp.asarray([0.1 + 0.0j, 0.2 - 0.3j, -0.4 + 0.5j])

    def complex_loss(z):
        return jnp.sum(jnp.abs(z - target) ** 2)

    def pair_loss(xy):
        return complex_loss(jax.lax.complex(xy[0], xy[1]))

    kwargs = dict(granularity="global", rule="log_normalized")
    tx_c, tx_r = T(0.05, (0.3, 0.01), **kwargs), T(0.05, (0.3, 0.01), **kwargs)
    z, xy = z0, jnp.stack([z0.real, z0.imag])
    state_c, state_r = tx_c.init(z), tx_r.init(xy)

    @jax.jit
    def step(z, xy, state_c, state_r):
        u_c, state_c = tx_c.update(jnp.conj(jax.grad(complex_loss)(z)), state_c, z)
        u_r, state_r = tx_r.update(jax.grad(pair_loss)(xy), state_r, xy)
        return optax.apply_updates(z, u_c), optax.apply_updates(xy, u_r), state_c, state_r, u_c

    for _ in range(20):
        z, xy, state_c, state_r, u_c = step(z, xy, state_c, state_r)
    assert u_c.dtype == z0.dtype
    assert state_c.etas[0].dtype == jnp.float64  # rates are real
    np.testing.assert_allclose(z.real, xy[0], rtol=1e-12)
    np.testing.assert_allclose(z.imag, xy[1], rtol=1e-12)
    np.testing.assert_allclose(state_c.etas[0], state_r.etas[0], rtol=1e-12)


def test_complex_parameters_with_the_adam_direction():
    target = jnp.asarray([1.0 + 2.0j, -0.5 + 0.25j], jnp.complex64)
    z = jnp.zeros(2, jnp.complex64)
    tx = optax_promotion(lrr_optax.lrr_adam(0.1))
    state = tx.init(z)

    @jax.jit
    def step(z, state):
        g = jnp.conj(jax.grad(lambda z: jnp.sum(jnp.abs(z - target) ** 2))(z))
        u, state = tx.update(g, state, z)
        return optax.apply_updates(z, u), state

    for _ in range(200):
        z, state = step(z, state)
    np.testing.assert_allclose(z, target, atol=0.05)


# --- 6-8, 11. arguments refused when the transformation is built -------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(learning_rate=float("inf")), ValueError, "finite"),
        (dict(rates=(float("inf"), 0.01)), ValueError, "finite"),
        (dict(rates=(0.3, float("nan"))), ValueError, "finite"),
        (dict(learning_rate=0.0), ValueError, "stay 0"),
        (dict(learning_rate=0.0, rule="multiplicative"), ValueError, "stay 0"),
        (dict(rates=(0.0, 0.01)), ValueError, "stay 0"),
        (dict(bounds=(float("nan"), None)), ValueError, "numbers"),
        (dict(bounds=((0.0, 1.0), (0.0, None), (0.0, None))), ValueError, "per adapted order"),
        (dict(normalizer_eps=float("nan")), ValueError, "normalizer_eps"),
        (dict(normalizer_decay=float("nan")), ValueError, "normalizer_decay"),
        (dict(rates=0.01), TypeError, r"rates=\(0.01,\)"),
        (dict(granularity=None), TypeError, "granularity must be one of"),
        (dict(clip="1.0"), TypeError, "clip must be a positive number"),
        (dict(clip=-1.0), ValueError, "positive"),
        (dict(horizon=1.0), ValueError, "horizon"),
        (dict(horizon_start=-1), ValueError, "horizon_start must be finite and >= 0"),
        (dict(horizon_trace="steps"), ValueError, "horizon_trace 'steps'; pass one of"),
        (dict(horizon_start=2.5), TypeError, "horizon_start is a number of steps"),
        (dict(horizon_start=True), TypeError, "horizon_start is a number of steps"),
        (dict(warmup_steps=True), TypeError, "warmup is a number of steps"),
        (dict(anneal_steps=0), ValueError, "anneal_steps must be >= 1"),
        (dict(anneal_steps="30"), TypeError, "anneal_steps must be a number"),
        (dict(anneal_steps=True), TypeError, "anneal_steps is a number of steps"),
        (dict(spike_threshold=0.0), ValueError, "spike_threshold must be finite and > 0"),
        (dict(spike_threshold=-1.0), ValueError, "spike_threshold must be finite"),
        (dict(spike_threshold=float("inf")), ValueError, "spike_threshold must be finite"),
        (dict(spike_threshold="5"), TypeError, "spike_threshold must be a number"),
        (dict(spike_threshold=False), TypeError, "spike_threshold is a number"),
        (dict(spike_rescale=1), TypeError, "spike_rescale is True or False"),
        (dict(spike_rescale=None), TypeError, "spike_rescale is True or False"),
        (dict(spike_rescale_start=-1), ValueError, "spike_rescale_start must be finite"),
        (dict(spike_rescale_start=2.5), TypeError, r"or None: when the warm-up ends"),
        (dict(spike_rescale_start=True), TypeError, "spike_rescale_start is a number of steps"),
        (dict(spike_rescale_threshold=0.0), ValueError, "spike_rescale_threshold must be"),
        (dict(spike_rescale_threshold=-1.0), ValueError, "spike_rescale_threshold must be"),
        (dict(spike_rescale_threshold=True), TypeError, "spike_rescale_threshold is a number"),
        (dict(spike_rescale_threshold="30"), TypeError, "spike_rescale_threshold must be a"),
        (dict(warmup_steps=2.5), TypeError, "int"),
        (dict(warmup_start=0.0), ValueError, "warmup_start"),
        (dict(schedule="async"), ValueError, "'simultaneous', 'cascade'"),
        (dict(element_share=0.1), ValueError, "granularity='parameter'"),
        (dict(anchor=0.01, granularity="global"), ValueError, "granularity='parameter'"),
        (
            dict(element_share=0.1, granularity="parameter", rule="additive"),
            ValueError,
            "no normaliser",
        ),
        (dict(element_share=-0.1, granularity="parameter"), ValueError, "element_share"),
        (dict(element_share="0.1", granularity="parameter"), TypeError, "element_share"),
        (dict(element_share=True, granularity="parameter"), TypeError, "element_share"),
        (dict(anchor=1.0, granularity="parameter"), ValueError, "anchor must be in"),
        (dict(anchor=float("nan"), granularity="parameter"), ValueError, "anchor"),
    ],
)
def test_bad_arguments_say_what_to_pass(kwargs, error, match):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(error, match=match):
        T(**kwargs)


def test_zero_rates_are_fine_for_additive_rules_and_the_top():
    T(0.0, rule="additive")
    T(0.1, (0.3, 0.0))  # the top rate may be 0: it freezes the order below


def test_a_shaped_rate_never_reshapes_parameters():
    scalar_param = {"b": jnp.asarray(0.5)}
    with pytest.raises(ValueError, match="would change a parameter"):
        T(jnp.array([0.1]), granularity="parameter").init(scalar_param)
    with pytest.raises(ValueError, match="granularity='parameter'"):
        T(jnp.array([0.1, 0.2])).init({"w": jnp.zeros(2)})
    # A rate that broadcasts to every leaf is fine, and leaves shapes alone.
    params = {"w": jnp.zeros((3, 2))}
    tx = T(jnp.array([0.1, 0.2]), granularity="parameter")
    updates, _ = tx.update({"w": jnp.ones((3, 2))}, tx.init(params), params)
    assert updates["w"].shape == (3, 2)


def test_bounds_per_order():
    tx = T(0.1, (0.3, 0.01), bounds=((0.0, 1e-3), (0.0, None)), granularity="global")
    state = tx.init(P)
    _, state = tx.update(jax.grad(_loss)(P), state, P)
    assert float(state.etas[0]) <= 1e-3
    assert float(state.etas[1]) == pytest.approx(0.3)  # not pulled down to 1e-3


# --- 9. a state from another configuration ---------------------------------------------------


@pytest.mark.parametrize(
    "saved, now, match",
    [
        (dict(schedule="simultaneous"), dict(), "schedule"),
        (dict(granularity="parameter"), dict(), "granularity"),
        (dict(), dict(granularity="global"), "granularity"),
        (dict(rule="additive"), dict(), "rule"),
        (dict(), dict(rates=(0.3, 0.01, 0.001, 1e-4)), "rates"),
        (dict(rates=(0.01,)), dict(), "rates"),
        (
            dict(granularity="parameter", element_share=0.1),
            dict(granularity="parameter"),
            "element_share",
        ),
        (
            dict(granularity="parameter"),
            dict(granularity="parameter", element_share=0.1),
            "element_share",
        ),
    ],
)
def test_a_state_from_other_options_is_refused(saved, now, match):
    base = dict(learning_rate=0.1, rates=(0.3, 0.01, 1e-3))
    state = T(**{**base, **saved}).init(P)
    tx = T(**{**base, **now})
    with pytest.raises(ValueError, match=match):
        jax.jit(tx.update)(jax.grad(_loss)(P), state, P)


def test_a_state_for_other_parameters_is_refused():
    state = T(0.1).init({"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="Init the state"):
        T(0.1).update({"w": jnp.zeros(4)}, state)


# --- 10. one huge finite gradient --------------------------------------------------------------


def test_a_huge_gradient_leaves_the_adam_state_finite():
    params = {"w": jnp.zeros(3, jnp.float32)}
    tx = optax_promotion(lrr_optax.lrr_adam(0.1))
    state = tx.init(params)
    huge = {"w": jnp.asarray([1e20, 1.0, -1.0], jnp.float32)}
    _, state = tx.update(huge, state, params)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(state))
    updates, state = tx.update({"w": jnp.ones(3, jnp.float32)}, state, params)
    assert np.all(np.isfinite(updates["w"]))
    assert np.all(updates["w"] != 0)  # every parameter still moves


# --- the envelope, the warm-up ramp and the horizon: exact hypergradients (float64 oracle) ----


def _oracle_h0(
    problem_loss,
    params,
    *,
    lr,
    beta,
    horizon,
    envelope,
    ramp,
    steps,
    granularity,
    start=0,
    relative=False,
):
    """∂J(θ_N)/∂δ where every past η⁽⁰⁾_k is perturbed by γ_{k+1}⋯γ_{N−1}·δ, gradients held
    constant; γ_i = γ from step ``start`` on, 0 before it. ``relative``: perturbed by that
    times η⁽⁰⁾_k/η⁽⁰⁾_{N−1} instead, the trace summing the updates (``horizon_trace``)."""
    sg = jax.lax.stop_gradient
    gammas = [horizon if i >= start else 0.0 for i in range(steps)]

    def weight(n):
        return float(np.prod(gammas[n + 1 : steps]))

    def run(delta, last_eta):
        theta, eta, u = params, lr, jax.tree.map(jnp.zeros_like, params)
        for n in range(steps + 1):
            g = sg(jax.grad(problem_loss)(theta, n))
            if n == steps:
                return problem_loss(theta, n), eta
            h = jax.tree.map(lambda g, u: -g * u, g, u)
            if granularity == "global":
                h = sum(jnp.sum(x) for x in jax.tree.leaves(h))
                h = h / eta if relative else h
                eta = eta - beta * h
                scale = eta / last_eta if relative else 1.0
                used = eta + weight(n) * delta * scale
                used = jax.tree.map(lambda _, used=used: used, g)
            else:
                if relative:
                    h = jax.tree.map(jnp.divide, h, eta)
                eta = jax.tree.map(lambda e, h: e - beta * h, eta, h)
                w = weight(n)
                used = jax.tree.map(
                    lambda e, d, last, w=w: e + w * d * (e / last if relative else 1.0),
                    eta,
                    delta,
                    last_eta,
                )
            # The schedule sees the step count as the library does, an int32.
            s = jnp.asarray(envelope(jnp.asarray(n, jnp.int32))).astype(jnp.float64) * ramp(n)
            theta = jax.tree.map(lambda p, e, g, s=s: p - s * e * g, theta, used, g)
            rates = jax.tree.map(lambda _, e=eta: e, g) if granularity == "global" else eta
            applied = jax.tree.map(lambda e, g, s=s: s * (e if relative else 1.0) * g, rates, g)
            u = jax.tree.map(lambda a, u, c=gammas[n]: a + c * u, applied, u)

    zero = 0.0 if granularity == "global" else jax.tree.map(jnp.zeros_like, params)
    zero = jnp.asarray(zero) if granularity == "global" else zero
    # The rates do not depend on δ (gradients held constant): a first run finds η⁽⁰⁾_{N−1}.
    _, last_eta = run(zero, lr)
    return jax.grad(lambda delta: run(delta, sg(last_eta))[0])(zero)


@pytest.mark.parametrize("granularity", ["parameter", "global"])
@pytest.mark.parametrize(
    "horizon, schedule, warmup_steps, horizon_start, horizon_trace",
    [
        (0.0, True, 0, 0, "directions"),
        (0.7, False, 0, 0, "directions"),
        (0.0, False, 4, 0, "directions"),
        (0.5, True, 3, 0, "directions"),
        (0.7, True, 3, 4, "directions"),
        (0.7, False, 0, 0, "updates"),
        (0.5, True, 3, 2, "updates"),
    ],
    ids=[
        "envelope",
        "horizon",
        "warmup",
        "all",
        "late horizon",
        "trace of updates",
        "trace of updates, all",
    ],
)
def test_envelope_warmup_and_horizon_hypergradients_are_exact(
    granularity, horizon, schedule, warmup_steps, horizon_start, horizon_trace
):
    from .problems import PROBLEMS

    problem = PROBLEMS["regression"]
    params = problem.params(jnp.float64)
    beta, steps, start = 0.05, 7, 0.1
    sched = optax.exponential_decay(0.2, transition_steps=1, decay_rate=0.9)
    envelope = sched if schedule else (lambda n: 1.0)
    lr = 1.0 if schedule else 0.2

    def ramp(n):
        return start ** max(0.0, 1 - n / warmup_steps) if n < warmup_steps else 1.0

    tx = T(
        sched if schedule else lr,
        (beta,),
        granularity=granularity,
        rule="additive",
        clip=None,
        bounds=None,
        horizon=horizon,
        horizon_start=horizon_start,
        horizon_trace=horizon_trace,
        warmup_steps=warmup_steps,
        warmup_start=start,
        anneal_steps=None,  # the NumPy oracle of tests/oracle.py checks the annealing
    )
    step = jax.jit(lrr_optax.update_with_hypergradients(tx))
    state, theta = tx.init(params), params
    for n in range(steps + 1):
        updates, state, aux = step(jax.grad(problem.loss)(theta, n), state, theta)
        theta = optax.apply_updates(theta, updates)
    expected = _oracle_h0(
        problem.loss,
        params,
        lr=lr if granularity == "global" else jax.tree.map(lambda p: jnp.full_like(p, lr), params),
        beta=beta,
        horizon=horizon,
        envelope=envelope,
        ramp=ramp,
        steps=steps,
        granularity=granularity,
        start=horizon_start,
        relative=horizon_trace == "updates",
    )
    actual = aux.hypergradients[0]
    flat = lambda t: np.concatenate([np.ravel(x) for x in jax.tree.leaves(t)])  # noqa: E731
    scale = np.max(np.abs(flat(expected)))
    assert scale > 0
    assert np.max(np.abs(flat(actual) - flat(expected))) / scale < 1e-10


@pytest.mark.parametrize("granularity", ["parameter", "tensor"])
def test_a_trace_of_updates_at_a_horizon_of_0_is_the_one_step_hypergradient(granularity):
    # A traced γ (here 0) runs the trace of updates, where a concrete 0 keeps the one-step
    # trace: it divides s·η·d by η again, so rates, updates and h⁽⁰⁾ match to rounding.
    from .problems import PROBLEMS

    problem = PROBLEMS["regression"]
    params = problem.params(jnp.float64)

    def run(horizon, horizon_trace):
        direction = optax_promotion(optax.scale_by_adam())
        tx = T(
            0.05,
            direction=direction,
            granularity=granularity,
            horizon=horizon,
            horizon_trace=horizon_trace,
        )
        step = lrr_optax.update_with_hypergradients(tx)
        state, theta, hs = tx.init(params), params, []
        for n in range(6):
            updates, state, aux = step(jax.grad(problem.loss)(theta, n), state, theta)
            theta = optax.apply_updates(theta, updates)
            hs.append(aux.hypergradients[0])
        return theta, state.etas, hs

    traced = jax.jit(run, static_argnums=1)
    zero = jnp.zeros((), jnp.float64)
    chex.assert_trees_all_close(
        traced(zero, "updates"), traced(zero, "directions"), rtol=1e-12, atol=0
    )
    # From γ > 0 on the two traces differ: the option is not a no-op.
    half = jnp.full((), 0.5, jnp.float64)
    with pytest.raises(AssertionError):
        chex.assert_trees_all_close(traced(half, "updates"), traced(half, "directions"), rtol=1e-6)
