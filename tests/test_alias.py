"""The aliases ``lrr_sgd``, ``lrr_adam``, ``lrr_adamw`` against their explicit spelling."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lrr_optax

from .problems import optax_promotion, rates_through_a_jump, train


@pytest.mark.parametrize("momentum,nesterov", [(None, False), (0.9, False), (0.9, True)])
def test_lrr_sgd(momentum, nesterov):
    alias = lrr_optax.lrr_sgd(0.05, (1e-2, 1e-3), momentum=momentum, nesterov=nesterov)
    direction = None if momentum is None else optax.trace(momentum, nesterov)
    # lrr_sgd's own defaults: a horizon of 0.9 and a 200-step ramp.
    explicit = lrr_optax.learning_rate_rates(
        0.05, (1e-2, 1e-3), direction=direction, horizon=0.9, warmup_steps=200
    )
    chex.assert_trees_all_close(
        train(alias, 12, promotion="standard")[:2],
        train(explicit, 12, promotion="standard")[:2],
        rtol=1e-14,
    )


def test_only_lrr_sgd_looks_back_by_default():
    # The base transformation keeps the seed's one-step hypergradient; lrr_sgd's recipe
    # differs from it, and a horizon of 0 with the shorter ramp gives it back exactly.
    def run(tx):
        return train(tx, 12, promotion="standard")[0]

    base = run(lrr_optax.learning_rate_rates(0.05))
    assert not np.allclose(run(lrr_optax.lrr_sgd(0.05))["w"], base["w"], rtol=1e-6)
    chex.assert_trees_all_close(
        run(lrr_optax.lrr_sgd(0.05, horizon=0.0, warmup_steps=100)), base, rtol=1e-14
    )


@pytest.mark.parametrize("alias", [lrr_optax.lrr_adam, lrr_optax.lrr_adamw])
def test_the_adam_aliases_rescale_spikes_only_after_the_ramp(alias):
    # The ramp's geometric growth makes the hypergradient jump by design: the Adam aliases
    # let a spike divide the rate from the end of the warm-up on (spike_rescale_start=None),
    # the SGD direction's defaults from step 0 (Rosenbrock's walls come during its ramp).
    def rate(tx, steps):
        with jax.numpy_dtype_promotion("standard"):
            return rates_through_a_jump(tx, steps, -1000.0)[-1]

    options = dict(granularity="global", warmup_steps=20)
    unscaled = dict(options, spike_rescale=False)
    during, after = 15, 101
    assert rate(alias(1e-2, **options), during) == rate(alias(1e-2, **unscaled), during)
    assert rate(alias(1e-2, **options), after) < rate(alias(1e-2, **unscaled), after) / 10
    early = dict(options, spike_rescale_start=0)
    assert rate(alias(1e-2, **early), during) < rate(alias(1e-2, **unscaled), during) / 10
    sgd, sgd_unscaled = lrr_optax.lrr_sgd(1e-2, **options), lrr_optax.lrr_sgd(1e-2, **unscaled)
    assert rate(sgd, during) < rate(sgd_unscaled, during) / 10


def test_lrr_sgd_without_momentum_is_plain_gradient_direction():
    params, state = train(
        lrr_optax.lrr_sgd(0.05, (1e-2,), granularity="global"), 12, promotion="standard"
    )[:2]
    assert isinstance(state.direction_state, optax.EmptyState)


def test_lrr_adam():
    alias = lrr_optax.lrr_adam(1e-2, (1e-4,), b1=0.8, b2=0.99, eps=1e-6, schedule="cascade")
    explicit = lrr_optax.learning_rate_rates(
        1e-2,
        (1e-4,),
        direction=optax_promotion(optax.scale_by_adam(b1=0.8, b2=0.99, eps=1e-6)),
        schedule="cascade",
        bounds=(0.0, 1.0),
        spike_rescale_start=None,
        spike_rescale_threshold=30.0,
    )
    chex.assert_trees_all_close(
        train(alias, 12, promotion="standard")[0],
        train(explicit, 12, promotion="standard")[0],
        rtol=1e-14,
    )


def test_lrr_adamw_decays_weights_scaled_by_the_rate():
    # Order 0 of lrr_adamw is optax.adamw exactly in structure: -lr * (adam + wd * p).
    alias = lrr_optax.lrr_adamw(1e-2, (), weight_decay=0.1)
    reference = optax.adamw(1e-2, weight_decay=0.1)
    chex.assert_trees_all_close(
        train(alias, 12, promotion="standard")[0],
        train(reference, 12, promotion="standard")[0],
        rtol=1e-12,
    )


def test_lrr_adamw_mask():
    mask = {"w": True, "b": False}
    alias = lrr_optax.lrr_adamw(1e-2, (), weight_decay=0.5, mask=mask)
    reference = optax.adamw(1e-2, weight_decay=0.5, mask=mask)
    chex.assert_trees_all_close(
        train(alias, 12, promotion="standard")[0],
        train(reference, 12, promotion="standard")[0],
        rtol=1e-12,
    )


def _far_target_rates(tx, steps=40, curvature=1.0):
    """η⁽⁰⁾ after each step towards a target far away, where the rate keeps climbing."""

    def loss(params):
        return curvature * jnp.sum(jnp.square(params["w"] - 100.0))

    params = {"w": jnp.zeros(3, jnp.float32)}
    state = tx.init(params)
    update = jax.jit(tx.update)
    rates = []
    for _ in range(steps):
        with jax.numpy_dtype_promotion("standard"):
            updates, state = update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
        rates.append(float(lrr_optax.learning_rates(state)[0]["w"]))
    return np.asarray(rates), updates


@pytest.mark.parametrize("alias", [lrr_optax.lrr_adam, lrr_optax.lrr_adamw])
def test_adam_aliases_bound_the_rate_by_one(alias):
    kwargs = dict(warmup_steps=0)
    if alias is lrr_optax.lrr_adamw:
        kwargs["weight_decay"] = 0.0
    bounded, _ = _far_target_rates(alias(0.5, **kwargs))
    unbounded, _ = _far_target_rates(alias(0.5, bounds=(0.0, None), **kwargs))
    assert unbounded.max() > 2.0  # the rate would climb past the bound
    assert bounded.max() == 1.0
    assert bounded.min() > 0.0


def test_lrr_sgd_leaves_the_rate_unbounded_above():
    # SGD's rate is stable up to 1/curvature: 50 here.
    rates, _ = _far_target_rates(lrr_optax.lrr_sgd(0.01, warmup_steps=0), curvature=0.01)
    assert rates.max() > 1.0


def test_with_a_schedule_the_bound_holds_the_scheduled_rate():
    # A constant schedule and the same constant move alike, the bound binding; under a
    # decaying schedule the learned factor may exceed 1 but the rate it makes may not.
    constant, constant_updates = _far_target_rates(lrr_optax.lrr_adam(0.5, warmup_steps=0))
    factor, scheduled_updates = _far_target_rates(lrr_optax.lrr_adam(lambda n: 0.5, warmup_steps=0))
    np.testing.assert_allclose(0.5 * factor, constant, rtol=1e-6)
    chex.assert_trees_all_close(scheduled_updates, constant_updates, rtol=1e-6)
    assert constant.max() == 1.0

    decay = optax.exponential_decay(0.5, transition_steps=1, decay_rate=0.9)
    factor, _ = _far_target_rates(lrr_optax.lrr_adam(decay, warmup_steps=0))
    rate = np.asarray([float(decay(n)) for n in range(len(factor))]) * factor
    assert factor.max() > 1.0
    # The test's schedule values and the step's agree to float32 rounding of 0.9**n.
    assert rate.max() <= 1.0 + 1e-5
    np.testing.assert_allclose(rate.max(), 1.0, rtol=1e-5)


def test_a_schedule_through_zero_keeps_the_bounded_rate_finite():
    # Where s_n = 0 the bound hi/s_n would be infinite and lo/s_n undefined: the factor then
    # keeps only its own lower bound, and the rate s_n·η⁽⁰⁾ is bounded again once s_n > 0.
    warmup = optax.linear_schedule(0.0, 0.5, transition_steps=5)
    factor, updates = _far_target_rates(lrr_optax.lrr_adam(warmup, warmup_steps=0))
    rate = np.asarray([float(warmup(n)) for n in range(len(factor))]) * factor
    assert np.all(np.isfinite(factor)) and np.all(factor > 0)
    assert np.all(np.isfinite(updates["w"]))
    assert rate.max() <= 1.0 + 1e-5


@pytest.mark.parametrize("alias", [lrr_optax.lrr_sgd, lrr_optax.lrr_adam, lrr_optax.lrr_adamw])
def test_aliases_validate_like_the_transformation(alias):
    with pytest.raises(ValueError, match="rule"):
        alias(1e-2, rule="nonsense")
