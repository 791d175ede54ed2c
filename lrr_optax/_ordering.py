"""The order in which a step writes its rates' buffers, so that XLA:CPU copies none.

A step overwrites its donated state in place: each rate η⁽ʲ⁾, each α ring, each moment,
the trace u. XLA:CPU copies a buffer that one kernel reads and another overwrites unless
the reader is ordered before the writer, and it does not fuse several outputs into one
kernel, so every output is a kernel of its own that re-reads what it needs. Left to
itself it copied buffers, more of them at each order, and moved bytes quadratic in the
order m. The functions here write the rates' updates in an explicit order, by data: a
value is written once where several kernels would recompute it (:func:`materialised`),
and a kernel reads one finite value that the previous one wrote (:func:`after`), which
leaves its result unchanged. The pieces other backends may not need apply on XLA:CPU
only (``jax.lax.platform_dependent``). ``benchmarks/results/speed_issue13.md`` has the
measurements behind each choice.

XLA:GPU fuses a leaf's whole step into one kernel with several outputs, and lets an output
overwrite a donated input in place only if every path from the input inside the kernel is
elementwise and reaches that output. The orderings above would break that (a one-element
read of the new η is not elementwise; a new trace that does not read the old one has no
path from it), so there they are dropped, and an output that does not depend on the
buffer it overwrites is given an elementwise dependence on it (:func:`in_place_of`).
Measured on an H200 (``benchmarks/results/speed_gpu.md``).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from . import _granularity as gr
from . import _rules, _state
from ._options import Config, value_at
from ._state import LearningRateRatesState
from ._tracing import once_per_signature


def _cpu_only(cpu, default, *args):
    """``cpu(*args)`` in a program for XLA:CPU, ``default(*args)`` for any other backend.

    One seam for every choice by backend, resolved when the step is lowered (a program
    lowered for one platform holds one branch); the tests run the other backends' branch
    on the CPU through it.
    """
    return jax.lax.platform_dependent(*args, cpu=cpu, default=default)


def after(x, dependency):
    """``x``, computed after ``dependency`` (finite, broadcastable), which XLA:CPU must keep.

    u_n overwrites u_{n−1} in place (donated state, ``lax.scan`` carry) only once every
    kernel that reads u_{n−1} has run; XLA:CPU copies the buffer otherwise, and drops
    optimisation barriers before ordering kernels. Reading the new η⁽⁰⁾ orders the write
    by data. The rates are finite by construction, so ``x`` passes unchanged. Elsewhere
    ``x`` as it is: in one fused kernel the read would only stop in-place writes.
    """

    def ordered(x, dependency):
        return jnp.where(jnp.isnan(dependency), jnp.zeros_like(x), x)

    return _cpu_only(ordered, lambda x, dependency: x, x, dependency)


def summed_product(g, u, dtype) -> jax.Array:
    """Σ g ⊙ u over a whole leaf, in ``dtype``: one dot product on XLA:CPU.

    XLA:CPU runs a sum as a YNNPACK kernel that takes no fused producer, so the product
    would be written to a temporary and read back; a dot product reads both operands
    once. Other backends fuse the product into their reduction.
    """
    axes = tuple(range(jnp.ndim(g)))

    def dot(g, u):
        contract = ((axes, axes), ((), ()))
        return jax.lax.dot_general(g, u, contract, preferred_element_type=dtype)

    def fused(g, u):
        return jnp.sum(g * u, dtype=dtype)

    g, u = g.astype(dtype), u.astype(dtype)
    if _sharded(g) or _sharded(u):
        # In Explicit mode a dot product over sharded axes must be told its output's
        # sharding; a sum is replicated by itself.
        return fused(g, u)
    return _cpu_only(dot, fused, g, u)


def in_place_of(new, old, count):
    """``new``, which overwrites ``old``, depending on it elementwise off XLA:CPU.

    A new trace or a one-slot ring is computed without its old value, so XLA:GPU finds no
    path from the old buffer to the new one and writes the new one elsewhere, then copies
    it back (measured: two copies a leaf at order 1). A select on a step count, which is
    never negative, reads the old value where the kernel reads the rest and chooses the
    new one. XLA:CPU writes each output in a kernel of its own, which would only read
    the old buffer more.
    """

    def chosen(new, old, count):
        return jnp.where(count < 0, old.astype(new.dtype), new)

    return _cpu_only(lambda new, old, count: new, chosen, new, old, count)


def token(eta, like) -> jax.Array:
    """What a kernel reads of the new η to run after η's kernel: one element, if per parameter.

    η is a kernel's output, and XLA reads the element from it rather than recompute it
    (checked: no per-parameter configuration copies a buffer, ``test_compilation``).
    Measured: 4 bytes a parameter less for every per-parameter configuration.
    """
    per_parameter = jnp.ndim(eta) and jnp.shape(eta) == jnp.shape(like) and jnp.size(eta)
    if per_parameter and not _sharded(eta):
        return jnp.reshape(eta, (-1,))[0]
    return eta


def _sharded(x) -> bool:
    # Under explicit sharding a slice of a sharded axis is refused: such rates are read whole.
    typeof = getattr(jax, "typeof", None)  # absent before explicit sharding (jax < 0.4.36)
    if typeof is None:
        return False
    spec = getattr(getattr(typeof(x), "sharding", None), "spec", None)
    return spec is not None and any(axis is not None for axis in spec)


def written(ring) -> jax.Array:
    """A finite scalar that exists once ``ring`` is written, for :func:`after`.

    A reduction is a kernel of its own that XLA neither fuses away nor recomputes, so the
    new η that reads it is ordered after the ring's kernel, the other reader of the old
    η, and XLA:CPU need not copy η. Off XLA:CPU :func:`after` does not read it, and the
    reduction is dead code.
    """
    return jnp.max(ring, initial=0)  # ``initial``: a leaf may have no elements


def materialised(x, finite) -> jax.Array:
    """``x``, which XLA:CPU then writes once to a buffer of its own, on CPU only.

    Each kernel that reads a cheap elementwise producer recomputes it, so every consumer
    of h⁽ʲ⁾ would read every ring slot below it (traffic quadratic in m, and readers of a
    slot its writer cannot wait for) and a new η would be recomputed from the old one it
    overwrites (a copy). XLA does not duplicate a division into consumers; one by
    1 + 0·f is exact where f is finite (NaN elsewhere) and is not folded (0·f is NaN for
    an infinite f). A divisor broadcast from a scalar would be rewritten into a
    multiplication, which is duplicated again, and so would a division that another one
    divides (XLA merges (a / b) / c into a / (b·c)).
    """

    def divided(x, f):
        return x / (1 + 0 * f).astype(x.dtype)

    return _cpu_only(divided, lambda x, f: x, x, finite)


def distinct(x) -> jax.Array:
    """``x``, as an expression XLA:CPU cannot merge with another use of ``x`` (on CPU only).

    Two kernels that compute the same value from ``x`` would share it as a temporary,
    which XLA:CPU pages in afresh at every call; through x·(1 + 0·x), exact for a finite
    x (rates are), each computes it itself. The opposite of :func:`materialised`.
    """

    def apart(x):
        return x * (1 + 0 * x)

    return _cpu_only(apart, lambda x: x, x)


def written_once(x) -> jax.Array:
    """``x``, written once by its own kernel and read back by every consumer, on CPU only.

    :func:`materialised` by a divisor computed from ``x`` itself, min(|x|, 1): finite
    wherever x is not NaN (an inf passes as inf), read from no other buffer, and not a
    broadcast scalar (which XLA would turn into a multiplication it duplicates again).
    An iota divisor, used before, is loop-invariant: XLA hoisted it out of ``lax.scan`` as
    a parameter-sized buffer that every step read (4 bytes a parameter, measured).
    """
    return materialised(x, jnp.minimum(jnp.abs(x), 1))


def moments_after(moments, dependencies):
    """:func:`after` on each per-element moment of a tree of moments shaped like the rates.

    A pooled rule's scalar moment of the leaf is left as it is: a copy of one number costs
    nothing, and a scalar read of a per-element dependency would broadcast it.
    """

    def one(dependency, moment):
        if isinstance(moment, _rules.PooledMoment):
            return moment._replace(elements=after(moment.elements, dependency))
        return after(moment, dependency)

    return jax.tree.map(one, dependencies, moments)


def one_slot_ring(leaf_rule, eta, above, h, moment):
    """A one-slot ring holding this step's α, computed in the ring's shape.

    So the rule's last operation writes the ring itself, which XLA then materialises
    once; η read old by that kernel is overwritten in place only after it, ordered by
    the new η's read of the ring (:func:`after`), where XLA:CPU would copy η otherwise.
    """

    def ring(e, r, g, v=None):
        # A rate above of lower rank (a scalar, a broadcast array) broadcasts as it is.
        r = r[None] if jnp.ndim(r) == jnp.ndim(e) else r
        if isinstance(v, _rules.PooledMoment):
            v = v._replace(elements=v.elements[None])  # the leaf's own moment is a scalar
        elif v is not None:
            v = v[None]
        return leaf_rule(e[None], r, g[None], v)[1]

    ring = once_per_signature(ring, h)
    if moment is None:
        return jax.tree.map(ring, eta, above, h)
    return jax.tree.map(ring, eta, above, h, moment)


def per_parameter(config: Config) -> bool:
    """Whether every adapted order has per-parameter rates (and there are two or more)."""
    return config.order >= 2 and all(g == "parameter" for g in config.granularities)


def chained_in_order(config: Config) -> bool:
    """Whether the simultaneous step's kernels are chained in one order (``rates_in_order``)."""
    return config.schedule == "simultaneous" and per_parameter(config)


