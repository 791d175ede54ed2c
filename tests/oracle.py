"""The autodiff oracle of ``docs/math.md``, written independently of the library.

Everything here is written from the math, in NumPy, not from lrr_optax: the rules and
their partials α, the normaliser and its debiasing, clipping and bounds, the schedules,
lags and reductions, and Adam's direction. The library is compared with it on the
trajectory of the rates; the true hypergradients come from differentiating the unrolled
training by the complex step, which needs no compiler and no derivative formula.

The rules, per order j with ρ the rate above and h the raw hypergradient, elementwise:

* signal ``u = η·h`` for the log-space rules, else ``u = h``;
* normalised rules: ``v ← β v + (1−β) u²``, ``v̂ = v / (1 − β^k)`` with ``k ≥ 1`` the steps
  the order's hypergradient has existed, ``s = u / (√v̂ + ε)`` (0 where ``v̂ = 0``);
  other rules ``s = u``;
* optional clip ``s ← clip(s, −c, c)``, plus ``max(s − max(c, τ), 0)`` with a spike τ;
* additive family ``R = η − ρ s``, ``α = −s``; log family ``R = η exp(−ρ s)``, ``α = −R s``;
* with the spike's rescale (log_normalized, a clip and τ): ``R ← R / F``, ``α = −R s``,
  ``F = min(max(r / T, 1), 10⁶)`` (T = ``spike_rescale_threshold``, else ``max(c, τ)``),
  ``r = u / √v̂ₙ₋₁`` against the moment before the
  step (``v̂ₙ₋₁ = v / (1 − β^(k−1))``; ``F = 1`` at ``k = 1`` and before the step
  ``spike_rescale_start``; ``r = ∞`` for ``u > 0`` where ``v = 0``), held like ``v̂``;
* bounds: ``R`` clamped and ``α = 0`` where clamped; a non-finite ``R`` keeps η, ``α = 0``;
* pooled (``element_share`` κ, per-parameter orders): ``S = Σu / (√V̂ + ε)`` with ``V`` the
  EMA of ``(Σu)²`` over the leaf, each of ``S`` and the element's ``s`` clipped and spiked
  as above, the step ``φ(S) + κ φ(s)``; the spike's rescale reads ``Σu`` against ``V``;
* anchored (``anchor`` λ, per-parameter orders): before the rule,
  ``log η ← m + (1 − λ)(log η − m)``, m the leaf's mean log-rate (log-space rules), or
  ``η ← m + (1 − λ)(η − m)`` with m its mean rate (the others), where ``h ≠ 0``.

The exactness definition: unroll N steps, add δ to η⁽ʲ⁾ right after its own update at
step t (N−1−j simultaneous, N−1 cascade), hold the gradients, directions, hypergradients,
cached α and the normaliser's statistics constant; then ∂J(θ_N)/∂δ = h⁽ʲ⁾_N.

The complex step: δ = i·τ with a tiny τ makes every quantity downstream of δ complex, and
``Im(J)/τ`` is the derivative to rounding, with no cancellation. Held quantities are
computed from real parts; the non-analytic operations (clip, clamp, comparisons) act on
real parts, which is how their derivative is defined almost everywhere. One batch row per
entry of δ gives every partial derivative in one vectorised run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

LOG_RULES = ("multiplicative", "log_normalized")
NORMALIZED_RULES = ("normalized", "log_normalized")
TAU = 1e-20  # the complex step


class Rule(NamedTuple):
    """One order's rule, as the test configures it."""

    rule: str
    clip: float | None = None
    lower: float | None = None
    upper: float | None = None
    decay: float = 0.99
    eps: float = 1e-30
    anneal: int | None = None
    spike: float | None = None
    rescale: bool = False
    pool: float | None = None
    anchor: float | None = None
    rescale_start: int = 0  # the first step n whose spike may rescale
    rescale_threshold: float | None = None  # T of F = r / T (None: max(c, τ))


