"""Sharded training runs for ``test_sharding.py``, in a process that has 8 CPU devices.

The pytest process has one device, and JAX fixes the device count when it first starts a
backend, so ``test_sharding.py`` runs this module as a script with
``XLA_FLAGS=--xla_force_host_platform_device_count=8``. It trains on a 2 × 4 mesh with
Explicit and with Auto axis types, records every state leaf whose sharding differs from
what it should be, and saves the final params and state for comparison with a
single-device run. The problem and the optimizers are defined here so that both runs
use the same code.

Usage: ``python -m tests._sharded_run OUT_DIR [flax]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import lrr_optax

from .problems import optax_promotion

STEPS = 5
MESH_SHAPE = (2, 4)
MESH_AXES = ("data", "model")
SPECS = {
    "w": P("data", "model"),
    "b": P("model"),
    "v": P(None, "data"),
    "s": P(),
}
SHAPES = {"w": (4, 8), "b": (8,), "v": (3, 6), "s": ()}

# Per-parameter rates with Adam and a normalised rule (rings of size 1 and 2, second
# moments, a direction state); and mixed granularities whose coarse rates are replicated.
CONFIGS = {
    "parameter": dict(
        learning_rate=0.05,
        rates=(1e-2, 1e-3, 1e-4),
        rule="normalized",
        granularity="parameter",
        adam=True,
    ),
    "mixed": dict(
        learning_rate=0.05,
        rates=(1e-2, 1e-3, 1e-4),
        rule="additive",
        granularity=("parameter", "tensor", "global"),
        schedule="cascade",
        adam=False,
    ),
    # A per-tensor η⁽⁰⁾ (the Adam aliases' default): each leaf's hypergradient is summed
    # over its sharded axes.
    "tensor": dict(
        learning_rate=0.05,
        rates=(1e-2, 1e-3),
        granularity="tensor",
        adam=True,
    ),
    # Pooled moments: a per-element moment sharded like its parameter beside a
    # replicated scalar of its tensor.
    "pooled": dict(
        learning_rate=0.05,
        rates=(1e-2, 1e-3),
        granularity="parameter",
        element_share=0.1,
        anchor=0.01,
        adam=True,
    ),
}


def make_tx(name):
    options = dict(CONFIGS[name])
    adam = options.pop("adam")
    direction = optax_promotion(optax.scale_by_adam()) if adam else None
    return lrr_optax.learning_rate_rates(**options, direction=direction)


def make_params():
    key = jax.random.key(0)
    return {
        k: 0.5 * jax.random.normal(jax.random.fold_in(key, i), SHAPES[k], jnp.float32)
        for i, k in enumerate(sorted(SHAPES))
    }


def loss(params, step):
    # Elementwise per leaf, so that every sharding is valid in Explicit mode; the targets
    # change with the step.
    total = jnp.zeros((), jnp.float32)
    for i, key in enumerate(sorted(params)):
        p = params[key]
        phase = jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape)
        target = jnp.sin(0.7 * step.astype(jnp.float32) + phase + float(i))
        total = total + jnp.mean(jnp.square(jnp.tanh(p) - target))
    return total


def train(tx, params, state, steps=STEPS):
    @partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, n):
        grads = jax.grad(loss)(params, n)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for n in range(steps):
        params, state = step(params, state, jnp.asarray(n, jnp.int32))
    return params, state


def flat_leaves(params, state):
    """Final params and state as named numpy arrays."""
    named = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path((params, state)):
        named[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return named


def expected_shardings(name, tx, state, mesh):
    """The sharding every state leaf should have: per-parameter leaves that of their param."""
    config = CONFIGS[name]
    granularity = config["granularity"]
    order = len(config["rates"])
    granularities = (granularity,) * order if isinstance(granularity, str) else granularity
    param_sharding = {k: NamedSharding(mesh, spec) for k, spec in SPECS.items()}
    ring_sharding = {k: NamedSharding(mesh, P(None, *spec)) for k, spec in SPECS.items()}
    replicated = NamedSharding(mesh, P())

    def like(g, per_parameter):
        return per_parameter if g == "parameter" else jax.tree.map(lambda _: replicated, SPECS)

    def shaped(g):
        # A tree-level rate for "global" is one scalar, not a tree.
        return replicated if g == "global" else like(g, param_sharding)

    etas = tuple(shaped(g) for g in granularities)
    alphas = tuple(
        replicated if g == "global" else like(g, ring_sharding) for g in granularities[:-1]
    )
    second_moments = etas if state.second_moments else ()
    if config.get("element_share") is not None:
        second_moments = tuple(
            jax.tree.map(lambda s: lrr_optax.PooledMoment(s, replicated), eta)
            if g == "parameter"
            else eta
            for eta, g in zip(etas, granularities, strict=True)
        )
    direction = tx_direction_shardings(name, state.direction_state, param_sharding, replicated)
    return lrr_optax.LearningRateRatesState(
        count=replicated,
        etas=etas,
        alphas=alphas,
        second_moments=second_moments,
        direction_state=direction,
        prev_direction=param_sharding,
    )


def tx_direction_shardings(name, direction_state, param_sharding, replicated):
    if not CONFIGS[name]["adam"]:
        return direction_state  # EmptyState: no leaves
    return optax.tree_map_params(
        optax.scale_by_adam(),
        lambda _, sharding: sharding,
        direction_state,
        param_sharding,
        transform_non_params=lambda _: replicated,
    )


def sharding_mismatches(state, expected):
    """Paths of the leaves whose sharding is not the expected one."""
    mismatches = []
    flat_expected = jax.tree.leaves(
        expected, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)
    )
    flat_state = jax.tree_util.tree_leaves_with_path(state)
    assert len(flat_expected) == len(flat_state), (len(flat_expected), len(flat_state))
    for (path, leaf), sharding in zip(flat_state, flat_expected, strict=True):
        if not leaf.sharding.is_equivalent_to(sharding, leaf.ndim):
            mismatches.append(f"{jax.tree_util.keystr(path)}: {leaf.sharding} != {sharding}")
    return mismatches


def run(out_dir):
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    assert jax.device_count() == 8, jax.devices()
    report = {}
    for axis_type in ("Explicit", "Auto"):
        mesh = jax.make_mesh(
            MESH_SHAPE, MESH_AXES, axis_types=(getattr(AxisType, axis_type),) * len(MESH_AXES)
        )
        with jax.set_mesh(mesh):
            for name in CONFIGS:
                tx = make_tx(name)
                params = {
                    k: jax.device_put(v, NamedSharding(mesh, SPECS[k]))
                    for k, v in make_params().items()
                }
                inits = {"eager init": tx.init(params)}
                if axis_type == "Explicit":
                    # In Auto mode a jitted init leaves the layout to XLA, as for any optax
                    # state: it is Explicit mode that carries shardings through tracing.
                    inits["jitted init"] = jax.jit(tx.init)(params)
                mismatches = {}
                for when, state in inits.items():
                    expected = expected_shardings(name, tx, state, mesh)
                    mismatches[f"after {when}"] = sharding_mismatches(state, expected)
                params, state = train(tx, params, inits["eager init"])
                expected = expected_shardings(name, tx, state, mesh)
                mismatches["after donated steps"] = sharding_mismatches(state, expected)
                mismatches["params after donated steps"] = [
                    k
                    for k in SPECS
                    if not params[k].sharding.is_equivalent_to(
                        NamedSharding(mesh, SPECS[k]), params[k].ndim
                    )
                ]
                key = f"{axis_type}/{name}"
                report[key] = mismatches
                np.savez(f"{out_dir}/{axis_type}_{name}.npz", **flat_leaves(params, state))
    with open(f"{out_dir}/report.json", "w") as f:
        json.dump(report, f, indent=1)


# --- flax.nnx: a model sharded with nnx.with_partitioning --------------------------------

FLAX_SPECS = {
    "l1": {"kernel": P("data", "model"), "bias": P("model")},
    "l2": {"kernel": P("model", None), "bias": P()},
}
FLAX_STEPS = 4


def flax_model(rngs, sharded):
    from flax import nnx

    def init(initializer, spec):
        return nnx.with_partitioning(initializer, tuple(spec)) if sharded else initializer

    class MLP(nnx.Module):
        def __init__(self, rngs):
            kernel, zeros = nnx.initializers.lecun_normal(), nnx.initializers.zeros_init()
            self.l1 = nnx.Linear(
                4,
                8,
                kernel_init=init(kernel, FLAX_SPECS["l1"]["kernel"]),
                bias_init=init(zeros, FLAX_SPECS["l1"]["bias"]),
                rngs=rngs,
            )
            self.l2 = nnx.Linear(
                8,
                2,
                kernel_init=init(kernel, FLAX_SPECS["l2"]["kernel"]),
                bias_init=init(zeros, FLAX_SPECS["l2"]["bias"]),
                rngs=rngs,
            )

        def __call__(self, x):
            # With Explicit axes the output of a matmul contracted over a sharded axis
            # must be named; replicated here.
            mesh = jax.sharding.get_abstract_mesh()
            explicit = not mesh.empty and mesh.are_all_axes_explicit
            return self.l2(jnp.tanh(self.l1(x)), out_sharding=P() if explicit else None)

    return MLP(rngs)


def flax_batch(n):
    key = jax.random.fold_in(jax.random.key(3), n)
    x = jax.random.normal(key, (16, 4), jnp.float32)
    return x, jnp.stack([jnp.sin(x[:, 0]), jnp.cos(x[:, 1] * x[:, 2])], axis=1)


def flax_tx():
    return lrr_optax.learning_rate_rates(
        0.05,
        (1e-2, 1e-3, 1e-4),
        direction=optax_promotion(optax.scale_by_adam()),
        granularity="parameter",
    )


def flax_train(sharded, steps=FLAX_STEPS):
    """Trains the MLP with nnx.Optimizer; returns the model, the optimizer and the shardings
    of its state right after construction."""
    from flax import nnx

    model = flax_model(nnx.Rngs(0), sharded)
    optimizer = nnx.Optimizer(model, flax_tx(), wrt=nnx.Param)
    initial = jax.tree.map(lambda x: x.sharding, nnx.to_pure_dict(nnx.state(optimizer)))

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return jnp.mean(jnp.square(model(x) - y))

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    for n in range(steps):
        step(model, optimizer, *flax_batch(n))
    return model, optimizer, initial


def flax_sharding_mismatches(state_shardings, mesh):
    """Compares the optimizer state's shardings (a pure dict) with what they should be."""
    param = jax.tree.map(lambda spec: NamedSharding(mesh, spec), FLAX_SPECS)
    ring = jax.tree.map(lambda spec: NamedSharding(mesh, P(None, *spec)), FLAX_SPECS)
    replicated = NamedSharding(mesh, P())
    opt = state_shardings["opt_state"]
    expected = {
        "count": replicated,
        "etas": {j: param for j in opt["etas"]},
        "alphas": {j: ring for j in opt["alphas"]},
        "prev_direction": param,
        "direction_state": {"count": replicated, "mu": param, "nu": param},
    }
    mismatches = []
    for field, tree in expected.items():
        actual = opt[field]
        paths = jax.tree_util.tree_leaves_with_path(actual)
        wanted = jax.tree.leaves(tree)
        assert len(paths) == len(wanted), (field, len(paths), len(wanted))
        for (path, sharding), want in zip(paths, wanted, strict=True):
            ndim = len(want.spec)
            if not sharding.is_equivalent_to(want, max(ndim, 1)):
                mismatches.append(f"{field}{jax.tree_util.keystr(path)}: {sharding} != {want}")
    return mismatches


