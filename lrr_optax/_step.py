r"""One step of the learning-rate-rates transformation, as named phases.

One step n, with g_n the incoming gradient, d_n = D(g_n) the direction, s_n the envelope
(a schedule the learned rate multiplies, times the safe start's ramp) and γ the horizon:

.. math::

   u_n &= s_{n-1} d_{n-1} + \gamma\, u_{n-1}, \qquad
   h^{(0)}_n = -\operatorname{reduce}_0(g_n \odot u_n), \\
   h^{(j)}_n &= \operatorname{reduce}_j\big(h^{(j-1)}_n \odot \alpha^{(j-1)}_{n-L_j}\big),
   \qquad j = 1 \dots m-1, \\
   \eta^{(j)} &\leftarrow R_j(\eta^{(j)}, \eta^{(j+1)}, h^{(j)}), \qquad
   \alpha^{(j)} = \partial R_j / \partial \eta^{(j+1)}, \\
   \text{update}_n &= -s_n\, \eta^{(0)} \odot d_n .

The step below runs these as named phases: direction, hypergradients, rates, rings, descent.
``docs/math.md`` derives them and defines what "exact" means for each option; the order in
which XLA:CPU writes the rates' buffers, so that it copies none, is ``_ordering``'s.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from . import _granularity as gr
from . import _ordering, _rules, _state
from ._dtypes import promote
from ._options import Config, value_at
from ._state import Hypergradients, LearningRateRatesState
from ._tracing import once_per_signature

# The debug hook's seam: each update function built here, mapped to the step that also
# returns the hypergradients.
_STEPS: weakref.WeakKeyDictionary[Callable, Callable] = weakref.WeakKeyDictionary()


def _zero_nonfinite(x):
    # Products of many gradients overflow; an inf or NaN must never enter the state.
    return jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))


def _usable(g) -> jax.Array:
    # An element whose square overflows would turn a second-moment statistic (Adam's ν) inf
    # and stop its parameter for ever: it is treated like a non-finite one.
    return jnp.isfinite(g * g)


def _usable_gradient(g):
    return jnp.where(_usable(g), g, jnp.zeros_like(g))


def _where_usable(g, value):
    """``value`` where the gradient ``g`` is usable, else 0.

    Each kernel that reads the gradient guards its own result: a guarded gradient shared
    by several kernels is materialised by XLA:CPU as a temporary, whose fresh pages cost
    as much as the rest of an order-1 step at 10M parameters (measured), while the test
    itself is free in every kernel that already reads g.
    """
    return jnp.where(_usable(g), value, jnp.zeros_like(value))


def _envelope(config: Config, count, dtype) -> jax.Array | float:
    """s_n: the user's schedule times the safe start's geometric ramp (in ``dtype``)."""
    scale = value_at(config.envelope, count) if config.envelope is not None else 1.0
    if isinstance(config.warmup, int) and config.warmup == 0:
        return scale
    steps = jnp.asarray(config.warmup)
    start = jnp.asarray(config.warmup_start).astype(dtype)
    # The count wraps to values past every warm-up, so the ramp never restarts.
    progress = 1 - count.astype(dtype) / jnp.maximum(steps, 1).astype(dtype)
    ramp = jnp.where(count < steps, start ** jnp.maximum(progress, 0), jnp.ones((), dtype))
    return jnp.asarray(scale).astype(dtype) * ramp


def _next_count(count, period: int):
    if period == 0:
        return optax.safe_increment(count)
    # Past the largest int32 step back by ``period``, a multiple of every ring size: the
    # rings keep their slot order and the count stays past every warm-up.
    limit = jnp.iinfo(jnp.int32).max
    return jnp.where(count == limit, count - (period - 1), count + 1)


def _direction(config: Config, grads, state: LearningRateRatesState, params, extra):
    if config.direction is None:
        return grads, state.direction_state
    # No guard on the direction's own state: keeping its old value where the new one is not
    # finite needs the old buffers after the direction has overwritten them in place, which
    # cost a third of the step at 10M parameters on XLA:CPU. The gradients it sees are
    # finite and square without overflow (``_usable_gradient``), which keeps Adam's finite.
    return config.direction.update(grads, state.direction_state, params, **extra)


def _hypergradients(config: Config, grads, state: LearningRateRatesState) -> list:
    """h⁽⁰⁾ … h⁽ᵐ⁻¹⁾ of this step: the derivative of its loss with respect to each rate."""

    def h0(g, u, eta):
        dtype = eta.dtype
        if jnp.iscomplexobj(u):
            # −Re(ḡ·u): the rates are real, complex parameters move in both parts.
            wide = promote(dtype, jnp.complex64)
            product = -jnp.real(jnp.conj(g.astype(wide)) * u.astype(wide)).astype(dtype)
        else:
            product = -(g.astype(dtype) * u.astype(dtype))
        if config.trace_guarded_on_read:
            product = _zero_nonfinite(product)  # u may hold a direction that overflowed
        return _where_usable(g, product)

    like = gr.expand(state.etas[0], config.granularities[0], "parameter", grads)
    if _sums_as_dots(config, grads, state.prev_direction):
        sums = jax.tree.map(once_per_signature(_leaf_h0, grads), grads, state.prev_direction, like)
        hypergradients = [_reduce(sums, "tensor", config.granularities[0], state.etas[0])]
    else:
        raw = jax.tree.map(once_per_signature(h0, grads), grads, state.prev_direction, like)
        hypergradients = [_reduce(raw, "parameter", config.granularities[0], state.etas[0])]
    if config.trace_holds_updates:
        # The trace sums the updates s_k·η_k·d_k: dividing by the last rate η_{n−1} gives the
        # derivative for past rates perturbed in proportion to themselves, η_k(1 + γ^{n−1−k}δ
        # / η_{n−1}), which at γ = 0 is the one-step h⁽⁰⁾. A rate of 0 gives 0 (it holds).
        hypergradients[0] = jax.tree.map(
            lambda h, eta: _zero_nonfinite(h / eta.astype(h.dtype)),
            hypergradients[0],
            state.etas[0],
        )
    for j in range(1, config.order):
        size = config.ring_sizes[j - 1]
        alpha_old = jax.tree.map(
            lambda ring, s=size: _state.ring_read(ring, state.count, s), state.alphas[j - 1]
        )
        chained = jax.tree.map(jnp.multiply, hypergradients[j - 1], alpha_old)
        # h⁽ʲ⁾ is written once and read by its consumers (``_ordering.materialised``),
        # except where order j's rule divides h itself (the normalised additive rule): XLA
        # would merge that division with ``materialised``'s and its kernels read the
        # product again. The simultaneous step, whose ordering needs h written once, then
        # materialises the product before ``_reduce``'s guard (which zeroes the NaN of an
        # infinite one); cascade does better without. Chosen by measurement
        # (speed_issue13.md).
        divides_h = config.rules[j].normalized and not config.rules[j].log_space
        if divides_h and _ordering.chained_in_order(config):
            chained = jax.tree.map(_ordering.materialised, chained, chained)
        granularities = config.granularities[j - 1 : j + 1]
        h = _reduce(chained, *granularities, state.etas[j])
        # The cascade's top h⁽ᵐ⁻¹⁾ feeds only its own rate's kernels: written once, it
        # would be a temporary that XLA:CPU pages in afresh at every call.
        top_of_cascade = config.schedule == "cascade" and j == config.order - 1
        if _ordering.per_parameter(config) and not divides_h and not top_of_cascade:
            h = jax.tree.map(_ordering.materialised, h, h)
        hypergradients.append(h)
    return hypergradients


def _sums_as_dots(config: Config, grads, traces) -> bool:
    """Whether h⁽⁰⁾ sums each leaf as one dot product (a coarse rate, real numbers)."""
    leaves = jax.tree.leaves((grads, traces))
    return config.granularities[0] != "parameter" and not any(
        jnp.iscomplexobj(leaf) for leaf in leaves
    )


def _leaf_h0(g, u, eta) -> jax.Array:
    """−Σ g ⊙ u over one leaf, or 0 where that sum is not finite (the leaf's rate holds).

    Summed without a guard on each product (``_ordering.summed_product``: on XLA:CPU a dot
    product, which reads g and u once, where the guarded product was written to a
    temporary and read back: 8 bytes a parameter, measured). A non-finite gradient
    element, a trace holding a direction's overflow, or a product that overflows makes the
    sum non-finite; the leaf's h⁽⁰⁾ is then 0 for the step.
    """
    return _zero_nonfinite(-_ordering.summed_product(g, u, eta.dtype))


def _reduce(tree, source, target, like_eta):
    dtype = like_eta.dtype if target == "global" else None
    return jax.tree.map(_zero_nonfinite, gr.reduce(tree, source, target, dtype))


def _rates(config: Config, state: LearningRateRatesState, hypergradients) -> tuple:
    """The new η⁽ʲ⁾, α⁽ʲ⁾ and normaliser moments, top order first."""
    if _ordering.chained_in_order(config):
        return _ordering.rates_in_order(config, state, hypergradients)
    count = state.count
    etas: list[Any] = [None] * config.order
    alphas: list[Any] = [None] * config.order
    moments: list[Any] = [None] * config.order
    slots: list[Any] = [None] * config.order
    for j in reversed(range(config.order)):
        if j == config.order - 1:
            above, above_granularity = value_at(config.top, count), "global"
        elif config.schedule == "cascade":
            above, above_granularity = etas[j + 1], config.granularities[j + 1]
        else:
            above, above_granularity = state.etas[j + 1], config.granularities[j + 1]
        granularity = config.granularities[j]
        above = gr.expand(above, above_granularity, granularity, state.etas[j])
        active_steps = config.active_steps(j, count)
        rule = config.rule_at(j, count)
        moment = state.second_moments[j] if config.normalized else None

        @functools.partial(once_per_signature, tree=hypergradients[j])
        def leaf_rule(eta, rate, h, v, rule=rule, active_steps=active_steps):
            return _rules.apply(rule, eta, rate, h, v, active_steps)

        eta = state.etas[j]
        if j + 1 < config.order and config.ring_sizes[j] == 1 and granularity == "parameter":
            # In the cascade the ring's and η's kernels compute the same step from the new
            # η⁽ʲ⁺¹⁾; told apart, each computes it itself instead of reading a temporary.
            ring_above = above
            if config.schedule == "cascade":
                ring_above = jax.tree.map(once_per_signature(_ordering.distinct, above), above)
            slots[j] = _ordering.one_slot_ring(
                leaf_rule, eta, ring_above, hypergradients[j], moment
            )
            ordered = once_per_signature(
                lambda e, ring: _ordering.after(e, _ordering.written(ring)), eta
            )
            eta = jax.tree.map(ordered, eta, slots[j])
        etas[j], alphas[j], moments[j] = _rules.map_rule(
            leaf_rule, eta, above, hypergradients[j], moment
        )
        if slots[j] is not None and config.normalized and not rule.log_space:
            # The old moment is read by the ring's and η's kernels: written after both.
            moments[j] = _ordering.moments_after(moments[j], etas[j])
    return etas, alphas, moments, slots


def _rings(config: Config, state: LearningRateRatesState, alphas, slots) -> tuple:
    """Each ring's slot ``count mod L_j`` takes this step's α⁽ʲ⁻¹⁾.

    ``slots`` holds the rings the rates' phase already wrote; a one-slot ring among them is
    computed without the ring it replaces (``_ordering.in_place_of``).
    """

    def written(size):
        def one(slot, ring):
            return _ordering.in_place_of(slot, ring, state.count) if size == 1 else slot

        return once_per_signature(one, state.alphas)

    def write(size):
        return once_per_signature(
            lambda ring, alpha: _state.ring_write(ring, alpha, state.count, size), state.alphas
        )

    return tuple(
        jax.tree.map(written(size), slots[j - 1], state.alphas[j - 1])
        if slots[j - 1] is not None
        else jax.tree.map(write(size), state.alphas[j - 1], alphas[j - 1])
        for j, size in zip(range(1, config.order), config.ring_sizes, strict=True)
    )


def _descent(config: Config, eta0_tree, directions, updates, state: LearningRateRatesState):
    """The update −s_n·η⁽⁰⁾ ⊙ d_n and the trace u_{n+1} the next hypergradient reads.

    Without a direction, ``directions`` is the raw gradient, guarded here (``_where_usable``).
    With one, at γ = 0 the update is −η⁽⁰⁾ ⊙ u_{n+1}, the same product read back from the
    trace (``_steps_along_trace``).
    """
    dtype = jax.tree.leaves(eta0_tree)[0].dtype if jax.tree.leaves(eta0_tree) else jnp.float32
    scale = _envelope(config, state.count, dtype)
    eta0 = gr.expand(eta0_tree, config.granularities[0], "parameter", updates)
    horizon_started = state.count >= config.horizon_start if config.late_horizon else None

    def step(e, d, u):
        dtype = promote(e.dtype, d.dtype)
        rate = jnp.asarray(scale).astype(e.dtype) * e
        update = -(rate.astype(dtype) * d.astype(dtype))
        if config.direction is None:
            update = _where_usable(d, update)
        return update.astype(u.dtype)

    def trace(d, u_prev, e):
        if config.direction is not None and not config.trace_guarded_on_read:
            d = _zero_nonfinite(d)  # other directions than the gradient may overflow
        dtype = u_prev.dtype
        applied = jnp.asarray(scale).astype(e.dtype).astype(dtype) * d.astype(dtype)
        if config.direction is None:
            applied = _where_usable(d, applied)
        if config.trace_holds_updates:
            applied = e.astype(dtype) * applied
        if not config.one_step:
            horizon = jnp.asarray(config.horizon).astype(e.dtype).astype(dtype)
            if horizon_started is not None:
                horizon = jnp.where(horizon_started, horizon, 0)
            return _ordering.after(applied + horizon * u_prev, _ordering.token(e, d))
        # At γ = 0 u_{n−1} is not read: ordered after the new η (``after``), XLA:CPU writes
        # u_n in place all the same (measured: 48 → 44 bytes a parameter at m = 1); XLA:GPU
        # needs the elementwise read of ``in_place_of`` not to write it elsewhere and copy it.
        applied = _ordering.after(applied, _ordering.token(e, d))
        return _ordering.in_place_of(applied, u_prev, state.count)

    def descend(e, d, u_prev, g):
        if not _steps_along_trace(config, e, d, u_prev):
            return step(e, d, g), trace(d, u_prev, e)
        # u_n = s_n·d_n: the update −η⁽⁰⁾·u_n reads it back (``written_once``). A direction
        # that two kernels read, the update's and the trace's, is a temporary where it
        # divides (Adam's m̂ / (√v̂ + ε)), which XLA:CPU pages in afresh at every call:
        # measured, a fifth of lrr_adam's step at 10M parameters. The trace's kernel
        # computes the direction itself only if it reads it once, so the guard against a
        # direction that overflowed is where the trace is read (``trace_guarded_on_read``).
        u_new = _ordering.written_once(trace(d, u_prev, e))
        dtype = promote(e.dtype, d.dtype)
        return (-(e.astype(dtype) * u_new.astype(dtype))).astype(g.dtype), u_new

    descend = once_per_signature(descend, updates)
    pairs = jax.tree.map(descend, eta0, directions, state.prev_direction, updates)
    new_updates = jax.tree.map(lambda _, pair: pair[0], updates, pairs)
    prev_direction = jax.tree.map(lambda _, pair: pair[1], updates, pairs)
    return new_updates, prev_direction


def _steps_along_trace(config: Config, e, d, u_prev) -> bool:
    """Whether the update reads η⁽⁰⁾ times the new trace (γ = 0, a direction, full precision)."""
    return config.trace_guarded_on_read and u_prev.dtype == promote(e.dtype, d.dtype, u_prev.dtype)


def _step(config: Config, updates, state, params=None, **extra_args):
    """One update, also returning the step's hypergradients (the debug hook)."""
    _state.check(config, state, updates)
    count = state.count
    if config.direction is None:
        directions, direction_state = updates, state.direction_state
    else:
        grads = jax.tree.map(_usable_gradient, updates)
        directions, direction_state = _direction(config, grads, state, params, extra_args)

    if config.order == 0:
        rate = value_at(config.top, count)
        new_updates = jax.tree.map(
            lambda d, u: (-(jnp.asarray(rate).astype(d.dtype) * d)).astype(u.dtype),
            directions if config.direction is not None else jax.tree.map(_usable_gradient, updates),
            updates,
        )
        new_state = state._replace(
            count=optax.safe_increment(count), direction_state=direction_state
        )
        return new_updates, new_state, Hypergradients((), ())

    hypergradients = _hypergradients(config, updates, state)
    etas, alphas, moments, slots = _rates(config, state, hypergradients)
    rings = _rings(config, state, alphas, slots)
    new_updates, prev_direction = _descent(config, etas[0], directions, updates, state)
    new_state = LearningRateRatesState(
        count=_next_count(count, config.period),
        etas=tuple(etas),
        alphas=rings,
        second_moments=tuple(moments) if config.normalized else (),
        direction_state=direction_state,
        prev_direction=prev_direction,
    )
    return new_updates, new_state, Hypergradients(tuple(hypergradients), tuple(alphas))


def transformation(config: Config) -> optax.GradientTransformationExtraArgs:
    """The optax transformation of a config; its step is registered for the debug hook."""

    def init(params) -> LearningRateRatesState:
        return _state.init(config, params)

    def step(updates, state, params=None, **extra_args):
        return _step(config, updates, state, params, **extra_args)

    def update(updates, state, params=None, **extra_args):
        new_updates, new_state, _ = _step(config, updates, state, params, **extra_args)
        return new_updates, new_state

    _STEPS[update] = step
    return optax.GradientTransformationExtraArgs(init, update)


def step_with_hypergradients(tx: optax.GradientTransformation) -> Callable | None:
    """The step of a transformation built by :func:`transformation`, else ``None``."""
    return _STEPS.get(tx.update)
