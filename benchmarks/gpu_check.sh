#!/usr/bin/env bash
# GPU check of lrr_optax (issue 13's checks on a GPU): a smoke step of the defaults and of a
# per-parameter order-3 step; the compiled bytes, copies, compile time and memory of every
# per-parameter step (m = 1-6, both schedules, every rule; no step run) against the byte
# model; the speed table (10M and 50M parameters, per-parameter, m = 0-3 and 6) against the
# device-to-device copy measured there; the shipped defaults against optax.adam; and the
# float64 autodiff oracle tests on the GPU.
#
# Run from the repository root on a machine with an NVIDIA GPU:
#
#     bash benchmarks/gpu_check.sh      # or OUT=some/folder bash benchmarks/gpu_check.sh
#
# Results (OUT defaults to benchmarks/results, where the committed ones are):
# $OUT/gpu_check.log (everything printed), $OUT/speed_bytes_gpu.md, $OUT/speed_gpu.md and
# speed_gpu.json, $OUT/speed_defaults_gpu.md, and $OUT/hlo_gpu.tar.gz (the optimized HLO of
# every step of the bytes table, to re-read with benchmarks/speed/hlo.py without a GPU; not
# committed).
# It uses the jax already installed when it sees a GPU; otherwise it installs jax with
# CUDA from wheels in .whl/ (a machine without network: download them elsewhere with
# `pip download --only-binary=:all: -d .whl "jax[cuda13]"`, or cuda12), else from PyPI.
# The package itself is used from the working tree (PYTHONPATH), not installed.
# Each phase has its own time limit (about 10 minutes in all, sized for a 15-minute lease of
# an H200) and writes its rows as it goes, so a phase cut short still reports what it did.
set -uo pipefail

OUT="${OUT:-benchmarks/results}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

has_gpu() {
    "$PY" -c "import jax, sys; sys.exit(jax.default_backend() != 'gpu')" >/dev/null 2>&1
}

{
    echo "== gpu_check $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname)"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
    lscpu 2>/dev/null | head -n 20
    echo "nproc: $(nproc)"

    if ! has_gpu; then
        if compgen -G ".whl/*.whl" >/dev/null; then
            echo "== installing jax from .whl/"
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
                --upgrade --target /tmp/site .whl/*.whl
            export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
        else
            echo "== installing jax[cuda13] from PyPI"
            "$PY" -m pip install -q "jax[cuda13]" || "$PY" -m pip install -q "jax[cuda12]"
        fi
    fi
    export PYTHONPATH="$PWD:${PYTHONPATH:-}"
    "$PY" -c "import jax, optax; print('jax', jax.__version__, 'optax', optax.__version__, jax.devices())"
    if ! has_gpu; then
        echo "== no GPU backend: stopping"
        exit 1
    fi

    echo "== smoke: one step of lrr_adam() and of per-parameter order 3 on $(
        "$PY" -c 'import jax; print(jax.devices()[0].device_kind)' 2>/dev/null)"
    timeout 60 "$PY" - <<'PY' || { echo "== smoke failed: stopping"; exit 1; }
import jax, jax.numpy as jnp, optax
import lrr_optax

params = {"w": jnp.ones((1000, 100)), "b": jnp.zeros((100,))}
grads = jax.tree.map(lambda p: jnp.full_like(p, 0.1), params)
for tx in (
    lrr_optax.lrr_adam(1e-3),
    lrr_optax.learning_rate_rates(1e-3, rates=(0.3, 0.01, 0.01), granularity="parameter"),
):
    state = tx.init(params)
    step = jax.jit(tx.update)
    for _ in range(3):
        updates, state = step(grads, state, params)
    leaves = jax.tree.leaves((updates, state))
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact))
    print(type(state).__name__, "on", {str(d) for x in leaves for d in x.devices()}, "finite")
PY

    echo "== compiled bytes, compile time and memory per parameter (no step run)"
    timeout 150 "$PY" -m benchmarks.speed.bytes --compile-repeats 1 \
        --rules additive,normalized,multiplicative,log_normalized \
        --out "$OUT" --name speed_bytes_gpu --hlo-dir /tmp/hlo_gpu
    echo "bytes exit status: $?"
    tar -czf "$OUT/hlo_gpu.tar.gz" -C /tmp hlo_gpu 2>/dev/null || true

    echo "== speed table (10M and 50M, per-parameter)"
    timeout 150 "$PY" -m benchmarks.speed --cpu none --sizes 10M,50M --orders 0-3,6 \
        --rules additive,normalized --granularities parameter \
        --rss-sizes "" --out "$OUT" --raw "$OUT" --name speed_gpu
    status=$?
    echo "speed exit status: $status"
    if [ "$status" -ne 0 ] && [ -f "$OUT/speed_gpu.json" ]; then
        "$PY" -m benchmarks.speed --render "$OUT/speed_gpu.json" --out "$OUT" --name speed_gpu
    fi

    echo "== the defaults against optax.adam (10M, 50 steps in lax.scan)"
    timeout 150 "$PY" -m benchmarks.speed.defaults --out "$OUT" --name speed_defaults_gpu
    echo "defaults exit status: $?"

    echo "== oracle tests on the GPU (float64): tests/test_oracle.py"
    # -o addopts: the project's addopts name nbmake, which the GPU image need not have.
    timeout 150 "$PY" -m pytest -q -p no:cacheprovider -o addopts=-ra tests/test_oracle.py
    echo "oracle exit status: $?"
} 2>&1 | tee "$OUT/gpu_check.log"