def rule_step(spec: Rule, eta, rho, h, v, k: int, n: int = 0):
    """``(R, α, v)`` of one rule step at step ``n``: η, ρ may be complex; h, v are real;
    ``k ≥ 1``.

    The normaliser's new statistic enters ``s`` through its real part: it is held. A
    pooled rule's ``v`` is the pair (per-element EMA, the leaf's EMA of the summed
    signal squared); η's first axis is the batch of rows, so a leaf sums the others.
    """
    leaf_axes = tuple(range(1, np.ndim(eta)))
    old = eta
    if spec.anchor is not None:
        keep = 1.0 - spec.anchor
        if spec.rule in LOG_RULES:
            logs = np.log(eta)
            center = np.mean(logs, axis=leaf_axes, keepdims=True)
            pulled = np.exp(center + keep * (logs - center))
        else:
            center = np.mean(eta, axis=leaf_axes, keepdims=True)
            pulled = center + keep * (eta - center)
        eta = np.where(h != 0, pulled, eta)
    u = eta * h if spec.rule in LOG_RULES else h + 0j * eta
    pooled = spec.pool is not None
    if pooled:
        v, big_v = v
        total = np.sum(u, axis=leaf_axes, keepdims=True)
    jumping, jump_moment = (total, big_v) if pooled else (u, v)
    fall = 1.0
    rescales = spec.rescale and spec.rule == "log_normalized"
    rescales = rescales and n >= spec.rescale_start
    if rescales and spec.clip is not None and spec.spike is not None and k > 1:
        with np.errstate(divide="ignore", invalid="ignore"):
            # No history: a jump from nothing, as large as can be.
            jump = np.where(np.real(jumping) > 0, np.inf, 0.0)
            history = np.sqrt(jump_moment / (1.0 - spec.decay ** (k - 1)))
            r = np.where(jump_moment > 0, np.real(jumping) / history, jump)
        threshold = spec.rescale_threshold or max(spec.spike, spec.clip)
        fall = np.clip(r / threshold, 1.0, 1e6)

    def normalised(signal, moment):
        moment = spec.decay * moment + (1.0 - spec.decay) * np.real(signal) ** 2
        moment_hat = moment / (1.0 - spec.decay**k)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(moment_hat > 0, signal / (np.sqrt(moment_hat) + spec.eps), 0.0)
        return step, moment

    def shaped(step):
        if spec.clip is None:
            return step
        unclipped = step
        step = np.where(
            step.real > spec.clip, spec.clip, np.where(step.real < -spec.clip, -spec.clip, step)
        )
        if spec.spike is not None:
            threshold = max(spec.spike, spec.clip)
            step = step + np.where(unclipped.real > threshold, unclipped - threshold, 0.0)
        return step

    if spec.rule in NORMALIZED_RULES:
        s, v = normalised(u, v)
        if pooled:
            big_s, big_v = normalised(total, big_v)
            s = shaped(big_s) + spec.pool * shaped(s)
        else:
            s = shaped(s)
    else:
        s = shaped(u)
    if spec.anneal is not None:
        s = s / np.sqrt(1.0 + k / spec.anneal)
    if spec.rule in LOG_RULES:
        new = eta * np.exp(-rho * s) / fall
        alpha = -new * s
    else:
        new = eta - rho * s
        alpha = -s
    if spec.lower is not None:
        low = new.real < spec.lower
        new, alpha = np.where(low, spec.lower, new), np.where(low, 0.0, alpha)
    if spec.upper is not None:
        high = new.real > spec.upper
        new, alpha = np.where(high, spec.upper, new), np.where(high, 0.0, alpha)
    finite = np.isfinite(new.real)
    if pooled:
        v = (v, big_v)
    return np.where(finite, new, old), np.where(finite, alpha, 0.0), v


def first_active(schedule: str, j: int) -> int:
    """The 0-based step at which h⁽ʲ⁾ can first be non-zero (d₋₁ = 0, α = 0 at start)."""
    return j + 1 if schedule == "cascade" else 1 + j * (j + 1) // 2


def perturbation_times(schedule: str, order: int, steps: int) -> list[int]:
    return [steps - 1 - j if schedule == "simultaneous" else steps - 1 for j in range(order)]