def rates_in_order(config: Config, state: LearningRateRatesState, hypergradients) -> tuple:
    """The simultaneous rates as one chain of kernels: α⁽⁰⁾, η⁽⁰⁾, α⁽¹⁾, η⁽¹⁾, … η⁽ᵐ⁻¹⁾.

    The ring kernel of order j reads the old η⁽ʲ⁺¹⁾ that order j+1's rate overwrites,
    which in turn reads the ring slot the first one overwrites: a cycle, which XLA:CPU
    broke by copying buffers, more of them at each order. With each h⁽ʲ⁾ materialised
    (:func:`materialised`) the rings' old slots are read once, before any ring is written;
    then each kernel reads one value the previous one wrote (:func:`after`), so every
    buffer is overwritten after its last reader and none is copied.
    """
    count = state.count
    order = config.order
    etas: list[Any] = [None] * order
    alphas: list[Any] = [None] * order
    moments: list[Any] = [None] * order
    rings: list[Any] = [None] * order
    # The top hypergradient is computed once every ring's old slot has been read.
    previous = hypergradients[-1]
    for j in range(order):
        above = value_at(config.top, count) if j == order - 1 else state.etas[j + 1]
        above = gr.expand(
            above, "global" if j == order - 1 else "parameter", "parameter", state.etas[j]
        )
        active_steps = config.active_steps(j, count)
        moment = state.second_moments[j] if config.normalized else None
        rule = config.rule_at(j, count)

        @functools.partial(once_per_signature, tree=previous)
        def leaf_rule(eta, rate, h, v, rule=rule, active_steps=active_steps):
            return _rules.apply(rule, eta, rate, h, v, active_steps)

        token = previous
        if j + 1 < order:
            size = config.ring_sizes[j]
            # α in a slot's shape: a computation of its own, which XLA does not merge with
            # η's, so that neither kernel reads a temporary of the other (measured).
            slot = one_slot_ring(leaf_rule, state.etas[j], above, hypergradients[j], moment)
            slot = jax.tree.map(lambda r, t: after(r, t[None]), slot, token)
            # The debug hook reports the α the ring holds (XLA may round the two
            # computations of it differently).
            alphas[j] = jax.tree.map(lambda r: r[0], slot)
            if size == 1:
                rings[j] = slot
                token = jax.tree.map(written, slot)
            else:
                rings[j] = jax.tree.map(
                    lambda r, a, s=size: _state.ring_write(r, a[0], count, s),
                    state.alphas[j],
                    slot,
                )
                # Any slot of the new ring is finite; reading one orders η after the write.
                token = jax.tree.map(lambda r: r[0], rings[j])
        if moment is not None:
            # The new moment, which η's kernel reads, is written in place once the ring's
            # kernel has read the old one; η is then ordered after the ring through it.
            moment = moments_after(moment, token)
        eta, alpha, moments[j] = _rules.map_rule(
            leaf_rule, state.etas[j], above, hypergradients[j], moment
        )
        if moment is None:
            eta = jax.tree.map(after, eta, token)
        if alphas[j] is None:
            alphas[j] = alpha
        # Materialised, so that the kernels after it read it instead of recomputing it
        # from the old η it overwrites.
        etas[j] = previous = jax.tree.map(materialised, eta, hypergradients[j])
    return etas, alphas, moments, rings
