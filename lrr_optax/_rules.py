"""Update rules of an adapted rate, each with its partial with respect to the rate above.

A rule moves one order's rate η by its hypergradient h using the rate above it, ρ:
``η ← R(η, ρ, h)``, and returns ``α = ∂R/∂ρ``, the factor the hypergradient of the next
order is chained through (``docs/math.md``, "Rules"). Every rule is written as

    u = η·h (log-space rules) or h      # the signal
    s = u / (√v̂ + ε) (normalised) or u  # v̂: debiased EMA of u², held constant in the chain
    s = clip(s, −c, c)                   # optional, and then a spike τ:
    s = s + max(s₀ − max(c, τ), 0)       # s₀ the step before the clip; a fall passes
    s = s·(1 + k/K)^(−1/2)               # optional annealing, k: steps this order has run
    R = η − ρ·s            (additive family)       α = −s
    R = η·exp(−ρ·s)        (log-space family)      α = −R·s
    R = R / F              (optional rescale)      α = −R·s
    R = clamp(R, lo, hi)                           α = 0 where clamped

where F = min(max(r / T, 1), F_max) is the spike's ratio (``log_normalized`` only; T is
max(c, τ) unless given; 1 before the step the rescale starts at) and r = u / √v̂ₙ₋₁ the
signal against the moment before this step, held like v̂ so that α keeps its form.
Clipping, normalising and bounds change how a rate moves and never the chain itself.

Per-parameter rates may be pooled (``element_share`` κ): each element's step is then
φ(S) + κ·φ(s_i), φ the clip and spike above, with S = Σ_i u_i / (√V̂ + ε) the step of one
rate shared by the leaf (V the EMA of (Σ_i u_i)²) and s_i the element's own; the spike
ratio is the pooled one. They may be anchored (``anchor`` λ): before the rule each
element's rate moves a fraction λ of the way to the leaf's mean rate (geometric for the
log-space rules). Neither depends on ρ, so α keeps its form.
A rule is elementwise on one leaf; the transformation maps it over trees and splits the
results (:func:`map_rule`).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from ._dtypes import at_least_float32

Rule = Literal["additive", "normalized", "multiplicative", "log_normalized"]

RULES: tuple[Rule, ...] = ("additive", "normalized", "multiplicative", "log_normalized")
NORMALIZED_RULES: frozenset[str] = frozenset({"normalized", "log_normalized"})
LOG_SPACE_RULES: frozenset[str] = frozenset({"multiplicative", "log_normalized"})
# The most a spike's ratio divides a rate by in one step: a rate that underflowed to zero
# would stay there in log space.
MAX_FALL = 1e6


class PooledMoment(NamedTuple):
    """A pooled rule's normaliser state for one parameter leaf.

    Attributes:
      elements: the EMA of each element's squared signal u_i², shaped like the rate.
      tensor: the EMA of the leaf's summed signal (Σ_i u_i)², a scalar.
    """

    elements: jax.Array
    tensor: jax.Array


class RuleConfig(NamedTuple):
    """One order's rule, resolved once when the transformation is built."""

    rule: Rule
    log_space: bool  # η moves by a factor, along ∂J/∂log η = η·h
    normalized: bool  # the signal is divided by the root of its debiased EMA
    clip: Any  # c, or None
    lower: float | None
    upper: float | None
    decay: Any  # β of the normaliser's EMA
    eps: Any  # ε added to the normaliser's root
    anneal: Any  # K of the step's (1 + k/K)^(−1/2) decay, or None
    spike: Any  # τ: the clipped step's excess over max(c, τ) lowers the rate, or None
    rescale: bool  # a spike also divides the rate by its ratio F (log_normalized only)
    pool: Any = None  # κ: the element's share beside its leaf's pooled step, or None
    anchor: Any = None  # λ: the pull of each element's rate toward its leaf's mean, or None
    # T of the rescale's ratio F = r / T, or None for max(c, τ)
    rescale_threshold: Any = None
    # Whether a spike may rescale at this step (a traced bool, ``Config.rule_at``), or None
    # where it always may.
    rescaling: Any = None

    @classmethod
    def make(cls, rule: Rule, *, clip, spike, rescale, pool, **fields) -> RuleConfig:
        """The order's rule from the options; ``fields`` are the others, by name."""
        log_space, normalized = rule in LOG_SPACE_RULES, rule in NORMALIZED_RULES
        # The ratio needs a history (the normaliser's moment), a scale-free step (log
        # space) and a threshold, which the clip and τ give.
        rescale = bool(rescale) and log_space and normalized
        rescale = rescale and clip is not None and spike is not None
        fields.update(clip=clip, spike=spike, rescale=rescale, pool=pool if normalized else None)
        return cls(rule, log_space, normalized, **fields)