class Adam:
    """Adam's direction m̂/(√v̂ + ε), written out (b1 = 0.9, b2 = 0.999, ε = 1e-8)."""

    def __init__(self, b1=0.9, b2=0.999, eps=1e-8):
        self.b1, self.b2, self.eps = b1, b2, eps
        self.m = self.v = None
        self.t = 0

    def __call__(self, g):
        if self.m is None:
            self.m = [np.zeros_like(x) for x in g]
            self.v = [np.zeros_like(x) for x in g]
        self.t += 1
        self.m = [(1 - self.b1) * x + self.b1 * m for x, m in zip(g, self.m)]
        self.v = [(1 - self.b2) * x * x + self.b2 * v for x, v in zip(g, self.v)]
        m_hat = [m / (1 - self.b1**self.t) for m in self.m]
        v_hat = [v / (1 - self.b2**self.t) for v in self.v]
        return [m / (np.sqrt(v) + self.eps) for m, v in zip(m_hat, v_hat)]


class Result(NamedTuple):
    history: list  # history[n][j]: η⁽ʲ⁾ after step n, shaped as the library's rate
    truths: list  # truths[j]: ∂J(θ_N)/∂δ⁽ʲ⁾, shaped as the library's rate


def unroll(
    problem,
    params,
    *,
    learning_rate: float,
    rates: Sequence[float],
    schedule: str,
    granularities: Sequence[str],
    rules: Sequence[Rule],
    direction: str,
    steps: int,
    grad,
    envelope=lambda n: 1.0,
) -> Result:
    """Run ``steps`` steps; return the rates after each and the true hypergradients.

    ``grad(params, n)`` is the gradient of ``problem.loss`` (real, held); ``direction`` is
    ``"sgd"`` or ``"adam"``; ``envelope(n)`` is s_n, the factor of step n's update (the
    learning-rate schedule times the warm-up ramp), which the next hypergradient sees.
    """
    order = len(rates)
    leaves, treedef = jax.tree.flatten(params)
    leaves = [np.asarray(x, np.float64) for x in leaves]
    shapes = [x.shape for x in leaves]

    # One batch row per entry of every δ⁽ʲ⁾, in the order the rates flatten.
    def entries(j):
        return (
            1
            if granularities[j] == "global"
            else (
                sum(int(np.prod(s)) for s in shapes)
                if granularities[j] == "parameter"
                else len(shapes)
            )
        )

    offsets = np.cumsum([0] + [entries(j) for j in range(order)])
    rows = int(offsets[-1])

    def init_rate(j, value):
        g = granularities[j]
        if g == "global":
            return [np.full((rows,), value, complex)]
        if g == "tensor":
            return [np.full((rows,), value, complex) for _ in shapes]
        return [np.full((rows, *s), value, complex) for s in shapes]

    def per_leaf(rate, g, like_shapes):
        """A complex rate (batch rows first) broadcastable onto each leaf of ``like``."""
        if g == "global":
            rate = rate * len(like_shapes)
        return [r.reshape(r.shape + (1,) * (len(s) - (r.ndim - 1))) for r, s in zip(rate, shapes)]

    def reduce(tree, source, target):
        """Sum a real per-leaf list from granularity ``source`` onto ``target``."""
        if source == target:
            return tree
        if target == "tensor":
            return [np.sum(x) for x in tree]
        return [sum(np.sum(x) for x in tree)]

    def expand_to(rate, source, target):
        """A rate of granularity ``source`` on the entries of a ``target`` rate."""
        if source == target:
            return rate
        if target == "global":
            raise ValueError("a finer rate cannot sit above a coarser one")
        if source == "global":
            rate = rate * len(shapes)
        if target == "parameter":
            return [r.reshape(r.shape + (1,) * len(s)) for r, s in zip(rate, shapes)]
        return rate

    def perturb(rate, j):
        g = granularities[j]
        rate = [r.copy() for r in rate]
        row = int(offsets[j])
        for r in rate:
            flat = r.reshape(rows, -1)
            for e in range(flat.shape[1]):
                flat[row, e] += 1j * TAU
                row += 1
            r[...] = flat.reshape(r.shape)
        assert row == offsets[j + 1], (g, row)
        return rate

    initial = [learning_rate, *rates[:-1]]
    etas = [init_rate(j, initial[j]) for j in range(order)]
    # Pooling and anchoring act on per-parameter orders only, as in the library.
    rules = [
        rule if granularities[j] == "parameter" else rule._replace(pool=None, anchor=None)
        for j, rule in enumerate(rules)
    ]

    def moment_like(rate, rule):
        zeros = np.zeros(rate.shape[1:])
        return (zeros, 0.0) if rule.pool is not None else zeros

    moments = [[moment_like(r, rules[j]) for r in eta] for j, eta in enumerate(etas)]
    alpha_history = [dict() for _ in range(order)]  # [j][n]: real α⁽ʲ⁾ of step n
    lags = [j if schedule == "simultaneous" else 1 for j in range(order)]
    times = perturbation_times(schedule, order, steps)
    adam = Adam() if direction == "adam" else None
    theta = [np.broadcast_to(x, (rows, *x.shape)).astype(complex) for x in leaves]
    d_prev = [np.zeros(s) for s in shapes]
    history = []
    for n in range(steps):
        real_theta = treedef.unflatten([x[0].real for x in theta])
        g = [np.asarray(x, np.float64) for x in jax.tree.leaves(grad(real_theta, n))]
        d = adam(g) if adam else g
        hs = [reduce([-a * b for a, b in zip(g, d_prev)], "parameter", granularities[0])]
        for j in range(1, order):
            alpha = alpha_history[j - 1].get(n - lags[j])
            if alpha is None:
                alpha = [np.zeros(r.shape[1:]) for r in etas[j - 1]]
            product = [a * b for a, b in zip(hs[j - 1], alpha)]
            hs.append(reduce(product, granularities[j - 1], granularities[j]))
        new = [None] * order
        for j in reversed(range(order)):
            if j == order - 1:
                above = [
                    np.full((rows,) + (1,) * (r.ndim - 1), rates[-1], complex) for r in etas[j]
                ]
            else:
                source = new[j + 1] if schedule == "cascade" else etas[j + 1]
                above = expand_to(source, granularities[j + 1], granularities[j])
            k = max(n - first_active(schedule, j) + 1, 1)
            outs = [
                rule_step(rules[j], e, r, h, v, k, n)
                for e, r, h, v in zip(etas[j], above, hs[j], moments[j], strict=True)
            ]
            new[j] = [o[0] for o in outs]
            alpha_history[j][n] = [np.real(o[1][0]) for o in outs]
            moments[j] = [jax.tree.map(np.real, o[2]) for o in outs]
            if n == times[j]:
                new[j] = perturb(new[j], j)
        etas = new
        eta0 = per_leaf(etas[0], granularities[0], shapes)
        scale = envelope(n)
        theta = [p - scale * e * dd for p, e, dd in zip(theta, eta0, d)]
        d_prev = [scale * dd for dd in d]
        history.append([_as_tree(eta, granularities[j], treedef, 0) for j, eta in enumerate(etas)])

    final = treedef.unflatten([x[0].real for x in theta])
    grad_final = [np.asarray(x, np.float64) for x in jax.tree.leaves(grad(final, steps))]
    tangent = sum(
        np.sum((x.imag / TAU) * gf, axis=tuple(range(1, x.ndim)))
        for x, gf in zip(theta, grad_final)
    )
    truths = []
    for j in range(order):
        flat = tangent[offsets[j] : offsets[j + 1]]
        if granularities[j] == "global":
            truths.append(np.asarray(flat[0]))
        elif granularities[j] == "tensor":
            truths.append(treedef.unflatten([np.asarray(x) for x in flat]))
        else:
            parts = np.split(flat, np.cumsum([int(np.prod(s)) for s in shapes])[:-1])
            truths.append(treedef.unflatten([p.reshape(s) for p, s in zip(parts, shapes)]))
    return Result(history, truths)


def _as_tree(rate, granularity, treedef, row):
    """Row ``row`` of a batched rate, real, shaped as the library stores it."""
    if granularity == "global":
        return np.asarray(rate[0][row].real)
    return treedef.unflatten([np.asarray(r[row].real) for r in rate])
