"""The autodiff oracle of the design page, section 5, written independently of the library.

The reference below unrolls the recursion step by step in plain JAX with its own control
flow (schedules, lags, reductions). It shares only the rules' update formulas R with the
library; their partials α and the chain that multiplies them are what is under test, and
``jax.grad`` supplies the truth.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lrr_optax import _rules

sg = jax.lax.stop_gradient


def reduce_to(tree, granularity):
    """Sum a parameter-shaped tree onto a rate of the given granularity."""
    if granularity == "parameter":
        return tree
    if granularity == "tensor":
        return jax.tree.map(jnp.sum, tree)
    return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(tree))


def broadcast_from(rate, granularity, params):
    """A rate of any granularity as a parameter-shaped tree."""
    if granularity == "global":
        return jax.tree.map(lambda p: jnp.broadcast_to(rate, p.shape), params)
    return jax.tree.map(lambda r, p: jnp.broadcast_to(r, p.shape), rate, params)


def init_rate(params, granularity, value):
    if granularity == "parameter":
        return jax.tree.map(lambda p: jnp.full(p.shape, value, p.dtype), params)
    if granularity == "tensor":
        return jax.tree.map(lambda p: jnp.asarray(value, p.dtype), params)
    return jnp.asarray(value, jax.tree.leaves(params)[0].dtype)


def unroll(
    problem,
    params,
    *,
    learning_rate,
    rates,
    schedule,
    granularities,
    rule_options,
    direction,
    steps,
    perturb=None,
):
    """Run ``steps`` steps; return the parameters and rate history.

    ``perturb`` is a list of ``(order, step, delta)``: each adds ``delta`` to η⁽ᵒʳᵈᵉʳ⁾
    right after its own update at ``step``, before any lower order or the parameter step
    uses it. Every
    gradient, direction, hypergradient, cached α and normaliser statistic is held constant
    with ``stop_gradient`` so that the derivative flows through the rules alone.
    """
    order = len(rates)
    etas = [
        init_rate(params, granularities[j], ([learning_rate, *rates[:-1]])[j]) for j in range(order)
    ]
    moments = [jax.tree.map(jnp.zeros_like, e) for e in etas]
    alpha_history = [dict() for _ in range(order)]  # alpha_history[j][n] = α⁽ʲ⁾ of step n
    d_prev = jax.tree.map(jnp.zeros_like, params)
    direction = direction or optax.identity()
    dir_state = direction.init(params)
    lags = [j if schedule == "simultaneous" else 1 for j in range(order)]
    first_active = [
        1 + j * (j + 1) // 2 if schedule == "simultaneous" else j + 1 for j in range(order)
    ]
    history = []
    theta = params
    for n in range(steps):
        g = sg(jax.grad(problem.loss)(theta, n))
        d, dir_state = direction.update(g, dir_state, theta)
        d = sg(d)
        # Hypergradients: h⁽⁰⁾ from the gradient, then the chain through cached α.
        hs = [reduce_to(jax.tree.map(lambda a, b: -a * b, g, d_prev), granularities[0])]
        for j in range(1, order):
            alpha = alpha_history[j - 1].get(n - lags[j])
            if alpha is None:
                alpha = jax.tree.map(jnp.zeros_like, etas[j - 1])
            prod = jax.tree.map(jnp.multiply, hs[j - 1], alpha)
            hs.append(_reduce_between(prod, granularities[j - 1], granularities[j]))
        hs = [sg(h) for h in hs]
        old = list(etas)
        new = [None] * order
        for j in reversed(range(order)):
            if j == order - 1:
                above_tree = jax.tree.map(lambda e: jnp.asarray(rates[-1], e.dtype), old[j])
            else:
                src = new[j + 1] if schedule == "cascade" else old[j + 1]
                above_tree = _coarse_to(src, granularities[j + 1], granularities[j], old[j])
            options = rule_options[j]
            active = max(n + 1 - first_active[j], 1)
            outs = jax.tree.map(
                lambda e, r, h, m, o=options, db=active: _rules.apply_rule(
                    o, e, r, h, sg(m) if o.rule in _rules.NORMALIZED_RULES else None, db
                ),
                old[j],
                above_tree,
                hs[j],
                moments[j],
            )
            treedef = jax.tree.structure(old[j])
            leaves = treedef.flatten_up_to(outs)
            new_eta = treedef.unflatten([leaf[0] for leaf in leaves])
            alpha = treedef.unflatten([sg(leaf[1]) for leaf in leaves])
            if options.rule in _rules.NORMALIZED_RULES:
                moments[j] = treedef.unflatten([sg(leaf[2]) for leaf in leaves])
            for order_p, step_p, delta in perturb or ():
                if order_p == j and step_p == n:
                    new_eta = jax.tree.map(jnp.add, new_eta, delta)
            new[j] = new_eta
            alpha_history[j][n] = alpha
        etas = new
        eta0 = broadcast_from(etas[0], granularities[0], params)
        theta = jax.tree.map(lambda p, e, dd: p - e * dd, theta, eta0, d)
        d_prev = d
        history.append([jax.tree.map(sg, e) for e in etas])
    return theta, history


def _reduce_between(tree, source, target):
    """Sum a ``source``-shaped tree over the entries that share one ``target`` entry."""
    if source == target:
        return tree
    if target == "tensor":
        return jax.tree.map(jnp.sum, tree)
    return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(tree))


def _coarse_to(rate, source, target, like):
    if source == "global" and target != "global":
        return jax.tree.map(lambda _: rate, like)
    return rate
