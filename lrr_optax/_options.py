"""Options of :func:`learning_rate_rates`: checked once, resolved into a plain config.

Everything a user can get wrong is refused here, when the transformation is built, with a
message that says what to pass instead. Values that may be traced (``optax.inject_hyperparams``
turns every numeric option into an array) are checked only when they are concrete.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import optax

from . import _granularity as gr
from . import _rules

Schedule = Literal["simultaneous", "cascade"]
SCHEDULES: tuple[Schedule, ...] = ("simultaneous", "cascade")
HorizonTrace = Literal["directions", "updates"]
HORIZON_TRACES: tuple[HorizonTrace, ...] = ("directions", "updates")
DEFAULT_RATES: tuple[float, ...] = (0.3, 0.01)
# ``learning_rate_rates`` keeps the seed's one-step hypergradient and the shorter ramp; the
# aliases are recipes measured per direction (``benchmarks/results/defaults.md``). For
# ``lrr_sgd``: the one-step hypergradient holds SGD's rate where the next step is best,
# about half the stability limit of the steepest direction; a discounted trace weighs the
# progress along flat directions by 1/(1 − γ) against the oscillation along steep ones by
# 1/(1 + γ). The longer ramp keeps the faster-rising rate from a divergent start on
# Rosenbrock's walls. With the Adam direction a horizon costs the networks.
WARMUP_STEPS = 100
HORIZON = 0.0
SGD_WARMUP_STEPS = 200
SGD_HORIZON = 0.9
# The count is int32; it wraps by a multiple of every ring size, so the rings keep turning.
_MAX_PERIOD = 2**24


@dataclasses.dataclass(frozen=True)
class Config:
    """A transformation's resolved options (Python values or arrays fixed at build time)."""

    order: int
    initial: tuple[Any, ...]  # η⁽⁰⁾ … η⁽ᵐ⁻¹⁾ at init
    top: Any  # η⁽ᵐ⁾ (a scalar or a schedule); at order 0 the fixed learning rate
    envelope: Callable[[jax.Array], Any] | None  # s_n, the schedule η⁽⁰⁾ multiplies
    warmup: Any  # steps of the safe start's ramp (0: none)
    warmup_start: Any  # the ramp's first factor
    horizon: Any  # γ of the hypergradient's trace (0: the one-step hypergradient)
    horizon_start: Any  # the first step whose trace keeps the past (γ = 0 before it)
    direction: optax.GradientTransformationExtraArgs | None
    schedule: Schedule
    granularities: tuple[gr.Granularity, ...]  # one per adapted order
    rules: tuple[_rules.RuleConfig, ...]  # one per adapted order
    state_dtype: Any
    rescale_start: Any = 0  # the first step at which a spike may rescale a rate
    horizon_trace: HorizonTrace = "directions"  # what the trace sums: s·d, or s·η⁽⁰⁾·d

    @property
    def normalized(self) -> bool:
        return bool(self.rules) and self.rules[0].normalized

    @property
    def one_step(self) -> bool:
        """Whether the horizon is a concrete 0: the trace is then s_{n−1}·d_{n−1} alone."""
        return _concrete(self.horizon) == 0

    @property
    def trace_holds_updates(self) -> bool:
        """Whether the trace sums the updates applied, s_n·η⁽⁰⁾_n·d_n, and h⁽⁰⁾ divides by
        the last rate (``horizon_trace="updates"``). At a concrete γ = 0 that is the
        one-step hypergradient exactly, so the one-step trace is kept."""
        return self.horizon_trace == "updates" and not self.one_step and self.order > 0

    @property
    def late_horizon(self) -> bool:
        """Whether γ may start later than step 0 (a ``horizon_start`` not a concrete 0)."""
        return _concrete(self.horizon_start) != 0

    @property
    def trace_guarded_on_read(self) -> bool:
        """Whether a direction's non-finite values are left out where the trace is read
        instead of zeroed where it is written: at γ = 0 with a direction, whose trace's
        kernel computes the direction itself only if it reads it once."""
        return self.one_step and self.direction is not None

    @property
    def ring_sizes(self) -> tuple[int, ...]:
        """L_j for j = 1 … m−1: how many steps back order j reads α⁽ʲ⁻¹⁾."""
        if self.schedule == "cascade":
            return (1,) * (self.order - 1)
        return tuple(range(1, self.order))

    @property
    def period(self) -> int:
        """The count wraps by this multiple of every ring size (0: it saturates instead)."""
        period = math.lcm(1, *self.ring_sizes)
        return period if period <= _MAX_PERIOD else 0

    def first_active_step(self, j: int) -> int:
        """The first step at which h⁽ʲ⁾ can be non-zero (d₋₁ = 0 and α = 0 at start)."""
        if self.schedule == "cascade":
            return j + 1
        return 1 + j * (j + 1) // 2

    def active_steps(self, j: int, count) -> jax.Array:
        """k ≥ 1: the steps h⁽ʲ⁾ has existed at step ``count``, written so that a wrapped
        count cannot overflow."""
        return jnp.maximum(count - (self.first_active_step(j) - 1), 1)

    def rule_at(self, j: int, count) -> _rules.RuleConfig:
        """Order j's rule at step ``count``.

        With a schedule s_n as the learning rate, η⁽⁰⁾ is the factor multiplying it and its
        bounds hold the learned rate s_n·η⁽⁰⁾, so that a schedule and a constant of the
        same value move alike. Where s_n ≤ 0 the update ignores η⁽⁰⁾: there only the lower
        bound holds, on the factor itself.
        """
        rule = self.rules[j]
        if rule.rescale and _concrete(self.rescale_start) != 0:
            rule = rule._replace(rescaling=count >= self.rescale_start)
        if j or self.envelope is None or (rule.lower is None and rule.upper is None):
            return rule
        scale = jnp.asarray(value_at(self.envelope, count))
        positive = scale > 0
        scale = jnp.where(positive, scale, jnp.ones_like(scale))

        def held(bound, otherwise):
            return bound if bound is None else jnp.where(positive, bound / scale, otherwise)

        return rule._replace(lower=held(rule.lower, rule.lower), upper=held(rule.upper, jnp.inf))


