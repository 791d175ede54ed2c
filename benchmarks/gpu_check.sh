#!/usr/bin/env bash
# GPU check of lrr_optax: a subset of the autodiff oracle tests in float64 on the GPU, the
# compiled bytes, compile time and memory of every per-parameter step (m = 1-6, both
# schedules, every rule; the checks of issue 13, no step run), and the speed table
# (reduced) with the roofline of a device-to-device copy measured there.
#
# Run from the repository root on a machine with an NVIDIA GPU:
#
#     OUT=some/folder bash benchmarks/gpu_check.sh
#
# Results: $OUT/gpu_check.log (everything printed), $OUT/speed_bytes_gpu.md, and
# $OUT/speed_gpu.md and speed_gpu.json.
# It uses the jax already installed when it sees a GPU; otherwise it installs jax with
# CUDA from wheels in .whl/ (a machine without network: download them elsewhere with
# `pip download --only-binary=:all: -d .whl "jax[cuda13]"`, or cuda12), else from PyPI.
# The package itself is used from the working tree (PYTHONPATH), not installed.
# Budget: about 2 min for the tests, 4 for the compiled figures and 5 for the table on an
# H200.
set -uo pipefail

OUT="${OUT:-benchmarks/results/gpu}"
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

    echo "== oracle tests on the GPU: tests/test_oracle.py -k 'm2 and cascade'"
    # -o addopts: the project's addopts name nbmake, which the GPU image need not have.
    timeout 300 "$PY" -m pytest -q -x -p no:cacheprovider -o addopts=-ra \
        tests/test_oracle.py -k "m2 and cascade"
    echo "oracle exit status: $?"

    echo "== compiled bytes, compile time and memory per parameter (no step run)"
    timeout 240 "$PY" -m benchmarks.speed.bytes --compile-repeats 2 \
        --rules additive,normalized,multiplicative,log_normalized \
        --out "$OUT" --name speed_bytes_gpu
    echo "bytes exit status: $?"

    echo "== speed table (reduced)"
    timeout 420 "$PY" -m benchmarks.speed --cpu none --sizes 10M,50M --orders 0-3,6 \
        --rules additive,normalized --granularities parameter,tensor \
        --rss-sizes "" --out "$OUT" --raw "$OUT" --name speed_gpu
    echo "speed exit status: $?"
} 2>&1 | tee "$OUT/gpu_check.log"