def run_flax(out_dir):
    from flax import nnx

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_numpy_dtype_promotion", "strict")
    assert jax.device_count() == 8, jax.devices()
    report = {}
    for axis_type in ("Explicit", "Auto"):
        mesh = jax.make_mesh(
            MESH_SHAPE, MESH_AXES, axis_types=(getattr(AxisType, axis_type),) * len(MESH_AXES)
        )
        with jax.set_mesh(mesh):
            model, optimizer, initial = flax_train(sharded=True)
            state = nnx.to_pure_dict(nnx.state(optimizer))
            final = jax.tree.map(lambda x: x.sharding, state)
            params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
            report[axis_type] = {
                "after init": flax_sharding_mismatches(initial, mesh),
                "after steps": flax_sharding_mismatches(final, mesh),
                "params": [
                    jax.tree_util.keystr(path)
                    for (path, leaf), spec in zip(
                        jax.tree_util.tree_leaves_with_path(params),
                        jax.tree.leaves(FLAX_SPECS),
                        strict=True,
                    )
                    if not leaf.sharding.is_equivalent_to(NamedSharding(mesh, spec), leaf.ndim)
                ],
            }
            np.savez(f"{out_dir}/flax_{axis_type}.npz", **flat_leaves(params, state))
    with open(f"{out_dir}/flax.json", "w") as f:
        json.dump(report, f, indent=1)


def launch(out: Path, *args: str) -> subprocess.CompletedProcess:
    """Run this module with 8 CPU devices in a subprocess, writing its reports to ``out``."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-m", "tests._sharded_run", str(out), *args],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return result


if __name__ == "__main__":
    # One process for every many-device run: starting one costs more than most of them.
    run(sys.argv[1])
    run_flax(sys.argv[1])
