"""Checkpoints: save mid-run, restore, continue bit-identically; the state's field names."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import orbax.checkpoint.experimental.v1 as ocp_v1
import pytest
from flax import serialization

import lrr_optax

from .problems import PROBLEMS, optax_promotion

PROBLEM = PROBLEMS["nested"]
FIELDS = ("count", "etas", "alphas", "second_moments", "direction_state", "prev_direction")


def _tx():
    # Every field of the state in use: rings of size 1 and 2, second moments (pooled for
    # the per-parameter orders), a direction state, parameter and tensor rates, a scheduled
    # top rate.
    return lrr_optax.learning_rate_rates(
        0.05,
        (1e-2, 1e-3, optax.exponential_decay(1e-4, 3, 0.5)),
        direction=optax_promotion(optax.scale_by_adam()),
        rule="normalized",
        granularity=("parameter", "parameter", "tensor"),
        element_share=0.1,
        anchor=0.01,
    )


TX = _tx()
UPDATE = jax.jit(TX.update)  # compiled once per dtype for every run below


def _train(tree, start, stop):
    params, state = tree["params"], tree["opt_state"]
    for n in range(start, stop):
        updates, state = UPDATE(jax.grad(PROBLEM.loss)(params, n), state, params)
        params = optax.apply_updates(params, updates)
    return {"params": params, "opt_state": state}


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def _orbax_v1(path, tree, fresh):
    ocp_v1.save(path / "v1", tree)
    return ocp_v1.load(path / "v1", _abstract(fresh))


def _orbax_standard(path, tree, fresh):
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path / "standard", tree)
    checkpointer.wait_until_finished()
    return checkpointer.restore(path / "standard", _abstract(fresh))


def _flax_serialization(path, tree, fresh):
    (path / "state.msgpack").write_bytes(serialization.to_bytes(tree))
    return serialization.from_bytes(fresh, (path / "state.msgpack").read_bytes())


@pytest.mark.parametrize(
    "save_and_restore",
    [_orbax_v1, _orbax_standard, _flax_serialization],
    ids=["orbax v1", "orbax StandardCheckpointer", "flax.serialization"],
)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_restored_run_continues_bit_identically(tmp_path, save_and_restore, dtype):
    params = PROBLEM.params(dtype)
    start = {"params": params, "opt_state": TX.init(params)}
    uninterrupted = _train(start, 0, 8)

    middle = _train(start, 0, 4)
    # The restore target is a fresh init: nothing of the run survives but the file.
    fresh = {"params": PROBLEM.params(dtype), "opt_state": TX.init(PROBLEM.params(dtype))}
    restored = save_and_restore(tmp_path, middle, fresh)
    assert isinstance(restored["opt_state"], lrr_optax.LearningRateRatesState)
    assert jax.tree.structure(restored) == jax.tree.structure(middle)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(middle), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)

    resumed = _train(restored, 4, 8)
    assert int(resumed["opt_state"].count) == 8
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(uninterrupted), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_state_field_names_are_a_format():
    # Checkpoints store the state by field name (flax.serialization, orbax): renaming or
    # reordering a field breaks every saved run, so the names are pinned here.
    assert lrr_optax.LearningRateRatesState._fields == FIELDS
    state = TX.init(PROBLEM.params(jnp.float32))
    assert tuple(serialization.to_state_dict(state)) == FIELDS
    paths = {path[0].name for path, _ in jax.tree_util.tree_leaves_with_path(state)}
    assert paths == set(FIELDS)
