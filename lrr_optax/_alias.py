"""Aliases in optax's manner: SGD, Adam and AdamW whose learning rates learn themselves."""

from collections.abc import Callable, Sequence
from typing import Any

import optax

from ._granularity import Granularity
from ._options import (
    DEFAULT_RATES,
    HORIZON,
    SGD_HORIZON,
    SGD_WARMUP_STEPS,
    WARMUP_STEPS,
    HorizonTrace,
    Schedule,
)
from ._rules import Rule
from ._transform import Bounds, learning_rate_rates

# An Adam direction's coordinates are at most (1 − β₁)/√(1 − β₂) ≈ 3.2 in size, so η ≤ 1
# caps any coordinate's step near 3. Without it, near convergence the one-step hypergradient
# kept raising η (to 2 … 5, probably making up for Adam's lagging √v̂) until one step killed
# the ReLU network (MNIST-1D MLP: to chance from 13 of 15 initial rates at 6000 steps
# without the bound, from none with it).
ADAM_BOUNDS: Bounds = (0.0, 1.0)
# A collapse's jump is in the thousands; minibatch noise in Adam's hypergradient reaches
# tens, and a rate it rescales recovers only at the annealed pace (``defaults.md``,
# fourteenth step: the CNN's long budget 2.5x tuned Adam at T = max(c, τ) = 5, 0.6x at 30).
ADAM_RESCALE_THRESHOLD = 30.0


