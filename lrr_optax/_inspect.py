"""Reading the rates out of an optimizer state, for logging and plots."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ._dtypes import at_least_float32, promote
from ._state import LearningRateRatesState
from ._step import step_with_hypergradients


def _find_states(opt_state) -> list[LearningRateRatesState]:
    found: list[LearningRateRatesState] = []

    def visit(node):
        if isinstance(node, LearningRateRatesState):
            found.append(node)
        return node

    jax.tree.map(visit, opt_state, is_leaf=lambda x: isinstance(x, LearningRateRatesState))
    return found


def learning_rates(opt_state) -> tuple[Any, ...]:
    """The adapted rates η⁽⁰⁾ … η⁽ᵐ⁻¹⁾ held in an optimizer state.

    Works on the state of :func:`learning_rate_rates` and on any optax state that contains
    exactly one, such as those of ``optax.chain``, ``optax.MultiSteps``,
    ``optax.inject_hyperparams``, ``optax.apply_if_finite`` or ``optax.masked``.

    Args:
      opt_state: an optimizer state.

    Returns:
      A tuple of pytrees, ``etas[j]`` being η⁽ʲ⁾ shaped by its granularity; empty at
      order 0.

    Raises:
      ValueError: if the state holds no learning-rate-rates state, or several (pass the
        sub-state you mean, e.g. ``opt_state.inner_states["encoder"]``).

    Example:
      >>> import jax.numpy as jnp, optax, lrr_optax
      >>> tx = optax.chain(optax.clip_by_global_norm(1.0),
      ...                  lrr_optax.learning_rate_rates(1e-2, rates=(1e-3,),
      ...                                                granularity="parameter"))
      >>> etas = lrr_optax.learning_rates(tx.init({"w": jnp.zeros(2)}))
      >>> len(etas), etas[0]["w"].shape
      (1, (2,))
    """
    states = _find_states(opt_state)
    if len(states) != 1:
        what = "no" if not states else f"{len(states)}"
        raise ValueError(
            f"Found {what} lrr_optax states in this optimizer state; learning_rates needs "
            "exactly one. Pass the sub-state that holds the one you mean, or use "
            "lrr_optax.summarize, which reports every one."
        )
    return states[0].etas


def summarize(opt_state) -> dict[str, jax.Array]:
    """A flat dict of scalars describing the rates, for logging.

    For each order j it reports ``"eta{j}/mean"``, ``"eta{j}/min"`` and ``"eta{j}/max"``
    over every entry of η⁽ʲ⁾. When the state holds several learning-rate-rates states
    (e.g. one per ``optax.partition`` group), keys are prefixed ``"{i}/"`` in the order
    the states appear in the tree.

    Args:
      opt_state: an optimizer state containing learning-rate-rates states.

    Returns:
      A dict from names to scalar arrays (works under ``jit``).

    Example:
      >>> import jax.numpy as jnp, lrr_optax
      >>> tx = lrr_optax.learning_rate_rates(1e-2, rates=(1e-3,))
      >>> stats = lrr_optax.summarize(tx.init({"w": jnp.zeros(2)}))
      >>> sorted(stats)
      ['eta0/max', 'eta0/mean', 'eta0/min']
    """
    states = _find_states(opt_state)
    summary: dict[str, jax.Array] = {}
    for i, state in enumerate(states):
        prefix = f"{i}/" if len(states) > 1 else ""
        for j, eta in enumerate(state.etas):
            leaves = [x for x in jax.tree.leaves(eta) if jnp.size(x)]
            if not leaves:
                continue
            # Sum in at least float32: a million bf16 rates of 0.01 do not add up in bf16.
            dtype = at_least_float32(promote(*(x.dtype for x in leaves)))
            # Reduce leaf by leaf: flattening and concatenating would reshape sharded arrays,
            # which explicitly sharded meshes refuse.
            total = sum(jnp.sum(x, dtype=dtype) for x in leaves)
            size = sum(jnp.size(x) for x in leaves)
            summary[f"{prefix}eta{j}/mean"] = total / jnp.asarray(size, dtype)
            lows = jnp.stack([jnp.min(x).astype(dtype) for x in leaves])
            highs = jnp.stack([jnp.max(x).astype(dtype) for x in leaves])
            summary[f"{prefix}eta{j}/min"] = jnp.min(lows)
            summary[f"{prefix}eta{j}/max"] = jnp.max(highs)
    return summary


def update_with_hypergradients(tx) -> Any:
    """The update of a :func:`learning_rate_rates` transformation, returning its hypergradients.

    A debug hook: the returned function takes ``(updates, state, params=None, **extra)``
    like ``tx.update`` and returns ``(updates, state, hypergradients)``, where
    ``hypergradients`` is a :class:`Hypergradients` holding this step's raw h⁽ʲ⁾ (the
    derivative of the loss with respect to η⁽ʲ⁾, ``docs/math.md``) and α⁽ʲ⁾.

    Args:
      tx: a transformation built by :func:`learning_rate_rates` or one of its aliases
        (not a chain that contains one).

    Returns:
      The update function with hypergradients.

    Example:
      >>> import jax.numpy as jnp, lrr_optax
      >>> tx = lrr_optax.learning_rate_rates(0.1, rates=(1e-2,), granularity="parameter")
      >>> step = lrr_optax.update_with_hypergradients(tx)
      >>> params = {"w": jnp.ones(2)}
      >>> _, state, aux = step(params, tx.init(params), params)
      >>> aux.hypergradients[0]["w"].tolist()  # d_{-1} = 0: no hypergradient yet
      [-0.0, -0.0]
    """
    step = step_with_hypergradients(tx)
    if step is None:
        raise ValueError(
            "update_with_hypergradients needs the transformation returned by "
            "lrr_optax.learning_rate_rates (or lrr_sgd/lrr_adam/lrr_adamw) itself, not a "
            "chain or wrapper around it."
        )
    return step