def apply(config: RuleConfig, eta, rate, h, second_moment, active_steps):
    """One rule step on one leaf.

    Args:
      config: the order's rule.
      eta: the current rate η (state dtype).
      rate: the rate above, ρ, broadcastable to ``eta``.
      h: the raw hypergradient of this order, finite (non-finite entries already zeroed).
      second_moment: the normaliser's EMA of u², a :class:`PooledMoment` for a pooled rule,
        or ``None`` for rules without a normaliser.
      active_steps: k ≥ 1, the steps this order's hypergradient has existed; the EMA is
        divided by ``1 − decay**k`` as in Adam, and the annealing reads it.

    Returns:
      ``(new_eta, alpha, new_second_moment)``; ``alpha = ∂R/∂ρ`` and is zero where the
      rule could not produce a finite value (the rate is then kept).
    """
    dtype = eta.dtype
    compute = at_least_float32(dtype)
    eta_c = eta.astype(compute)
    rate = jnp.asarray(rate).astype(compute)
    h = jnp.asarray(h).astype(compute)
    if config.anchor is not None:
        eta_c = _anchored(config, eta_c, h)
    signal = eta_c * h if config.log_space else h

    new_second_moment = second_moment
    inverse_fall = None
    if not config.normalized:
        step = _shaped(config, signal)
    else:
        k = jnp.asarray(active_steps).astype(compute)
        if config.pool is None:
            own = jumped = _Normalised.of(config, signal, second_moment, k)
            new_second_moment = own.moment
            step = _shaped(config, own.step)
        else:
            own = _Normalised.of(config, signal, second_moment.elements, k)
            jumped = _Normalised.of(config, jnp.sum(signal), second_moment.tensor, k)
            new_second_moment = PooledMoment(own.moment, jumped.moment)
            share = jnp.asarray(config.pool).astype(compute)
            step = _shaped(config, jumped.step) + share * _shaped(config, own.step)
        if config.rescale:
            # A gradient that jumped r-fold along the last step says the step was about r
            # times too long (a quadratic wall: the gradient grows with the distance past
            # the line's minimum). The SGD direction's next step grows with the gradient,
            # so a rate that falls by e^(−ρs) a step falls too late. The Adam direction's
            # steps are bounded by the rate, but near an interpolating minimum the rate has
            # grown to make up for a shrunken direction, and a direction back at full size
            # is such a jump.
            inverse_fall = jumped.inverse_fall(config, k)

    if config.anneal is not None:
        # A scale-free step is ±1 whether the hypergradient is signal or noise, so log η
        # diffuses like √n under noise; a Robbins–Monro decay of the step leaves a drift of
        # order √n against a diffusion of order √log n.
        k = jnp.asarray(active_steps).astype(compute)
        step = step * jax.lax.rsqrt(1 + k / config.anneal)

    if config.log_space:
        new_eta = eta_c * jnp.exp(-rate * step)
        if inverse_fall is not None:
            new_eta = new_eta * inverse_fall
        alpha = -new_eta * step
    else:
        new_eta = eta_c - rate * step
        alpha = -step

    if config.lower is not None or config.upper is not None:
        # Bounds are numbers, or arrays when a schedule scales them (``Config.rule_at``).
        lower, upper = (
            None if b is None else jnp.asarray(b).astype(compute)
            for b in (config.lower, config.upper)
        )
        clamped = jnp.zeros(new_eta.shape, bool)
        if lower is not None:
            clamped = clamped | (new_eta < lower)
        if upper is not None:
            clamped = clamped | (new_eta > upper)
        new_eta = jnp.clip(new_eta, lower, upper)
        alpha = jnp.where(clamped, jnp.zeros_like(alpha), alpha)

    new_eta = new_eta.astype(dtype)
    alpha = alpha.astype(dtype)
    finite = jnp.isfinite(new_eta)
    if config.log_space or (config.normalized and config.clip is None) or compute != dtype:
        # Elsewhere α is −h or its clip (or 0), finite since h is: testing it would
        # only cost the rate's kernel, which XLA:CPU runs compute-bound, more work.
        finite = finite & jnp.isfinite(alpha)
    new_eta = jnp.where(finite, new_eta, eta)
    alpha = jnp.where(finite, alpha, jnp.zeros_like(alpha))
    return new_eta, alpha, new_second_moment


def _anchored(config: RuleConfig, eta, h):
    """Each element's rate moved a fraction λ of the way to its leaf's mean rate.

    Per-parameter rates driven by noisy hypergradients spread apart like random walks; the
    pull bounds the spread (to about the walk's step over √(2λ)) and leaves the leaf's
    mean, the part that pooled hypergradients move, where it is. The log-space rules
    anchor in log space (the geometric mean), the others in the rate itself. An element
    whose hypergradient is 0 this step (its gradient was not finite, or the first step)
    learned nothing and is not pulled either: a leaf without a finite gradient keeps its
    rates.
    """
    keep = 1 - jnp.asarray(config.anchor).astype(eta.dtype)
    if config.log_space:
        # A rate that underflowed to 0 counts as the smallest normal number: log 0 would
        # turn the whole leaf's mean to −inf.
        logs = jnp.log(jnp.maximum(eta, jnp.finfo(eta.dtype).tiny))
        center = jnp.mean(logs)
        pulled = jnp.exp(center + keep * (logs - center))
    else:
        center = jnp.mean(eta)
        pulled = center + keep * (eta - center)
    return jnp.where(h != 0, pulled, eta)


