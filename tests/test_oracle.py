"""``learning_rate_rates`` against the autodiff oracle of ``docs/math.md``, in float64."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lrr_optax

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


# One compiled gradient per problem for the whole session: the step is a traced argument.
_GRADS = {name: jax.jit(jax.grad(problem.loss)) for name, problem in PROBLEMS.items()}


def _library_run(problem_name, params, tx, steps):
    """The library's hypergradients at step ``steps`` and its rates after each step.

    Read through the public debug hook only, run eagerly: each case is a new program, and
    its operations' compiled kernels are shared by every case, where a jit of each case's
    step would compile anew (the jitted library is checked against the eager one
    elsewhere).
    """
    hooked = lrr_optax.update_with_hypergradients(tx)
    grad = _GRADS[problem_name]
    state = tx.init(params)
    theta = params
    history = []
    for n in range(steps + 1):
        updates, state, aux = hooked(grad(theta, n), state, theta)
        theta = optax.apply_updates(theta, updates)
        history.append(state.etas)
    return aux.hypergradients, history


def _max_relative_error(actual, expected):
    a = np.concatenate([np.ravel(x) for x in jax.tree.leaves(actual)])
    e = np.concatenate([np.ravel(x) for x in jax.tree.leaves(expected)])
    scale = np.max(np.abs(e))
    assert scale > 0, "the oracle's hypergradient is zero: the case tests nothing"
    return np.max(np.abs(a - e)) / scale


# The normaliser's options, given to the library and to the oracle alike: a short EMA so
# that its debiasing matters on the few steps checked.
DECAY, EPS = 0.9, 1e-30
# A warm-up shorter than the unroll: the checked steps see the ramp and its end.
WARMUP, WARMUP_START = 3, 0.1


def _ramp(n):
    return WARMUP_START ** max(0.0, 1 - n / WARMUP) if n < WARMUP else 1.0


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
    warmup_steps=WARMUP,
    anneal_steps=None,
    spike_threshold=None,
    spike_rescale=False,
    spike_rescale_start=0,
    spike_rescale_threshold=None,
    element_share=None,
    anchor=None,
):
    """The library's rates follow the oracle's, and its h⁽ʲ⁾_N are ∂J(θ_N)/∂δ⁽ʲ⁾.

    Returns the oracle's history of the rates (step n's rates after step n).
    """
    problem = PROBLEMS[problem_name]
    params = problem.params(jnp.float64)
    learning_rate = 0.05
    rates = rates or _rates_for(order, rule)
    steps = oracle.first_active(schedule, order - 1) + 3  # N: the step checked
    tx = lrr_optax.learning_rate_rates(
        learning_rate,
        rates,
        direction=DIRECTIONS[direction_name](),
        schedule=schedule,
        granularity=granularities,
        rule=rule,
        clip=clip,
        bounds=bounds,
        normalizer_decay=DECAY,
        normalizer_eps=EPS,
        warmup_steps=warmup_steps,
        warmup_start=WARMUP_START,
        anneal_steps=anneal_steps,
        spike_threshold=spike_threshold,
        spike_rescale=spike_rescale,
        spike_rescale_start=spike_rescale_start,
        spike_rescale_threshold=spike_rescale_threshold,
        element_share=element_share,
        anchor=anchor,
    )
    hypergradients, lib_history = _library_run(problem_name, params, tx, steps)
    lower, upper = bounds or (None, None)
    reference = oracle.unroll(
        problem,
        params,
        learning_rate=learning_rate,
        rates=rates,
        schedule=schedule,
        granularities=granularities,
        rules=[
            oracle.Rule(
                rule,
                clip,
                lower,
                upper,
                DECAY,
                EPS,
                anneal_steps,
                spike_threshold,
                spike_rescale,
                element_share,
                anchor,
                spike_rescale_start,
                spike_rescale_threshold,
            )
        ]
        * order,
        direction=direction_name,
        steps=steps,
        grad=_GRADS[problem_name],
        envelope=_ramp if warmup_steps else (lambda n: 1.0),
    )
    ref_history, truths = reference

    # The two implementations follow the same trajectory of rates (to rounding, relative to
    # each order's initial value, since a rate may cancel to zero).
    initial = (learning_rate, *rates[:-1])
    for lib_etas, ref_etas in zip(lib_history[:steps], ref_history, strict=True):
        for j, (lib_eta, ref_eta) in enumerate(zip(lib_etas, ref_etas, strict=True)):
            jax.tree.map(
                lambda a, b, j=j: np.testing.assert_allclose(
                    a, b, rtol=1e-12, atol=1e-13 * initial[j]
                ),
                lib_eta,
                ref_eta,
            )
    for j in range(order):
        error = _max_relative_error(hypergradients[j], truths[j])
        assert error < 1e-10, f"order {j}: relative error {error:.3e}"
    return ref_history


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


@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
@pytest.mark.parametrize("rule", RULES)
def test_annealing_keeps_the_chain_exact(schedule, rule):
    # K = 1 shrinks the steps by 1/√2 … 1/√(k+1) over the checked steps, with a clip that
    # binds: the annealed rates follow the oracle and the chain stays the true derivative.
    clip = 1e-3 if rule == "additive" else 0.5
    check_against_oracle(3, schedule, ("parameter",) * 3, rule, "sgd", clip=clip, anneal_steps=1)


@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
@pytest.mark.parametrize("rule", RULES)
def test_spike_keeps_the_chain_exact(schedule, rule):
    # A spike threshold just above a binding clip: some falls pass it, and the rates
    # still follow the oracle with the chain the true derivative.
    clip = 1e-3 if rule in ("additive", "multiplicative") else 0.5
    spiked = check_against_oracle(
        3, schedule, ("parameter",) * 3, rule, "sgd", clip=clip, spike_threshold=1.2 * clip
    )
    clipped = check_against_oracle(3, schedule, ("parameter",) * 3, rule, "sgd", clip=clip)
    # The threshold binds somewhere, or this test would not test it.
    assert any(
        not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=0)
        for spiked_etas, clipped_etas in zip(spiked, clipped, strict=True)
        for a, b in zip(jax.tree.leaves(spiked_etas), jax.tree.leaves(clipped_etas), strict=True)
    )


@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
def test_spike_rescale_keeps_the_chain_exact(schedule):
    # The spike's ratio divides the rates where the signal jumps past τ against its
    # history: the rates follow the oracle, the chain stays the true derivative, and the
    # ratio binds somewhere.
    options = dict(clip=0.5, spike_threshold=0.6)
    args = (3, schedule, ("parameter",) * 3, "log_normalized", "sgd")
    rescaled = check_against_oracle(*args, **options, spike_rescale=True)
    spiked = check_against_oracle(*args, **options)
    assert any(
        not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=0)
        for rescaled_etas, spiked_etas in zip(rescaled, spiked, strict=True)
        for a, b in zip(jax.tree.leaves(rescaled_etas), jax.tree.leaves(spiked_etas), strict=True)
    )


@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
def test_a_late_spike_rescale_keeps_the_chain_exact(schedule):
    # Before ``spike_rescale_start`` a spike only passes its excess; from it on it also
    # divides the rates: the library follows the oracle either side of the start, and the
    # start changes the rates against a rescale from step 0 and against none.
    options = dict(clip=0.5, spike_threshold=0.6)
    args = (3, schedule, ("parameter",) * 3, "log_normalized", "sgd")
    steps = oracle.first_active(schedule, 2) + 3
    late = check_against_oracle(*args, **options, spike_rescale=True, spike_rescale_start=steps - 2)
    assert _differs(late, check_against_oracle(*args, **options, spike_rescale=True))
    assert _differs(late, check_against_oracle(*args, **options))


@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
def test_a_spike_rescale_threshold_keeps_the_chain_exact(schedule):
    # F = r / T with T given instead of max(c, τ): the library follows the oracle, and the
    # threshold changes the rates.
    options = dict(clip=0.5, spike_threshold=0.6, spike_rescale=True)
    args = (3, schedule, ("parameter",) * 3, "log_normalized", "sgd")
    high = check_against_oracle(*args, **options, spike_rescale_threshold=2.0)
    assert _differs(high, check_against_oracle(*args, **options))


def _differs(histories, others) -> bool:
    return any(
        not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=0)
        for etas, other in zip(histories, others, strict=True)
        for a, b in zip(jax.tree.leaves(etas), jax.tree.leaves(other), strict=True)
    )


POOLED_MIXES = [("parameter",) * 3, ("parameter", "tensor", "global")]


@pytest.mark.parametrize(
    "schedule, rule, granularities",
    [
        ("simultaneous", "normalized", POOLED_MIXES[0]),
        ("cascade", "log_normalized", POOLED_MIXES[0]),
        ("simultaneous", "log_normalized", POOLED_MIXES[1]),
        ("cascade", "normalized", POOLED_MIXES[1]),
    ],
)
def test_pooling_keeps_the_chain_exact(schedule, rule, granularities):
    # Each per-parameter rate moves by its leaf's pooled step and a share of its own, both
    # clipped, with a spike that binds: the rates follow the oracle, the chain stays the
    # true derivative, and pooling changes the rates.
    options = dict(clip=0.5, spike_threshold=0.6, anneal_steps=2)
    args = (3, schedule, granularities, rule, "adam")
    pooled = check_against_oracle(*args, **options, element_share=0.3)
    assert _differs(pooled, check_against_oracle(*args, **options))


@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
def test_pooled_spike_rescale_keeps_the_chain_exact(schedule):
    # The spike's ratio reads the pooled signal against its own history.
    options = dict(clip=0.5, spike_threshold=0.6, element_share=0.1)
    args = (3, schedule, ("parameter",) * 3, "log_normalized", "sgd")
    rescaled = check_against_oracle(*args, **options, spike_rescale=True)
    assert _differs(rescaled, check_against_oracle(*args, **options))


@pytest.mark.parametrize(
    "schedule, rule",
    [
        ("simultaneous", "additive"),
        ("cascade", "multiplicative"),
        ("simultaneous", "log_normalized"),
    ],
)
def test_anchor_keeps_the_chain_exact(schedule, rule):
    # A strong pull toward each leaf's mean rate, alone and with pooling: the rates follow
    # the oracle and the chain stays the true derivative.
    clip = 1e-3 if rule in ("additive", "multiplicative") else 0.5
    args = (3, schedule, ("parameter", "parameter", "tensor"), rule, "sgd")
    anchored = check_against_oracle(*args, clip=clip, anchor=0.3)
    assert _differs(anchored, check_against_oracle(*args, clip=clip))
    if rule in ("normalized", "log_normalized"):
        check_against_oracle(*args, clip=clip, anchor=0.3, element_share=0.1)


# Per rule, rates and bounds under which, at the step whose α each order reads, some
# entries of the rate below are clamped (α = 0 there) and others move freely.
BOUNDED_CASES = {
    "additive": ((0.05, 0.05, 0.5), (0.049, 0.055)),
    "normalized": ((0.02, 0.02, 0.02), (0.01, 0.09)),
    # η⁽¹⁾ starts below the bounds: clamped up at its first update, then it moves.
    "multiplicative": ((0.03, 0.03, 0.5), (0.045, 0.0501)),
    "log_normalized": ((0.3, 0.3, 0.3), (0.04, 0.07)),
}


@pytest.mark.parametrize("schedule", ["simultaneous", "cascade"])
@pytest.mark.parametrize("rule", RULES)
def test_bounds_keep_the_chain_exact(schedule, rule):
    rates, (lower, upper) = BOUNDED_CASES[rule]
    order = 3
    history = check_against_oracle(
        order,
        schedule,
        ("parameter",) * order,
        rule,
        "adam",
        bounds=(lower, upper),
        rates=rates,
        # Without the ramp, so that the tuned bounds clamp some entries at the checked step.
        warmup_steps=0,
        anneal_steps=None,
    )
    steps = len(history)
    for j in range(1, order):
        lag = j if schedule == "simultaneous" else 1
        below = np.concatenate([np.ravel(x) for x in jax.tree.leaves(history[steps - lag][j - 1])])
        at_bound = (below == lower) | (below == upper)
        assert 0 < np.sum(at_bound) < below.size, (j, below)


def test_nested_pytree_problem():
    check_against_oracle(
        3,
        "simultaneous",
        ("parameter", "tensor", "global"),
        "additive",
        "adam",
        problem_name="nested",
    )


def test_oracle_rule_partial_is_the_derivative():
    # The oracle's own α is ∂R/∂ρ, checked by the complex step on random inputs, so the
    # chain the oracle runs on is right before the library is compared with it.
    rng = np.random.default_rng(3)
    eta = np.abs(rng.normal(size=7)) + 0.1
    h = rng.normal(size=7)
    moment = np.abs(rng.normal(size=7))
    for rule in RULES:
        for clip in (None, 0.3):
            spec = oracle.Rule(rule, clip, None, None, 0.9, 1e-30)
            _, alpha, _ = oracle.rule_step(spec, eta + 0j, 0.2 + 0j, h, moment, 3)
            new, _, _ = oracle.rule_step(spec, eta + 0j, 0.2 + 1j * oracle.TAU, h, moment, 3)
            np.testing.assert_allclose(alpha.real, new.imag / oracle.TAU, rtol=1e-13, atol=1e-15)
    # Pooled and anchored, on one leaf of a batch of one row.
    for rule in ("normalized", "log_normalized"):
        spec = oracle.Rule(rule, 0.3, None, None, 0.9, 1e-30, spike=0.4, pool=0.2, anchor=0.1)
        moments = (moment[None], 0.5)
        _, alpha, _ = oracle.rule_step(spec, eta[None] + 0j, 0.2 + 0j, h[None], moments, 3)
        step = 0.2 + 1j * oracle.TAU
        new, _, _ = oracle.rule_step(spec, eta[None] + 0j, step, h[None], moments, 3)
        np.testing.assert_allclose(alpha.real, new.imag / oracle.TAU, rtol=1e-13, atol=1e-15)
