"""The aliases ``lrr_sgd``, ``lrr_adam``, ``lrr_adamw`` against their explicit spelling."""

from __future__ import annotations

import chex
import optax
import pytest

import lrr_optax

from .problems import optax_promotion, train


@pytest.mark.parametrize("momentum,nesterov", [(None, False), (0.9, False), (0.9, True)])
def test_lrr_sgd(momentum, nesterov):
    alias = lrr_optax.lrr_sgd(0.05, (1e-2, 1e-3), momentum=momentum, nesterov=nesterov)
    direction = None if momentum is None else optax.trace(momentum, nesterov)
    explicit = lrr_optax.learning_rate_rates(0.05, (1e-2, 1e-3), direction=direction)
    chex.assert_trees_all_close(
        train(alias, 12, promotion="standard")[:2],
        train(explicit, 12, promotion="standard")[:2],
        rtol=1e-14,
    )


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


@pytest.mark.parametrize("alias", [lrr_optax.lrr_sgd, lrr_optax.lrr_adam, lrr_optax.lrr_adamw])
def test_aliases_validate_like_the_transformation(alias):
    with pytest.raises(ValueError, match="rule"):
        alias(1e-2, rule="nonsense")
