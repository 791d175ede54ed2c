"""``learning_rates``, ``summarize`` and ``update_with_hypergradients`` on a bare state.

Through optax's wrappers they are checked in ``test_optax_wrappers.py``; the hook's
numbers are checked against the oracle in ``test_oracle.py`` and exactly in
``test_learning_rate_rates.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lrr_optax

from .problems import PROBLEMS, train

PROBLEM = PROBLEMS["nested"]


def _trained(**options):
    tx = lrr_optax.learning_rate_rates(0.05, (1e-2, 1e-3, 1e-4), **options)
    return tx, train(tx, 4, PROBLEM).state


def test_learning_rates_are_the_state_rates():
    _, state = _trained(granularity=("parameter", "tensor", "global"))
    etas = lrr_optax.learning_rates(state)
    assert etas is state.etas
    assert lrr_optax.learning_rates(lrr_optax.learning_rate_rates(0.1, ()).init({})) == ()


def test_learning_rates_need_exactly_one_state():
    with pytest.raises(ValueError, match="Found no"):
        lrr_optax.learning_rates(optax.sgd(0.1).init({"w": jnp.zeros(2)}))


@pytest.mark.parametrize("granularity", ["parameter", "tensor", "global"])
def test_summarize_is_mean_min_max_of_every_order(granularity):
    _, state = _trained(granularity=granularity)
    summary = jax.jit(lrr_optax.summarize)(state)
    assert sorted(summary) == sorted(
        f"eta{j}/{stat}" for j in range(3) for stat in ("mean", "min", "max")
    )
    for j, eta in enumerate(state.etas):
        values = np.concatenate([np.ravel(x) for x in jax.tree.leaves(eta)])
        np.testing.assert_allclose(summary[f"eta{j}/mean"], values.mean(), rtol=1e-13)
        assert summary[f"eta{j}/min"] == values.min()
        assert summary[f"eta{j}/max"] == values.max()
    # Something moved: the statistics are not all the initial value.
    assert summary["eta0/min"] < summary["eta0/max"] or granularity == "global"


def test_update_with_hypergradients_is_the_update():
    tx, state = _trained()
    params = PROBLEM.params(jnp.float64)
    grads = jax.grad(PROBLEM.loss)(params, 4)
    hooked = lrr_optax.update_with_hypergradients(tx)
    updates, new_state, aux = hooked(grads, state, params)
    expected_updates, expected_state = tx.update(grads, state, params)
    jax.tree.map(
        np.testing.assert_array_equal, (updates, new_state), (expected_updates, expected_state)
    )
    assert isinstance(aux, lrr_optax.Hypergradients)
    assert len(aux.hypergradients) == len(aux.alphas) == 3
    jax.tree.map(
        lambda h, e: np.testing.assert_equal(h.shape, e.shape), aux.hypergradients, state.etas
    )


def test_update_with_hypergradients_refuses_a_wrapper():
    tx = optax.chain(optax.identity(), lrr_optax.learning_rate_rates(0.1, (1e-2,)))
    with pytest.raises(ValueError, match="not a chain"):
        lrr_optax.update_with_hypergradients(tx)
