"""Test configuration: float64 for the oracles, strict dtype promotion everywhere."""

import json
import os
import shutil
import tempfile

# Set before JAX starts its backend (and inherited by the notebooks' kernels and the
# 8-device subprocess). XLA:CPU's compile time is mostly code generation for each kernel,
# and the tests' arrays are small. Without LLVM's optimisation of the kernels, and with
# XLA:CPU's older kernel emitters, the suite takes about half the time (measured:
# test_compilation, test_optax_common and test_common 129 → 94 → 61 s). The first flag
# leaves the optimised HLO as it is; the second changes which fusions XLA forms, so the
# tests that inspect compiled programs compile them with the default emitters
# (``test_compilation.DEFAULT_PIPELINE``). jaxlib 0.7, the dev extra's lowest, knows both flags.
_FLAGS = os.environ.get("XLA_FLAGS", "")
# The flags as the user gave them, for the benchmarks' processes, which measure what a user's
# step compiles to (set once, by the first process: xdist workers inherit the controller's).
os.environ.setdefault("LRR_OPTAX_USER_XLA_FLAGS", _FLAGS)
if "xla_backend_optimization_level" not in _FLAGS:
    _FLAGS += " --xla_backend_optimization_level=0"
if "xla_cpu_use_fusion_emitters" not in _FLAGS:
    _FLAGS += " --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = _FLAGS.strip()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")

# The compilations of one test run, shared by its xdist workers (a folder the controller makes
# and removes). Tests build the same step afresh in many places (a new ``tx`` is a new
# function to ``jax.jit``): 42 % of the suite's compile requests are answered from here
# (1134 of 2675), mostly small programs, so it saves about 5 % of the time (measured).
_COMPILATIONS = "LRR_OPTAX_TEST_COMPILATIONS"


def pytest_configure(config):
    if not hasattr(config, "workerinput"):  # the controller, or a run without xdist
        os.environ[_COMPILATIONS] = tempfile.mkdtemp(prefix="lrr-optax-tests-")
    jax.config.update("jax_compilation_cache_dir", os.environ[_COMPILATIONS])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ.pop(_COMPILATIONS), ignore_errors=True)


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
