"""Tracing a step's per-leaf functions once per leaf signature, inside ``jax.jit``."""

from __future__ import annotations

from collections.abc import Callable

import jax

try:  # where every jax from 0.4.27 on keeps the tracer of ``jax.jit``'s trace
    from jax._src.interpreters.partial_eval import DynamicJaxprTracer as _StagedTracer
except ImportError:  # pragma: no cover - a jax that moved it
    _StagedTracer = ()
try:  # newer jax: whether any trace on the stack stages a program (jit, scan, grad in jit)
    from jax._src.core import unsafe_am_i_under_a_jit as _under_a_jit
except ImportError:  # pragma: no cover - older jax: only a tree of jit's own tracers counts
    _under_a_jit = None


def _staged(tree) -> bool:
    """Whether ``tree``'s computation is being staged into a program, not run eagerly."""
    if _under_a_jit is not None:
        return _under_a_jit()
    return bool(_StagedTracer) and any(isinstance(x, _StagedTracer) for x in jax.tree.leaves(tree))


def once_per_signature(fn: Callable, tree) -> Callable:
    """``fn``, traced once per distinct (shape, dtype) of its arguments inside ``jax.jit``.

    A step maps each of its phases over the leaves. Leaves of one signature (every
    per-tensor rate, a network's repeated layers) then share one traced and lowered
    function, which XLA inlines: the compiled program is the same, and tracing and lowering
    no longer grow with every leaf (``python -m benchmarks.speed.compile``). Where ``tree``
    is computed eagerly (a plain call, or ``grad`` or ``vmap`` outside any ``jit``), ``fn``
    itself: a function made afresh at every step would be compiled at every step.
    """
    return jax.jit(fn) if _staged(tree) else fn
