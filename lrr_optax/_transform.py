"""The public factory :func:`learning_rate_rates`."""

from collections.abc import Sequence
from typing import Any

import optax

from . import _options, _step
from ._granularity import Granularity
from ._options import DEFAULT_RATES, HORIZON, WARMUP_STEPS, HorizonTrace, Schedule
from ._rules import Rule

Bounds = tuple[float | None, float | None]


def learning_rate_rates(
    learning_rate: optax.ScalarOrSchedule,
    rates: Sequence[optax.ScalarOrSchedule] = DEFAULT_RATES,
    *,
    direction: optax.GradientTransformation | None = None,
    schedule: Schedule = "cascade",
    granularity: Granularity | Sequence[Granularity] = "tensor",
    rule: Rule = "log_normalized",
    clip: float | Sequence[float | None] | None = 1.0,
    bounds: Bounds | Sequence[Bounds | None] | None = (0.0, None),
    state_dtype: Any = None,
    normalizer_decay: float = 0.99,
    normalizer_eps: float = 1e-30,
    warmup_steps: int = WARMUP_STEPS,
    warmup_start: float = 1e-3,
    horizon: float = HORIZON,
    horizon_start: int = 0,
    horizon_trace: HorizonTrace = "directions",
    anneal_steps: float | None = 30,
    spike_threshold: float | None = 5.0,
    spike_rescale: bool = True,
    spike_rescale_start: int | None = 0,
    spike_rescale_threshold: float | None = None,
    element_share: float | None = None,
    anchor: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Descent along ``direction`` with learning rates that learn themselves, to order m.

    Every parameter (or tensor, or the whole pytree: ``granularity``) gets its own learning
    rate η⁽⁰⁾, adapted online by gradient descent on the loss; the rate of that adaptation,
    η⁽¹⁾, is adapted the same way, and so on up to the order ``m = len(rates)``, whose top
    rate η⁽ᵐ⁾ is fixed (or scheduled). Order 1 is hypergradient descent (Baydin et al.
    2018), higher orders are stacked hyperoptimizers (Chandra et al. 2022) made
    per-parameter.

    With g_n the incoming gradient, d_n = D(g_n) the direction and s_n the envelope
    (``learning_rate`` when it is a schedule, times the warm-up ramp; 1 otherwise):

    .. math::

       h^{(0)}_n &= -\operatorname{reduce}_0(g_n \odot u_n), \qquad
       u_n = s_{n-1} d_{n-1} + \gamma u_{n-1}, \\
       h^{(j)}_n &= \operatorname{reduce}_j\big(h^{(j-1)}_n \odot
       \alpha^{(j-1)}_{n-L_j}\big), \\
       \eta^{(j)} &\leftarrow R_j(\eta^{(j)}, \eta^{(j+1)}, h^{(j)}), \qquad
       \alpha^{(j)} = \partial R_j / \partial \eta^{(j+1)}, \\
       \text{update}_n &= -s_n\, \eta^{(0)} \odot d_n .

    With the ``"simultaneous"`` schedule every order updates from the values of the
    previous step and ``L_j = j`` (the α cache holds m(m−1)/2 buffers); with
    ``"cascade"`` the orders update top-down, each with the rate above it just updated,
    and ``L_j = 1`` (m−1 buffers). The cache is a ring indexed by the step count, so a
    step's cost grows linearly with the order. Each h⁽ʲ⁾ is the exact derivative of the
    loss with respect to η⁽ʲ⁾ (see ``docs/math.md`` for the definition and the rules).

    Non-finite numbers never enter the rates: a NaN or inf gradient element, or one whose
    square overflows, is treated as zero (it moves neither its parameter nor its rates,
    except by its tensor's pooled step with ``element_share``);
    a hypergradient or rule result that overflows leaves that rate unchanged for the step;
    a direction that overflows from finite gradients moves no rate (its inf is in that
    step's update and in the trace, which the next hypergradient leaves out). A per-tensor
    or global η⁽⁰⁾'s hypergradient is one dot product per leaf: a leaf whose sum is not
    finite is left out of it for the step, so its per-tensor rate holds.

    Args:
      learning_rate: the initial η⁽⁰⁾ (a non-negative float or an array that broadcasts
        to every parameter; traced values allowed), or an optax schedule s_n: then η⁽⁰⁾
        starts at 1 and learns a correction that multiplies the schedule. At order 0 it
        is the fixed learning rate. Under ``optax.inject_hyperparams`` a number is read
        at ``init`` only.
      rates: the initial η⁽¹⁾ … η⁽ᵐ⁻¹⁾, then the fixed top rate η⁽ᵐ⁾, which may be a
        schedule. ``()`` is order 0: plain descent along ``direction``.
      direction: an ``optax.GradientTransformation`` giving d_n from g_n, e.g.
        ``optax.scale_by_adam()``; ``None`` is the gradient itself (SGD).
      schedule: ``"cascade"`` (top-down, each order with the rate above it just updated;
        the default) or ``"simultaneous"`` (every order from the previous step's values).
      granularity: ``"parameter"``, ``"tensor"`` or ``"global"``, or a sequence with one
        per adapted order (orders 0 … m−1) that never gets finer going up. Per-parameter
        rates alone follow each element's noise (with the SGD direction they diverged on
        networks); give them ``element_share`` (``docs/faq.md``, "Which granularity?").
      rule: how a rate moves with its hypergradient: ``"additive"`` (η − ρ·h),
        ``"normalized"`` (η − ρ·h/√v̂, v̂ a debiased EMA of h²), ``"multiplicative"``
        (η·exp(−ρ·η·h), in log space) or ``"log_normalized"`` (η·exp(−ρ·u/√v̂) with
        u = η·h and v̂ a debiased EMA of u²).
      clip: bound c on the rule's step (``|h|`` for ``"additive"``), one number for all
        orders or one per adapted order; ``None`` for none.
      bounds: ``(lo, hi)`` the adapted rates are clamped to, either may be ``None``; or
        one such pair (or ``None``) per adapted order; ``None`` for no bounds. The
        default keeps every rate non-negative. With a schedule s_n as ``learning_rate``,
        η⁽⁰⁾'s bounds hold the rate s_n·η⁽⁰⁾. A rate that starts outside its bounds is
        clamped by its first step.
      state_dtype: dtype of the rates, the α cache and the previous direction; ``None``
        follows each parameter's dtype, with rates and α in at least float32 (rates are
        real for complex parameters). The normaliser's moments are at least float32.
      normalizer_decay: EMA decay β of the normalised rules' second moment, in [0, 1).
      normalizer_eps: added to the normalised rules' root; tiny, because products of
        many gradients are tiny.
      warmup_steps: the safe start: the first ``warmup_steps`` updates are multiplied by
        a geometric ramp from ``warmup_start`` to 1, part of s_n (so the hypergradient
        sees the step that was applied). 0 turns it off; 100 by default (``lrr_sgd``:
        200).
      warmup_start: the ramp's first factor, in (0, 1].
      horizon: γ in [0, 1), the discount of the trace u_n the hypergradient of η⁽⁰⁾
        looks back along; 0 (the default) is the one-step hypergradient. ``lrr_sgd``
        uses 0.9.
      horizon_start: the first step n whose trace keeps its past: before it γ counts as
        0 (u_{n+1} = s_n d_n), so the rates find their level during the transient with
        the one-step hypergradient and look back from then on. 0 by default.
      horizon_trace: what the trace u_n sums. ``"directions"`` (the default): the steps
        s_k·d_k, the derivative for every past rate perturbed by the same amount.
        ``"updates"``: the updates applied, s_k·η⁽⁰⁾_k ⊙ d_k, with h⁽⁰⁾ divided by the last
        rate η⁽⁰⁾_{n−1}: the derivative for every past rate perturbed in proportion to
        itself, so steps taken at a smaller rate count less and the trace follows a
        rate that has risen or fallen by decades. The same as ``"directions"`` at γ = 0.
        With ``horizon=0.99, horizon_start=200``, ``lrr_adam`` is within 2× of tuned Adam
        on a noisy quadratic where the one-step hypergradient is not
        (``benchmarks/results/defaults.md``, eighteenth step).
      anneal_steps: K of the rates' annealing: every adapted order's step (after the
        clip) is multiplied by (1 + k/K)^(−1/2), k the steps that order has run, so that
        under noise the rates settle instead of random-walking. 30 by default; ``None``
        turns it off.
      spike_threshold: τ of the clip's escape for falls: where the step s before the clip
        exceeds max(c, τ), the excess is added to the clipped step, so a hypergradient far
        outside its own history (an overshoot under way) lowers the rate at once instead
        of by e^(−ρc) a step. Rises stay clipped. Only acts with a ``clip``; 5.0 by
        default (the normalised rules' s stays below 10); ``None`` clips falls like rises.
      spike_rescale: whether a spike also divides the rate by its ratio F = r / T
        (T = ``spike_rescale_threshold``, max(c, τ) by default), r the signal against the
        normaliser's moment before the step (F at most 10⁶ a step): a gradient that jumped
        r-fold says the last step was about r times too long. For the SGD direction,
        whose steps grow with the gradient, on Rosenbrock's walls, and for the Adam
        direction's late collapses. Only with the ``"log_normalized"`` rule, a ``clip``
        and a ``spike_threshold``; elsewhere it changes nothing. True by default.
      spike_rescale_start: the first step n at which a spike may rescale; ``None``: when
        the warm-up ramp ends (``warmup_steps``). 0 by default; the Adam aliases use
        ``None``, because the ramp's geometric growth makes their hypergradient jump by
        design, and after it the rescale is what stops a late collapse near an
        interpolating minimum (``benchmarks/results/defaults.md``, fourteenth step).
      spike_rescale_threshold: T of the rescale's ratio F = r / T; ``None`` (the default)
        for max(c, τ). The Adam aliases use 30: the rescale then answers the jumps of a
        collapse (r in the thousands) and not the heavier tail of minibatch noise.
      element_share: κ ≥ 0 pools the per-parameter rates' steps: each element moves by
        its tensor's pooled step S = Σ_i u_i / √V̂ (V a debiased EMA of (Σ_i u_i)², the
        step a per-tensor rate would take) plus κ times its own normalised step, each
        clipped. Noise in single elements averages out in the sum, so the rates follow
        the loss where one element's hypergradient is mostly noise; κ keeps them apart
        where the elements differ (0.1 measured best, ``benchmarks/results/defaults.md``).
        Needs a normalised ``rule`` and acts on the orders of ``"parameter"``
        granularity; ``None`` (the default) moves each element by its own step alone.
      anchor: λ in [0, 1): before each rule step, every per-parameter rate moves a
        fraction λ of the way to its tensor's mean rate (geometric for the log-space
        rules), which bounds how far noise spreads them apart. Acts on the orders of
        ``"parameter"`` granularity; ``None`` (the default) for no pull.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; its update is −s_n·η⁽⁰⁾ ⊙ d_n in the
      dtype of the incoming updates, its state a :class:`LearningRateRatesState`.
      Extra keyword arguments to ``update`` are passed to ``direction`` when it takes
      them and otherwise ignored.

    Raises:
      ValueError, TypeError: for an option out of its range, with what to pass instead;
        ``update`` raises ``ValueError`` for a state made with other options.

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
      Baydin et al., `Online Learning Rate Adaptation with Hypergradient Descent
      <https://arxiv.org/abs/1703.04782>`_, ICLR 2018.

      Chandra et al., `Gradient Descent: The Ultimate Optimizer
      <https://arxiv.org/abs/1909.13371>`_, NeurIPS 2022.
    """
    config = _options.parse(
        learning_rate,
        rates,
        direction=direction,
        schedule=schedule,
        granularity=granularity,
        rule=rule,
        clip=clip,
        bounds=bounds,
        state_dtype=state_dtype,
        normalizer_decay=normalizer_decay,
        normalizer_eps=normalizer_eps,
        warmup=warmup_steps,
        warmup_start=warmup_start,
        horizon=horizon,
        horizon_start=horizon_start,
        horizon_trace=horizon_trace,
        anneal_steps=anneal_steps,
        spike_threshold=spike_threshold,
        spike_rescale=spike_rescale,
        spike_rescale_start=spike_rescale_start,
        spike_rescale_threshold=spike_rescale_threshold,
        element_share=element_share,
        anchor=anchor,
    )
    return _step.transformation(config)
