"""Test configuration: float64 for the oracles, strict dtype promotion everywhere."""

import json

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture(scope="session")
def sharded_runs(tmp_path_factory):
    """The 8-device runs of ``tests/_sharded_run.py``, done once in one subprocess.

    Returns the output folder and the reports of the plain and the flax runs.
    """
    from . import _sharded_run

    out = tmp_path_factory.mktemp("sharded")
    result = _sharded_run.launch(out)
    assert "donated buffers were not usable" not in result.stderr, result.stderr[-4000:]
    reports = {
        "plain": json.loads((out / "report.json").read_text()),
        "flax": json.loads((out / "flax.json").read_text()),
    }
    return out, reports
