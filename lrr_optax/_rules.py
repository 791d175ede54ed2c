"""Update rules of an adapted rate, each with its partial with respect to the rate above.

A rule moves one order's rate η by its hypergradient h using the rate above it, ρ:
``η ← R(η, ρ, h)``, and returns ``α = ∂R/∂ρ``, the factor the hypergradient of the next
order is chained through (design page, section 4). Every rule is written as

    s = step(h)            # the rule's direction for η, before the rate above
    s = clip(s, -c, c)     # optional
    R = η − ρ·s            (additive family)       α = −s
    R = η·exp(−ρ·s)        (multiplicative family) α = −R·s
    R = clamp(R, lo, hi)                           α = 0 where clamped

so clipping, normalising and bounds change how a rate moves and never the chain itself.
All functions here are elementwise on one leaf; the transformation maps them over trees.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax.numpy as jnp

Rule = Literal["additive", "normalized", "multiplicative", "log_normalized"]

RULES: tuple[Rule, ...] = ("additive", "normalized", "multiplicative", "log_normalized")
NORMALIZED_RULES: frozenset[str] = frozenset({"normalized", "log_normalized"})
MULTIPLICATIVE_RULES: frozenset[str] = frozenset({"multiplicative", "log_normalized"})


class RuleOptions(NamedTuple):
    """Static options of one order's rule (Python values, fixed at build time)."""

    rule: Rule
    clip: float | None
    lower: float | None
    upper: float | None
    decay: float  # EMA decay of the normaliser's second moment
    eps: float  # added to the normaliser's root


def apply_rule(options: RuleOptions, eta, rate, h, second_moment, active_steps):
    """One rule step on one leaf.

    Args:
      options: the order's static rule options.
      eta: the current rate η (state dtype).
      rate: the rate above, ρ, broadcastable to ``eta``.
      h: the raw hypergradient of this order, finite (non-finite entries already zeroed).
      second_moment: the normaliser's EMA of the squared step input, or ``None`` for
        rules without one.
      active_steps: k ≥ 1, the steps this order's hypergradient has existed; the EMA is
        divided by ``1 − decay**k`` as in Adam.

    Returns:
      ``(new_eta, alpha, new_second_moment)``; ``alpha = ∂R/∂ρ`` and is zero where the
      rule could not produce a finite value (the rate is then kept).
    """
    rule = options.rule
    dtype = eta.dtype
    rate = jnp.asarray(rate).astype(dtype)
    # Log-space rules descend along ∂J/∂log η = η·h.
    signal = eta * h if rule in MULTIPLICATIVE_RULES else h

    new_second_moment = second_moment
    if rule in NORMALIZED_RULES:
        moment = options.decay * second_moment + (1.0 - options.decay) * jnp.square(signal)
        # An overflowed moment would freeze the rate for ever: keep the old one instead.
        new_second_moment = jnp.where(jnp.isfinite(moment), moment, second_moment)
        debias = 1.0 - options.decay ** jnp.asarray(active_steps).astype(dtype)
        scale = jnp.sqrt(new_second_moment / debias)
        # A signal whose square underflows (products of many small gradients in float32)
        # leaves the moment at zero: it carries no usable information, so it moves nothing.
        step = jnp.where(
            scale > 0, signal / (scale + jnp.asarray(options.eps, dtype)), jnp.zeros_like(signal)
        )
        # Exactly, v̂ ≥ (1 − decay)·signal²/debias, so |step| ≤ √(debias/(1 − decay)); clipping
        # there changes nothing but a subnormal moment's rounding.
        bound = jnp.sqrt(debias / (1.0 - options.decay))
        step = jnp.clip(step, -bound, bound)
    else:
        step = signal

    if options.clip is not None:
        step = jnp.clip(step, -options.clip, options.clip)

    if rule in MULTIPLICATIVE_RULES:
        new_eta = eta * jnp.exp(-rate * step)
        alpha = -new_eta * step
    else:
        new_eta = eta - rate * step
        alpha = -step

    if options.lower is not None or options.upper is not None:
        clamped = jnp.zeros(new_eta.shape, bool)
        if options.lower is not None:
            clamped = clamped | (new_eta < options.lower)
        if options.upper is not None:
            clamped = clamped | (new_eta > options.upper)
        new_eta = jnp.clip(new_eta, options.lower, options.upper)
        alpha = jnp.where(clamped, jnp.zeros_like(alpha), alpha)

    finite = jnp.isfinite(new_eta)
    if rule in MULTIPLICATIVE_RULES or (rule in NORMALIZED_RULES and options.clip is None):
        # Elsewhere α is −h or its clip (or 0), finite since h is: testing it would
        # only cost the rate's kernel, which XLA:CPU runs compute-bound, more work.
        finite = finite & jnp.isfinite(alpha)
    new_eta = jnp.where(finite, new_eta, eta)
    alpha = jnp.where(finite, alpha, jnp.zeros_like(alpha))
    return new_eta, alpha, new_second_moment