def value_at(value, count):
    """``value`` (a rate or the envelope) at step ``count``: a schedule is called on it."""
    return value(count) if callable(value) else value


def _concrete(value) -> float | None:
    """``value`` as a Python float when it is a concrete real scalar, else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, jax.core.Tracer) or not _is_array(value) or value.ndim:
        return None
    if not jnp.issubdtype(value.dtype, jnp.number) or jnp.iscomplexobj(value):
        return None
    return float(value)


def _is_array(value) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) or _is_array(value)


def _choice(name: str, value, choices) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; pass one of {', '.join(map(repr, choices))}.")


def _rate(name: str, value, *, log_space: bool, adapted: bool) -> None:
    if not _is_number(value):
        raise TypeError(f"{name} must be a number or an array of numbers, got {value!r}.")
    if _is_array(value) and not jnp.issubdtype(value.dtype, jnp.number):
        raise TypeError(f"{name} must be numeric, got an array of {value.dtype}.")
    concrete = _concrete(value)
    if concrete is None:
        return
    if not (math.isfinite(concrete) and concrete >= 0):
        raise ValueError(f"{name} must be a finite non-negative number, got {concrete}.")
    if adapted and log_space and concrete == 0:
        raise ValueError(
            f"{name} is 0, and a log-space rule ('multiplicative', 'log_normalized') moves a "
            "rate by a factor, so it would stay 0 for ever. Start it at a small positive "
            "value (e.g. 1e-6), or use rule='additive' or 'normalized'."
        )


def _granularities(granularity, order: int) -> tuple[gr.Granularity, ...]:
    if isinstance(granularity, str):
        _choice("granularity", granularity, gr.GRANULARITIES)
        return (granularity,) * order
    if not isinstance(granularity, Sequence):
        raise TypeError(
            f"granularity must be one of {', '.join(map(repr, gr.GRANULARITIES))}, or a "
            f"sequence of them with one per adapted order; got {granularity!r}."
        )
    granularities = tuple(granularity)
    if len(granularities) != order:
        raise ValueError(
            f"granularity has {len(granularities)} entries but the order is {order}: give "
            "one per adapted order (orders 0 … m−1, m = len(rates)), or a single string."
        )
    for g in granularities:
        _choice("granularity", g, gr.GRANULARITIES)
    for j in range(1, order):
        if not gr.is_coarser_or_equal(granularities[j], granularities[j - 1]):
            raise ValueError(
                f"granularity of order {j} ({granularities[j]!r}) is finer than that of "
                f"order {j - 1} ({granularities[j - 1]!r}); going up the orders it may "
                "only stay the same or get coarser (parameter → tensor → global)."
            )
    return granularities


def _clips(clip, order: int) -> tuple[Any, ...]:
    clips = (clip,) * order if clip is None or _is_number(clip) and not _ndim(clip) else clip
    if isinstance(clips, str) or not isinstance(clips, Sequence):
        raise TypeError(
            "clip must be a positive number, None for no clipping, or a sequence of those "
            f"with one per adapted order; got {clip!r}."
        )
    if len(clips) != order:
        raise ValueError(
            f"clip has {len(clips)} entries but the order is {order}: give one per adapted "
            "order, a single number, or None."
        )
    for c in clips:
        if c is not None and (not _is_number(c) or _ndim(c)):
            raise TypeError(f"Each clip must be a positive number or None, got {c!r}.")
        concrete = None if c is None else _concrete(c)
        if concrete is not None and not (concrete > 0 and math.isfinite(concrete)):
            raise ValueError(f"clip must be positive and finite (or None), got {c!r}.")
    return tuple(clips)


def _ndim(value) -> int:
    return value.ndim if _is_array(value) else 0


def _pair(bounds) -> tuple[float | None, float | None]:
    if bounds is None:
        return None, None
    if isinstance(bounds, str) or not isinstance(bounds, Sequence) or len(bounds) != 2:
        raise ValueError(
            "bounds must be a pair (lo, hi), either of which may be None, a sequence of such "
            f"pairs with one per adapted order, or None; got {bounds!r}."
        )
    values = []
    for v in bounds:
        if v is None:
            values.append(None)
            continue
        concrete = _concrete(v)
        if concrete is None or math.isnan(concrete):
            raise ValueError(f"bounds must hold numbers or None, got {bounds!r}.")
        values.append(concrete)
    lower, upper = values
    if lower is not None and upper is not None and lower > upper:
        raise ValueError(f"bounds must have lo <= hi, got lo={lower} > hi={upper}.")
    return lower, upper


def _bounds(bounds, order: int) -> tuple[tuple[float | None, float | None], ...]:
    one_pair = bounds is None or (
        isinstance(bounds, Sequence) and all(b is None or _is_number(b) for b in bounds)
    )
    if one_pair:
        return (_pair(bounds),) * order
    if not isinstance(bounds, Sequence) or len(bounds) != order:
        raise ValueError(
            f"bounds has {len(bounds) if isinstance(bounds, Sequence) else 'no'} pairs but the "
            f"order is {order}: give one (lo, hi) pair per adapted order, a single pair, or None."
        )
    return tuple(_pair(b) for b in bounds)


def _nonnegative(name: str, value, *, below: float | None = None) -> None:
    concrete = _concrete(value)
    if not _is_number(value) or _ndim(value):
        raise TypeError(f"{name} must be a number, got {value!r}.")
    if concrete is None:
        return
    if not (math.isfinite(concrete) and concrete >= 0) or below is not None and concrete >= below:
        limit = f"in [0, {below})" if below is not None else "finite and >= 0"
        raise ValueError(f"{name} must be {limit}, got {concrete}.")


def _step_number(name: str, value, otherwise: str = "") -> None:
    """A step count or index: an int >= 0, or an integer array (``inject_hyperparams``
    passes one, possibly traced). ``otherwise`` names what else the option accepts."""
    integral = isinstance(value, numbers.Integral) or (
        _is_array(value) and jnp.issubdtype(value.dtype, jnp.integer)
    )
    if isinstance(value, bool) or not integral:
        raise TypeError(
            f"{name} is a number of steps and must be an int >= 0{otherwise}, got {value!r}."
        )
    _nonnegative(name, value)


def _threshold(name: str, value, example: str, role: str, otherwise: str) -> None:
    """A threshold: a finite number > 0, or ``None``."""
    if value is None:
        return
    if isinstance(value, bool):
        raise TypeError(f"{name} is a number, e.g. {example}, or None; got {value}.")
    _nonnegative(name, value)
    if _concrete(value) == 0:
        raise ValueError(f"{name} must be finite and > 0 ({role}), or {otherwise}; got 0.")


def _per_parameter_options(element_share, anchor, rule, granularities) -> None:
    for name, value in (("element_share", element_share), ("anchor", anchor)):
        if value is None:
            continue
        if isinstance(value, bool):
            raise TypeError(f"{name} is a number or None; got {value}.")
        _nonnegative(name, value, below=1.0 if name == "anchor" else None)
        if "parameter" not in granularities:
            raise ValueError(
                f"{name} acts on per-parameter rates, and no order has them "
                f"(granularity={granularities!r}). Pass granularity='parameter', or leave "
                f"{name} at None."
            )
    if element_share is not None and rule not in _rules.NORMALIZED_RULES:
        raise ValueError(
            f"element_share pools normalised steps, and rule={rule!r} has no normaliser. Use "
            "rule='log_normalized' (the default) or 'normalized', or leave element_share at "
            "None."
        )


def parse(
    learning_rate,
    rates,
    *,
    direction,
    schedule,
    granularity,
    rule,
    clip,
    bounds,
    state_dtype,
    normalizer_decay,
    normalizer_eps,
    warmup,
    warmup_start,
    horizon,
    anneal_steps,
    spike_threshold,
    spike_rescale,
    element_share=None,
    anchor=None,
    horizon_start=0,
    spike_rescale_start=0,
    spike_rescale_threshold=None,
    horizon_trace="directions",
) -> Config:
    """Check every option of :func:`learning_rate_rates` and resolve them into a config."""
    if isinstance(rates, str) or not isinstance(rates, Sequence) and not _is_array(rates):
        raise TypeError(
            "rates must be a sequence: the initial η⁽¹⁾ … η⁽ᵐ⁻¹⁾, then the fixed top rate "
            f"η⁽ᵐ⁾ (e.g. rates=(0.01,) for order 1, () for plain descent); got {rates!r}."
        )
    if _is_array(rates) and not rates.ndim:
        raise TypeError(f"rates must be a sequence, e.g. rates=({float(rates)},); got a scalar.")
    rates = tuple(rates[i] for i in range(len(rates)))
    order = len(rates)
    _choice("schedule", schedule, SCHEDULES)
    _choice("rule", rule, _rules.RULES)
    granularities = _granularities(granularity, order)
    clips = _clips(clip, order)
    per_order_bounds = _bounds(bounds, order)
    _nonnegative("normalizer_decay", normalizer_decay, below=1.0)
    _nonnegative("normalizer_eps", normalizer_eps)
    _nonnegative("horizon", horizon, below=1.0)
    _step_number("horizon_start", horizon_start)
    _choice("horizon_trace", horizon_trace, HORIZON_TRACES)
    if anneal_steps is not None:
        if isinstance(anneal_steps, bool):
            raise TypeError(
                f"anneal_steps is a number of steps, e.g. 30, or None; got {anneal_steps}."
            )
        _nonnegative("anneal_steps", anneal_steps)
        steps = _concrete(anneal_steps)
        if steps is not None and steps < 1:
            raise ValueError(
                f"anneal_steps must be >= 1 (or None for no annealing), got {anneal_steps}."
            )
    _threshold(
        "spike_threshold",
        spike_threshold,
        "5.0",
        "it is compared with the normalised step",
        "None to clip falls like rises",
    )
    if not isinstance(spike_rescale, bool):
        raise TypeError(
            f"spike_rescale is True or False (whether a spike divides the rate by its ratio); "
            f"got {spike_rescale!r}."
        )
    _per_parameter_options(element_share, anchor, rule, granularities)
    _step_number("warmup", warmup)
    _threshold(
        "spike_rescale_threshold",
        spike_rescale_threshold,
        "30.0",
        "a rate is divided by its signal's jump over it",
        "None for max(clip, spike_threshold)",
    )
    if spike_rescale_start is None:
        spike_rescale_start = warmup
    else:
        _step_number(
            "spike_rescale_start", spike_rescale_start, " (or None: when the warm-up ends)"
        )
    _nonnegative("warmup_start", warmup_start)
    start = _concrete(warmup_start)
    if start is not None and not 0 < start <= 1:
        raise ValueError(f"warmup_start must be in (0, 1], got {start}.")

    log_space = rule in _rules.LOG_SPACE_RULES
    envelope = learning_rate if callable(learning_rate) else None
    if envelope is None:
        _rate("learning_rate", learning_rate, log_space=log_space, adapted=order > 0)
    for i, value in enumerate(rates):
        top = i == order - 1
        if callable(value):
            if not top:
                raise ValueError(
                    f"rates[{i}] is the initial value of an adapted rate and cannot be a "
                    "schedule; only the top rate rates[-1] may be one."
                )
            continue
        _rate(f"rates[{i}]", value, log_space=log_space, adapted=not top)

    if direction is not None:
        if not isinstance(direction, optax.GradientTransformation):
            raise TypeError(
                "direction must be an optax.GradientTransformation such as "
                f"optax.scale_by_adam(), or None for SGD; got {type(direction).__name__}."
            )
        direction = optax.with_extra_args_support(direction)
    if state_dtype is not None:
        try:
            state_dtype = jnp.dtype(state_dtype)
        except TypeError:
            raise TypeError(f"state_dtype must be a dtype or None, got {state_dtype!r}.") from None
        if not jnp.issubdtype(state_dtype, jnp.floating):
            raise ValueError(
                f"state_dtype must be a real floating dtype such as jnp.float32, got {state_dtype}."
            )

    # A schedule is an envelope s_n that the learned η⁽⁰⁾ multiplies: η⁽⁰⁾ then starts at 1.
    if order == 0:
        initial, top = (), learning_rate
    else:
        initial = (1.0 if envelope is not None else learning_rate, *rates[:-1])
        top = rates[-1]
    return Config(
        order=order,
        initial=initial,
        top=top,
        envelope=envelope if order else None,
        warmup=warmup if order else 0,
        warmup_start=warmup_start,
        horizon=horizon,
        horizon_start=horizon_start,
        horizon_trace=horizon_trace,
        direction=direction,
        schedule=schedule,
        granularities=granularities,
        rules=tuple(
            _rules.RuleConfig.make(
                rule,
                clip=clips[j],
                lower=per_order_bounds[j][0],
                upper=per_order_bounds[j][1],
                decay=normalizer_decay,
                eps=normalizer_eps,
                anneal=anneal_steps,
                spike=spike_threshold,
                rescale=spike_rescale,
                pool=element_share if granularities[j] == "parameter" else None,
                anchor=anchor if granularities[j] == "parameter" else None,
                rescale_threshold=spike_rescale_threshold,
            )
            for j in range(order)
        ),
        state_dtype=state_dtype,
        rescale_start=spike_rescale_start,
    )