class _Normalised(NamedTuple):
    """A signal divided by the root of its debiased EMA, and that EMA (the spike ratio
    needs no more: it is read back from the step)."""

    step: jax.Array
    moment: jax.Array  # the new EMA

    @classmethod
    def of(cls, config: RuleConfig, signal, second_moment, k) -> _Normalised:
        compute = signal.dtype
        decay = jnp.asarray(config.decay).astype(compute)
        moment = decay * second_moment + (1 - decay) * jnp.square(signal)
        # An overflowed moment would freeze the rate for ever: keep the old one instead.
        moment = jnp.where(jnp.isfinite(moment), moment, second_moment)
        debias = 1 - decay**k
        # A signal whose square underflows (products of many small gradients) leaves the
        # moment at zero: it carries no usable information, so it moves nothing. The inner
        # where keeps sqrt and the division away from 0, so derivatives through the rule
        # (meta-learning) stay finite.
        informed = moment > 0
        safe = jnp.where(informed, moment, jnp.ones_like(moment))
        scale = jnp.sqrt(safe / debias)
        eps = jnp.asarray(config.eps).astype(compute)
        step = jnp.where(informed, signal / (scale + eps), jnp.zeros_like(signal))
        # Exactly, v̂ ≥ (1 − decay)·u²/debias, so |step| ≤ √(debias/(1 − decay)); clipping
        # there changes nothing but a subnormal moment's rounding.
        bound = jnp.sqrt(debias / (1 - decay))
        step = jnp.clip(step, -bound, bound)
        return cls(step, moment)

    def inverse_fall(self, config: RuleConfig, k):
        """1/F, F = min(max(r/T, 1), F_max) the spike rescale's fall of the rate.

        r is the signal against the moment before this step (F = 1 where the signal did not
        rise, at the first step and before ``config.rescaling``). A signal's own weight in
        the new moment bounds s by √(debias/(1 − β)) (~10), however far it jumped. Read
        back from the new moment, v_{n−1} = v_n·(1 − w)/β with w = (1 − β)u²/v_n the
        signal's share, which is (1 − β)s²/debias in the normalised step s itself (exactly
        where ε ≪ √v̂; a larger ε lowers r as it lowers s): a kernel that read a moment as
        well as writing it would make XLA:CPU copy or re-read a state buffer. 1 − w is
        resolved to rounding, so a larger jump, or one from no history at all, counts as
        the largest it resolves (r ≈ 3·10⁴ in float32). Per-parameter rates run this once
        per element in every kernel that needs the new rate, so it is one division and one
        rsqrt of (r/T)².
        """
        compute = self.step.dtype
        decay = jnp.asarray(config.decay).astype(compute)
        if config.rescale_threshold is None:
            threshold = jnp.maximum(
                jnp.asarray(config.spike).astype(compute),
                jnp.asarray(config.clip).astype(compute),
            )
        else:
            threshold = jnp.asarray(config.rescale_threshold).astype(compute)
        previous = k - 1
        share = (1 - decay) / (1 - decay**k) * jnp.square(self.step)
        rest = jnp.maximum(1 - share, jnp.finfo(compute).eps)
        # r² = w/(1 − w) · β(1 − β^(k−1))/(1 − β), the moment's debiasing undone.
        scale = decay * (1 - decay**previous) / ((1 - decay) * jnp.square(threshold))
        enabled = previous > 0
        if config.rescaling is not None:
            enabled = enabled & config.rescaling
        # A positive step means a positive signal and an informed moment.
        falls = (self.step > 0) & enabled
        squared = jnp.where(falls, share * scale / rest, jnp.ones_like(share))
        return jax.lax.rsqrt(jnp.clip(squared, 1, MAX_FALL**2))


def _shaped(config: RuleConfig, step):
    """The step clipped to ±c, with a spike's excess over max(c, τ) passed."""
    if config.clip is None:
        return step
    clip = jnp.asarray(config.clip).astype(step.dtype)
    shaped = jnp.clip(step, -clip, clip)
    if config.spike is not None:
        # A hypergradient far outside its own history (s > τ, ~10 at most for the
        # normalised rules) is an overshoot under way: a rate clipped to fall by e^(−ρc) a
        # step falls slower than the loss blows up, so the excess passes. Rises stay
        # clipped, and under noise s rarely exceeds τ.
        threshold = jnp.maximum(jnp.asarray(config.spike).astype(step.dtype), clip)
        shaped = shaped + jnp.maximum(step - threshold, 0)
    return shaped


def map_rule(leaf_rule, etas, rates, hs, moments):
    """``leaf_rule(η, ρ, h, v)`` mapped over the trees, split into (η, α, v) trees like ``etas``.

    ``moments`` is ``None`` for rules without a normaliser (then ``v`` is ``None``).
    """
    if moments is None:
        out = jax.tree.map(lambda e, r, h: leaf_rule(e, r, h, None), etas, rates, hs)
    else:
        out = jax.tree.map(leaf_rule, etas, rates, hs, moments)
    treedef = jax.tree.structure(etas)
    leaves = treedef.flatten_up_to(out)
    return tuple(treedef.unflatten([leaf[i] for leaf in leaves]) for i in range(3))