def lrr_sgd(
    learning_rate: optax.ScalarOrSchedule,
    rates: Sequence[optax.ScalarOrSchedule] = DEFAULT_RATES,
    *,
    momentum: float | None = None,
    nesterov: bool = False,
    schedule: Schedule = "cascade",
    granularity: Granularity | Sequence[Granularity] = "tensor",
    rule: Rule = "log_normalized",
    clip: float | Sequence[float | None] | None = 1.0,
    bounds: Bounds | Sequence[Bounds | None] | None = (0.0, None),
    state_dtype: Any = None,
    normalizer_decay: float = 0.99,
    normalizer_eps: float = 1e-30,
    warmup_steps: int = SGD_WARMUP_STEPS,
    warmup_start: float = 1e-3,
    horizon: float = SGD_HORIZON,
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
    r"""SGD (optionally with momentum) with learning rates of learning rates.

    The direction is the gradient, or its momentum trace
    :math:`d_n = g_n + \mu d_{n-1}` (``optax.trace``); the rates adapt as in
    :func:`learning_rate_rates`, with two defaults of its own: the hypergradient of η⁽⁰⁾
    looks back along a trace of past steps discounted by ``horizon`` γ = 0.9,
    :math:`h^{(0)}_n = -g_n \odot u_n`, :math:`u_n = s_{n-1} d_{n-1} + \gamma u_{n-1}`, and
    the safe start ramps over ``warmup_steps`` = 200 steps. The one-step hypergradient
    (γ = 0) holds SGD's rate where the next step is best, about half the stability limit of
    the steepest direction; along a direction where SGD oscillates the trace cancels, so
    the rate can rise to where the flat directions progress (``docs/math.md``, "Horizon").
    At order 1, global granularity, the additive rule with no bounds, γ = 0 and no warm-up,
    this is SGD-HD of Baydin et al. (2018).

    Args:
      learning_rate: the initial learning rate η⁽⁰⁾.
      rates: initial η⁽¹⁾ … η⁽ᵐ⁻¹⁾, then the fixed (or scheduled) top rate.
      momentum: the momentum decay μ, or ``None`` for plain SGD.
      nesterov: whether to use Nesterov momentum.
      schedule: as in :func:`learning_rate_rates`, and so are ``granularity``, ``rule``,
        ``clip``, ``bounds``, ``state_dtype``, ``normalizer_decay``, ``normalizer_eps``,
        ``warmup_steps``, ``warmup_start``, ``horizon``, ``horizon_start``, ``horizon_trace``,
        ``anneal_steps``, ``spike_threshold``, ``spike_rescale``, ``spike_rescale_start``,
        ``spike_rescale_threshold``, ``element_share`` and ``anchor``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, lrr_optax
      >>> tx = lrr_optax.lrr_sgd(1e-2, momentum=0.9)
      >>> state = tx.init({"w": jnp.zeros(3)})

    References:
      Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", 2018.
    """
    direction = optax.trace(decay=momentum, nesterov=nesterov) if momentum is not None else None
    return learning_rate_rates(
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
        warmup_steps=warmup_steps,
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


def lrr_adam(
    learning_rate: optax.ScalarOrSchedule,
    rates: Sequence[optax.ScalarOrSchedule] = DEFAULT_RATES,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    nesterov: bool = False,
    schedule: Schedule = "cascade",
    granularity: Granularity | Sequence[Granularity] = "tensor",
    rule: Rule = "log_normalized",
    clip: float | Sequence[float | None] | None = 1.0,
    bounds: Bounds | Sequence[Bounds | None] | None = ADAM_BOUNDS,
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
    spike_rescale_start: int | None = None,
    spike_rescale_threshold: float | None = ADAM_RESCALE_THRESHOLD,
    element_share: float | None = None,
    anchor: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Adam with learning rates of learning rates.

    The direction is Adam's, :math:`d_n = \hat m_n / (\sqrt{\hat v_n} + \epsilon)`
    (``optax.scale_by_adam``), and the hypergradient of η⁽⁰⁾ uses the previous Adam
    direction, :math:`h^{(0)}_n = -g_n \odot d_{n-1}`, as Adam-HD of Baydin et al. (2018).
    Under heavy gradient noise that one-step hypergradient holds the rate too high;
    ``horizon=0.99, horizon_start=200, horizon_trace="updates"`` looks back along the
    updates applied once the transient is over (measured in
    ``benchmarks/results/defaults.md``, eighteenth step: a noisy quadratic from 2.3× to
    0.90× tuned Adam's loss).
    Near an interpolating minimum Adam's direction shrinks (its second moment lags the
    vanishing gradients) and the rate rises to make up for it, until one jump of the
    direction takes a step the network does not survive; a spike's rescale, from the end of
    the warm-up on and for jumps past 30 times the hypergradient's RMS, divides the rate by
    that jump first (fourteenth step).

    Args:
      learning_rate: the initial learning rate η⁽⁰⁾.
      rates: initial η⁽¹⁾ … η⁽ᵐ⁻¹⁾, then the fixed (or scheduled) top rate.
      b1: Adam's first-moment decay.
      b2: Adam's second-moment decay.
      eps: added to the root of the second moment.
      eps_root: added inside the root.
      nesterov: whether to use the Nesterov variant (NAdam).
      schedule: as in :func:`learning_rate_rates`, and so are ``granularity``, ``rule``,
        ``clip``, ``state_dtype``, ``normalizer_decay``, ``normalizer_eps``,
        ``warmup_steps``, ``warmup_start``, ``horizon``, ``horizon_start``, ``horizon_trace``,
        ``anneal_steps``, ``spike_threshold``, ``spike_rescale``, ``spike_rescale_start``
        (``None`` here: the rescale starts when the warm-up ramp ends),
        ``spike_rescale_threshold`` (30 here), ``element_share`` and ``anchor``.
      bounds: as in :func:`learning_rate_rates`, but ``(0, 1)`` by default: an Adam
        direction's coordinates are at most (1 − β₁)/√(1 − β₂) ≈ 3.2, so η⁽⁰⁾ ≤ 1 keeps
        every coordinate's step below about 3: near convergence the hypergradient would
        otherwise keep raising η until one step kills the network. With a schedule as
        ``learning_rate`` it holds the scheduled rate s_n·η⁽⁰⁾. ``bounds=(0.0, None)``
        lifts it.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, lrr_optax
      >>> tx = lrr_optax.lrr_adam(1e-3)
      >>> state = tx.init({"w": jnp.zeros(3)})

    References:
      Kingma and Ba, "Adam", 2015. Baydin et al., "Online Learning Rate Adaptation with
      Hypergradient Descent", 2018.
    """
    direction = optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=nesterov)
    return learning_rate_rates(
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
        warmup_steps=warmup_steps,
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


def lrr_adamw(
    learning_rate: optax.ScalarOrSchedule,
    rates: Sequence[optax.ScalarOrSchedule] = DEFAULT_RATES,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    eps_root: float = 0.0,
    weight_decay: float = 1e-4,
    mask: Any | Callable[[optax.Params], Any] | None = None,
    nesterov: bool = False,
    schedule: Schedule = "cascade",
    granularity: Granularity | Sequence[Granularity] = "tensor",
    rule: Rule = "log_normalized",
    clip: float | Sequence[float | None] | None = 1.0,
    bounds: Bounds | Sequence[Bounds | None] | None = ADAM_BOUNDS,
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
    spike_rescale_start: int | None = None,
    spike_rescale_threshold: float | None = ADAM_RESCALE_THRESHOLD,
    element_share: float | None = None,
    anchor: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    r"""AdamW with learning rates of learning rates.

    As ``optax.adamw``, the decoupled weight decay is part of the direction and is scaled
    by the learning rate: :math:`d_n = \mathrm{adam}(g_n) + \lambda\theta_n`, update
    :math:`-\eta^{(0)} \odot d_n`. The hypergradient uses this whole direction.

    Args:
      learning_rate: the initial learning rate η⁽⁰⁾.
      rates: initial η⁽¹⁾ … η⁽ᵐ⁻¹⁾, then the fixed (or scheduled) top rate.
      b1: Adam's first-moment decay.
      b2: Adam's second-moment decay.
      eps: added to the root of the second moment.
      eps_root: added inside the root.
      weight_decay: the decoupled weight decay λ.
      mask: which parameters to decay, as in ``optax.add_decayed_weights``.
      nesterov: whether to use the Nesterov variant.
      schedule: as in :func:`learning_rate_rates`, and so are ``granularity``, ``rule``,
        ``clip``, ``state_dtype``, ``normalizer_decay``, ``normalizer_eps``,
        ``warmup_steps``, ``warmup_start``, ``horizon``, ``horizon_start``, ``horizon_trace``,
        ``anneal_steps``, ``spike_threshold``, ``spike_rescale``, ``spike_rescale_start``
        (``None`` here, as in :func:`lrr_adam`), ``spike_rescale_threshold`` (30, as
        there), ``element_share`` and ``anchor``.
      bounds: as in :func:`lrr_adam`: ``(0, 1)`` by default.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp, lrr_optax
      >>> tx = lrr_optax.lrr_adamw(1e-3, weight_decay=1e-2)
      >>> state = tx.init({"w": jnp.zeros(3)})

    References:
      Loshchilov and Hutter, "Decoupled Weight Decay Regularization", 2019.
    """
    direction = optax.chain(
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=eps_root, nesterov=nesterov),
        optax.add_decayed_weights(weight_decay, mask),
    )
    return learning_rate_rates(
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
        warmup_steps=warmup_steps,
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
