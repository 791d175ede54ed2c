"""Many devices: params sharded on a 2-D mesh, Explicit and Auto axis types.

The sharded runs happen in a subprocess with 8 CPU devices (``tests/_sharded_run.py``);
this process has one device and computes the single-device reference with the same code.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from . import _sharded_run as run

# One xdist worker runs the 8-device subprocess for every test that reads it.
pytestmark = pytest.mark.xdist_group("sharded_runs")


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
@pytest.mark.parametrize("config", list(run.CONFIGS))
def test_state_leaves_have_their_parameters_sharding(sharded_runs, axis_type, config):
    # Per-parameter leaves (rates, α rings with a leading unsharded slot axis, second
    # moments, previous direction, Adam's moments) are sharded like their parameter;
    # tensor and global rates and the counters are replicated. Checked after an eager
    # init, a jitted init (Explicit mode) and after jitted steps that donate params and
    # state.
    _, reports = sharded_runs
    mismatches = reports["plain"][f"{axis_type}/{config}"]
    assert set(mismatches) >= {"after eager init", "after donated steps"}
    for when, paths in mismatches.items():
        assert paths == [], f"{when}: {paths}"


@pytest.mark.parametrize("axis_type", ["Explicit", "Auto"])
@pytest.mark.parametrize("config", list(run.CONFIGS))
def test_sharded_run_equals_single_device_run(sharded_runs, axis_type, config):
    out, _ = sharded_runs
    assert jax.device_count() == 1  # this process's run is the single-device reference
    tx = run.make_tx(config)
    params = run.make_params()
    params, state = run.train(tx, params, tx.init(params))
    reference = run.flat_leaves(params, state)
    sharded = dict(np.load(out / f"{axis_type}_{config}.npz"))
    assert sharded.keys() == reference.keys()
    for key, expected in reference.items():
        actual = sharded[key]
        assert actual.dtype == expected.dtype, key
        scale = float(np.max(np.abs(expected), initial=0.0))
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6 * scale, err_msg=key)
