"""Compilation: donation, one compilation per program, abstract init, populations by vmap."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lrr_optax
from benchmarks.speed import hlo

from .problems import PROBLEMS, optax_promotion

# ``compiler_options`` of the programs whose compiled form a test inspects: XLA:CPU's default
# kernel emitters, which the test run turns off (conftest.py) and a user's step gets.
DEFAULT_PIPELINE = {"xla_cpu_use_fusion_emitters": True}

PROBLEM = PROBLEMS["nested"]


def _configs():
    adam = optax_promotion(optax.scale_by_adam())
    return {
        "parameter": lambda: lrr_optax.learning_rate_rates(
            0.05, (1e-2, 1e-3, 1e-4), granularity="parameter"
        ),
        # An array learning rate is the case where a careless init hands back the
        # caller's own buffer, once per leaf.
        "tensor, array rate": lambda: lrr_optax.learning_rate_rates(
            jnp.asarray(0.05), (1e-2, 1e-3), granularity="tensor"
        ),
        "global, array rate": lambda: lrr_optax.learning_rate_rates(
            jnp.asarray(0.05), (jnp.asarray(1e-2), 1e-3), granularity="global"
        ),
        "adam, normalized, cascade": lambda: lrr_optax.learning_rate_rates(
            0.01, (1e-2, 1e-3), direction=adam, rule="normalized", schedule="cascade"
        ),
        "inject_hyperparams": lambda: optax.inject_hyperparams(
            lrr_optax.learning_rate_rates, static_args=("normalizer_decay", "normalizer_eps")
        )(learning_rate=0.05, rates=jnp.asarray([1e-2, 1e-3]), granularity="tensor"),
    }


CONFIGS = _configs()


def _buffer_pointers(tree):
    return [leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(tree)]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_init_returns_distinct_buffers(name):
    params = PROBLEM.params(jnp.float64)
    state = CONFIGS[name]().init(params)
    pointers = _buffer_pointers((params, state))
    assert len(pointers) == len(set(pointers))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_jit_with_donated_params_and_state_compiles_once(name):
    tx = CONFIGS[name]()
    traces = []

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, n):
        traces.append(n)  # runs once per trace, i.e. per compilation
        grads = jax.grad(PROBLEM.loss)(params, n)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    params = PROBLEM.params(jnp.float64)
    state = tx.init(params)
    types = jax.tree.map(jax.typeof, state)  # shapes, dtypes and weak types
    for n in range(3):
        old_params, old_state = params, state
        params, state = step(params, state, jnp.asarray(n, jnp.int32))
        # The donated buffers were consumed: the step reused them in place.
        assert all(leaf.is_deleted() for leaf in jax.tree.leaves((old_params, old_state)))
    assert len(traces) == 1
    assert jax.tree.map(jax.typeof, state) == types
    for leaf in jax.tree.leaves((params, state)):
        assert np.all(np.isfinite(leaf))


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(granularity=("parameter", "tensor", "global"), rule="log_normalized"),
        dict(direction="adam", state_dtype=jnp.float32, schedule="cascade"),
    ],
    ids=["parameter", "mixed granularities", "adam, state_dtype"],
)
def test_init_on_abstract_params(options):
    options = dict(options)
    if options.get("direction") == "adam":
        options["direction"] = optax_promotion(optax.scale_by_adam())
    tx = lrr_optax.learning_rate_rates(0.05, (1e-2, 1e-3, 1e-4), **options)
    params = {"w": jnp.ones((3, 4), jnp.bfloat16), "b": jnp.zeros((4,), jnp.float64)}
    abstract = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    shapes = jax.eval_shape(tx.init, abstract)
    concrete = tx.init(params)
    assert jax.tree.structure(shapes) == jax.tree.structure(concrete)
    for s, c in zip(jax.tree.leaves(shapes), jax.tree.leaves(concrete), strict=True):
        assert isinstance(s, jax.ShapeDtypeStruct)
        assert (s.shape, s.dtype, s.weak_type) == (c.shape, c.dtype, c.aval.weak_type)


def test_one_program_trains_a_population():
    """K models, each with its own initial rate, rate of rates and top rate, in one program."""
    steps = 12
    learning_rates = jnp.asarray([1e-3, 1e-2, 5e-2, 1e-1])
    rates = jnp.asarray([1e-3, 1e-2, 1e-2, 1e-1])
    tops = jnp.asarray([1e-4, 1e-3, 1e-4, 1e-3])
    traces = []

    def train(learning_rate, rate, top):
        traces.append(None)
        tx = lrr_optax.learning_rate_rates(learning_rate, (rate, top))
        params = PROBLEM.params(jnp.float64)

        def body(n, carry):
            params, state = carry
            updates, state = tx.update(jax.grad(PROBLEM.loss)(params, n), state, params)
            return optax.apply_updates(params, updates), state

        return jax.lax.fori_loop(0, steps, body, (params, tx.init(params)))

    population = jax.jit(jax.vmap(train))
    params, state = population(learning_rates, rates, tops)
    population(learning_rates, rates, tops)  # no second compilation
    assert len(traces) == 1
    assert state.count.shape == (4,)

    for k in range(4):
        # The same training, one model at a time with Python floats.
        tx = lrr_optax.learning_rate_rates(
            float(learning_rates[k]), (float(rates[k]), float(tops[k]))
        )
        expected = PROBLEM.params(jnp.float64)
        expected_state = tx.init(expected)
        update = jax.jit(tx.update)
        for n in range(steps):
            grads = jax.grad(PROBLEM.loss)(expected, n)
            updates, expected_state = update(grads, expected_state, expected)
            expected = optax.apply_updates(expected, updates)
        member = jax.tree.map(lambda x, k=k: x[k], (params, state))
        for a, b in zip(
            jax.tree.leaves(member), jax.tree.leaves((expected, expected_state)), strict=True
        ):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-300)
    # The members really differ: the population is not one model repeated.
    assert len({float(x) for x in state.etas[0]["out"][1]}) == 4


_ORDERINGS = [(1, "simultaneous", rule) for rule in lrr_optax.RULES] + [
    (3, schedule, rule) for schedule in lrr_optax.SCHEDULES for rule in lrr_optax.RULES
]


POOLED = dict(element_share=0.1, anchor=0.01)


@pytest.mark.parametrize(
    "order,schedule,rule,options",
    [(*case, {}) for case in _ORDERINGS]
    + [(3, "simultaneous", "normalized", POOLED), (3, "cascade", "log_normalized", POOLED)],
)
@pytest.mark.parametrize("direction", [None, "adam"])
def test_a_donated_per_parameter_step_copies_no_state_buffer(
    order, schedule, rule, options, direction
):
    # XLA:CPU copies a buffer that one kernel reads and another overwrites unless the data
    # order the writes (``_ordering``); a copy is a hidden pass over the state.
    if jax.default_backend() != "cpu":
        pytest.skip("the write ordering is XLA:CPU's")
    params = {"w": jnp.zeros((128, 128), jnp.float32), "b": jnp.zeros((128,), jnp.float32)}
    tx = lrr_optax.learning_rate_rates(
        1e-3,
        tuple(10.0 ** -(3 + j) for j in range(order)),
        direction=None if direction is None else optax_promotion(optax.scale_by_adam()),
        granularity="parameter",
        schedule=schedule,
        rule=rule,
        **options,
    )

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    text = (
        jax.jit(step, donate_argnums=(0, 1))
        .lower(params, tx.init(params), params)
        .compile(DEFAULT_PIPELINE)
        .as_text()
    )
    # Scalars may be copied (the step count); no buffer of a leaf's row or more.
    assert hlo.analyze(text).copy_bytes < 128 * 4


@pytest.mark.parametrize(
    "options", [{}, dict(clip=None, spike_threshold=None)], ids=["defaults", "no clip"]
)
def test_the_cascade_holds_no_parameter_sized_temporary(options):
    # A temporary is paged in afresh at every call of the step on XLA:CPU (a fifth of the
    # order-2 cascade's step at 10M parameters, measured): the ring's and η⁽⁰⁾'s kernels
    # each compute the step from the new η⁽¹⁾, and the top hypergradient is not written.
    if jax.default_backend() != "cpu":
        pytest.skip("the temporaries are XLA:CPU's")
    params = {"w": jnp.zeros((256, 256), jnp.float32)}
    tx = lrr_optax.learning_rate_rates(
        1e-3, (1e-3, 1e-4), granularity="parameter", schedule="cascade", rule="additive", **options
    )

    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), params)
    compiled = lowered.compile(DEFAULT_PIPELINE)
    assert compiled.memory_analysis().temp_size_in_bytes < 256 * 4


_BACKEND_CASES = {
    "m=1, sgd direction": dict(rates=(1e-2,)),
    "m=1, adam direction": dict(rates=(1e-2,), direction="adam"),
    "m=1, horizon": dict(rates=(1e-2,), horizon=0.5),
    # A coarse η⁽⁰⁾'s hypergradient is a dot product on XLA:CPU, a fused sum elsewhere.
    "m=2, tensor, adam direction": dict(rates=(1e-2, 1e-3), direction="adam", granularity="tensor"),
    "m=1, global": dict(rates=(1e-2,), granularity="global"),
    **{
        f"m=3, {schedule}, {rule}": dict(rates=(1e-2, 1e-3, 1e-4), schedule=schedule, rule=rule)
        for schedule in lrr_optax.SCHEDULES
        for rule in lrr_optax.RULES
    },
    # The simultaneous schedule's chain of kernels (``rates_in_order``) is the one that
    # orders the pooled moments' writes.
    "m=3, simultaneous, pooled and anchored": dict(
        rates=(1e-2, 1e-3, 1e-4), schedule="simultaneous", element_share=0.1, anchor=0.01
    ),
}


def _trajectory(case: dict, steps: int = 4):
    options = dict(case)
    if options.pop("direction", None):
        options["direction"] = optax_promotion(optax.scale_by_adam())
    tx = lrr_optax.learning_rate_rates(0.05, **{"granularity": "parameter", **options})
    params = PROBLEM.params(jnp.float64)
    state = tx.init(params)

    @jax.jit
    def step(params, state, n):
        grads = jax.grad(PROBLEM.loss)(params, n)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for n in range(steps):
        params, state = step(params, state, jnp.asarray(n, jnp.int32))
    return params, state


@pytest.mark.parametrize("name", list(_BACKEND_CASES))
def test_other_backends_step_computes_the_cpu_step(name, monkeypatch):
    # The step orders its writes for XLA:CPU and drops the orderings elsewhere
    # (``_ordering._cpu_only``); both programs compute the same step. Here the other
    # backends' branch runs on the CPU.
    from lrr_optax import _ordering

    expected = _trajectory(_BACKEND_CASES[name])
    taken = []

    def default_branch(cpu, default, *args):
        taken.append(default)
        return default(*args)

    monkeypatch.setattr(_ordering, "_cpu_only", default_branch)
    actual = _trajectory(_BACKEND_CASES[name])
    assert taken, "the step made no choice by backend"
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda: lrr_optax.learning_rate_rates(
                1e-3, direction=optax_promotion(optax.scale_by_adam()), granularity="tensor"
            ),
            id="tensor, adam",
        ),
        pytest.param(
            lambda: lrr_optax.learning_rate_rates(1e-2, (1e-2, 1e-3), granularity="parameter"),
            id="parameter, cascade",
        ),
        pytest.param(
            lambda: lrr_optax.learning_rate_rates(
                1e-2, (1e-2, 1e-3), granularity="parameter", schedule="simultaneous"
            ),
            id="parameter, simultaneous",
        ),
    ],
)
def test_jit_traces_the_rules_once_per_leaf_shape(make, monkeypatch):
    """Inside jit, leaves of one shape share traced rules; eagerly each leaf runs its own.

    Tracing once per leaf made trace and lowering grow with every leaf of a model
    (``benchmarks/results/speed_compile.md``).
    """
    from lrr_optax import _rules

    calls = []
    apply = _rules.apply
    monkeypatch.setattr(_rules, "apply", lambda *a: calls.append(1) or apply(*a))
    tx = make()

    def traced_rules(leaves):
        params = {f"leaf{i}": jnp.full((3, 2) if i % 2 else (4,), 0.5) for i in range(leaves)}
        state = tx.init(params)
        calls.clear()
        jitted, _ = jax.jit(tx.update)(params, state, params)
        in_jit = len(calls)
        calls.clear()
        eager, _ = tx.update(params, state, params)
        jax.tree.map(partial(np.testing.assert_allclose, rtol=1e-6), jitted, eager)
        return in_jit, len(calls)

    (jit_4, eager_4), (jit_12, eager_12) = traced_rules(4), traced_rules(12)
    assert jit_12 == jit_4 < eager_4
    assert eager_12 == 3 * eager_4
