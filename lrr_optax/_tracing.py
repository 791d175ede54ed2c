"""Tracing a step's per-leaf functions once per leaf signature, inside ``jax.jit``."""

from __future__ import annotations

from collections.abc import Callable

import jax

try:  # where every jax from 0.4.27 on keeps the tracer of ``jax.jit``'s trace
    from jax._src.interpreters.partial_eval import DynamicJaxprTracer as _StagedTracer
except ImportError:  # pragma: no cover - a jax that moved it: every leaf traced, as before
    _StagedTracer = ()


def once_per_signature(fn: Callable, tree) -> Callable:
    """``fn``, traced once per distinct (shape, dtype) of its arguments inside ``jax.jit``.

    A step maps each of its phases over the leaves. Leaves of one signature (every
    per-tensor rate, a network's repeated layers) then share one traced and lowered
    function, which XLA inlines: the compiled program is the same, and tracing and lowering
    no longer grow with every leaf (``python -m benchmarks.speed.compile``). Where ``tree``
    is not being staged by ``jax.jit`` (eager calls, or a transformation such as ``grad``
    or ``vmap`` outside it), ``fn`` itself: a function made afresh at every step would be
    compiled at every step.
    """
    if _StagedTracer and any(isinstance(x, _StagedTracer) for x in jax.tree.leaves(tree)):
        return jax.jit(fn)
    return fn
