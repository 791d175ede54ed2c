"""Shared problem registry for the tests: small losses that change every step."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Problem(NamedTuple):
    """A stochastic problem: ``loss(params, step)`` changes with the step."""

    name: str
    params: Callable[[jnp.dtype], dict]
    loss: Callable[[dict, int], jax.Array]


# Batches from a fixed smooth function of the step: a loss that changes every step
# without a random-number generator (threefry dominates the compile time of the unrolled
# oracles) or a table of batches baked into every compiled step.
_rng = np.random.default_rng(0)
_X_FREQ, _X_PHASE = _rng.uniform(0.5, 3.0, (5, 3)), _rng.uniform(0, 6.3, (5, 3))
_Y_FREQ, _Y_PHASE = _rng.uniform(0.5, 3.0, (5, 2)), _rng.uniform(0, 6.3, (5, 2))


def _batch(step, dtype):
    n = jnp.asarray(step).astype(dtype)
    x = 1.5 * jnp.sin(jnp.asarray(_X_FREQ, dtype) * n + jnp.asarray(_X_PHASE, dtype))
    y = jnp.sin(jnp.asarray(_Y_FREQ, dtype) * n + jnp.asarray(_Y_PHASE, dtype))
    return x, y


def _regression_params(dtype):
    key = jax.random.key(1)
    return {
        "w": 0.5 * jax.random.normal(key, (3, 2), dtype),
        "b": jnp.asarray([0.1, -0.2], dtype),
    }


def _regression_loss(params, step):
    x, y = _batch(step, params["w"].dtype)
    pred = jnp.tanh(x @ params["w"] + params["b"])
    return jnp.mean(jnp.square(pred - y)) + 0.1 * jnp.sum(jnp.square(params["b"]))


def _nested_params(dtype):
    key = jax.random.key(2)
    return {
        "layer": {"kernel": 0.3 * jax.random.normal(key, (3, 4), dtype)},
        "out": (jnp.linspace(-0.5, 0.5, 4, dtype=dtype), jnp.asarray(0.2, dtype)),
    }


def _nested_loss(params, step):
    x, y = _batch(step, params["out"][0].dtype)
    hidden = jax.nn.softplus(x @ params["layer"]["kernel"])
    pred = hidden @ params["out"][0] + params["out"][1]
    return jnp.mean(jnp.square(pred - y[:, 0])) + 0.05 * jnp.sum(hidden**2) / hidden.size


# Jitted: the tests take these gradients eagerly, step by step, where op-by-op dispatch
# cost 6 ms a gradient against 0.9 ms compiled once (inside a jitted step the call inlines).
PROBLEMS = {
    "regression": Problem("regression", _regression_params, jax.jit(_regression_loss)),
    "nested": Problem("nested", _nested_params, jax.jit(_nested_loss)),
}


def optax_promotion(tx):
    """Run an optax transformation under standard dtype promotion.

    Our tests run with strict promotion to keep lrr_optax's own code explicit about dtypes;
    some optax transformations (e.g. ``scale_by_adam``'s bias correction) rely on implicit
    promotion, which is optax's business, not ours.
    """
    import optax

    tx = optax.with_extra_args_support(tx)

    def init(params):
        with jax.numpy_dtype_promotion("standard"):
            return tx.init(params)

    def update(updates, state, params=None, **extra):
        with jax.numpy_dtype_promotion("standard"):
            return tx.update(updates, state, params, **extra)

    return optax.GradientTransformationExtraArgs(init, update)


# --- every exported constructor, for the shared battery ----------------------------------


class Factory(NamedTuple):
    """An optimizer constructor and the hyperparameters the battery builds it with."""

    name: str
    factory: Callable[..., Any]
    kwargs: dict


def _original(
    learning_rate: float,
    rates=(1e-6, 1e-9),
    *,
    schedule="simultaneous",
    granularity="parameter",
    rule="additive",
    clip=None,
    bounds=None,
    state_dtype=None,
):
    """The original algorithm: per-parameter rates, the additive rule, nothing clipped or
    bounded, order 2 with the simultaneous schedule."""
    import lrr_optax

    return lrr_optax.learning_rate_rates(
        learning_rate,
        rates,
        schedule=schedule,
        granularity=granularity,
        rule=rule,
        clip=clip,
        bounds=bounds,
        state_dtype=state_dtype,
        warmup_steps=0,
        anneal_steps=None,
    )


def _factories():
    import lrr_optax

    # Learning rates as the constructors' docstrings show them.
    return {
        f.name: f
        for f in [
            Factory("learning_rate_rates", lrr_optax.learning_rate_rates, {"learning_rate": 1e-2}),
            Factory("lrr_sgd", lrr_optax.lrr_sgd, {"learning_rate": 1e-2}),
            Factory(
                "lrr_sgd_momentum", lrr_optax.lrr_sgd, {"learning_rate": 1e-2, "momentum": 0.9}
            ),
            Factory("lrr_adam", lrr_optax.lrr_adam, {"learning_rate": 1e-3}),
            Factory("lrr_adamw", lrr_optax.lrr_adamw, {"learning_rate": 1e-3}),
            Factory("original", _original, {"learning_rate": 1e-2}),
        ]
    }


FACTORIES = _factories()


class Run(NamedTuple):
    params: Any  # the final parameters
    state: Any  # the final optimizer state
    trajectory: list  # the parameters after each step
    states: list  # the optimizer state after each step


def train(
    tx,
    steps: int,
    problem: Problem | str = "regression",
    dtype=jnp.float64,
    *,
    grads_fn: Callable | None = None,
    jit: bool = True,
    params=None,
    state=None,
    start: int = 0,
    promotion: str | None = None,
    **extra,
) -> Run:
    """The one training loop of the tests: ``steps`` steps of ``tx`` on ``problem``.

    ``grads_fn(params, n)`` replaces the problem's gradient (e.g. to poison one);
    ``promotion="standard"`` runs the update under standard dtype promotion (optax's own
    directions need it); ``extra`` is passed to ``update``.
    """
    import optax

    problem = PROBLEMS[problem] if isinstance(problem, str) else problem
    params = problem.params(dtype) if params is None else params
    state = tx.init(params) if state is None else state
    grads_fn = grads_fn or jax.grad(problem.loss)
    update = jax.jit(tx.update) if jit else tx.update
    trajectory, states = [], []
    for n in range(start, start + steps):
        grads = grads_fn(params, n)
        if promotion is None:
            updates, state = update(grads, state, params, **extra)
        else:
            with jax.numpy_dtype_promotion(promotion):
                updates, state = update(grads, state, params, **extra)
        params = optax.apply_updates(params, updates)
        trajectory.append(params)
        states.append(state)
    return Run(params, state, trajectory, states)


def rates_through_a_jump(tx, steps: int, jump: float) -> list[float]:
    """η⁽⁰⁾ (its largest entry) after each of ``steps`` steps on three float32 parameters:
    gradients of 1, then at the last step ``jump`` (e.g. −1000: an overshoot)."""
    import lrr_optax

    params = jnp.ones(3, jnp.float32)
    state = tx.init(params)
    update = jax.jit(tx.update)
    etas = []
    for n in range(steps):
        grad = jnp.full(3, jump if n == steps - 1 else 1.0, jnp.float32)
        _, state = update(grad, state, params)
        etas.append(float(jnp.max(lrr_optax.learning_rates(state)[0])))
    return etas
