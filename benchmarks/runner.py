"""Training runs: one compiled program per (problem, method), and the worker processes.

A job trains one method on one problem for every point of the method's hyperparameter
grid and every seed at once: the grid and the seeds are vmapped inside one ``jit``, the
learning rates entering as traced arguments. Common random numbers: seed s gives every
method the same initial parameters and the same minibatches.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

CACHE = Path(__file__).parent / ".cache"
QUANTILES = (0.1, 0.5, 0.9)  # of each order's rates over all their entries


def configure_jax(threads_per_process: int = 1) -> None:
    """Single-threaded XLA (before jax is imported) and the persistent compilation cache."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "multi_thread_eigen" not in flags and threads_per_process == 1:
        flags += " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    os.environ["XLA_FLAGS"] = flags.strip()
    import jax

    jax.config.update("jax_compilation_cache_dir", str(CACHE / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _eta_quantiles(state, max_order):
    import jax
    import jax.numpy as jnp

    rows = []
    for j in range(max_order):
        if j < len(state.etas):
            flat = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(state.etas[j])])
            rows.append(jnp.quantile(flat.astype(jnp.float32), jnp.asarray(QUANTILES)))
        else:
            rows.append(jnp.full(len(QUANTILES), jnp.nan, jnp.float32))
    return jnp.stack(rows)


def build_program(problem, method, steps: int, n_evals: int, max_order: int = 4):
    """The jitted ``(grid, seeds, data) -> results`` of one job."""
    import jax
    import jax.numpy as jnp
    import optax

    chunk = steps // n_evals
    eval_params = method.eval_params or (lambda state, params: params)

    def one(hp, seed, data):
        key = jax.random.key(seed)
        params = problem.init(jax.random.fold_in(key, 0))
        batch_key = jax.random.fold_in(key, 1)
        tx = method.make(hp)
        state = tx.init(params)

        def step(carry, i):
            params, state = carry
            batch = problem.sample(data, jax.random.fold_in(batch_key, i))
            value, grads = jax.value_and_grad(problem.loss)(params, batch)
            extra = {"value": value} if method.needs_value else {}
            updates, state = tx.update(grads, state, params, **extra)
            return (optax.apply_updates(params, updates), state), None

        def block(carry, c):
            carry, _ = jax.lax.scan(step, carry, c * chunk + jnp.arange(chunk))
            params, state = carry
            loss = problem.train_loss(data, eval_params(state, params))
            etas = _eta_quantiles(state, max_order) if method.records_etas else jnp.zeros(())
            return carry, (loss, etas)

        initial = problem.train_loss(data, params)
        (params, state), (curve, etas) = jax.lax.scan(block, (params, state), jnp.arange(n_evals))
        scored = eval_params(state, params)
        test = problem.test_metric(data, scored) if problem.test_metric else jnp.nan
        return {"initial": initial, "curve": curve, "test": test, "etas": etas}

    per_seed = jax.vmap(one, (None, 0, None))
    return jax.jit(jax.vmap(per_seed, (0, None, None)))


def run_job(problem, method, *, steps: int, seeds: int, n_evals: int) -> dict[str, Any]:
    """Train ``method`` on ``problem`` over its whole grid and ``seeds`` seeds."""
    import jax.numpy as jnp

    start = time.time()
    n_evals = max(1, min(n_evals, steps))
    steps -= steps % n_evals  # whole blocks between evaluations
    program = build_program(problem, method, steps, n_evals)
    grid = jnp.asarray(method.grid, jnp.float32)
    out = program(grid, jnp.arange(seeds, dtype=jnp.int32), problem.data)
    out = {k: np.asarray(v, np.float64) for k, v in out.items()}
    curve = out["curve"]  # (points, seeds, evals)
    return {
        "problem": problem.name,
        "method": method.name,
        "family": method.family,
        "grid": method.grid.tolist(),
        "eval_steps": [steps // n_evals * (c + 1) for c in range(n_evals)],
        "initial": out["initial"].tolist(),
        "final": curve[..., -1].tolist(),
        "curve": curve.tolist(),
        "test": out["test"].tolist(),
        "etas": out["etas"].tolist() if method.records_etas else None,
        "seconds": time.time() - start,
    }


# --- worker processes ------------------------------------------------------------------------


def _worker(core: int | None, jobs, results, options) -> None:
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    configure_jax()
    from . import suite

    problems = {}
    parent = os.getppid()
    while (job := _next_job(jobs, parent)) is not None:
        problem_name, method_name = job
        try:
            if problem_name not in problems:
                problems[problem_name] = suite.build_problem(problem_name)
            problem = problems[problem_name]
            method = suite.find_method(method_name, options)
            steps = problem.full_steps if options["full"] else problem.steps
            steps = options.get("steps") or steps
            result = run_job(
                problem, method, steps=steps, seeds=options["seeds"], n_evals=options["n_evals"]
            )
            results.put(("ok", job, result))
        except Exception as error:  # report, keep serving the other jobs
            import traceback

            results.put(("error", job, traceback.format_exc() + str(error)))


def _next_job(jobs, parent: int):
    """The next job, or ``None`` when there are no more or the parent process has died."""
    import queue

    while os.getppid() == parent:
        try:
            return jobs.get(timeout=5.0)
        except queue.Empty:
            continue
    return None


def run_parallel(jobs: list[tuple[str, str]], options: dict, workers: int, progress=None):
    """Run ``jobs`` on ``workers`` spawned processes, each pinned to its own core."""
    import multiprocessing as mp

    context = mp.get_context("spawn")
    job_queue, result_queue = context.Queue(), context.Queue()
    for job in jobs:
        job_queue.put(job)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    processes = []
    for w in range(workers):
        job_queue.put(None)
        core = cores[w % len(cores)] if cores and workers <= len(cores) else None
        process = context.Process(
            target=_worker, args=(core, job_queue, result_queue, options), daemon=True
        )
        process.start()
        processes.append(process)
    results, errors = [], []
    for _ in jobs:
        status, job, payload = result_queue.get()
        (results if status == "ok" else errors).append(
            payload if status == "ok" else (job, payload)
        )
        if progress is not None:
            progress(job, status)
    for process in processes:
        process.join()
    return results, errors
