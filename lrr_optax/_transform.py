"""The learning-rate-rates transformation: per-parameter learning rates of any order."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax

from . import _granularity as gr
from . import _rules

PyTree = Any

DEFAULT_RATES: tuple[float, ...] = (0.3, 0.01)
Schedule = Literal["simultaneous", "cascade"]
SCHEDULES: tuple[Schedule, ...] = ("simultaneous", "cascade")


class LearningRateRatesState(NamedTuple):
    """State of :func:`learning_rate_rates`.

    The field names are a checkpoint format: they stay stable across releases.

    Attributes:
      count: the number of updates taken so far (int32, saturating).
      etas: the adapted rates, a tuple of pytrees, ``etas[j]`` is η⁽ʲ⁾ for orders
        ``j = 0 … m−1``, shaped by that order's granularity: like the params
        (``"parameter"``), one scalar per leaf (``"tensor"``) or one scalar (``"global"``).
        Empty at order 0.
      alphas: the α cache, a tuple of rings; ``alphas[j − 1]`` holds the last ``L_j``
        values of α⁽ʲ⁻¹⁾ = ∂R_{j−1}/∂η⁽ʲ⁾, stacked on a leading axis of size ``L_j``
        (``j`` for the simultaneous schedule, 1 for cascade) and indexed by
        ``count mod L_j``.
      second_moments: for the normalised rules, the EMA of each order's squared step
        input, one pytree per order shaped like ``etas``; empty otherwise.
      direction_state: the state of the direction transformation.
      prev_direction: the previous direction d_{n−1} (like the params), ``()`` at order 0.
    """

    count: jax.Array
    etas: tuple[PyTree, ...]
    alphas: tuple[PyTree, ...]
    second_moments: tuple[PyTree, ...]
    direction_state: optax.OptState
    prev_direction: PyTree


class Hypergradients(NamedTuple):
    """What one step computed besides the update (the library's debug hook).

    Attributes:
      hypergradients: the raw h⁽ʲ⁾ of this step for j = 0 … m−1, each shaped like η⁽ʲ⁾:
        the derivative of this step's loss with respect to η⁽ʲ⁾ (design page, section 5).
      alphas: α⁽ʲ⁾ = ∂R_j/∂η⁽ʲ⁺¹⁾ of this step's rule for j = 0 … m−1.
    """

    hypergradients: tuple[PyTree, ...]
    alphas: tuple[PyTree, ...]


def _concrete_float(value) -> float | None:
    """``value`` as a Python float when it is a concrete scalar, else ``None``."""
    try:
        array = jnp.asarray(value) if not isinstance(value, (int, float)) else None
    except TypeError:
        return None
    if array is None:
        return float(value)
    if isinstance(array, jax.core.Tracer) or array.ndim != 0:
        return None
    return float(array)


@dataclasses.dataclass(frozen=True)
class _Config:
    order: int
    initial: tuple[Any, ...]  # η⁽⁰⁾ … η⁽ᵐ⁻¹⁾ initial values (floats or arrays)
    top: Any  # η⁽ᵐ⁾: a scalar or a schedule of the step count
    direction: optax.GradientTransformationExtraArgs | None
    schedule: str
    granularities: tuple[str, ...]  # one per adapted order
    rule_options: tuple[_rules.RuleOptions, ...]  # one per adapted order
    state_dtype: Any

    @property
    def ring_sizes(self) -> tuple[int, ...]:
        """L_j for j = 1 … m−1: how far back order j reads α⁽ʲ⁻¹⁾."""
        if self.schedule == "cascade":
            return (1,) * (self.order - 1)
        return tuple(range(1, self.order))

    def first_active_step(self, j: int) -> int:
        """The first step at which h⁽ʲ⁾ can be non-zero (d₋₁ = 0 and α = 0 at start)."""
        if self.schedule == "cascade":
            return j + 1
        return 1 + j * (j + 1) // 2


class _LearningRateRates:
    """init/update of the transformation; built once by :func:`learning_rate_rates`."""

    def __init__(self, config: _Config):
        self.config = config

    def _dtype_of(self, leaf) -> Any:
        if self.config.state_dtype is not None:
            return jnp.dtype(self.config.state_dtype)
        return jnp.asarray(leaf).dtype if not hasattr(leaf, "dtype") else leaf.dtype

    def init(self, params) -> LearningRateRatesState:
        c = self.config
        direction_state = c.direction.init(params) if c.direction else optax.EmptyState()
        count = jnp.zeros([], jnp.int32)
        if c.order == 0:
            return LearningRateRatesState(count, (), (), (), direction_state, ())

        def zeros_like_params(p):
            return jnp.zeros_like(p, dtype=self._dtype_of(p))

        etas = tuple(
            gr.init_like(params, c.granularities[j], c.initial[j], self._dtype_of)
            for j in range(c.order)
        )

        def ring_like(eta, size):
            # From zeros_like, so the ring keeps its rate's sharding on the trailing axes;
            # unboxed, since a box's annotations fit the rate's rank, not the ring's.
            eta = gr.unbox(eta)
            return jnp.broadcast_to(jnp.zeros_like(eta)[None], (size, *eta.shape))

        alphas = tuple(
            jax.tree.map(lambda e, size=size: ring_like(e, size), etas[j - 1], is_leaf=gr.is_boxed)
            for j, size in zip(range(1, c.order), c.ring_sizes, strict=True)
        )
        normalized = c.rule_options[0].rule in _rules.NORMALIZED_RULES
        second_moments = (
            tuple(jax.tree.map(jnp.zeros_like, eta) for eta in etas) if normalized else ()
        )
        prev_direction = jax.tree.map(zeros_like_params, params)
        return LearningRateRatesState(
            count, etas, alphas, second_moments, direction_state, prev_direction
        )

    def update(self, updates, state, params=None, **extra_args):
        new_updates, new_state, _ = self.step(updates, state, params, **extra_args)
        return new_updates, new_state

    def step(self, updates, state: LearningRateRatesState, params=None, **extra_args):
        """One update, also returning the step's hypergradients (the debug hook)."""
        c = self.config
        grads = jax.tree.map(_zero_nonfinite, updates)
        if c.direction is not None:
            directions, direction_state = c.direction.update(
                grads, state.direction_state, params, **extra_args
            )
        else:
            directions, direction_state = grads, state.direction_state
        count = state.count
        top = c.top(count) if callable(c.top) else c.top

        if c.order == 0:
            new_updates = jax.tree.map(
                lambda d, u: (-(jnp.asarray(top).astype(d.dtype) * d)).astype(u.dtype),
                directions,
                updates,
            )
            new_state = state._replace(
                count=optax.safe_increment(count), direction_state=direction_state
            )
            return new_updates, new_state, Hypergradients((), ())

        granularities = c.granularities
        # h⁽⁰⁾ = −g_n ⊙ d_{n−1}, in the dtype the rates are stored in. Zeroing the product
        # (below, or in _reduce at parameter granularity) rather than g is the same guard
        # (d_{n−1} is finite), and leaves the zeroed g to the kernels of the direction, so
        # XLA need not materialise it for all of them.
        zero = _zero_nonfinite if granularities[0] != "parameter" else (lambda x: x)
        raw = jax.tree.map(
            lambda g, d_prev: zero(-(g.astype(d_prev.dtype) * d_prev)),
            updates,
            state.prev_direction,
        )
        hypergradients = [self._reduce(raw, "parameter", granularities[0], state.etas[0])]
        for j in range(1, c.order):
            size = c.ring_sizes[j - 1]
            alpha_old = jax.tree.map(
                lambda ring, s=size: _ring_read(ring, count, s), state.alphas[j - 1]
            )
            chained = jax.tree.map(jnp.multiply, hypergradients[j - 1], alpha_old)
            hypergradients.append(
                self._reduce(chained, granularities[j - 1], granularities[j], state.etas[j])
            )

        new_etas: list[Any] = [None] * c.order
        new_alphas: list[Any] = [None] * c.order
        new_moments: list[Any] = [None] * c.order
        normalized = bool(state.second_moments)
        for j in reversed(range(c.order)):
            if j == c.order - 1:
                above, above_granularity = top, "global"
            elif c.schedule == "cascade":
                above, above_granularity = new_etas[j + 1], granularities[j + 1]
            else:
                above, above_granularity = state.etas[j + 1], granularities[j + 1]
            above = gr.expand(above, above_granularity, granularities[j], state.etas[j])
            options = c.rule_options[j]
            # Written so that a saturated count cannot overflow.
            active_steps = jnp.maximum(count - (c.first_active_step(j) - 1), 1)
            moments = state.second_moments[j] if normalized else None

            def leaf_rule(eta, rate, h, moment, options=options, active_steps=active_steps):
                return _rules.apply_rule(options, eta, rate, h, moment, active_steps)

            if normalized:
                out = jax.tree.map(leaf_rule, state.etas[j], above, hypergradients[j], moments)
            else:
                out = jax.tree.map(
                    lambda e, r, h, f=leaf_rule: f(e, r, h, None),
                    state.etas[j],
                    above,
                    hypergradients[j],
                )
            new_etas[j], new_alphas[j], new_moments[j] = _unzip3(out, state.etas[j])

        rings = tuple(
            jax.tree.map(
                lambda ring, alpha, s=size: _ring_write(ring, alpha, count, s),
                state.alphas[j - 1],
                new_alphas[j - 1],
            )
            for j, size in zip(range(1, c.order), c.ring_sizes, strict=True)
        )

        eta0 = gr.expand(new_etas[0], granularities[0], "parameter", updates)
        new_updates = jax.tree.map(
            lambda e, d, u: (-(e * d.astype(e.dtype))).astype(u.dtype), eta0, directions, updates
        )
        # The gradient is zeroed already; another direction may still overflow.
        finite = _zero_nonfinite if c.direction is not None else (lambda x: x)
        prev_direction = jax.tree.map(
            lambda d, d_prev, e: _after(finite(d).astype(d_prev.dtype), e),
            directions,
            state.prev_direction,
            eta0,
        )
        new_state = LearningRateRatesState(
            count=optax.safe_increment(count),
            etas=tuple(new_etas),
            alphas=rings,
            second_moments=tuple(new_moments) if normalized else (),
            direction_state=direction_state,
            prev_direction=prev_direction,
        )
        return new_updates, new_state, Hypergradients(tuple(hypergradients), tuple(new_alphas))

    @staticmethod
    def _reduce(tree, source, target, like_eta):
        reduced = gr.reduce(tree, source, target, _global_dtype(like_eta, target))
        return jax.tree.map(_zero_nonfinite, reduced)


def _global_dtype(like_eta, granularity):
    return like_eta.dtype if granularity == "global" else None


def _zero_nonfinite(x):
    # Products of many gradients overflow; an inf or NaN must never enter the state.
    return jnp.where(jnp.isfinite(x), x, jnp.zeros_like(x))


def _after(x, dependency):
    """``x``, computed after ``dependency`` (finite, broadcastable), which XLA must keep.

    d_n overwrites d_{n−1} in place (donated state, ``lax.scan`` carry) only once every
    kernel that reads d_{n−1} has run; XLA:CPU copies the buffer otherwise, and drops
    optimisation barriers before ordering kernels. Reading the new η⁽⁰⁾ orders the write
    by data. The rates are finite by construction, so ``x`` passes unchanged.
    """
    return jnp.where(jnp.isnan(dependency), jnp.zeros_like(x), x)


def _ring_read(ring, count, size):
    if size == 1:
        return ring[0]
    return jax.lax.dynamic_index_in_dim(ring, count % size, axis=0, keepdims=False)


def _ring_write(ring, value, count, size):
    if size == 1:
        return value[None]
    return jax.lax.dynamic_update_index_in_dim(ring, value, count % size, axis=0)


def _unzip3(tree_of_triples, like):
    """Split a tree whose leaves became 3-tuples into three trees shaped like ``like``."""
    treedef = jax.tree.structure(like)
    leaves = treedef.flatten_up_to(tree_of_triples)
    return tuple(treedef.unflatten([leaf[i] for leaf in leaves]) for i in range(3))


def learning_rate_rates(
    learning_rate: optax.ScalarOrSchedule,
    rates: Sequence[optax.ScalarOrSchedule] = DEFAULT_RATES,
    *,
    direction: optax.GradientTransformation | None = None,
    schedule: str = "simultaneous",
    granularity: str | Sequence[str] = "tensor",
    rule: str = "log_normalized",
    clip: float | Sequence[float | None] | None = 1.0,
    bounds: tuple[float | None, float | None] | None = (0.0, None),
    state_dtype: Any = None,
    normalizer_decay: float = 0.99,
    normalizer_eps: float = 1e-30,
) -> optax.GradientTransformationExtraArgs:
    r"""Descent along ``direction`` with learning rates that learn themselves, to order m.

    Every parameter (or tensor, or the whole pytree: ``granularity``) gets its own learning
    rate η⁽⁰⁾, adapted online by gradient descent on the loss; the rate of that adaptation,
    η⁽¹⁾, is adapted the same way, and so on up to the order ``m = len(rates)``, whose top
    rate η⁽ᵐ⁾ is fixed (or scheduled). Order 1
    is hypergradient descent (Baydin et al. 2018), higher orders are stacked
    hyperoptimizers (Chandra et al. 2022) made per-parameter.

    With g_n the incoming gradient and d_n = D(g_n) the direction:

    .. math::

       h^{(0)}_n &= -\operatorname{reduce}_0(g_n \odot d_{n-1}), \qquad
       h^{(j)}_n = \operatorname{reduce}_j\big(h^{(j-1)}_n \odot \alpha^{(j-1)}_{n-L_j}\big), \\
       \eta^{(j)} &\leftarrow R_j(\eta^{(j)}, \eta^{(j+1)}, h^{(j)}), \qquad
       \alpha^{(j)} = \partial R_j / \partial \eta^{(j+1)}, \\
       \text{update}_n &= -\eta^{(0)} \odot d_n .

    With the ``"simultaneous"`` schedule every order updates from the values of the
    previous step and ``L_j = j`` (the α cache holds m(m−1)/2 buffers); with
    ``"cascade"`` the orders update top-down, each with the rate above it just updated,
    and ``L_j = 1`` (m−1 buffers). The cache is a ring indexed by the step count, so a
    step's cost grows linearly with the order.

    Non-finite numbers never enter the state: a NaN or inf gradient element is treated
    as zero (it moves neither its parameter nor its rates, and the direction sees a
    zero), and a hypergradient or rule result that overflows leaves that rate unchanged
    for the step.

    Args:
      learning_rate: the initial η⁽⁰⁾ (a float or an array, traced values allowed). At
        order 0 it is the fixed learning rate and may be a schedule.
      rates: the initial η⁽¹⁾ … η⁽ᵐ⁻¹⁾, then the fixed top rate η⁽ᵐ⁾, which may be a
        schedule. ``()`` is order 0: plain descent along ``direction``.
      direction: an ``optax.GradientTransformation`` giving d_n from g_n, e.g.
        ``optax.scale_by_adam()``; ``None`` is the gradient itself (SGD).
      schedule: ``"simultaneous"`` (the seed's) or ``"cascade"`` (top-down).
      granularity: ``"parameter"``, ``"tensor"`` or ``"global"``, or a tuple with one per
        adapted order (orders 0 … m−1) that never gets finer going up.
      rule: how a rate moves with its hypergradient: ``"additive"`` (the seed's,
        η − ρ·h), ``"normalized"`` (η − ρ·h/√v̂, v̂ a debiased EMA of h²),
        ``"multiplicative"`` (η·exp(−ρ·η·h), in log space) or ``"log_normalized"``
        (η·exp(−ρ·u/√v̂) with u = η·h and v̂ a debiased EMA of u²).
      clip: bound c on the rule's step (``|h|`` for ``"additive"``), one float for all
        orders or one per adapted order; ``None`` for none.
      bounds: ``(lo, hi)`` the adapted rates are clamped to; either may be ``None``;
        ``None`` for no bounds. The default keeps every rate non-negative.
      state_dtype: dtype of the rates, the α cache and the previous direction; ``None``
        follows each parameter's dtype.
      normalizer_decay: EMA decay of the normalised rules' second moment.
      normalizer_eps: added to the normalised rules' root; tiny, because products of
        many gradients are tiny.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its update is −η⁽⁰⁾ ⊙ d_n in the
      dtype of the incoming updates, its state a :class:`LearningRateRatesState`.
      Extra keyword arguments to ``update`` are passed to ``direction`` when it takes
      them and otherwise ignored.

    Example:
      >>> import jax, jax.numpy as jnp, optax, lrr_optax
      >>> params = {"w": jnp.ones(3)}
      >>> tx = lrr_optax.learning_rate_rates(0.1, rates=(1e-2,))
      >>> state = tx.init(params)
      >>> loss = lambda p: jnp.sum(p["w"] ** 2)
      >>> for _ in range(3):
      ...     updates, state = tx.update(jax.grad(loss)(params), state, params)
      ...     params = optax.apply_updates(params, updates)
      >>> bool(loss(params) < 3.0)
      True

    References:
      Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent",
      ICLR 2018. Chandra et al., "Gradient Descent: The Ultimate Optimizer", NeurIPS
      2022. The seed write-up, "Learning Rate Rates".
    """
    rates = (
        tuple(rates) if not _is_array_like(rates) else tuple(rates[i] for i in range(len(rates)))
    )
    order = len(rates)
    _validate_choice("schedule", schedule, SCHEDULES)
    _validate_choice("rule", rule, _rules.RULES)
    granularities = _granularities(granularity, order)
    clips = _per_order("clip", clip, order)
    for c in clips:
        concrete = None if c is None else _concrete_float(c)
        if concrete is not None and not concrete > 0:
            raise ValueError(f"clip must be positive (or None for no clipping), got {c}.")
    lower, upper = _bounds(bounds)
    if callable(learning_rate) and order > 0:
        raise ValueError(
            "learning_rate is the initial value of an adapted rate when rates is not "
            "empty, so it cannot be a schedule; schedule the top rate rates[-1] instead."
        )
    for i, value in enumerate(rates[:-1]):
        if callable(value):
            raise ValueError(
                f"rates[{i}] is the initial value of an adapted rate and cannot be a "
                "schedule; only the top rate rates[-1] may be one."
            )
    for name, value in [("learning_rate", learning_rate)] + [
        (f"rates[{i}]", r) for i, r in enumerate(rates)
    ]:
        if callable(value):
            continue
        concrete = _concrete_float(value)
        if concrete is not None and (concrete < 0 or math.isnan(concrete)):
            raise ValueError(f"{name} must be a non-negative number, got {concrete}.")
    decay = _concrete_float(normalizer_decay)
    if decay is not None and not 0.0 <= decay < 1.0:
        raise ValueError(f"normalizer_decay must be in [0, 1), got {normalizer_decay}.")
    if direction is not None:
        if not isinstance(direction, optax.GradientTransformation):
            raise TypeError(
                "direction must be an optax.GradientTransformation such as "
                f"optax.scale_by_adam(), or None for SGD; got {type(direction).__name__}."
            )
        direction = optax.with_extra_args_support(direction)
    if state_dtype is not None:
        state_dtype = jnp.dtype(state_dtype)
        if not jnp.issubdtype(state_dtype, jnp.floating):
            raise ValueError(f"state_dtype must be a floating dtype, got {state_dtype}.")

    config = _Config(
        order=order,
        initial=(learning_rate, *rates[:-1]) if order else (),
        top=rates[-1] if order else learning_rate,
        direction=direction,
        schedule=schedule,
        granularities=granularities,
        rule_options=tuple(
            _rules.RuleOptions(rule, clips[j], lower, upper, normalizer_decay, normalizer_eps)
            for j in range(order)
        ),
        state_dtype=state_dtype,
    )
    impl = _LearningRateRates(config)
    return optax.GradientTransformationExtraArgs(impl.init, impl.update)


def _is_array_like(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _validate_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {', '.join(choices)}.")


def _granularities(granularity, order: int) -> tuple[str, ...]:
    if isinstance(granularity, str):
        _validate_choice("granularity", granularity, gr.GRANULARITIES)
        return (granularity,) * order
    granularities = tuple(granularity)
    if len(granularities) != order:
        raise ValueError(
            f"granularity has {len(granularities)} entries but the order is {order}: give "
            "one per adapted order (orders 0 … m−1, m = len(rates)), or a single string."
        )
    for g in granularities:
        _validate_choice("granularity", g, gr.GRANULARITIES)
    for j in range(1, order):
        if not gr.is_coarser_or_equal(granularities[j], granularities[j - 1]):
            raise ValueError(
                f"granularity of order {j} ({granularities[j]!r}) is finer than that of "
                f"order {j - 1} ({granularities[j - 1]!r}); going up the orders it may "
                "only stay the same or get coarser (parameter → tensor → global)."
            )
    return granularities


def _per_order(name: str, value, order: int) -> tuple:
    # A scalar array (as optax.inject_hyperparams passes, possibly traced) is one value.
    if value is None or isinstance(value, (int, float)) or _is_array_like(value) and not value.ndim:
        return (value,) * order
    values = tuple(value)
    if len(values) != order:
        raise ValueError(
            f"{name} has {len(values)} entries but the order is {order}: give one per "
            "adapted order, a single number, or None."
        )
    return values


def _bounds(bounds) -> tuple[float | None, float | None]:
    if bounds is None:
        return None, None
    try:
        lower, upper = bounds
    except (TypeError, ValueError):
        raise ValueError(
            f"bounds must be a pair (lo, hi), either of which may be None, or None; got {bounds!r}."
        ) from None
    lower = None if lower is None else float(lower)
    upper = None if upper is None else float(upper)
    if lower is not None and upper is not None and lower > upper:
        raise ValueError(f"bounds must have lo <= hi, got lo={lower} > hi={upper}.")
    return lower, upper
