"""``learning_rate_rates`` against the autodiff oracle (design page, section 5), float64."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lrr_optax
from lrr_optax import _rules

from . import oracle
from .problems import PROBLEMS, optax_promotion

GRANULARITY_MIXES = {
    1: [("parameter",), ("tensor",), ("global",)],
    2: [
        ("parameter", "parameter"),
        ("parameter", "global"),
        ("tensor", "global"),
        ("global", "global"),
    ],
    3: [("parameter",) * 3, ("parameter", "tensor", "global"), ("tensor",) * 3, ("global",) * 3],
    4: [("parameter",) * 4, ("parameter", "parameter", "tensor", "global")],
    5: [("parameter",) * 5, ("tensor", "tensor", "tensor", "global", "global")],
}
RULES = ("additive", "normalized", "multiplicative", "log_normalized")
DIRECTIONS = {"sgd": lambda: None, "adam": lambda: optax_promotion(optax.scale_by_adam())}


def _rates_for(order, rule):
    # Rates small enough that the additive rule stays inside its bounds, large enough that
    # every order moves.
    if rule in ("normalized", "log_normalized"):
        return tuple([1e-2] * order)
    return tuple([0.5] * order)


def _cases():
    for order, mixes in GRANULARITY_MIXES.items():
        for schedule, mix, rule, direction in itertools.product(
            ("simultaneous", "cascade"), mixes, RULES, DIRECTIONS
        ):
            # Keep the high orders to a representative slice of the product.
            if order >= 4 and (rule, direction) not in {
                ("additive", "sgd"),
                ("normalized", "adam"),
                ("log_normalized", "sgd"),
                ("multiplicative", "adam"),
            }:
                continue
            yield pytest.param(
                order,
                schedule,
                mix,
                rule,
                direction,
                id=f"m{order}-{schedule}-{'+'.join(mix)}-{rule}-{direction}",
            )


def _library_hypergradients(problem, params, tx, steps):
    impl = tx.update.__self__
    state = tx.init(params)
    theta = params
    history = []
    step = jax.jit(impl.step)
    for n in range(steps + 1):
        grads = jax.grad(problem.loss)(theta, n)
        updates, state, aux = step(grads, state, theta)
        theta = optax.apply_updates(theta, updates)
        history.append(state.etas)
    return aux.hypergradients, history


def _max_relative_error(actual, expected):
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(actual)])
    e = np.concatenate([np.ravel(x) for x in jax.tree.leaves(expected)])
    scale = np.max(np.abs(e))
    assert scale > 0, "the oracle's hypergradient is zero: the case tests nothing"
    return np.max(np.abs(a - e)) / scale


def check_against_oracle(
    order,
    schedule,
    granularities,
    rule,
    direction_name,
    *,
    clip=None,
    bounds=None,
    problem_name="regression",
    rates=None,
):
    problem = PROBLEMS[problem_name]
    params = problem.params(jnp.float64)
    learning_rate = 0.05
    rates = rates or _rates_for(order, rule)
    first_active = (1 + (order - 1) * order // 2) if schedule == "simultaneous" else order
    steps = first_active + 3  # N: the step whose hypergradients are checked
    tx = lrr_optax.learning_rate_rates(
        learning_rate,
        rates,
        direction=DIRECTIONS[direction_name](),
        schedule=schedule,
        granularity=granularities,
        rule=rule,
        clip=clip,
        bounds=bounds,
    )
    hypergradients, lib_history = _library_hypergradients(problem, params, tx, steps)
    options = tx.update.__self__.config.rule_options

    def run(perturb=None):
        return oracle.unroll(
            problem,
            params,
            learning_rate=learning_rate,
            rates=rates,
            schedule=schedule,
            granularities=granularities,
            rule_options=options,
            direction=DIRECTIONS[direction_name](),
            steps=steps,
            perturb=perturb,
        )

    # The two implementations follow the same trajectory of rates.
    _, ref_history = run()
    for lib_etas, ref_etas in zip(lib_history[:steps], ref_history, strict=True):
        for lib_eta, ref_eta in zip(lib_etas, ref_etas, strict=True):
            jax.tree.map(
                lambda a, b: np.testing.assert_allclose(
                    a, b, rtol=1e-12, atol=1e-13 * float(np.max(np.abs(b), initial=0.0))
                ),
                lib_eta,
                ref_eta,
            )

    # One perturbation per order, each at its own step; the gradient at δ = 0 gives every
    # partial derivative at once.
    times = [steps - 1 - j if schedule == "simultaneous" else steps - 1 for j in range(order)]
    zeros = [jax.tree.map(jnp.zeros_like, ref_history[t][j]) for j, t in enumerate(times)]

    def loss_of(deltas):
        theta, _ = run([(j, t, d) for j, (t, d) in enumerate(zip(times, deltas))])
        return problem.loss(theta, steps)

    truths = jax.jit(jax.grad(loss_of))(zeros)
    for j in range(order):
        error = _max_relative_error(hypergradients[j], truths[j])
        assert error < 1e-10, f"order {j}: relative error {error:.3e}"


@pytest.mark.parametrize("order,schedule,granularities,rule,direction", list(_cases()))
def test_hypergradients_match_autodiff(order, schedule, granularities, rule, direction):
    check_against_oracle(order, schedule, granularities, rule, direction)


@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
@pytest.mark.parametrize("rule", RULES)
def test_clip_keeps_the_chain_exact(schedule, rule):
    # A clip small enough to bind on most steps: the rates move by clipped steps, the chain
    # stays the true derivative.
    clip = 1e-3 if rule == "additive" else 0.5
    check_against_oracle(3, schedule, ("parameter",) * 3, rule, "sgd", clip=clip)


# Per rule, rates and bounds under which some entries of the rates are clamped and others
# move freely during the checked steps (test_bounds_cases_clamp_some_entries checks it).
BOUNDED_CASES = {
    "additive": ((0.05, 0.05, 0.5), (0.02, 0.08)),
    "normalized": ((0.02, 0.02, 0.02), (0.01, 0.09)),
    "multiplicative": ((5.0, 5.0, 50.0), (0.049, 0.0515)),
    "log_normalized": ((0.3, 0.3, 0.3), (0.04, 0.07)),
}


@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
@pytest.mark.parametrize("rule", RULES)
def test_bounds_keep_the_chain_exact(schedule, rule):
    rates, bounds = BOUNDED_CASES[rule]
    check_against_oracle(3, schedule, ("parameter",) * 3, rule, "adam", bounds=bounds, rates=rates)


def test_nested_pytree_problem():
    check_against_oracle(
        3,
        "simultaneous",
        ("parameter", "tensor", "global"),
        "additive",
        "adam",
        problem_name="nested",
    )


@pytest.mark.parametrize("rule", RULES)
def test_bounds_cases_clamp_some_entries(rule):
    rates, (lower, upper) = BOUNDED_CASES[rule]
    problem = PROBLEMS["regression"]
    params = problem.params(jnp.float64)
    tx = lrr_optax.learning_rate_rates(
        0.05,
        rates,
        rule=rule,
        bounds=(lower, upper),
        direction=optax_promotion(optax.scale_by_adam()),
    )
    state = tx.init(params)
    update = jax.jit(tx.update)
    clamped = free = 0
    for n in range(8):
        _, state = update(jax.grad(problem.loss)(params, n), state, params)
        for eta in jax.tree.leaves(state.etas):
            at_bound = (eta == lower) | (eta == upper)
            clamped += int(np.sum(at_bound))
            free += int(np.sum(~at_bound))
    assert clamped > 0 and free > 0


def test_rule_partial_is_the_derivative():
    # Each rule's α is ∂R/∂ρ, checked directly with jax.grad on random inputs.
    key = jax.random.key(3)
    eta = jnp.abs(jax.random.normal(key, (7,), jnp.float64)) + 0.1
    h = jax.random.normal(jax.random.fold_in(key, 1), (7,), jnp.float64)
    moment = jnp.abs(jax.random.normal(jax.random.fold_in(key, 2), (7,), jnp.float64))
    for rule in RULES:
        for clip in (None, 0.3):
            options = _rules.RuleOptions(rule, clip, None, None, 0.9, 1e-30)
            m = moment if rule in _rules.NORMALIZED_RULES else None
            _, alpha, _ = _rules.apply_rule(options, eta, jnp.asarray(0.2), h, m, 3)
            truth = jax.jacfwd(lambda r, o=options, m=m: _rules.apply_rule(o, eta, r, h, m, 3)[0])(
                jnp.asarray(0.2)
            )
            np.testing.assert_allclose(alpha, truth, rtol=1e-12, atol=1e-15)
